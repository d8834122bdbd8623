package client

import (
	"crypto"
	"crypto/ecdsa"
	"crypto/ed25519"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/rsa"
	"crypto/x509"
	"crypto/x509/pkix"
	"encoding/asn1"
	"errors"
	"fmt"

	"golang.org/x/crypto/cryptobyte"
	cbasn1 "golang.org/x/crypto/cryptobyte/asn1"
)

// Object identifiers of CSR attributes (RFC 7030 §4.5.2, RFC 9908).
var (
	oidCertReqInfoTemplate = asn1.ObjectIdentifier{1, 2, 840, 113549, 1, 9, 16, 2, 61}
	oidExtensionRequest    = asn1.ObjectIdentifier{1, 2, 840, 113549, 1, 9, 14}
	oidECPublicKey         = asn1.ObjectIdentifier{1, 2, 840, 10045, 2, 1}
	oidRSAEncryption       = asn1.ObjectIdentifier{1, 2, 840, 113549, 1, 1, 1}
	oidEd25519             = asn1.ObjectIdentifier{1, 3, 101, 112}
	oidP256                = asn1.ObjectIdentifier{1, 2, 840, 10045, 3, 1, 7}
	oidP384                = asn1.ObjectIdentifier{1, 3, 132, 0, 34}
	oidP521                = asn1.ObjectIdentifier{1, 3, 132, 0, 35}
)

// ErrTemplate is wrapped by the errors of ParseCSRTemplate and
// CSRTemplate.Request: the server's CSR attributes ask for something this
// client cannot follow.
var ErrTemplate = errors.New("client: CSR template")

// CSRTemplate is what a server's CSR attributes (GET /att) ask a CSR to
// contain, as far as a client can follow it: the RFC 9908
// CertificationRequestInfoTemplate, when the server sends one.
type CSRTemplate struct {
	// Subject is the DER Name the CSR should carry, the template's values
	// filled in; nil when the template leaves the subject to the client.
	// Attributes whose value the template leaves open are taken from the
	// client certificate (the identity the server binds to), if it has them.
	Subject []byte
	// Key is the key to generate: "ecdsa-p256", "ecdsa-p384",
	// "ecdsa-p521", "rsa-2048", "rsa-3072", "rsa-4096", "ed25519"; "" when
	// the template names none.
	Key string
	// Extensions are the extensions the template gives with their values
	// (an extensionRequest, e.g. the subjectAltName the certificate will
	// carry); they are put in the CSR as given.
	Extensions []pkix.Extension
}

// ParseCSRTemplate reads a DER CsrAttrs (RFC 7030 §4.5.2) and returns its
// RFC 9908 certificationRequestInfoTemplate as a CSRTemplate, or nil
// without error when there is none (a client then builds its CSR as it
// would without /att). leaf is the client certificate: open subject values
// are filled from it. The input comes from the network: it is bounded and
// checked, never trusted.
func ParseCSRTemplate(der []byte, leaf *x509.Certificate) (*CSRTemplate, error) {
	in := cryptobyte.String(der)
	var attrs cryptobyte.String
	if !in.ReadASN1(&attrs, cbasn1.SEQUENCE) || !in.Empty() {
		return nil, fmt.Errorf("%w: CsrAttrs is not a DER SEQUENCE", ErrTemplate)
	}
	for !attrs.Empty() {
		var el cryptobyte.String
		var tag cbasn1.Tag
		if !attrs.ReadAnyASN1(&el, &tag) {
			return nil, fmt.Errorf("%w: bad AttrOrOID", ErrTemplate)
		}
		if tag != cbasn1.SEQUENCE {
			continue // a bare OID: a hint this client does not use
		}
		var oid asn1.ObjectIdentifier
		var values cryptobyte.String
		if !el.ReadASN1ObjectIdentifier(&oid) || !el.ReadASN1(&values, cbasn1.SET) {
			return nil, fmt.Errorf("%w: bad attribute", ErrTemplate)
		}
		if !oid.Equal(oidCertReqInfoTemplate) {
			continue
		}
		var info cryptobyte.String
		if !values.ReadASN1(&info, cbasn1.SEQUENCE) {
			return nil, fmt.Errorf("%w: bad certificationRequestInfoTemplate", ErrTemplate)
		}
		return parseInfoTemplate(info, leaf)
	}
	return nil, nil
}

