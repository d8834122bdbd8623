package cms

import (
	"crypto/aes"
	"crypto/cipher"
	"crypto/subtle"
	"encoding/asn1"
	"encoding/binary"
	"errors"
	"fmt"

	"golang.org/x/crypto/cryptobyte"
	cbasn1 "golang.org/x/crypto/cryptobyte/asn1"
)

// AES key wrap, RFC 3394, and AES key wrap with padding, RFC 5649.

// defaultIV is the RFC 3394 §2.2.3.1 initial value.
var defaultIV = [8]byte{0xA6, 0xA6, 0xA6, 0xA6, 0xA6, 0xA6, 0xA6, 0xA6}

// aivPrefix is the RFC 5649 §3 alternative initial value's constant half.
var aivPrefix = [4]byte{0xA6, 0x59, 0x59, 0xA6}

// maxWrapInput bounds what the wrap functions accept: a wrapped RSA-4096
// PKCS#8 is under 2.5 KiB.
const maxWrapInput = 64 << 10

func newKEKCipher(kek []byte) (cipher.Block, error) {
	switch len(kek) {
	case 16, 24, 32:
		return aes.NewCipher(kek)
	}
	return nil, fmt.Errorf("cms: key-encryption key must be 16, 24 or 32 bytes, not %d", len(kek))
}

// Wrap wraps plaintext (a multiple of 8 bytes, at least 16) under kek with
// the AES key wrap of RFC 3394 §2.2.1 and its default initial value.
func Wrap(kek, plaintext []byte) ([]byte, error) {
	block, err := newKEKCipher(kek)
	if err != nil {
		return nil, err
	}
	if len(plaintext) < 16 || len(plaintext)%8 != 0 || len(plaintext) > maxWrapInput {
		return nil, fmt.Errorf("cms: key wrap input must be a multiple of 8 bytes from 16 to %d, not %d", maxWrapInput, len(plaintext))
	}
	out := make([]byte, 8+len(plaintext))
	copy(out[8:], plaintext)
	wrapBlocks(block, defaultIV, out)
	return out, nil
}

// Unwrap reverses Wrap (RFC 3394 §2.2.2) and checks the initial value
// (§2.2.3); it returns ErrUnwrap when the check fails.
func Unwrap(kek, ciphertext []byte) ([]byte, error) {
	block, err := newKEKCipher(kek)
	if err != nil {
		return nil, err
	}
	if len(ciphertext) < 24 || len(ciphertext)%8 != 0 || len(ciphertext) > maxWrapInput+8 {
		return nil, fmt.Errorf("%w: wrapped key length %d", ErrUnwrap, len(ciphertext))
	}
	buf := make([]byte, len(ciphertext))
	copy(buf, ciphertext)
	a := unwrapBlocks(block, buf)
	if subtle.ConstantTimeCompare(a[:], defaultIV[:]) != 1 {
		zero(buf)
		return nil, ErrUnwrap
	}
	return buf[8:], nil
}

// WrapPad wraps plaintext of any length from 1 byte under kek with the AES
// key wrap with padding of RFC 5649 §4.1.
func WrapPad(kek, plaintext []byte) ([]byte, error) {
	block, err := newKEKCipher(kek)
	if err != nil {
		return nil, err
	}
	if len(plaintext) == 0 || len(plaintext) > maxWrapInput {
		return nil, fmt.Errorf("cms: key wrap input must be 1 to %d bytes, not %d", maxWrapInput, len(plaintext))
	}
	var aiv [8]byte
	copy(aiv[:4], aivPrefix[:])
	binary.BigEndian.PutUint32(aiv[4:], uint32(len(plaintext)))
	padded := (len(plaintext) + 7) / 8 * 8
	out := make([]byte, 8+padded)
	copy(out[8:], plaintext)
	if padded == 8 { // §4.1: one 64-bit block, a single AES encryption
		copy(out[:8], aiv[:])
		block.Encrypt(out, out)
		return out, nil
	}
	wrapBlocks(block, aiv, out)
	return out, nil
}

// UnwrapPad reverses WrapPad (RFC 5649 §4.2) and checks the alternative
// initial value, the message length indicator and the zero padding (§3); it
// returns ErrUnwrap when a check fails.
func UnwrapPad(kek, ciphertext []byte) ([]byte, error) {
	block, err := newKEKCipher(kek)
	if err != nil {
		return nil, err
	}
	if len(ciphertext) < 16 || len(ciphertext)%8 != 0 || len(ciphertext) > maxWrapInput+8 {
		return nil, fmt.Errorf("%w: wrapped key length %d", ErrUnwrap, len(ciphertext))
	}
	buf := make([]byte, len(ciphertext))
	copy(buf, ciphertext)
	var a [8]byte
	if len(buf) == 16 {
		block.Decrypt(buf, buf)
		copy(a[:], buf[:8])
	} else {
		a = unwrapBlocks(block, buf)
	}
	n := len(buf) - 8
	mli := int64(binary.BigEndian.Uint32(a[4:]))
	ok := subtle.ConstantTimeCompare(a[:4], aivPrefix[:]) == 1 && mli > int64(n-8) && mli <= int64(n)
	if ok {
		var pad byte
		for _, c := range buf[8+mli:] {
			pad |= c
		}
		ok = pad == 0
	}
	if !ok {
		zero(buf)
		return nil, ErrUnwrap
	}
	return buf[8 : 8+mli], nil
}

