package store

import (
	"fmt"
	"os"
	"runtime"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	bolt "go.etcd.io/bbolt"
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

// BenchmarkStoreSize fills a store with 10,000 issued certificates (600-byte
// DER, full requester identity and CSR digest, a signed head every 100, as
// the minute heads of a busy server) and reports the bytes per certificate,
// audit record and indexes included: of the file, and of the pages in use
// (the file also holds the slack bbolt grows into). Run it with
// -benchtime 1x; the timing itself is not the point.
func BenchmarkStoreSize(b *testing.B) {
	const n = 10000
	for b.Loop() {
		db, path := openTest(b, Options{})
		der := make([]byte, 600)
		var next atomic.Int64
		issue := func() {
			i := int(next.Add(1))
			s := fmt.Sprintf("%x", 0x7000000000000000+uint64(i)*0x9e3779b97f4a7c15%0x0fffffffffffffff)
			c := Certificate{Serial: s, DER: der, Subject: "SERIALNUMBER=DEMO-" + s + ",CN=device " + s + ",O=Acme Devices",
				SKI: []byte(digest(s)[:20]), Requester: fp(s), Profile: "default", CSRDigest: digest("csr" + s),
				NotBefore: fixedNow, NotAfter: fixedNow.Add(365 * 24 * time.Hour)}
			if _, err := db.Issue(c, AuditRecord{Requester: ident(s), Verdict: "accepted"}); err != nil {
				b.Fatal(err)
			}
			if i%100 == 0 {
				if _, err := db.SignHead(); err != nil {
					b.Fatal(err)
				}
			}
		}
		var wg sync.WaitGroup
		for range 8 {
			wg.Add(1)
			go func() {
				defer wg.Done()
				for next.Load() < n {
					issue()
				}
			}()
		}
		wg.Wait()
		count, _ := db.CountCertificates()
		var inUse int64
		db.bolt.View(func(tx *bolt.Tx) error {
			inUse = tx.Size() - int64(db.bolt.Stats().FreePageN)*int64(db.bolt.Info().PageSize)
			return tx.ForEach(func(name []byte, bk *bolt.Bucket) error {
				st := bk.Stats()
				b.Logf("%-20s %8d keys %10d bytes allocated (%6.0f per certificate), %10d used", name, st.KeyN,
					st.BranchAlloc+st.LeafAlloc, float64(st.BranchAlloc+st.LeafAlloc)/n, st.BranchInuse+st.LeafInuse)
				return nil
			})
		})
		if err := db.Close(); err != nil {
			b.Fatal(err)
		}
		fi, err := os.Stat(path)
		if err != nil {
			b.Fatal(err)
		}
		b.ReportMetric(float64(fi.Size())/float64(count), "file-bytes/cert")
		b.ReportMetric(float64(inUse)/float64(count), "used-bytes/cert")
		b.ReportMetric(float64(count), "certs")
	}
}
