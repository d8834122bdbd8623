package est

import (
	"bytes"
	"context"
	"crypto/tls"
	"crypto/x509"
	"encoding/json"
	"encoding/pem"
	"flag"
	"fmt"
	"log/slog"
	"os"
	"os/exec"
	"path/filepath"
	"slices"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/estca/estca/ca"
	"github.com/estca/estca/est/baseline"
	"github.com/estca/estca/est/bench"
	"github.com/estca/estca/est/client"
	"github.com/estca/estca/policy/pkitest"
)

var (
	ceilingRounds   = flag.Int("ceiling.rounds", bench.DefaultRounds, "BenchmarkCeiling: rounds per server")
	ceilingDuration = flag.Duration("ceiling.d", 2*time.Second, "BenchmarkCeiling: duration of a round")
	ceilingWorkers  = flag.Int("ceiling.c", 8, "BenchmarkCeiling: concurrent clients")
	ceilingOnly     = flag.String("ceiling.only", "", "BenchmarkCeiling: load only this server (estca or baseline), to profile it alone")
	ceilingModes    = flag.String("ceiling.modes", bench.ModeEnroll+","+bench.ModeEnrollReuse, "BenchmarkCeiling: comma-separated bench modes")
)

// loadEnv carries the load generator's job (JSON, loadJob) to the child
// process of BenchmarkCeiling; TestMain runs the job instead of the tests
// when it is set.
const loadEnv = "ESTCA_CEILING_LOAD"

func TestMain(m *testing.M) {
	if job, ok := os.LookupEnv(loadEnv); ok {
		os.Exit(runLoadJob(job))
	}
	os.Exit(m.Run())
}

// loadTarget is one server of a loadJob.
type loadTarget struct {
	Name, Addr, ServerName string
	Cert, Key, Roots       []byte // PEM
	FixedAnswer            bool
}

// loadJob is what the load generator child runs: bench.Compare against the
// targets, all served by the process ServerPID.
type loadJob struct {
	Mode      string
	Workers   int
	Duration  time.Duration
	Rounds    int
	ServerPID int
	Targets   []loadTarget
}

// runLoadJob is the child: pinned to the CPUs the benchmark process may not
// use (if there are any), it runs the comparison and writes it as JSON.
func runLoadJob(job string) int {
	var j loadJob
	if err := json.Unmarshal([]byte(job), &j); err != nil {
		fmt.Fprintln(os.Stderr, "load job:", err)
		return 1
	}
	if server, err := bench.Affinity(j.ServerPID); err == nil {
		if own, err := bench.Affinity(0); err == nil {
			var rest []int
			for _, c := range own {
				if !slicesContains(server, c) {
					rest = append(rest, c)
				}
			}
			if len(rest) > 0 {
				_ = bench.PinProcess(rest)
			}
		}
	}
	o := bench.CompareOptions{Options: bench.Options{Mode: j.Mode, Workers: j.Workers, Duration: j.Duration}, Rounds: j.Rounds}
	for _, t := range j.Targets {
		cert, err := tls.X509KeyPair(t.Cert, t.Key)
		if err != nil {
			fmt.Fprintln(os.Stderr, "load job:", err)
			return 1
		}
		roots := x509.NewCertPool()
		roots.AppendCertsFromPEM(t.Roots)
		o.Targets = append(o.Targets, bench.Target{Name: t.Name, ServerPID: j.ServerPID, FixedAnswer: t.FixedAnswer,
			Client: client.Options{Server: "coaps://" + t.Addr, ServerName: t.ServerName, Certificate: cert, Roots: roots}})
	}
	c, err := bench.Compare(context.Background(), o)
	if err != nil {
		fmt.Fprintln(os.Stderr, "load job:", err)
		return 1
	}
	if err := json.NewEncoder(os.Stdout).Encode(c); err != nil {
		fmt.Fprintln(os.Stderr, "load job:", err)
		return 1
	}
	return 0
}

func slicesContains(s []int, v int) bool {
	for _, x := range s {
		if x == v {
			return true
		}
	}
	return false
}

