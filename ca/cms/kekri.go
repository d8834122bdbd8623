package cms

import (
	"bytes"
	"fmt"

	"golang.org/x/crypto/cryptobyte"
	cbasn1 "golang.org/x/crypto/cryptobyte/asn1"
)

// KEKRecipientInfo, RFC 5652 §6.2.3:
//
//	KEKRecipientInfo ::= SEQUENCE {
//	  version CMSVersion,  -- always set to 4
//	  kekid KEKIdentifier,
//	  keyEncryptionAlgorithm KeyEncryptionAlgorithmIdentifier,
//	  encryptedKey EncryptedKey }
//	KEKIdentifier ::= SEQUENCE {
//	  keyIdentifier OCTET STRING,
//	  date GeneralizedTime OPTIONAL,
//	  other OtherKeyAttribute OPTIONAL }
//
// The key-encryption algorithm is AES key wrap (RFC 3565 §2.3.2: parameters
// absent).

// maxEncryptedKey bounds an encryptedKey: an RSA-8192 OAEP block is 1 KiB.
const maxEncryptedKey = 1024

func (r *Recipient) kekRecipientInfo(cek []byte) ([]byte, error) {
	alg := r.kek.Algorithm()
	if wrapKeyLen(alg) == 0 {
		return nil, unsupported("KEK algorithm %s", alg)
	}
	wrapped, err := r.kek.WrapKey(cek)
	if err != nil {
		return nil, fmt.Errorf("cms: wrapping the content-encryption key: %w", err)
	}
	if len(wrapped) != len(cek)+8 {
		return nil, fmt.Errorf("cms: KEK wrapper returned %d bytes for a %d-byte key", len(wrapped), len(cek))
	}
	var b cryptobyte.Builder
	b.AddASN1(tagExplicit2, func(b *cryptobyte.Builder) {
		b.AddASN1Int64(4)
		b.AddASN1(cbasn1.SEQUENCE, func(b *cryptobyte.Builder) { b.AddASN1OctetString(r.kekID) })
		addAlgID(b, alg, false)
		b.AddASN1OctetString(wrapped)
	})
	return b.Bytes()
}

// kekri is a parsed KEKRecipientInfo.
type kekri struct {
	keyID        []byte
	alg          algID
	encryptedKey []byte
}

func parseKEKRI(s cryptobyte.String) (*kekri, error) {
	const where = "KEKRecipientInfo"
	var version int64
	var kekid cryptobyte.String
	ri := &kekri{}
	if !s.ReadASN1Integer(&version) || version != 4 {
		return nil, malformed(where+".version", "must be 4")
	}
	if !s.ReadASN1(&kekid, cbasn1.SEQUENCE) || !kekid.ReadASN1((*cryptobyte.String)(&ri.keyID), cbasn1.OCTET_STRING) ||
		!kekid.SkipOptionalASN1(cbasn1.GeneralizedTime) || !kekid.SkipOptionalASN1(cbasn1.SEQUENCE) || !kekid.Empty() {
		return nil, malformed(where+".kekid", "bad KEKIdentifier")
	}
	var err error
	if ri.alg, ri.encryptedKey, err = readKeyEncryption(s, where); err != nil {
		return nil, err
	}
	return ri, nil
}

// readKeyEncryption reads the last two fields of KEKRecipientInfo and
// KeyTransRecipientInfo: keyEncryptionAlgorithm and encryptedKey.
func readKeyEncryption(s cryptobyte.String, where string) (algID, []byte, error) {
	alg, err := readAlgID(&s, where+".keyEncryptionAlgorithm")
	if err != nil {
		return alg, nil, err
	}
	var ek cryptobyte.String
	if !s.ReadASN1(&ek, cbasn1.OCTET_STRING) || !s.Empty() {
		return alg, nil, malformed(where+".encryptedKey", "bad OCTET STRING or trailing data")
	}
	if len(ek) > maxEncryptedKey {
		return alg, nil, tooLarge("encryptedKey of %d bytes", len(ek))
	}
	return alg, ek, nil
}

// unwrap recovers the content-encryption key if k names this recipient.
func (ri *kekri) unwrap(k *DecryptKey) (cek []byte, matched bool, err error) {
	if k.KEK == nil || len(k.KEKID) == 0 || !bytes.Equal(k.KEKID, ri.keyID) {
		return nil, false, nil
	}
	if wrapKeyLen(ri.alg.oid) == 0 || !ri.alg.noParams() {
		return nil, true, unsupported("KEK algorithm %s", ri.alg.oid)
	}
	if !ri.alg.oid.Equal(k.KEK.Algorithm()) {
		return nil, true, fmt.Errorf("%w: message wraps with %s, the KEK is for %s", ErrDecrypt, ri.alg.oid, k.KEK.Algorithm())
	}
	cek, err = k.KEK.UnwrapKey(ri.encryptedKey)
	if err != nil {
		return nil, true, fmt.Errorf("%w: %w", ErrDecrypt, err)
	}
	return cek, true, nil
}
