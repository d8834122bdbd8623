package ca

import (
	"context"
	"crypto/x509/pkix"
	"fmt"
	"runtime"
	"sync/atomic"
	"testing"

	"github.com/estca/estca/policy/pkitest"
)

// BenchmarkIssue measures end-to-end issuance: CSR parse and checks, policy,
// a SoftHSM signature, and a durable (fsync, group-committed) store write of
// the certificate and its audit record. CSRs are distinct and prepared before
// the timer. Run with GOMAXPROCS=2 so that goroutines=8 uses 8 goroutines.
func BenchmarkIssue(b *testing.B) {
	f := newFixture(b)
	req := f.requester(b, f.demo.Valid)
	key := pkitest.Key(b)
	var seq atomic.Int64
	prepare := func(n int) [][]byte {
		csrs := make([][]byte, n)
		for i := range csrs {
			csrs[i] = pkitest.CSR(b, key, pkix.Name{CommonName: fmt.Sprintf("bench-%d", seq.Add(1))})
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
