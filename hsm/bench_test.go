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

func benchSigner(b *testing.B) crypto.Signer {
	b.Helper()
	_, tok := softhsmtest.New(b)
	s, err := tok.GenerateKey("bench", hsm.ECDSAP256)
	if err != nil {
		b.Fatal(err)
	}
	return s
}

// BenchmarkSignP256 measures one goroutine signing with a SoftHSM P-256 key
// (C_SignInit + C_Sign, DER conversion, session pool round trip).
func BenchmarkSignP256(b *testing.B) {
	s := benchSigner(b)
	d := sha256.Sum256([]byte("bench"))
	for b.Loop() {
		if _, err := s.Sign(rand.Reader, d[:], crypto.SHA256); err != nil {
			b.Fatal(err)
		}
	}
}

// BenchmarkSignP256Parallel measures GOMAXPROCS goroutines signing with one key.
func BenchmarkSignP256Parallel(b *testing.B) {
	s := benchSigner(b)
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
