package cms

import (
	"bytes"
	"crypto"
	"crypto/rsa"
	"crypto/x509"
	"encoding/asn1"
	"errors"
	"fmt"
	"io"

	"golang.org/x/crypto/cryptobyte"
	cbasn1 "golang.org/x/crypto/cryptobyte/asn1"
)

// CSR attributes asking for server-side key generation with an encrypted
// key (RFC 7030 §4.4.1.1, §4.4.1.2; RFC 9148 §4.8), inside the attributes of
// a PKCS#10 CertificationRequestInfo (RFC 2986 §4.1):
//
//	SMIMECapabilities ::= SEQUENCE OF SMIMECapability        -- RFC 8551 §2.5.2
//	SMIMECapability ::= SEQUENCE { capabilityID OBJECT IDENTIFIER, parameters ANY OPTIONAL }
//	DecryptKeyIdentifier ::= OCTET STRING                     -- RFC 4108 §2.2.5
//	AsymmetricDecryptKeyIdentifier ::= OCTET STRING           -- RFC 7030 §4.4.1.2

// MaxCSRSize bounds the CSRs ParseKeyRequest reads.
const MaxCSRSize = 64 << 10

// KeyDelivery is how the requester wants its server-generated key.
type KeyDelivery int

const (
	// DeliverPlain: no decrypt-key identifier; the key goes back as an
	// unencrypted PKCS#8 (Content-Format 284), unless the server's policy
	// requires encryption.
	DeliverPlain KeyDelivery = iota
	// DeliverKEK: DecryptKeyIdentifier names a pre-shared AES key;
	// KEKRecipientInfo (Content-Format 280).
	DeliverKEK
	// DeliverAsymmetric: AsymmetricDecryptKeyIdentifier names the
	// requester's public key by subject key identifier; KeyTransRecipientInfo
	// for RSA, KeyAgreeRecipientInfo for EC (Content-Format 280).
	DeliverAsymmetric
)

func (d KeyDelivery) String() string {
	switch d {
	case DeliverPlain:
		return "plain"
	case DeliverKEK:
		return "kek"
	case DeliverAsymmetric:
		return "asymmetric"
	}
	return fmt.Sprintf("KeyDelivery(%d)", int(d))
}

// Capability is one SMIMECapability.
type Capability struct {
	ID asn1.ObjectIdentifier
	// Parameters is the DER of the parameters, nil when absent.
	Parameters []byte
}

// KeyRequest is what a CSR asks of server-side key generation.
type KeyRequest struct {
	Delivery KeyDelivery
	// KeyID is the DecryptKeyIdentifier or AsymmetricDecryptKeyIdentifier
	// (1 to 64 bytes); nil for DeliverPlain.
	KeyID []byte
	// Capabilities are the SMIMECapabilities in the requester's order of
	// preference (RFC 8551 §2.5.2), nil when the attribute is absent.
	Capabilities []Capability
}

// ContentCapabilities returns the SMIMECapabilities entries announcing
// content-encryption algorithms, in the order given (RFC 3565 §5, RFC 5084
// §6: parameters absent).
func ContentCapabilities(algs ...ContentEncryption) []Capability {
	caps := make([]Capability, 0, len(algs))
	for _, a := range algs {
		if a.valid() {
			caps = append(caps, Capability{ID: a.OID()})
		}
	}
	return caps
}