func parseInfoTemplate(info cryptobyte.String, leaf *x509.Certificate) (*CSRTemplate, error) {
	var version int64
	if !info.ReadASN1Integer(&version) || version != 0 {
		return nil, fmt.Errorf("%w: unsupported template version", ErrTemplate)
	}
	t := &CSRTemplate{}
	if info.PeekASN1Tag(cbasn1.SEQUENCE) {
		var name cryptobyte.String
		if !info.ReadASN1(&name, cbasn1.SEQUENCE) {
			return nil, fmt.Errorf("%w: bad subject template", ErrTemplate)
		}
		subject, err := fillName(name, leaf)
		if err != nil {
			return nil, err
		}
		t.Subject = subject
	}
	var spki, exts cryptobyte.String
	var hasSPKI, hasExts bool
	if !info.ReadOptionalASN1(&spki, &hasSPKI, cbasn1.Tag(0).ContextSpecific().Constructed()) ||
		!info.ReadOptionalASN1(&exts, &hasExts, cbasn1.Tag(1).ContextSpecific().Constructed()) {
		return nil, fmt.Errorf("%w: bad template fields", ErrTemplate)
	}
	if hasSPKI {
		k, err := keyOf(spki)
		if err != nil {
			return nil, err
		}
		t.Key = k
	}
	for hasExts && !exts.Empty() {
		var attr, values cryptobyte.String
		var oid asn1.ObjectIdentifier
		if !exts.ReadASN1(&attr, cbasn1.SEQUENCE) || !attr.ReadASN1ObjectIdentifier(&oid) || !attr.ReadASN1(&values, cbasn1.SET) {
			return nil, fmt.Errorf("%w: bad template attribute", ErrTemplate)
		}
		if !oid.Equal(oidExtensionRequest) {
			continue // an extensionReqTemplate: names the client may choose
		}
		var list []pkix.Extension
		var raw cryptobyte.String
		if !values.ReadASN1Element(&raw, cbasn1.SEQUENCE) {
			return nil, fmt.Errorf("%w: bad extensionRequest", ErrTemplate)
		}
		if rest, err := asn1.Unmarshal(raw, &list); err != nil || len(rest) > 0 {
			return nil, fmt.Errorf("%w: bad extensionRequest", ErrTemplate)
		}
		t.Extensions = append(t.Extensions, list...)
	}
	return t, nil
}

// maxTemplateAttrs bounds the subject attributes read from a template.
const maxTemplateAttrs = 16

// fillName turns a NameTemplate (RFC 9908: RDNs of SingleAttributeTemplate,
// whose value is optional) into a DER Name: an attribute without value
// takes the leaf's value of the same type.
func fillName(rdns cryptobyte.String, leaf *x509.Certificate) ([]byte, error) {
	var b cryptobyte.Builder
	var errs []error
	n := 0
	b.AddASN1(cbasn1.SEQUENCE, func(b *cryptobyte.Builder) {
		for !rdns.Empty() {
			var rdn, atv cryptobyte.String
			if !rdns.ReadASN1(&rdn, cbasn1.SET) || !rdn.ReadASN1(&atv, cbasn1.SEQUENCE) || !rdn.Empty() {
				errs = append(errs, fmt.Errorf("%w: bad subject template RDN", ErrTemplate))
				return
			}
			if n++; n > maxTemplateAttrs {
				errs = append(errs, fmt.Errorf("%w: too many subject attributes", ErrTemplate))
				return
			}
			var oid asn1.ObjectIdentifier
			if !atv.ReadASN1ObjectIdentifier(&oid) {
				errs = append(errs, fmt.Errorf("%w: bad subject attribute type", ErrTemplate))
				return
			}
			var value cryptobyte.String
			var tag cbasn1.Tag
			if atv.Empty() {
				v, vt, ok := leafValue(leaf, oid)
				if !ok {
					errs = append(errs, fmt.Errorf("%w: the server asks for subject attribute %s, which this client has no value for", ErrTemplate, oid))
					return
				}
				value, tag = v, vt
			} else if !atv.ReadAnyASN1(&value, &tag) || !atv.Empty() {
				errs = append(errs, fmt.Errorf("%w: bad subject attribute value", ErrTemplate))
				return
			}
			b.AddASN1(cbasn1.SET, func(b *cryptobyte.Builder) {
				b.AddASN1(cbasn1.SEQUENCE, func(b *cryptobyte.Builder) {
					b.AddASN1ObjectIdentifier(oid)
					b.AddASN1(tag, func(b *cryptobyte.Builder) { b.AddBytes(value) })
				})
			})
		}
	})
	if err := errors.Join(errs...); err != nil {
		return nil, err
	}
	return b.Bytes()
}

