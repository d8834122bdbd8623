package ca

import (
	"crypto/sha256"
	"crypto/x509"
	"encoding/hex"
	"errors"

	"github.com/estca/estca/policy"
	"github.com/estca/estca/store"
)

// Authenticate establishes who the DTLS client is from its certificate chain
// (leaf first, as received; RFC 9148 §3, RFC 7030 §3.3.2). A leaf issued by
// this CA, within its validity and not revoked in the store, is
// KindOperational; otherwise the chain must verify as an IDevID under a
// manufacturer anchor, with the anchor's expiry rule (RFC 9148 §3). Errors are
// *Error of KindUnauthenticated, KindForbidden (revoked or deny-listed) or
// KindInternal (store failure). It costs one signature verification for an
// operational leaf and one path validation for an IDevID, plus one store
// read for operational leaves.
func (a *Authority) Authenticate(chain []*x509.Certificate) (Requester, error) {
	v, err := a.verifier.Verify(chain, a.now())
	if err != nil {
		kind := KindUnauthenticated
		if errors.Is(err, policy.ErrDenied) {
			kind = KindForbidden
		}
		return Requester{}, &Error{Kind: kind, Reason: policyReason(err), Err: err}
	}
	leaf := chain[0]
	serial := leaf.SerialNumber.Text(16)
	if v.Kind == policy.KindOperational {
		_, err := a.store.Revocation(serial)
		switch {
		case err == nil:
			return Requester{}, &Error{Kind: KindForbidden, Reason: "certificate revoked"}
		case !errors.Is(err, store.ErrNotFound):
			return Requester{}, &Error{Kind: KindInternal, Reason: "revocation lookup failed", Err: err}
		}
	}
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
	}
	if v.Kind == policy.KindIDevID {
		// IEEE 802.1AR puts the device serial in the subject's
		// serialNumber attribute; fall back to the certificate serial.
		r.Identity.IDevIDSerial = leaf.Subject.SerialNumber
		if r.Identity.IDevIDSerial == "" {
			r.Identity.IDevIDSerial = serial
		}
	}
	return r, nil
}
