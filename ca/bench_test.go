package ca

import (
	"context"
	"crypto"
	"crypto/rand"
	"crypto/sha256"
	"runtime"
	"sync/atomic"
	"testing"

	"github.com/estca/estca/policy/pkitest"
)

// BenchmarkIssue measures end-to-end issuance: CSR parse and signature
// check, the policy decision (policy.Engine.Evaluate, with the store lookups
// of the request and the revocation state), a SoftHSM signature, and a
// durable (fsync, group-committed) store write of the certificate and its
// audit record. CSRs are distinct (the demo device's subject, one key: the
// ECDSA signatures differ) and prepared before the timer. Run with
// GOMAXPROCS=2 so that goroutines=8 uses 8 goroutines. Compare with
// policy's BenchmarkEvaluate: the policy's share of an enrollment.
func BenchmarkIssue(b *testing.B) {
	f := newFixture(b)
	req := f.requester(b, f.demo.Valid)
	key := pkitest.Key(b)
	prepare := func(n int) [][]byte {
		csrs := make([][]byte, n)
		for i := range csrs {
			csrs[i] = pkitest.RawCSR(b, key, req.Leaf.RawSubject)
		}
		return csrs
	}
	report := func(b *testing.B) {
		b.ReportMetric(float64(b.N)/b.Elapsed().Seconds(), "issuances/s")
	}
	b.Run("goroutines=1", func(b *testing.B) {
		csrs := prepare(b.N)
		b.ResetTimer()
		for i := range b.N {
			if _, err := f.a.Enroll(context.Background(), Request{CSR: csrs[i], Requester: req}); err != nil {
				b.Fatal(err)
			}
		}
		b.StopTimer()
		report(b)
	})
	b.Run("goroutines=8", func(b *testing.B) {
		csrs := prepare(b.N)
		var next atomic.Int64
		b.SetParallelism(max(1, 8/runtime.GOMAXPROCS(0)))
		b.ResetTimer()
		b.RunParallel(func(pb *testing.PB) {
			for pb.Next() {
				i := next.Add(1) - 1
				if _, err := f.a.Enroll(context.Background(), Request{CSR: csrs[i], Requester: req}); err != nil {
					b.Error(err)
					return
				}
			}
		})
		b.StopTimer()
		report(b)
	})
}

// BenchmarkIssuerSignature isolates what verifying every HSM signature costs:
// a SoftHSM P-256 signature over a certificate-sized digest, raw and through
// the VerifyingSigner the authority uses.
func BenchmarkIssuerSignature(b *testing.B) {
	f := newFixture(b)
	d := sha256.Sum256([]byte("a TBSCertificate"))
	for name, s := range map[string]crypto.Signer{
		"raw":      f.opts.Signer,
		"verified": VerifySigner(f.opts.Signer, f.h.Issuing.PublicKey, nil),
	} {
		b.Run(name, func(b *testing.B) {
			for b.Loop() {
				if _, err := s.Sign(rand.Reader, d[:], crypto.SHA256); err != nil {
					b.Fatal(err)
				}
			}
		})
	}
}
