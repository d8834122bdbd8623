package ca

import (
	"crypto"
	"crypto/x509"
	"crypto/x509/pkix"
	"encoding/asn1"
	"errors"
	"fmt"
	"math/big"
	"net/url"
	"time"

	"golang.org/x/crypto/cryptobyte"
	cbasn1 "golang.org/x/crypto/cryptobyte/asn1"

	"github.com/estca/estca/policy"
)

var oidExtCRLDistributionPoints = asn1.ObjectIdentifier{2, 5, 29, 31}

// certSpec is an end-entity certificate to sign: the policy engine's
// template with what the authority adds.
type certSpec struct {
	serial              *big.Int
	subject             []byte // DER Name
	spki                []byte // DER SubjectPublicKeyInfo
	pub                 crypto.PublicKey
	notBefore, notAfter time.Time
	ku                  x509.KeyUsage
	eku                 []x509.ExtKeyUsage
	builtin             []byte // DER keyUsage, extKeyUsage, basicConstraints
	ski                 []byte
	extra               []pkix.Extension // after the key identifiers, in order
}

// sign builds the end-entity certificate of the policy engine's template t
// for the public key pub (DER spki) and signs it with the issuing key: the
// template's subject (possibly empty, then its SAN is critical, RFC 5280
// §4.2.1.6), SAN, key usage derived per key algorithm, extended key usage,
// validity and copied CSR extensions; a random serial, the RFC 7093 §2
// method 1 subject key identifier, the issuing CA's authority key
// identifier, basicConstraints cA=FALSE and, when configured, the CRL
// distribution point.
func (a *Authority) sign(t *policy.Template, pub crypto.PublicKey, spki []byte) (*x509.Certificate, error) {
	if t == nil || pub == nil || len(spki) == 0 || len(t.Subject) == 0 {
		return nil, &Error{Kind: KindInternal, Reason: "incomplete certificate template"}
	}
	serial, err := newSerial(a.rand)
	if err != nil {
		return nil, &Error{Kind: KindInternal, Reason: "serial generation failed", Err: err}
	}
	ski, err := subjectKeyID(spki)
	if err != nil {
		return nil, &Error{Kind: KindBadRequest, Reason: "malformed public key", Err: err}
	}
	builtin, err := builtinExtensions(t.KeyUsage, t.ExtKeyUsage)
	if err != nil {
		return nil, &Error{Kind: KindInternal, Reason: "certificate extensions", Err: err}
	}
	s := &certSpec{serial: serial, subject: t.Subject, spki: spki, pub: pub,
		notBefore: t.NotBefore, notAfter: t.NotAfter, ku: t.KeyUsage, eku: t.ExtKeyUsage,
		builtin: builtin, ski: ski}
	if s.notAfter.After(a.issuing.NotAfter) {
		s.notAfter = a.issuing.NotAfter
	}
	if t.SubjectAltName != nil {
		// Copied verbatim: Go's x509 drops otherName (RFC 4108
		// hardwareModuleName). The engine built or vetted every entry.
		s.extra = append(s.extra, pkix.Extension{Id: policy.OIDSubjectAltName, Critical: t.SANCritical, Value: t.SubjectAltName})
	}
	if a.crlDP != nil {
		s.extra = append(s.extra, pkix.Extension{Id: oidExtCRLDistributionPoints, Value: a.crlDP})
	}
	s.extra = append(s.extra, t.Extensions...)

	var der []byte
	if a.fast != nil {
		der, err = a.fast.certificate(a, s)
	} else {
		der, err = x509.CreateCertificate(a.rand, s.template(), a.issuing, pub, a.signer)
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
func (s *certSpec) template() *x509.Certificate {
	return &x509.Certificate{
		SerialNumber:          s.serial,
		RawSubject:            s.subject,
		NotBefore:             s.notBefore,
		NotAfter:              s.notAfter,
		KeyUsage:              s.ku,
		ExtKeyUsage:           s.eku,
		BasicConstraintsValid: true,
		SubjectKeyId:          s.ski,
		ExtraExtensions:       s.extra,
	}
}

// crlDistributionPoint returns the DER extnValue of a cRLDistributionPoints
// extension (RFC 5280 §4.2.1.13) with one distribution point whose full name
// is the URI u (http or https, where the CRL is published in DER).
func crlDistributionPoint(u string) ([]byte, error) {
	p, err := url.Parse(u)
	if err != nil || (p.Scheme != "http" && p.Scheme != "https") || p.Host == "" || len(u) > 1024 {
		return nil, fmt.Errorf("ca: CRL distribution point %q: want an absolute http:// or https:// URL", u)
	}
	for i := 0; i < len(u); i++ {
		if u[i] <= 0x20 || u[i] >= 0x7f {
			return nil, fmt.Errorf("ca: CRL distribution point %q: IA5String URI of printable ASCII only", u)
		}
	}
	var b cryptobyte.Builder
	b.AddASN1(cbasn1.SEQUENCE, func(b *cryptobyte.Builder) { // CRLDistributionPoints
		b.AddASN1(cbasn1.SEQUENCE, func(b *cryptobyte.Builder) { // DistributionPoint
			b.AddASN1(cbasn1.Tag(0).ContextSpecific().Constructed(), func(b *cryptobyte.Builder) { // distributionPoint
				b.AddASN1(cbasn1.Tag(0).ContextSpecific().Constructed(), func(b *cryptobyte.Builder) { // fullName
					b.AddASN1(cbasn1.Tag(6).ContextSpecific(), func(b *cryptobyte.Builder) { // URI
						b.AddBytes([]byte(u))
					})
				})
			})
		})
	})
	return b.Bytes()
}
