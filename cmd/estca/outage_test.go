package main

import (
	"context"
	"errors"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/plgd-dev/go-coap/v3/message/codes"

	"github.com/estca/estca/est/client"
)

// Log messages of the HSM outage, one line each way.
const (
	logHSMDown = `msg="hsm token unavailable"`
	logHSMUp   = `msg="hsm token available again"`
)

// outcome is what one enrollment attempt of the load got.
type outcome struct {
	at     time.Time
	ok     bool
	code   codes.Code    // error response code, 0 otherwise
	maxAge time.Duration // of a 5.03
	err    error         // anything else (timeouts, handshake failures)
}

// outageLoad enrolls from several devices on long-lived DTLS sessions, and
// opens a new session now and then, until stop is closed.
type outageLoad struct {
	mu         sync.Mutex
	outcomes   []outcome
	handshakes []outcome // new sessions: ok or err
}

func (l *outageLoad) add(o outcome, handshake bool) {
	l.mu.Lock()
	defer l.mu.Unlock()
	if handshake {
		l.handshakes = append(l.handshakes, o)
	} else {
		l.outcomes = append(l.outcomes, o)
	}
}

// between returns the outcomes of enrollments (or handshakes) in [from, to).
func (l *outageLoad) between(from, to time.Time, handshakes bool) []outcome {
	l.mu.Lock()
	defer l.mu.Unlock()
	src := l.outcomes
	if handshakes {
		src = l.handshakes
	}
	var out []outcome
	for _, o := range src {
		if !o.at.Before(from) && o.at.Before(to) {
			out = append(out, o)
		}
	}
	return out
}

// enrollOnce enrolls a fresh key (enrollNew) and records the outcome.
func enrollOnce(ctx context.Context, c *client.Conn) outcome {
	_, _, err := enrollNew(ctx, c)
	o := outcome{at: time.Now(), ok: err == nil, err: err}
	var re *client.ResponseError
	if errors.As(err, &re) {
		o.code, o.maxAge, o.err = re.Code, re.MaxAge, nil
	}
	return o
}