// ContentEncryption picks the content-encryption algorithm for the
// response: among the requester's capabilities this package supports, the
// first (in the requester's order) whose key is exactly minBits (128 or 256,
// matched to the generated key), else the first stronger one. Without
// SMIMECapabilities (Capabilities nil) it is AES-CBC with a minBits key
// (RFC 8551 §2.7.1: CBC is the algorithm every receiver supports). When no
// listed algorithm is usable, an empty list included, the error wraps
// ErrNoUsableAlgorithm.
func (r *KeyRequest) ContentEncryption(minBits int) (ContentEncryption, error) {
	if minBits != 128 && minBits != 256 {
		return 0, fmt.Errorf("cms: content key strength must be 128 or 256 bits, not %d", minBits)
	}
	if r.Capabilities == nil {
		if minBits == 128 {
			return AES128CBC, nil
		}
		return AES256CBC, nil
	}
	var stronger ContentEncryption
	for _, c := range r.Capabilities {
		ce, ok := contentEncryptionByOID(c.ID)
		if !ok || !(c.Parameters == nil || bytes.Equal(c.Parameters, derNull)) {
			continue
		}
		switch bits := ce.KeySize() * 8; {
		case bits == minBits:
			return ce, nil
		case bits > minBits && stronger == 0:
			stronger = ce
		}
	}
	if stronger != 0 {
		return stronger, nil
	}
	return 0, fmt.Errorf("%w of at least %d bits among %d capabilities", ErrNoUsableAlgorithm, minBits, len(r.Capabilities))
}

// ParseKeyRequest reads the server-side key generation attributes of a DER
// PKCS#10 CSR: DecryptKeyIdentifier, AsymmetricDecryptKeyIdentifier
// (exactly one value each, at most one of the two) and SMIMECapabilities.
// Other attributes are ignored; the CSR's signature is not checked (RFC 9148
// §4.8: the server ignores the CSR's key and signature for /skg).
func ParseKeyRequest(csr []byte) (*KeyRequest, error) {
	if len(csr) > MaxCSRSize {
		return nil, tooLarge("CSR of %d bytes", len(csr))
	}
	_, attrSet, _, err := splitCSR(csr)
	if err != nil {
		return nil, err
	}
	const where = "CertificationRequestInfo.attributes"
	attrs, err := readAttributes(attrSet, where)
	if err != nil {
		return nil, err
	}
	r := &KeyRequest{}
	for _, a := range []struct {
		oid      asn1.ObjectIdentifier
		delivery KeyDelivery
	}{{oidAttrDecryptKeyID, DeliverKEK}, {oidAttrAsymmDecryptKeyID, DeliverAsymmetric}} {
		v, ok, err := single(attrs, a.oid, where)
		if err != nil {
			return nil, err
		}
		if !ok {
			continue
		}
		if r.Delivery != DeliverPlain {
			return nil, malformed(where, "both DecryptKeyIdentifier and AsymmetricDecryptKeyIdentifier")
		}
		var id cryptobyte.String
		if !v.ReadASN1(&id, cbasn1.OCTET_STRING) || !v.Empty() || len(id) == 0 || len(id) > maxKeyIDLen {
			return nil, malformed(where, fmt.Sprintf("%s must be an OCTET STRING of 1 to %d bytes", a.oid, maxKeyIDLen))
		}
		r.Delivery, r.KeyID = a.delivery, bytes.Clone(id)
	}
	v, ok, err := single(attrs, oidAttrSMIMECapabilities, where)
	if err != nil {
		return nil, err
	}
	if ok {
		if r.Capabilities, err = parseCapabilities(v); err != nil {
			return nil, err
		}
	}
	return r, nil
}

func parseCapabilities(v cryptobyte.String) ([]Capability, error) {
	const where = "SMIMECapabilities"
	var seq cryptobyte.String
	if !v.ReadASN1(&seq, cbasn1.SEQUENCE) || !v.Empty() {
		return nil, malformed(where, "want a SEQUENCE")
	}
	caps := []Capability{}
	for !seq.Empty() {
		if len(caps) == maxCapabilities {
			return nil, tooLarge("more than %d SMIMECapabilities", maxCapabilities)
		}
		var capability cryptobyte.String
		var c Capability
		if !seq.ReadASN1(&capability, cbasn1.SEQUENCE) || !capability.ReadASN1ObjectIdentifier(&c.ID) {
			return nil, malformed(where, "bad SMIMECapability")
		}
		if !capability.Empty() {
			var p cryptobyte.String
			var tag cbasn1.Tag
			if !capability.ReadAnyASN1Element(&p, &tag) || !capability.Empty() {
				return nil, malformed(where, "bad SMIMECapability parameters")
			}
			c.Parameters = bytes.Clone(p)
		}
		caps = append(caps, c)
	}
	return caps, nil
}

