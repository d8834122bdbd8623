package wire

import (
	"crypto/x509"
	"encoding/asn1"
	"errors"
	"fmt"

	"golang.org/x/crypto/cryptobyte"
	cbasn1 "golang.org/x/crypto/cryptobyte/asn1"
)

var (
	oidData       = asn1.ObjectIdentifier{1, 2, 840, 113549, 1, 7, 1}
	oidSignedData = asn1.ObjectIdentifier{1, 2, 840, 113549, 1, 7, 2}
)

// ErrNoCertificates is returned by CertsOnly when given no certificates.
var ErrNoCertificates = errors.New("wire: no certificates")

// CertsOnly encodes certs as a degenerate certs-only CMS SignedData (RFC 5652
// §5, RFC 8551 §3.2.2 "certs-only"; RFC 9148 Content-Format 281), DER:
// version 1, no digest algorithms, encapsulated id-data without content, the
// certificates in the given order, no signerInfos. The order is kept, rather
// than DER-sorted, because clients read the first certificate as theirs.
func CertsOnly(certs ...*x509.Certificate) ([]byte, error) {
	if len(certs) == 0 {
		return nil, ErrNoCertificates
	}
	raw := make([][]byte, len(certs))
	for i, c := range certs {
		if c == nil || len(c.Raw) == 0 {
			return nil, fmt.Errorf("wire: certificate %d is empty", i)
		}
		raw[i] = c.Raw
	}
	return degenerateSignedData(0, raw)
}

// degenerateSignedData encodes a ContentInfo holding a SignedData without
// signers (RFC 5652 §5) whose certificates ([0]) or crls ([1], by field)
// field holds elems in order.
func degenerateSignedData(field uint8, elems [][]byte) ([]byte, error) {
	var b cryptobyte.Builder
	b.AddASN1(cbasn1.SEQUENCE, func(b *cryptobyte.Builder) { // ContentInfo
		b.AddASN1ObjectIdentifier(oidSignedData)
		b.AddASN1(cbasn1.Tag(0).ContextSpecific().Constructed(), func(b *cryptobyte.Builder) {
			b.AddASN1(cbasn1.SEQUENCE, func(b *cryptobyte.Builder) { // SignedData
				b.AddASN1Int64(1)
				b.AddASN1(cbasn1.SET, func(*cryptobyte.Builder) {}) // digestAlgorithms
				b.AddASN1(cbasn1.SEQUENCE, func(b *cryptobyte.Builder) {
					b.AddASN1ObjectIdentifier(oidData) // encapContentInfo, no eContent
				})
				b.AddASN1(cbasn1.Tag(field).ContextSpecific().Constructed(), func(b *cryptobyte.Builder) {
					for _, e := range elems {
						b.AddBytes(e)
					}
				})
				b.AddASN1(cbasn1.SET, func(*cryptobyte.Builder) {}) // signerInfos
			})
		})
	})
	return b.Bytes()
}

// ErrNoCRLs is returned by CRLsOnly when given no CRLs.
var ErrNoCRLs = errors.New("wire: no CRLs")

// CRLsOnly encodes DER CRLs as a degenerate certs-only CMS SignedData
// (RFC 5652 §5; RFC 8551 §3.6: the certs-only message also conveys CRLs;
// Content-Format 281): version 1, no digest algorithms, encapsulated id-data
// without content, no certificates, the CRLs in the crls field, no
// signerInfos. Each CRL must be one DER SEQUENCE; it is not parsed further.
func CRLsOnly(crls ...[]byte) ([]byte, error) {
	if len(crls) == 0 {
		return nil, ErrNoCRLs
	}
	for i, c := range crls {
		s := cryptobyte.String(c)
		var seq cryptobyte.String
		if !s.ReadASN1Element(&seq, cbasn1.SEQUENCE) || !s.Empty() {
			return nil, fmt.Errorf("wire: CRL %d is not one DER SEQUENCE", i)
		}
	}
	return degenerateSignedData(1, crls)
}

// MaxCertsOnly bounds the certificates ParseCertsOnly takes from one
// message; an EST chain is a handful of certificates.
const MaxCertsOnly = 64

func malformedCertsOnly(what string, args ...any) error {
	return malformed("pkcs7: "+what, args...)
}

// ParseCertsOnly decodes a DER PKCS#7/CMS "certs-only" message
// (application/pkcs7-mime; smime-type=certs-only, Content-Format 281,
// RFC 7030 §4.1.3, RFC 5652 §5.1): a ContentInfo holding a degenerate
// SignedData whose certificates field carries the certificates, as CertsOnly
// and other EST servers produce it. Signer infos and CRLs are ignored, as are
// CertificateChoices other than plain certificates. Only DER is accepted (RFC
// 9148 sends binary DER). The certificates are returned in payload order.
// Every error wraps ErrMalformedPayload.
func ParseCertsOnly(der []byte) ([]*x509.Certificate, error) {
	in := cryptobyte.String(der)
	var contentInfo, explicit, signedData cryptobyte.String
	var oid asn1.ObjectIdentifier
	if !in.ReadASN1(&contentInfo, cbasn1.SEQUENCE) || !in.Empty() {
		return nil, malformedCertsOnly("not a DER ContentInfo")
	}
	if !contentInfo.ReadASN1ObjectIdentifier(&oid) {
		return nil, malformedCertsOnly("bad content type")
	}
	if !oid.Equal(oidSignedData) {
		return nil, malformedCertsOnly("content type %s is not signedData", oid)
	}
	if !contentInfo.ReadASN1(&explicit, cbasn1.Tag(0).Constructed().ContextSpecific()) || !contentInfo.Empty() {
		return nil, malformedCertsOnly("missing [0] content")
	}
	if !explicit.ReadASN1(&signedData, cbasn1.SEQUENCE) || !explicit.Empty() {
		return nil, malformedCertsOnly("bad SignedData")
	}
	var version int64
	var digestAlgs, encap, certsField, crls, signerInfos cryptobyte.String
	var hasCerts bool
	if !signedData.ReadASN1Int64WithTag(&version, cbasn1.INTEGER) ||
		!signedData.ReadASN1(&digestAlgs, cbasn1.SET) ||
		!signedData.ReadASN1(&encap, cbasn1.SEQUENCE) {
		return nil, malformedCertsOnly("bad SignedData header")
	}
	if !signedData.ReadOptionalASN1(&certsField, &hasCerts, cbasn1.Tag(0).Constructed().ContextSpecific()) {
		return nil, malformedCertsOnly("bad certificates field")
	}
	if !signedData.ReadOptionalASN1(&crls, nil, cbasn1.Tag(1).Constructed().ContextSpecific()) ||
		!signedData.ReadASN1(&signerInfos, cbasn1.SET) || !signedData.Empty() {
		return nil, malformedCertsOnly("bad SignedData trailer")
	}
	var certs []*x509.Certificate
	for !certsField.Empty() {
		var raw cryptobyte.String
		var tag cbasn1.Tag
		if !certsField.ReadAnyASN1Element(&raw, &tag) {
			return nil, malformedCertsOnly("bad certificate element")
		}
		if tag != cbasn1.SEQUENCE {
			continue // attribute certificates and other choices: not used by EST
		}
		if len(certs) == MaxCertsOnly {
			return nil, malformedCertsOnly("more than %d certificates", MaxCertsOnly)
		}
		cert, err := x509.ParseCertificate(raw)
		if err != nil {
			return nil, fmt.Errorf("%w: pkcs7: certificate %d: %w", ErrMalformedPayload, len(certs), err)
		}
		certs = append(certs, cert)
	}
	return certs, nil
}
