//go:build cgo

package hsm

import (
	"crypto"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/rsa"
	"encoding/hex"
	"errors"
	"fmt"
	"math/big"
	"strings"
	"sync"

	"github.com/miekg/pkcs11"
)

// transportKeyLen is the length of the AES key a generated key is wrapped
// under for export (AES-256).
const transportKeyLen = 32

func (t *Token) generateExportable(kt KeyType, keep bool) (*ExportedKey, error) {
	kt, err := ParseDeviceKeyType(string(kt))
	if err != nil {
		return nil, err
	}
	id := make([]byte, 16)
	if _, err := rand.Read(id); err != nil {
		return nil, fmt.Errorf("hsm: generate key id: %w", err)
	}
	label := ""
	if keep {
		label = PendingPrefix + hex.EncodeToString(id)
	}
	mech, pubT, privT, err := pairTemplates(kt, label, id, keep, true)
	if err != nil {
		return nil, fmt.Errorf("hsm: generate exportable key: %w", err)
	}
	out := &ExportedKey{Type: kt, Label: label}
	err = t.do("generate-exportable", func(s session) error {
		// A retry (after a recovery) starts from scratch: what the failed
		// attempt created was destroyed below, died with its session
		// (session objects), or is left pending for CleanupGenerated.
		out.Wrapped, out.TransportKey = nil, nil
		pub, priv, err := t.ctx.GenerateKeyPair(s.h, mech, pubT, privT)
		if err != nil {
			return err
		}
		destroyPair := true
		defer func() {
			if destroyPair {
				_ = t.ctx.DestroyObject(s.h, priv)
				_ = t.ctx.DestroyObject(s.h, pub)
			}
		}()
		if out.Attributes, err = t.generatedAttributes(s.h, priv); err != nil {
			return err
		}
		if out.Public, err = t.generatedPublic(s.h, kt, pub); err != nil {
			return err
		}
		if out.Wrapped, out.TransportKey, err = t.wrapOut(s.h, priv); err != nil {
			return err
		}
		destroyPair = !keep
		return nil
	})
	if err != nil {
		out.Zero()
		return nil, fmt.Errorf("hsm: generate exportable %s key: %w", kt, err)
	}
	return out, nil
}

// generatedAttributes reads the security attributes of a generated private key.
func (t *Token) generatedAttributes(s pkcs11.SessionHandle, priv pkcs11.ObjectHandle) (GeneratedAttributes, error) {
	attrs, err := t.ctx.GetAttributeValue(s, priv, []*pkcs11.Attribute{
		pkcs11.NewAttribute(pkcs11.CKA_LOCAL, nil),
		pkcs11.NewAttribute(pkcs11.CKA_TOKEN, nil),
		pkcs11.NewAttribute(pkcs11.CKA_SENSITIVE, nil),
		pkcs11.NewAttribute(pkcs11.CKA_EXTRACTABLE, nil),
		pkcs11.NewAttribute(pkcs11.CKA_ALWAYS_SENSITIVE, nil),
		pkcs11.NewAttribute(pkcs11.CKA_NEVER_EXTRACTABLE, nil),
		pkcs11.NewAttribute(pkcs11.CKA_SIGN, nil),
	})
	if err != nil {
		return GeneratedAttributes{}, err
	}
	b := func(i int) bool { return len(attrs[i].Value) == 1 && attrs[i].Value[0] != 0 }
	return GeneratedAttributes{Local: b(0), Token: b(1), Sensitive: b(2), Extractable: b(3),
		AlwaysSensitive: b(4), NeverExtractable: b(5), Sign: b(6)}, nil
}

// generatedPublic reads the public key of a freshly generated pair from its
// public key object (which may be a session object, invisible to find).
func (t *Token) generatedPublic(s pkcs11.SessionHandle, kt KeyType, pub pkcs11.ObjectHandle) (crypto.PublicKey, error) {
	switch kt {
	case ECDSAP256, ECDSAP384:
		attrs, err := t.ctx.GetAttributeValue(s, pub, []*pkcs11.Attribute{pkcs11.NewAttribute(pkcs11.CKA_EC_POINT, nil)})
		if err != nil {
			return nil, err
		}
		curve := elliptic.P256()
		if kt == ECDSAP384 {
			curve = elliptic.P384()
		}
		return parseECPoint(curve, attrs[0].Value)
	default:
		attrs, err := t.ctx.GetAttributeValue(s, pub, []*pkcs11.Attribute{
			pkcs11.NewAttribute(pkcs11.CKA_MODULUS, nil),
			pkcs11.NewAttribute(pkcs11.CKA_PUBLIC_EXPONENT, nil),
		})
		if err != nil {
			return nil, err
		}
		e := new(big.Int).SetBytes(attrs[1].Value)
		if !e.IsInt64() || e.Int64() != 65537 {
			return nil, fmt.Errorf("%w: generated RSA key has public exponent %s", ErrKeyType, e)
		}
		return &rsa.PublicKey{N: new(big.Int).SetBytes(attrs[0].Value), E: 65537}, nil
	}
}

