package est

import (
	"context"
	"crypto/sha256"
	"crypto/x509"
	"errors"
	"log/slog"
	"strings"
	"sync"
	"sync/atomic"

	"github.com/pion/dtls/v3"
	udpclient "github.com/plgd-dev/go-coap/v3/udp/client"

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
	ReasonProtocol        = "protocol"
	// ReasonHSMUnavailable: the server could not sign its handshake because
	// the HSM is down (ca.ErrHSMUnavailable); the client got an
	// internal_error alert.
	ReasonHSMUnavailable = "hsm-unavailable"
	// ReasonHSMBadSignature: the HSM returned a handshake signature that
	// does not verify (ca.ErrBadSignature); it was not sent.
	ReasonHSMBadSignature = "hsm-bad-signature"
	// ReasonUnknownCertificate: an operational certificate of this CA that
	// its store does not hold (ca.ErrUnknownCertificate: issued after the
	// backup a loss-accepting restore put back); the device must re-enroll
	// with its IDevID.
	ReasonUnknownCertificate = "unknown-certificate"
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

// authenticator runs Authority.Authenticate inside the DTLS handshake
// (pion's VerifyPeerCertificate, one callback per handshake: verifier) and
// counts sessions per identity. The callback reserves a slot of the
// identity (refusing the handshake when it has maxPerIdentity already) and
// leaves the requester with the handshake's vconn; the session that takes it
// after a completed handshake owns the slot and releases it on close, and a
// handshake that fails after the callback (no Finished, timeout, the peer
// restarted on the same address) gives it back when its vconn closes.
type authenticator struct {
	auth           Authority
	maxPerIdentity int

	mu         sync.Mutex
	identities map[string]int // sessions and reservations per identity
}

// identityKey is the key sessions are counted under: the authority's
// identity fingerprint, else the leaf certificate.
func identityKey(who *ca.Requester) string {
	if who.Identity.Fingerprint != "" {
		return who.Identity.Fingerprint
	}
	if who.Leaf != nil {
		sum := sha256.Sum256(who.Leaf.Raw)
		return string(sum[:])
	}
	return ""
}

// reserveLocked counts one more session of who, or refuses it.
func (a *authenticator) reserveLocked(who *ca.Requester) error {
	k := identityKey(who)
	if a.maxPerIdentity > 0 && a.identities[k] >= a.maxPerIdentity {
		subject := ""
		if who.Leaf != nil {
			subject = who.Leaf.Subject.String()
		}
		return &authError{reason: ReasonIdentitySessions, subject: subject, err: errors.New("too many sessions of this identity")}
	}
	a.identities[k]++
	return nil
}

func (a *authenticator) releaseLocked(who *ca.Requester) {
	k := identityKey(who)
	if a.identities[k] <= 1 {
		delete(a.identities, k)
		return
	}
	a.identities[k]--
}

// release gives back the session slot of who (session close).
func (a *authenticator) release(who *ca.Requester) {
	a.mu.Lock()
	defer a.mu.Unlock()
	a.releaseLocked(who)
}

// verifier returns the pion VerifyPeerCertificate callback of the
// handshake on v. A failure aborts the handshake with a bad_certificate
// alert, before any application data.
func (a *authenticator) verifier(v *vconn) func([][]byte, [][]*x509.Certificate) error {
	return func(raw [][]byte, _ [][]*x509.Certificate) error {
		who, err := a.admit(raw)
		if err != nil {
			return err
		}
		if !v.holdAuth(who) {
			a.release(&who)
			return errors.New("est: peer closed during its handshake")
		}
		return nil
	}
}

// admit authenticates raw and reserves a session slot of its identity.
func (a *authenticator) admit(raw [][]byte) (ca.Requester, error) {
	who, err := a.authenticate(raw)
	if err != nil {
		return who, err
	}
	a.mu.Lock()
	defer a.mu.Unlock()
	if err := a.reserveLocked(&who); err != nil {
		return ca.Requester{}, err
	}
	return who, nil
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
		switch {
		case errors.Is(err, ca.ErrUnknownCertificate):
			reason = ReasonUnknownCertificate
		case ca.KindOf(err) == ca.KindUnauthenticated:
			reason = ReasonUnauthenticated
		case ca.KindOf(err) == ca.KindForbidden:
			reason = ReasonForbidden
		}
		return ca.Requester{}, &authError{reason: reason, subject: chain[0].Subject.String(), err: err}
	}
	if who.Leaf == nil {
		who.Leaf = chain[0]
	}
	return who, nil
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
	hsMu  sync.Mutex
	ready atomic.Bool
	who   ca.Requester
	vc    *vconn // the gate's view of the peer; nil only in tests

	releaseOnce sync.Once   // the identity's session slot
	refused     atomic.Bool // closed because its requester failed the re-check

	// The last CON refused by Read (critical.go), to answer its
	// retransmissions; used by go-coap's read loop only.
	lastRefusal    []byte
	lastRefusalMID int32
	nonSeen        []nonSeen // recent NON request Message IDs (datagram.go)

	cc atomic.Pointer[udpclient.Conn] // go-coap connection, once serving

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
	if c.vc != nil {
		c.vc.handshakeEnded()
	}
	if err == nil {
		st, ok := c.Conn.ConnectionState()
		if !ok || len(st.PeerCertificates) == 0 {
			err = &authError{reason: ReasonNoCertificate, err: errors.New("no client certificate")}
		} else {
			c.who, err = c.take(st.PeerCertificates)
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
	if c.vc != nil {
		c.vc.established(c) // RecheckSessions finds it in the gate's table
	}
	return nil
}

// take returns the requester the handshake's VerifyPeerCertificate
// authenticated, with its session slot, or authenticates (and reserves)
// again when the handshake did not run it (no vconn).
func (c *session) take(raw [][]byte) (ca.Requester, error) {
	if c.vc != nil {
		if who, ok := c.vc.takeAuth(); ok {
			return who, nil
		}
	}
	return c.srv.authn.admit(raw)
}

// Close closes the DTLS connection and releases the peer's slots.
func (c *session) Close() error {
	err := c.Conn.Close()
	if c.ready.Load() {
		c.releaseOnce.Do(func() { c.srv.authn.release(&c.who) })
	}
	if c.vc != nil {
		_ = c.vc.Close()
	}
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
