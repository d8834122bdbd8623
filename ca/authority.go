package ca

import (
	"crypto"
	"crypto/rand"
	"crypto/x509"
	"errors"
	"fmt"
	"io"
	"sync"
	"sync/atomic"
	"time"

	"github.com/estca/estca/policy"
	"github.com/estca/estca/store"
)

// Store is what the authority needs from the certificate store; *store.DB
// implements it.
type Store interface {
	// Issue durably stores an issued certificate with its audit record;
	// store.ErrDuplicateSerial and store.ErrDuplicateRequest leave nothing written.
	Issue(c store.Certificate, rec store.AuditRecord) (store.AuditRecord, error)
	// IssuedFor returns the certificate issued for requester + CSR digest, or
	// store.ErrNotFound.
	IssuedFor(requesterFingerprint, csrDigestHex string) (store.Certificate, error)
	// Request returns the request of requester + CSR digest (its state: an
	// operator's decision, pending, issued), or store.ErrNotFound.
	Request(requesterFingerprint, csrDigestHex string) (store.Request, error)
	// PutPending durably stores a request waiting for an operator with its
	// audit record; store.ErrDuplicateRequest if it is known already.
	PutPending(r store.Request, rec store.AuditRecord) (store.AuditRecord, error)
	// IssuedTo counts the certificates of a policy identity issued at or
	// after since, at most limit, and the issue time of the oldest counted.
	IssuedTo(identity string, since time.Time, limit int) (int, time.Time, error)
	// PendingCount counts the requests of a policy identity waiting for an
	// operator.
	PendingCount(identity string) (int, error)
	// Append adds an audit record (denials).
	Append(rec store.AuditRecord) (store.AuditRecord, error)
	// Certificate returns the certificate with that serial, or store.ErrNotFound.
	Certificate(serial string) (store.Certificate, error)
	// Revocation returns the revocation of serial, or store.ErrNotFound.
	// *store.DB answers from the revocation set it proved against the
	// signed audit chain when it was opened, never from the file.
	Revocation(serial string) (store.Revocation, error)
	// Revocations returns every revocation in force (for CRLs).
	Revocations() ([]store.Revocation, error)
	// Revoke durably revokes a certificate with its audit record.
	Revoke(serial string, reason int, at time.Time, rec store.AuditRecord) error
	// RevokeUnknown revokes a serial the store does not hold (flagged
	// store.FlagUnknownCertificate).
	RevokeUnknown(serial string, reason int, at time.Time, rec store.AuditRecord) error
	// Expect announces the write a request will make, so that the commit
	// it would just miss waits for it (group commit); the returned func
	// withdraws the announcement, once the write is done or will not come.
	Expect() (withdraw func())
}

// Options configure an Authority. Every field except Now, Rand, StoreRetry
// and CRL is required.
type Options struct {
	// Signer is the issuing CA's private key, normally in the HSM. Every
	// signature it returns is verified under Certificate's public key before
	// anything signed leaves the authority: New wraps it in a VerifyingSigner
	// unless it is one already for that key.
	Signer crypto.Signer
	// Certificate is the issuing CA certificate; its public key must be Signer's.
	Certificate *x509.Certificate
	// Root is the root CA certificate that signed Certificate (the same
	// certificate when the issuing CA is itself the root).
	Root *x509.Certificate
	// Policy configures the policy engine that decides every request: the
	// manufacturer anchors, the profiles, reserved names (see policy.New).
	// Policy.Requesters.Operational is filled in from Certificate and Root
	// when empty. SetPolicy replaces it while serving.
	Policy policy.Options
	// Store records certificates and audit records.
	Store Store
	// CRL configures the revocation lists and the CRL distribution point
	// of issued certificates.
	CRL CRLOptions
	// Now is the clock; nil means time.Now.
	Now func() time.Time
	// Rand is the randomness for serial numbers and signatures; nil means
	// crypto/rand.Reader.
	Rand io.Reader
	// StoreRetry is the Max-Age of the 5.03 answered while the store cannot
	// write (disk full, file replaced: store.ErrUnavailable); 0 means
	// DefaultStoreRetry.
	StoreRetry time.Duration
}

// DefaultStoreRetry is the Max-Age of a 5.03 answered while the store cannot write.
const DefaultStoreRetry = 30 * time.Second

// Authority is estca's certificate authority. It is safe for concurrent use.
type Authority struct {
	signer  crypto.Signer
	issuing *x509.Certificate
	root    *x509.Certificate
	chain   []*x509.Certificate
	policy  atomic.Pointer[policy.Engine]
	store   Store
	fast    *fastSigner // nil: issue through x509.CreateCertificate
	now     func() time.Time
	rand    io.Reader
	crlDP   []byte // DER extnValue of cRLDistributionPoints; nil: none

	storeRetry time.Duration

	mu       sync.Mutex
	inflight map[string]*flight
	idLocks  [identityStripes]sync.Mutex

	crl crlState
}