// wrapOut exports key with C_WrapKey(CKM_AES_KEY_WRAP_PAD, RFC 5649) under a
// fresh AES-256 session key, which it destroys before returning; it returns
// the wrapping and the transport key.
func (t *Token) wrapOut(s pkcs11.SessionHandle, key pkcs11.ObjectHandle) (wrapped, transport []byte, err error) {
	transport = make([]byte, transportKeyLen)
	if _, err := rand.Read(transport); err != nil {
		return nil, nil, fmt.Errorf("hsm: transport key: %w", err)
	}
	wk, err := t.aesSessionKey(s, transport, true)
	if err != nil {
		clear(transport)
		return nil, nil, err
	}
	wrapped, err = t.wrapKey(s, pkcs11.CKM_AES_KEY_WRAP_PAD, wk, key)
	if derr := t.ctx.DestroyObject(s, wk); err == nil && derr != nil {
		err = derr
	}
	if err != nil {
		clear(transport)
		return nil, nil, err
	}
	return wrapped, transport, nil
}

// wrapBufferSize holds the RFC 5649 wrapping of the PKCS#8 of any key
// GenerateExportable makes (RSA-3072: about 1.8 kB).
// A variable for the tests of the retry with the length the module asks for.
var wrapBufferSize = 4096

// wrapKey is C_WrapKey under the parameterless mechanism mech
// (CKM_AES_KEY_WRAP, CKM_AES_KEY_WRAP_PAD): one call into a buffer large
// enough where the module allows (miekg/pkcs11 asks for the length first,
// and SoftHSM wraps the key for that too), else miekg/pkcs11.
func (t *Token) wrapKey(s pkcs11.SessionHandle, mech uint, wk, key pkcs11.ObjectHandle) ([]byte, error) {
	if t.one.canWrap() {
		size := wrapBufferSize
		wrapped, n, err := t.one.wrap(s, mech, wk, key, size)
		if errors.Is(err, pkcs11.Error(pkcs11.CKR_BUFFER_TOO_SMALL)) && n > size && n <= 1<<20 {
			wrapped, _, err = t.one.wrap(s, mech, wk, key, n)
		}
		if !errors.Is(err, pkcs11.Error(pkcs11.CKR_BUFFER_TOO_SMALL)) {
			return wrapped, err
		}
	}
	return t.ctx.WrapKey(s, []*pkcs11.Mechanism{pkcs11.NewMechanism(mech, nil)}, wk, key)
}

// aesSessionKey creates a sensitive AES session object holding value: a
// wrapping key (wrap: CKA_WRAP, not extractable) or a key to be wrapped
// (CKA_EXTRACTABLE, no usage). Like the generated session key pairs it is
// not CKA_PRIVATE (see pairTemplates).
func (t *Token) aesSessionKey(s pkcs11.SessionHandle, value []byte, wrap bool) (pkcs11.ObjectHandle, error) {
	return t.ctx.CreateObject(s, []*pkcs11.Attribute{
		pkcs11.NewAttribute(pkcs11.CKA_CLASS, pkcs11.CKO_SECRET_KEY),
		pkcs11.NewAttribute(pkcs11.CKA_KEY_TYPE, pkcs11.CKK_AES),
		pkcs11.NewAttribute(pkcs11.CKA_TOKEN, false),
		pkcs11.NewAttribute(pkcs11.CKA_PRIVATE, false),
		pkcs11.NewAttribute(pkcs11.CKA_SENSITIVE, true),
		pkcs11.NewAttribute(pkcs11.CKA_EXTRACTABLE, !wrap),
		pkcs11.NewAttribute(pkcs11.CKA_WRAP, wrap),
		pkcs11.NewAttribute(pkcs11.CKA_UNWRAP, false),
		pkcs11.NewAttribute(pkcs11.CKA_ENCRYPT, false),
		pkcs11.NewAttribute(pkcs11.CKA_DECRYPT, false),
		pkcs11.NewAttribute(pkcs11.CKA_VALUE, value),
	})
}

