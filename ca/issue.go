package ca

import (
	"crypto"
	"errors"

	"github.com/estca/estca/policy"
	"github.com/estca/estca/store"
)

// signAndStore signs the engine's template d.Template for the public key
// pub (DER spki) and stores the certificate with its audit record rec: the
// step Enroll and ServerKeygen share once a request is decided. certDigest
// is the CSR digest the store maps the certificate to (requester + digest:
// an identical CSR resent finds it, RFC 9148 §4.7); "" keeps no mapping
// (server-generated keys under automatic approval: every request gets a new
// key and certificate). digest names the request in the audit record of a
// refusal. A certificate the store already had for certDigest (another
// instance won a race) is returned with Existing set.
func (a *Authority) signAndStore(req Request, digest, certDigest, identity string, d *policy.Decision, pub crypto.PublicKey, spki []byte, rec store.AuditRecord) (*Result, error) {
	fp := req.Requester.Identity.Fingerprint
	for range maxSerialAttempts {
		cert, err := a.sign(d.Template, pub, spki)
		if errors.Is(err, ErrBadSignature) {
			// Nothing was stored or sent; the refusal is audited (and the
			// front end logs the detail of this internal error).
			return nil, a.deny(d.Profile, req, digest, KindInternal, "invalid HSM signature", err, FlagBadSignature)
		}
		if err != nil {
			return nil, err
		}
		sc := store.Certificate{
			Serial:    cert.SerialNumber.Text(16),
			DER:       cert.Raw,
			Subject:   cert.Subject.String(),
			SKI:       cert.SubjectKeyId,
			Requester: fp,
			Identity:  identity,
			Profile:   d.Profile,
			CSRDigest: certDigest,
			NotBefore: cert.NotBefore,
			NotAfter:  cert.NotAfter,
			// The rate limit counts issue times on the authority's clock.
			IssuedAt: a.now(),
		}
		rec.Time = sc.IssuedAt
		rec.Serial = sc.Serial
		_, err = a.store.Issue(sc, rec)
		switch {
		case err == nil:
			return &Result{Certificate: cert, Serial: sc.Serial, Chain: a.chain}, nil
		case errors.Is(err, store.ErrDuplicateSerial):
			continue
		case errors.Is(err, store.ErrDuplicateRequest):
			// Another authority instance won the race: return its certificate.
			c, err := a.store.IssuedFor(fp, certDigest)
			if err != nil {
				return nil, &Error{Kind: KindInternal, Reason: "store lookup failed", Err: err}
			}
			return a.existing(c)
		default:
			return nil, a.storeErr("store write failed", err)
		}
	}
	return nil, &Error{Kind: KindInternal, Reason: "serial collisions", Err: store.ErrDuplicateSerial}
}
