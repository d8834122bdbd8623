package block

import (
	"bytes"
	"testing"
	"time"
)

// zeroed reports whether every byte of b is 0.
func zeroed(b []byte) bool { return len(bytes.Trim(b, "\x00")) == 0 }

// TestSensitiveResponseCleared: the body of a Sensitive response (a
// server-generated key in the clear) is zeroed once the Manager is done
// with it: after its last block was served, when it is evicted, expires or
// is not stored at all; the blocks handed out are copies with the right
// content, and a response that is not sensitive is left alone.
func TestSensitiveResponseCleared(t *testing.T) {
	t.Parallel()
	const n = 3000
	// respond stores a block-wise response with body for k (block 0 of 1024).
	respond := func(t *testing.T, m *Manager, k Key, owner string, sensitive bool) ([]byte, []byte, Outgoing) {
		t.Helper()
		body := testBody(n, 9)
		want := bytes.Clone(body)
		in := Incoming{Key: k, Owner: owner, Block2: opt(0, false, 6), Payload: []byte("csr")}
		if d := m.Request(in); !d.Handle {
			t.Fatalf("request: %+v", d)
		}
		out := m.Respond(in, Response{Code: CodeChanged, Body: body, Sensitive: sensitive})
		if out.Block2 == nil || !out.Block2.More || !bytes.Equal(out.Payload, want[:1024]) {
			t.Fatalf("block 0: %+v", out)
		}
		if out.Sensitive != sensitive || (sensitive && &out.Payload[0] == &body[0]) {
			t.Fatalf("block 0 of a sensitive=%v response: Sensitive %v, aliases the body %v", sensitive, out.Sensitive, &out.Payload[0] == &body[0])
		}
		return body, want, out
	}
	t.Run("completion", func(t *testing.T) {
		t.Parallel()
		m, _ := newTestManager(t, Options{})
		body, want, _ := respond(t, m, keyA, "o", true)
		for num := uint32(1); num <= 2; num++ {
			d := m.Request(Incoming{Key: keyA, Owner: "o", Block2: opt(num, false, 6)})
			got := d.Reply.Payload
			if d.Handle || !d.Reply.Sensitive || !bytes.Equal(got, want[num*1024:min(int(num+1)*1024, n)]) {
				t.Fatalf("block %d: %+v", num, d)
			}
			if num == 1 && zeroed(body) {
				t.Fatal("body zeroed before the last block was served")
			}
		}
		if !zeroed(body) {
			t.Fatal("body not zeroed after the last block")
		}
		if st := m.Stats(); st.Responses != 0 || st.Stored != 0 {
			t.Fatalf("completed sensitive response still stored: %+v", st)
		}
		checkInvariants(t, m)
	})
	t.Run("eviction", func(t *testing.T) {
		t.Parallel()
		m, _ := newTestManager(t, Options{MaxTransfersPerPeer: 1})
		body, _, _ := respond(t, m, keyA, "o", true)
		other := keyA
		other.RequestTag = "01"
		respond(t, m, other, "o", false)
		if !zeroed(body) {
			t.Fatal("evicted body not zeroed")
		}
		checkInvariants(t, m)
	})
	t.Run("expiry", func(t *testing.T) {
		t.Parallel()
		m, c := newTestManager(t, Options{})
		body, _, _ := respond(t, m, keyA, "o", true)
		c.Advance(time.Hour)
		m.Sweep(c.Now())
		if !zeroed(body) {
			t.Fatal("expired body not zeroed")
		}
	})
	t.Run("not stored", func(t *testing.T) {
		t.Parallel()
		m, _ := newTestManager(t, Options{})
		body := []byte("a short private key")
		in := Incoming{Key: keyA, Payload: []byte("csr")}
		m.Request(in)
		out := m.Respond(in, Response{Code: CodeChanged, Body: body, Sensitive: true})
		if string(out.Payload) != "a short private key" || !out.Sensitive || !zeroed(body) {
			t.Fatalf("single-message sensitive response: payload %q, sensitive %v, body %q", out.Payload, out.Sensitive, body)
		}
	})
	t.Run("not sensitive", func(t *testing.T) {
		t.Parallel()
		m, c := newTestManager(t, Options{})
		body, want, _ := respond(t, m, keyA, "o", false)
		c.Advance(time.Hour)
		m.Sweep(c.Now())
		if !bytes.Equal(body, want) {
			t.Fatal("a response that is not sensitive was modified")
		}
	})
}
