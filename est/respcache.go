package est

import (
	"sync"
	"time"

	"github.com/plgd-dev/go-coap/v3/message/pool"
	"github.com/plgd-dev/go-coap/v3/udp/coder"
)

// Defaults of ResponseCacheLimits.
const (
	DefaultResponseCacheEntries = 4
	DefaultResponseCacheBytes   = 4 << 10
)

// exchangeLifetime is EXCHANGE_LIFETIME with the default transmission
// parameters (RFC 7252 §4.8.2): how long a Message ID may be a duplicate.
const exchangeLifetime = 247 * time.Second

// ResponseCacheLimits bound the duplicate-detection cache of one session
// (Options.ResponseCache).
type ResponseCacheLimits struct {
	// Entries is the number of responses kept per session. Default 4.
	Entries int
	// Bytes bounds their encoded size per session. Default 4 KiB.
	Bytes int
}

// responseCache is the go-coap response cache of one session (RFC 7252
// §4.5): the answers to the last few Confirmable requests, so that a
// retransmitted request gets the same answer without running the handler
// again. go-coap's own cache keeps every response for EXCHANGE_LIFETIME
// (247 s), so its memory grows with the request rate; this one keeps at
// most Entries responses and Bytes bytes per session, each for at most
// EXCHANGE_LIFETIME, so memory grows with the number of sessions only.
// Evicted and expired responses, and all of them when the session ends,
// are zeroed (they may hold blocks of a server-generated key).
//
// What that gives up: a client that has more than Entries requests
// outstanding and retransmits an older one after it was evicted gets the
// request served again. RFC 7252 §4.5 makes processing each request once a
// SHOULD; a client following NSTART = 1 (§4.7) never has more than one
// outstanding. The est resources stay correct when that happens: block-wise
// state and Enroll are idempotent per request.
type responseCache struct {
	lim ResponseCacheLimits
	now func() time.Time

	mu    sync.Mutex
	items []cachedResponse // oldest first
	bytes int
}

type cachedResponse struct {
	key     string
	data    []byte
	expires time.Time
}

func newResponseCache(lim ResponseCacheLimits, now func() time.Time) *responseCache {
	return &responseCache{lim: lim, now: now}
}

// Load implements udpclient.MessageCache.
func (c *responseCache) Load(key string, msg *pool.Message) (bool, error) {
	now := c.now()
	c.mu.Lock()
	defer c.mu.Unlock() // msg copies data before an eviction can clear it
	for _, it := range c.items {
		if it.key == key && now.Before(it.expires) {
			if _, err := msg.UnmarshalWithDecoder(coder.DefaultCoder, it.data); err != nil {
				return false, err
			}
			return true, nil
		}
	}
	return false, nil
}

// Store implements udpclient.MessageCache: the first response stored for a
// key is kept (go-coap's semantics); the oldest are evicted to stay within
// the limits. A response larger than the byte limit is not kept.
func (c *responseCache) Store(key string, msg *pool.Message) error {
	raw, err := msg.MarshalWithEncoder(coder.DefaultCoder)
	if err != nil {
		return err
	}
	if len(raw) > c.lim.Bytes {
		return nil
	}
	data := append([]byte(nil), raw...)
	now := c.now()
	c.mu.Lock()
	defer c.mu.Unlock()
	c.expireLocked(now)
	for _, it := range c.items {
		if it.key == key {
			return nil
		}
	}
	for len(c.items) > 0 && (len(c.items) >= c.lim.Entries || c.bytes+len(data) > c.lim.Bytes) {
		c.dropOldestLocked()
	}
	c.items = append(c.items, cachedResponse{key: key, data: data, expires: now.Add(exchangeLifetime)})
	c.bytes += len(data)
	return nil
}

// CheckExpirations implements udpclient.MessageCache.
func (c *responseCache) CheckExpirations(now time.Time) {
	c.mu.Lock()
	defer c.mu.Unlock()
	c.expireLocked(now)
}

func (c *responseCache) expireLocked(now time.Time) {
	for len(c.items) > 0 && !now.Before(c.items[0].expires) {
		c.dropOldestLocked()
	}
	if len(c.items) == 0 {
		c.items = nil
	}
}

// dropOldestLocked evicts the oldest response, zeroing its bytes: a block
// of a server-generated key in the clear may be among them.
func (c *responseCache) dropOldestLocked() {
	c.bytes -= len(c.items[0].data)
	clear(c.items[0].data)
	c.items[0] = cachedResponse{}
	c.items = c.items[1:]
}

// drop evicts every response (the session ended).
func (c *responseCache) drop() {
	c.mu.Lock()
	defer c.mu.Unlock()
	for len(c.items) > 0 {
		c.dropOldestLocked()
	}
	c.items = nil
}
