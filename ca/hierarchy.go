package ca

import (
	"crypto"
	"crypto/rand"
	"crypto/x509"
	"crypto/x509/pkix"
	"errors"
	"fmt"
	"io"
	"net"
	"slices"
	"time"

	"github.com/estca/estca/hsm"
)

// Key labels of the CA hierarchy in the token.
const (
	LabelRoot    = "estca-root"    // root CA key (absent in external-root mode)
	LabelIssuing = "estca-issuing" // issuing CA key
	LabelServer  = "estca-server"  // DTLS server key of the EST front end
	LabelAudit   = "estca-audit"   // key that signs audit log heads
)

// Default validity periods of the hierarchy.
const (
	DefaultRootValidity    = 20 * 365 * 24 * time.Hour
	DefaultIssuingValidity = 10 * 365 * 24 * time.Hour
	DefaultServerValidity  = 2 * 365 * 24 * time.Hour
)

// ErrKeyMismatch means a certificate does not belong to the token's key.
var ErrKeyMismatch = errors.New("ca: certificate does not match the key")

// KeyStore is what the hierarchy code needs from a PKCS#11 token; *hsm.Token
// implements it.
type KeyStore interface {
	// GenerateKey creates a non-extractable key pair under label.
	GenerateKey(label string, kt hsm.KeyType) (crypto.Signer, error)
	// FindKey returns the signer for label, or an error wrapping hsm.ErrKeyNotFound.
	FindKey(label string) (crypto.Signer, error)
}

// InitOptions configure Init and ImportIssuing. The zero value is usable.
type InitOptions struct {
	// KeyType is the type of the root and issuing keys; "" means hsm.ECDSAP256.
	KeyType hsm.KeyType
	// RootName and IssuingName are the CAs' common names; "" means
	// "estca root CA" and "estca issuing CA".
	RootName, IssuingName string
	// Organization, if set, goes into every subject of the hierarchy.
	Organization string
	// ServerDNSNames are DNS names of the EST server; "localhost" and the IP
	// address 127.0.0.1 are always included. The first one is the subject's
	// common name.
	ServerDNSNames []string
	// ServerIPs are IP addresses of the EST server (devices that connect
	// by address check them against the certificate's iPAddress names).
	ServerIPs []net.IP
	// ExternalRoot makes Init generate only the issuing (and audit) key and
	// return a CSR for an external root; ImportIssuing completes the hierarchy.
	ExternalRoot bool
	// RootValidity, IssuingValidity and ServerValidity default to 20, 10 and 2
	// years; a child never outlives its issuer.
	RootValidity, IssuingValidity, ServerValidity time.Duration
	// Now is the clock (nil: time.Now); Rand the randomness for serials (nil:
	// crypto/rand.Reader).
	Now  func() time.Time
	Rand io.Reader
}

func (o *InitOptions) defaults() {
	if o.KeyType == "" {
		o.KeyType = hsm.ECDSAP256
	}
	if o.RootName == "" {
		o.RootName = "estca root CA"
	}
	if o.IssuingName == "" {
		o.IssuingName = "estca issuing CA"
	}
	if o.RootValidity <= 0 {
		o.RootValidity = DefaultRootValidity
	}
	if o.IssuingValidity <= 0 {
		o.IssuingValidity = DefaultIssuingValidity
	}
	if o.ServerValidity <= 0 {
		o.ServerValidity = DefaultServerValidity
	}
	if o.Now == nil {
		o.Now = time.Now
	}
	if o.Rand == nil {
		o.Rand = rand.Reader
	}
}

func (o *InitOptions) name(cn string) pkix.Name {
	n := pkix.Name{CommonName: cn}
	if o.Organization != "" {
		n.Organization = []string{o.Organization}
	}
	return n
}

// Hierarchy is the CA hierarchy created by Init or ImportIssuing. In
// external-root mode Init returns only IssuingCSR.
type Hierarchy struct {
	Root, Issuing, Server *x509.Certificate
	// IssuingCSR is the DER PKCS#10 request for the issuing CA (external root).
	IssuingCSR []byte
}

