package policy

import (
	"bytes"
	"encoding/asn1"
	"strconv"
	"strings"
	"unicode"
	"unicode/utf8"

	"github.com/estca/estca/policy/der"
	"golang.org/x/crypto/cryptobyte"
	cbasn1 "golang.org/x/crypto/cryptobyte/asn1"
)

// attrType is a subject attribute type estca can put in certificates.
type attrType struct {
	name      string // short name used in configuration and reports
	long      string // X.520 name, also accepted in configuration
	oid       asn1.ObjectIdentifier
	der       []byte // OID content octets, for allocation-free comparison
	max       int    // upper bound in characters (RFC 5280 Appendix A)
	printable bool   // PrintableString only (RFC 5280 Appendix A)
}

// attrTypes are the subject attributes profiles may use. Bounds from RFC
// 5280 Appendix A (ub-*); dnQualifier, pseudonym and uid have no upper bound
// there and get one here.
var attrTypes = []*attrType{
	newAttrType("CN", "commonName", 64, false, 2, 5, 4, 3),
	newAttrType("serialNumber", "serialNumber", 64, true, 2, 5, 4, 5),
	newAttrType("C", "countryName", 2, true, 2, 5, 4, 6),
	newAttrType("L", "localityName", 128, false, 2, 5, 4, 7),
	newAttrType("ST", "stateOrProvinceName", 128, false, 2, 5, 4, 8),
	newAttrType("O", "organizationName", 64, false, 2, 5, 4, 10),
	newAttrType("OU", "organizationalUnitName", 64, false, 2, 5, 4, 11),
	newAttrType("title", "title", 64, false, 2, 5, 4, 12),
	newAttrType("dnQualifier", "dnQualifier", 64, true, 2, 5, 4, 46),
	newAttrType("pseudonym", "pseudonym", 128, false, 2, 5, 4, 65),
	newAttrType("UID", "userId", 64, false, 0, 9, 2342, 19200300, 100, 1, 1),
}

var (
	attrCN           = attrTypes[0]
	attrSerialNumber = attrTypes[1]
	attrCountry      = attrTypes[2]
)

func newAttrType(name, long string, max int, printable bool, arcs ...int) *attrType {
	oid := asn1.ObjectIdentifier(arcs)
	return &attrType{name: name, long: long, oid: oid, der: oidContent(oid), max: max, printable: printable}
}

// oidContent returns the content octets of the DER encoding of oid.
func oidContent(oid asn1.ObjectIdentifier) []byte {
	var b cryptobyte.Builder
	b.AddASN1ObjectIdentifier(oid)
	der := b.BytesOrPanic()
	return der[2:] // OIDs here are short: one tag and one length octet
}

// lookupAttrType finds an attribute type by short name, X.520 name (case
// insensitive) or dotted OID.
func lookupAttrType(s string) *attrType {
	for _, a := range attrTypes {
		if strings.EqualFold(s, a.name) || strings.EqualFold(s, a.long) || s == a.oid.String() {
			return a
		}
	}
	return nil
}

// attrTypeOf returns the known type whose OID content octets are der.
func attrTypeOf(der []byte) *attrType {
	for _, a := range attrTypes {
		if bytes.Equal(a.der, der) {
			return a
		}
	}
	return nil
}

// nameAttr is one AttributeTypeAndValue of a Name.
type nameAttr struct {
	typ *attrType  // nil when the type is not one of attrTypes
	oid []byte     // OID content octets
	tag cbasn1.Tag // value tag
	val []byte     // value content octets
	raw []byte     // the whole AttributeTypeAndValue, DER
}

// String returns the value as text (for PrintableString and UTF8String).
func (a *nameAttr) String() string { return string(a.val) }

// typeName names the attribute type for details.
func (a *nameAttr) typeName() string {
	if a.typ != nil {
		return a.typ.name
	}
	var oid asn1.ObjectIdentifier
	full := append([]byte{0x06, byte(len(a.oid))}, a.oid...)
	if len(a.oid) < 128 {
		if _, err := asn1.Unmarshal(full, &oid); err == nil {
			return oid.String()
		}
	}
	return "unknown attribute"
}

// maxNameAttrs bounds the attributes of a subject.
const maxNameAttrs = 16

// parseName parses a DER Name (RFC 5280 §4.1.2.4) into its attributes,
// appending to out. It refuses structural problems: malformed DER, empty or
// multi-valued RDNs, more than maxNameAttrs attributes.
func parseName(der []byte, out []nameAttr) ([]nameAttr, Code, string) {
	s := cryptobyte.String(der)
	var rdns cryptobyte.String
	if !s.ReadASN1(&rdns, cbasn1.SEQUENCE) || !s.Empty() {
		return out, CodeSubjectMalformed, "not a Name"
	}
	for !rdns.Empty() {
		var set cryptobyte.String
		if !rdns.ReadASN1(&set, cbasn1.SET) {
			return out, CodeSubjectMalformed, "bad RDN"
		}
		if set.Empty() {
			return out, CodeSubjectEmptyRDN, ""
		}
		var atv cryptobyte.String
		if !set.ReadASN1Element(&atv, cbasn1.SEQUENCE) {
			return out, CodeSubjectMalformed, "bad attribute"
		}
		if !set.Empty() {
			return out, CodeSubjectMultiValuedRDN, ""
		}
		if len(out) == maxNameAttrs {
			return out, CodeSubjectMalformed, "more than " + strconv.Itoa(maxNameAttrs) + " attributes"
		}
		a := nameAttr{raw: atv}
		var body, oid, val cryptobyte.String
		if !atv.ReadASN1(&body, cbasn1.SEQUENCE) || !body.ReadASN1(&oid, cbasn1.OBJECT_IDENTIFIER) ||
			len(oid) == 0 || !body.ReadAnyASN1(&val, &a.tag) || !body.Empty() {
			return out, CodeSubjectMalformed, "bad attribute"
		}
		a.oid, a.val = oid, val
		a.typ = attrTypeOf(a.oid)
		out = append(out, a)
	}
	return out, 0, ""
}

