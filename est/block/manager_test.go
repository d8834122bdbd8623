package block

import (
	"bytes"
	"errors"
	"fmt"
	"sync"
	"testing"
	"time"
)

var keyA = Key{Peer: "10.0.0.1:5684", Method: MethodPOST, Path: "/.well-known/est/sen"}

func TestNewManagerOptions(t *testing.T) {
	t.Parallel()
	m, err := NewManager(Options{})
	if err != nil {
		t.Fatal(err)
	}
	want := Options{MaxBody: 64 << 10, MaxTransfersPerPeer: 4, MaxTransfersPerOwner: 8, MaxTransfers: 1024,
		Lifetime: 30 * time.Second, RetryAfter: 2 * time.Second, SZX: 6}
	got := m.opts
	if got.Now == nil {
		t.Fatal("Now not defaulted")
	}
	got.Now, want.Now = nil, nil
	if fmt.Sprint(got) != fmt.Sprint(want) {
		t.Fatalf("defaults %+v, want %+v", got, want)
	}
	for _, bad := range []Options{{MaxBody: -1}, {MaxTransfers: -1}, {MaxTransfersPerPeer: -1},
		{Lifetime: -1}, {RetryAfter: -1}, {SZX: 7}} {
		if _, err := NewManager(bad); err == nil {
			t.Errorf("NewManager(%+v) accepted", bad)
		}
	}
}

func TestBlock1HappyPath(t *testing.T) {
	t.Parallel()
	for szx := uint8(0); szx <= MaxSZX; szx++ {
		for _, n := range []int{16<<szx*3 + 5, 16 << szx * 4} { // ragged and exact last block
			t.Run(fmt.Sprintf("szx%d_%d", szx, n), func(t *testing.T) {
				t.Parallel()
				m, _ := newTestManager(t, Options{})
				body := testBody(n, byte(szx))
				reqs := block1Requests(keyA, body, szx)
				d := sendAll(t, m, reqs)
				if !d.Handle || !bytes.Equal(d.Body, body) {
					t.Fatalf("final: Handle %v, %d bytes (err %v)", d.Handle, len(d.Body), d.Err)
				}
				if st := m.Stats(); st.Transfers != 1 || st.Buffered != 0 {
					t.Fatalf("while the handler runs: %+v", st)
				}
				last := reqs[len(reqs)-1]
				out := m.Respond(last, Response{Code: CodeChanged, Body: []byte("ok")})
				if out.Code != CodeChanged || string(out.Payload) != "ok" || out.Block2 != nil {
					t.Fatalf("response %+v", out)
				}
				if out.Block1 == nil || *out.Block1 != *last.Block1 {
					t.Fatalf("final response Block1 %v, want echo %v", out.Block1, last.Block1)
				}
				checkInvariants(t, m)
				if st := m.Stats(); st.Transfers != 0 {
					t.Fatalf("transfer kept after Respond: %+v", st)
				}
			})
		}
	}
}

func TestBlock1SingleBlockAndPlain(t *testing.T) {
	t.Parallel()
	m, _ := newTestManager(t, Options{})
	d := m.Request(Incoming{Key: keyA, Block1: opt(0, false, 6), Payload: []byte("small")})
	if !d.Handle || string(d.Body) != "small" {
		t.Fatalf("Block1 0/0: %+v", d)
	}
	d = m.Request(Incoming{Key: keyA, Payload: []byte("plain")})
	if !d.Handle || string(d.Body) != "plain" {
		t.Fatalf("plain: %+v", d)
	}
	if st := m.Stats(); st != (Stats{}) {
		t.Fatalf("single-message requests left state: %+v", st)
	}
}