// Init creates the CA hierarchy in an empty token: the root and issuing CA
// keys (o.KeyType), a self-signed root, the issuing CA (pathLen 0) signed by
// the root, a P-256 DTLS server key and certificate (EKU serverAuth), and a
// P-256 audit key. With o.ExternalRoot it creates only the issuing and audit
// keys and returns the issuing CA's CSR. Existing keys under the estca labels
// are never overwritten: Init fails before generating anything.
func Init(ks KeyStore, o InitOptions) (*Hierarchy, error) {
	o.defaults()
	labels := []string{LabelIssuing, LabelAudit}
	if !o.ExternalRoot {
		labels = append(labels, LabelRoot, LabelServer)
	}
	for _, l := range labels {
		_, err := ks.FindKey(l)
		if err == nil {
			return nil, fmt.Errorf("ca: init: key %q: %w", l, hsm.ErrKeyExists)
		}
		if !errors.Is(err, hsm.ErrKeyNotFound) {
			return nil, fmt.Errorf("ca: init: %w", err)
		}
	}
	issuingKey, err := ks.GenerateKey(LabelIssuing, o.KeyType)
	if err != nil {
		return nil, fmt.Errorf("ca: init: %w", err)
	}
	if _, err := ks.GenerateKey(LabelAudit, hsm.ECDSAP256); err != nil {
		return nil, fmt.Errorf("ca: init: %w", err)
	}
	if o.ExternalRoot {
		csr, err := x509.CreateCertificateRequest(o.Rand, &x509.CertificateRequest{Subject: o.name(o.IssuingName)}, issuingKey)
		if err != nil {
			return nil, fmt.Errorf("ca: init: issuing CSR: %w", err)
		}
		return &Hierarchy{IssuingCSR: csr}, nil
	}
	rootKey, err := ks.GenerateKey(LabelRoot, o.KeyType)
	if err != nil {
		return nil, fmt.Errorf("ca: init: %w", err)
	}
	now := o.Now()
	rootTmpl, err := caTemplate(o, o.name(o.RootName), rootKey.Public(), now, now.Add(o.RootValidity))
	if err != nil {
		return nil, err
	}
	root, err := create(o.Rand, rootTmpl, rootTmpl, rootKey.Public(), rootKey)
	if err != nil {
		return nil, fmt.Errorf("ca: init: root: %w", err)
	}
	issTmpl, err := caTemplate(o, o.name(o.IssuingName), issuingKey.Public(), now, minTime(now.Add(o.IssuingValidity), root.NotAfter))
	if err != nil {
		return nil, err
	}
	issTmpl.MaxPathLen, issTmpl.MaxPathLenZero = 0, true
	issuing, err := create(o.Rand, issTmpl, root, issuingKey.Public(), rootKey)
	if err != nil {
		return nil, fmt.Errorf("ca: init: issuing: %w", err)
	}
	server, err := serverCertificate(ks, o, issuing, issuingKey)
	if err != nil {
		return nil, err
	}
	return &Hierarchy{Root: root, Issuing: issuing, Server: server}, nil
}

// ImportIssuing completes an external-root hierarchy: it checks that issuing
// is a CA certificate for the token's issuing key (ErrKeyMismatch otherwise),
// signed by root, and within validity, then creates the DTLS server key and
// certificate. root may be the external root or its intermediate that signed
// issuing.
func ImportIssuing(ks KeyStore, issuing, root *x509.Certificate, o InitOptions) (*Hierarchy, error) {
	o.defaults()
	if issuing == nil || root == nil {
		return nil, errors.New("ca: import: missing certificate")
	}
	key, err := ks.FindKey(LabelIssuing)
	if err != nil {
		return nil, fmt.Errorf("ca: import: %w", err)
	}
	if !samePublicKey(key.Public(), issuing.PublicKey) {
		return nil, ErrKeyMismatch
	}
	var errs []error
	if !issuing.IsCA || issuing.KeyUsage&x509.KeyUsageCertSign == 0 {
		errs = append(errs, errors.New("ca: import: issuing certificate is not a CA with keyCertSign"))
	}
	if len(issuing.SubjectKeyId) == 0 {
		errs = append(errs, errors.New("ca: import: issuing certificate has no subject key identifier"))
	}
	if err := issuing.CheckSignatureFrom(root); err != nil {
		errs = append(errs, fmt.Errorf("ca: import: issuing certificate not signed by root: %w", err))
	}
	if now := o.Now(); now.Before(issuing.NotBefore) || now.After(issuing.NotAfter) {
		errs = append(errs, errors.New("ca: import: issuing certificate outside its validity"))
	}
	if err := errors.Join(errs...); err != nil {
		return nil, err
	}
	server, err := serverCertificate(ks, o, issuing, key)
	if err != nil {
		return nil, err
	}
	return &Hierarchy{Root: root, Issuing: issuing, Server: server}, nil
}

// LoadSigners looks up the keys with the given labels, in order (for serve and
// issue); every missing key is reported.
func LoadSigners(ks KeyStore, labels ...string) ([]crypto.Signer, error) {
	out := make([]crypto.Signer, len(labels))
	var errs []error
	for i, l := range labels {
		s, err := ks.FindKey(l)
		if err != nil {
			errs = append(errs, fmt.Errorf("ca: load key %q: %w", l, err))
			continue
		}
		out[i] = s
	}
	if err := errors.Join(errs...); err != nil {
		return nil, err
	}
	return out, nil
}

