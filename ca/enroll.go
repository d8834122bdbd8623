package ca

import (
	"context"
	"crypto/sha256"
	"crypto/x509"
	"crypto/x509/pkix"
	"encoding/hex"
	"errors"
	"fmt"
	"io"
	"math/big"
	"time"

	"github.com/estca/estca/policy"
	"github.com/estca/estca/store"
)

// Audit vocabulary written by the authority.
const (
	// VerdictAccepted and VerdictRejected are the audit verdicts.
	VerdictAccepted = "accepted"
	VerdictRejected = "rejected"
	// FlagExpiredIDevID marks an issuance to a requester whose expired IDevID
	// was accepted under a tolerant anchor.
	FlagExpiredIDevID = "expired-idevid-accepted"
	// FlagRenew marks a re-enrollment (/sren).
	FlagRenew = "renew"
)

// backdate is subtracted from notBefore to absorb device clock skew.
const backdate = time.Minute

// maxSerialAttempts bounds retries after a serial collision in the store.
const maxSerialAttempts = 4

// flight is one in-progress enrollment for a requester + CSR digest; later
// identical requests wait for it instead of issuing a second certificate.
type flight struct {
	done chan struct{}
	res  *Result
	err  error
}

// Enroll decides and, if accepted, fulfils an enrollment (/sen, RFC 7030
// §4.2.1) or re-enrollment (/sren, §4.2.2, req.Renew). The certificate and its
// audit record are durable in the store before Enroll returns; denials are
// audited too. An identical CSR from the same requester returns the
// certificate already issued for it with Existing set, also when the requests
// run concurrently (RFC 9148 §4.7 retries). Errors are *Error.
func (a *Authority) Enroll(ctx context.Context, req Request) (*Result, error) {
	if err := ctx.Err(); err != nil {
		return nil, &Error{Kind: KindUnavailable, Reason: "request cancelled", Err: err}
	}
	// Network requesters come from Authenticate and carry their leaf; the
	// local operator (`estca issue`) has none.
	if req.Requester.Identity.Fingerprint == "" || (req.Requester.Leaf == nil && req.Requester.Kind != KindOperator) {
		return nil, &Error{Kind: KindUnauthenticated, Reason: "requester not authenticated"}
	}
	p, err := a.profile(req.Profile)
	if err != nil {
		return nil, err
	}
	sum := sha256.Sum256(req.CSR)
	digest := hex.EncodeToString(sum[:])
	key := req.Requester.Identity.Fingerprint + "/" + digest

	a.mu.Lock()
	if f := a.inflight[key]; f != nil {
		a.mu.Unlock()
		select {
		case <-f.done:
		case <-ctx.Done():
			return nil, &Error{Kind: KindUnavailable, Reason: "request cancelled", Err: ctx.Err()}
		}
		if f.err != nil {
			return nil, f.err
		}
		r := *f.res
		r.Existing = true
		return &r, nil
	}
	f := &flight{done: make(chan struct{})}
	a.inflight[key] = f
	a.mu.Unlock()

	f.res, f.err = a.enroll(p, req, digest)

	a.mu.Lock()
	delete(a.inflight, key)
	a.mu.Unlock()
	close(f.done)
	if f.err != nil {
		return nil, f.err
	}
	r := *f.res
	return &r, nil
}

