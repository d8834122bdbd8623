package main

// The baseline server of `estca bench --baseline`: the est server with the
// authority of est/baseline (no CA work), in a child process of its own so
// that its CPU time is its own (the load generator runs in the bench
// process), pinned to the CPUs of the appliance it is compared with.

import (
	"bufio"
	"context"
	"crypto/x509"
	"errors"
	"fmt"
	"io"
	"os"
	"os/exec"
	"slices"
	"strconv"
	"strings"
	"time"

	"github.com/estca/estca/est"
	"github.com/estca/estca/est/baseline"
	"github.com/estca/estca/est/bench"
)

// baselineEnv, set in the environment of an estca process, makes it the
// baseline server of `estca bench --baseline` instead of running a command
// (its value is the CPU list to pin to); main checks it first. The PKI
// comes on stdin, the address goes to stdout, and the server stops when
// stdin is closed (the bench ended, or died).
const baselineEnv = "ESTCA_BENCH_BASELINE_CPUS"

// baselineServer is a running baseline child.
type baselineServer struct {
	cmd  *exec.Cmd
	in   io.WriteCloser
	addr string
	pki  *baseline.PKI
}

// startBaseline starts the baseline server on cpus, with client and answer
// certificates shaped like like (the bench's client certificate).
func startBaseline(ctx context.Context, like *x509.Certificate, cpus []int) (*baselineServer, error) {
	p, err := baseline.NewPKI(like)
	if err != nil {
		return nil, err
	}
	pemData, err := p.MarshalPEM()
	if err != nil {
		return nil, err
	}
	exe, err := os.Executable()
	if err != nil {
		return nil, fmt.Errorf("baseline: %w", err)
	}
	list := make([]string, len(cpus))
	for i, c := range cpus {
		list[i] = strconv.Itoa(c)
	}
	cmd := exec.Command(exe)
	// The baseline needs no HSM: it does not inherit the PIN.
	env := slices.DeleteFunc(os.Environ(), func(kv string) bool { return strings.HasPrefix(kv, pinEnv+"=") })
	cmd.Env = append(env, baselineEnv+"="+strings.Join(list, ","))
	cmd.Stderr = os.Stderr
	in, err := cmd.StdinPipe()
	if err != nil {
		return nil, fmt.Errorf("baseline: %w", err)
	}
	out, err := cmd.StdoutPipe()
	if err != nil {
		return nil, fmt.Errorf("baseline: %w", err)
	}
	if err := cmd.Start(); err != nil {
		return nil, fmt.Errorf("baseline: %w", err)
	}
	b := &baselineServer{cmd: cmd, in: in, pki: p}
	fail := func(err error) (*baselineServer, error) {
		b.stop()
		return nil, fmt.Errorf("baseline server: %w", err)
	}
	if _, err := fmt.Fprintf(in, "%d\n%s", len(pemData), pemData); err != nil {
		return fail(err)
	}
	line := make(chan string, 1)
	go func() {
		s, _ := bufio.NewReader(out).ReadString('\n')
		line <- strings.TrimSpace(s)
		_, _ = io.Copy(io.Discard, out)
	}()
	select {
	case b.addr = <-line:
	case <-time.After(30 * time.Second):
		return fail(errors.New("did not start within 30 s"))
	case <-ctx.Done():
		return fail(ctx.Err())
	}
	if b.addr == "" {
		return fail(errors.New("exited before serving"))
	}
	return b, nil
}

// pid is the child's process id.
func (b *baselineServer) pid() int { return b.cmd.Process.Pid }

// stop closes the child's stdin (it shuts down) and waits for it.
func (b *baselineServer) stop() {
	_ = b.in.Close()
	done := make(chan struct{})
	go func() {
		_ = b.cmd.Wait()
		close(done)
	}()
	select {
	case <-done:
	case <-time.After(10 * time.Second):
		_ = b.cmd.Process.Kill()
		<-done
	}
}

// runBaselineChild is the child's side: read the PKI, pin to cpus, serve on
// 127.0.0.1:0 until stdin closes. It returns the process exit code.
func runBaselineChild(cpuList string, stdin io.Reader, stdout, stderr io.Writer) int {
	fail := func(err error) int {
		fmt.Fprintf(stderr, "estca baseline server: %v\n", err)
		return exitFailure
	}
	cpus, err := bench.ParseCPUs(cpuList)
	if err != nil {
		return fail(err)
	}
	if err := bench.PinProcess(cpus); err != nil {
		return fail(err)
	}
	r := bufio.NewReader(stdin)
	head, err := r.ReadString('\n')
	if err != nil {
		return fail(err)
	}
	n, err := strconv.Atoi(strings.TrimSpace(head))
	if err != nil || n <= 0 || n > 1<<20 {
		return fail(fmt.Errorf("bad PKI length %q", strings.TrimSpace(head)))
	}
	data := make([]byte, n)
	if _, err := io.ReadFull(r, data); err != nil {
		return fail(err)
	}
	p, err := baseline.ParsePEM(data)
	if err != nil {
		return fail(err)
	}
	srv, err := est.NewServer(baselineOptions(p))
	if err != nil {
		return fail(err)
	}
	if err := srv.Listen(); err != nil {
		return fail(err)
	}
	ctx, cancel := context.WithCancel(context.Background())
	go func() {
		// The bench holds stdin open while it runs: EOF means stop.
		_, _ = io.Copy(io.Discard, r)
		cancel()
	}()
	fmt.Fprintln(stdout, srv.Addr().String())
	if err := srv.Serve(ctx); err != nil && !errors.Is(err, est.ErrServerClosed) {
		return fail(err)
	}
	return exitOK
}

// baselineOptions are the est options of the baseline server: the est
// defaults (cipher suite, MTU, message sizes, response cache, block-wise
// limits) with the admission limits opened, as a bench configuration of
// the appliance opens them (README, Performance), and no logger: the
// baseline does no appliance work, logging included.
func baselineOptions(p *baseline.PKI) est.Options {
	return est.Options{
		Addr:                   "127.0.0.1:0",
		Certificate:            p.Server,
		Authority:              baseline.New(p),
		MaxHandshakesPerPrefix: est.DefaultMaxHandshakes,
		MaxSessionsPerIdentity: est.DefaultMaxSessionsPerPrefix,
	}
}
