//go:build cgo

package hsm_test

import (
	"crypto"
	"crypto/rand"
	"crypto/sha256"
	"fmt"
	"sync"
	"testing"

	"github.com/estca/estca/hsm"
)

// TestDeleteKeyRacesFirstSign deletes keys while their first signature
// (which makes the session copy) runs: no copy may survive DeleteKey, and
// the deleted key must not sign any more. Before the fix, 17 of 300 did.
func TestDeleteKeyRacesFirstSign(t *testing.T) {
	tok := openToken(t, false)
	d := sha256.Sum256([]byte("x"))
	for i := range 200 {
		l := fmt.Sprintf("k%d", i)
		if _, err := tok.GenerateKey(l, hsm.ECDSAP256); err != nil {
			t.Fatal(err)
		}
		k, err := tok.FindKey(l)
		if err != nil {
			t.Fatal(err)
		}
		var wg sync.WaitGroup
		var derr error
		wg.Go(func() { _, _ = k.Sign(rand.Reader, d[:], crypto.SHA256) })
		wg.Go(func() { derr = tok.DeleteKey(l) })
		wg.Wait()
		if derr != nil {
			t.Fatalf("delete %s: %v", l, derr)
		}
		if c, err := tok.SessionCopies(l); err != nil || len(c) > 0 {
			t.Fatalf("%s: %d session copies survive DeleteKey (%v)", l, len(c), err)
		}
		if _, err := k.Sign(rand.Reader, d[:], crypto.SHA256); err == nil {
			t.Fatalf("%s: the deleted key still signs", l)
		}
	}
}

// TestDeleteKeyWithManyCopies: every Key that signed has its own session
// copy; DeleteKey destroys all of them, also beyond one FindObjects batch.
func TestDeleteKeyWithManyCopies(t *testing.T) {
	tok := openToken(t, false)
	if _, err := tok.GenerateKey("ca", hsm.ECDSAP256); err != nil {
		t.Fatal(err)
	}
	d := make([]byte, 32)
	var keys []crypto.Signer
	for range 70 {
		k, err := tok.FindKey("ca")
		if err != nil {
			t.Fatal(err)
		}
		if _, err := k.Sign(rand.Reader, d, crypto.SHA256); err != nil {
			t.Fatal(err)
		}
		keys = append(keys, k)
	}
	if err := tok.DeleteKey("ca"); err != nil {
		t.Fatal(err)
	}
	for i, k := range keys {
		if _, err := k.Sign(rand.Reader, d, crypto.SHA256); err == nil {
			t.Fatalf("Key %d still signs with the deleted key", i)
		}
	}
}
