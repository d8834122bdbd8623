package policy

import (
	"bytes"
	"crypto/x509"
	"crypto/x509/pkix"
	"encoding/asn1"
	"fmt"
	"net/url"
	"slices"
	"strings"

	"golang.org/x/crypto/cryptobyte"
	cbasn1 "golang.org/x/crypto/cryptobyte/asn1"
)

// Object identifiers used by the CSR rules.
var (
	// OIDSubjectAltName is id-ce-subjectAltName (RFC 5280 §4.2.1.6).
	OIDSubjectAltName = asn1.ObjectIdentifier{2, 5, 29, 17}
	// OIDBasicConstraints is id-ce-basicConstraints (RFC 5280 §4.2.1.9).
	OIDBasicConstraints = asn1.ObjectIdentifier{2, 5, 29, 19}
	// OIDHardwareModuleName is id-on-hardwareModuleName (RFC 4108 §5).
	OIDHardwareModuleName = asn1.ObjectIdentifier{1, 3, 6, 1, 5, 5, 7, 8, 4}
)

// DefaultKeyTypes apply when Rules.KeyTypes is empty.
var defaultKeyTypes = []string{"ecdsa-p256", "ecdsa-p384"}

// DefaultMaxSANs applies when Rules.MaxSANs is zero.
const DefaultMaxSANs = 8

// Rules are the CSR rules of a certificate profile.
type Rules struct {
	// KeyTypes lists the accepted public key types (see KnownKeyType); empty
	// means "ecdsa-p256" and "ecdsa-p384".
	KeyTypes []string
	// AllowSAN lets a SubjectAltName extension with DNS, IP, URI, email and
	// otherName hardwareModuleName entries through; when false a CSR carrying
	// a SubjectAltName is rejected.
	AllowSAN bool
	// MaxSANs bounds the number of SAN entries; zero means DefaultMaxSANs.
	MaxSANs int
}

// KnownKeyType reports whether name is a key type that Rules.KeyTypes and
// Profile.KeyTypes accept: "ecdsa-p256", "ecdsa-p384", "ecdsa-p521",
// "rsa-2048", "rsa-3072", "rsa-4096" or "ed25519".
func KnownKeyType(name string) bool { return lookupKeyType(name) != nil }

// KeyTypeOf names the type of a public key as in Rules.KeyTypes, or returns
// "" for a key type estca does not issue for (including weak keys).
func KeyTypeOf(pub any) string {
	if t, _, _ := classifyKey(pub); t != nil {
		return t.name
	}
	return ""
}

// CheckCSR applies the rules to a parsed request whose signature the caller
// has already checked: allowed key type, a subject commonName, the SAN rules,
// and no request for a CA certificate. The error is an *Error wrapping
// ErrRejected.
func CheckCSR(csr *x509.CertificateRequest, r Rules) error {
	kinds := r.KeyTypes
	if len(kinds) == 0 {
		kinds = defaultKeyTypes
	}
	if kt := KeyTypeOf(csr.PublicKey); kt == "" || !slices.Contains(kinds, kt) {
		return reject("key type not allowed")
	}
	if csr.Subject.CommonName == "" {
		return reject("subject commonName missing")
	}
	var san []byte
	for _, e := range csr.Extensions {
		switch {
		case e.Id.Equal(OIDBasicConstraints):
			if isCA(e.Value) {
				return reject("CA certificate requested")
			}
		case e.Id.Equal(OIDSubjectAltName):
			if san != nil {
				return reject("duplicate SAN extension")
			}
			san = e.Value
			if san == nil {
				san = []byte{}
			}
		}
	}
	if san == nil {
		return nil
	}
	if !r.AllowSAN {
		return reject("SAN not allowed by profile")
	}
	max := r.MaxSANs
	if max <= 0 {
		max = DefaultMaxSANs
	}
	return checkSAN(san, max)
}

// isCA reports whether a BasicConstraints value asserts cA; a malformed value
// counts as a CA request.
func isCA(v []byte) bool {
	s := cryptobyte.String(v)
	var seq cryptobyte.String
	if !s.ReadASN1(&seq, cbasn1.SEQUENCE) || !s.Empty() {
		return true
	}
	if seq.PeekASN1Tag(cbasn1.BOOLEAN) {
		var ca bool
		if !seq.ReadASN1Boolean(&ca) {
			return true
		}
		return ca
	}
	return false
}

// GeneralName tags (RFC 5280 §4.2.1.6).
const (
	tagOtherName = 0
	tagEmail     = 1
	tagDNS       = 2
	tagURI       = 6
	tagIP        = 7
)

