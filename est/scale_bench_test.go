package est

import (
	"context"
	"crypto"
	"crypto/rand"
	"crypto/tls"
	"flag"
	"fmt"
	"log/slog"
	"os"
	"path/filepath"
	"strings"
	"sync/atomic"
	"testing"
	"time"

	"github.com/estca/estca/ca"
	"github.com/estca/estca/est/bench"
	"github.com/estca/estca/est/client"
	"github.com/estca/estca/policy/pkitest"
	"github.com/estca/estca/softhsm/softhsmtest"
	"github.com/estca/estca/store"
	"github.com/estca/estca/store/storefill"
)

var (
	scaleN      = flag.Int("scale.n", 1000000, "BenchmarkScale: certificates in the full store")
	scaleRounds = flag.Int("scale.rounds", bench.DefaultRounds, "BenchmarkScale: rounds per server")
	scaleD      = flag.Duration("scale.d", 3*time.Second, "BenchmarkScale: duration of a round")
	scaleC      = flag.Int("scale.c", 8, "BenchmarkScale: concurrent clients")
	scaleModes  = flag.String("scale.modes", bench.ModeEnrollReuse+","+bench.ModeEnroll, "BenchmarkScale: load modes, comma-separated")
	scaleDir    = flag.String("scale.dir", "", "BenchmarkScale: directory for the two stores (default: the test's temporary directory)")
)

// scaleEnv is the scale harness: one SoftHSM token and CA hierarchy, two
// real authorities that differ only in their store, one empty and one
// filled by storefill, each behind its own est server in this process.
type scaleEnv struct {
	empty, full *store.DB
	auditKey    crypto.PublicKey
	targets     []loadTarget // "full" then "empty": the ratios are full/empty
	fill        storefill.Report
	space       store.Space
	// commits and writes count the group commits of each store (OnCommit):
	// [0] full, [1] empty.
	commits, writes [2]atomic.Int64
}

// scaleSetup builds the harness and fills the full store to n
// certificates: one real enrollment over DTLS through its server, then
// n-1 copies of it (storefill). Not parallel: softhsmtest selects the
// token through the environment.
func scaleSetup(tb testing.TB, n int, dir string) *scaleEnv {
	tb.Helper()
	if dir == "" {
		dir = tb.TempDir()
	} else {
		d, err := os.MkdirTemp(dir, "scale-")
		if err != nil {
			tb.Fatal(err)
		}
		tb.Cleanup(func() { os.RemoveAll(d) })
		dir = d
	}
	_, tok := softhsmtest.New(tb)
	h, err := ca.Init(tok, ca.InitOptions{})
	if err != nil {
		tb.Fatal(err)
	}
	signers, err := ca.LoadSigners(tok, ca.LabelIssuing, ca.LabelServer, ca.LabelAudit)
	if err != nil {
		tb.Fatal(err)
	}
	issuing, serverKey, auditKey := signers[0], signers[1], signers[2]
	demo, err := ca.Demo(time.Now(), rand.Reader)
	if err != nil {
		tb.Fatal(err)
	}
	logf, err := os.Create(filepath.Join(dir, "requests.log"))
	if err != nil {
		tb.Fatal(err)
	}
	tb.Cleanup(func() { logf.Close() })
	e := &scaleEnv{auditKey: auditKey.Public()}
	server := ca.VerifySigner(serverKey, h.Server.PublicKey, nil)
	device := pkitest.KeyPair(tb, demo.Valid.Cert, demo.Valid.Key)
	roots := pemOf("CERTIFICATE", h.Root.Raw)
	for i, name := range []string{"full", "empty"} {
		// As `estca serve` opens its store: the audit key signs heads.
		db, err := store.Create(filepath.Join(dir, name+".db"), store.Options{Signer: auditKey, AuditKey: auditKey.Public(),
			OnCommit: func(s store.CommitStat) {
				e.commits[i].Add(1)
				e.writes[i].Add(int64(s.Writes))
			}})
		if err != nil {
			tb.Fatal(err)
		}
		tb.Cleanup(func() { _ = db.Close() })
		srv := stServe(tb, Options{Addr: "127.0.0.1:0", Certificate: tlsCert(h, server),
			Authority:              rcNewAuthority(tb, h, demo, issuing, db),
			MaxHandshakesPerPrefix: DefaultMaxHandshakes, MaxSessionsPerIdentity: DefaultMaxSessionsPerPrefix,
			Logger: slog.New(slog.NewTextHandler(logf, nil))})
		e.targets = append(e.targets, loadTarget{Name: name, Addr: srv.Addr().String(), ServerName: "localhost",
			Cert: demo.Valid.Cert, Key: demo.Valid.Key, Roots: roots})
		if i == 0 {
			e.full = db
		} else {
			e.empty = db
		}
	}

	// The sample: a real enrollment through the full store's server.
	rep, err := bench.Run(context.Background(), bench.Options{Mode: bench.ModeEnroll, Workers: 1, CSRs: 1, Duration: time.Minute,
		Client: client.Options{Server: "coaps://" + e.targets[0].Addr, ServerName: "localhost", Certificate: device, Roots: pkitest.Pool(h.Root)}})
	if err != nil || rep.Ops != 1 {
		tb.Fatalf("sample enrollment: %v (%d enrolled, errors %v)", err, rep.Ops, rep.Errors)
	}
	first, err := e.full.Certificates(store.CertFilter{Limit: 1})
	if err != nil || len(first) != 1 {
		tb.Fatalf("sample certificate: %v", err)
	}
	sample, err := storefill.SampleOf(e.full, first[0].Serial)
	if err != nil {
		tb.Fatal(err)
	}
	e.fill, err = storefill.Fill(context.Background(), e.full, sample, storefill.Options{N: n - 1, Seed: []byte(tb.Name()),
		Progress: func(done int, el time.Duration) {
			tb.Logf("filled %d certificates in %s (%.0f/s)", done, el.Round(time.Second), float64(done)/el.Seconds())
		}})
	if err != nil {
		tb.Fatal(err)
	}
	if e.space, err = e.full.Space(); err != nil {
		tb.Fatal(err)
	}
	return e
}

