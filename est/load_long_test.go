//go:build long

package est

import (
	"bufio"
	"context"
	"crypto/x509"
	"encoding/pem"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/plgd-dev/go-coap/v3/message/codes"

	"github.com/estca/estca/est/bench"
	"github.com/estca/estca/est/client"
	"github.com/estca/estca/policy/pkitest"
)

// The 1,000-client load of issue 10, behind the long tag (make test-long):
// the server runs in a child process (this test binary, loadServerEnv set)
// so that its memory is measured alone; the parent runs est/bench.
//
//	go test -tags long -run 'LoadLong$' -v -timeout 30m ./est/
//
// make test-long runs it under -race, which multiplies memory (shadow
// memory) and divides throughput: quote the numbers of a run without -race.
// It reports, per phase, throughput, p50/p99, errors and the server's RSS:
// idle sessions (RSS per session), sen-reuse with 1,000 workers for 60 s,
// sen (a new handshake per enrollment) with 1,000 workers for 30 s. It
// fails on any error. All workers share one client identity, so the
// per-identity and per-prefix limits are raised; every other limit is the
// default.

const loadServerEnv = "ESTCA_LOAD_SERVER_DIR"

// TestLoadServerProcess is the child: it serves until its stdin closes.
func TestLoadServerProcess(t *testing.T) {
	dir := os.Getenv(loadServerEnv)
	if dir == "" {
		t.Skip("the server half of TestLoadLong")
	}
	c := pkitest.NewCA(t, "load CA")
	a := &stAuthority{ca: c}
	srv := stServe(t, Options{
		Addr:                   "127.0.0.1:0",
		Certificate:            c.Issue(t, pkitest.ServerAuth("load server")).TLS(),
		Authority:              a,
		HandshakeRate:          0,
		MaxSessionsPerIdentity: 4096,
		MaxSessionsPerPrefix:   4096,
		MaxHandshakesPerPrefix: 1024,
		MaxHandshakes:          1024,
		// 1,000 handshakes at once on two shared cores take longer than
		// the default 10 s; a device would simply try again.
		HandshakeTimeout: 30 * time.Second,
	})
	cl := c.Issue(t, pkitest.ClientAuth("load device"))
	kder, err := x509.MarshalPKCS8PrivateKey(cl.Key)
	if err != nil {
		t.Fatal(err)
	}
	write := func(name, typ string, der []byte) {
		if err := os.WriteFile(filepath.Join(dir, name), pem.EncodeToMemory(&pem.Block{Type: typ, Bytes: der}), 0o600); err != nil {
			t.Fatal(err)
		}
	}
	write("ca.pem", "CERTIFICATE", c.Cert.Raw)
	write("client.pem", "CERTIFICATE", cl.Cert.Raw)
	write("client.key", "PRIVATE KEY", kder)
	if err := os.WriteFile(filepath.Join(dir, "addr.tmp"), []byte(srv.Addr().String()), 0o600); err != nil {
		t.Fatal(err)
	}
	if err := os.Rename(filepath.Join(dir, "addr.tmp"), filepath.Join(dir, "addr")); err != nil {
		t.Fatal(err)
	}
	r := bufio.NewReader(os.Stdin)
	for {
		if _, err := r.ReadByte(); err != nil {
			return
		}
	}
}

// procStatus returns VmRSS and VmHWM of pid in KiB.
func procStatus(pid int) (rss, hwm int) {
	b, err := os.ReadFile("/proc/" + strconv.Itoa(pid) + "/status")
	if err != nil {
		return 0, 0
	}
	for _, l := range strings.Split(string(b), "\n") {
		f := strings.Fields(l)
		if len(f) < 2 {
			continue
		}
		v, _ := strconv.Atoi(f[1])
		switch f[0] {
		case "VmRSS:":
			rss = v
		case "VmHWM:":
			hwm = v
		}
	}
	return rss, hwm
}