// New validates opts, reporting every problem at once, and returns an Authority.
func New(opts Options) (*Authority, error) {
	var errs []error
	bad := func(format string, args ...any) { errs = append(errs, fmt.Errorf("ca: "+format, args...)) }
	if opts.Signer == nil {
		bad("no issuing signer")
	}
	if opts.Certificate == nil {
		bad("no issuing certificate")
	} else {
		if !opts.Certificate.IsCA || opts.Certificate.KeyUsage&x509.KeyUsageCertSign == 0 {
			bad("issuing certificate %q is not a CA with keyCertSign", opts.Certificate.Subject)
		}
		if len(opts.Certificate.SubjectKeyId) == 0 {
			bad("issuing certificate has no subject key identifier")
		}
		if opts.Signer != nil && !samePublicKey(signerKey(opts.Signer), opts.Certificate.PublicKey) {
			bad("issuing signer does not match the issuing certificate")
		}
	}
	if opts.Root == nil {
		bad("no root certificate")
	} else if opts.Certificate != nil {
		if err := opts.Certificate.CheckSignatureFrom(opts.Root); err != nil {
			bad("issuing certificate is not signed by the root: %v", err)
		}
	}
	if opts.Store == nil {
		bad("no store")
	}
	a := &Authority{
		signer: opts.Signer, issuing: opts.Certificate, root: opts.Root, store: opts.Store,
		now: opts.Now, rand: opts.Rand, inflight: map[string]*flight{}, storeRetry: opts.StoreRetry,
	}
	if a.storeRetry <= 0 {
		a.storeRetry = DefaultStoreRetry
	}
	if a.now == nil {
		a.now = time.Now
	}
	if a.rand == nil {
		a.rand = rand.Reader
	}
	if err := a.crl.init(opts.CRL); err != nil {
		errs = append(errs, err)
	}
	if opts.CRL.DistributionPoint != "" {
		dp, err := crlDistributionPoint(opts.CRL.DistributionPoint)
		if err != nil {
			errs = append(errs, err)
		}
		a.crlDP = dp
	}
	if opts.Certificate != nil && opts.Root != nil {
		e, err := a.newEngine(opts.Policy)
		if err != nil {
			errs = append(errs, err)
		}
		a.policy.Store(e)
	}
	if err := errors.Join(errs...); err != nil {
		return nil, err
	}
	if vs, ok := a.signer.(*VerifyingSigner); !ok || !samePublicKey(vs.Public(), a.issuing.PublicKey) {
		a.signer = VerifySigner(a.signer, a.issuing.PublicKey, nil)
	}
	a.fast = newFastSigner(a.signer, a.issuing)
	a.chain = []*x509.Certificate{a.issuing, a.root}
	if a.issuing.Equal(a.root) {
		a.chain = a.chain[:1]
	}
	return a, nil
}

// newEngine builds a policy engine for this authority: its own
// certificates are the operational requesters' CA.
func (a *Authority) newEngine(o policy.Options) (*policy.Engine, error) {
	if len(o.Requesters.Operational) == 0 {
		o.Requesters.Operational = []*x509.Certificate{a.issuing, a.root}
		if a.issuing.Equal(a.root) {
			o.Requesters.Operational = o.Requesters.Operational[:1]
		}
	}
	return policy.New(o)
}

// SetPolicy validates o and, if it is valid, atomically replaces the policy
// (profiles, manufacturer anchors and their CRLs, reserved names): requests
// decided after it returns use the new one, also on DTLS sessions opened
// before. An invalid o leaves the policy in force unchanged; the error
// lists every problem (policy.New).
func (a *Authority) SetPolicy(o policy.Options) error {
	e, err := a.newEngine(o)
	if err != nil {
		return err
	}
	a.policy.Store(e)
	return nil
}

// Policy returns the policy engine in force.
func (a *Authority) Policy() *policy.Engine { return a.policy.Load() }

// signerKey is the public key of s as the signer itself (the token) reports
// it, also under a VerifyingSigner, whose Public is the key it checks with.
func signerKey(s crypto.Signer) crypto.PublicKey {
	if vs, ok := s.(*VerifyingSigner); ok {
		return vs.signer.Public()
	}
	return s.Public()
}

func samePublicKey(a, b crypto.PublicKey) bool {
	k, ok := a.(interface{ Equal(crypto.PublicKey) bool })
	return ok && k.Equal(b)
}

// HasProfile reports whether label names a profile ("" the default).
func (a *Authority) HasProfile(label string) bool { return a.Policy().HasProfile(label) }

func (a *Authority) checkProfile(label string) error {
	if !a.HasProfile(label) {
		return &Error{Kind: KindNotFound, Reason: "unknown profile", Code: policy.CodeProfileUnknown}
	}
	return nil
}

// CACertificates returns the certificates for /crts (RFC 7030 §4.1, RFC 9148
// §4.1): the issuing CA, then the root. All profiles share them; an unknown
// profile is KindNotFound. The returned slice is fresh; the certificates are
// shared and must not be modified.
func (a *Authority) CACertificates(profile string) ([]*x509.Certificate, error) {
	if err := a.checkProfile(profile); err != nil {
		return nil, err
	}
	return append([]*x509.Certificate(nil), a.chain...), nil
}

// CSRAttributes returns the DER CsrAttrs of /att (RFC 7030 §4.5.2, RFC 9908)
// for the requester under the profile, derived from the profile's rules by
// the policy engine (policy.Engine.CSRAttrs), so that a client following it
// makes a CSR the profile accepts; an unknown profile is KindNotFound.
func (a *Authority) CSRAttributes(profile string, who Requester) ([]byte, error) {
	pr, err := a.policyRequester(&who)
	if err != nil {
		return nil, err
	}
	der, err := a.Policy().CSRAttrs(profile, pr)
	if err != nil {
		var pe *policy.Error
		if errors.As(err, &pe) && pe.Code == policy.CodeProfileUnknown {
			return nil, &Error{Kind: KindNotFound, Reason: "unknown profile", Code: pe.Code, Err: err}
		}
		return nil, &Error{Kind: KindInternal, Reason: "csr attributes", Err: err}
	}
	return der, nil
}
