package est

import (
	"net/netip"
	"sync"
	"time"
)

// Admission of cookie-verified handshakes: the session and handshake limits,
// global and per source prefix (IPv4 /32, IPv6 /64), and the handshake rate
// per prefix. Only a peer that returned a valid cookie reaches the admitter,
// so a spoofed source address never holds a slot, a token or an entry here.
//
// The rate is a token bucket with reservations: a peer arriving while the
// bucket is empty is admitted when its token is due, if that is at most
// maxWait away (shorter than a client's first retransmission timeout of 1 s,
// RFC 6347 §4.2.4.1), and refused with an alert at once otherwise. So a
// device gets the configured rate, not the rate at which its retransmission
// timer happens to hit a refilled bucket.

// Admission refusal reasons (handshake failure metric and audit labels).
const (
	ReasonTooManySessions   = "too-many-sessions"
	ReasonPrefixSessions    = "too-many-sessions-prefix"
	ReasonTooManyHandshakes = "too-many-handshakes"
	ReasonPrefixHandshakes  = "too-many-handshakes-prefix"
	ReasonRateLimited       = "rate-limited"
	ReasonIdentitySessions  = "too-many-sessions-identity"
)

// admitLimits are the admitter's limits; zero rate means unlimited rate.
type admitLimits struct {
	sessions, prefixSessions     int
	handshakes, prefixHandshakes int
	rate                         float64
	burst                        float64
	maxWait                      time.Duration
}

type prefixState struct {
	sessions   int
	handshakes int
	tokens     float64
	last       time.Time
}

// admitter counts sessions and handshakes in progress, globally and per
// prefix, and runs the per-prefix rate buckets.
type admitter struct {
	lim admitLimits
	now func() time.Time

	mu         sync.Mutex
	sessions   int
	handshakes int
	prefixes   map[netip.Prefix]*prefixState
}

func newAdmitter(lim admitLimits, now func() time.Time) *admitter {
	return &admitter{lim: lim, now: now, prefixes: map[netip.Prefix]*prefixState{}}
}

// sourcePrefix is the unit of the per-source limits: the address for IPv4,
// its /64 for IPv6 (one subscriber or LAN).
func sourcePrefix(a netip.Addr) netip.Prefix {
	a = a.Unmap()
	if a.Is4() {
		return netip.PrefixFrom(a, 32)
	}
	p, _ := a.Prefix(64)
	return p
}

// admit decides on a cookie-verified handshake from addr. On success it
// counts one session and one handshake in progress and returns the wait
// before the handshake may start (0: now); the caller must call release
// (and handshakeDone) later. On refusal it returns the reason and counts
// nothing.
func (a *admitter) admit(addr netip.Addr) (time.Duration, string) {
	p := sourcePrefix(addr)
	now := a.now()
	a.mu.Lock()
	defer a.mu.Unlock()
	ps := a.prefixes[p]
	switch {
	case a.sessions >= a.lim.sessions:
		return 0, ReasonTooManySessions
	case a.handshakes >= a.lim.handshakes:
		return 0, ReasonTooManyHandshakes
	case ps != nil && ps.sessions >= a.lim.prefixSessions:
		return 0, ReasonPrefixSessions
	case ps != nil && ps.handshakes >= a.lim.prefixHandshakes:
		return 0, ReasonPrefixHandshakes
	}
	if ps == nil {
		ps = &prefixState{tokens: a.lim.burst, last: now}
	}
	var wait time.Duration
	if a.lim.rate > 0 {
		tokens := min(a.lim.burst, ps.tokens+now.Sub(ps.last).Seconds()*a.lim.rate)
		if tokens < 1 {
			wait = time.Duration((1 - tokens) / a.lim.rate * float64(time.Second))
			if wait > a.lim.maxWait {
				ps.tokens, ps.last = tokens, now // not stored if new
				return 0, ReasonRateLimited
			}
		}
		ps.tokens, ps.last = tokens-1, now
	}
	a.prefixes[p] = ps
	a.sessions++
	a.handshakes++
	ps.sessions++
	ps.handshakes++
	return wait, ""
}

// handshakeDone ends the handshake counted by admit for addr.
func (a *admitter) handshakeDone(addr netip.Addr) {
	a.mu.Lock()
	defer a.mu.Unlock()
	a.handshakes--
	if ps := a.prefixes[sourcePrefix(addr)]; ps != nil {
		ps.handshakes--
	}
}

// release ends the session counted by admit for addr.
func (a *admitter) release(addr netip.Addr) {
	p := sourcePrefix(addr)
	now := a.now()
	a.mu.Lock()
	defer a.mu.Unlock()
	a.sessions--
	ps := a.prefixes[p]
	if ps == nil {
		return
	}
	ps.sessions--
	if ps.sessions <= 0 && ps.handshakes <= 0 &&
		(a.lim.rate <= 0 || ps.tokens+now.Sub(ps.last).Seconds()*a.lim.rate >= a.lim.burst) {
		delete(a.prefixes, p)
	}
}

// counts returns the sessions and handshakes in progress.
func (a *admitter) counts() (sessions, handshakes int) {
	a.mu.Lock()
	defer a.mu.Unlock()
	return a.sessions, a.handshakes
}

// sweep forgets prefixes without sessions or handshakes whose bucket is full
// again.
func (a *admitter) sweep(now time.Time) {
	a.mu.Lock()
	defer a.mu.Unlock()
	for p, ps := range a.prefixes {
		if ps.sessions <= 0 && ps.handshakes <= 0 &&
			(a.lim.rate <= 0 || ps.tokens+now.Sub(ps.last).Seconds()*a.lim.rate >= a.lim.burst) {
			delete(a.prefixes, p)
		}
	}
}
