package est

import (
	"crypto/hmac"
	"crypto/rand"
	"crypto/sha256"
	"net/netip"
	"sync"
	"time"
)

// cookieLength is the HelloVerifyRequest cookie length: HMAC-SHA256
// truncated to 160 bits, like pion's own random cookies.
const cookieLength = 20

// DefaultCookieRotation is how often the cookie key changes when
// Options.CookieRotation is zero. A cookie stays valid for one to two
// rotation periods.
const DefaultCookieRotation = 30 * time.Second

// cookieJar makes and checks stateless HelloVerifyRequest cookies (RFC 6347
// §4.2.1): Cookie = HMAC(secret, client IP, client port, ClientHello
// parameters). The secret is random and rotates every period; a cookie made
// with the current or the previous secret is accepted. Nothing per client is
// kept: the cookie is the only state of a peer before it proves that it
// receives at its address.
type cookieJar struct {
	period time.Duration
	now    func() time.Time

	mu      sync.Mutex
	cur     [32]byte
	prev    [32]byte
	hasPrev bool
	since   time.Time
}

func newCookieJar(period time.Duration, now func() time.Time) *cookieJar {
	j := &cookieJar{period: period, now: now}
	_, _ = rand.Read(j.cur[:]) // crypto/rand.Read never fails (Go 1.24+)
	j.since = now()
	return j
}

// keys returns the current and (if any) the previous secret, rotating first
// when the period is over.
func (j *cookieJar) keys() (cur, prev [32]byte, hasPrev bool) {
	now := j.now()
	j.mu.Lock()
	defer j.mu.Unlock()
	if el := now.Sub(j.since); el >= j.period {
		if el >= 2*j.period {
			j.hasPrev = false // both expired: a cookie older than that is stale
		} else {
			j.prev, j.hasPrev = j.cur, true
		}
		_, _ = rand.Read(j.cur[:])
		j.since = now
	}
	return j.cur, j.prev, j.hasPrev
}

func cookieMAC(key [32]byte, peer netip.AddrPort, params []byte) []byte {
	m := hmac.New(sha256.New, key[:])
	a := peer.Addr().As16()
	m.Write(a[:])
	m.Write([]byte{byte(peer.Port() >> 8), byte(peer.Port())})
	m.Write(params)
	return m.Sum(nil)[:cookieLength]
}

// make returns the cookie for a client at peer whose ClientHello has the
// negotiation parameters params (see helloParams).
func (j *cookieJar) make(peer netip.AddrPort, params []byte) []byte {
	cur, _, _ := j.keys()
	return cookieMAC(cur, peer, params)
}

// valid reports whether cookie was made by make for peer and params with the
// current or the previous secret.
func (j *cookieJar) valid(peer netip.AddrPort, params, cookie []byte) bool {
	if len(cookie) != cookieLength {
		return false
	}
	cur, prev, hasPrev := j.keys()
	if hmac.Equal(cookie, cookieMAC(cur, peer, params)) {
		return true
	}
	return hasPrev && hmac.Equal(cookie, cookieMAC(prev, peer, params))
}
