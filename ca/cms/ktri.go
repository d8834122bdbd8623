package cms

import (
	"crypto"
	"crypto/rand"
	"crypto/rsa"
	"fmt"
	"io"

	"golang.org/x/crypto/cryptobyte"
	cbasn1 "golang.org/x/crypto/cryptobyte/asn1"
)

// KeyTransRecipientInfo, RFC 5652 §6.2.1, with RSAES-OAEP (RFC 8017 §7.1,
// RFC 4055 §4.1, RFC 8551 §2.3):
//
//	KeyTransRecipientInfo ::= SEQUENCE {
//	  version CMSVersion,  -- always set to 0 or 2
//	  rid RecipientIdentifier,
//	  keyEncryptionAlgorithm KeyEncryptionAlgorithmIdentifier,
//	  encryptedKey EncryptedKey }
//	RecipientIdentifier ::= CHOICE {
//	  issuerAndSerialNumber IssuerAndSerialNumber,
//	  subjectKeyIdentifier [0] SubjectKeyIdentifier }
//	RSAES-OAEP-params ::= SEQUENCE {
//	  hashFunc    [0] AlgorithmIdentifier DEFAULT sha1Identifier,
//	  maskGenFunc [1] AlgorithmIdentifier DEFAULT mgf1SHA1Identifier,
//	  pSourceFunc [2] AlgorithmIdentifier DEFAULT pSpecifiedEmptyIdentifier }

// addOAEPSHA256 adds the id-RSAES-OAEP AlgorithmIdentifier with SHA-256 and
// MGF1-SHA-256; the hash identifiers carry NULL as RFC 4055 §2.1 writes
// sha256Identifier.
func addOAEPSHA256(b *cryptobyte.Builder) {
	b.AddASN1(cbasn1.SEQUENCE, func(b *cryptobyte.Builder) {
		b.AddASN1ObjectIdentifier(oidRSAESOAEP)
		b.AddASN1(cbasn1.SEQUENCE, func(b *cryptobyte.Builder) {
			b.AddASN1(tagExplicit0, func(b *cryptobyte.Builder) { addAlgID(b, oidHashSHA256, true) })
			b.AddASN1(tagExplicit1, func(b *cryptobyte.Builder) {
				b.AddASN1(cbasn1.SEQUENCE, func(b *cryptobyte.Builder) {
					b.AddASN1ObjectIdentifier(oidMGF1)
					addAlgID(b, oidHashSHA256, true)
				})
			})
		})
	})
}

func (r *Recipient) keyTransRecipientInfo(cek []byte, rnd io.Reader) ([]byte, error) {
	ek, err := rsa.EncryptOAEP(crypto.SHA256.New(), rnd, r.rsa, cek, nil)
	if err != nil {
		return nil, fmt.Errorf("cms: RSAES-OAEP: %w", err)
	}
	var b cryptobyte.Builder
	b.AddASN1(cbasn1.SEQUENCE, func(b *cryptobyte.Builder) {
		b.AddASN1Int64(r.version())
		if r.ski != nil {
			b.AddASN1(tagImplicit0, func(b *cryptobyte.Builder) { b.AddBytes(r.ski) })
		} else {
			b.AddBytes(r.ias)
		}
		addOAEPSHA256(b)
		b.AddASN1OctetString(ek)
	})
	return b.Bytes()
}

// ktri is a parsed KeyTransRecipientInfo.
type ktri struct {
	version      int64
	ias, ski     []byte
	alg          algID
	encryptedKey []byte
}

func parseKTRI(s cryptobyte.String) (*ktri, error) {
	const where = "KeyTransRecipientInfo"
	ri := &ktri{}
	if !s.ReadASN1Integer(&ri.version) {
		return nil, malformed(where+".version", "bad INTEGER")
	}
	var err error
	if ri.ias, ri.ski, err = readRecipientID(&s, where); err != nil {
		return nil, err
	}
	if (ri.ias != nil && ri.version != 0) || (ri.ski != nil && ri.version != 2) {
		return nil, malformed(where+".version", "must be 0 with issuerAndSerialNumber, 2 with subjectKeyIdentifier")
	}
	if ri.alg, ri.encryptedKey, err = readKeyEncryption(s, where); err != nil {
		return nil, err
	}
	return ri, nil
}

