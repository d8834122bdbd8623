package cms

import (
	"bytes"
	"crypto"
	"encoding/asn1"
	"encoding/binary"
	"fmt"
	"io"

	"golang.org/x/crypto/cryptobyte"
	cbasn1 "golang.org/x/crypto/cryptobyte/asn1"
)

// KeyAgreeRecipientInfo, RFC 5652 §6.2.2, with ephemeral-static ECDH as
// RFC 5753 §3.1 profiles it:
//
//	KeyAgreeRecipientInfo ::= SEQUENCE {
//	  version CMSVersion,  -- always set to 3
//	  originator [0] EXPLICIT OriginatorIdentifierOrKey,
//	  ukm [1] EXPLICIT UserKeyingMaterial OPTIONAL,
//	  keyEncryptionAlgorithm KeyEncryptionAlgorithmIdentifier,
//	  recipientEncryptedKeys RecipientEncryptedKeys }
//	OriginatorIdentifierOrKey ::= CHOICE { ..., originatorKey [1] OriginatorPublicKey }
//	OriginatorPublicKey ::= SEQUENCE { algorithm AlgorithmIdentifier, publicKey BIT STRING }
//	RecipientEncryptedKey ::= SEQUENCE { rid KeyAgreeRecipientIdentifier, encryptedKey EncryptedKey }
//	KeyAgreeRecipientIdentifier ::= CHOICE {
//	  issuerAndSerialNumber IssuerAndSerialNumber,
//	  rKeyId [0] IMPLICIT RecipientKeyIdentifier }
//	RecipientKeyIdentifier ::= SEQUENCE {
//	  subjectKeyIdentifier SubjectKeyIdentifier,
//	  date GeneralizedTime OPTIONAL, other OtherKeyAttribute OPTIONAL }
//
// The key-encryption algorithm is dhSinglePass-stdDH-sha256kdf-scheme with
// the key-wrap AlgorithmIdentifier as parameters; the KEK is derived with
// the ANSI X9.63 KDF over the shared secret and ECC-CMS-SharedInfo (RFC 5753
// §7.2):
//
//	ECC-CMS-SharedInfo ::= SEQUENCE {
//	  keyInfo AlgorithmIdentifier,
//	  entityUInfo [0] EXPLICIT OCTET STRING OPTIONAL,
//	  suppPubInfo [2] EXPLICIT OCTET STRING }

const maxKARIKeys = maxRecipients

func (r *Recipient) keyAgreeRecipientInfo(cek []byte, rnd io.Reader) ([]byte, error) {
	wrapAlg := wrapOIDForKeyLen(len(cek)) // RFC 5753 §3.1.1: KEK as strong as the CEK
	if wrapAlg == nil {
		return nil, fmt.Errorf("cms: no AES key wrap for a %d-byte key", len(cek))
	}
	eph, err := r.ec.Curve().GenerateKey(rnd)
	if err != nil {
		return nil, fmt.Errorf("cms: ephemeral ECDH key: %w", err)
	}
	z, err := eph.ECDH(r.ec)
	if err != nil {
		return nil, fmt.Errorf("cms: ECDH: %w", err)
	}
	defer zero(z)
	wrapAlgDER, err := encodeAlgID(wrapAlg, false) // RFC 3565: parameters absent
	if err != nil {
		return nil, err
	}
	kek, err := eccCMSKDF(crypto.SHA256, z, wrapAlgDER, r.ukm, wrapKeyLen(wrapAlg))
	if err != nil {
		return nil, err
	}
	defer zero(kek)
	ek, err := Wrap(kek, cek)
	if err != nil {
		return nil, err
	}
	var b cryptobyte.Builder
	b.AddASN1(tagExplicit1, func(b *cryptobyte.Builder) {
		b.AddASN1Int64(3)
		b.AddASN1(tagExplicit0, func(b *cryptobyte.Builder) {
			b.AddASN1(tagExplicit1, func(b *cryptobyte.Builder) { // originatorKey
				addAlgID(b, oidECPublicKey, false) // RFC 5753 §3.1.1: parameters absent
				b.AddASN1BitString(eph.PublicKey().Bytes())
			})
		})
		if r.ukm != nil {
			b.AddASN1(tagExplicit1, func(b *cryptobyte.Builder) { b.AddASN1OctetString(r.ukm) })
		}
		b.AddASN1(cbasn1.SEQUENCE, func(b *cryptobyte.Builder) {
			b.AddASN1ObjectIdentifier(oidStdDHSHA256KDF)
			b.AddBytes(wrapAlgDER)
		})
		b.AddASN1(cbasn1.SEQUENCE, func(b *cryptobyte.Builder) { // RecipientEncryptedKeys
			b.AddASN1(cbasn1.SEQUENCE, func(b *cryptobyte.Builder) {
				if r.ski != nil {
					b.AddASN1(tagExplicit0, func(b *cryptobyte.Builder) { b.AddASN1OctetString(r.ski) })
				} else {
					b.AddBytes(r.ias)
				}
				b.AddASN1OctetString(ek)
			})
		})
	})
	return b.Bytes()
}