func (t *Token) escrowKey(label, serial string) error {
	if !strings.HasPrefix(label, PendingPrefix) || !validEscrowSerial(serial) {
		return fmt.Errorf("hsm: escrow %q as %q: not a pending generated key or not a serial", label, serial)
	}
	to := EscrowPrefix + serial
	t.keyMu.Lock()
	defer t.keyMu.Unlock()
	err := t.do("escrow-key", func(s session) error {
		if err := t.labelFree(s.h, to); err != nil {
			return err
		}
		all, err := t.pairObjects(s.h, label)
		if err != nil {
			return err
		}
		for _, h := range all {
			if err := t.ctx.SetAttributeValue(s.h, h, []*pkcs11.Attribute{pkcs11.NewAttribute(pkcs11.CKA_LABEL, to)}); err != nil {
				return err
			}
		}
		return nil
	})
	if err != nil {
		return fmt.Errorf("hsm: escrow key %q: %w", label, err)
	}
	return nil
}

// validEscrowSerial accepts the lowercase hex serials package ca writes.
func validEscrowSerial(s string) bool {
	if s == "" || len(s) > 40 {
		return false
	}
	for _, c := range s {
		if (c < '0' || c > '9') && (c < 'a' || c > 'f') {
			return false
		}
	}
	return true
}

// labelled lists the token objects of class whose label starts with prefix,
// with their labels and CKA_ID; at most maxListed.
func (t *Token) labelled(s pkcs11.SessionHandle, class uint, prefix string) ([]labelledObject, error) {
	if err := t.ctx.FindObjectsInit(s, []*pkcs11.Attribute{
		pkcs11.NewAttribute(pkcs11.CKA_CLASS, class),
		pkcs11.NewAttribute(pkcs11.CKA_TOKEN, true),
	}); err != nil {
		return nil, err
	}
	var hs []pkcs11.ObjectHandle
	var err error
	for len(hs) <= maxListed {
		var more []pkcs11.ObjectHandle
		if more, _, err = t.ctx.FindObjects(s, 256); err != nil || len(more) == 0 {
			break
		}
		hs = append(hs, more...)
	}
	if ferr := t.ctx.FindObjectsFinal(s); err == nil {
		err = ferr
	}
	if err != nil {
		return nil, err
	}
	var out []labelledObject
	for _, h := range hs {
		attrs, err := t.ctx.GetAttributeValue(s, h, []*pkcs11.Attribute{
			pkcs11.NewAttribute(pkcs11.CKA_LABEL, nil),
			pkcs11.NewAttribute(pkcs11.CKA_ID, nil),
		})
		if err != nil {
			return nil, err
		}
		if l := string(attrs[0].Value); strings.HasPrefix(l, prefix) {
			out = append(out, labelledObject{h: h, label: l, id: attrs[1].Value})
		}
	}
	if len(out) > maxListed {
		return nil, fmt.Errorf("hsm: more than %d objects labelled %s*", maxListed, prefix)
	}
	return out, nil
}

type labelledObject struct {
	h     pkcs11.ObjectHandle
	label string
	id    []byte
}

// maxListed bounds the objects one listing returns.
const maxListed = 100000

func (t *Token) cleanupGenerated() (int, error) {
	t.keyMu.Lock()
	defer t.keyMu.Unlock()
	n := 0
	err := t.do("cleanup-generated", func(s session) error {
		n = 0
		for _, class := range []uint{pkcs11.CKO_PRIVATE_KEY, pkcs11.CKO_PUBLIC_KEY} {
			objs, err := t.labelled(s.h, class, PendingPrefix)
			if err != nil {
				return err
			}
			for _, o := range objs {
				if err := t.ctx.DestroyObject(s.h, o.h); err != nil {
					return err
				}
				if class == pkcs11.CKO_PRIVATE_KEY {
					n++
				}
			}
		}
		return nil
	})
	if err != nil {
		return n, fmt.Errorf("hsm: clean up generated keys: %w", err)
	}
	return n, nil
}

func (t *Token) escrowedKeys() ([]EscrowedKey, error) {
	var out []EscrowedKey
	err := t.do("list-escrowed", func(s session) error {
		out = nil
		objs, err := t.labelled(s.h, pkcs11.CKO_PRIVATE_KEY, EscrowPrefix)
		if err != nil {
			return err
		}
		for _, o := range objs {
			kt, _, err := t.privateKeyType(s.h, o.h)
			if err != nil {
				return err
			}
			out = append(out, EscrowedKey{Serial: strings.TrimPrefix(o.label, EscrowPrefix), Label: o.label, Type: kt, ID: o.id})
		}
		return nil
	})
	if err != nil {
		return nil, fmt.Errorf("hsm: list escrowed keys: %w", err)
	}
	return out, nil
}