// tlsCert is the DTLS server certificate with its chain and key.
func tlsCert(h *ca.Hierarchy, key crypto.Signer) tls.Certificate {
	return tls.Certificate{Certificate: [][]byte{h.Server.Raw, h.Issuing.Raw}, PrivateKey: key, Leaf: h.Server}
}

// bytesPerCert is the file size over the certificates.
func (e *scaleEnv) bytesPerCert(tb testing.TB) (float64, int) {
	n, err := e.full.CountCertificates()
	if err != nil {
		tb.Fatal(err)
	}
	return float64(e.space.FileSize) / float64(n), n
}

// logSpace logs where the full store's bytes go.
func (e *scaleEnv) logSpace(tb testing.TB) {
	perCert, n := e.bytesPerCert(tb)
	var b strings.Builder
	fmt.Fprintf(&b, "store of %d certificates: file %d bytes (%.0f per certificate), in use %d, free pages %d\n",
		n, e.space.FileSize, perCert, e.space.InUse, e.space.Free)
	for _, s := range e.space.Buckets {
		fmt.Fprintf(&b, "  %-20s %9d keys %11d bytes (%5.0f per certificate), %3.0f%% used, depth %d\n", s.Name, s.Keys,
			s.Alloc, float64(s.Alloc)/float64(n), 100*float64(s.Used)/float64(max(s.Alloc, 1)), s.Depth)
	}
	tb.Log("\n" + b.String())
}

// compare loads both servers in interleaved rounds and returns the
// comparison and the group commits per enrollment of each store.
func (e *scaleEnv) compare(tb testing.TB, mode string, workers, rounds int, d time.Duration) (bench.Comparison, [2]float64) {
	tb.Helper()
	var c0, w0 [2]int64
	for i := range 2 {
		c0[i], w0[i] = e.commits[i].Load(), e.writes[i].Load()
	}
	c := runLoadChild(tb, loadJob{Mode: mode, Workers: workers, Duration: d, Rounds: rounds,
		ServerPID: os.Getpid(), Targets: e.targets})
	var perOp [2]float64
	for i := range 2 {
		if ops := c.Stat(i).Ops; ops > 0 {
			perOp[i] = float64(e.commits[i].Load()-c0[i]) / float64(ops)
		}
	}
	return c, perOp
}

// verify runs store.Verify on both stores.
func (e *scaleEnv) verify(tb testing.TB) {
	tb.Helper()
	for _, db := range []*store.DB{e.full, e.empty} {
		if _, err := db.SignHead(); err != nil {
			tb.Fatal(err)
		}
		rep, err := db.Verify(e.auditKey)
		if err != nil {
			tb.Fatalf("%s: %v", db.Path(), err)
		}
		if n, _ := db.CountCertificates(); rep.Certificates != n {
			tb.Errorf("%s: verify saw %d certificates, the store holds %d certificates", db.Path(), rep.Certificates, n)
		}
	}
}

