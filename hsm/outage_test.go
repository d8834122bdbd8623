//go:build cgo

package hsm_test

import (
	"crypto"
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"sync"
	"testing"
	"time"

	"github.com/miekg/pkcs11"

	"github.com/estca/estca/hsm"
	"github.com/estca/estca/softhsm"
	"github.com/estca/estca/softhsm/softhsmtest"
)

// events collects what a Token reports to its observer.
type events struct {
	mu  sync.Mutex
	all []hsm.Event
}

func (e *events) observe(ev hsm.Event) {
	e.mu.Lock()
	defer e.mu.Unlock()
	e.all = append(e.all, ev)
}

// count returns how many events of kind (and, if not empty, reason) arrived.
func (e *events) count(kind hsm.EventKind, reason string) int {
	e.mu.Lock()
	defer e.mu.Unlock()
	n := 0
	for _, ev := range e.all {
		if ev.Kind == kind && (reason == "" || ev.Reason == reason) {
			n++
		}
	}
	return n
}

// outageToken opens a fresh SoftHSM token with an observer and a short
// recovery back-off, with one key "ca".
func outageToken(t *testing.T) (*softhsm.Token, *hsm.Token, *events, crypto.Signer) {
	t.Helper()
	return outageTokenWith(t, false)
}

// outageModes runs test once with the default session copies of keys and
// once with Options.SignWithTokenObjects. A session copy signs without
// touching the token's files, so with copies a vanished SoftHSM directory
// is noticed by Check (estca serve probes every few seconds) or by an
// operation on token objects, not by the signature itself; noticed is
// called once the directory is away, to notice it.
func outageModes(t *testing.T, test func(t *testing.T, tokenObjects bool, noticed func(tok *hsm.Token))) {
	for _, tokenObjects := range []bool{false, true} {
		name := "session-copies"
		if tokenObjects {
			name = "token-objects" // no '=' in the name: SoftHSM's configuration file cannot hold it in a path
		}
		t.Run(name, func(t *testing.T) {
			test(t, tokenObjects, func(tok *hsm.Token) {
				if !tokenObjects {
					if err := within(t, "Check", tok.Check); !errors.Is(err, hsm.ErrUnavailable) {
						t.Fatalf("Check after the directory vanished = %v, want ErrUnavailable", err)
					}
				}
			})
		})
	}
}

func outageTokenWith(t *testing.T, tokenObjects bool) (*softhsm.Token, *hsm.Token, *events, crypto.Signer) {
	t.Helper()
	st := softhsmtest.Provision(t)
	ev := &events{}
	opts := softhsmtest.Options(t, st)
	opts.SignWithTokenObjects = tokenObjects
	opts.Observer = ev.observe
	opts.MaxRecoveryDelay = time.Second
	tok, err := hsm.Open(opts)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() {
		if err := tok.Close(); err != nil {
			t.Errorf("close: %v", err)
		}
	})
	signer, err := tok.GenerateKey("ca", hsm.ECDSAP256)
	if err != nil {
		t.Fatal(err)
	}
	return st, tok, ev, signer
}

// moveTokens moves the SoftHSM token directory away (away=true) or back.
func moveTokens(t *testing.T, st *softhsm.Token, away bool) {
	t.Helper()
	dir := filepath.Join(st.Dir, softhsm.TokensDir)
	from, to := dir, dir+".away"
	if !away {
		from, to = to, from
	}
	if err := os.Rename(from, to); err != nil {
		t.Fatal(err)
	}
}

// within runs f and fails the test if it does not return within a generous
// bound: an outage must never make an operation hang.
func within(t *testing.T, what string, f func() error) error {
	t.Helper()
	done := make(chan error, 1)
	go func() { done <- f() }()
	select {
	case err := <-done:
		return err
	case <-time.After(30 * time.Second):
		t.Fatalf("%s hangs", what)
		return nil
	}
}

// waitUp waits (generously) until the token is up again and returns how long
// that took.
func waitUp(t *testing.T, tok *hsm.Token) time.Duration {
	t.Helper()
	start := time.Now()
	for !tok.Status().Up {
		if time.Since(start) > time.Minute {
			t.Fatalf("token not back a minute after its directory returned: %+v", tok.Status())
		}
		time.Sleep(10 * time.Millisecond)
	}
	return time.Since(start)
}