// eccCMSKDF derives keyLen bytes from the shared secret z with the ANSI
// X9.63 KDF (SEC 1 §3.6.1) and the DER ECC-CMS-SharedInfo for the key-wrap
// algorithm keyInfo (the AlgorithmIdentifier as it appears in the message)
// and optional ukm.
func eccCMSKDF(h crypto.Hash, z, keyInfo, ukm []byte, keyLen int) ([]byte, error) {
	var b cryptobyte.Builder
	b.AddASN1(cbasn1.SEQUENCE, func(b *cryptobyte.Builder) {
		b.AddBytes(keyInfo)
		if ukm != nil {
			b.AddASN1(tagExplicit0, func(b *cryptobyte.Builder) { b.AddASN1OctetString(ukm) })
		}
		b.AddASN1(tagExplicit2, func(b *cryptobyte.Builder) {
			var bits [4]byte
			binary.BigEndian.PutUint32(bits[:], uint32(keyLen*8))
			b.AddASN1OctetString(bits[:])
		})
	})
	sharedInfo, err := b.Bytes()
	if err != nil {
		return nil, err
	}
	out := make([]byte, 0, keyLen+h.Size())
	var counter [4]byte
	for i := uint32(1); len(out) < keyLen; i++ {
		binary.BigEndian.PutUint32(counter[:], i)
		d := h.New()
		d.Write(z)
		d.Write(counter[:])
		d.Write(sharedInfo)
		out = d.Sum(out)
	}
	zero(out[keyLen:])
	return out[:keyLen], nil
}

// kari is a parsed KeyAgreeRecipientInfo.
type kari struct {
	origAlg algID
	origKey []byte // ECPoint
	ukm     []byte // nil when absent
	kdf     crypto.Hash
	wrapAlg algID
	keys    []kariKey
}

type kariKey struct {
	ias, ski     []byte
	encryptedKey []byte
}

