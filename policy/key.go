package policy

import (
	"crypto/ecdsa"
	"crypto/ed25519"
	"crypto/elliptic"
	"crypto/rsa"
	"crypto/x509"
	"encoding/asn1"
	"strconv"
	"strings"
)

// keyFamily groups key types that share key usages.
type keyFamily uint8

const (
	famECDSA keyFamily = iota + 1
	famRSA
	famEd25519
)

// keyType is a public key type estca issues certificates for.
type keyType struct {
	name     string
	family   keyFamily
	curve    elliptic.Curve        // ECDSA
	bits     int                   // RSA modulus size
	curveOID asn1.ObjectIdentifier // ECDSA namedCurve
	sigOID   asn1.ObjectIdentifier // the CSR signature algorithm that suits the key
}

// keyTypes are the key types profiles may accept, strongest-first within a
// family. Weaker ones (RSA below 2048 bits, P-224) are refused everywhere.
var keyTypes = []*keyType{
	{name: "ecdsa-p256", family: famECDSA, curve: elliptic.P256(), curveOID: oidP256, sigOID: oidECDSASHA256},
	{name: "ecdsa-p384", family: famECDSA, curve: elliptic.P384(), curveOID: oidP384, sigOID: oidECDSASHA384},
	{name: "ecdsa-p521", family: famECDSA, curve: elliptic.P521(), curveOID: oidP521, sigOID: oidECDSASHA512},
	{name: "rsa-2048", family: famRSA, bits: 2048, sigOID: oidSHA256RSA},
	{name: "rsa-3072", family: famRSA, bits: 3072, sigOID: oidSHA256RSA},
	{name: "rsa-4096", family: famRSA, bits: 4096, sigOID: oidSHA256RSA},
	{name: "ed25519", family: famEd25519, sigOID: oidEd25519},
}

func lookupKeyType(name string) *keyType {
	for _, k := range keyTypes {
		if k.name == name {
			return k
		}
	}
	return nil
}

// weakKeyTypeName reports whether name is a key type estca refuses as weak,
// for a precise configuration error.
func weakKeyTypeName(name string) bool {
	if name == "ecdsa-p224" || name == "ecdsa-p192" {
		return true
	}
	if bits, ok := strings.CutPrefix(name, "rsa-"); ok {
		n, err := strconv.Atoi(bits)
		return err == nil && n < 2048
	}
	return false
}

// rsaMinExponent is the smallest RSA public exponent accepted (CA/Browser
// Forum Baseline Requirements §6.1.6: odd, at least 65537).
const rsaMinExponent = 65537

// classifyKey returns the key type of pub, or 0 and a reason: CodeKeyWeak
// for keys below estca's floor (RSA < 2048 bits or a small or even exponent,
// P-224), CodeKeyTypeNotAllowed for keys estca does not issue for at all.
func classifyKey(pub any) (*keyType, Code, string) {
	switch k := pub.(type) {
	case *ecdsa.PublicKey:
		for _, t := range keyTypes {
			if t.curve != nil && t.curve == k.Curve {
				return t, 0, ""
			}
		}
		if k.Curve != nil && k.Curve.Params().BitSize < 256 {
			return nil, CodeKeyWeak, "ECDSA curve " + k.Curve.Params().Name
		}
		return nil, CodeKeyTypeNotAllowed, "ECDSA curve not supported"
	case *rsa.PublicKey:
		n := k.N.BitLen()
		if n < 2048 {
			return nil, CodeKeyWeak, "RSA-" + strconv.Itoa(n)
		}
		if k.E < rsaMinExponent || k.E%2 == 0 {
			return nil, CodeKeyWeak, "RSA public exponent " + strconv.Itoa(k.E)
		}
		for _, t := range keyTypes {
			if t.bits == n {
				return t, 0, ""
			}
		}
		return nil, CodeKeyTypeNotAllowed, "RSA-" + strconv.Itoa(n)
	case ed25519.PublicKey:
		return lookupKeyType("ed25519"), 0, ""
	}
	return nil, CodeKeyTypeNotAllowed, "unsupported public key algorithm"
}

