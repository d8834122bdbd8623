package ca

import (
	"crypto"
	"crypto/rand"
	"crypto/x509"
	"errors"
	"fmt"
	"io"
	"sync"
	"time"

	"golang.org/x/crypto/cryptobyte"
	cbasn1 "golang.org/x/crypto/cryptobyte/asn1"

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
	// Append adds an audit record (denials).
	Append(rec store.AuditRecord) (store.AuditRecord, error)
	// Revocation returns the revocation of serial, or store.ErrNotFound.
	// *store.DB answers from the revocation set it proved against the
	// signed audit chain when it was opened, never from the file.
	Revocation(serial string) (store.Revocation, error)
}

// Options configure an Authority. Every field except Now, Rand and
// DefaultProfile is required.
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
	// Profiles are the certificate profiles; names must be unique and non-empty.
	Profiles []Profile
	// DefaultProfile names the profile used for requests without a path label;
	// "" means the first profile.
	DefaultProfile string
	// Store records certificates and audit records.
	Store Store
	// Requesters configures client authentication. Its Operational field is
	// filled in from Certificate and Root when empty.
	Requesters policy.Requesters
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

type profile struct {
	Profile
	rules    policy.Rules
	csrAttrs []byte
	exts     []byte // DER keyUsage, extKeyUsage, basicConstraints (fast path)
	ops      operations
}

// Authority is estca's certificate authority. It is safe for concurrent use.
type Authority struct {
	signer   crypto.Signer
	issuing  *x509.Certificate
	root     *x509.Certificate
	chain    []*x509.Certificate
	profiles map[string]*profile
	def      *profile
	store    Store
	verifier *policy.Verifier
	fast     *fastSigner // nil: issue through x509.CreateCertificate
	now      func() time.Time
	rand     io.Reader

	storeRetry time.Duration

	mu       sync.Mutex
	inflight map[string]*flight
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
		profiles: map[string]*profile{}, now: opts.Now, rand: opts.Rand,
		inflight: map[string]*flight{}, storeRetry: opts.StoreRetry,
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
	if len(opts.Profiles) == 0 {
		bad("no profiles")
	}
	for i := range opts.Profiles {
		p := opts.Profiles[i]
		if p.Name == "" {
			bad("profile %d has no name", i)
		} else if a.profiles[p.Name] != nil {
			bad("profile %q is defined twice", p.Name)
		}
		if p.Validity <= 0 {
			bad("profile %q: validity must be positive", p.Name)
		}
		for _, kt := range p.KeyTypes {
			if !policy.KnownKeyType(kt) {
				bad("profile %q: unknown key type %q", p.Name, kt)
			}
		}
		if p.MaxSANs < 0 {
			bad("profile %q: negative MaxSANs", p.Name)
		}
		attrs, err := encodeCSRAttrs(p.CSRAttrs)
		if err != nil {
			bad("profile %q: %v", p.Name, err)
		}
		if p.KeyUsage == 0 {
			p.KeyUsage = x509.KeyUsageDigitalSignature
		}
		exts, err := profileExtensions(p)
		if err != nil {
			bad("profile %q: %v", p.Name, err)
		}
		ops, err := profileOperations(p)
		if err != nil {
			bad("profile %q: %v", p.Name, err)
		}
		pp := &profile{Profile: p, csrAttrs: attrs, exts: exts, ops: ops,
			rules: policy.Rules{KeyTypes: p.KeyTypes, AllowSAN: p.AllowSAN, MaxSANs: p.MaxSANs}}
		if p.Name != "" && a.profiles[p.Name] == nil {
			a.profiles[p.Name] = pp
		}
		if i == 0 && opts.DefaultProfile == "" {
			a.def = pp
		}
	}
	if opts.DefaultProfile != "" {
		if a.def = a.profiles[opts.DefaultProfile]; a.def == nil {
			bad("default profile %q is not defined", opts.DefaultProfile)
		}
	}
	req := opts.Requesters
	if len(req.Operational) == 0 && opts.Certificate != nil && opts.Root != nil {
		req.Operational = []*x509.Certificate{opts.Certificate, opts.Root}
	}
	v, err := policy.NewVerifier(req)
	if err != nil {
		errs = append(errs, err)
	}
	a.verifier = v
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

// HasProfile reports whether label names a profile.
func (a *Authority) HasProfile(label string) bool { return a.profiles[label] != nil }

func (a *Authority) profile(name string) (*profile, error) {
	if name == "" {
		return a.def, nil
	}
	if p := a.profiles[name]; p != nil {
		return p, nil
	}
	return nil, &Error{Kind: KindNotFound, Reason: "unknown profile"}
}

// CACertificates returns the certificates for /crts (RFC 7030 §4.1, RFC 9148
// §4.1): the issuing CA, then the root. All profiles share them; an unknown
// profile is KindNotFound. The returned slice is fresh; the certificates are
// shared and must not be modified.
func (a *Authority) CACertificates(profile string) ([]*x509.Certificate, error) {
	if _, err := a.profile(profile); err != nil {
		return nil, err
	}
	return append([]*x509.Certificate(nil), a.chain...), nil
}

// CSRAttributes returns the DER CsrAttrs (RFC 7030 §4.5.2: SEQUENCE OF
// AttrOrOID, here OIDs only) of the profile, possibly an empty SEQUENCE; an
// unknown profile is KindNotFound.
func (a *Authority) CSRAttributes(profile string) ([]byte, error) {
	p, err := a.profile(profile)
	if err != nil {
		return nil, err
	}
	return append([]byte(nil), p.csrAttrs...), nil
}

func encodeCSRAttrs(oids []string) ([]byte, error) {
	var b cryptobyte.Builder
	var errs []error
	b.AddASN1(cbasn1.SEQUENCE, func(b *cryptobyte.Builder) {
		for _, s := range oids {
			oid, err := parseOID(s)
			if err != nil {
				errs = append(errs, err)
				continue
			}
			b.AddASN1ObjectIdentifier(oid)
		}
	})
	if err := errors.Join(errs...); err != nil {
		return nil, err
	}
	return b.Bytes()
}
