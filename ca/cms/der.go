package cms

import (
	"bytes"
	"crypto/x509"
	"encoding/asn1"
	"slices"

	"github.com/estca/estca/policy/der"
	"golang.org/x/crypto/cryptobyte"
	cbasn1 "golang.org/x/crypto/cryptobyte/asn1"
)

// DER tags used in the structures this package builds and parses.
var (
	tagExplicit0 = cbasn1.Tag(0).ContextSpecific().Constructed() // [0] EXPLICIT / constructed IMPLICIT
	tagExplicit1 = cbasn1.Tag(1).ContextSpecific().Constructed()
	tagExplicit2 = cbasn1.Tag(2).ContextSpecific().Constructed()
	tagImplicit0 = cbasn1.Tag(0).ContextSpecific() // [0] IMPLICIT primitive (OCTET STRING)
)

// Bounds on the counts inside a message: far above what a key package or a
// CSR carries, low enough that a hostile input cannot make the parser work
// much.
const (
	maxRecipients   = 16
	maxCertificates = 16
	maxAttributes   = 64
	maxAttrValues   = 16
	maxCapabilities = 32
	maxKeyIDLen     = 64
)

// algID is a parsed AlgorithmIdentifier (RFC 5280 §4.1.1.2).
type algID struct {
	raw    []byte // the whole element, tag included
	oid    asn1.ObjectIdentifier
	params []byte // the parameters element, tag included; nil when absent
}

func readAlgID(s *cryptobyte.String, where string) (algID, error) {
	var a algID
	var raw, seq cryptobyte.String
	if !s.ReadASN1Element(&raw, cbasn1.SEQUENCE) {
		return a, malformed(where, "want an AlgorithmIdentifier SEQUENCE")
	}
	a.raw = raw
	if !raw.ReadASN1(&seq, cbasn1.SEQUENCE) || !seq.ReadASN1ObjectIdentifier(&a.oid) {
		return a, malformed(where, "bad algorithm OID")
	}
	if !seq.Empty() {
		var p cryptobyte.String
		var tag cbasn1.Tag
		if !seq.ReadAnyASN1Element(&p, &tag) || !seq.Empty() {
			return a, malformed(where, "bad algorithm parameters")
		}
		a.params = p
	}
	return a, nil
}

var derNull = []byte{0x05, 0x00}

// noParams reports whether the parameters are absent.
func (a algID) noParams() bool { return a.params == nil }

// nullOrNoParams reports whether the parameters are absent or NULL, the two
// encodings RFC 4055 §2.1 and RFC 5754 §2 require receivers to accept.
func (a algID) nullOrNoParams() bool { return a.params == nil || bytes.Equal(a.params, derNull) }

// addAlgID adds an AlgorithmIdentifier with absent parameters, or with NULL
// when null is set.
func addAlgID(b *cryptobyte.Builder, oid asn1.ObjectIdentifier, null bool) {
	b.AddASN1(cbasn1.SEQUENCE, func(b *cryptobyte.Builder) {
		b.AddASN1ObjectIdentifier(oid)
		if null {
			b.AddASN1NULL()
		}
	})
}

// attribute is one Attribute (RFC 5652 §5.3): a type and its values, each
// value an undecoded DER element.
type attribute struct {
	oid    asn1.ObjectIdentifier
	values []cryptobyte.String
}

// readAttributes parses the contents of a SET OF Attribute. It refuses
// duplicate attribute types (RFC 5652 §5.3 requires content-type and
// message-digest to occur once; RFC 2986 attributes are unique by type).
func readAttributes(set cryptobyte.String, where string) ([]attribute, error) {
	var attrs []attribute
	for !set.Empty() {
		if len(attrs) == maxAttributes {
			return nil, tooLarge("%s: more than %d attributes", where, maxAttributes)
		}
		var attr, values cryptobyte.String
		var a attribute
		if !set.ReadASN1(&attr, cbasn1.SEQUENCE) || !attr.ReadASN1ObjectIdentifier(&a.oid) ||
			!attr.ReadASN1(&values, cbasn1.SET) || !attr.Empty() {
			return nil, malformed(where, "bad Attribute")
		}
		for !values.Empty() {
			if len(a.values) == maxAttrValues {
				return nil, tooLarge("%s: more than %d attribute values", where, maxAttrValues)
			}
			var v cryptobyte.String
			var tag cbasn1.Tag
			if !values.ReadAnyASN1Element(&v, &tag) {
				return nil, malformed(where, "bad attribute value")
			}
			a.values = append(a.values, v)
		}
		for _, prev := range attrs {
			if prev.oid.Equal(a.oid) {
				return nil, malformed(where, "attribute "+a.oid.String()+" occurs twice")
			}
		}
		attrs = append(attrs, a)
	}
	return attrs, nil
}