func (a *Authority) enroll(p *profile, req Request, digest string) (*Result, error) {
	fp := req.Requester.Identity.Fingerprint
	if op := enrollOperation(req); !p.ops.offers(op) {
		return nil, a.deny(p, req, digest, KindForbidden, op.String()+" not offered by the profile", nil)
	}
	// Re-enrollment rules come first, also for a CSR that was enrolled
	// before: /sren must refuse what RFC 7030 §4.2.2 refuses, re-sent or not.
	var csr *x509.CertificateRequest
	if req.Renew {
		var err error
		if csr, err = a.parseCSR(p, req, digest); err != nil {
			return nil, err
		}
		if req.Requester.Kind != KindOperational {
			return nil, a.deny(p, req, digest, KindForbidden, "re-enrollment needs an operational certificate", nil)
		}
		if err := policy.CheckRenewal(req.Requester.Leaf, csr); err != nil {
			return nil, a.deny(p, req, digest, KindBadRequest, policyReason(err), err)
		}
	}
	if c, err := a.store.IssuedFor(fp, digest); err == nil {
		return a.resend(p, req, digest, c)
	} else if !errors.Is(err, store.ErrNotFound) {
		return nil, &Error{Kind: KindInternal, Reason: "store lookup failed", Err: err}
	}
	// A CA that is expired, or about to be, would issue certificates that
	// end before they start (notAfter is capped at the issuing CA's).
	if a.issuing.NotAfter.Sub(a.now()) < minRemaining {
		return nil, a.deny(p, req, digest, KindUnavailable, "issuing CA expired", nil)
	}
	if csr == nil {
		var err error
		if csr, err = a.parseCSR(p, req, digest); err != nil {
			return nil, err
		}
	}
	if err := policy.CheckCSR(csr, p.rules); err != nil {
		return nil, a.deny(p, req, digest, KindBadRequest, policyReason(err), err)
	}
	rec := store.AuditRecord{
		Event:     store.EventIssued,
		Requester: req.Requester.Identity,
		CSRDigest: digest,
		Profile:   p.Name,
		Verdict:   VerdictAccepted,
		Flags:     flags(req),
	}
	return a.issue(p, req, digest, digest, csr, rec)
}

func flags(req Request) []string {
	var f []string
	if req.Requester.ExpiredAccepted {
		f = append(f, FlagExpiredIDevID)
	}
	if req.Renew {
		f = append(f, FlagRenew)
	}
	return f
}

func policyReason(err error) string {
	var pe *policy.Error
	if errors.As(err, &pe) {
		return pe.Reason
	}
	return "request rejected"
}

// deny audits a refused request and returns the client-facing error, marked
// Audited. If the audit record cannot be written the request fails (not
// Audited): no decision goes unrecorded.
func (a *Authority) deny(p *profile, req Request, digest string, kind ErrorKind, reason string, cause error, extraFlags ...string) error {
	_, err := a.store.Append(store.AuditRecord{
		Time:      a.now(),
		Event:     store.EventDenied,
		Requester: req.Requester.Identity,
		CSRDigest: digest,
		Profile:   p.Name,
		Verdict:   VerdictRejected,
		Reason:    reason,
		Flags:     append(flags(req), extraFlags...),
	})
	if err != nil {
		return a.storeErr("audit write failed", errors.Join(err, cause))
	}
	return &Error{Kind: kind, Reason: reason, Err: cause, Audited: true}
}

// parseCSR parses the request's CSR and checks its signature; failures are
// audited denials.
func (a *Authority) parseCSR(p *profile, req Request, digest string) (*x509.CertificateRequest, error) {
	csr, err := x509.ParseCertificateRequest(req.CSR)
	if err != nil {
		return nil, a.deny(p, req, digest, KindBadRequest, "malformed CSR", err)
	}
	if err := csr.CheckSignature(); err != nil {
		return nil, a.deny(p, req, digest, KindBadRequest, "bad CSR signature", err)
	}
	return csr, nil
}

// minRemaining is the least validity the issuing CA must have left to issue.
const minRemaining = time.Hour

// resend answers an identical CSR from the same requester (RFC 9148 §4.7)
// with the certificate issued for it, unless that certificate can no longer
// serve: revoked, expired, or issued under another profile. The device must
// then send a new CSR; the refusal is audited.
func (a *Authority) resend(p *profile, req Request, digest string, c store.Certificate) (*Result, error) {
	switch _, err := a.store.Revocation(c.Serial); {
	case err == nil:
		return nil, a.deny(p, req, digest, KindForbidden, "CSR already used for a revoked certificate", nil)
	case !errors.Is(err, store.ErrNotFound):
		return nil, &Error{Kind: KindInternal, Reason: "revocation lookup failed", Err: err}
	}
	if !a.now().Before(c.NotAfter) {
		return nil, a.deny(p, req, digest, KindForbidden, "CSR already used for an expired certificate", nil)
	}
	if c.Profile != p.Name {
		return nil, a.deny(p, req, digest, KindBadRequest, "CSR already enrolled under another profile", nil)
	}
	return a.existing(c)
}

func (a *Authority) existing(c store.Certificate) (*Result, error) {
	cert, err := x509.ParseCertificate(c.DER)
	if err != nil {
		return nil, &Error{Kind: KindInternal, Reason: "stored certificate unreadable", Err: err}
	}
	return &Result{Certificate: cert, Serial: c.Serial, Chain: a.chain, Existing: true}, nil
}