func serverCertificate(ks KeyStore, o InitOptions, issuing *x509.Certificate, issuingKey crypto.Signer) (*x509.Certificate, error) {
	key, err := ks.GenerateKey(LabelServer, hsm.ECDSAP256)
	if err != nil {
		return nil, fmt.Errorf("ca: init: %w", err)
	}
	return ServerCertificate(key.Public(), issuing, issuingKey, o)
}

// ServerCertificate issues the DTLS server certificate of the EST front end
// for pub, signed by the issuing CA: EKU serverAuth, the names of
// o.ServerDNSNames and o.ServerIPs (plus localhost and 127.0.0.1), valid
// for o.ServerValidity from o.Now (never beyond the issuing CA). Init and
// ImportIssuing call it for a new key; `estca ca reissue-server` renews the
// certificate of the key in the token, the issuing CA untouched.
func ServerCertificate(pub crypto.PublicKey, issuing *x509.Certificate, issuingKey crypto.Signer, o InitOptions) (*x509.Certificate, error) {
	o.defaults()
	dns := append([]string{}, o.ServerDNSNames...)
	if !slices.Contains(dns, "localhost") {
		dns = append(dns, "localhost")
	}
	ips := []net.IP{net.IPv4(127, 0, 0, 1).To4()}
	for _, ip := range o.ServerIPs {
		if !slices.ContainsFunc(ips, ip.Equal) {
			ips = append(ips, ip)
		}
	}
	tmpl, err := leafTemplate(o, o.name(dns[0]), pub, issuing)
	if err != nil {
		return nil, err
	}
	tmpl.KeyUsage = x509.KeyUsageDigitalSignature
	tmpl.ExtKeyUsage = []x509.ExtKeyUsage{x509.ExtKeyUsageServerAuth}
	tmpl.DNSNames = dns
	tmpl.IPAddresses = ips
	c, err := create(o.Rand, tmpl, issuing, pub, issuingKey)
	if err != nil {
		return nil, fmt.Errorf("ca: server certificate: %w", err)
	}
	return c, nil
}

// backdate is subtracted from the notBefore of the CA and server
// certificates to absorb clock skew (device certificates get their
// profile's, policy.Profile.Backdate).
const backdate = time.Minute

// leafTemplate is the common part of the end-entity certificates of the
// hierarchy (DTLS server, key-package signer): validity o.ServerValidity
// within the issuing CA's.
func leafTemplate(o InitOptions, name pkix.Name, pub crypto.PublicKey, issuing *x509.Certificate) (*x509.Certificate, error) {
	now := o.Now()
	return baseTemplate(o, name, pub, now, minTime(now.Add(o.ServerValidity), issuing.NotAfter))
}

func caTemplate(o InitOptions, name pkix.Name, pub crypto.PublicKey, nb, na time.Time) (*x509.Certificate, error) {
	t, err := baseTemplate(o, name, pub, nb, na)
	if err != nil {
		return nil, err
	}
	t.KeyUsage = x509.KeyUsageCertSign | x509.KeyUsageCRLSign | x509.KeyUsageDigitalSignature
	t.IsCA = true
	return t, nil
}

// baseTemplate has a fresh serial, the RFC 7093 key identifier of pub and
// the validity nb (backdated) to na.
func baseTemplate(o InitOptions, name pkix.Name, pub crypto.PublicKey, nb, na time.Time) (*x509.Certificate, error) {
	serial, err := newSerial(o.Rand)
	if err != nil {
		return nil, err
	}
	spki, err := x509.MarshalPKIXPublicKey(pub)
	if err != nil {
		return nil, fmt.Errorf("ca: init: %w", err)
	}
	ski, err := subjectKeyID(spki)
	if err != nil {
		return nil, err
	}
	return &x509.Certificate{
		SerialNumber:          serial,
		Subject:               name,
		NotBefore:             nb.Add(-backdate),
		NotAfter:              na,
		BasicConstraintsValid: true,
		SubjectKeyId:          ski,
	}, nil
}

func create(r io.Reader, tmpl, parent *x509.Certificate, pub crypto.PublicKey, signer crypto.Signer) (*x509.Certificate, error) {
	der, err := x509.CreateCertificate(r, tmpl, parent, pub, signer)
	if err != nil {
		return nil, err
	}
	return x509.ParseCertificate(der)
}

func minTime(a, b time.Time) time.Time {
	if a.After(b) {
		return b
	}
	return a
}
