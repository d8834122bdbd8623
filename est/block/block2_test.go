package block

import (
	"bytes"
	"errors"
	"testing"
	"time"
)

// postWithResponse completes a Block1 POST on k and answers it with respBody
// through Respond, counting handler runs.
func postWithResponse(t *testing.T, m *Manager, k Key, respBody []byte, runs *int) (Incoming, Outgoing) {
	t.Helper()
	reqs := block1Requests(k, testBody(200, 9), 2)
	// The final block asks for 1024-byte response blocks (without it the
	// response would come in blocks of the request's 64 bytes).
	reqs[len(reqs)-1].Block2 = opt(0, false, 6)
	d := sendAll(t, m, reqs)
	if !d.Handle {
		t.Fatalf("final block: %+v", d)
	}
	*runs++
	last := reqs[len(reqs)-1]
	cf := uint16(281)
	return last, m.Respond(last, Response{Code: CodeChanged, ContentFormat: &cf, Body: respBody})
}

func TestBlock2FromStoredResponse(t *testing.T) {
	t.Parallel()
	shapes := []struct {
		name string
		req  func(num uint32, szx uint8, last Incoming) Incoming
	}{
		{"libcoap 4.3.1: Block2, Size1, Request-Tag, no payload", func(num uint32, szx uint8, last Incoming) Incoming {
			return Incoming{Key: last.Key, Block2: opt(num, false, szx), Size1: u32(200)}
		}},
		{"repeats final Block1 and payload", func(num uint32, szx uint8, last Incoming) Incoming {
			in := last
			in.Block2 = opt(num, false, szx)
			return in
		}},
	}
	for _, sh := range shapes {
		t.Run(sh.name, func(t *testing.T) {
			t.Parallel()
			m, _ := newTestManager(t, Options{})
			k := keyA
			k.RequestTag = "54db8c77"
			runs := 0
			resp := testBody(3000, 7)
			last, first := postWithResponse(t, m, k, resp, &runs)
			if first.Block2 == nil || *first.Block2 != (Option{Num: 0, More: true, SZX: 6}) {
				t.Fatalf("first block Block2 %v, want 0/1/1024", first.Block2)
			}
			if first.Size2 == nil || *first.Size2 != 3000 {
				t.Fatalf("first block Size2 %v", first.Size2)
			}
			if first.Block1 == nil || *first.Block1 != *last.Block1 {
				t.Fatalf("first block Block1 %v", first.Block1)
			}
			got := fetchBlock2(t, first, 6, func(num uint32, szx uint8) Outgoing {
				d := m.Request(sh.req(num, szx, last))
				out := expectReply(t, d, CodeChanged)
				if out.ContentFormat == nil || *out.ContentFormat != 281 {
					t.Fatalf("block %d lost Content-Format", num)
				}
				return out
			})
			if !bytes.Equal(got, resp) {
				t.Fatalf("reassembled %d bytes, want %d", len(got), len(resp))
			}
			if runs != 1 {
				t.Fatalf("handler ran %d times", runs)
			}
			// A block beyond the end: 4.02 Bad Option, the response stays.
			d := m.Request(sh.req(3, 6, last))
			expectReply(t, d, CodeBadOption)
			if !errors.Is(d.Err, ErrBadOption) {
				t.Fatalf("err %v", d.Err)
			}
			expectReply(t, m.Request(sh.req(2, 6, last)), CodeChanged)
			// The final Block1 again (a retransmission with a new message ID)
			// is answered from the stored response, not by the handler.
			out := expectReply(t, m.Request(last), CodeChanged)
			if !bytes.Equal(out.Payload, resp[:1024]) || out.Block1 == nil || *out.Block1 != *last.Block1 {
				t.Fatalf("replayed final block: %d bytes, Block1 %v", len(out.Payload), out.Block1)
			}
			checkInvariants(t, m)
		})
	}
}