// leafValue finds the value of attribute type oid in the leaf's subject.
func leafValue(leaf *x509.Certificate, oid asn1.ObjectIdentifier) (cryptobyte.String, cbasn1.Tag, bool) {
	if leaf == nil {
		return nil, 0, false
	}
	rdns := cryptobyte.String(leaf.RawSubject)
	var seq cryptobyte.String
	if !rdns.ReadASN1(&seq, cbasn1.SEQUENCE) {
		return nil, 0, false
	}
	for !seq.Empty() {
		var rdn cryptobyte.String
		if !seq.ReadASN1(&rdn, cbasn1.SET) {
			return nil, 0, false
		}
		for !rdn.Empty() {
			var atv, value cryptobyte.String
			var t asn1.ObjectIdentifier
			var tag cbasn1.Tag
			if !rdn.ReadASN1(&atv, cbasn1.SEQUENCE) || !atv.ReadASN1ObjectIdentifier(&t) || !atv.ReadAnyASN1(&value, &tag) {
				return nil, 0, false
			}
			if t.Equal(oid) {
				return value, tag, true
			}
		}
	}
	return nil, 0, false
}

// keyOf names the key of a SubjectPublicKeyInfoTemplate.
func keyOf(spki cryptobyte.String) (string, error) {
	var alg cryptobyte.String
	var oid asn1.ObjectIdentifier
	if !spki.ReadASN1(&alg, cbasn1.SEQUENCE) || !alg.ReadASN1ObjectIdentifier(&oid) {
		return "", fmt.Errorf("%w: bad key template", ErrTemplate)
	}
	switch {
	case oid.Equal(oidECPublicKey):
		var curve asn1.ObjectIdentifier
		if !alg.ReadASN1ObjectIdentifier(&curve) {
			return "", fmt.Errorf("%w: EC key template without a named curve", ErrTemplate)
		}
		switch {
		case curve.Equal(oidP256):
			return "ecdsa-p256", nil
		case curve.Equal(oidP384):
			return "ecdsa-p384", nil
		case curve.Equal(oidP521):
			return "ecdsa-p521", nil
		}
		return "", fmt.Errorf("%w: unsupported curve %s", ErrTemplate, curve)
	case oid.Equal(oidEd25519):
		return "ed25519", nil
	case oid.Equal(oidRSAEncryption):
		// The template carries a dummy key of the modulus size required.
		var bits asn1.BitString
		var key cryptobyte.String
		var n []byte
		if !spki.ReadASN1BitString(&bits) {
			return "rsa-2048", nil
		}
		key = bits.RightAlign()
		var seq cryptobyte.String
		if !key.ReadASN1(&seq, cbasn1.SEQUENCE) || !seq.ReadASN1Bytes(&n, cbasn1.INTEGER) {
			return "", fmt.Errorf("%w: bad RSA key template", ErrTemplate)
		}
		for len(n) > 0 && n[0] == 0 {
			n = n[1:]
		}
		switch len(n) * 8 {
		case 2048, 3072, 4096:
			return fmt.Sprintf("rsa-%d", len(n)*8), nil
		}
		return "", fmt.Errorf("%w: unsupported RSA size %d", ErrTemplate, len(n)*8)
	}
	return "", fmt.Errorf("%w: unsupported key algorithm %s", ErrTemplate, oid)
}

// NewKey generates the key the template asks for (P-256 when it names none).
func (t *CSRTemplate) NewKey() (crypto.Signer, error) {
	switch t.Key {
	case "", "ecdsa-p256":
		return ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	case "ecdsa-p384":
		return ecdsa.GenerateKey(elliptic.P384(), rand.Reader)
	case "ecdsa-p521":
		return ecdsa.GenerateKey(elliptic.P521(), rand.Reader)
	case "rsa-2048":
		return rsa.GenerateKey(rand.Reader, 2048)
	case "rsa-3072":
		return rsa.GenerateKey(rand.Reader, 3072)
	case "rsa-4096":
		return rsa.GenerateKey(rand.Reader, 4096)
	case "ed25519":
		_, k, err := ed25519.GenerateKey(rand.Reader)
		return k, err
	}
	return nil, fmt.Errorf("%w: unsupported key %q", ErrTemplate, t.Key)
}

// Request makes the DER CSR the template asks for, signed by key: the
// template's subject and extensions (the leaf's subject when the template
// has none).
func (t *CSRTemplate) Request(key crypto.Signer, leaf *x509.Certificate) ([]byte, error) {
	tmpl := &x509.CertificateRequest{RawSubject: t.Subject, ExtraExtensions: t.Extensions}
	if t.Subject == nil && leaf != nil {
		tmpl.RawSubject = leaf.RawSubject
	}
	return x509.CreateCertificateRequest(rand.Reader, tmpl, key)
}