func TestLoadLong(t *testing.T) {
	dir := t.TempDir()
	cmd := exec.Command(os.Args[0], "-test.run", "^TestLoadServerProcess$", "-test.v")
	cmd.Env = append(os.Environ(), loadServerEnv+"="+dir)
	stdin, err := cmd.StdinPipe()
	if err != nil {
		t.Fatal(err)
	}
	cmd.Stdout, cmd.Stderr = os.Stderr, os.Stderr
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = stdin.Close(); _ = cmd.Wait() })
	pid := cmd.Process.Pid
	var addr []byte
	for deadline := time.Now().Add(30 * time.Second); ; time.Sleep(50 * time.Millisecond) {
		if addr, err = os.ReadFile(filepath.Join(dir, "addr")); err == nil {
			break
		}
		if time.Now().After(deadline) {
			t.Fatal("server process did not start")
		}
	}
	read := func(name string) []byte {
		b, err := os.ReadFile(filepath.Join(dir, name))
		if err != nil {
			t.Fatal(err)
		}
		return b
	}
	cert := pkitest.KeyPair(t, read("client.pem"), read("client.key"))
	roots := pkitest.Pool(pkitest.PEMCert(t, read("ca.pem")))
	copts := client.Options{Server: "coaps://" + string(addr), Certificate: cert, Roots: roots, ServerName: "localhost", Timeout: 60 * time.Second}

	// Peak RSS of the server, sampled every 200 ms.
	var mu sync.Mutex
	peak := 0
	sample := func() int {
		rss, _ := procStatus(pid)
		mu.Lock()
		peak = max(peak, rss)
		mu.Unlock()
		return rss
	}
	// Every goroutine this test starts is stopped and waited for when it
	// returns, also after an early t.Fatal (which runs the defers).
	var bg sync.WaitGroup
	stop := make(chan struct{})
	defer bg.Wait()
	defer close(stop)
	bg.Go(func() {
		tick := time.NewTicker(200 * time.Millisecond)
		defer tick.Stop()
		for {
			select {
			case <-stop:
				return
			case <-tick.C:
				sample()
			}
		}
	})
	var timeline []int // RSS every 10 s of a phase, KiB
	resetPeak := func() {
		mu.Lock()
		timeline = nil
		peak = 0
		mu.Unlock()
	}
	peakNow := func() int {
		mu.Lock()
		defer mu.Unlock()
		return peak
	}

	// Idle sessions: 1,000 sessions, one request each, then idle.
	time.Sleep(time.Second)
	rss0 := sample()
	var conns []*stConn
	closeConns := func() {
		for _, c := range conns {
			_ = c.c.Close()
		}
		conns = nil
	}
	defer closeConns() // a failure half-way leaves no session open
	for i := range 1000 {
		c, err := stDialName(t, string(addr), &cert, roots, "localhost", 20*time.Second)
		if err != nil {
			t.Fatalf("idle session %d: %v", i, err)
		}
		if r := c.do(stMsg{code: codes.GET, path: "/est/crts"}); r.Code != codes.Content {
			t.Fatalf("idle session %d: %v", i, r.Code)
		}
		conns = append(conns, c)
	}
	time.Sleep(2 * time.Second)
	rss1 := sample()
	t.Logf("idle: %d sessions, server RSS %d → %d KiB: %.1f KiB per idle session", len(conns), rss0, rss1, float64(rss1-rss0)/float64(len(conns)))
	closeConns()
	time.Sleep(3 * time.Second)

	// phase runs one load phase with its RSS timeline; its sampler stops
	// and is waited for however the phase ends (tick.Stop alone would
	// leave it blocked on tick.C for ever).
	phase := func(mode string, d time.Duration) (*bench.Report, error) {
		tick := time.NewTicker(10 * time.Second)
		done := make(chan struct{})
		var wg sync.WaitGroup
		defer wg.Wait()
		defer close(done)
		defer tick.Stop()
		wg.Go(func() {
			for {
				select {
				case <-done:
					return
				case <-tick.C:
					rss := sample()
					mu.Lock()
					timeline = append(timeline, rss)
					mu.Unlock()
				}
			}
		})
		ctx, cancel := context.WithTimeout(context.Background(), 10*time.Minute)
		defer cancel()
		return bench.Run(ctx, bench.Options{Client: copts, Mode: mode, Workers: 1000, Duration: d,
			CSRs: int(d.Seconds()) * 5000}) // 3,000/s ran out without -race
	}
	for _, ph := range []struct {
		mode string
		d    time.Duration
	}{{bench.ModeEnrollReuse, 60 * time.Second}, {bench.ModeEnroll, 30 * time.Second}} {
		resetPeak()
		before := sample()
		rep, err := phase(ph.mode, ph.d)
		if err != nil {
			t.Fatalf("%s: %v", ph.mode, err)
		}
		mu.Lock()
		fmt.Fprintf(os.Stderr, "%s: server RSS every 10 s (KiB): %v\n", ph.mode, timeline)
		mu.Unlock()
		var b strings.Builder
		_ = rep.Format(&b)
		_, hwm := procStatus(pid)
		fmt.Fprintf(os.Stderr, "%s\nserver RSS before %d KiB, peak %d KiB\n", b.String(), before, peakNow())
		t.Logf("%s\nserver RSS before %d KiB, peak %d KiB during the phase (VmHWM %d KiB); %.0f ops/s → %.1f KiB per 1,000 req/s above the RSS with 1,000 idle sessions",
			b.String(), before, peakNow(), hwm, rep.OpsPerSec, float64(peakNow()-rss1)/max(rep.OpsPerSec/1000, 0.001))
		if rep.ErrorCount() != 0 || rep.Exhausted {
			t.Errorf("%s: %d errors %v (exhausted %v)", ph.mode, rep.ErrorCount(), rep.Errors, rep.Exhausted)
		}
		time.Sleep(3 * time.Second)
	}
}
