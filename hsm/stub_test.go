//go:build !cgo

package hsm_test

import (
	"crypto"
	"crypto/sha256"
	"errors"
	"testing"

	"github.com/estca/estca/hsm"
)

// TestNoCgo: a build without cgo compiles, and every entry point says why it
// cannot work, with one error.
func TestNoCgo(t *testing.T) {
	if _, err := hsm.Open(hsm.Options{Module: "/usr/lib/softhsm/libsofthsm2.so", TokenLabel: "x"}); !errors.Is(err, hsm.ErrNoCgo) {
		t.Errorf("Open = %v, want ErrNoCgo", err)
	}
	if err := hsm.InitToken("/usr/lib/softhsm/libsofthsm2.so", "x", "so", "user"); !errors.Is(err, hsm.ErrNoCgo) {
		t.Errorf("InitToken = %v, want ErrNoCgo", err)
	}
	tok := &hsm.Token{}
	d := sha256.Sum256([]byte("x"))
	for name, err := range map[string]error{
		"Check":       tok.Check(),
		"DeleteKey":   tok.DeleteKey("k"),
		"Status":      tok.Status().Err,
		"FindKey":     second(tok.FindKey("k")),
		"GenerateKey": second(tok.GenerateKey("k", hsm.ECDSAP256)),
		"KeyInfo":     second(tok.KeyInfo("k")),
		"Sign":        second((&hsm.Key{}).Sign(nil, d[:], crypto.SHA256)),
	} {
		if !errors.Is(err, hsm.ErrNoCgo) {
			t.Errorf("%s = %v, want ErrNoCgo", name, err)
		}
	}
	if hsm.ErrNoCgo.Error() != "hsm: built without cgo: PKCS#11 unavailable" {
		t.Errorf("ErrNoCgo reads %q", hsm.ErrNoCgo)
	}
}

func second[T any](_ T, err error) error { return err }
