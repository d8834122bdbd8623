package ca

import (
	"crypto/x509"
	"errors"

	"github.com/estca/estca/store"
)

// issue signs the certificate for csr under profile p (its public key, and
// its subject and SubjectAltName verbatim, as vetted by the caller) and
// stores it with its audit record rec: the step Enroll and ServerKeygen
// share once the request is decided. certDigest is the CSR digest the store
// maps the certificate to (requester + digest: identical CSRs resent get it
// again, RFC 9148 §4.7); "" keeps no mapping (server-generated keys: every
// request gets a new key and certificate). digest names the request in the
// audit record of a refusal.
func (a *Authority) issue(p *profile, req Request, digest, certDigest string, csr *x509.CertificateRequest, rec store.AuditRecord) (*Result, error) {
	fp := req.Requester.Identity.Fingerprint
	for range maxSerialAttempts {
		cert, err := a.sign(p, csr)
		if errors.Is(err, ErrBadSignature) {
			// Nothing was stored or sent; the refusal is audited (and the
			// front end logs the detail of this internal error).
			return nil, a.deny(p, req, digest, KindInternal, "invalid HSM signature", err, FlagBadSignature)
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
			Profile:   p.Name,
			CSRDigest: certDigest,
			NotBefore: cert.NotBefore,
			NotAfter:  cert.NotAfter,
		}
		rec.Time = a.now()
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