func (t *Token) destroyEscrowed(serial string) error {
	if !validEscrowSerial(serial) {
		return fmt.Errorf("hsm: destroy escrowed key: %q is not a lowercase hex serial", serial)
	}
	return t.deleteKey(EscrowPrefix + serial)
}

// KEK is a pre-shared AES key-encryption key held in the token
// (non-extractable, CKA_WRAP only), found with FindKEK. It implements the
// KEKWrapper of package ca/cms: the token wraps content-encryption keys
// under it (KEKRecipientInfo, RFC 5652 §6.2.3). It is safe for concurrent
// use.
type KEK struct {
	t     *Token
	id    []byte
	label string
	bits  int

	mu    sync.Mutex
	h     pkcs11.ObjectHandle
	gen   uint64
	found bool
}

// handle returns the KEK's object handle valid in the generation of s,
// finding it again by label after a recovery or a stale handle.
func (k *KEK) handle(s session) (pkcs11.ObjectHandle, error) {
	k.mu.Lock()
	defer k.mu.Unlock()
	if k.found && k.gen == s.gen {
		return k.h, nil
	}
	h, err := k.t.findKEKHandle(s.h, k.label)
	if err != nil {
		return 0, err
	}
	k.h, k.gen, k.found = h, s.gen, true
	return h, nil
}

// markStale forgets the handle after a failure that may come from it, and
// reports a wrapping-key handle the token no longer knows as
// CKR_KEY_HANDLE_INVALID, so that the operation is retried once with the
// KEK found again (or ErrKeyNotFound if it was deleted).
func (k *KEK) markStale(err error) error {
	if errors.Is(err, pkcs11.Error(pkcs11.CKR_WRAPPING_KEY_HANDLE_INVALID)) {
		err = pkcs11.Error(pkcs11.CKR_KEY_HANDLE_INVALID)
	}
	if err != nil && classify(err) != classFatal {
		k.mu.Lock()
		k.found = false
		k.mu.Unlock()
	}
	return err
}

func kekLabel(id []byte) string { return KEKPrefix + hex.EncodeToString(id) }

func (t *Token) importKEK(id, key []byte) error {
	if err := checkKEK(id, key); err != nil {
		return err
	}
	label := kekLabel(id)
	t.keyMu.Lock()
	defer t.keyMu.Unlock()
	err := t.do("import-kek", func(s session) error {
		hs, err := t.find(s.h, pkcs11.CKO_SECRET_KEY, label, nil, 1)
		if err != nil {
			return err
		}
		if len(hs) > 0 {
			return fmt.Errorf("%w: key-encryption key %x", ErrKeyExists, id)
		}
		_, err = t.ctx.CreateObject(s.h, []*pkcs11.Attribute{
			pkcs11.NewAttribute(pkcs11.CKA_CLASS, pkcs11.CKO_SECRET_KEY),
			pkcs11.NewAttribute(pkcs11.CKA_KEY_TYPE, pkcs11.CKK_AES),
			pkcs11.NewAttribute(pkcs11.CKA_TOKEN, true),
			pkcs11.NewAttribute(pkcs11.CKA_PRIVATE, true),
			pkcs11.NewAttribute(pkcs11.CKA_SENSITIVE, true),
			pkcs11.NewAttribute(pkcs11.CKA_EXTRACTABLE, false),
			pkcs11.NewAttribute(pkcs11.CKA_WRAP, true),
			pkcs11.NewAttribute(pkcs11.CKA_UNWRAP, false),
			pkcs11.NewAttribute(pkcs11.CKA_ENCRYPT, false),
			pkcs11.NewAttribute(pkcs11.CKA_DECRYPT, false),
			pkcs11.NewAttribute(pkcs11.CKA_LABEL, label),
			pkcs11.NewAttribute(pkcs11.CKA_ID, id),
			pkcs11.NewAttribute(pkcs11.CKA_VALUE, key),
		})
		return err
	})
	if err != nil {
		return fmt.Errorf("hsm: import key-encryption key %x: %w", id, err)
	}
	return nil
}

