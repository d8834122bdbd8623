package cms

import (
	"bytes"
	"crypto"
	"crypto/ecdh"
	"crypto/ecdsa"
	"crypto/rsa"
	"crypto/x509"
	"encoding/asn1"
	"errors"
	"fmt"
	"io"
)

// RecipientKind is the RecipientInfo choice of RFC 5652 §6.2 used for a
// recipient.
type RecipientKind int

// The recipient kinds this package builds and decrypts.
const (
	// RecipientKEK is KEKRecipientInfo (§6.2.3): the content-encryption key
	// wrapped with AES key wrap (RFC 3394) under a pre-shared AES key named
	// by a key identifier (RFC 7030 §4.4.1.1, DecryptKeyIdentifier).
	RecipientKEK RecipientKind = iota + 1
	// RecipientKeyTrans is KeyTransRecipientInfo (§6.2.1) with RSAES-OAEP,
	// SHA-256 and MGF1-SHA-256 (RFC 8017, RFC 4055 §4.1).
	RecipientKeyTrans
	// RecipientKeyAgree is KeyAgreeRecipientInfo (§6.2.2): ephemeral-static
	// ECDH, dhSinglePass-stdDH-sha256kdf-scheme and AES key wrap (RFC 5753
	// §3.1).
	RecipientKeyAgree
)

func (k RecipientKind) String() string {
	switch k {
	case RecipientKEK:
		return "kekri"
	case RecipientKeyTrans:
		return "ktri"
	case RecipientKeyAgree:
		return "kari"
	}
	return fmt.Sprintf("RecipientKind(%d)", int(k))
}

// Recipient is the one party an EnvelopedData is encrypted for. Make it
// with NewKEKRecipient, NewCertificateRecipient or NewPublicKeyRecipient.
// It is immutable and safe for concurrent use (if its KEKWrapper is).
type Recipient struct {
	kind  RecipientKind
	kekID []byte
	kek   KEKWrapper
	rsa   *rsa.PublicKey
	ec    *ecdh.PublicKey
	ias   []byte // IssuerAndSerialNumber DER, when identified by certificate
	ski   []byte // subjectKeyIdentifier, when identified by key identifier
	ukm   []byte // KeyAgreeRecipientInfo user keying material; set by tests only
}

// Kind returns the RecipientInfo choice the recipient gets.
func (r *Recipient) Kind() RecipientKind { return r.kind }

// NewKEKRecipient returns a KEKRecipientInfo recipient: keyID is the
// KEKIdentifier (the DecryptKeyIdentifier of the request), kek wraps the
// content-encryption key under the pre-shared key it names.
func NewKEKRecipient(keyID []byte, kek KEKWrapper) (*Recipient, error) {
	if len(keyID) == 0 || len(keyID) > maxKeyIDLen {
		return nil, fmt.Errorf("cms: KEK identifier must be 1 to %d bytes", maxKeyIDLen)
	}
	if kek == nil || wrapKeyLen(kek.Algorithm()) == 0 {
		return nil, errors.New("cms: KEK wrapper must use id-aes128-wrap, id-aes192-wrap or id-aes256-wrap")
	}
	return &Recipient{kind: RecipientKEK, kekID: bytes.Clone(keyID), kek: kek}, nil
}

// NewCertificateRecipient returns the recipient for cert's public key: RSA
// (at least 2048 bits) gets a KeyTransRecipientInfo, ECDSA P-256 or P-384 a
// KeyAgreeRecipientInfo. The recipient is identified by issuer and serial
// number, or by the certificate's subject key identifier when bySKI is set.
// The certificate's key usage is not checked: the requester named the key.
func NewCertificateRecipient(cert *x509.Certificate, bySKI bool) (*Recipient, error) {
	if cert == nil || len(cert.Raw) == 0 {
		return nil, errors.New("cms: recipient certificate is empty")
	}
	if bySKI {
		if len(cert.SubjectKeyId) == 0 {
			return nil, errors.New("cms: recipient certificate has no subject key identifier")
		}
		return NewPublicKeyRecipient(cert.PublicKey, cert.SubjectKeyId)
	}
	r, err := newKeyRecipient(cert.PublicKey)
	if err != nil {
		return nil, err
	}
	if r.ias, err = issuerAndSerial(cert); err != nil {
		return nil, err
	}
	return r, nil
}

// NewPublicKeyRecipient returns the recipient for a bare public key
// (*rsa.PublicKey, *ecdsa.PublicKey or *ecdh.PublicKey on P-256 or P-384),
// identified by subjectKeyID (RFC 5652 §6.2.1 subjectKeyIdentifier,
// §6.2.2 rKeyId).
func NewPublicKeyRecipient(pub crypto.PublicKey, subjectKeyID []byte) (*Recipient, error) {
	if len(subjectKeyID) == 0 || len(subjectKeyID) > maxKeyIDLen {
		return nil, fmt.Errorf("cms: subject key identifier must be 1 to %d bytes", maxKeyIDLen)
	}
	r, err := newKeyRecipient(pub)
	if err != nil {
		return nil, err
	}
	r.ski = bytes.Clone(subjectKeyID)
	return r, nil
}

