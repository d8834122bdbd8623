//go:build cgo

package hsm_test

import (
	"crypto"
	"crypto/ecdsa"
	"crypto/rand"
	"crypto/sha256"
	"errors"
	"fmt"
	"sync"
	"testing"

	"github.com/miekg/pkcs11"

	"github.com/estca/estca/hsm"
	"github.com/estca/estca/softhsm"
	"github.com/estca/estca/softhsm/softhsmtest"
)

// rawHandle opens a second, raw handle on the module, as another part of the
// process (or a careless library) might. C_Initialize must report that the
// module is already initialised by the Token under test.
type rawHandle struct {
	ctx  *pkcs11.Ctx
	slot uint
}

func openRaw(t *testing.T, st *softhsm.Token) *rawHandle {
	t.Helper()
	ctx := pkcs11.New(st.Module)
	if ctx == nil {
		t.Fatal("pkcs11.New failed")
	}
	t.Cleanup(ctx.Destroy) // no C_Finalize: the Token owns the initialisation
	if err := ctx.Initialize(); !errors.Is(err, pkcs11.Error(pkcs11.CKR_CRYPTOKI_ALREADY_INITIALIZED)) {
		t.Fatalf("raw C_Initialize = %v, want CKR_CRYPTOKI_ALREADY_INITIALIZED", err)
	}
	slots, err := ctx.GetSlotList(true)
	if err != nil {
		t.Fatal(err)
	}
	for _, s := range slots {
		if info, err := ctx.GetTokenInfo(s); err == nil && info.Label == st.Label {
			return &rawHandle{ctx: ctx, slot: s}
		}
	}
	t.Fatal("raw handle: token not found")
	return nil
}

// loginState reports the session state a new session sees: CKS_RW_USER_FUNCTIONS
// while the application is logged in, CKS_RW_PUBLIC_SESSION otherwise.
func (r *rawHandle) loginState(t *testing.T) uint {
	t.Helper()
	s, err := r.ctx.OpenSession(r.slot, pkcs11.CKF_SERIAL_SESSION|pkcs11.CKF_RW_SESSION)
	if err != nil {
		t.Fatal(err)
	}
	defer r.ctx.CloseSession(s)
	info, err := r.ctx.GetSessionInfo(s)
	if err != nil {
		t.Fatal(err)
	}
	return info.State
}

func (r *rawHandle) logout(t *testing.T) {
	t.Helper()
	s, err := r.ctx.OpenSession(r.slot, pkcs11.CKF_SERIAL_SESSION|pkcs11.CKF_RW_SESSION)
	if err != nil {
		t.Fatal(err)
	}
	defer r.ctx.CloseSession(s)
	if err := r.ctx.Logout(s); err != nil {
		t.Fatalf("raw C_Logout: %v", err)
	}
}

func signVerify(s crypto.Signer, msg string) error {
	d := sha256.Sum256([]byte(msg))
	sig, err := s.Sign(rand.Reader, d[:], crypto.SHA256)
	if err != nil {
		return err
	}
	if !ecdsa.VerifyASN1(s.Public().(*ecdsa.PublicKey), d[:], sig) {
		return errors.New("signature does not verify")
	}
	return nil
}

// TestSessionRecovery breaks the Token's sessions and login from outside and
// checks that signers recover by themselves.
func TestSessionRecovery(t *testing.T) {
	st, tok := softhsmtest.New(t)
	signer, err := tok.GenerateKey("ca", hsm.ECDSAP256)
	if err != nil {
		t.Fatal(err)
	}
	// Put several sessions in the pool so that all of them go stale at once.
	var wg sync.WaitGroup
	for i := range 8 {
		wg.Go(func() {
			if err := signVerify(signer, fmt.Sprint("warm-up ", i)); err != nil {
				t.Error(err)
			}
		})
	}
	wg.Wait()
	raw := openRaw(t, st)
	if got := raw.loginState(t); got != pkcs11.CKS_RW_USER_FUNCTIONS {
		t.Fatalf("before: session state %d, want logged in", got)
	}
	breakers := []struct {
		name    string
		breakIt func(t *testing.T)
	}{
		{"C_CloseAllSessions", func(t *testing.T) {
			if err := raw.ctx.CloseAllSessions(raw.slot); err != nil {
				t.Fatal(err)
			}
		}},
		{"C_Logout", raw.logout},
	}
	for round := range 2 {
		for _, b := range breakers {
			t.Run(fmt.Sprintf("%s/%d", b.name, round), func(t *testing.T) {
				b.breakIt(t)
				if got := raw.loginState(t); got != pkcs11.CKS_RW_PUBLIC_SESSION {
					t.Fatalf("after %s: session state %d, want logged out", b.name, got)
				}
				if err := signVerify(signer, "after "+b.name); err != nil {
					t.Fatalf("Sign did not recover: %v", err)
				}
				if got := raw.loginState(t); got != pkcs11.CKS_RW_USER_FUNCTIONS {
					t.Fatalf("after recovery: session state %d, want logged in", got)
				}
			})
		}
	}
	t.Run("concurrent", func(t *testing.T) {
		// Fill the pool, break everything, then let 16 goroutines sign at once:
		// one recovers, the others retry on fresh sessions; every Sign succeeds.
		for i := range 4 {
			if err := signVerify(signer, fmt.Sprint(i)); err != nil {
				t.Fatal(err)
			}
		}
		if err := raw.ctx.CloseAllSessions(raw.slot); err != nil {
			t.Fatal(err)
		}
		start := make(chan struct{})
		var wg sync.WaitGroup
		for i := range 16 {
			wg.Go(func() {
				<-start
				if err := signVerify(signer, fmt.Sprint("concurrent ", i)); err != nil {
					t.Error(err)
				}
			})
		}
		close(start)
		wg.Wait()
	})
	t.Run("other operations", func(t *testing.T) {
		if err := raw.ctx.CloseAllSessions(raw.slot); err != nil {
			t.Fatal(err)
		}
		if _, err := tok.FindKey("ca"); err != nil {
			t.Fatalf("FindKey did not recover: %v", err)
		}
		raw.logout(t)
		if _, err := tok.KeyInfo("ca"); err != nil {
			t.Fatalf("KeyInfo did not recover: %v", err)
		}
		raw.logout(t)
		if _, err := tok.GenerateKey("second", hsm.ECDSAP256); err != nil {
			t.Fatalf("GenerateKey did not recover: %v", err)
		}
	})
}