func TestBlock1OutOfOrder(t *testing.T) {
	t.Parallel()
	m, _ := newTestManager(t, Options{})
	reqs := block1Requests(keyA, testBody(64*5, 1), 2)
	expectReply(t, m.Request(reqs[0]), CodeContinue)
	d := m.Request(reqs[2])
	expectReply(t, d, CodeRequestEntityIncomplete)
	if !errors.Is(d.Err, ErrIncomplete) {
		t.Fatalf("err %v", d.Err)
	}
	// The transfer is dropped: the missing block no longer helps.
	expectReply(t, m.Request(reqs[1]), CodeRequestEntityIncomplete)
	if st := m.Stats(); st.Transfers != 0 {
		t.Fatalf("transfer kept: %+v", st)
	}
	// A later block without block 0 is incomplete too.
	expectReply(t, m.Request(reqs[4]), CodeRequestEntityIncomplete)
	// Block 0 starts over and works.
	if d := sendAll(t, m, reqs); !d.Handle {
		t.Fatalf("restart: %+v", d)
	}
	checkInvariants(t, m)
}

func TestBlock1Duplicate(t *testing.T) {
	t.Parallel()
	m, _ := newTestManager(t, Options{})
	body := testBody(32*4+3, 2)
	reqs := block1Requests(keyA, body, 1)
	expectReply(t, m.Request(reqs[0]), CodeContinue)
	expectReply(t, m.Request(reqs[1]), CodeContinue)
	out := expectReply(t, m.Request(reqs[1]), CodeContinue) // retransmission
	if out.Block1 == nil || out.Block1.Num != 1 || !out.Block1.More {
		t.Fatalf("duplicate echo %v", out.Block1)
	}
	expectReply(t, m.Request(reqs[2]), CodeContinue)
	expectReply(t, m.Request(reqs[3]), CodeContinue)
	d := m.Request(reqs[4])
	if !d.Handle || !bytes.Equal(d.Body, body) {
		t.Fatalf("body %d bytes, want %d (duplicate appended twice?)", len(d.Body), len(body))
	}
}

func TestBlock1TooLarge(t *testing.T) {
	t.Parallel()
	t.Run("accumulated", func(t *testing.T) {
		t.Parallel()
		m, _ := newTestManager(t, Options{MaxBody: 100})
		reqs := block1Requests(keyA, testBody(64*3, 3), 2)
		expectReply(t, m.Request(reqs[0]), CodeContinue)
		d := m.Request(reqs[1])
		out := expectReply(t, d, CodeRequestEntityTooLarge)
		if out.Size1 == nil || *out.Size1 != 100 || !errors.Is(d.Err, ErrTooLarge) {
			t.Fatalf("4.13 Size1 %v err %v", out.Size1, d.Err)
		}
		if st := m.Stats(); st.Transfers != 0 || st.Buffered != 0 {
			t.Fatalf("transfer kept: %+v", st)
		}
		expectReply(t, m.Request(reqs[2]), CodeRequestEntityIncomplete)
	})
	t.Run("exactly MaxBody", func(t *testing.T) {
		t.Parallel()
		m, _ := newTestManager(t, Options{MaxBody: 128})
		if d := sendAll(t, m, block1Requests(keyA, testBody(128, 3), 2)); !d.Handle {
			t.Fatalf("%+v", d)
		}
	})
	t.Run("Size1 on block 0", func(t *testing.T) {
		t.Parallel()
		m, _ := newTestManager(t, Options{MaxBody: 1000})
		in := block1Requests(keyA, testBody(64*3, 3), 2)[0]
		in.Size1 = u32(1001)
		out := expectReply(t, m.Request(in), CodeRequestEntityTooLarge)
		if out.Size1 == nil || *out.Size1 != 1000 {
			t.Fatalf("Size1 %v", out.Size1)
		}
		if st := m.Stats(); st.Transfers != 0 {
			t.Fatalf("state kept: %+v", st)
		}
		in.Size1 = u32(1000)
		expectReply(t, m.Request(in), CodeContinue)
	})
	t.Run("single message", func(t *testing.T) {
		t.Parallel()
		m, _ := newTestManager(t, Options{MaxBody: 10})
		expectReply(t, m.Request(Incoming{Key: keyA, Payload: testBody(11, 0)}), CodeRequestEntityTooLarge)
		expectReply(t, m.Request(Incoming{Key: keyA, Size1: u32(11), Payload: []byte("x")}), CodeRequestEntityTooLarge)
	})
}