func TestBlock2SZXChange(t *testing.T) {
	t.Parallel()
	m, _ := newTestManager(t, Options{})
	runs := 0
	resp := testBody(2500, 3)
	_, first := postWithResponse(t, m, keyA, resp, &runs)
	if len(first.Payload) != 1024 {
		t.Fatalf("first block %d bytes", len(first.Payload))
	}
	// The client switches to 256-byte blocks after block 0 of 1024: the next
	// block is Num 4 (offset 1024), then to 64-byte blocks.
	var got bytes.Buffer
	got.Write(first.Payload)
	for _, step := range []struct {
		num uint32
		szx uint8
	}{{4, 4}, {5, 4}, {24, 2}, {25, 2}} {
		out := expectReply(t, m.Request(Incoming{Key: keyA, Block2: opt(step.num, false, step.szx)}), CodeChanged)
		if out.Block2 == nil || out.Block2.Num != step.num || out.Block2.SZX != step.szx {
			t.Fatalf("asked %d/%d, got %v", step.num, step.szx, out.Block2)
		}
		if int(step.num)*(16<<step.szx) != got.Len() {
			t.Fatalf("test bug: offset")
		}
		got.Write(out.Payload)
	}
	for num := uint32(26); ; num++ {
		out := expectReply(t, m.Request(Incoming{Key: keyA, Block2: opt(num, false, 2)}), CodeChanged)
		got.Write(out.Payload)
		if !out.Block2.More {
			break
		}
	}
	if !bytes.Equal(got.Bytes(), resp) || runs != 1 {
		t.Fatalf("got %d bytes (want %d), runs %d", got.Len(), len(resp), runs)
	}
}

func TestBlock2ServerSZXCapsClient(t *testing.T) {
	t.Parallel()
	m, _ := newTestManager(t, Options{SZX: 3}) // 128-byte blocks at most
	resp := testBody(1000, 1)
	in := Incoming{Key: keyA, Block2: opt(0, false, 6)}
	d := m.Request(in)
	if !d.Handle {
		t.Fatal("want Handle")
	}
	first := m.Respond(in, Response{Code: CodeChanged, Body: resp})
	if first.Block2 == nil || first.Block2.SZX != 3 || len(first.Payload) != 128 {
		t.Fatalf("first %v %d bytes", first.Block2, len(first.Payload))
	}
	got := fetchBlock2(t, first, 3, func(num uint32, szx uint8) Outgoing {
		return expectReply(t, m.Request(Incoming{Key: keyA, Block2: opt(num, false, szx)}), CodeChanged)
	})
	if !bytes.Equal(got, resp) {
		t.Fatalf("got %d bytes", len(got))
	}
}

func TestBlock2GET(t *testing.T) {
	t.Parallel()
	m, c := newTestManager(t, Options{Lifetime: 5 * time.Second})
	k := Key{Peer: "p", Method: MethodGET, Path: "/crts"}
	runs := 0
	resource := testBody(700, 11)
	get := func(b2 *Option) Outgoing {
		in := Incoming{Key: k, Block2: b2}
		d := m.Request(in)
		if !d.Handle {
			return d.Reply
		}
		runs++
		return m.Respond(in, Response{Code: CodeContent, Body: resource})
	}
	first := get(opt(0, false, 2)) // 64-byte blocks
	got := fetchBlock2(t, first, 2, func(num uint32, szx uint8) Outgoing { return get(opt(num, false, szx)) })
	if !bytes.Equal(got, resource) || runs != 1 {
		t.Fatalf("got %d bytes, runs %d", len(got), runs)
	}
	// Num 0 recomputes.
	get(opt(0, false, 2))
	if runs != 2 {
		t.Fatalf("Num 0 did not recompute: runs %d", runs)
	}
	// After expiry, a later block recomputes (GET is safe) and is sliced.
	c.Advance(5 * time.Second)
	out := get(opt(3, false, 2))
	if runs != 3 || !bytes.Equal(out.Payload, resource[192:256]) || out.Block2.Num != 3 || !out.Block2.More {
		t.Fatalf("recomputed block 3: runs %d, %v", runs, out.Block2)
	}
	// ... and is stored for the next ones.
	get(opt(4, false, 2))
	if runs != 3 {
		t.Fatalf("block 4 recomputed")
	}
	// Beyond the end on a recomputation: 4.02.
	c.Advance(5 * time.Second)
	if out := get(opt(11, false, 2)); out.Code != CodeBadOption {
		t.Fatalf("beyond end: %#x", out.Code)
	}
	// A response that fits one block needs no state; Block2 echoed with M=0.
	small := Incoming{Key: Key{Peer: "p", Method: MethodGET, Path: "/att"}, Block2: opt(0, false, 6)}
	if !m.Request(small).Handle {
		t.Fatal("want Handle")
	}
	out = m.Respond(small, Response{Code: CodeContent, Body: []byte("tiny")})
	if out.Block2 == nil || out.Block2.More || out.Block2.Num != 0 || out.Size2 != nil {
		t.Fatalf("small response %+v", out)
	}
	checkInvariants(t, m)
}