// newSerial returns a random positive serial of up to 127 bits (RFC 5280
// §4.1.2.2: at most 20 octets; CA/B BR: at least 64 bits of entropy).
func newSerial(r io.Reader) (*big.Int, error) {
	var b [16]byte
	for {
		if _, err := io.ReadFull(r, b[:]); err != nil {
			return nil, fmt.Errorf("ca: serial randomness: %w", err)
		}
		b[0] &= 0x7f
		n := new(big.Int).SetBytes(b[:])
		if n.Sign() > 0 {
			return n, nil
		}
	}
}

// sign builds the end-entity certificate for csr under profile p and signs it
// with the issuing key.
func (a *Authority) sign(p *profile, csr *x509.CertificateRequest) (*x509.Certificate, error) {
	serial, err := newSerial(a.rand)
	if err != nil {
		return nil, &Error{Kind: KindInternal, Reason: "serial generation failed", Err: err}
	}
	ski, err := subjectKeyID(csr.RawSubjectPublicKeyInfo)
	if err != nil {
		return nil, &Error{Kind: KindBadRequest, Reason: "malformed public key", Err: err}
	}
	now := a.now()
	notAfter := now.Add(p.Validity)
	if notAfter.After(a.issuing.NotAfter) {
		notAfter = a.issuing.NotAfter
	}
	var san []byte
	for _, e := range csr.Extensions {
		if e.Id.Equal(policy.OIDSubjectAltName) {
			// Copied verbatim: Go's x509 drops otherName (RFC 4108
			// hardwareModuleName). CheckCSR has vetted every entry.
			san = e.Value
		}
	}
	var der []byte
	if a.fast != nil {
		der, err = a.fast.certificate(a, p.exts, serial, csr, now.Add(-backdate), notAfter, ski, san)
	} else {
		der, err = x509.CreateCertificate(a.rand, a.template(p, serial, csr, now.Add(-backdate), notAfter, ski, san),
			a.issuing, csr.PublicKey, a.signer)
	}
	switch {
	case errors.Is(err, ErrBadSignature):
		return nil, err // Enroll audits it
	case errors.Is(err, ErrHSMUnavailable):
		return nil, &Error{Kind: KindUnavailable, Reason: "hsm unavailable", MaxAge: HSMRetryAfter, Err: err}
	case err != nil:
		return nil, &Error{Kind: KindUnavailable, Reason: "signing failed", MaxAge: 10 * time.Second, Err: err}
	}
	cert, err := x509.ParseCertificate(der)
	if err != nil {
		return nil, &Error{Kind: KindInternal, Reason: "issued certificate unreadable", Err: err}
	}
	return cert, nil
}

// template is the x509.CreateCertificate form of the certificate that the
// fast path encodes itself.
func (a *Authority) template(p *profile, serial *big.Int, csr *x509.CertificateRequest, notBefore, notAfter time.Time, ski, san []byte) *x509.Certificate {
	tmpl := &x509.Certificate{
		SerialNumber:          serial,
		RawSubject:            csr.RawSubject,
		NotBefore:             notBefore,
		NotAfter:              notAfter,
		KeyUsage:              p.KeyUsage,
		ExtKeyUsage:           p.ExtKeyUsage,
		BasicConstraintsValid: true,
		SubjectKeyId:          ski,
	}
	if san != nil {
		tmpl.ExtraExtensions = []pkix.Extension{{Id: policy.OIDSubjectAltName, Value: san}}
	}
	return tmpl
}

// storeErr classifies a failed store write: one the store cannot carry out
// for now (disk full or failing, file replaced or damaged:
// store.ErrUnavailable) is KindUnavailable, answered 5.03 with Max-Age
// StoreRetry, so that devices come back by themselves when it recovers;
// anything else is KindInternal under reason.
func (a *Authority) storeErr(reason string, err error) *Error {
	if errors.Is(err, store.ErrUnavailable) {
		return &Error{Kind: KindUnavailable, Reason: "store unavailable", MaxAge: a.storeRetry, Err: err}
	}
	return &Error{Kind: KindInternal, Reason: reason, Err: err}
}