func TestBlock1PayloadSize(t *testing.T) {
	t.Parallel()
	m, _ := newTestManager(t, Options{})
	// Non-final block shorter than its SZX.
	d := m.Request(Incoming{Key: keyA, Block1: opt(0, true, 2), Payload: testBody(63, 0)})
	expectReply(t, d, CodeBadRequest)
	if !errors.Is(d.Err, ErrBadBlock) {
		t.Fatalf("err %v", d.Err)
	}
	// Final block longer than its SZX.
	expectReply(t, m.Request(Incoming{Key: keyA, Block1: opt(0, false, 2), Payload: testBody(65, 0)}), CodeBadRequest)
	// Mid-transfer: the bad block drops the transfer.
	expectReply(t, m.Request(Incoming{Key: keyA, Block1: opt(0, true, 2), Payload: testBody(64, 0)}), CodeContinue)
	expectReply(t, m.Request(Incoming{Key: keyA, Block1: opt(1, true, 2), Payload: testBody(65, 0)}), CodeBadRequest)
	if st := m.Stats(); st.Transfers != 0 {
		t.Fatalf("state kept: %+v", st)
	}
	// Invalid options given by a caller that did not use Decode.
	expectReply(t, m.Request(Incoming{Key: keyA, Block1: opt(0, true, 7)}), CodeBadOption)
	expectReply(t, m.Request(Incoming{Key: keyA, Block2: opt(MaxNum+1, false, 2)}), CodeBadOption)
}

func TestBlock1ServerPrefersSmallerSZX(t *testing.T) {
	t.Parallel()
	// RFC 7959 §2.3 figure 6: the server answers block 0 with a smaller SZX
	// and the client continues at Num = bytes sent / new size.
	m, _ := newTestManager(t, Options{SZX: 4})
	body := testBody(1024+256+10, 4)
	out := expectReply(t, m.Request(Incoming{Key: keyA, Block1: opt(0, true, 6), Payload: body[:1024]}), CodeContinue)
	if *out.Block1 != (Option{Num: 0, More: true, SZX: 4}) {
		t.Fatalf("echo %v, want 0/1/256", out.Block1)
	}
	expectReply(t, m.Request(Incoming{Key: keyA, Block1: opt(4, true, 4), Payload: body[1024:1280]}), CodeContinue)
	d := m.Request(Incoming{Key: keyA, Block1: opt(5, false, 4), Payload: body[1280:]})
	if !d.Handle || !bytes.Equal(d.Body, body) {
		t.Fatalf("%+v", d.Err)
	}
}

func TestTransferLimits(t *testing.T) {
	t.Parallel()
	m, _ := newTestManager(t, Options{MaxTransfersPerPeer: 2, MaxTransfers: 3, RetryAfter: 1500 * time.Millisecond})
	start := func(peer, tag string) Decision {
		k := Key{Peer: peer, Method: MethodPOST, Path: "/sen", RequestTag: tag}
		return m.Request(Incoming{Key: k, Block1: opt(0, true, 0), Payload: testBody(16, 0)})
	}
	expectReply(t, start("p1", "a"), CodeContinue)
	expectReply(t, start("p1", "b"), CodeContinue)
	d := start("p1", "c")
	out := expectReply(t, d, CodeServiceUnavailable)
	if out.MaxAge == nil || *out.MaxAge != 2 || !errors.Is(d.Err, ErrBusy) {
		t.Fatalf("5.03 Max-Age %v err %v", out.MaxAge, d.Err)
	}
	// Restarting an existing transfer does not need a new slot.
	expectReply(t, start("p1", "a"), CodeContinue)
	expectReply(t, start("p2", "a"), CodeContinue)
	expectReply(t, start("p3", "a"), CodeServiceUnavailable) // global limit
	checkInvariants(t, m)
}

