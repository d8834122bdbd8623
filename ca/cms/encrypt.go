package cms

import (
	"crypto/aes"
	"crypto/cipher"
	"crypto/rand"
	"encoding/asn1"
	"errors"
	"fmt"
	"io"
	"time"

	"golang.org/x/crypto/cryptobyte"
	cbasn1 "golang.org/x/crypto/cryptobyte/asn1"
)

// EnvelopedData (RFC 5652 §6.1) and AuthEnvelopedData (RFC 5083 §2.1):
//
//	EnvelopedData ::= SEQUENCE {
//	  version CMSVersion,
//	  originatorInfo [0] IMPLICIT OriginatorInfo OPTIONAL,
//	  recipientInfos RecipientInfos,
//	  encryptedContentInfo EncryptedContentInfo,
//	  unprotectedAttrs [1] IMPLICIT UnprotectedAttributes OPTIONAL }
//	AuthEnvelopedData ::= SEQUENCE {
//	  version CMSVersion,  -- always 0
//	  originatorInfo [0] IMPLICIT OriginatorInfo OPTIONAL,
//	  recipientInfos RecipientInfos,
//	  authEncryptedContentInfo EncryptedContentInfo,
//	  authAttrs [1] IMPLICIT AuthAttributes OPTIONAL,
//	  mac MessageAuthenticationCode,
//	  unauthAttrs [2] IMPLICIT UnauthAttributes OPTIONAL }
//	EncryptedContentInfo ::= SEQUENCE {
//	  contentType ContentType,
//	  contentEncryptionAlgorithm ContentEncryptionAlgorithmIdentifier,
//	  encryptedContent [0] IMPLICIT EncryptedContent OPTIONAL }
//
// AES-CBC parameters are the 16-byte IV (RFC 3565 §4.1); AES-GCM parameters
// are GCMParameters { aes-nonce OCTET STRING, aes-ICVlen DEFAULT 12 } (RFC
// 5084 §3.2), here a 12-byte nonce and a 16-byte ICV.

const (
	gcmNonceSize = 12
	gcmTagSize   = 16
)

// EncryptOptions are the settings of Encrypt.
type EncryptOptions struct {
	// Content is the content-encryption algorithm; zero means AES128CBC.
	// The GCM choices produce an AuthEnvelopedData.
	Content ContentEncryption
	// NoAuthAttrs omits the authAttrs of an AuthEnvelopedData. RFC 5083
	// §2.1 requires them (with a content-type attribute) when the content is
	// not id-data, which is the default here; OpenSSL up to at least 3.6
	// cannot parse an AuthEnvelopedData that has them (openssl#26101), so a
	// server talking to OpenSSL-based clients sets this.
	NoAuthAttrs bool
	// Rand is the source of the content-encryption key, IV or nonce and
	// ephemeral keys; nil means crypto/rand.
	Rand io.Reader
}

// SealOptions are the settings of SealKeyPackage.
type SealOptions struct {
	EncryptOptions
	// SigningTime is put in the signing-time attribute; zero omits it.
	SigningTime time.Time
}

// Encrypt encrypts content, of type contentType (e.g. the bare SignedData
// value for id-signedData), for one recipient and returns a DER ContentInfo
// holding an EnvelopedData (AES-CBC) or an AuthEnvelopedData (AES-GCM). The
// content-encryption key is random and zeroed before returning; content is
// not modified or retained.
func Encrypt(content []byte, contentType asn1.ObjectIdentifier, r *Recipient, o EncryptOptions) ([]byte, error) {
	ce := o.Content
	if ce == 0 {
		ce = AES128CBC
	}
	if !ce.valid() {
		return nil, fmt.Errorf("cms: invalid content encryption %d", int(ce))
	}
	if r == nil || r.kind == 0 {
		return nil, errors.New("cms: no recipient")
	}
	if len(contentType) == 0 {
		return nil, errors.New("cms: no content type")
	}
	if len(content) > MaxMessageSize {
		return nil, tooLarge("content of %d bytes", len(content))
	}
	rnd := o.Rand
	if rnd == nil {
		rnd = rand.Reader
	}
	cek := make([]byte, ce.KeySize())
	defer zero(cek)
	if _, err := io.ReadFull(rnd, cek); err != nil {
		return nil, fmt.Errorf("cms: content-encryption key: %w", err)
	}
	ri, err := r.recipientInfo(cek, rnd)
	if err != nil {
		return nil, err
	}
	block, err := aes.NewCipher(cek)
	if err != nil {
		return nil, err
	}
	if ce.Authenticated() {
		return sealGCM(block, ce, content, contentType, ri, !o.NoAuthAttrs && !contentType.Equal(oidData), rnd)
	}
	return sealCBC(block, ce, content, contentType, ri, r.version(), rnd)
}

