package policy

import (
	"crypto/x509/pkix"
	"encoding/asn1"
	"fmt"
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

// defaultKeyTypes apply when Profile.KeyTypes is empty.
var defaultKeyTypes = []string{"ecdsa-p256", "ecdsa-p384"}

// DefaultMaxSANs applies when SANPolicy.MaxNames is zero.
const DefaultMaxSANs = 8

// KnownKeyType reports whether name is a key type that Profile.KeyTypes
// accepts: "ecdsa-p256", "ecdsa-p384", "ecdsa-p521",
// "rsa-2048", "rsa-3072", "rsa-4096" or "ed25519".
func KnownKeyType(name string) bool { return lookupKeyType(name) != nil }

// KeyTypeOf names the type of a public key as in Profile.KeyTypes, or returns
// "" for a key type estca does not issue for (including weak keys).
func KeyTypeOf(pub any) string {
	if t, _, _ := classifyKey(pub); t != nil {
		return t.name
	}
	return ""
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