func TestExpiry(t *testing.T) {
	t.Parallel()
	m, c := newTestManager(t, Options{Lifetime: 10 * time.Second, MaxTransfersPerPeer: 1})
	reqs := block1Requests(keyA, testBody(16*3, 5), 0)
	expectReply(t, m.Request(reqs[0]), CodeContinue)
	c.Advance(9 * time.Second)
	expectReply(t, m.Request(reqs[1]), CodeContinue) // activity extends the lifetime
	c.Advance(9 * time.Second)
	if n := m.Sweep(c.Now()); n != 0 {
		t.Fatalf("Sweep removed %d live transfers", n)
	}
	c.Advance(time.Second)
	expectReply(t, m.Request(reqs[2]), CodeRequestEntityIncomplete) // lazily expired

	// Sweep removes idle state of other keys.
	keyB := keyA
	keyB.RequestTag = "01"
	expectReply(t, m.Request(Incoming{Key: keyB, Block1: opt(0, true, 0), Payload: testBody(16, 0)}), CodeContinue)
	c.Advance(10 * time.Second)
	if n := m.Sweep(c.Now()); n != 1 {
		t.Fatalf("Sweep removed %d, want 1", n)
	}
	if st := m.Stats(); st != (Stats{}) {
		t.Fatalf("after Sweep: %+v", st)
	}

	// An expired transfer frees its slot when the limit is hit.
	expectReply(t, m.Request(reqs[0]), CodeContinue)
	c.Advance(10 * time.Second)
	expectReply(t, m.Request(Incoming{Key: keyB, Block1: opt(0, true, 0), Payload: testBody(16, 0)}), CodeContinue)
	checkInvariants(t, m)
}

func TestPeersAndRequestTagsDoNotMix(t *testing.T) {
	t.Parallel()
	m, _ := newTestManager(t, Options{})
	keys := []Key{
		{Peer: "a", Method: MethodPOST, Path: "/sen"},
		{Peer: "b", Method: MethodPOST, Path: "/sen"}, // same token-free key, other peer
		{Peer: "a", Method: MethodPOST, Path: "/sen", RequestTag: "01"},
		{Peer: "a", Method: MethodPOST, Path: "/sen", RequestTag: "02"},
		{Peer: "a", Method: MethodPUT, Path: "/sen"},
	}
	var seqs [][]Incoming
	var bodies [][]byte
	for i, k := range keys {
		body := testBody(32*3+i, byte(40*i))
		bodies = append(bodies, body)
		seqs = append(seqs, block1Requests(k, body, 1))
	}
	done := 0
	for step := 0; done < len(keys); step++ { // interleave block by block
		for i := range keys {
			if step >= len(seqs[i]) {
				continue
			}
			d := m.Request(seqs[i][step])
			if step < len(seqs[i])-1 {
				expectReply(t, d, CodeContinue)
				continue
			}
			done++
			if !d.Handle || !bytes.Equal(d.Body, bodies[i]) {
				t.Fatalf("key %+v: Handle %v, body %d bytes, want %d", keys[i], d.Handle, len(d.Body), len(bodies[i]))
			}
		}
	}
	checkInvariants(t, m)
}