// wrapBlocks runs the RFC 3394 §2.2.1 wrapping process in place: buf holds
// 8 bytes of room for A followed by the n plaintext blocks; iv becomes A.
func wrapBlocks(block cipher.Block, iv [8]byte, buf []byte) {
	n := len(buf)/8 - 1
	var b [16]byte
	copy(b[:8], iv[:])
	for j := 0; j <= 5; j++ {
		for i := 1; i <= n; i++ {
			r := buf[8*i : 8*i+8]
			copy(b[8:], r)
			block.Encrypt(b[:], b[:])
			t := uint64(n*j + i)
			binary.BigEndian.PutUint64(b[:8], binary.BigEndian.Uint64(b[:8])^t)
			copy(r, b[8:])
		}
	}
	copy(buf[:8], b[:8])
	zero(b[:])
}

// unwrapBlocks runs the RFC 3394 §2.2.2 unwrapping process in place on the
// whole ciphertext buf; it returns the recovered A, and buf[8:] holds the
// plaintext blocks.
func unwrapBlocks(block cipher.Block, buf []byte) [8]byte {
	n := len(buf)/8 - 1
	var b [16]byte
	copy(b[:8], buf[:8])
	for j := 5; j >= 0; j-- {
		for i := n; i >= 1; i-- {
			r := buf[8*i : 8*i+8]
			t := uint64(n*j + i)
			binary.BigEndian.PutUint64(b[:8], binary.BigEndian.Uint64(b[:8])^t)
			copy(b[8:], r)
			block.Decrypt(b[:], b[:])
			copy(r, b[8:])
		}
	}
	var a [8]byte
	copy(a[:], b[:8])
	zero(b[:])
	return a
}

// TrimDERPadding returns the leading DER element of b and checks that what
// follows it is at most 7 zero bytes. It is for unwrapped PKCS#8 keys from
// tokens that zero-pad the key to a multiple of 8 before wrapping (SoftHSM
// 2.6.1 with CKM_AES_KEY_WRAP_PAD), so that the padding survives the RFC 5649
// unwrap. The result aliases b.
func TrimDERPadding(b []byte) ([]byte, error) {
	s := cryptobyte.String(b)
	var elem cryptobyte.String
	var tag cbasn1.Tag
	if !s.ReadAnyASN1Element(&elem, &tag) {
		return nil, malformed("padded DER", "no complete DER element")
	}
	if len(s) > 7 {
		return nil, malformed("padded DER", "more than 7 bytes after the element")
	}
	for _, c := range s {
		if c != 0 {
			return nil, malformed("padded DER", "non-zero byte after the element")
		}
	}
	return b[:len(elem)], nil
}

// KEKWrapper wraps a content-encryption key under a pre-shared AES
// key-encryption key with the AES key wrap of RFC 3394 (KEKRecipientInfo,
// RFC 5652 §6.2.3). In production the KEK is in the HSM and the token does
// the wrap; AESKEK is the software implementation.
type KEKWrapper interface {
	// WrapKey returns the RFC 3394 wrapping of cek (16 or 32 bytes): 8 bytes
	// longer than cek.
	WrapKey(cek []byte) ([]byte, error)
	// Algorithm returns id-aes128-wrap, id-aes192-wrap or id-aes256-wrap,
	// according to the KEK's length.
	Algorithm() asn1.ObjectIdentifier
}

// KEKUnwrapper recovers a content-encryption key wrapped under a pre-shared
// AES key-encryption key (RFC 3394). AESKEK implements it.
type KEKUnwrapper interface {
	// UnwrapKey returns the unwrapped key, or an error wrapping ErrUnwrap
	// when the integrity check fails.
	UnwrapKey(wrapped []byte) ([]byte, error)
	// Algorithm returns the key-wrap algorithm matching the KEK's length;
	// messages naming another algorithm are refused before UnwrapKey.
	Algorithm() asn1.ObjectIdentifier
}

// AESKEK is a software AES key-encryption key. It is safe for concurrent
// use.
type AESKEK struct {
	key []byte
	alg asn1.ObjectIdentifier
}

// NewAESKEK returns a KEK holding a copy of key (16, 24 or 32 bytes).
func NewAESKEK(key []byte) (*AESKEK, error) {
	alg := wrapOIDForKeyLen(len(key))
	if alg == nil {
		return nil, fmt.Errorf("cms: key-encryption key must be 16, 24 or 32 bytes, not %d", len(key))
	}
	return &AESKEK{key: append([]byte(nil), key...), alg: alg}, nil
}

// Algorithm returns the AES key-wrap algorithm for the key's length.
func (k *AESKEK) Algorithm() asn1.ObjectIdentifier { return k.alg }

// WrapKey wraps cek with RFC 3394.
func (k *AESKEK) WrapKey(cek []byte) ([]byte, error) {
	if k.key == nil {
		return nil, errDestroyed
	}
	return Wrap(k.key, cek)
}

// UnwrapKey unwraps with RFC 3394.
func (k *AESKEK) UnwrapKey(wrapped []byte) ([]byte, error) {
	if k.key == nil {
		return nil, errDestroyed
	}
	return Unwrap(k.key, wrapped)
}

// Destroy zeroes the key copy; later calls fail. It must not run
// concurrently with WrapKey or UnwrapKey.
func (k *AESKEK) Destroy() {
	zero(k.key)
	k.key = nil
}

var errDestroyed = errors.New("cms: key-encryption key destroyed")