func TestConcurrentSign(t *testing.T) {
	st, tok := softhsmtest.New(t)
	if _, err := tok.GenerateKey("ca", hsm.ECDSAP256); err != nil {
		t.Fatal(err)
	}
	// A second Token on the same module, limited to 3 sessions (2 for
	// operations), makes 16 goroutines wait for sessions.
	opts := softhsmtest.Options(t, st)
	opts.MaxSessions = 3
	small, err := hsm.Open(opts)
	if err != nil {
		t.Fatal(err)
	}
	defer small.Close()
	for name, tk := range map[string]*hsm.Token{"default pool": tok, "pool of 2": small} {
		t.Run(name, func(t *testing.T) {
			signer, err := tk.FindKey("ca")
			if err != nil {
				t.Fatal(err)
			}
			var wg sync.WaitGroup
			for g := range 16 {
				wg.Go(func() {
					for i := range 25 {
						if err := signVerify(signer, fmt.Sprint(g, "/", i)); err != nil {
							t.Error(err)
							return
						}
					}
				})
			}
			wg.Wait()
		})
	}
}

func TestCloseAndReopen(t *testing.T) {
	st, tok := softhsmtest.New(t)
	signer, err := tok.GenerateKey("ca", hsm.ECDSAP256)
	if err != nil {
		t.Fatal(err)
	}
	if err := tok.Close(); err != nil {
		t.Fatal(err)
	}
	if err := tok.Close(); err != nil {
		t.Fatalf("second Close: %v", err)
	}
	if err := signVerify(signer, "closed"); !errors.Is(err, hsm.ErrClosed) {
		t.Errorf("Sign after Close = %v, want ErrClosed", err)
	}
	if _, err := tok.FindKey("ca"); !errors.Is(err, hsm.ErrClosed) {
		t.Errorf("FindKey after Close = %v, want ErrClosed", err)
	}
	for i := range 3 {
		tok2, err := hsm.Open(softhsmtest.Options(t, st))
		if err != nil {
			t.Fatalf("reopen %d: %v", i, err)
		}
		s2, err := tok2.FindKey("ca")
		if err != nil {
			t.Fatal(err)
		}
		if !s2.Public().(*ecdsa.PublicKey).Equal(signer.Public()) {
			t.Error("reopened token returned a different key")
		}
		if err := signVerify(s2, "reopened"); err != nil {
			t.Fatal(err)
		}
		if err := tok2.Close(); err != nil {
			t.Fatal(err)
		}
	}
}

// TestCloseWaitsForSigners closes the Token while signers are running: every
// Sign either succeeds or fails with ErrClosed, and nothing crashes.
func TestCloseWaitsForSigners(t *testing.T) {
	st := softhsmtest.Provision(t)
	tok, err := hsm.Open(softhsmtest.Options(t, st))
	if err != nil {
		t.Fatal(err)
	}
	signer, err := tok.GenerateKey("ca", hsm.ECDSAP256)
	if err != nil {
		t.Fatal(err)
	}
	var wg sync.WaitGroup
	started := make(chan struct{}, 8)
	for g := range 8 {
		wg.Go(func() {
			for i := 0; ; i++ {
				err := signVerify(signer, fmt.Sprint(g, i))
				if i == 0 {
					started <- struct{}{}
				}
				if errors.Is(err, hsm.ErrClosed) {
					return
				}
				if err != nil {
					t.Error(err)
					return
				}
			}
		})
	}
	for range 8 {
		<-started
	}
	if err := tok.Close(); err != nil {
		t.Fatal(err)
	}
	wg.Wait()
}
