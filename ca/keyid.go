package ca

import (
	"crypto/sha1"
	"crypto/sha256"
	"encoding/asn1"
	"errors"

	"golang.org/x/crypto/cryptobyte"
	cbasn1 "golang.org/x/crypto/cryptobyte/asn1"
)

// subjectKeyID computes the key identifier of RFC 7093 §2 method 1: the
// leftmost 160 bits of the SHA-256 of the subjectPublicKey BIT STRING value.
func subjectKeyID(spki []byte) ([]byte, error) {
	bits, err := publicKeyBits(spki)
	if err != nil {
		return nil, err
	}
	return sha256Prefix(bits), nil
}

// publicKeyBits returns the subjectPublicKey BIT STRING value of a DER
// SubjectPublicKeyInfo.
func publicKeyBits(spki []byte) ([]byte, error) {
	s := cryptobyte.String(spki)
	var seq, alg cryptobyte.String
	var bits asn1.BitString
	if !s.ReadASN1(&seq, cbasn1.SEQUENCE) || !s.Empty() ||
		!seq.ReadASN1(&alg, cbasn1.SEQUENCE) || !seq.ReadASN1BitString(&bits) || !seq.Empty() {
		return nil, errors.New("ca: malformed subjectPublicKeyInfo")
	}
	return bits.Bytes, nil
}

// sha256Prefix is RFC 7093 §2 method 1 over the key bits.
func sha256Prefix(bits []byte) []byte {
	sum := sha256.Sum256(bits)
	return sum[:20]
}

// sha1Sum is RFC 5280 §4.2.1.2 method 1 over the key bits (an identifier,
// not a security function).
func sha1Sum(bits []byte) []byte {
	sum := sha1.Sum(bits)
	return sum[:]
}
