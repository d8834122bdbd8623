package ca

import (
	"crypto/sha256"
	"crypto/x509"
	"encoding/asn1"
	"errors"
	"fmt"
	"strconv"
	"strings"

	"golang.org/x/crypto/cryptobyte"
	cbasn1 "golang.org/x/crypto/cryptobyte/asn1"
)

var (
	oidData       = asn1.ObjectIdentifier{1, 2, 840, 113549, 1, 7, 1}
	oidSignedData = asn1.ObjectIdentifier{1, 2, 840, 113549, 1, 7, 2}
)

// ErrNoCertificates is returned by CertsOnly when given no certificates.
var ErrNoCertificates = errors.New("ca: no certificates")

// CertsOnly encodes certs as a degenerate certs-only CMS SignedData (RFC 5652
// §5, RFC 8551 §3.2.2 "certs-only"; RFC 9148 Content-Format 281), DER:
// version 1, no digest algorithms, encapsulated id-data without content, the
// certificates in the given order, no signerInfos. The order is kept, rather
// than DER-sorted, because clients read the first certificate as theirs.
func CertsOnly(certs ...*x509.Certificate) ([]byte, error) {
	if len(certs) == 0 {
		return nil, ErrNoCertificates
	}
	for i, c := range certs {
		if c == nil || len(c.Raw) == 0 {
			return nil, fmt.Errorf("ca: certificate %d is empty", i)
		}
	}
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
				b.AddASN1(cbasn1.Tag(0).ContextSpecific().Constructed(), func(b *cryptobyte.Builder) {
					for _, c := range certs {
						b.AddBytes(c.Raw)
					}
				})
				b.AddASN1(cbasn1.SET, func(*cryptobyte.Builder) {}) // signerInfos
			})
		})
	})
	return b.Bytes()
}

// ParseCertsOnly decodes a certs-only SignedData as produced by CertsOnly
// (DER; other SignedData shapes are rejected) and returns its certificates in
// order.
func ParseCertsOnly(der []byte) ([]*x509.Certificate, error) {
	errMalformed := errors.New("ca: malformed certs-only SignedData")
	s := cryptobyte.String(der)
	var ci, content, sd, digests, encap, certs cryptobyte.String
	var ct, ect asn1.ObjectIdentifier
	var version int64
	if !s.ReadASN1(&ci, cbasn1.SEQUENCE) || !s.Empty() ||
		!ci.ReadASN1ObjectIdentifier(&ct) || !ct.Equal(oidSignedData) ||
		!ci.ReadASN1(&content, cbasn1.Tag(0).ContextSpecific().Constructed()) || !ci.Empty() ||
		!content.ReadASN1(&sd, cbasn1.SEQUENCE) || !content.Empty() ||
		!sd.ReadASN1Integer(&version) || version != 1 ||
		!sd.ReadASN1(&digests, cbasn1.SET) ||
		!sd.ReadASN1(&encap, cbasn1.SEQUENCE) || !encap.ReadASN1ObjectIdentifier(&ect) || !ect.Equal(oidData) ||
		!sd.ReadASN1(&certs, cbasn1.Tag(0).ContextSpecific().Constructed()) {
		return nil, errMalformed
	}
	var out []*x509.Certificate
	for !certs.Empty() {
		var c cryptobyte.String
		if !certs.ReadASN1Element(&c, cbasn1.SEQUENCE) {
			return nil, errMalformed
		}
		cert, err := x509.ParseCertificate(c)
		if err != nil {
			return nil, fmt.Errorf("ca: certs-only certificate %d: %w", len(out), err)
		}
		out = append(out, cert)
	}
	return out, nil
}

// subjectKeyID computes the key identifier of RFC 7093 §2 method 1: the
// leftmost 160 bits of the SHA-256 of the subjectPublicKey BIT STRING value.
func subjectKeyID(spki []byte) ([]byte, error) {
	s := cryptobyte.String(spki)
	var seq, alg cryptobyte.String
	var bits asn1.BitString
	if !s.ReadASN1(&seq, cbasn1.SEQUENCE) || !s.Empty() ||
		!seq.ReadASN1(&alg, cbasn1.SEQUENCE) || !seq.ReadASN1BitString(&bits) || !seq.Empty() {
		return nil, errors.New("ca: malformed subjectPublicKeyInfo")
	}
	sum := sha256.Sum256(bits.Bytes)
	return sum[:20], nil
}

// parseOID parses a dotted-decimal object identifier.
func parseOID(s string) (asn1.ObjectIdentifier, error) {
	parts := strings.Split(s, ".")
	if len(parts) < 2 {
		return nil, fmt.Errorf("bad OID %q", s)
	}
	oid := make(asn1.ObjectIdentifier, len(parts))
	for i, p := range parts {
		n, err := strconv.Atoi(p)
		if err != nil || p == "" || p[0] < '0' || p[0] > '9' || n < 0 || (i == 0 && n > 2) || (i == 1 && parts[0] != "2" && n > 39) {
			return nil, fmt.Errorf("bad OID %q", s)
		}
		oid[i] = n
	}
	return oid, nil
}
