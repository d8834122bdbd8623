package block

import (
	"fmt"
	"sync/atomic"
	"testing"
)

// BenchmarkExchange measures one EST-sized exchange: a 1500-byte request in
// 64-byte Block1 blocks (24 requests) and a 3000-byte response fetched in
// 1024-byte Block2 blocks, on distinct peers from parallel goroutines.
func BenchmarkExchange(b *testing.B) {
	m, err := NewManager(Options{MaxTransfers: 1 << 20})
	if err != nil {
		b.Fatal(err)
	}
	body := testBody(1500, 1)
	resp := testBody(3000, 2)
	var peer atomic.Int64
	b.ReportAllocs()
	b.RunParallel(func(pb *testing.PB) {
		k := Key{Peer: fmt.Sprint("peer", peer.Add(1)), Method: MethodPOST, Path: "/sen"}
		reqs := block1Requests(k, body, 2)
		for pb.Next() {
			for _, in := range reqs[:len(reqs)-1] {
				if d := m.Request(in); d.Reply.Code != CodeContinue {
					b.Fatal(d.Err)
				}
			}
			last := reqs[len(reqs)-1]
			if d := m.Request(last); !d.Handle {
				b.Fatal(d.Err)
			}
			out := m.Respond(last, Response{Code: CodeChanged, Body: resp})
			for num := uint32(1); out.Block2.More; num++ {
				out = m.Request(Incoming{Key: k, Block2: opt(num, false, 6)}).Reply
			}
		}
	})
}
