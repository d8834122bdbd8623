package est

import (
	"context"
	"crypto/x509"
	"strings"
	"testing"
	"time"

	"github.com/estca/estca/policy/pkitest"
)

func TestBenchStub(t *testing.T) {
	t.Parallel()
	for _, mode := range []string{BenchEnroll, BenchEnrollReuse, BenchCACerts} {
		t.Run(mode, func(t *testing.T) {
			env := ctNewEnv(t, 1024)
			ctx, cancel := context.WithTimeout(context.Background(), 20*time.Second)
			defer cancel()
			rep, err := Bench(ctx, BenchOptions{
				Server: env.opts.Server, Certificate: env.opts.Certificate, Roots: env.opts.Roots,
				Mode: mode, Workers: 2, Duration: 300 * time.Millisecond, CSRs: 2000,
			})
			if err != nil {
				t.Fatal(err)
			}
			var out strings.Builder
			if err := rep.Format(&out); err != nil {
				t.Fatal(err)
			}
			t.Log("\n" + out.String())
			if rep.ErrorCount() != 0 || rep.Ops == 0 || rep.P50 <= 0 || rep.P99 < rep.P50 || rep.Max < rep.P99 {
				t.Fatalf("report %+v", rep)
			}
			if mode != BenchCACerts && rep.Verified != rep.Ops {
				t.Fatalf("verified %d of %d", rep.Verified, rep.Ops)
			}
			if !strings.Contains(out.String(), "mode "+mode) || !strings.Contains(out.String(), "p99") {
				t.Errorf("format output %q", out.String())
			}
		})
	}
}

func TestBenchCountsBadCertificates(t *testing.T) {
	t.Parallel()
	t.Run("key mismatch", func(t *testing.T) {
		t.Parallel()
		env := ctNewEnv(t, 1024)
		env.peer.set(func(p *ctPeer) { p.wrongKey = true })
		rep := ctRunBench(t, env, BenchEnrollReuse, 50)
		if rep.Errors["verify"] == 0 || rep.Verified != 0 || rep.Ops != 0 {
			t.Fatalf("report %+v, want only verify errors", rep)
		}
	})
	t.Run("wrong chain", func(t *testing.T) {
		t.Parallel()
		env := ctNewEnv(t, 1024)
		// /crts names another CA than the one that signs.
		env.peer.set(func(p *ctPeer) { p.chain = []*x509.Certificate{pkitest.NewCA(t, "other").Cert} })
		rep := ctRunBench(t, env, BenchEnroll, 50)
		if rep.Errors["verify"] == 0 || rep.Verified != 0 || rep.Ops != 0 {
			t.Fatalf("report %+v, want only verify errors", rep)
		}
	})
	t.Run("exhausted", func(t *testing.T) {
		t.Parallel()
		env := ctNewEnv(t, 1024)
		rep := ctRunBench(t, env, BenchEnrollReuse, 5)
		if !rep.Exhausted || rep.Ops != 5 || rep.Verified != 5 || rep.ErrorCount() != 0 {
			t.Fatalf("report %+v, want 5 verified and exhausted", rep)
		}
	})
}

func ctRunBench(t *testing.T, env *ctEnv, mode string, csrs int) *BenchReport {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 20*time.Second)
	defer cancel()
	rep, err := Bench(ctx, BenchOptions{
		Server: env.opts.Server, Certificate: env.opts.Certificate, Roots: env.opts.Roots,
		Mode: mode, Workers: 2, Duration: 2 * time.Second, CSRs: csrs,
	})
	if err != nil {
		t.Fatal(err)
	}
	return rep
}

func TestBenchOptions(t *testing.T) {
	t.Parallel()
	if _, err := Bench(context.Background(), BenchOptions{Mode: "nope"}); err == nil {
		t.Fatal("unknown mode accepted")
	}
}