func (t *Token) findKEK(id []byte) (*KEK, error) {
	if len(id) == 0 || len(id) > MaxKEKIDLen {
		return nil, fmt.Errorf("%w: key-encryption key identifier of %d bytes", ErrKeyNotFound, len(id))
	}
	k := &KEK{t: t, id: append([]byte(nil), id...), label: kekLabel(id)}
	err := t.do("find-kek", func(s session) error {
		h, err := t.findKEKHandle(s.h, k.label)
		if err != nil {
			return err
		}
		attrs, err := t.ctx.GetAttributeValue(s.h, h, []*pkcs11.Attribute{pkcs11.NewAttribute(pkcs11.CKA_VALUE_LEN, nil)})
		if err != nil {
			return err
		}
		k.bits = int(ulong(attrs[0].Value)) * 8
		k.h, k.gen, k.found = h, s.gen, true
		return nil
	})
	if err != nil {
		return nil, fmt.Errorf("hsm: find key-encryption key %x: %w", id, err)
	}
	if k.bits != 128 && k.bits != 192 && k.bits != 256 {
		return nil, fmt.Errorf("hsm: key-encryption key %x: %w: AES key of %d bits", id, ErrKeyType, k.bits)
	}
	return k, nil
}

func (t *Token) findKEKHandle(s pkcs11.SessionHandle, label string) (pkcs11.ObjectHandle, error) {
	return t.findOne(s, pkcs11.CKO_SECRET_KEY, label, "key-encryption key")
}

func (k *KEK) wrapKey(cek []byte) ([]byte, error) {
	if len(cek) != 16 && len(cek) != 24 && len(cek) != 32 {
		return nil, fmt.Errorf("hsm: wrap under key-encryption key %x: content key of %d bytes", k.id, len(cek))
	}
	var wrapped []byte
	err := k.t.do("kek-wrap", func(s session) error {
		h, err := k.handle(s)
		if err != nil {
			return err
		}
		// The content-encryption key enters the token as an extractable
		// session object only to be wrapped, then is destroyed.
		ck, err := k.t.aesSessionKey(s.h, cek, false)
		if err != nil {
			return err
		}
		wrapped, err = k.t.wrapKey(s.h, pkcs11.CKM_AES_KEY_WRAP, h, ck)
		err = k.markStale(err)
		if derr := k.t.ctx.DestroyObject(s.h, ck); err == nil {
			err = derr
		}
		return err
	})
	if err != nil {
		return nil, fmt.Errorf("hsm: wrap under key-encryption key %x: %w", k.id, err)
	}
	if len(wrapped) != len(cek)+8 {
		return nil, fmt.Errorf("hsm: wrap under key-encryption key %x: %d bytes wrapped, want %d", k.id, len(wrapped), len(cek)+8)
	}
	return wrapped, nil
}

func (t *Token) keks() ([]KEKInfo, error) {
	var out []KEKInfo
	err := t.do("list-keks", func(s session) error {
		out = nil
		objs, err := t.labelled(s.h, pkcs11.CKO_SECRET_KEY, KEKPrefix)
		if err != nil {
			return err
		}
		for _, o := range objs {
			attrs, err := t.ctx.GetAttributeValue(s.h, o.h, []*pkcs11.Attribute{pkcs11.NewAttribute(pkcs11.CKA_VALUE_LEN, nil)})
			if err != nil {
				return err
			}
			out = append(out, KEKInfo{ID: o.id, Label: o.label, Bits: int(ulong(attrs[0].Value)) * 8})
		}
		return nil
	})
	if err != nil {
		return nil, fmt.Errorf("hsm: list key-encryption keys: %w", err)
	}
	return out, nil
}

func (t *Token) deleteKEK(id []byte) error {
	label := kekLabel(id)
	t.keyMu.Lock()
	defer t.keyMu.Unlock()
	err := t.do("delete-kek", func(s session) error {
		h, err := t.findKEKHandle(s.h, label)
		if err != nil {
			return err
		}
		return t.ctx.DestroyObject(s.h, h)
	})
	if err != nil {
		return fmt.Errorf("hsm: delete key-encryption key %x: %w", id, err)
	}
	return nil
}

var errNoKEK = errors.New("hsm: key-encryption key must be 16, 24 or 32 bytes with an identifier of 1 to 64 bytes")

func checkKEK(id, key []byte) error {
	if len(id) == 0 || len(id) > MaxKEKIDLen || (len(key) != 16 && len(key) != 24 && len(key) != 32) {
		return errNoKEK
	}
	return nil
}

func (k *KEK) kekBits() int  { return k.bits }
func (k *KEK) kekID() []byte { return append([]byte(nil), k.id...) }