func TestBlock2POSTWithoutStoredResponse(t *testing.T) {
	t.Parallel()
	m, c := newTestManager(t, Options{Lifetime: 5 * time.Second})
	d := m.Request(Incoming{Key: keyA, Block2: opt(1, false, 6)})
	expectReply(t, d, CodeRequestEntityIncomplete)
	runs := 0
	postWithResponse(t, m, keyA, testBody(2000, 1), &runs)
	c.Advance(5 * time.Second)
	expectReply(t, m.Request(Incoming{Key: keyA, Block2: opt(1, false, 6)}), CodeRequestEntityIncomplete)
	if st := m.Stats(); st != (Stats{}) {
		t.Fatalf("expired response kept: %+v", st)
	}
}

func TestBlock2NewRequestReplacesStored(t *testing.T) {
	t.Parallel()
	m, _ := newTestManager(t, Options{})
	runs := 0
	postWithResponse(t, m, keyA, testBody(2000, 1), &runs)
	second := testBody(2000, 2)
	_, first := postWithResponse(t, m, keyA, second, &runs)
	got := fetchBlock2(t, first, 6, func(num uint32, szx uint8) Outgoing {
		return expectReply(t, m.Request(Incoming{Key: keyA, Block2: opt(num, false, szx)}), CodeChanged)
	})
	if !bytes.Equal(got, second) || runs != 2 {
		t.Fatalf("served the old response? runs %d", runs)
	}
	// A plain (single-message) request supersedes the stored response.
	if d := m.Request(Incoming{Key: keyA, Payload: []byte("x")}); !d.Handle {
		t.Fatal("want Handle")
	}
	expectReply(t, m.Request(Incoming{Key: keyA, Block2: opt(1, false, 6)}), CodeRequestEntityIncomplete)
	checkInvariants(t, m)
}

func TestFinalBlockWhileHandlerRuns(t *testing.T) {
	t.Parallel()
	m, _ := newTestManager(t, Options{})
	reqs := block1Requests(keyA, testBody(100, 1), 2)
	if d := sendAll(t, m, reqs); !d.Handle {
		t.Fatal("want Handle")
	}
	out := expectReply(t, m.Request(reqs[len(reqs)-1]), CodeServiceUnavailable)
	if out.MaxAge == nil {
		t.Fatal("5.03 without Max-Age")
	}
	out = m.Respond(reqs[len(reqs)-1], Response{Code: CodeChanged, Body: []byte("done")})
	if string(out.Payload) != "done" {
		t.Fatalf("%+v", out)
	}
	// The small response is kept only to answer a repeated final block.
	if out := expectReply(t, m.Request(reqs[len(reqs)-1]), CodeChanged); string(out.Payload) != "done" || out.Block2 != nil {
		t.Fatalf("replay %+v", out)
	}
}

