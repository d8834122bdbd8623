//go:build cgo

package hsm_test

import (
	"crypto"
	"crypto/rand"
	"crypto/sha256"
	"testing"

	"github.com/estca/estca/hsm"
	"github.com/estca/estca/softhsm/softhsmtest"
)

// openToken opens a fresh token with Options.SignWithTokenObjects set to
// tokenObjects, closed in tb.Cleanup.
func openToken(tb testing.TB, tokenObjects bool) *hsm.Token {
	tb.Helper()
	o := softhsmtest.Options(tb, softhsmtest.Provision(tb))
	o.SignWithTokenObjects = tokenObjects
	tok, err := hsm.Open(o)
	if err != nil {
		tb.Fatal(err)
	}
	tb.Cleanup(func() { _ = tok.Close() })
	return tok
}

// benchSigner generates a P-256 key in a fresh token (see openToken).
func benchSigner(b *testing.B, tokenObjects bool) crypto.Signer {
	b.Helper()
	s, err := openToken(b, tokenObjects).GenerateKey("bench", hsm.ECDSAP256)
	if err != nil {
		b.Fatal(err)
	}
	return s
}

// BenchmarkSignP256 measures one goroutine signing with a SoftHSM P-256 key
// (C_SignInit + C_Sign, DER conversion, session pool round trip), with the
// default session copy of the key and with the token object itself
// (Options.SignWithTokenObjects).
func BenchmarkSignP256(b *testing.B) {
	for _, c := range []struct {
		name         string
		tokenObjects bool
	}{{"session-copy", false}, {"token-object", true}} {
		b.Run(c.name, func(b *testing.B) {
			s := benchSigner(b, c.tokenObjects)
			d := sha256.Sum256([]byte("bench"))
			for b.Loop() {
				if _, err := s.Sign(rand.Reader, d[:], crypto.SHA256); err != nil {
					b.Fatal(err)
				}
			}
		})
	}
}

// BenchmarkSignP256Parallel measures GOMAXPROCS goroutines signing with one key.
func BenchmarkSignP256Parallel(b *testing.B) {
	s := benchSigner(b, false)
	d := sha256.Sum256([]byte("bench"))
	b.ResetTimer()
	b.RunParallel(func(pb *testing.PB) {
		for pb.Next() {
			if _, err := s.Sign(rand.Reader, d[:], crypto.SHA256); err != nil {
				b.Error(err)
				return
			}
		}
	})
}