func newKeyRecipient(pub crypto.PublicKey) (*Recipient, error) {
	switch k := pub.(type) {
	case *rsa.PublicKey:
		if k.N.BitLen() < 2048 {
			return nil, fmt.Errorf("%w: RSA recipient key of %d bits", ErrKeyMismatch, k.N.BitLen())
		}
		return &Recipient{kind: RecipientKeyTrans, rsa: k}, nil
	case *ecdsa.PublicKey:
		e, err := k.ECDH()
		if err != nil {
			return nil, fmt.Errorf("%w: %w", ErrKeyMismatch, err)
		}
		return newKeyRecipient(e)
	case *ecdh.PublicKey:
		if curveOID(k.Curve()) == nil {
			return nil, unsupported("recipient curve %v", k.Curve())
		}
		return &Recipient{kind: RecipientKeyAgree, ec: k}, nil
	}
	return nil, unsupported("recipient key type %T", pub)
}

// curveOID names the curves KeyAgreeRecipientInfo supports here.
func curveOID(c ecdh.Curve) asn1.ObjectIdentifier {
	switch c {
	case ecdh.P256():
		return oidCurveP256
	case ecdh.P384():
		return oidCurveP384
	}
	return nil
}

// recipientInfo encrypts cek for the recipient and returns its
// RecipientInfo element.
func (r *Recipient) recipientInfo(cek []byte, rand io.Reader) ([]byte, error) {
	switch r.kind {
	case RecipientKEK:
		return r.kekRecipientInfo(cek)
	case RecipientKeyTrans:
		return r.keyTransRecipientInfo(cek, rand)
	case RecipientKeyAgree:
		return r.keyAgreeRecipientInfo(cek, rand)
	}
	return nil, errors.New("cms: zero Recipient")
}

// version is the RecipientInfo's CMSVersion (RFC 5652 §6.2).
func (r *Recipient) version() int64 {
	switch {
	case r.kind == RecipientKEK:
		return 4
	case r.kind == RecipientKeyAgree:
		return 3
	case r.ski != nil:
		return 2
	}
	return 0
}

// DecryptKey is what a recipient decrypts with: a KEK for
// KEKRecipientInfo, a private key for KeyTransRecipientInfo (RSA) and
// KeyAgreeRecipientInfo (EC). Fields not needed may be left zero.
type DecryptKey struct {
	// KEKID and KEK decrypt the KEKRecipientInfo whose kekid.keyIdentifier
	// equals KEKID.
	KEKID []byte
	KEK   KEKUnwrapper
	// PrivateKey is an *rsa.PrivateKey or a crypto.Decrypter with an RSA
	// public key (RSAES-OAEP), or an *ecdsa.PrivateKey, *ecdh.PrivateKey or
	// ECDHKey on P-256 or P-384.
	PrivateKey crypto.PrivateKey
	// Certificate and SubjectKeyID identify PrivateKey's recipient entry
	// (by issuer and serial number or by key identifier). When both are
	// empty every entry of the key's kind is tried.
	Certificate  *x509.Certificate
	SubjectKeyID []byte
}

// ECDHKey is an EC private key that can do ECDH without exposing its
// scalar (e.g. a key in a secure element); *ecdh.PrivateKey implements it.
type ECDHKey interface {
	ECDH(remote *ecdh.PublicKey) ([]byte, error)
	PublicKey() *ecdh.PublicKey
}

// identified reports whether the key names its recipient entry.
func (k *DecryptKey) identified() bool {
	return k.Certificate != nil || len(k.SubjectKeyID) > 0
}

// matchRID reports whether a recipient identifier (IssuerAndSerialNumber
// element or subject key identifier) names k; an unidentified key matches
// every identifier.
func (k *DecryptKey) matchRID(ias, ski []byte) bool {
	if !k.identified() {
		return true
	}
	if ias != nil {
		return matchesIssuerAndSerial(ias, k.Certificate)
	}
	if len(k.SubjectKeyID) > 0 {
		return bytes.Equal(ski, k.SubjectKeyID)
	}
	return k.Certificate != nil && len(k.Certificate.SubjectKeyId) > 0 && bytes.Equal(ski, k.Certificate.SubjectKeyId)
}

func (k *DecryptKey) rsaKey() (crypto.Decrypter, bool) {
	switch p := k.PrivateKey.(type) {
	case *rsa.PrivateKey:
		return p, true
	case crypto.Decrypter:
		_, ok := p.Public().(*rsa.PublicKey)
		return p, ok
	}
	return nil, false
}

func (k *DecryptKey) ecdhKey() (ECDHKey, bool) {
	switch p := k.PrivateKey.(type) {
	case *ecdsa.PrivateKey:
		e, err := p.ECDH()
		return e, err == nil
	case ECDHKey:
		return p, true
	}
	return nil, false
}