func parseKARI(s cryptobyte.String) (*kari, error) {
	const where = "KeyAgreeRecipientInfo"
	ri := &kari{}
	var version int64
	var orig, ukm, reks cryptobyte.String
	var hasUKM bool
	if !s.ReadASN1Integer(&version) || version != 3 {
		return nil, malformed(where+".version", "must be 3")
	}
	if !s.ReadASN1(&orig, tagExplicit0) {
		return nil, malformed(where+".originator", "bad [0]")
	}
	var opk cryptobyte.String
	if !orig.ReadASN1(&opk, tagExplicit1) {
		return nil, unsupported("KeyAgreeRecipientInfo originator other than originatorKey (static-static ECDH)")
	}
	var err error
	if ri.origAlg, err = readAlgID(&opk, where+".originatorKey.algorithm"); err != nil {
		return nil, err
	}
	var point asn1.BitString
	if !opk.ReadASN1BitString(&point) || point.BitLength%8 != 0 || !opk.Empty() || !orig.Empty() {
		return nil, malformed(where+".originatorKey", "bad publicKey BIT STRING")
	}
	ri.origKey = point.Bytes
	if !s.ReadOptionalASN1(&ukm, &hasUKM, tagExplicit1) {
		return nil, malformed(where+".ukm", "bad [1]")
	}
	if hasUKM {
		var u cryptobyte.String
		if !ukm.ReadASN1(&u, cbasn1.OCTET_STRING) || !ukm.Empty() || len(u) > maxEncryptedKey {
			return nil, malformed(where+".ukm", "bad UserKeyingMaterial")
		}
		ri.ukm = append([]byte{}, u...)
	}
	kea, err := readAlgID(&s, where+".keyEncryptionAlgorithm")
	if err != nil {
		return nil, err
	}
	switch {
	case kea.oid.Equal(oidStdDHSHA256KDF):
		ri.kdf = crypto.SHA256
	case kea.oid.Equal(oidStdDHSHA384KDF):
		ri.kdf = crypto.SHA384
	case kea.oid.Equal(oidStdDHSHA512KDF):
		ri.kdf = crypto.SHA512
	default:
		return nil, unsupported("key agreement algorithm %s", kea.oid)
	}
	wp := cryptobyte.String(kea.params)
	if ri.wrapAlg, err = readAlgID(&wp, where+".keyEncryptionAlgorithm.parameters"); err != nil {
		return nil, err
	}
	if !wp.Empty() {
		return nil, malformed(where+".keyEncryptionAlgorithm", "trailing data")
	}
	if !s.ReadASN1(&reks, cbasn1.SEQUENCE) || !s.Empty() {
		return nil, malformed(where+".recipientEncryptedKeys", "bad SEQUENCE or trailing data")
	}
	for !reks.Empty() {
		if len(ri.keys) == maxKARIKeys {
			return nil, tooLarge("more than %d RecipientEncryptedKeys", maxKARIKeys)
		}
		var rek cryptobyte.String
		var k kariKey
		if !reks.ReadASN1(&rek, cbasn1.SEQUENCE) {
			return nil, malformed(where+".recipientEncryptedKeys", "bad RecipientEncryptedKey")
		}
		if rek.PeekASN1Tag(tagExplicit0) {
			var rkid cryptobyte.String
			if !rek.ReadASN1(&rkid, tagExplicit0) || !rkid.ReadASN1((*cryptobyte.String)(&k.ski), cbasn1.OCTET_STRING) ||
				len(k.ski) == 0 || len(k.ski) > maxKeyIDLen ||
				!rkid.SkipOptionalASN1(cbasn1.GeneralizedTime) || !rkid.SkipOptionalASN1(cbasn1.SEQUENCE) || !rkid.Empty() {
				return nil, malformed(where+".rKeyId", "bad RecipientKeyIdentifier")
			}
		} else if k.ias, err = readIssuerAndSerial(&rek, where+".rid"); err != nil {
			return nil, err
		}
		if !rek.ReadASN1((*cryptobyte.String)(&k.encryptedKey), cbasn1.OCTET_STRING) || !rek.Empty() ||
			len(k.encryptedKey) > maxEncryptedKey {
			return nil, malformed(where+".encryptedKey", "bad OCTET STRING or trailing data")
		}
		ri.keys = append(ri.keys, k)
	}
	if len(ri.keys) == 0 {
		return nil, malformed(where+".recipientEncryptedKeys", "empty")
	}
	return ri, nil
}

// unwrap recovers the content-encryption key if k names one of this
// KeyAgreeRecipientInfo's recipients. The KEK depends only on the
// originator key and k, so with an unidentified key every
// RecipientEncryptedKey is tried under it.
func (ri *kari) unwrap(k *DecryptKey) (cek []byte, matched bool, err error) {
	priv, ok := k.ecdhKey()
	if !ok {
		return nil, false, nil
	}
	var eks [][]byte
	for _, rk := range ri.keys {
		if k.matchRID(rk.ias, rk.ski) {
			eks = append(eks, rk.encryptedKey)
		}
	}
	if eks == nil {
		return nil, false, nil
	}
	curve := priv.PublicKey().Curve()
	want := curveOID(curve)
	if want == nil {
		return nil, true, unsupported("recipient curve %v", curve)
	}
	// RFC 5753 §7.1.2: absent, NULL or the recipient's named curve.
	if !ri.origAlg.oid.Equal(oidECPublicKey) ||
		!(ri.origAlg.nullOrNoParams() || bytes.Equal(ri.origAlg.params, oidDER(want))) {
		return nil, true, unsupported("originator key algorithm %s", ri.origAlg.oid)
	}
	keyLen := wrapKeyLen(ri.wrapAlg.oid)
	if keyLen == 0 || !ri.wrapAlg.noParams() {
		return nil, true, unsupported("key wrap algorithm %s", ri.wrapAlg.oid)
	}
	pub, err := curve.NewPublicKey(ri.origKey)
	if err != nil {
		return nil, true, fmt.Errorf("%w: originator key: %w", ErrDecrypt, err)
	}
	z, err := priv.ECDH(pub)
	if err != nil {
		return nil, true, fmt.Errorf("%w: ECDH: %w", ErrDecrypt, err)
	}
	defer zero(z)
	kek, err := eccCMSKDF(ri.kdf, z, ri.wrapAlg.raw, ri.ukm, keyLen)
	if err != nil {
		return nil, true, err
	}
	defer zero(kek)
	for _, ek := range eks {
		if cek, err = Unwrap(kek, ek); err == nil {
			return cek, true, nil
		}
	}
	return nil, true, fmt.Errorf("%w: %w", ErrDecrypt, err)
}
