package ca

import (
	"crypto/sha256"
	"encoding/asn1"
	"errors"

	"golang.org/x/crypto/cryptobyte"
	cbasn1 "golang.org/x/crypto/cryptobyte/asn1"
)

// subjectKeyID computes the key identifier of RFC 7093 §2 method 1: the
// leftmost 160 bits of the SHA-256 of the subjectPublicKey BIT STRING value.
func subjectKeyID(spki []byte) ([]byte, error) {
	s := cryptobyte.String(spki)
	var seq, alg cryptobyte.String
	var bits asn1.BitString
	if !s.ReadASN1(&seq, cbasn1.SEQUENCE) || !s.Empty() ||
		!seq.ReadASN1(&alg, cbasn1.SEQUENCE) || !seq.ReadASN1BitString(&bits) || !seq.Empty() {
		return nil, errors.New("ca: malformed subjectPublicKeyInfo")
	}
	sum := sha256.Sum256(bits.Bytes)
	return sum[:20], nil
}
