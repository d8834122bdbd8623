package ca

import (
	"crypto/sha256"
	"crypto/x509"
	"encoding/hex"
	"errors"
	"fmt"

	"github.com/estca/estca/policy"
	"github.com/estca/estca/store"
)

// Authenticate establishes who the DTLS client is from its certificate chain
// (leaf first, as received; RFC 9148 §3, RFC 7030 §3.3.2), with the policy
// engine in force (policy.Engine.Verify): a leaf issued by this CA, within
// its validity (or the longest renewal grace of the profiles), held by the
// store and not revoked in it, is KindOperational; otherwise the chain must verify
// as an IDevID under a manufacturer anchor, with the anchor's expiry rule
// (RFC 9148 §3), deny and allow lists and CRLs. Errors are *Error of
// KindUnauthenticated, KindForbidden (revoked, deny-listed, on a CRL, or
// an operational certificate the store does not hold: ErrUnknownCertificate)
// or KindInternal (store failure). It costs one signature verification for an
// operational leaf and one path validation for an IDevID, plus two store
// reads (revocation from memory, the issuing profile) for operational
// leaves.
func (a *Authority) Authenticate(chain []*x509.Certificate) (Requester, error) {
	v, err := a.Policy().Verify(chain, a.now())
	if err != nil {
		kind := KindUnauthenticated
		if errors.Is(err, policy.ErrDenied) {
			kind = KindForbidden
		}
		var pe *policy.Error
		reason, code := "request rejected", policy.Code(0)
		if errors.As(err, &pe) {
			reason, code = pe.Reason, pe.Code
		}
		return Requester{}, &Error{Kind: kind, Reason: reason, Code: code, Err: err}
	}
	leaf := chain[0]
	serial := leaf.SerialNumber.Text(16)
	sum := sha256.Sum256(leaf.Raw)
	r := Requester{
		Identity: store.Identity{
			Fingerprint: hex.EncodeToString(sum[:]),
			Subject:     leaf.Subject.String(),
			Anchor:      v.Anchor,
			Kind:        v.Kind,
		},
		Kind:            RequesterKind(v.Kind),
		Leaf:            leaf,
		Chain:           v.Chain,
		Anchor:          v.Anchor,
		ExpiredAccepted: v.ExpiredAccepted,
		InGrace:         v.InGrace,
	}
	switch v.Kind {
	case policy.KindOperational:
		if revoked, err := a.revoked(serial); err != nil {
			return Requester{}, err
		} else if revoked {
			return Requester{}, &Error{Kind: KindForbidden, Reason: policy.CodeCertRevoked.Text(), Code: policy.CodeCertRevoked}
		}
		c, err := a.store.Certificate(serial)
		switch {
		case errors.Is(err, store.ErrNotFound):
			return Requester{}, unknownCertificate(serial)
		case err != nil:
			return Requester{}, &Error{Kind: KindInternal, Reason: "certificate lookup failed", Err: err}
		}
		r.IssuedProfile, r.inStore = c.Profile, true
	case policy.KindIDevID:
		// IEEE 802.1AR puts the device serial in the subject's
		// serialNumber attribute; fall back to the certificate serial.
		r.Identity.IDevIDSerial = leaf.Subject.SerialNumber
		if r.Identity.IDevIDSerial == "" {
			r.Identity.IDevIDSerial = serial
		}
	}
	return r, nil
}

// ErrUnknownCertificate is matched by the refusal of an operational
// certificate of this CA that the store does not hold: issued after the
// backup a restore with accepted loss put back, or cut from the store. Its
// profile and history are unknown, so it is refused at the handshake and on
// every request (policy.CodeCertUnknown); the device re-enrolls with its
// IDevID.
var ErrUnknownCertificate = errors.New("ca: certificate unknown to this CA")

func unknownCertificate(serial string) *Error {
	return &Error{Kind: KindForbidden, Reason: policy.CodeCertUnknown.Text(), Code: policy.CodeCertUnknown,
		Err: fmt.Errorf("%w: serial %s is not in the store", ErrUnknownCertificate, serial)}
}

// revoked looks serial up in the revocation set the store proved at open.
func (a *Authority) revoked(serial string) (bool, error) {
	switch _, err := a.store.Revocation(serial); {
	case err == nil:
		return true, nil
	case errors.Is(err, store.ErrNotFound):
		return false, nil
	default:
		return false, &Error{Kind: KindInternal, Reason: "revocation lookup failed", Err: err}
	}
}

// policyRequester is who as the policy engine sees it, with the revocation
// state of an operational certificate looked up now and, unless
// Authenticate found it in the store, whether the store holds it (the store
// never forgets a certificate while it is open, so Authenticate's lookup
// holds for the session).
func (a *Authority) policyRequester(who *Requester) (policy.Requester, error) {
	r := policy.Requester{Verified: who.verified(), IssuedProfile: who.IssuedProfile}
	if who.Kind == KindOperational && who.Leaf != nil {
		serial := who.Leaf.SerialNumber.Text(16)
		revoked, err := a.revoked(serial)
		if err != nil {
			return policy.Requester{}, err
		}
		r.Revoked = revoked
		if !who.inStore {
			switch c, err := a.store.Certificate(serial); {
			case errors.Is(err, store.ErrNotFound):
				r.Unknown, r.IssuedProfile = true, ""
			case err != nil:
				return policy.Requester{}, &Error{Kind: KindInternal, Reason: "certificate lookup failed", Err: err}
			default:
				r.IssuedProfile = c.Profile
			}
		}
	}
	return r, nil
}

// verified is the requester as policy.Engine.Verify established it.
func (r *Requester) verified() policy.Verified {
	return policy.Verified{Kind: string(r.Kind), Anchor: r.Anchor, Chain: r.Chain,
		ExpiredAccepted: r.ExpiredAccepted, InGrace: r.InGrace}
}

// Check re-checks an authenticated requester under the policy in force, as
// the EST front end does on every request and periodically on every open
// DTLS session (policy.Engine.Recheck): an operational certificate revoked
// since the handshake, an IDevID whose manufacturer was removed or
// deny-listed by a reload, a certificate expired during the session. It
// returns nil, or an *Error (KindForbidden with the reason's text) for a
// requester that may no longer be served.
func (a *Authority) Check(who Requester) error {
	pr, err := a.policyRequester(&who)
	if err != nil {
		return err
	}
	r, ok := a.Policy().Recheck(pr, a.now())
	if ok {
		return nil
	}
	return &Error{Kind: kindOfClass(r.Class()), Reason: r.Text(), Code: r.Code, Err: errors.New(r.String())}
}

// kindOfClass maps a policy class onto the authority's error kinds (the EST
// front end then maps those onto CoAP codes, RFC 9148 §4.5).
func kindOfClass(c policy.Class) ErrorKind {
	switch c {
	case policy.ClassBadRequest:
		return KindBadRequest
	case policy.ClassForbidden:
		return KindForbidden
	case policy.ClassNotFound:
		return KindNotFound
	case policy.ClassRetry:
		return KindUnavailable
	}
	return KindInternal
}
