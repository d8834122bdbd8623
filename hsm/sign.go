//go:build cgo

package hsm

import (
	"crypto"
	"crypto/ecdsa"
	"crypto/rsa"
	"errors"
	"fmt"

	"github.com/miekg/pkcs11"
)

// digestInfoPrefix returns the DER DigestInfo prefix that RSASSA-PKCS1-v1_5
// puts before the hash value (RFC 8017 section 9.2, note 1).
func digestInfoPrefix(h crypto.Hash) ([]byte, bool) {
	switch h {
	case crypto.SHA1:
		return []byte{0x30, 0x21, 0x30, 0x09, 0x06, 0x05, 0x2b, 0x0e, 0x03, 0x02, 0x1a, 0x05, 0x00, 0x04, 0x14}, true
	case crypto.SHA224:
		return []byte{0x30, 0x2d, 0x30, 0x0d, 0x06, 0x09, 0x60, 0x86, 0x48, 0x01, 0x65, 0x03, 0x04, 0x02, 0x04, 0x05, 0x00, 0x04, 0x1c}, true
	case crypto.SHA256:
		return []byte{0x30, 0x31, 0x30, 0x0d, 0x06, 0x09, 0x60, 0x86, 0x48, 0x01, 0x65, 0x03, 0x04, 0x02, 0x01, 0x05, 0x00, 0x04, 0x20}, true
	case crypto.SHA384:
		return []byte{0x30, 0x41, 0x30, 0x0d, 0x06, 0x09, 0x60, 0x86, 0x48, 0x01, 0x65, 0x03, 0x04, 0x02, 0x02, 0x05, 0x00, 0x04, 0x30}, true
	case crypto.SHA512:
		return []byte{0x30, 0x51, 0x30, 0x0d, 0x06, 0x09, 0x60, 0x86, 0x48, 0x01, 0x65, 0x03, 0x04, 0x02, 0x03, 0x05, 0x00, 0x04, 0x40}, true
	}
	return nil, false
}

// pssHash maps a hash to the PKCS#11 hash mechanism and MGF1 variant for
// CK_RSA_PKCS_PSS_PARAMS.
func pssHash(h crypto.Hash) (hashMech, mgf uint, ok bool) {
	switch h {
	case crypto.SHA1:
		return pkcs11.CKM_SHA_1, pkcs11.CKG_MGF1_SHA1, true
	case crypto.SHA224:
		return pkcs11.CKM_SHA224, pkcs11.CKG_MGF1_SHA224, true
	case crypto.SHA256:
		return pkcs11.CKM_SHA256, pkcs11.CKG_MGF1_SHA256, true
	case crypto.SHA384:
		return pkcs11.CKM_SHA384, pkcs11.CKG_MGF1_SHA384, true
	case crypto.SHA512:
		return pkcs11.CKM_SHA512, pkcs11.CKG_MGF1_SHA512, true
	}
	return 0, 0, false
}

// mechanism chooses the PKCS#11 mechanism and the data passed to C_Sign.
func (k *Key) mechanism(digest []byte, opts crypto.SignerOpts) ([]*pkcs11.Mechanism, []byte, error) {
	var h crypto.Hash
	if opts != nil {
		h = opts.HashFunc()
	}
	if h != 0 && len(digest) != h.Size() {
		return nil, nil, fmt.Errorf("digest is %d bytes, %v wants %d", len(digest), h, h.Size())
	}
	switch pub := k.pub.(type) {
	case *ecdsa.PublicKey:
		if len(digest) == 0 {
			return nil, nil, errors.New("empty digest")
		}
		return []*pkcs11.Mechanism{pkcs11.NewMechanism(pkcs11.CKM_ECDSA, nil)}, digest, nil
	case *rsa.PublicKey:
		if pss, ok := opts.(*rsa.PSSOptions); ok {
			hashMech, mgf, ok := pssHash(h)
			if !ok {
				return nil, nil, fmt.Errorf("RSA-PSS with hash %v is not supported", h)
			}
			salt := pss.SaltLength
			switch salt {
			case rsa.PSSSaltLengthAuto: // the largest salt that fits, as crypto/rsa does
				salt = (pub.N.BitLen()-1+7)/8 - 2 - h.Size()
			case rsa.PSSSaltLengthEqualsHash:
				salt = h.Size()
			}
			if salt < 0 {
				return nil, nil, fmt.Errorf("invalid RSA-PSS salt length %d", pss.SaltLength)
			}
			params := pkcs11.NewPSSParams(hashMech, mgf, uint(salt))
			return []*pkcs11.Mechanism{pkcs11.NewMechanism(pkcs11.CKM_RSA_PKCS_PSS, params)}, digest, nil
		}
		data := digest
		if h != 0 {
			prefix, ok := digestInfoPrefix(h)
			if !ok {
				return nil, nil, fmt.Errorf("RSA PKCS#1 v1.5 with hash %v is not supported", h)
			}
			data = append(prefix, digest...)
		}
		return []*pkcs11.Mechanism{pkcs11.NewMechanism(pkcs11.CKM_RSA_PKCS, nil)}, data, nil
	}
	return nil, nil, fmt.Errorf("%w: %T", ErrKeyType, k.pub)
}