// BenchmarkScale is `make bench-scale` (issue 11, "flat with growth"): a
// store filled to -scale.n certificates (default 1,000,000) through the
// store API against an empty one, the same real authority and est server
// code in front of each, loaded in interleaved rounds by a load generator
// in a child process. It reports bytes per certificate of the full store
// and, per mode, the same-run ratios full/empty of server CPU per
// enrollment and of throughput (1.00: flat), and the group commits per
// enrollment of each store. `make bench-scale` runs
//
//	go test -run '^$' -bench '^BenchmarkScale$' -benchtime 1x -timeout 3h -v ./est/
//
// with -scale.n, -scale.rounds, -scale.d, -scale.c, -scale.modes and
// -scale.dir (the full store of 1,000,000 takes about 1.5 GB).
func BenchmarkScale(b *testing.B) {
	if testing.Short() {
		b.Skip("fills a store of a million certificates")
	}
	e := scaleSetup(b, *scaleN, *scaleDir)
	b.Logf("fill: %d certificates and %d heads in %s (%.0f/s)", e.fill.Certificates, e.fill.Heads,
		e.fill.Elapsed.Round(time.Second), float64(e.fill.Certificates)/e.fill.Elapsed.Seconds())
	e.logSpace(b)
	perCert, n := e.bytesPerCert(b)
	for _, mode := range strings.Split(*scaleModes, ",") {
		b.Run("mode="+mode, func(b *testing.B) {
			var c bench.Comparison
			var commits [2]float64
			for b.Loop() {
				c, commits = e.compare(b, mode, *scaleC, *scaleRounds, *scaleD)
			}
			var text strings.Builder
			_ = c.Format(&text)
			b.Logf("\n%sgroup commits per enrollment: full %.3f, empty %.3f", text.String(), commits[0], commits[1])
			reportTargets(b, &c)
			for t, name := range c.Names {
				b.ReportMetric(commits[t], name+"-commits/op")
			}
			b.ReportMetric(c.Ratio(0, 1), "cpu-ratio")
			b.ReportMetric(c.ThroughputRatio(0, 1), "ops-ratio")
			b.ReportMetric(perCert, "bytes/cert")
			b.ReportMetric(float64(n), "certs")
		})
	}
	e.verify(b)
}

// TestScaleHarness runs BenchmarkScale's harness small (20,000
// certificates, one short round per mode) so that it cannot rot: the fill
// stores what it says, both stores pass Verify afterwards, every
// enrollment of the rounds succeeds and is in its store. It asserts no
// speed.
func TestScaleHarness(t *testing.T) {
	n := 20000
	if testing.Short() {
		n = 2000
	}
	e := scaleSetup(t, n, "")
	if e.fill.Certificates != n-1 || e.fill.Heads != (n-1)/10000 {
		t.Fatalf("fill: %+v, want %d certificates", e.fill, n-1)
	}
	perCert, count := e.bytesPerCert(t)
	if count != n {
		t.Fatalf("full store holds %d certificates, want %d", count, n)
	}
	if perCert <= 0 || e.space.InUse > e.space.FileSize {
		t.Fatalf("space: %+v", e.space)
	}
	e.logSpace(t)
	enrolled := [2]int{}
	for _, mode := range []string{bench.ModeEnrollReuse, bench.ModeEnroll} {
		c, commits := e.compare(t, mode, 2, 1, 300*time.Millisecond)
		for i, name := range c.Names {
			s := c.Stat(i)
			if s.Ops == 0 || s.Errors > 0 {
				t.Errorf("%s %s: %d enrollments, %d failed", mode, name, s.Ops, s.Errors)
			}
			if commits[i] <= 0 {
				t.Errorf("%s %s: %.3f commits per enrollment", mode, name, commits[i])
			}
			enrolled[i] += s.Ops
		}
	}
	for i, db := range []*store.DB{e.full, e.empty} {
		want := enrolled[i]
		if i == 0 {
			want += n
		}
		if got, _ := db.CountCertificates(); got != want {
			t.Errorf("%s holds %d certificates, want %d", db.Path(), got, want)
		}
	}
	e.verify(t)
}