// TestTokenOutage moves the SoftHSM token directory away and back, twice:
// operations fail at once with ErrUnavailable while it is away (not with
// ErrKeyNotFound, not hanging), the observer hears of the outage once each
// way, and the Token re-initialises the module by itself once the directory
// is back; keys found before the outage work again. With session copies the
// outage is noticed by Check first (see outageModes).
func TestTokenOutage(t *testing.T) {
	outageModes(t, testTokenOutage)
}

func testTokenOutage(t *testing.T, tokenObjects bool, noticed func(*hsm.Token)) {
	st, tok, ev, signer := outageTokenWith(t, tokenObjects)
	if err := signVerify(signer, "before"); err != nil {
		t.Fatal(err)
	}
	for round := 1; round <= 2; round++ {
		moveTokens(t, st, true)
		noticed(tok)
		err := within(t, "Sign during the outage", func() error { return signVerify(signer, "away") })
		if !errors.Is(err, hsm.ErrUnavailable) {
			t.Fatalf("round %d: Sign during the outage = %v, want ErrUnavailable", round, err)
		}
		s := tok.Status()
		if s.Up || !s.Retrying || s.Err == nil {
			t.Fatalf("round %d: status during the outage %+v", round, s)
		}
		// Further operations fail at once, each reported as a failure.
		before := ev.count(hsm.EventFailure, hsm.FailureUnavailable)
		for i := range 20 {
			if err := signVerify(signer, fmt.Sprint(i)); !errors.Is(err, hsm.ErrUnavailable) {
				t.Fatalf("Sign %d during the outage = %v", i, err)
			}
		}
		if _, err := tok.FindKey("ca"); !errors.Is(err, hsm.ErrUnavailable) || errors.Is(err, hsm.ErrKeyNotFound) {
			t.Fatalf("FindKey during the outage = %v, want ErrUnavailable only", err)
		}
		if err := tok.Check(); !errors.Is(err, hsm.ErrUnavailable) {
			t.Fatalf("Check during the outage = %v", err)
		}
		if got := ev.count(hsm.EventFailure, hsm.FailureUnavailable) - before; got != 22 {
			t.Errorf("%d unavailable failures reported for 22 refused operations", got)
		}
		time.Sleep(1500 * time.Millisecond) // several attempts to revive fail meanwhile
		if ev.count(hsm.EventDown, "") != round || tok.Status().Up {
			t.Fatalf("round %d: failed attempts to revive changed the state: %+v", round, tok.Status())
		}
		moveTokens(t, st, false)
		took := waitUp(t, tok)
		t.Logf("round %d: token up %v after its directory returned", round, took.Round(time.Millisecond))
		if err := signVerify(signer, "after"); err != nil {
			t.Fatalf("round %d: Sign after the outage: %v", round, err)
		}
		if _, err := tok.FindKey("ca"); err != nil {
			t.Fatalf("round %d: FindKey after the outage: %v", round, err)
		}
		if got := ev.count(hsm.EventDown, ""); got != round {
			t.Errorf("round %d: %d down events, want %d", round, got, round)
		}
		if got := ev.count(hsm.EventUp, ""); got != round {
			t.Errorf("round %d: %d up events, want %d", round, got, round)
		}
		if got := ev.count(hsm.EventRecovered, hsm.RecoveryReinit); got != round {
			t.Errorf("round %d: %d re-initialisations reported, want %d", round, got, round)
		}
		if s := tok.Status(); !s.Up || s.Err != nil || s.Recoveries < uint64(round) {
			t.Errorf("round %d: status after the outage %+v", round, s)
		}
	}
}

// TestCheckFindsOutage: with no operation running, Check notices that the
// token is gone and takes it down; the Token comes back by itself.
func TestCheckFindsOutage(t *testing.T) {
	st, tok, ev, signer := outageToken(t)
	if err := tok.Check(); err != nil {
		t.Fatalf("Check of a healthy token: %v", err)
	}
	moveTokens(t, st, true)
	if err := within(t, "Check", tok.Check); !errors.Is(err, hsm.ErrUnavailable) {
		t.Fatalf("Check after the directory vanished = %v, want ErrUnavailable", err)
	}
	if ev.count(hsm.EventDown, "") != 1 || tok.Status().Up {
		t.Fatalf("outage not reported: %+v", tok.Status())
	}
	moveTokens(t, st, false)
	waitUp(t, tok)
	if err := tok.Check(); err != nil {
		t.Fatalf("Check after recovery: %v", err)
	}
	if err := signVerify(signer, "after"); err != nil {
		t.Fatal(err)
	}
}