func TestStoredResponseLimit(t *testing.T) {
	t.Parallel()
	m, c := newTestManager(t, Options{MaxTransfersPerPeer: 2, MaxTransfers: 3})
	runs := 0
	paths := []string{"/a", "/b", "/c"}
	for _, p := range paths {
		k := Key{Peer: "p", Method: MethodPOST, Path: p}
		postWithResponse(t, m, k, testBody(2000, p[1]), &runs)
		c.Advance(time.Second)
	}
	checkInvariants(t, m)
	// The least recently used (/a) was evicted; /b and /c are served.
	expectReply(t, m.Request(Incoming{Key: Key{Peer: "p", Method: MethodPOST, Path: "/a"}, Block2: opt(1, false, 6)}), CodeRequestEntityIncomplete)
	for _, p := range paths[1:] {
		out := expectReply(t, m.Request(Incoming{Key: Key{Peer: "p", Method: MethodPOST, Path: p}, Block2: opt(1, false, 6)}), CodeChanged)
		if !bytes.Equal(out.Payload, testBody(2000, p[1])[1024:]) {
			t.Fatalf("%s: wrong block", p)
		}
	}
	// Global limit: other peers evict across peers.
	for _, p := range []string{"q", "r"} {
		postWithResponse(t, m, Key{Peer: p, Method: MethodPOST, Path: "/a"}, testBody(2000, 1), &runs)
	}
	checkInvariants(t, m)
	if st := m.Stats(); st.Responses != 3 {
		t.Fatalf("%+v", st)
	}
}

// TestBlock2SizeFromTransfer: the response block size is the Block2 size
// given in any request of the Block1 transfer (libcoap -b 16 puts it in the
// first one, RFC 9148 Appendix B.2), else no larger than the client's Block1
// size.
func TestBlock2SizeFromTransfer(t *testing.T) {
	t.Parallel()
	resp := testBody(700, 4)
	tests := []struct {
		name string
		mod  func(reqs []Incoming)
		want uint8
	}{
		{"Block2 in the first request", func(r []Incoming) { r[0].Block2 = opt(0, false, 0) }, 0},
		{"Block2 in a middle request", func(r []Incoming) { r[1].Block2 = opt(0, false, 1) }, 1},
		{"no Block2: Block1 size", func([]Incoming) {}, 2},
		{"final Block2 wins", func(r []Incoming) { r[0].Block2 = opt(0, false, 0); r[len(r)-1].Block2 = opt(0, false, 3) }, 3},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			t.Parallel()
			m, _ := newTestManager(t, Options{})
			reqs := block1Requests(keyA, testBody(200, 9), 2)
			tt.mod(reqs)
			d := sendAll(t, m, reqs)
			if !d.Handle {
				t.Fatalf("final block: %+v", d)
			}
			last := reqs[len(reqs)-1]
			first := m.Respond(last, Response{Code: CodeChanged, Body: resp})
			if first.Block2 == nil || first.Block2.SZX != tt.want || len(first.Payload) != 16<<tt.want {
				t.Fatalf("first block %v with %d bytes, want size %d", first.Block2, len(first.Payload), 16<<tt.want)
			}
			got := fetchBlock2(t, first, tt.want, func(num uint32, szx uint8) Outgoing {
				return expectReply(t, m.Request(Incoming{Key: keyA, Block2: opt(num, false, szx)}), CodeChanged)
			})
			if !bytes.Equal(got, resp) {
				t.Fatal("reassembled response differs")
			}
			checkInvariants(t, m)
		})
	}
	// A single-message Block1 request (block 0, no more) without Block2.
	m, _ := newTestManager(t, Options{})
	in := Incoming{Key: Key{Peer: "b", Method: MethodPOST, Path: "sen"}, Block1: opt(0, false, 1), Payload: []byte("small")}
	if d := m.Request(in); !d.Handle {
		t.Fatal("want Handle")
	}
	if out := m.Respond(in, Response{Code: CodeChanged, Body: resp}); out.Block2 == nil || out.Block2.SZX != 1 {
		t.Fatalf("single-block request answered with %v", out.Block2)
	}
}
