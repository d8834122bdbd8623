package cms

import (
	"crypto"
	_ "crypto/sha256" // crypto.SHA256.New
	_ "crypto/sha512" // crypto.SHA384.New, crypto.SHA512.New
	"encoding/asn1"
	"fmt"
)

// Object identifiers, each with the RFC that assigns it.
var (
	// RFC 5652 §4, §5.1, §6.1.
	oidData          = asn1.ObjectIdentifier{1, 2, 840, 113549, 1, 7, 1}
	oidSignedData    = asn1.ObjectIdentifier{1, 2, 840, 113549, 1, 7, 2}
	oidEnvelopedData = asn1.ObjectIdentifier{1, 2, 840, 113549, 1, 7, 3}
	// RFC 5083 §2.1.
	oidAuthEnvelopedData = asn1.ObjectIdentifier{1, 2, 840, 113549, 1, 9, 16, 1, 23}
	// RFC 5958 §3: id-ct-KP-aKeyPackage.
	oidAsymmetricKeyPackage = asn1.ObjectIdentifier{2, 16, 840, 1, 101, 2, 1, 2, 78, 5}

	// RFC 5652 §11.1–§11.3 attributes.
	oidAttrContentType   = asn1.ObjectIdentifier{1, 2, 840, 113549, 1, 9, 3}
	oidAttrMessageDigest = asn1.ObjectIdentifier{1, 2, 840, 113549, 1, 9, 4}
	oidAttrSigningTime   = asn1.ObjectIdentifier{1, 2, 840, 113549, 1, 9, 5}
	// RFC 8551 §2.5.2 SMIMECapabilities, RFC 4108 §2.2.5 id-aa-decryptKeyID,
	// RFC 7030 §4.4.1.2 id-aa-asymmDecryptKeyID.
	oidAttrSMIMECapabilities = asn1.ObjectIdentifier{1, 2, 840, 113549, 1, 9, 15}
	oidAttrDecryptKeyID      = asn1.ObjectIdentifier{1, 2, 840, 113549, 1, 9, 16, 2, 37}
	oidAttrAsymmDecryptKeyID = asn1.ObjectIdentifier{1, 2, 840, 113549, 1, 9, 16, 2, 54}
	oidAttrChallengePassword = asn1.ObjectIdentifier{1, 2, 840, 113549, 1, 9, 7}
	oidHashSHA256            = asn1.ObjectIdentifier{2, 16, 840, 1, 101, 3, 4, 2, 1} // RFC 5754
	oidHashSHA384            = asn1.ObjectIdentifier{2, 16, 840, 1, 101, 3, 4, 2, 2}
	oidHashSHA512            = asn1.ObjectIdentifier{2, 16, 840, 1, 101, 3, 4, 2, 3}
	oidSigECDSAWithSHA256    = asn1.ObjectIdentifier{1, 2, 840, 10045, 4, 3, 2} // RFC 5758
	oidSigECDSAWithSHA384    = asn1.ObjectIdentifier{1, 2, 840, 10045, 4, 3, 3}
	oidSigECDSAWithSHA512    = asn1.ObjectIdentifier{1, 2, 840, 10045, 4, 3, 4}
	oidRSAEncryption         = asn1.ObjectIdentifier{1, 2, 840, 113549, 1, 1, 1} // RFC 8017
	oidSigSHA256WithRSA      = asn1.ObjectIdentifier{1, 2, 840, 113549, 1, 1, 11}
	oidSigSHA384WithRSA      = asn1.ObjectIdentifier{1, 2, 840, 113549, 1, 1, 12}
	oidSigSHA512WithRSA      = asn1.ObjectIdentifier{1, 2, 840, 113549, 1, 1, 13}
	oidRSAESOAEP             = asn1.ObjectIdentifier{1, 2, 840, 113549, 1, 1, 7} // RFC 4055 §4.1
	oidMGF1                  = asn1.ObjectIdentifier{1, 2, 840, 113549, 1, 1, 8}
	oidPSpecified            = asn1.ObjectIdentifier{1, 2, 840, 113549, 1, 1, 9}
	oidECPublicKey           = asn1.ObjectIdentifier{1, 2, 840, 10045, 2, 1} // RFC 5480
	oidCurveP256             = asn1.ObjectIdentifier{1, 2, 840, 10045, 3, 1, 7}
	oidCurveP384             = asn1.ObjectIdentifier{1, 3, 132, 0, 34}
	oidStdDHSHA256KDF        = asn1.ObjectIdentifier{1, 3, 132, 1, 11, 1} // RFC 5753 §7.1.4
	oidStdDHSHA384KDF        = asn1.ObjectIdentifier{1, 3, 132, 1, 11, 2}
	oidStdDHSHA512KDF        = asn1.ObjectIdentifier{1, 3, 132, 1, 11, 3}
	oidAES128Wrap            = asn1.ObjectIdentifier{2, 16, 840, 1, 101, 3, 4, 1, 5} // RFC 3565 §2.3.2
	oidAES192Wrap            = asn1.ObjectIdentifier{2, 16, 840, 1, 101, 3, 4, 1, 25}
	oidAES256Wrap            = asn1.ObjectIdentifier{2, 16, 840, 1, 101, 3, 4, 1, 45}
	oidAES128CBC             = asn1.ObjectIdentifier{2, 16, 840, 1, 101, 3, 4, 1, 2} // RFC 3565 §4.1
	oidAES256CBC             = asn1.ObjectIdentifier{2, 16, 840, 1, 101, 3, 4, 1, 42}
	oidAES128GCM             = asn1.ObjectIdentifier{2, 16, 840, 1, 101, 3, 4, 1, 6} // RFC 5084 §3.2
	oidAES256GCM             = asn1.ObjectIdentifier{2, 16, 840, 1, 101, 3, 4, 1, 46}
)

