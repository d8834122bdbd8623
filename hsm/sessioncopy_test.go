//go:build cgo

package hsm_test

import (
	"crypto"
	"crypto/rand"
	"crypto/sha256"
	"errors"
	"testing"

	"github.com/estca/estca/hsm"
	"github.com/estca/estca/softhsm/softhsmtest"
)

// wantCopies fails the test unless the token holds n session copies of
// label, each private, sensitive, not extractable and signing only.
func wantCopies(t *testing.T, tok *hsm.Token, label string, n int) {
	t.Helper()
	copies, err := tok.SessionCopies(label)
	if err != nil {
		t.Fatal(err)
	}
	if len(copies) != n {
		t.Fatalf("%d session copies of %q, want %d", len(copies), label, n)
	}
	for _, c := range copies {
		if c.Token || !c.Private || !c.Sensitive || c.Extractable || !c.Sign || c.Type != hsm.ECDSAP256 {
			t.Errorf("session copy %+v: want a private, sensitive, non-extractable P-256 signing session object", c)
		}
	}
}

// TestSessionCopy checks the session copies of signing keys: made at the
// first signature with the token key's protections, one per Key, gone with
// DeleteKey (the old Key then cannot sign), made again after a recovery, not
// made when the token refuses it.
func TestSessionCopy(t *testing.T) {
	st, tok := softhsmtest.New(t)
	k, err := tok.GenerateKey("ca", hsm.ECDSAP256)
	if err != nil {
		t.Fatal(err)
	}
	wantCopies(t, tok, "ca", 0) // not before it signs
	if !tok.OneCall() {
		t.Error("SoftHSM exports C_SignInit and C_Sign: the Token should sign in one cgo call")
	}
	for range 3 {
		if err := signVerify(k, "copy"); err != nil {
			t.Fatal(err)
		}
	}
	wantCopies(t, tok, "ca", 1)
	if ki, err := tok.KeyInfo("ca"); err != nil || !ki.Token {
		t.Fatalf("KeyInfo = %+v, %v: want the token object", ki, err)
	}

	t.Run("recovery", func(t *testing.T) {
		raw := openRaw(t, st)
		if err := raw.ctx.CloseAllSessions(raw.slot); err != nil {
			t.Fatal(err)
		}
		wantCopies(t, tok, "ca", 0) // died with the login session
		if err := signVerify(k, "after recovery"); err != nil {
			t.Fatal(err)
		}
		wantCopies(t, tok, "ca", 1)
		raw.logout(t)
		if err := signVerify(k, "after logout"); err != nil { // the copy is private: logged out, it cannot sign
			t.Fatal(err)
		}
		wantCopies(t, tok, "ca", 1)
	})

	t.Run("delete", func(t *testing.T) {
		k2, err := tok.FindKey("ca")
		if err != nil {
			t.Fatal(err)
		}
		if err := signVerify(k2, "second key"); err != nil {
			t.Fatal(err)
		}
		wantCopies(t, tok, "ca", 2)
		if err := tok.DeleteKey("ca"); err != nil {
			t.Fatal(err)
		}
		wantCopies(t, tok, "ca", 0)
		d := sha256.Sum256([]byte("deleted"))
		for _, s := range []crypto.Signer{k, k2} {
			if _, err := s.Sign(rand.Reader, d[:], crypto.SHA256); !errors.Is(err, hsm.ErrKeyNotFound) {
				t.Errorf("Sign after DeleteKey = %v, want ErrKeyNotFound", err)
			}
		}
	})

	t.Run("refused", func(t *testing.T) {
		if err := tok.GenerateUncopyable("nocopy"); err != nil {
			t.Fatal(err)
		}
		k, err := tok.FindKey("nocopy")
		if err != nil {
			t.Fatal(err)
		}
		for range 2 {
			if err := signVerify(k, "token object"); err != nil {
				t.Fatal(err)
			}
		}
		wantCopies(t, tok, "nocopy", 0)
	})
}

// TestSignWithTokenObjects: with the option, a Key signs with the token
// object and makes no copy.
func TestSignWithTokenObjects(t *testing.T) {
	tok := openToken(t, true)
	k, err := tok.GenerateKey("ca", hsm.ECDSAP256)
	if err != nil {
		t.Fatal(err)
	}
	if err := signVerify(k, "token object"); err != nil {
		t.Fatal(err)
	}
	wantCopies(t, tok, "ca", 0)
}
