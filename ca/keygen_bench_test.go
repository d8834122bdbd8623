package ca

import (
	"context"
	"fmt"
	"runtime"
	"sync/atomic"
	"testing"

	"github.com/estca/estca/ca/cms"
	"github.com/estca/estca/policy"
)

// BenchmarkServerKeygen measures server-side key generation in the
// authority (no network): key generation and export in SoftHSM, the
// certificate (HSM signature, durable store write), the key package (HSM
// signature, CMS encryption) and the keygen audit record, by key type and
// delivery, with 1 and 8 goroutines. The EST-coaps rate is `estca bench
// --mode skg` (README, Performance).
func BenchmarkServerKeygen(b *testing.B) {
	f := newKeygenFixture(b, KeygenOptions{})
	devCert := f.dev.Leaf
	deliveries := []struct {
		name string
		kr   *cms.KeyRequest
	}{
		{"plain", &cms.KeyRequest{}},
		{"kek", &cms.KeyRequest{Delivery: cms.DeliverKEK, KeyID: []byte("device-kek-1")}},
		{"kari", &cms.KeyRequest{Delivery: cms.DeliverAsymmetric, KeyID: keyIDs(devCert)[0]}},
	}
	for _, prof := range []struct{ name, profile string }{{"p256", "kg"}, {"p384", "kg384"}, {"rsa2048", "kgrsa"}} {
		for _, d := range deliveries {
			// Distinct CSRs: identical requests in flight together are
			// served once (a retransmission), which would flatter the
			// goroutines=8 figures.
			csrs := make([][]byte, 64)
			for i := range csrs {
				csrs[i] = f.csr(b, fmt.Sprintf("bench-%d", i), d.kr)
			}
			for _, g := range []int{1, 8} {
				b.Run(prof.name+"/"+d.name+"/goroutines="+string(rune('0'+g)), func(b *testing.B) {
					var n, next atomic.Int64
					one := func() error {
						csr := csrs[next.Add(1)%int64(len(csrs))]
						res, err := f.g.ServerKeygen(context.Background(), KeygenRequest{CSR: csr, Profile: prof.profile, Requester: f.dev, Operation: policy.OpSkg})
						if err != nil {
							return err
						}
						res.Zero()
						n.Add(1)
						return nil
					}
					b.ResetTimer()
					if g == 1 { // RunParallel would run GOMAXPROCS goroutines
						for range b.N {
							if err := one(); err != nil {
								b.Fatal(err)
							}
						}
					} else {
						b.SetParallelism(max(1, g/runtime.GOMAXPROCS(0)))
						b.RunParallel(func(pb *testing.PB) {
							for pb.Next() {
								if err := one(); err != nil {
									b.Error(err)
									return
								}
							}
						})
					}
					b.StopTimer()
					b.ReportMetric(float64(n.Load())/b.Elapsed().Seconds(), "keys/s")
				})
			}
		}
	}
}