func sealCBC(block cipher.Block, ce ContentEncryption, content []byte, contentType asn1.ObjectIdentifier,
	ri []byte, riVersion int64, rnd io.Reader) ([]byte, error) {
	iv := make([]byte, aes.BlockSize)
	if _, err := io.ReadFull(rnd, iv); err != nil {
		return nil, fmt.Errorf("cms: IV: %w", err)
	}
	pad := aes.BlockSize - len(content)%aes.BlockSize // RFC 5652 §6.3
	ct := make([]byte, len(content)+pad)
	copy(ct, content)
	for i := len(content); i < len(ct); i++ {
		ct[i] = byte(pad)
	}
	cipher.NewCBCEncrypter(block, iv).CryptBlocks(ct, ct) // in place: no plaintext copy is left
	version := int64(2)                                   // RFC 5652 §6.1
	if riVersion == 0 {
		version = 0
	}
	var b cryptobyte.Builder
	b.AddASN1(cbasn1.SEQUENCE, func(b *cryptobyte.Builder) {
		b.AddASN1ObjectIdentifier(oidEnvelopedData)
		b.AddASN1(tagExplicit0, func(b *cryptobyte.Builder) {
			b.AddASN1(cbasn1.SEQUENCE, func(b *cryptobyte.Builder) {
				b.AddASN1Int64(version)
				b.AddASN1(cbasn1.SET, func(b *cryptobyte.Builder) { b.AddBytes(ri) })
				b.AddASN1(cbasn1.SEQUENCE, func(b *cryptobyte.Builder) {
					b.AddASN1ObjectIdentifier(contentType)
					b.AddASN1(cbasn1.SEQUENCE, func(b *cryptobyte.Builder) {
						b.AddASN1ObjectIdentifier(ce.OID())
						b.AddASN1OctetString(iv)
					})
					b.AddASN1(tagImplicit0, func(b *cryptobyte.Builder) { b.AddBytes(ct) })
				})
			})
		})
	})
	return b.Bytes()
}

func sealGCM(block cipher.Block, ce ContentEncryption, content []byte, contentType asn1.ObjectIdentifier,
	ri []byte, withAuthAttrs bool, rnd io.Reader) ([]byte, error) {
	aead, err := cipher.NewGCMWithTagSize(block, gcmTagSize)
	if err != nil {
		return nil, err
	}
	nonce := make([]byte, gcmNonceSize)
	if _, err := io.ReadFull(rnd, nonce); err != nil {
		return nil, fmt.Errorf("cms: nonce: %w", err)
	}
	var aad []byte // RFC 5083 §2.2: the DER of authAttrs with the SET OF tag
	if withAuthAttrs {
		a, err := encodeAttribute(oidAttrContentType, func(b *cryptobyte.Builder) { b.AddASN1ObjectIdentifier(contentType) })
		if err != nil {
			return nil, err
		}
		if aad, err = derSet(cbasn1.SET, [][]byte{a}); err != nil {
			return nil, err
		}
	}
	sealed := aead.Seal(make([]byte, 0, len(content)+gcmTagSize), nonce, content, aad)
	ct, tag := sealed[:len(content)], sealed[len(content):]
	var b cryptobyte.Builder
	b.AddASN1(cbasn1.SEQUENCE, func(b *cryptobyte.Builder) {
		b.AddASN1ObjectIdentifier(oidAuthEnvelopedData)
		b.AddASN1(tagExplicit0, func(b *cryptobyte.Builder) {
			b.AddASN1(cbasn1.SEQUENCE, func(b *cryptobyte.Builder) {
				b.AddASN1Int64(0)
				b.AddASN1(cbasn1.SET, func(b *cryptobyte.Builder) { b.AddBytes(ri) })
				b.AddASN1(cbasn1.SEQUENCE, func(b *cryptobyte.Builder) {
					b.AddASN1ObjectIdentifier(contentType)
					b.AddASN1(cbasn1.SEQUENCE, func(b *cryptobyte.Builder) {
						b.AddASN1ObjectIdentifier(ce.OID())
						b.AddASN1(cbasn1.SEQUENCE, func(b *cryptobyte.Builder) {
							b.AddASN1OctetString(nonce)
							b.AddASN1Int64(gcmTagSize)
						})
					})
					b.AddASN1(tagImplicit0, func(b *cryptobyte.Builder) { b.AddBytes(ct) })
				})
				if aad != nil {
					b.AddASN1(tagExplicit1, func(b *cryptobyte.Builder) { b.AddBytes(aad[len(derSetHeader(aad)):]) })
				}
				b.AddASN1OctetString(tag)
			})
		})
	})
	return b.Bytes()
}

// SealKeyPackage builds the RFC 7030 §4.4.2 server-generated key response
// (Content-Format 280): the key pkcs8 in an AsymmetricKeyPackage, signed by s
// (SignKeyPackage), the SignedData encrypted for r (Encrypt, content type
// id-signedData), DER ContentInfo. Every intermediate buffer holding the key
// in the clear is zeroed before returning; pkcs8 itself is the caller's to
// zero.
func (s *Signer) SealKeyPackage(pkcs8 []byte, r *Recipient, o SealOptions) ([]byte, error) {
	ci, sd, err := s.signedData(pkcs8, o.SigningTime, o.Rand)
	if err != nil {
		return nil, err
	}
	defer zero(ci)
	return Encrypt(sd, oidSignedData, r, o.EncryptOptions)
}