func checkSAN(v []byte, max int) error {
	s := cryptobyte.String(v)
	var names cryptobyte.String
	if !s.ReadASN1(&names, cbasn1.SEQUENCE) || !s.Empty() {
		return reject("malformed SAN")
	}
	n := 0
	for !names.Empty() {
		var gn cryptobyte.String
		var tag cbasn1.Tag
		if !names.ReadAnyASN1(&gn, &tag) {
			return reject("malformed SAN")
		}
		n++
		if n > max {
			return reject("too many SAN entries")
		}
		switch tag {
		case cbasn1.Tag(tagOtherName).ContextSpecific().Constructed():
			if _, err := parseHardwareModuleName(gn); err != nil {
				return err
			}
		case cbasn1.Tag(tagEmail).ContextSpecific():
			if !printableASCII(gn) || strings.Count(string(gn), "@") != 1 {
				return reject("bad email SAN")
			}
		case cbasn1.Tag(tagDNS).ContextSpecific():
			if !validDNSName(string(gn)) {
				return reject("bad DNS SAN")
			}
		case cbasn1.Tag(tagURI).ContextSpecific():
			u, err := url.Parse(string(gn))
			if !printableASCII(gn) || err != nil || u.Scheme == "" {
				return reject("bad URI SAN")
			}
		case cbasn1.Tag(tagIP).ContextSpecific():
			if len(gn) != 4 && len(gn) != 16 {
				return reject("bad IP SAN")
			}
		default:
			return reject("SAN type not allowed")
		}
	}
	if n == 0 {
		return reject("empty SAN")
	}
	return nil
}

// HardwareModuleName is the RFC 4108 §5 otherName that names a device by its
// hardware type and serial number.
type HardwareModuleName struct {
	Type      asn1.ObjectIdentifier
	SerialNum []byte
}

// HardwareModuleNames returns the hardwareModuleName entries of a DER
// SubjectAltName extension value.
func HardwareModuleNames(san []byte) ([]HardwareModuleName, error) {
	s := cryptobyte.String(san)
	var names cryptobyte.String
	if !s.ReadASN1(&names, cbasn1.SEQUENCE) || !s.Empty() {
		return nil, reject("malformed SAN")
	}
	var out []HardwareModuleName
	for !names.Empty() {
		var gn cryptobyte.String
		var tag cbasn1.Tag
		if !names.ReadAnyASN1(&gn, &tag) {
			return nil, reject("malformed SAN")
		}
		if tag != cbasn1.Tag(tagOtherName).ContextSpecific().Constructed() {
			continue
		}
		h, err := parseHardwareModuleName(gn)
		if err != nil {
			return nil, err
		}
		out = append(out, h)
	}
	return out, nil
}

// parseHardwareModuleName parses the body of an otherName
// (type-id OID, [0] EXPLICIT value) and accepts only hardwareModuleName.
func parseHardwareModuleName(on cryptobyte.String) (HardwareModuleName, error) {
	var typeID asn1.ObjectIdentifier
	var val, seq cryptobyte.String
	if !on.ReadASN1ObjectIdentifier(&typeID) {
		return HardwareModuleName{}, reject("malformed otherName")
	}
	if !typeID.Equal(OIDHardwareModuleName) {
		return HardwareModuleName{}, reject("otherName type not allowed")
	}
	var h HardwareModuleName
	var serial []byte
	if !on.ReadASN1(&val, cbasn1.Tag(0).ContextSpecific().Constructed()) || !on.Empty() ||
		!val.ReadASN1(&seq, cbasn1.SEQUENCE) || !val.Empty() ||
		!seq.ReadASN1ObjectIdentifier(&h.Type) ||
		!seq.ReadASN1Bytes(&serial, cbasn1.OCTET_STRING) || !seq.Empty() || len(serial) == 0 {
		return HardwareModuleName{}, reject("malformed hardwareModuleName")
	}
	h.SerialNum = serial
	return h, nil
}

func printableASCII(b []byte) bool {
	if len(b) == 0 {
		return false
	}
	for _, c := range b {
		if c <= ' ' || c > '~' {
			return false
		}
	}
	return true
}

// validDNSName accepts a preferred-syntax host name (RFC 1034 §3.5, RFC 5280
// §4.2.1.6); wildcards are not issued.
func validDNSName(s string) bool {
	if s == "" || len(s) > 253 {
		return false
	}
	for _, label := range strings.Split(s, ".") {
		if label == "" || len(label) > 63 || label[0] == '-' || label[len(label)-1] == '-' {
			return false
		}
		for i := 0; i < len(label); i++ {
			c := label[i]
			if !(c >= 'a' && c <= 'z' || c >= 'A' && c <= 'Z' || c >= '0' && c <= '9' || c == '-') {
				return false
			}
		}
	}
	return true
}

// CheckRenewal enforces RFC 7030 §4.2.2: the re-enrollment CSR's Subject and
// SubjectAltName must be identical to those of cur, the certificate the client
// authenticated with. Both are compared as DER. The error is an *Error
// wrapping ErrRejected.
func CheckRenewal(cur *x509.Certificate, csr *x509.CertificateRequest) error {
	if cur == nil || csr == nil {
		return reject("nothing to renew")
	}
	if !bytes.Equal(cur.RawSubject, csr.RawSubject) {
		return reject("subject differs from current certificate")
	}
	a, aok := extValue(cur.Extensions, OIDSubjectAltName)
	b, bok := extValue(csr.Extensions, OIDSubjectAltName)
	if aok != bok || !bytes.Equal(a, b) {
		return reject("SAN differs from current certificate")
	}
	return nil
}

func extValue(exts []pkix.Extension, id asn1.ObjectIdentifier) ([]byte, bool) {
	for _, e := range exts {
		if e.Id.Equal(id) {
			return e.Value, true
		}
	}
	return nil, false
}

// String returns "hwType:hex(serial)" for logs.
func (h HardwareModuleName) String() string {
	return fmt.Sprintf("%s:%x", h.Type, h.SerialNum)
}