// ContentEncryption is a content-encryption algorithm: AES-CBC in an
// EnvelopedData (RFC 3565) or AES-GCM in an AuthEnvelopedData (RFC 5083,
// RFC 5084). The zero value means "the default", AES128CBC.
type ContentEncryption int

// The content-encryption algorithms offered. The key size is chosen by the
// caller; RFC 9148 servers match it to the generated key (AES-128 for P-256
// and RSA-2048/3072, AES-256 for P-384).
const (
	AES128CBC ContentEncryption = iota + 1 // id-aes128-CBC, EnvelopedData
	AES256CBC                              // id-aes256-CBC, EnvelopedData
	AES128GCM                              // id-aes128-GCM, AuthEnvelopedData
	AES256GCM                              // id-aes256-GCM, AuthEnvelopedData
)

var contentAlgs = [...]struct {
	oid    asn1.ObjectIdentifier
	keyLen int
	aead   bool
	name   string
}{
	AES128CBC: {oidAES128CBC, 16, false, "AES-128-CBC"},
	AES256CBC: {oidAES256CBC, 32, false, "AES-256-CBC"},
	AES128GCM: {oidAES128GCM, 16, true, "AES-128-GCM"},
	AES256GCM: {oidAES256GCM, 32, true, "AES-256-GCM"},
}

func (c ContentEncryption) valid() bool { return c >= AES128CBC && c <= AES256GCM }

// String returns the algorithm's usual name, e.g. "AES-128-GCM".
func (c ContentEncryption) String() string {
	if !c.valid() {
		return fmt.Sprintf("ContentEncryption(%d)", int(c))
	}
	return contentAlgs[c].name
}

// OID returns the algorithm's object identifier, nil for an invalid value.
func (c ContentEncryption) OID() asn1.ObjectIdentifier {
	if !c.valid() {
		return nil
	}
	return contentAlgs[c].oid
}

// KeySize returns the content-encryption key length in bytes (16 or 32).
func (c ContentEncryption) KeySize() int {
	if !c.valid() {
		return 0
	}
	return contentAlgs[c].keyLen
}

// Authenticated reports whether the algorithm is AES-GCM, carried in an
// AuthEnvelopedData rather than an EnvelopedData.
func (c ContentEncryption) Authenticated() bool { return c.valid() && contentAlgs[c].aead }

func contentEncryptionByOID(oid asn1.ObjectIdentifier) (ContentEncryption, bool) {
	for c := AES128CBC; c <= AES256GCM; c++ {
		if contentAlgs[c].oid.Equal(oid) {
			return c, true
		}
	}
	return 0, false
}

// wrapOIDForKeyLen returns the AES key-wrap algorithm (RFC 3394, RFC 3565
// §2.3.2) for a key-encryption key of n bytes.
func wrapOIDForKeyLen(n int) asn1.ObjectIdentifier {
	switch n {
	case 16:
		return oidAES128Wrap
	case 24:
		return oidAES192Wrap
	case 32:
		return oidAES256Wrap
	}
	return nil
}

// wrapKeyLen returns the key length of an AES key-wrap algorithm, 0 if oid is
// not one.
func wrapKeyLen(oid asn1.ObjectIdentifier) int {
	switch {
	case oid.Equal(oidAES128Wrap):
		return 16
	case oid.Equal(oidAES192Wrap):
		return 24
	case oid.Equal(oidAES256Wrap):
		return 32
	}
	return 0
}

// hashByOID maps the RFC 5754 digest algorithms this package accepts.
func hashByOID(oid asn1.ObjectIdentifier) (crypto.Hash, bool) {
	switch {
	case oid.Equal(oidHashSHA256):
		return crypto.SHA256, true
	case oid.Equal(oidHashSHA384):
		return crypto.SHA384, true
	case oid.Equal(oidHashSHA512):
		return crypto.SHA512, true
	}
	return 0, false
}

func hashOID(h crypto.Hash) asn1.ObjectIdentifier {
	switch h {
	case crypto.SHA256:
		return oidHashSHA256
	case crypto.SHA384:
		return oidHashSHA384
	case crypto.SHA512:
		return oidHashSHA512
	}
	return nil
}
