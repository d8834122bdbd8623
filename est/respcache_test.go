package est

import (
	"bytes"
	"context"
	"strconv"
	"testing"
	"time"

	"github.com/plgd-dev/go-coap/v3/message"
	"github.com/plgd-dev/go-coap/v3/message/codes"
	"github.com/plgd-dev/go-coap/v3/message/pool"
)

// TestResponseCacheBounded: the duplicate-detection cache of a session holds
// at most Entries responses and Bytes bytes, each for EXCHANGE_LIFETIME,
// whatever the request rate (RFC 7252 §4.5); the first response stored for
// a Message ID is the one replayed.
func TestResponseCacheBounded(t *testing.T) {
	t.Parallel()
	now := time.Unix(0, 0)
	c := newResponseCache(ResponseCacheLimits{Entries: 3, Bytes: 2000}, func() time.Time { return now })
	p := pool.New(0, 0)
	msg := func(payload int) *pool.Message {
		m := p.AcquireMessage(context.Background())
		m.SetCode(codes.Content)
		m.SetType(message.Acknowledgement)
		m.SetMessageID(1)
		m.SetBody(bytes.NewReader(make([]byte, payload)))
		return m
	}
	size := func() (int, int) {
		c.mu.Lock()
		defer c.mu.Unlock()
		return len(c.items), c.bytes
	}
	for i := range 1000 {
		if err := c.Store(strconv.Itoa(i), msg(100)); err != nil {
			t.Fatal(err)
		}
	}
	if n, b := size(); n != 3 || b > 2000 {
		t.Fatalf("after 1000 responses: %d entries, %d bytes", n, b)
	}
	got := p.AcquireMessage(context.Background())
	if ok, _ := c.Load("999", got); !ok {
		t.Fatal("newest response not kept")
	}
	if ok, _ := c.Load("0", got); ok {
		t.Fatal("oldest response kept")
	}
	// Bytes bound: two 900-byte responses do not fit with a third.
	for i := range 3 {
		_ = c.Store("big"+strconv.Itoa(i), msg(900))
	}
	if n, b := size(); n != 2 || b > 2000 {
		t.Fatalf("big responses: %d entries, %d bytes", n, b)
	}
	// Larger than the whole budget: not kept.
	_ = c.Store("huge", msg(3000))
	if ok, _ := c.Load("huge", got); ok {
		t.Fatal("response above the byte limit kept")
	}
	// First stored wins; expiry after EXCHANGE_LIFETIME.
	_ = c.Store("x", msg(1))
	_ = c.Store("x", msg(50))
	if ok, _ := c.Load("x", got); !ok {
		t.Fatal("x missing")
	} else if b, _ := got.ReadBody(); len(b) != 1 {
		t.Fatalf("replayed %d bytes, want the first response", len(b))
	}
	now = now.Add(exchangeLifetime)
	c.CheckExpirations(now)
	if n, b := size(); n != 0 || b != 0 {
		t.Fatalf("after EXCHANGE_LIFETIME: %d entries, %d bytes", n, b)
	}
}

// TestResponseCacheZeroes: responses leaving the duplicate-detection cache
// (evicted, expired, or all at the end of the session) are zeroed: a block
// of a server-generated key in the clear may be among them.
func TestResponseCacheZeroes(t *testing.T) {
	t.Parallel()
	now := time.Unix(0, 0)
	c := newResponseCache(ResponseCacheLimits{Entries: 2, Bytes: 4096}, func() time.Time { return now })
	p := pool.New(0, 0)
	store := func(key string) []byte {
		t.Helper()
		m := p.AcquireMessage(context.Background())
		m.SetCode(codes.Changed)
		m.SetType(message.Acknowledgement)
		m.SetMessageID(1)
		m.SetBody(bytes.NewReader(bytes.Repeat([]byte{0xa5}, 200)))
		if err := c.Store(key, m); err != nil {
			t.Fatal(err)
		}
		c.mu.Lock()
		defer c.mu.Unlock()
		return c.items[len(c.items)-1].data
	}
	zeroed := func(b []byte) bool { return len(bytes.Trim(b, "\x00")) == 0 }
	first, second := store("1"), store("2")
	third := store("3") // evicts "1"
	if !zeroed(first) || zeroed(second) || zeroed(third) {
		t.Fatal("eviction: the evicted response not zeroed, or a kept one zeroed")
	}
	now = now.Add(exchangeLifetime)
	c.CheckExpirations(now)
	if !zeroed(second) || !zeroed(third) {
		t.Fatal("expired responses not zeroed")
	}
	kept := store("4")
	c.drop()
	if !zeroed(kept) {
		t.Fatal("responses not zeroed when the session ends")
	}
}
