package bench

import (
	"context"
	"os"
	"strings"
	"testing"
	"time"

	"github.com/estca/estca/ca/cms"
	"github.com/estca/estca/est/client"
	"github.com/estca/estca/est/esttest"
	"github.com/estca/estca/policy/pkitest"
)

func TestRunAgainstPeer(t *testing.T) {
	t.Parallel()
	for _, mode := range []string{ModeEnroll, ModeEnrollReuse, ModeCACerts} {
		t.Run(mode, func(t *testing.T) {
			env := esttest.NewEnv(t, 1024)
			ctx, cancel := context.WithTimeout(context.Background(), 20*time.Second)
			defer cancel()
			rep, err := Run(ctx, Options{
				Client: peerClient(env), Mode: mode, Workers: 2, Duration: 300 * time.Millisecond, CSRs: 2000,
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
			if mode != ModeCACerts && rep.Verified != rep.Ops {
				t.Fatalf("verified %d of %d", rep.Verified, rep.Ops)
			}
			if !strings.Contains(out.String(), "mode "+mode) || !strings.Contains(out.String(), "p99") {
				t.Errorf("format output %q", out.String())
			}
		})
	}
}

func TestRunCountsBadCertificates(t *testing.T) {
	t.Parallel()
	t.Run("key mismatch", func(t *testing.T) {
		t.Parallel()
		env := esttest.NewEnv(t, 1024)
		env.Peer.SetWrongKey(true)
		rep := runPeer(t, env, ModeEnrollReuse, 50)
		if rep.Errors["verify"] == 0 || rep.Verified != 0 || rep.Ops != 0 {
			t.Fatalf("report %+v, want only verify errors", rep)
		}
	})
	t.Run("wrong chain", func(t *testing.T) {
		t.Parallel()
		env := esttest.NewEnv(t, 1024)
		// /crts names another CA than the one that signs.
		env.Peer.SetChain(pkitest.NewCA(t, "other").Cert)
		rep := runPeer(t, env, ModeEnroll, 50)
		if rep.Errors["verify"] == 0 || rep.Verified != 0 || rep.Ops != 0 {
			t.Fatalf("report %+v, want only verify errors", rep)
		}
	})
	t.Run("5.03 counted, not retried", func(t *testing.T) {
		t.Parallel()
		env := esttest.NewEnv(t, 1024)
		env.Peer.SetBusy(3)
		o := peerClient(env)
		o.MaxRetries, o.MaxWait = 5, time.Hour // ignored by Run
		ctx, cancel := context.WithTimeout(context.Background(), 20*time.Second)
		defer cancel()
		rep, err := Run(ctx, Options{Client: o, Mode: ModeEnrollReuse, Workers: 1, Duration: 5 * time.Second, CSRs: 10})
		if err != nil {
			t.Fatal(err)
		}
		if rep.Errors["coap 5.03"] != 3 || rep.ErrorCount() != 3 || rep.Ops != 7 || rep.Verified != 7 || !rep.Exhausted {
			t.Fatalf("report %+v, want three 5.03 errors and 7 verified", rep)
		}
	})
	t.Run("exhausted", func(t *testing.T) {
		t.Parallel()
		env := esttest.NewEnv(t, 1024)
		rep := runPeer(t, env, ModeEnrollReuse, 5)
		if !rep.Exhausted || rep.Ops != 5 || rep.Verified != 5 || rep.ErrorCount() != 0 {
			t.Fatalf("report %+v, want 5 verified and exhausted", rep)
		}
	})
}

func runPeer(t *testing.T, env *esttest.Env, mode string, csrs int) *Report {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 20*time.Second)
	defer cancel()
	rep, err := Run(ctx, Options{
		Client: peerClient(env), Mode: mode, Workers: 2, Duration: 2 * time.Second, CSRs: csrs,
	})
	if err != nil {
		t.Fatal(err)
	}
	return rep
}

func TestRunOptions(t *testing.T) {
	t.Parallel()
	if _, err := Run(context.Background(), Options{Mode: "nope"}); err == nil {
		t.Fatal("unknown mode accepted")
	}
}

// peerClient are client options for env's peer and device.
func peerClient(env *esttest.Env) client.Options {
	return client.Options{Server: env.Peer.URL(), Certificate: env.Device, Roots: env.Roots}
}

func TestRunKeygenOptions(t *testing.T) {
	t.Parallel()
	ctx := context.Background()
	for _, o := range []Options{
		{Mode: ModeKeygen, DecryptKey: &cms.DecryptKey{}},
		{Mode: ModeKeygenSingle, KeyRequest: &cms.KeyRequest{Delivery: cms.DeliverKEK, KeyID: []byte("k")}},
		{Mode: "skx"},
	} {
		if _, err := Run(ctx, o); err == nil {
			t.Errorf("%+v accepted", o)
		}
	}
}

func TestRunFixedAnswer(t *testing.T) {
	t.Parallel()
	env := esttest.NewEnv(t, 1024)
	env.Peer.SetWrongKey(true) // one key for every answer, as a baseline server
	ctx, cancel := context.WithTimeout(context.Background(), 20*time.Second)
	defer cancel()
	rep, err := Run(ctx, Options{Client: peerClient(env), Mode: ModeEnrollReuse, Workers: 2, Duration: 2 * time.Second,
		CSRs: 20, FixedAnswer: true})
	if err != nil {
		t.Fatal(err)
	}
	if rep.ErrorCount() != 0 || rep.Ops != 20 || rep.Verified != 20 {
		t.Fatalf("report %+v, want 20 verified against the chain", rep)
	}
	// The chain is still checked.
	env.Peer.SetChain(pkitest.NewCA(t, "other").Cert)
	rep, err = Run(ctx, Options{Client: peerClient(env), Mode: ModeEnrollReuse, Workers: 1, Duration: 2 * time.Second,
		CSRs: 5, FixedAnswer: true})
	if err != nil {
		t.Fatal(err)
	}
	if rep.Errors["verify"] != 5 || rep.Verified != 0 {
		t.Fatalf("report %+v, want only verify errors", rep)
	}
}

func TestCompare(t *testing.T) {
	t.Parallel()
	a, b := esttest.NewEnv(t, 1024), esttest.NewEnv(t, 1024)
	ctx, cancel := context.WithTimeout(context.Background(), 60*time.Second)
	defer cancel()
	pid := os.Getpid() // the peers serve in this process
	c, err := Compare(ctx, CompareOptions{
		Options: Options{Mode: ModeEnrollReuse, Workers: 2, Duration: 300 * time.Millisecond, CSRs: 4000},
		Targets: []Target{{Name: "a", Client: peerClient(a), ServerPID: pid}, {Name: "b", Client: peerClient(b), ServerPID: pid}},
		Rounds:  3,
	})
	if err != nil {
		t.Fatal(err)
	}
	var out strings.Builder
	if err := c.Format(&out); err != nil {
		t.Fatal(err)
	}
	t.Log("\n" + out.String())
	if len(c.Reports) != 3 || len(c.Reports[0]) != 2 || len(c.Names) != 2 {
		t.Fatalf("reports %d×%d", len(c.Reports), len(c.Reports[0]))
	}
	for r, round := range c.Reports {
		for i, rep := range round {
			if rep.Ops == 0 || rep.ErrorCount() != 0 || rep.Server == nil || rep.Verified != rep.Ops {
				t.Errorf("round %d target %d: %+v", r, i, rep)
			}
		}
	}
	// One CSR set for all rounds.
	for _, round := range c.Reports {
		for _, rep := range round {
			if rep.Prepared != 4000 {
				t.Errorf("prepared %d, want the one set of 4000", rep.Prepared)
			}
		}
	}
	if s := c.Stat(0); s.OpsPerSec <= 0 || s.Ops == 0 {
		t.Errorf("stat %+v", s)
	}
	if !strings.Contains(out.String(), "ratio a/b: cpu per op") || !strings.Contains(out.String(), "load average before") {
		t.Errorf("format %q", out.String())
	}
	if _, err := Compare(ctx, CompareOptions{Targets: []Target{{Name: "x", Client: peerClient(a)}}}); err == nil {
		t.Error("a target without a server process accepted")
	}
	if _, err := Compare(ctx, CompareOptions{}); err == nil {
		t.Error("no targets accepted")
	}
}

func TestMedian(t *testing.T) {
	t.Parallel()
	for _, c := range []struct {
		in   []float64
		want float64
	}{{nil, 0}, {[]float64{3}, 3}, {[]float64{5, 1, 3}, 3}, {[]float64{4, 1, 3, 2}, 2.5}} {
		if got := Median(c.in); got != c.want {
			t.Errorf("Median(%v) = %v, want %v", c.in, got, c.want)
		}
	}
}
