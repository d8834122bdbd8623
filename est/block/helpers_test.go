package block

import (
	"bytes"
	"fmt"
	"sync"
	"testing"
	"time"
)

// clock is a manual time source for Options.Now.
type clock struct {
	mu sync.Mutex
	t  time.Time
}

func newClock() *clock { return &clock{t: time.Date(2026, 1, 2, 3, 4, 5, 0, time.UTC)} }

func (c *clock) Now() time.Time {
	c.mu.Lock()
	defer c.mu.Unlock()
	return c.t
}

func (c *clock) Advance(d time.Duration) {
	c.mu.Lock()
	c.t = c.t.Add(d)
	c.mu.Unlock()
}

func newTestManager(t testing.TB, opts Options) (*Manager, *clock) {
	t.Helper()
	c := newClock()
	opts.Now = c.Now
	m, err := NewManager(opts)
	if err != nil {
		t.Fatal(err)
	}
	return m, c
}

// testBody returns n bytes of recognisable content.
func testBody(n int, seed byte) []byte {
	b := make([]byte, n)
	for i := range b {
		b[i] = seed + byte(i*7+i/251)
	}
	return b
}

// block1Requests splits body into the Block1 requests a client sends
// (RFC 7959 §2.3).
func block1Requests(k Key, body []byte, szx uint8) []Incoming {
	size := 16 << szx
	var out []Incoming
	for num := 0; ; num++ {
		end := min((num+1)*size, len(body))
		o := Option{Num: uint32(num), More: end < len(body), SZX: szx}
		out = append(out, Incoming{Key: k, Block1: &o, Payload: body[num*size : end]})
		if !o.More {
			return out
		}
	}
}

func opt(num uint32, more bool, szx uint8) *Option {
	return &Option{Num: num, More: more, SZX: szx}
}

func u32(v uint32) *uint32 { return &v }

// expectReply checks that d is a Reply with the given code.
func expectReply(t *testing.T, d Decision, code uint8) Outgoing {
	t.Helper()
	if d.Handle {
		t.Fatalf("got Handle(%d bytes), want reply %d.%02d", len(d.Body), code>>5, code&31)
	}
	if d.Reply.Code != code {
		t.Fatalf("reply %d.%02d (err %v), want %d.%02d", d.Reply.Code>>5, d.Reply.Code&31, d.Err, code>>5, code&31)
	}
	if d.Err != nil && Code(d.Err) != d.Reply.Code {
		t.Fatalf("Err %v maps to %#x, reply has %#x", d.Err, Code(d.Err), d.Reply.Code)
	}
	return d.Reply
}

// sendAll feeds a Block1 sequence and returns the final decision, checking
// every non-final block is answered 2.31 with its Block1 echoed.
func sendAll(t *testing.T, m *Manager, reqs []Incoming) Decision {
	t.Helper()
	for i, in := range reqs[:len(reqs)-1] {
		out := expectReply(t, m.Request(in), CodeContinue)
		if out.Block1 == nil || out.Block1.Num != uint32(i) || !out.Block1.More {
			t.Fatalf("block %d: 2.31 echo %v", i, out.Block1)
		}
	}
	return m.Request(reqs[len(reqs)-1])
}

// checkInvariants verifies the Manager's internal bookkeeping.
func checkInvariants(t testing.TB, m *Manager) {
	t.Helper()
	m.mu.Lock()
	defer m.mu.Unlock()
	var tr, rs int
	perPeer := map[string]*peerCount{}
	perOwner := map[string]*peerCount{}
	for k, e := range m.entries {
		pc := perPeer[k.Peer]
		if pc == nil {
			pc = &peerCount{}
			perPeer[k.Peer] = pc
		}
		oc := perOwner[e.owner]
		if oc == nil {
			oc = &peerCount{}
			perOwner[e.owner] = oc
		}
		switch e.kind {
		case kindTransfer, kindPending:
			tr++
			pc.transfers++
			oc.transfers++
		case kindResponse:
			rs++
			pc.responses++
			oc.responses++
		default:
			t.Fatalf("entry kind %d", e.kind)
		}
		if len(e.body) > m.opts.MaxBody {
			t.Fatalf("transfer holds %d bytes, MaxBody %d", len(e.body), m.opts.MaxBody)
		}
		if e.kind != kindTransfer && e.body != nil {
			t.Fatalf("kind %d keeps a request body", e.kind)
		}
	}
	if tr != m.transfers || rs != m.responses {
		t.Fatalf("counts transfers %d/%d responses %d/%d", m.transfers, tr, m.responses, rs)
	}
	if len(perPeer) != len(m.peers) {
		t.Fatalf("peers %d, want %d", len(m.peers), len(perPeer))
	}
	for p, want := range perPeer {
		got := m.peers[p]
		if got == nil || *got != *want {
			t.Fatalf("peer %q counts %+v, want %+v", p, got, want)
		}
		if got.transfers > m.opts.MaxTransfersPerPeer || got.responses > m.opts.MaxTransfersPerPeer {
			t.Fatalf("peer %q over limit: %+v", p, got)
		}
	}
	if len(perOwner) != len(m.owners) {
		t.Fatalf("owners %d, want %d", len(m.owners), len(perOwner))
	}
	for o, want := range perOwner {
		if got := m.owners[o]; got == nil || *got != *want || got.transfers > m.opts.MaxTransfersPerOwner || got.responses > m.opts.MaxTransfersPerOwner {
			t.Fatalf("owner %q counts %+v, want %+v (limit %d)", o, got, want, m.opts.MaxTransfersPerOwner)
		}
	}
	if tr > m.opts.MaxTransfers || rs > m.opts.MaxTransfers {
		t.Fatalf("over global limit: %d transfers %d responses", tr, rs)
	}
}

// fetchBlock2 collects a block-wise response: out is the first block, then
// next(num, szx) must return the reply for each later block.
func fetchBlock2(t *testing.T, first Outgoing, szx uint8, next func(num uint32, szx uint8) Outgoing) []byte {
	t.Helper()
	var got bytes.Buffer
	out := first
	if first.Block2 != nil && first.Block2.SZX < szx {
		// The server chose a smaller size (e.g. the client's Block1 size):
		// go on with it, as a client must (RFC 7959 §2.4).
		szx = first.Block2.SZX
	}
	for i := 0; ; i++ {
		if i > 10000 {
			t.Fatal("runaway Block2 loop")
		}
		got.Write(out.Payload)
		if out.Block2 == nil || !out.Block2.More {
			return got.Bytes()
		}
		if len(out.Payload) != out.Block2.Size() {
			t.Fatalf("block %v carries %d bytes", out.Block2, len(out.Payload))
		}
		num := uint32(got.Len() / (16 << szx))
		if got.Len()%(16<<szx) != 0 {
			panic(fmt.Sprintf("offset %d not aligned to %d", got.Len(), 16<<szx))
		}
		out = next(num, szx)
	}
}