// checkSignatureAlgorithm refuses CSR signature algorithms other than
// SHA-2 RSA (PKCS #1 v1.5 and PSS), SHA-2 ECDSA and Ed25519.
func checkSignatureAlgorithm(a x509.SignatureAlgorithm) (Code, string) {
	switch a {
	case x509.SHA256WithRSA, x509.SHA384WithRSA, x509.SHA512WithRSA,
		x509.SHA256WithRSAPSS, x509.SHA384WithRSAPSS, x509.SHA512WithRSAPSS,
		x509.ECDSAWithSHA256, x509.ECDSAWithSHA384, x509.ECDSAWithSHA512,
		x509.PureEd25519:
		return 0, ""
	case x509.MD2WithRSA, x509.MD5WithRSA, x509.SHA1WithRSA, x509.DSAWithSHA1, x509.ECDSAWithSHA1:
		return CodeCSRSignatureWeak, a.String()
	case x509.UnknownSignatureAlgorithm:
		return CodeCSRSignatureUnsupported, "unknown algorithm"
	}
	return CodeCSRSignatureUnsupported, a.String()
}

// KeyUsages are the key usages a profile grants, per key algorithm family
// (RFC 5280 §4.2.1.3, RFC 8813, RFC 8410 §5). A zero field means
// digitalSignature only. Usages impossible for the algorithm are
// configuration errors.
type KeyUsages struct {
	// ECDSA: digitalSignature, contentCommitment, keyAgreement.
	ECDSA x509.KeyUsage
	// RSA: digitalSignature, contentCommitment, keyEncipherment,
	// dataEncipherment.
	RSA x509.KeyUsage
	// Ed25519: digitalSignature, contentCommitment.
	Ed25519 x509.KeyUsage
}

// permittedUsage is what an end-entity key of each family may be used for.
func permittedUsage(f keyFamily) x509.KeyUsage {
	const sig = x509.KeyUsageDigitalSignature | x509.KeyUsageContentCommitment
	switch f {
	case famECDSA:
		return sig | x509.KeyUsageKeyAgreement
	case famRSA:
		return sig | x509.KeyUsageKeyEncipherment | x509.KeyUsageDataEncipherment
	}
	return sig
}

func (u KeyUsages) of(f keyFamily) x509.KeyUsage {
	var ku x509.KeyUsage
	switch f {
	case famECDSA:
		ku = u.ECDSA
	case famRSA:
		ku = u.RSA
	case famEd25519:
		ku = u.Ed25519
	}
	if ku == 0 {
		ku = x509.KeyUsageDigitalSignature
	}
	return ku
}

// keyUsageNames names the bits of a KeyUsage (RFC 5280 §4.2.1.3 order).
var keyUsageNames = []string{"digitalSignature", "contentCommitment", "keyEncipherment",
	"dataEncipherment", "keyAgreement", "keyCertSign", "cRLSign", "encipherOnly", "decipherOnly"}

// keyUsageString names the bits of ku, comma separated.
func keyUsageString(ku x509.KeyUsage) string {
	var parts []string
	for i, n := range keyUsageNames {
		if ku&(1<<i) != 0 {
			parts = append(parts, n)
		}
	}
	return strings.Join(parts, ",")
}

// ParseKeyUsage returns the bit of a key usage named as in RFC 5280
// ("digitalSignature", "keyAgreement", …), for configuration decoding.
func ParseKeyUsage(name string) (x509.KeyUsage, bool) {
	for i, n := range keyUsageNames {
		if strings.EqualFold(n, name) {
			return 1 << i, true
		}
	}
	return 0, false
}

func familyName(f keyFamily) string {
	switch f {
	case famECDSA:
		return "ECDSA"
	case famRSA:
		return "RSA"
	}
	return "Ed25519"
}
