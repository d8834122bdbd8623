package store

import (
	"fmt"
	"runtime"
	"sync/atomic"
	"testing"
	"time"
)

// BenchmarkIssue measures durable (fsync, group-committed) issuance with 1
// and 8 concurrent callers, for a few MaxBatchDelay settings. issues/s is
// the implied throughput.
func BenchmarkIssue(b *testing.B) {
	m := newCertMaker(b)
	der := m.der(b, "1")
	modes := []struct {
		name string
		opts Options
	}{
		{"committer", Options{}},
		{"boltbatch-500us", Options{BoltBatch: true, MaxBatchDelay: 500 * time.Microsecond}},
		{"boltbatch-1ms", Options{BoltBatch: true, MaxBatchDelay: time.Millisecond}},
		{"boltbatch-2ms", Options{BoltBatch: true, MaxBatchDelay: 2 * time.Millisecond}},
	}
	for _, mode := range modes {
		for _, goroutines := range []int{1, 8, 32} {
			b.Run(fmt.Sprintf("%s/goroutines=%d", mode.name, goroutines), func(b *testing.B) {
				db, _ := openTest(b, mode.opts)
				var next atomic.Int64
				issue := func() {
					s := serialOf(int(next.Add(1)))
					c := Certificate{Serial: s, DER: der, Subject: "CN=device-" + s, SKI: []byte(digest(s)[:40]),
						Requester: fp(s), Profile: "default", CSRDigest: digest(s), NotBefore: fixedNow, NotAfter: fixedNow}
					if _, err := db.Issue(c, AuditRecord{Requester: ident(s), Verdict: "accept"}); err != nil {
						b.Error(err)
					}
				}
				b.ResetTimer()
				if goroutines == 1 {
					for b.Loop() {
						issue()
					}
				} else {
					// RunParallel starts parallelism × GOMAXPROCS goroutines.
					b.SetParallelism(max(1, goroutines/runtime.GOMAXPROCS(0)))
					b.RunParallel(func(pb *testing.PB) {
						for pb.Next() {
							issue()
						}
					})
				}
				b.ReportMetric(float64(b.N)/b.Elapsed().Seconds(), "issues/s")
			})
		}
	}
}