func TestConcurrentTransfers(t *testing.T) {
	t.Parallel()
	m, _ := newTestManager(t, Options{})
	var wg sync.WaitGroup
	errs := make(chan error, 16)
	for g := range 16 {
		wg.Go(func() {
			for r := range 20 {
				k := Key{Peer: fmt.Sprint("peer", g), Method: MethodPOST, Path: "/sen", RequestTag: fmt.Sprint(r % 3)}
				body := testBody(64*5+r, byte(g))
				reqs := block1Requests(k, body, 2)
				for i := range reqs {
					// Each peer its own device: 16 transfers at once would
					// exceed the per-owner limit (8) of a shared owner.
					reqs[i].Owner = fmt.Sprint("device", g)
				}
				for _, in := range reqs[:len(reqs)-1] {
					if d := m.Request(in); d.Reply.Code != CodeContinue {
						errs <- fmt.Errorf("g%d: %v", g, d.Err)
						return
					}
				}
				d := m.Request(reqs[len(reqs)-1])
				if !d.Handle || !bytes.Equal(d.Body, body) {
					errs <- fmt.Errorf("g%d: bad completion %v", g, d.Err)
					return
				}
				m.Respond(reqs[len(reqs)-1], Response{Code: CodeChanged, Body: testBody(3000, 1)})
			}
		})
	}
	wg.Wait()
	close(errs)
	for err := range errs {
		t.Fatal(err)
	}
	checkInvariants(t, m)
}

// TestOwnerLimits: transfers and stored responses are bounded per owner
// (all its peers together) as well as per peer and in all; an owner at its
// limit is refused (ErrOwnerLimit) or evicts its own stored responses,
// never another owner's.
func TestOwnerLimits(t *testing.T) {
	t.Parallel()
	m, _ := newTestManager(t, Options{MaxTransfersPerPeer: 4, MaxTransfersPerOwner: 6, MaxTransfers: 8})
	start := func(peer, owner, tag string) Decision {
		return m.Request(Incoming{Key: Key{Peer: peer, Method: MethodPOST, Path: "sen", RequestTag: tag}, Owner: owner,
			Block1: opt(0, true, 2), Payload: make([]byte, 64)})
	}
	for i := range 4 {
		expectReply(t, start("a", "X", fmt.Sprint(i)), CodeContinue)
	}
	if d := start("a", "X", "4"); !errors.Is(d.Err, ErrPeerLimit) {
		t.Fatalf("fifth on one peer: %v", d.Err)
	}
	for i := range 2 {
		expectReply(t, start("b", "X", fmt.Sprint(i)), CodeContinue)
	}
	if d := start("b", "X", "2"); !errors.Is(d.Err, ErrOwnerLimit) || Code(d.Err) != CodeServiceUnavailable {
		t.Fatalf("seventh of one owner: %v", d.Err)
	}
	expectReply(t, start("c", "Y", "0"), CodeContinue)
	expectReply(t, start("c", "Y", "1"), CodeContinue)
	if d := start("d", "Z", "0"); !errors.Is(d.Err, ErrTotalLimit) {
		t.Fatalf("ninth in all: %v", d.Err)
	}
	checkInvariants(t, m)

	// Stored responses: owner X fills its share; its next one evicts its own
	// oldest, Y's stays.
	r, clk := newTestManager(t, Options{MaxTransfersPerPeer: 4, MaxTransfersPerOwner: 2, MaxTransfers: 8})
	store := func(peer, owner, path string) {
		clk.Advance(time.Millisecond)
		in := Incoming{Key: Key{Peer: peer, Method: MethodPOST, Path: path}, Owner: owner, Block2: opt(0, false, 0)}
		if d := r.Request(in); !d.Handle {
			t.Fatalf("%s: %+v", path, d)
		}
		r.Respond(in, Response{Code: CodeChanged, Body: make([]byte, 100)})
	}
	store("c", "Y", "y1")
	store("a", "X", "x1")
	store("a", "X", "x2")
	store("b", "X", "x3")
	if st := r.Stats(); st.Responses != 3 {
		t.Fatalf("%d stored responses, want 3", st.Responses)
	}
	if _, ok := r.entries[Key{Peer: "c", Method: MethodPOST, Path: "y1"}]; !ok {
		t.Fatal("another owner's stored response evicted")
	}
	if _, ok := r.entries[Key{Peer: "a", Method: MethodPOST, Path: "x1"}]; ok {
		t.Fatal("the owner's oldest response kept over its limit")
	}
	checkInvariants(t, r)
}