// TestHSMOutage moves the SoftHSM token directory away under a running
// enrollment load and back: during the outage devices on open sessions get
// 5.03 with Max-Age (never 5.00, never a hang) and new handshakes are refused
// under their own reason; the server logs one line at onset and one at
// recovery, exposes estca_hsm_up, and serves again shortly after the token is
// back, without a restart.
func TestHSMOutage(t *testing.T) {
	dir, cfg := demoAppliance(t, false)
	srv := startServer(t, cfg)
	m := metricsLine.FindStringSubmatch(srv.logs())
	if m == nil {
		t.Fatalf("no metrics address in the log:\n%s", srv.logs())
	}
	metrics := m[1]
	opts := deviceOptions(t, dir, srv.addr, nil)
	opts.Timeout, opts.MaxRetries = 5*time.Second, -1

	ctx, cancel := context.WithTimeout(context.Background(), 3*time.Minute)
	defer cancel()
	stop := make(chan struct{})
	load := &outageLoad{}
	var wg sync.WaitGroup
	for w := range 3 {
		wg.Go(func() {
			c, err := client.Dial(ctx, opts)
			if err != nil {
				t.Errorf("worker %d: %v", w, err)
				return
			}
			defer c.Close()
			for i := 0; ; i++ {
				select {
				case <-stop:
					return
				default:
				}
				load.add(enrollOnce(ctx, c), false)
				time.Sleep(20 * time.Millisecond)
			}
		})
	}
	wg.Go(func() { // new devices: a fresh handshake every 250 ms
		for {
			select {
			case <-stop:
				return
			case <-time.After(250 * time.Millisecond):
			}
			hctx, hcancel := context.WithTimeout(ctx, 5*time.Second)
			c, err := client.Dial(hctx, opts)
			hcancel()
			load.add(outcome{at: time.Now(), ok: err == nil, err: err}, true)
			if err == nil {
				c.Close()
			}
		}
	})
	defer func() {
		close(stop)
		wg.Wait()
	}()

	waitFor := func(what string, deadline time.Duration, cond func() bool) {
		t.Helper()
		end := time.Now().Add(deadline)
		for !cond() {
			if time.Now().After(end) {
				t.Fatalf("timed out waiting for %s\n%s", what, srv.logs())
			}
			time.Sleep(50 * time.Millisecond)
		}
	}
	start := time.Now()
	okSince := func(from time.Time) func() bool {
		return func() bool {
			for _, o := range load.between(from, time.Now().Add(time.Hour), false) {
				if o.ok {
					return true
				}
			}
			return false
		}
	}
	waitFor("enrollments before the outage", time.Minute, okSince(start))

	tokens := filepath.Join(dir, "hsm", "tokens")
	if err := os.Rename(tokens, tokens+".away"); err != nil {
		t.Fatal(err)
	}
	away := time.Now()
	// The outage lasts until both kinds of refusal were seen, and at least 3 s.
	waitFor("5.03 answers during the outage", time.Minute, func() bool {
		for _, o := range load.between(away, time.Now(), false) {
			if o.code == codes.ServiceUnavailable {
				return true
			}
		}
		return false
	})
	waitFor("refused handshakes during the outage", time.Minute, func() bool {
		for _, o := range load.between(away, time.Now(), true) {
			if !o.ok {
				return true
			}
		}
		return false
	})
	if d := time.Until(away.Add(3 * time.Second)); d > 0 {
		time.Sleep(d)
	}
	if up := metricIn(t, scrapeMetrics(t, metrics), "estca_hsm_up"); up != 0 {
		t.Errorf("estca_hsm_up = %v during the outage, want 0", up)
	}
	if err := os.Rename(tokens+".away", tokens); err != nil {
		t.Fatal(err)
	}
	back := time.Now()
	// Generous: the acceptance is 10 s, but the machine is shared.
	waitFor("an enrollment after the token came back", time.Minute, okSince(back))
	var recovered time.Time
	for _, o := range load.between(back, time.Now().Add(time.Hour), false) {
		if o.ok {
			recovered = o.at
			break
		}
	}
	waitFor("a new handshake after the token came back", time.Minute, func() bool {
		for _, o := range load.between(back, time.Now().Add(time.Hour), true) {
			if o.ok {
				return true
			}
		}
		return false
	})
	t.Logf("token back for %v before the first enrollment succeeded", recovered.Sub(back).Round(time.Millisecond))

	// During the outage: 5.03 with the server's Max-Age, never 5.00.
	var unavailable int
	for _, o := range load.between(away, back, false) {
		switch {
		case o.ok:
		case o.code == codes.ServiceUnavailable:
			unavailable++
			if o.maxAge <= 0 || o.maxAge == client.DefaultMaxAge {
				t.Errorf("5.03 without the server's Max-Age (%v)", o.maxAge)
			}
		case o.code != 0:
			t.Errorf("device got %v during the outage, want 5.03", o.code)
		default:
			t.Errorf("enrollment failed without an answer during the outage: %v", o.err)
		}
	}
	t.Logf("%d answers 5.03 during the outage", unavailable)

	logs := srv.logs()
	if n := strings.Count(logs, logHSMDown); n != 1 {
		t.Errorf("%d log lines %s, want 1\n%s", n, logHSMDown, logs)
	}
	if n := strings.Count(logs, logHSMUp); n != 1 {
		t.Errorf("%d log lines %s, want 1\n%s", n, logHSMUp, logs)
	}
	if up := metricIn(t, scrapeMetrics(t, metrics), "estca_hsm_up"); up != 1 {
		t.Errorf("estca_hsm_up = %v after recovery, want 1", up)
	}
	if n := metricIn(t, scrapeMetrics(t, metrics), `estca_hsm_failures_total{reason="unavailable"}`); n < 1 {
		t.Errorf("estca_hsm_failures_total{reason=\"unavailable\"} = %v, want > 0", n)
	}
	if n := metricIn(t, scrapeMetrics(t, metrics), `estca_est_handshake_failures_total{reason="hsm-unavailable"}`); n < 1 {
		t.Errorf("refused handshakes not counted under hsm-unavailable (%v)", n)
	}
	if n := metricIn(t, scrapeMetrics(t, metrics), `estca_est_handshake_failures_total{reason="protocol"}`); n != 0 {
		t.Errorf("%v handshakes counted as protocol failures", n)
	}
}