// BenchmarkCeiling is the in-repo ceiling of issue 11: the est server with
// the real authority (CA and DTLS server keys in a SoftHSM token, every
// signature verified, bbolt store in b.TempDir(), one log line per request
// to a file) against the same est server code with est/baseline's
// authority (no CA work, in-memory DTLS key), both in this process, loaded
// in interleaved rounds by a load generator in a child process (est/bench,
// pinned to the CPUs this process may not use). Both servers being in this
// process, each is measured over its own rounds while the other is idle.
//
// It reports the server CPU per enrollment (user + system) of each and
// their same-run ratio (cpu-ratio, the median of the per-round ratios), the
// figure issue 11 quotes, not an absolute rate. Run it on its own core:
//
//	taskset -c 0 go test -run '^$' -bench Ceiling -benchtime 1x ./est/
//
// with -ceiling.rounds, -ceiling.d and -ceiling.c to change the rounds (5),
// their length (2 s) and the clients (8).
func BenchmarkCeiling(b *testing.B) {
	if testing.Short() {
		b.Skip("a benchmark of several seconds per round")
	}
	rc := rcAuthority(b)
	logf, err := os.Create(filepath.Join(b.TempDir(), "requests.log"))
	if err != nil {
		b.Fatal(err)
	}
	defer logf.Close()
	server := rc.serverCert()
	server.PrivateKey = ca.VerifySigner(rc.server, rc.h.Server.PublicKey, nil)
	open := func(o Options) *Server {
		o.Addr = "127.0.0.1:0"
		o.MaxHandshakesPerPrefix = DefaultMaxHandshakes
		o.MaxSessionsPerIdentity = DefaultMaxSessionsPerPrefix
		return stServe(b, o)
	}
	real := open(Options{Certificate: server, Authority: rc.a, Keygen: rc.kg,
		Logger: slog.New(slog.NewTextHandler(logf, nil))})
	device := pkitest.KeyPair(b, rc.demo.Valid.Cert, rc.demo.Valid.Key)
	p, err := baseline.NewPKI(device.Leaf)
	if err != nil {
		b.Fatal(err)
	}
	base := open(Options{Certificate: p.Server, Authority: baseline.New(p)})
	keyPEM := func(k any) []byte {
		der, err := x509.MarshalPKCS8PrivateKey(k)
		if err != nil {
			b.Fatal(err)
		}
		return pemOf("PRIVATE KEY", der)
	}
	targets := []loadTarget{
		{Name: "estca", Addr: real.Addr().String(), ServerName: "localhost",
			Cert: rc.demo.Valid.Cert, Key: rc.demo.Valid.Key, Roots: pemOf("CERTIFICATE", rc.h.Root.Raw)},
		{Name: "baseline", Addr: base.Addr().String(), ServerName: "localhost", FixedAnswer: true,
			Cert: pemOf("CERTIFICATE", p.Client.Certificate...), Key: keyPEM(p.Client.PrivateKey), Roots: pemOf("CERTIFICATE", p.CA.Raw)},
	}
	if *ceilingOnly != "" {
		targets = slices.DeleteFunc(targets, func(t loadTarget) bool { return t.Name != *ceilingOnly })
		if len(targets) == 0 {
			b.Fatalf("-ceiling.only %q: no such server (estca, baseline)", *ceilingOnly)
		}
	}
	for _, mode := range strings.Split(*ceilingModes, ",") {
		b.Run("mode="+mode, func(b *testing.B) {
			job := loadJob{Mode: mode, Workers: *ceilingWorkers, Duration: *ceilingDuration,
				Rounds: *ceilingRounds, ServerPID: os.Getpid(), Targets: targets}
			var c bench.Comparison
			for b.Loop() {
				c = runLoadChild(b, job)
			}
			var text bytes.Buffer
			_ = c.Format(&text)
			b.Log("\n" + text.String())
			reportTargets(b, &c)
			if len(c.Names) > 1 {
				b.ReportMetric(c.Ratio(0, 1), "cpu-ratio")
			}
			b.ReportMetric(float64(len(c.Reports)), "rounds")
			b.Logf("rounds %s, load %s", strconv.Itoa(len(c.Reports)), c.LoadAfter)
		})
	}
}

// runLoadChild runs job in a load generator child process (this test
// binary, see TestMain) and returns its comparison.
func runLoadChild(tb testing.TB, job loadJob) bench.Comparison {
	tb.Helper()
	js, err := json.Marshal(job)
	if err != nil {
		tb.Fatal(err)
	}
	cmd := exec.Command(os.Args[0])
	cmd.Env = append(os.Environ(), loadEnv+"="+string(js))
	cmd.Stderr = os.Stderr
	out, err := cmd.Output()
	if err != nil {
		tb.Fatalf("load generator: %v", err)
	}
	var c bench.Comparison
	if err := json.Unmarshal(out, &c); err != nil {
		tb.Fatal(err)
	}
	return c
}

// pemOf encodes ders as PEM blocks of type typ.
func pemOf(typ string, ders ...[]byte) []byte {
	var buf bytes.Buffer
	for _, d := range ders {
		_ = pem.Encode(&buf, &pem.Block{Type: typ, Bytes: d})
	}
	return buf.Bytes()
}

// reportTargets fails b for every target of c with failed operations and
// reports each target's CPU per operation and rate as metrics.
func reportTargets(b *testing.B, c *bench.Comparison) {
	b.Helper()
	for t, name := range c.Names {
		s := c.Stat(t)
		if s.Errors > 0 {
			b.Errorf("%s: %d operations failed", name, s.Errors)
		}
		b.ReportMetric(float64(s.CPUPerOp.Microseconds()), name+"-cpu-µs/op")
		b.ReportMetric(s.OpsPerSec, name+"-ops/s")
	}
}