// TestAbsentKeyIsNoOutage: a key that does not exist is ErrKeyNotFound and
// leaves the token up.
func TestAbsentKeyIsNoOutage(t *testing.T) {
	_, tok, ev, _ := outageToken(t)
	for range 3 {
		if _, err := tok.FindKey("no-such-key"); !errors.Is(err, hsm.ErrKeyNotFound) || errors.Is(err, hsm.ErrUnavailable) {
			t.Fatalf("FindKey of an absent key = %v", err)
		}
	}
	if !tok.Status().Up || ev.count(hsm.EventDown, "") != 0 {
		t.Fatalf("an absent key took the token down: %+v", tok.Status())
	}
	if got := ev.count(hsm.EventFailure, hsm.FailureKeyNotFound); got != 3 {
		t.Errorf("%d key-not-found failures reported, want 3", got)
	}
}

// TestOutageUnderLoad moves the token directory away and back while
// goroutines sign without pause: every Sign either succeeds or fails with
// ErrUnavailable, none hangs, and all succeed again afterwards (run with
// -race: the module is re-initialised while the pool is in use).
func TestOutageUnderLoad(t *testing.T) {
	outageModes(t, testOutageUnderLoad)
}

func testOutageUnderLoad(t *testing.T, tokenObjects bool, noticed func(*hsm.Token)) {
	st, tok, _, signer := outageTokenWith(t, tokenObjects)
	stop := make(chan struct{})
	var wg sync.WaitGroup
	var mu sync.Mutex
	counts := map[string]int{}
	for g := range 6 {
		wg.Go(func() {
			for i := 0; ; i++ {
				select {
				case <-stop:
					return
				default:
				}
				err := signVerify(signer, fmt.Sprint(g, "/", i))
				kind := "ok"
				switch {
				case errors.Is(err, hsm.ErrUnavailable):
					kind = "unavailable"
				case err != nil:
					kind = "other"
					t.Errorf("Sign under load: %v", err)
				}
				mu.Lock()
				counts[kind]++
				mu.Unlock()
			}
		})
	}
	time.Sleep(200 * time.Millisecond)
	moveTokens(t, st, true)
	noticed(tok)
	for tok.Status().Up {
		time.Sleep(5 * time.Millisecond)
	}
	time.Sleep(500 * time.Millisecond)
	moveTokens(t, st, false)
	waitUp(t, tok)
	time.Sleep(200 * time.Millisecond)
	close(stop)
	if err := within(t, "signers", func() error { wg.Wait(); return nil }); err != nil {
		t.Fatal(err)
	}
	t.Logf("signatures: %v", counts)
	if counts["unavailable"] == 0 {
		t.Error("no Sign saw the outage")
	}
	if err := signVerify(signer, "after"); err != nil {
		t.Fatal(err)
	}
}

// TestPINChangedDuringOutage: when the login is lost and the PIN no longer
// works, the Token goes down and stops retrying (a retry loop could lock the
// PIN on a real HSM).
func TestPINChangedDuringOutage(t *testing.T) {
	st, tok, ev, signer := outageToken(t)
	raw := openRaw(t, st)
	pin := readPIN(t, st.PINFile)
	s, err := raw.ctx.OpenSession(raw.slot, pkcs11.CKF_SERIAL_SESSION|pkcs11.CKF_RW_SESSION)
	if err != nil {
		t.Fatal(err)
	}
	if err := raw.ctx.SetPIN(s, pin, pin+"-changed"); err != nil {
		t.Fatalf("C_SetPIN: %v", err)
	}
	raw.ctx.CloseSession(s)
	raw.logout(t)
	err = within(t, "Sign", func() error { return signVerify(signer, "after the PIN changed") })
	if !errors.Is(err, hsm.ErrUnavailable) || !errors.Is(err, hsm.ErrPIN) {
		t.Fatalf("Sign after the PIN changed = %v, want ErrUnavailable caused by ErrPIN", err)
	}
	st2 := tok.Status()
	if st2.Up || st2.Retrying || !errors.Is(st2.Err, hsm.ErrPIN) {
		t.Fatalf("status %+v, want down, not retrying, ErrPIN", st2)
	}
	if ev.count(hsm.EventDown, "") != 1 {
		t.Error("no down event")
	}
}
