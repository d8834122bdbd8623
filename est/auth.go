package est

import (
	"context"
	"crypto/sha256"
	"crypto/x509"
	"errors"
	"log/slog"
	"net"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	"github.com/pion/dtls/v3"

	"github.com/estca/estca/ca"
)

// Handshake failure reasons, the label values of the handshake failure metric.
const (
	ReasonNoCertificate   = "no-certificate"
	ReasonBadCertificate  = "bad-certificate"
	ReasonUnauthenticated = "unauthenticated"
	ReasonForbidden       = "forbidden"
	ReasonAuthority       = "authority-error"
	ReasonTimeout         = "timeout"
	ReasonRateLimited     = "rate-limited"
	ReasonTooManySessions = "too-many-sessions"
	ReasonProtocol        = "protocol"
	// ReasonHSMUnavailable: the server could not sign its handshake because
	// the HSM is down (ca.ErrHSMUnavailable); the client got an
	// internal_error alert.
	ReasonHSMUnavailable = "hsm-unavailable"
	// ReasonHSMBadSignature: the HSM returned a handshake signature that
	// does not verify (ca.ErrBadSignature); it was not sent.
	ReasonHSMBadSignature = "hsm-bad-signature"
)

// authError is returned from VerifyPeerCertificate so that the handshake
// failure can be classified and audited.
type authError struct {
	reason  string
	subject string // subject of the presented leaf, "" when none was parsed
	err     error
}

// auditReason is the reason a refused handshake is tallied under: the metric
// reason, with the authority's fixed reason when it gave a safe one.
func (e *authError) auditReason() string {
	var ce *ca.Error
	if errors.As(e.err, &ce) && safeReason(ce.Reason) {
		return e.reason + ": " + ce.Reason
	}
	return e.reason
}

func (e *authError) Error() string { return "est: client certificate rejected: " + e.err.Error() }
func (e *authError) Unwrap() error { return e.err }

// authCacheMax bounds the handshake→session hand-over cache.
const authCacheMax = 4096

// authCacheTTL is how long an authentication waits to be picked up by its
// completed handshake.
const authCacheTTL = time.Minute

type authEntry struct {
	who ca.Requester
	at  time.Time
}

// authenticator runs Authority.Authenticate inside the DTLS handshake
// (VerifyPeerCertificate) and hands the requester over to the session once
// the handshake completes, keyed by the SHA-256 of the raw certificate chain.
type authenticator struct {
	auth Authority
	now  func() time.Time

	mu    sync.Mutex
	cache map[[32]byte]authEntry
}

func chainKey(raw [][]byte) [32]byte {
	h := sha256.New()
	for _, c := range raw {
		var l [4]byte
		l[0], l[1], l[2], l[3] = byte(len(c)>>24), byte(len(c)>>16), byte(len(c)>>8), byte(len(c))
		h.Write(l[:])
		h.Write(c)
	}
	var k [32]byte
	copy(k[:], h.Sum(nil))
	return k
}

// verify is the pion VerifyPeerCertificate callback. A failure aborts the
// handshake with a bad_certificate alert, before any application data.
func (a *authenticator) verify(raw [][]byte, _ [][]*x509.Certificate) error {
	who, err := a.authenticate(raw)
	if err != nil {
		return err
	}
	now := a.now()
	a.mu.Lock()
	defer a.mu.Unlock()
	if len(a.cache) >= authCacheMax {
		for k, e := range a.cache {
			if now.Sub(e.at) > authCacheTTL {
				delete(a.cache, k)
			}
		}
		if len(a.cache) >= authCacheMax {
			clear(a.cache) // completed handshakes re-authenticate on a miss
		}
	}
	a.cache[chainKey(raw)] = authEntry{who: who, at: now}
	return nil
}

func (a *authenticator) authenticate(raw [][]byte) (ca.Requester, error) {
	if len(raw) == 0 {
		return ca.Requester{}, &authError{reason: ReasonNoCertificate, err: errors.New("no client certificate")}
	}
	chain := make([]*x509.Certificate, 0, len(raw))
	for _, der := range raw {
		c, err := x509.ParseCertificate(der)
		if err != nil {
			return ca.Requester{}, &authError{reason: ReasonBadCertificate, err: err}
		}
		chain = append(chain, c)
	}
	who, err := a.auth.Authenticate(chain)
	if err != nil {
		reason := ReasonAuthority
		switch ca.KindOf(err) {
		case ca.KindUnauthenticated:
			reason = ReasonUnauthenticated
		case ca.KindForbidden:
			reason = ReasonForbidden
		}
		return ca.Requester{}, &authError{reason: reason, subject: chain[0].Subject.String(), err: err}
	}
	if who.Leaf == nil {
		who.Leaf = chain[0]
	}
	return who, nil
}

// take returns the requester authenticated for raw during the handshake, or
// authenticates again when it is no longer cached.
func (a *authenticator) take(raw [][]byte) (ca.Requester, error) {
	k := chainKey(raw)
	a.mu.Lock()
	e, ok := a.cache[k]
	delete(a.cache, k)
	a.mu.Unlock()
	if ok {
		return e.who, nil
	}
	return a.authenticate(raw)
}

