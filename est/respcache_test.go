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