// readRecipientID reads a RecipientIdentifier (also the SignerIdentifier
// shape): an IssuerAndSerialNumber or a [0] IMPLICIT subjectKeyIdentifier.
func readRecipientID(s *cryptobyte.String, where string) (ias, ski []byte, err error) {
	if s.PeekASN1Tag(tagImplicit0) {
		if !s.ReadASN1((*cryptobyte.String)(&ski), tagImplicit0) || len(ski) == 0 || len(ski) > maxKeyIDLen {
			return nil, nil, malformed(where+".rid", "bad subjectKeyIdentifier")
		}
		return nil, ski, nil
	}
	ias, err = readIssuerAndSerial(s, where+".rid")
	return ias, nil, err
}

// oaepParams parses RSAES-OAEP-params and returns the hash and MGF1 hash.
// Only SHA-2 hashes, MGF1 and an empty label are accepted; the SHA-1
// defaults are refused.
func oaepParams(a algID) (h, mgf crypto.Hash, err error) {
	if !a.oid.Equal(oidRSAESOAEP) {
		return 0, 0, unsupported("key transport algorithm %s (only RSAES-OAEP)", a.oid)
	}
	const where = "RSAES-OAEP-params"
	if a.noParams() {
		return 0, 0, unsupported("RSAES-OAEP with SHA-1 defaults")
	}
	s := cryptobyte.String(a.params)
	var seq, hf, mg, ps cryptobyte.String
	var hasHF, hasMG, hasPS bool
	if !s.ReadASN1(&seq, cbasn1.SEQUENCE) || !s.Empty() ||
		!seq.ReadOptionalASN1(&hf, &hasHF, tagExplicit0) ||
		!seq.ReadOptionalASN1(&mg, &hasMG, tagExplicit1) ||
		!seq.ReadOptionalASN1(&ps, &hasPS, tagExplicit2) || !seq.Empty() {
		return 0, 0, malformed(where, "bad SEQUENCE")
	}
	if !hasHF || !hasMG {
		return 0, 0, unsupported("RSAES-OAEP with SHA-1 defaults")
	}
	hAlg, err := readAlgID(&hf, where+".hashFunc")
	if err != nil {
		return 0, 0, err
	}
	mAlg, err := readAlgID(&mg, where+".maskGenFunc")
	if err != nil {
		return 0, 0, err
	}
	if !hf.Empty() || !mg.Empty() {
		return 0, 0, malformed(where, "trailing data")
	}
	h, ok := hashByOID(hAlg.oid)
	if !ok || !hAlg.nullOrNoParams() {
		return 0, 0, unsupported("RSAES-OAEP hash %s", hAlg.oid)
	}
	if !mAlg.oid.Equal(oidMGF1) {
		return 0, 0, unsupported("RSAES-OAEP mask generation %s", mAlg.oid)
	}
	mp := cryptobyte.String(mAlg.params)
	mgfHash, err := readAlgID(&mp, where+".maskGenFunc.parameters")
	if err != nil {
		return 0, 0, err
	}
	if mgf, ok = hashByOID(mgfHash.oid); !ok || !mgfHash.nullOrNoParams() || !mp.Empty() {
		return 0, 0, unsupported("RSAES-OAEP MGF1 hash %s", mgfHash.oid)
	}
	if hasPS {
		pAlg, err := readAlgID(&ps, where+".pSourceFunc")
		if err != nil {
			return 0, 0, err
		}
		label := cryptobyte.String(pAlg.params)
		var l cryptobyte.String
		if !pAlg.oid.Equal(oidPSpecified) || !label.ReadASN1(&l, cbasn1.OCTET_STRING) || len(l) != 0 || !label.Empty() || !ps.Empty() {
			return 0, 0, unsupported("RSAES-OAEP with a label")
		}
	}
	return h, mgf, nil
}

// unwrap recovers the content-encryption key if k names this recipient.
func (ri *ktri) unwrap(k *DecryptKey) (cek []byte, matched bool, err error) {
	dec, ok := k.rsaKey()
	if !ok || !k.matchRID(ri.ias, ri.ski) {
		return nil, false, nil
	}
	h, mgf, err := oaepParams(ri.alg)
	if err != nil {
		return nil, true, err
	}
	cek, err = dec.Decrypt(rand.Reader, ri.encryptedKey, &rsa.OAEPOptions{Hash: h, MGFHash: mgf})
	if err != nil {
		return nil, true, fmt.Errorf("%w: %w", ErrDecrypt, err)
	}
	return cek, true, nil
}