// splitCSR returns the parts of a CertificationRequest: the fields of the
// CertificationRequestInfo before the attributes (version, subject,
// subjectPKInfo, as DER), the contents of the attributes SET, and the
// signatureAlgorithm element.
func splitCSR(csr []byte) (head []byte, attrs cryptobyte.String, sigAlg []byte, err error) {
	const where = "CertificationRequest"
	s := cryptobyte.String(csr)
	var req, info cryptobyte.String
	if !s.ReadASN1(&req, cbasn1.SEQUENCE) || !s.Empty() || !req.ReadASN1(&info, cbasn1.SEQUENCE) {
		return nil, nil, nil, malformed(where, "want one SEQUENCE with a CertificationRequestInfo")
	}
	a, err := readAlgID(&req, where+".signatureAlgorithm")
	if err != nil {
		return nil, nil, nil, err
	}
	var sig asn1.BitString
	if !req.ReadASN1BitString(&sig) || !req.Empty() {
		return nil, nil, nil, malformed(where+".signature", "bad BIT STRING or trailing data")
	}
	start := info
	var version int64
	if !info.ReadASN1Integer(&version) || version != 0 ||
		!info.SkipASN1(cbasn1.SEQUENCE) || !info.SkipASN1(cbasn1.SEQUENCE) {
		return nil, nil, nil, malformed(where+"Info", "bad version, subject or subjectPKInfo")
	}
	head = start[:len(start)-len(info)]
	if !info.Empty() && (!info.ReadASN1(&attrs, tagExplicit0) || !info.Empty()) {
		return nil, nil, nil, malformed(where+"Info.attributes", "bad [0] SET or trailing data")
	}
	return head, attrs, a.raw, nil
}

// attributes encodes the request's CSR attributes.
func (r *KeyRequest) attributes() ([][]byte, error) {
	var out [][]byte
	var idOID asn1.ObjectIdentifier
	switch r.Delivery {
	case DeliverPlain:
		if r.KeyID != nil {
			return nil, errors.New("cms: a plain key request has no key identifier")
		}
	case DeliverKEK:
		idOID = oidAttrDecryptKeyID
	case DeliverAsymmetric:
		idOID = oidAttrAsymmDecryptKeyID
	default:
		return nil, fmt.Errorf("cms: unknown key delivery %d", int(r.Delivery))
	}
	if idOID != nil {
		if len(r.KeyID) == 0 || len(r.KeyID) > maxKeyIDLen {
			return nil, fmt.Errorf("cms: key identifier must be 1 to %d bytes", maxKeyIDLen)
		}
		a, err := encodeAttribute(idOID, func(b *cryptobyte.Builder) { b.AddASN1OctetString(r.KeyID) })
		if err != nil {
			return nil, err
		}
		out = append(out, a)
	}
	if r.Capabilities != nil {
		if len(r.Capabilities) > maxCapabilities {
			return nil, tooLarge("%d capabilities", len(r.Capabilities))
		}
		a, err := encodeAttribute(oidAttrSMIMECapabilities, func(b *cryptobyte.Builder) {
			b.AddASN1(cbasn1.SEQUENCE, func(b *cryptobyte.Builder) {
				for _, c := range r.Capabilities {
					b.AddASN1(cbasn1.SEQUENCE, func(b *cryptobyte.Builder) {
						b.AddASN1ObjectIdentifier(c.ID)
						b.AddBytes(c.Parameters)
					})
				}
			})
		})
		if err != nil {
			return nil, err
		}
		out = append(out, a)
	}
	return out, nil
}