// handshakeReason classifies a handshake error for the metric.
func serverHandshakeReason(err error) string {
	var ae *authError
	switch {
	case errors.As(err, &ae):
		return ae.reason
	case errors.Is(err, ca.ErrHSMUnavailable):
		return ReasonHSMUnavailable
	case errors.Is(err, ca.ErrBadSignature):
		return ReasonHSMBadSignature
	case errors.Is(err, context.DeadlineExceeded):
		return ReasonTimeout
	case strings.Contains(err.Error(), "required client verification"):
		return ReasonNoCertificate
	case strings.Contains(err.Error(), "bad_certificate"), strings.Contains(err.Error(), "certificate"):
		return ReasonBadCertificate
	}
	return ReasonProtocol
}

// session is a DTLS connection of the server: go-coap runs the handshake
// through HandshakeContext, which also establishes the requester. Handlers
// reach it through the go-coap connection's NetConn.
type session struct {
	*dtls.Conn
	srv *Server
	id  string // block-wise peer key: stable across Connection ID rebinding

	// go-coap calls HandshakeContext before every read and write; the
	// handshake and the requester binding happen once, under hsMu. who is
	// written before ready is set and never again.
	hsMu      sync.Mutex
	ready     atomic.Bool
	who       ca.Requester
	closeOnce sync.Once
	refused   atomic.Bool // closed because its requester failed the re-check

	// The last CON refused by Read (critical.go), to answer its
	// retransmissions; used by go-coap's read loop only.
	lastRefusal    []byte
	lastRefusalMID int32
}

// HandshakeContext runs the DTLS handshake and binds the authenticated
// requester to the session.
func (c *session) HandshakeContext(ctx context.Context) error {
	if c.ready.Load() {
		return nil
	}
	c.hsMu.Lock()
	defer c.hsMu.Unlock()
	if c.ready.Load() {
		return nil
	}
	ctx, cancel := context.WithTimeout(ctx, c.srv.o.HandshakeTimeout)
	defer cancel()
	err := c.Conn.HandshakeContext(ctx)
	if err == nil {
		st, ok := c.Conn.ConnectionState()
		if !ok || len(st.PeerCertificates) == 0 {
			err = &authError{reason: ReasonNoCertificate, err: errors.New("no client certificate")}
		} else {
			c.who, err = c.srv.authn.take(st.PeerCertificates)
		}
	}
	if err != nil {
		reason := serverHandshakeReason(err)
		c.srv.metrics.handshakeFailure(reason)
		peer := c.RemoteAddr().String()
		level := slog.LevelDebug
		if reason == ReasonHSMBadSignature {
			level = slog.LevelError // a faulty HSM: the operator must know at once
		}
		c.srv.log.Log(ctx, level, "dtls handshake failed", "peer", peer, "reason", reason, "error", err)
		audit, subject := reason, ""
		var ae *authError
		if errors.As(err, &ae) {
			audit, subject = ae.auditReason(), ae.subject
		}
		c.srv.noteHandshake(audit, peer, subject)
		return err
	}
	c.ready.Store(true)
	c.srv.liveMu.Lock()
	c.srv.live[c] = struct{}{}
	c.srv.liveMu.Unlock()
	return nil
}

// Close closes the DTLS connection once and releases its session slot.
func (c *session) Close() error {
	err := c.Conn.Close()
	c.closeOnce.Do(func() {
		c.srv.liveMu.Lock()
		delete(c.srv.live, c)
		c.srv.liveMu.Unlock()
		c.srv.sessionDone()
	})
	return err
}

// identity renders a requester for logs: a fingerprint prefix and the subject.
// The authority computed both at the handshake; nothing is hashed or
// formatted again per request.
func identity(who *ca.Requester) (fp, subject string) {
	if who == nil || who.Leaf == nil {
		return "", ""
	}
	fp = who.Identity.Fingerprint
	return fp[:min(len(fp), 12)], who.Identity.Subject
}

// rateLimiter is a token bucket per peer IP address for handshake attempts.
type rateLimiter struct {
	rate  float64 // tokens per second; <= 0 disables
	burst float64
	now   func() time.Time

	mu      sync.Mutex
	buckets map[string]*bucket
}

type bucket struct {
	tokens float64
	last   time.Time
}

// rateLimiterMax bounds the number of tracked addresses.
const rateLimiterMax = 65536

func (l *rateLimiter) allow(addr net.Addr) bool {
	if l.rate <= 0 {
		return true
	}
	key := addr.String()
	if ua, ok := addr.(*net.UDPAddr); ok {
		key = ua.IP.String()
	}
	now := l.now()
	l.mu.Lock()
	defer l.mu.Unlock()
	b, ok := l.buckets[key]
	if !ok {
		if len(l.buckets) >= rateLimiterMax {
			l.sweepLocked(now)
		}
		b = &bucket{tokens: l.burst, last: now}
		l.buckets[key] = b
	}
	b.tokens = min(l.burst, b.tokens+now.Sub(b.last).Seconds()*l.rate)
	b.last = now
	if b.tokens < 1 {
		return false
	}
	b.tokens--
	return true
}

// sweepLocked forgets buckets that are full again.
func (l *rateLimiter) sweepLocked(now time.Time) {
	for k, b := range l.buckets {
		if b.tokens+now.Sub(b.last).Seconds()*l.rate >= l.burst {
			delete(l.buckets, k)
		}
	}
	if len(l.buckets) >= rateLimiterMax {
		clear(l.buckets)
	}
}