// single returns the attribute of type oid, which must have exactly one value
// (RFC 5652 §11); ok is false when the attribute is absent.
func single(attrs []attribute, oid asn1.ObjectIdentifier, where string) (v cryptobyte.String, ok bool, err error) {
	for _, a := range attrs {
		if !a.oid.Equal(oid) {
			continue
		}
		if len(a.values) != 1 {
			return nil, false, malformed(where, "attribute "+oid.String()+" must have one value")
		}
		return a.values[0], true, nil
	}
	return nil, false, nil
}

// derSet encodes a SET OF with the given pre-encoded elements sorted as DER
// requires (X.690 §11.6). tag is the SET tag or an IMPLICIT replacement.
func derSet(tag cbasn1.Tag, elems [][]byte) ([]byte, error) {
	sorted := slices.Clone(elems)
	slices.SortFunc(sorted, bytes.Compare)
	var b cryptobyte.Builder
	b.AddASN1(tag, func(b *cryptobyte.Builder) {
		for _, e := range sorted {
			b.AddBytes(e)
		}
	})
	return b.Bytes()
}

// encodeAttribute encodes an Attribute with one value.
func encodeAttribute(oid asn1.ObjectIdentifier, value func(*cryptobyte.Builder)) ([]byte, error) {
	var b cryptobyte.Builder
	b.AddASN1(cbasn1.SEQUENCE, func(b *cryptobyte.Builder) {
		b.AddASN1ObjectIdentifier(oid)
		b.AddASN1(cbasn1.SET, value)
	})
	return b.Bytes()
}

// issuerAndSerial encodes IssuerAndSerialNumber (RFC 5652 §10.2.4) for cert.
func issuerAndSerial(cert *x509.Certificate) ([]byte, error) {
	var b cryptobyte.Builder
	b.AddASN1(cbasn1.SEQUENCE, func(b *cryptobyte.Builder) {
		b.AddBytes(cert.RawIssuer)
		b.AddASN1BigInt(cert.SerialNumber)
	})
	return b.Bytes()
}

// matchesIssuerAndSerial reports whether the IssuerAndSerialNumber element
// ias (tag included) names cert. Names are compared as DER bytes.
func matchesIssuerAndSerial(ias []byte, cert *x509.Certificate) bool {
	if cert == nil || cert.SerialNumber == nil {
		return false
	}
	want, err := issuerAndSerial(cert)
	return err == nil && bytes.Equal(ias, want)
}

// readIssuerAndSerial reads an IssuerAndSerialNumber element and checks its
// shape (a Name SEQUENCE and an INTEGER); it returns the whole element.
func readIssuerAndSerial(s *cryptobyte.String, where string) ([]byte, error) {
	var raw, elem, seq, name cryptobyte.String
	var serial []byte
	if !s.ReadASN1Element(&raw, cbasn1.SEQUENCE) {
		return nil, malformed(where, "bad IssuerAndSerialNumber")
	}
	elem = raw
	if !elem.ReadASN1(&seq, cbasn1.SEQUENCE) ||
		!seq.ReadASN1Element(&name, cbasn1.SEQUENCE) || !seq.ReadASN1Element((*cryptobyte.String)(&serial), cbasn1.INTEGER) ||
		!seq.Empty() {
		return nil, malformed(where, "bad IssuerAndSerialNumber")
	}
	return raw, nil
}

// node is a DER element assembled into one exactly sized buffer: used for
// the structures that contain private key material, so that no partial copy
// is left behind in a grown and abandoned buffer (see zero).
type node struct {
	tag     byte   // 0: raw is a complete pre-encoded element
	raw     []byte // the pre-encoded element when tag == 0
	kids    []node // the contents of a constructed element
	content int    // length of the contents
}

func derRaw(b []byte) node { return node{raw: b} }

func derNode(tag byte, kids ...node) node {
	n := node{tag: tag, kids: kids}
	for _, k := range kids {
		n.content += k.size()
	}
	return n
}

func (n node) size() int {
	if n.tag == 0 {
		return len(n.raw)
	}
	return der.HeaderLen(n.content) + n.content
}

// header returns the tag and length octets of a constructed node.
func (n node) header() []byte { return der.AppendHeader(nil, n.tag, n.content) }

func (n node) appendTo(b []byte) []byte {
	if n.tag == 0 {
		return append(b, n.raw...)
	}
	b = der.AppendHeader(b, n.tag, n.content)
	for _, k := range n.kids {
		b = k.appendTo(b)
	}
	return b
}

// encode writes the element into a new buffer of exactly its size.
func (n node) encode() []byte {
	return n.appendTo(make([]byte, 0, n.size()))
}

// zero overwrites b, for buffers that held key material.
func zero(b []byte) { clear(b) }