// CreateCertificateRequest makes a DER PKCS#10 CSR like
// x509.CreateCertificateRequest (same template, same signature algorithm)
// with the attributes of r added to CertificationRequestInfo.attributes:
// Go's template cannot express OCTET STRING attribute values, so the request
// info is rebuilt with them (in DER SET order) and signed again with key.
// The result is checked with x509.ParseCertificateRequest and CheckSignature.
func CreateCertificateRequest(rand io.Reader, template *x509.CertificateRequest, key crypto.Signer, r *KeyRequest) ([]byte, error) {
	add, err := r.attributes()
	if err != nil {
		return nil, err
	}
	base, err := x509.CreateCertificateRequest(rand, template, key)
	if err != nil {
		return nil, err
	}
	parsed, err := x509.ParseCertificateRequest(base)
	if err != nil {
		return nil, err
	}
	head, attrSet, sigAlg, err := splitCSR(base)
	if err != nil {
		return nil, err
	}
	elems := add
	for !attrSet.Empty() {
		var e cryptobyte.String
		if !attrSet.ReadASN1Element(&e, cbasn1.SEQUENCE) {
			return nil, malformed("CertificationRequestInfo.attributes", "bad Attribute")
		}
		var oid asn1.ObjectIdentifier
		t := e
		var inner cryptobyte.String
		if t.ReadASN1(&inner, cbasn1.SEQUENCE) && inner.ReadASN1ObjectIdentifier(&oid) &&
			(oid.Equal(oidAttrDecryptKeyID) || oid.Equal(oidAttrAsymmDecryptKeyID) || oid.Equal(oidAttrSMIMECapabilities)) {
			return nil, fmt.Errorf("cms: template already carries attribute %s", oid)
		}
		elems = append(elems, e)
	}
	attrs, err := derSet(tagExplicit0, elems)
	if err != nil {
		return nil, err
	}
	var b cryptobyte.Builder
	b.AddASN1(cbasn1.SEQUENCE, func(b *cryptobyte.Builder) {
		b.AddBytes(head)
		b.AddBytes(attrs)
	})
	tbs, err := b.Bytes()
	if err != nil {
		return nil, err
	}
	sig, err := signCSR(rand, key, parsed.SignatureAlgorithm, tbs)
	if err != nil {
		return nil, err
	}
	b = cryptobyte.Builder{}
	b.AddASN1(cbasn1.SEQUENCE, func(b *cryptobyte.Builder) {
		b.AddBytes(tbs)
		b.AddBytes(sigAlg)
		b.AddASN1BitString(sig)
	})
	out, err := b.Bytes()
	if err != nil {
		return nil, err
	}
	check, err := x509.ParseCertificateRequest(out)
	if err != nil {
		return nil, fmt.Errorf("cms: rebuilt CSR does not parse: %w", err)
	}
	if err := check.CheckSignature(); err != nil {
		return nil, fmt.Errorf("cms: rebuilt CSR signature: %w", err)
	}
	return out, nil
}

// signCSR signs tbs as x509.CreateCertificateRequest did for alg.
func signCSR(rand io.Reader, key crypto.Signer, alg x509.SignatureAlgorithm, tbs []byte) ([]byte, error) {
	var opts crypto.SignerOpts
	switch alg {
	case x509.ECDSAWithSHA256, x509.SHA256WithRSA:
		opts = crypto.SHA256
	case x509.ECDSAWithSHA384, x509.SHA384WithRSA:
		opts = crypto.SHA384
	case x509.ECDSAWithSHA512, x509.SHA512WithRSA:
		opts = crypto.SHA512
	case x509.SHA256WithRSAPSS:
		opts = &rsa.PSSOptions{SaltLength: rsa.PSSSaltLengthEqualsHash, Hash: crypto.SHA256}
	case x509.SHA384WithRSAPSS:
		opts = &rsa.PSSOptions{SaltLength: rsa.PSSSaltLengthEqualsHash, Hash: crypto.SHA384}
	case x509.SHA512WithRSAPSS:
		opts = &rsa.PSSOptions{SaltLength: rsa.PSSSaltLengthEqualsHash, Hash: crypto.SHA512}
	case x509.PureEd25519:
		return key.Sign(rand, tbs, crypto.Hash(0))
	default:
		return nil, unsupported("CSR signature algorithm %v", alg)
	}
	h := opts.HashFunc().New()
	h.Write(tbs)
	return key.Sign(rand, h.Sum(nil), opts)
}
