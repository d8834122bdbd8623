package policy

import (
	"bytes"
	"crypto/sha256"
	"crypto/x509"
	"encoding/hex"
	"net/url"
	"strings"

	"golang.org/x/crypto/cryptobyte"
	cbasn1 "golang.org/x/crypto/cryptobyte/asn1"
)

// identity is what the requester's certificate says about it: the values a
// profile binds certificates to.
type identity struct {
	present bool // false for the local operator
	leaf    *x509.Certificate
	attrs   []nameAttr
	hmnRaw  [][]byte // hardwareModuleName GeneralNames of the leaf SAN, DER
	hmns    []HardwareModuleName
}

// newIdentity reads leaf's subject and SAN. Parts that do not parse are left
// out: a value the profile binds is then missing (CodeIdentityIncomplete).
func newIdentity(leaf *x509.Certificate, buf []nameAttr) identity {
	id := identity{present: true, leaf: leaf}
	if attrs, code, _ := parseName(leaf.RawSubject, buf); code == 0 {
		id.attrs = attrs
	}
	if v, ok := extValue(leaf.Extensions, OIDSubjectAltName); ok {
		var ebuf [8]sanEntry
		if entries, code, _ := parseSAN(v, ebuf[:0]); code == 0 {
			for _, e := range entries {
				if e.tag != tagOtherNameC {
					continue
				}
				if h, err := parseHardwareModuleName(cryptobyte.String(e.val)); err == nil {
					id.hmnRaw = append(id.hmnRaw, e.raw)
					id.hmns = append(id.hmns, h)
				}
			}
		}
	}
	return id
}

// attr returns the identity's attribute of type t, or nil.
func (id *identity) attr(t *attrType) *nameAttr {
	for i := range id.attrs {
		if id.attrs[i].typ == t {
			return &id.attrs[i]
		}
	}
	return nil
}

// text returns a textual attribute value that may appear in a name.
func (id *identity) text(t *attrType) (string, bool) {
	a := id.attr(t)
	if a == nil || (a.tag != cbasn1.PrintableString && a.tag != cbasn1.UTF8String) || badRune(a.val) != "" {
		return "", false
	}
	return string(a.val), true
}

// value returns the value of a template placeholder.
func (id *identity) value(ph placeholder) (string, bool) {
	switch ph {
	case phSerialNumber:
		return id.text(attrSerialNumber)
	case phCommonName:
		return id.text(attrCN)
	case phHWSerial:
		if len(id.hmns) > 0 && printableASCII(id.hmns[0].SerialNum) {
			return string(id.hmns[0].SerialNum), true
		}
	case phHWSerialHex:
		if len(id.hmns) > 0 {
			return hex.EncodeToString(id.hmns[0].SerialNum), true
		}
	}
	return "", false
}

// hasHMN reports whether the identity has hardwareModuleName h.
func (id *identity) hasHMN(h HardwareModuleName) bool {
	for _, x := range id.hmns {
		if x.Type.Equal(h.Type) && bytes.Equal(x.SerialNum, h.SerialNum) {
			return true
		}
	}
	return false
}

// IdentityOf returns the key under which the caller counts a requester's
// issuances and pending requests (Counters): for an IDevID the anchor and
// the device serialNumber (or, without one, the certificate fingerprint);
// for an operational certificate a digest of its subject, which renewals
// keep (RFC 7030 §4.2.2); "operator" for the local operator.
func IdentityOf(r Requester) string {
	if r.Kind == KindOperator || len(r.Chain) == 0 || r.Chain[0] == nil {
		return KindOperator
	}
	leaf := r.Chain[0]
	if r.Kind == KindOperational {
		sum := sha256.Sum256(leaf.RawSubject)
		return "operational/subject:" + hex.EncodeToString(sum[:16])
	}
	if sn := leaf.Subject.SerialNumber; sn != "" && len(sn) <= 64 && strings.Trim(sn,
		"abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ0123456789-._:") == "" {
		return "idevid/" + r.Anchor + "/sn:" + sn
	}
	sum := sha256.Sum256(leaf.Raw)
	return "idevid/" + r.Anchor + "/fp:" + hex.EncodeToString(sum[:])
}

// GeneralName tags as cryptobyte reads them (RFC 5280 §4.2.1.6).
var (
	tagOtherNameC = cbasn1.Tag(tagOtherName).ContextSpecific().Constructed()
	tagEmailP     = cbasn1.Tag(tagEmail).ContextSpecific()
	tagDNSP       = cbasn1.Tag(tagDNS).ContextSpecific()
	tagURIP       = cbasn1.Tag(tagURI).ContextSpecific()
	tagIPP        = cbasn1.Tag(tagIP).ContextSpecific()
)

// sanEntry is one GeneralName.
type sanEntry struct {
	tag cbasn1.Tag
	raw []byte // the whole GeneralName, DER
	val []byte // its content octets
}

// maxSANEntries bounds what parseSAN reads from one extension.
const maxSANEntries = 64

// parseSAN parses a SubjectAltName extension value (GeneralNames), appending
// to out.
func parseSAN(v []byte, out []sanEntry) ([]sanEntry, Code, string) {
	s := cryptobyte.String(v)
	var names cryptobyte.String
	if !s.ReadASN1(&names, cbasn1.SEQUENCE) || !s.Empty() {
		return out, CodeSANMalformed, "not GeneralNames"
	}
	if names.Empty() {
		return out, CodeSANMalformed, "empty GeneralNames"
	}
	for !names.Empty() {
		if len(out) == maxSANEntries {
			return out, CodeSANTooMany, "more than 64 entries"
		}
		var e sanEntry
		var el cryptobyte.String
		if !names.ReadAnyASN1Element(&el, &e.tag) {
			return out, CodeSANMalformed, "bad GeneralName"
		}
		e.raw = el
		var val cryptobyte.String
		if !el.ReadAnyASN1(&val, &e.tag) {
			return out, CodeSANMalformed, "bad GeneralName"
		}
		e.val = val
		out = append(out, e)
	}
	return out, 0, ""
}

// generalNameType names a GeneralName tag for details.
func generalNameType(t cbasn1.Tag) string {
	switch t {
	case tagOtherNameC:
		return "otherName"
	case tagEmailP:
		return "rfc822Name"
	case tagDNSP:
		return "dNSName"
	case cbasn1.Tag(3).ContextSpecific().Constructed():
		return "x400Address"
	case cbasn1.Tag(4).ContextSpecific().Constructed():
		return "directoryName"
	case cbasn1.Tag(5).ContextSpecific().Constructed():
		return "ediPartyName"
	case tagURIP:
		return "uniformResourceIdentifier"
	case tagIPP:
		return "iPAddress"
	case cbasn1.Tag(8).ContextSpecific():
		return "registeredID"
	}
	return "malformed GeneralName"
}

// validEmail accepts an rfc822Name mailbox (RFC 5280 §4.2.1.6): printable
// ASCII local part, one @, a valid domain name.
func validEmail(s string) bool {
	local, domain, ok := strings.Cut(s, "@")
	return ok && local != "" && len(s) <= 255 && printableASCII([]byte(local)) &&
		!strings.Contains(local, "@") && validDNSName(domain)
}

// validURI accepts an absolute URI of printable ASCII (RFC 3986).
func validURI(s string) bool {
	if len(s) > 1024 || !printableASCII([]byte(s)) {
		return false
	}
	u, err := url.Parse(s)
	return err == nil && u.Scheme != ""
}
