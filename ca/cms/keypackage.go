package cms

import (
	"golang.org/x/crypto/cryptobyte"
	cbasn1 "golang.org/x/crypto/cryptobyte/asn1"
)

// AsymmetricKeyPackage, RFC 5958 §2:
//
//	AsymmetricKeyPackage ::= SEQUENCE SIZE (1..MAX) OF OneAsymmetricKey
//	OneAsymmetricKey ::= SEQUENCE {
//	  version Version, privateKeyAlgorithm PrivateKeyAlgorithmIdentifier,
//	  privateKey PrivateKey, attributes [0] Attributes OPTIONAL, ...,
//	  [[2: publicKey [1] PublicKey OPTIONAL ]], ... }
//
// A PKCS#8 PrivateKeyInfo (RFC 5208) is a version-0 OneAsymmetricKey, so the
// package this package builds is the PKCS#8 DER inside one SEQUENCE.

// MaxPrivateKeySize bounds the PKCS#8 key put into or taken out of a key
// package: an RSA-4096 PrivateKeyInfo is about 2.4 KiB.
const MaxPrivateKeySize = 8 << 10

// checkOneAsymmetricKey checks that der is exactly one OneAsymmetricKey
// (PKCS#8 PrivateKeyInfo or its RFC 5958 v2 form), without copying or
// decoding the key itself.
func checkOneAsymmetricKey(der []byte, where string) error {
	if len(der) > MaxPrivateKeySize {
		return tooLarge("%s: private key of %d bytes", where, len(der))
	}
	s := cryptobyte.String(der)
	var key, priv cryptobyte.String
	var version int64
	if !s.ReadASN1(&key, cbasn1.SEQUENCE) || !s.Empty() {
		return malformed(where, "want one OneAsymmetricKey SEQUENCE")
	}
	if !key.ReadASN1Integer(&version) || (version != 0 && version != 1) {
		return malformed(where, "version must be 0 or 1")
	}
	if _, err := readAlgID(&key, where+".privateKeyAlgorithm"); err != nil {
		return err
	}
	if !key.ReadASN1(&priv, cbasn1.OCTET_STRING) || len(priv) == 0 {
		return malformed(where, "bad privateKey OCTET STRING")
	}
	if !key.SkipOptionalASN1(tagExplicit0) ||
		!key.SkipOptionalASN1(cbasn1.Tag(1).ContextSpecific()) || !key.Empty() {
		return malformed(where, "unexpected fields after privateKey")
	}
	return nil
}

// keyPackageNode wraps a checked PKCS#8 key into an AsymmetricKeyPackage.
func keyPackageNode(pkcs8 []byte) node {
	return derNode(0x30, derRaw(pkcs8))
}

// parseKeyPackage returns the single OneAsymmetricKey of an
// AsymmetricKeyPackage (aliasing der). Packages with more than one key are
// refused: an EST server-generated key response carries one.
func parseKeyPackage(der []byte) ([]byte, error) {
	s := cryptobyte.String(der)
	var seq, key cryptobyte.String
	if !s.ReadASN1(&seq, cbasn1.SEQUENCE) || !s.Empty() {
		return nil, malformed("AsymmetricKeyPackage", "want one SEQUENCE")
	}
	if !seq.ReadASN1Element(&key, cbasn1.SEQUENCE) {
		return nil, malformed("AsymmetricKeyPackage", "no OneAsymmetricKey")
	}
	if !seq.Empty() {
		return nil, unsupported("AsymmetricKeyPackage with more than one key")
	}
	if err := checkOneAsymmetricKey(key, "OneAsymmetricKey"); err != nil {
		return nil, err
	}
	return key, nil
}