// checkValue validates one subject value: its string type (PrintableString,
// or UTF8String where RFC 5280 allows a DirectoryString), its characters (no
// control, bidi-override or non-characters, valid UTF-8) and its length (the
// RFC 5280 upper bound, in characters). Every problem found is reported.
func checkValue(t *attrType, tag cbasn1.Tag, val []byte, report func(Code, string)) {
	switch tag {
	case cbasn1.PrintableString:
		for _, c := range val {
			if !printableStringChar(c) {
				report(CodeSubjectCharacters, t.name+" has a character outside PrintableString")
				break
			}
		}
	case cbasn1.UTF8String:
		if t.printable {
			report(CodeSubjectEncoding, t.name+" must be a PrintableString (RFC 5280)")
		}
		if bad := badRune(val); bad != "" {
			report(CodeSubjectCharacters, t.name+" has "+bad)
		}
	default:
		report(CodeSubjectEncoding, t.name+" is neither PrintableString nor UTF8String")
		return
	}
	switch n := utf8.RuneCount(val); {
	case n == 0:
		report(CodeSubjectCharacters, t.name+" is empty")
	case n > t.max:
		report(CodeSubjectTooLong, t.name+" has "+strconv.Itoa(n)+" characters, at most "+strconv.Itoa(t.max))
	case t == attrCountry && n != 2:
		report(CodeSubjectValueNotAllowed, "C must be a two-letter country code")
	}
}

// printableStringChar reports whether c is in the PrintableString character
// set (X.680 §41.4).
func printableStringChar(c byte) bool {
	return 'a' <= c && c <= 'z' || 'A' <= c && c <= 'Z' || '0' <= c && c <= '9' ||
		strings.IndexByte(" '()+,-./:=?", c) >= 0
}

// badRune describes the first character of s that must not appear in a
// certificate name, or returns "": invalid UTF-8, C0/C1 controls and DEL
// (NUL, ESC: terminal escapes), bidirectional controls (text that displays
// differently from what it says) and non-characters.
func badRune(s []byte) string {
	for len(s) > 0 {
		r, n := utf8.DecodeRune(s)
		switch {
		case r == utf8.RuneError && n <= 1:
			return "invalid UTF-8"
		case unicode.IsControl(r):
			return "control character U+" + strconv.FormatInt(int64(r), 16)
		case r == 0x061c || r == 0x200e || r == 0x200f || 0x202a <= r && r <= 0x202e || 0x2066 <= r && r <= 0x2069:
			return "bidi control U+" + strconv.FormatInt(int64(r), 16)
		case r == 0xfffe || r == 0xffff:
			return "non-character"
		}
		s = s[n:]
	}
	return ""
}

// valueTag is the string type estca encodes a value of t with.
func valueTag(t *attrType) cbasn1.Tag {
	if t.printable {
		return cbasn1.PrintableString
	}
	return cbasn1.UTF8String
}

// encodeATV encodes an AttributeTypeAndValue holding v.
func encodeATV(t *attrType, v string) []byte {
	body := 2 + len(t.der) + der.HeaderLen(len(v)) + len(v)
	out := der.AppendHeader(make([]byte, 0, der.HeaderLen(body)+body), 0x30, body)
	out = append(der.AppendHeader(out, 0x06, len(t.der)), t.der...)
	return append(der.AppendHeader(out, byte(valueTag(t)), len(v)), v...)
}

// encodeName encodes a Name of single-valued RDNs from AttributeTypeAndValues.
func encodeName(atvs [][]byte) []byte {
	body := 0
	for _, a := range atvs {
		body += der.HeaderLen(len(a)) + len(a)
	}
	out := der.AppendHeader(make([]byte, 0, der.HeaderLen(body)+body), 0x30, body)
	for _, a := range atvs {
		out = append(der.AppendHeader(out, 0x31, len(a)), a...)
	}
	return out
}

// encodeSequence encodes a SEQUENCE of DER elements.
func encodeSequence(elems [][]byte) []byte {
	body := 0
	for _, e := range elems {
		body += len(e)
	}
	out := der.AppendHeader(make([]byte, 0, der.HeaderLen(body)+body), 0x30, body)
	for _, e := range elems {
		out = append(out, e...)
	}
	return out
}
