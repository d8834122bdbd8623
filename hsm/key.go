//go:build cgo

package hsm

import (
	"crypto"
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/rsa"
	"encoding/asn1"
	"encoding/binary"
	"errors"
	"fmt"
	"math/big"
	"sync"

	"github.com/miekg/pkcs11"
)

// Named-curve OIDs (RFC 5480 section 2.1.1.1).
func oidP256() asn1.ObjectIdentifier { return asn1.ObjectIdentifier{1, 2, 840, 10045, 3, 1, 7} }
func oidP384() asn1.ObjectIdentifier { return asn1.ObjectIdentifier{1, 3, 132, 0, 34} }

func (t *Token) generateKey(label string, kt KeyType) (crypto.Signer, error) {
	if label == "" {
		return nil, errors.New("hsm: generate key: empty label")
	}
	kt, err := ParseKeyType(string(kt))
	if err != nil {
		return nil, err
	}
	id := make([]byte, 16)
	if _, err := rand.Read(id); err != nil {
		return nil, fmt.Errorf("hsm: generate key id: %w", err)
	}
	mech, pubT, privT, err := pairTemplates(kt, label, id, true, false)
	if err != nil {
		return nil, fmt.Errorf("hsm: generate key: %w", err)
	}

	t.keyMu.Lock()
	defer t.keyMu.Unlock()
	var k *Key
	err = t.do("generate-key", func(s session) error {
		if err := t.labelFree(s.h, label); err != nil {
			return err
		}
		_, priv, err := t.ctx.GenerateKeyPair(s.h, mech, pubT, privT)
		if err != nil {
			return err
		}
		k, err = t.loadKey(s, priv, label)
		return err
	})
	if err != nil {
		return nil, fmt.Errorf("hsm: generate %s key %q: %w", kt, label, err)
	}
	return k, nil
}

// pairTemplates returns the mechanism and the public and private key
// templates of C_GenerateKeyPair for kt. A CA key (exportable false) is a
// token object that signs and never leaves the token; an exportable key
// (server-side key generation) is CKA_EXTRACTABLE (so that C_WrapKey can
// export it) and CKA_SENSITIVE (so that it never leaves in the clear), may
// use nothing in the token (no CKA_SIGN, CKA_DECRYPT, CKA_DERIVE,
// CKA_UNWRAP) and is a token object only when token is set. Session objects
// are not CKA_PRIVATE: they are visible to this application's sessions
// only anyway (PKCS#11 v2.40 §4.4), live for one operation, and SoftHSM
// then spares the in-memory encryption of their attributes.
func pairTemplates(kt KeyType, label string, id []byte, token, exportable bool) ([]*pkcs11.Mechanism, []*pkcs11.Attribute, []*pkcs11.Attribute, error) {
	pubT := []*pkcs11.Attribute{
		pkcs11.NewAttribute(pkcs11.CKA_CLASS, pkcs11.CKO_PUBLIC_KEY),
		pkcs11.NewAttribute(pkcs11.CKA_TOKEN, token),
		pkcs11.NewAttribute(pkcs11.CKA_PRIVATE, false),
		pkcs11.NewAttribute(pkcs11.CKA_VERIFY, !exportable),
		pkcs11.NewAttribute(pkcs11.CKA_ENCRYPT, false),
		pkcs11.NewAttribute(pkcs11.CKA_WRAP, false),
		pkcs11.NewAttribute(pkcs11.CKA_LABEL, label),
		pkcs11.NewAttribute(pkcs11.CKA_ID, id),
	}
	privT := []*pkcs11.Attribute{
		pkcs11.NewAttribute(pkcs11.CKA_CLASS, pkcs11.CKO_PRIVATE_KEY),
		pkcs11.NewAttribute(pkcs11.CKA_TOKEN, token),
		pkcs11.NewAttribute(pkcs11.CKA_PRIVATE, token),
		pkcs11.NewAttribute(pkcs11.CKA_SENSITIVE, true),
		pkcs11.NewAttribute(pkcs11.CKA_EXTRACTABLE, exportable),
		pkcs11.NewAttribute(pkcs11.CKA_SIGN, !exportable),
		pkcs11.NewAttribute(pkcs11.CKA_DECRYPT, false),
		pkcs11.NewAttribute(pkcs11.CKA_UNWRAP, false),
		pkcs11.NewAttribute(pkcs11.CKA_LABEL, label),
		pkcs11.NewAttribute(pkcs11.CKA_ID, id),
	}
	var mech uint
	switch kt {
	case ECDSAP256, ECDSAP384:
		oid := oidP256()
		if kt == ECDSAP384 {
			oid = oidP384()
		}
		params, err := asn1.Marshal(oid)
		if err != nil {
			return nil, nil, nil, err
		}
		mech = pkcs11.CKM_EC_KEY_PAIR_GEN
		pubT = append(pubT, pkcs11.NewAttribute(pkcs11.CKA_KEY_TYPE, pkcs11.CKK_EC),
			pkcs11.NewAttribute(pkcs11.CKA_EC_PARAMS, params))
		privT = append(privT, pkcs11.NewAttribute(pkcs11.CKA_KEY_TYPE, pkcs11.CKK_EC),
			pkcs11.NewAttribute(pkcs11.CKA_DERIVE, false))
	case RSA2048, RSA3072:
		bits := 3072
		if kt == RSA2048 {
			bits = 2048
		}
		mech = pkcs11.CKM_RSA_PKCS_KEY_PAIR_GEN
		pubT = append(pubT, pkcs11.NewAttribute(pkcs11.CKA_KEY_TYPE, pkcs11.CKK_RSA),
			pkcs11.NewAttribute(pkcs11.CKA_MODULUS_BITS, bits),
			pkcs11.NewAttribute(pkcs11.CKA_PUBLIC_EXPONENT, []byte{1, 0, 1}))
		privT = append(privT, pkcs11.NewAttribute(pkcs11.CKA_KEY_TYPE, pkcs11.CKK_RSA))
	default:
		return nil, nil, nil, fmt.Errorf("%w: %q", ErrKeyType, kt)
	}
	return []*pkcs11.Mechanism{pkcs11.NewMechanism(mech, nil)}, pubT, privT, nil
}

func (t *Token) findKey(label string) (crypto.Signer, error) {
	var k *Key
	err := t.do("find-key", func(s session) error {
		h, err := t.findPrivate(s.h, label)
		if err != nil {
			return err
		}
		k, err = t.loadKey(s, h, label)
		return err
	})
	if err != nil {
		return nil, fmt.Errorf("hsm: find key %q: %w", label, err)
	}
	return k, nil
}

func (t *Token) keyInfo(label string) (KeyInfo, error) {
	var ki KeyInfo
	err := t.do("key-info", func(s session) error {
		h, err := t.findPrivate(s.h, label)
		if err != nil {
			return err
		}
		ki, err = t.objectInfo(s.h, h, label)
		return err
	})
	if err != nil {
		return KeyInfo{}, fmt.Errorf("hsm: key info %q: %w", label, err)
	}
	return ki, nil
}

// objectInfo describes the private key object h.
func (t *Token) objectInfo(s pkcs11.SessionHandle, h pkcs11.ObjectHandle, label string) (KeyInfo, error) {
	attrs, err := t.ctx.GetAttributeValue(s, h, []*pkcs11.Attribute{
		pkcs11.NewAttribute(pkcs11.CKA_TOKEN, nil),
		pkcs11.NewAttribute(pkcs11.CKA_PRIVATE, nil),
		pkcs11.NewAttribute(pkcs11.CKA_SIGN, nil),
		pkcs11.NewAttribute(pkcs11.CKA_SENSITIVE, nil),
		pkcs11.NewAttribute(pkcs11.CKA_EXTRACTABLE, nil),
		pkcs11.NewAttribute(pkcs11.CKA_ALWAYS_SENSITIVE, nil),
		pkcs11.NewAttribute(pkcs11.CKA_NEVER_EXTRACTABLE, nil),
		pkcs11.NewAttribute(pkcs11.CKA_ID, nil),
	})
	if err != nil {
		return KeyInfo{}, err
	}
	b := func(i int) bool { return len(attrs[i].Value) == 1 && attrs[i].Value[0] != 0 }
	ki := KeyInfo{
		Label: label, Token: b(0), Private: b(1), Sign: b(2), Sensitive: b(3),
		Extractable: b(4), AlwaysSensitive: b(5), NeverExtractable: b(6), ID: attrs[7].Value,
	}
	ki.Type, _, err = t.privateKeyType(s, h)
	return ki, err
}

func (t *Token) deleteKey(label string) error {
	t.keyMu.Lock()
	defer t.keyMu.Unlock()
	err := t.do("delete-key", func(s session) error {
		all, err := t.pairObjects(s.h, label)
		if err != nil {
			return err
		}
		t.loginMu.Lock() // no session copy is made while the key goes
		defer t.loginMu.Unlock()
		for _, h := range all {
			if err := t.ctx.DestroyObject(s.h, h); err != nil {
				return err
			}
		}
		for {
			copies, err := t.findCopies(s.h, label)
			if err != nil || len(copies) == 0 {
				return err
			}
			for _, h := range copies {
				if err := t.ctx.DestroyObject(s.h, h); err != nil {
					return err
				}
			}
		}
	})
	if err != nil {
		return fmt.Errorf("hsm: delete key %q: %w", label, err)
	}
	return nil
}

// find returns up to max objects of class with the label (and id, if non-nil).
func (t *Token) find(s pkcs11.SessionHandle, class uint, label string, id []byte, max int) ([]pkcs11.ObjectHandle, error) {
	tmpl := []*pkcs11.Attribute{
		pkcs11.NewAttribute(pkcs11.CKA_CLASS, class),
		pkcs11.NewAttribute(pkcs11.CKA_TOKEN, true),
	}
	if label != "" {
		tmpl = append(tmpl, pkcs11.NewAttribute(pkcs11.CKA_LABEL, label))
	}
	if id != nil {
		tmpl = append(tmpl, pkcs11.NewAttribute(pkcs11.CKA_ID, id))
	}
	if err := t.ctx.FindObjectsInit(s, tmpl); err != nil {
		return nil, err
	}
	hs, _, err := t.ctx.FindObjects(s, max)
	if ferr := t.ctx.FindObjectsFinal(s); err == nil {
		err = ferr
	}
	return hs, err
}

// findCopies returns the session copies of the private key labelled label
// (at most 64: one per Key found or generated for the label).
func (t *Token) findCopies(s pkcs11.SessionHandle, label string) ([]pkcs11.ObjectHandle, error) {
	tmpl := []*pkcs11.Attribute{
		pkcs11.NewAttribute(pkcs11.CKA_CLASS, pkcs11.CKO_PRIVATE_KEY),
		pkcs11.NewAttribute(pkcs11.CKA_TOKEN, false),
		pkcs11.NewAttribute(pkcs11.CKA_LABEL, label),
	}
	if err := t.ctx.FindObjectsInit(s, tmpl); err != nil {
		return nil, err
	}
	hs, _, err := t.ctx.FindObjects(s, 64)
	if ferr := t.ctx.FindObjectsFinal(s); err == nil {
		err = ferr
	}
	return hs, err
}

// pairObjects returns the private and public key objects labelled label
// (at most 16 of each), or an error wrapping ErrKeyNotFound if there are none.
func (t *Token) pairObjects(s pkcs11.SessionHandle, label string) ([]pkcs11.ObjectHandle, error) {
	var all []pkcs11.ObjectHandle
	for _, class := range []uint{pkcs11.CKO_PRIVATE_KEY, pkcs11.CKO_PUBLIC_KEY} {
		hs, err := t.find(s, class, label, nil, 16)
		if err != nil {
			return nil, err
		}
		all = append(all, hs...)
	}
	if len(all) == 0 {
		return nil, fmt.Errorf("%w: label %q", ErrKeyNotFound, label)
	}
	return all, nil
}

// labelFree fails with ErrKeyExists when a private or public key object is
// labelled label.
func (t *Token) labelFree(s pkcs11.SessionHandle, label string) error {
	for _, class := range []uint{pkcs11.CKO_PRIVATE_KEY, pkcs11.CKO_PUBLIC_KEY} {
		hs, err := t.find(s, class, label, nil, 1)
		if err != nil {
			return err
		}
		if len(hs) > 0 {
			return fmt.Errorf("%w: label %q", ErrKeyExists, label)
		}
	}
	return nil
}

// findPrivate returns the single private key labelled label.
func (t *Token) findPrivate(s pkcs11.SessionHandle, label string) (pkcs11.ObjectHandle, error) {
	return t.findOne(s, pkcs11.CKO_PRIVATE_KEY, label, "private key")
}

// findOne returns the single object of class labelled label (what names it
// in errors).
func (t *Token) findOne(s pkcs11.SessionHandle, class uint, label, what string) (pkcs11.ObjectHandle, error) {
	hs, err := t.find(s, class, label, nil, 2)
	switch {
	case err != nil:
		return 0, err
	case len(hs) == 0:
		return 0, fmt.Errorf("%w: label %q", ErrKeyNotFound, label)
	case len(hs) > 1:
		return 0, fmt.Errorf("hsm: more than one %s labelled %q", what, label)
	}
	return hs[0], nil
}

// privateKeyType reads the key type of a private key object, and for EC keys its curve.
func (t *Token) privateKeyType(s pkcs11.SessionHandle, h pkcs11.ObjectHandle) (KeyType, elliptic.Curve, error) {
	attrs, err := t.ctx.GetAttributeValue(s, h, []*pkcs11.Attribute{pkcs11.NewAttribute(pkcs11.CKA_KEY_TYPE, nil)})
	if err != nil {
		return "", nil, err
	}
	switch ulong(attrs[0].Value) {
	case pkcs11.CKK_EC:
		attrs, err := t.ctx.GetAttributeValue(s, h, []*pkcs11.Attribute{pkcs11.NewAttribute(pkcs11.CKA_EC_PARAMS, nil)})
		if err != nil {
			return "", nil, err
		}
		var oid asn1.ObjectIdentifier
		if _, err := asn1.Unmarshal(attrs[0].Value, &oid); err != nil {
			return "", nil, fmt.Errorf("hsm: CKA_EC_PARAMS is not a named curve: %w", err)
		}
		switch {
		case oid.Equal(oidP256()):
			return ECDSAP256, elliptic.P256(), nil
		case oid.Equal(oidP384()):
			return ECDSAP384, elliptic.P384(), nil
		}
		return KeyType("ecdsa-" + oid.String()), nil, nil
	case pkcs11.CKK_RSA:
		attrs, err := t.ctx.GetAttributeValue(s, h, []*pkcs11.Attribute{pkcs11.NewAttribute(pkcs11.CKA_MODULUS, nil)})
		if err != nil {
			return "", nil, err
		}
		return KeyType(fmt.Sprintf("rsa-%d", new(big.Int).SetBytes(attrs[0].Value).BitLen())), nil, nil
	}
	return KeyType(fmt.Sprintf("pkcs11-key-type-%#x", ulong(attrs[0].Value))), nil, nil
}

// loadKey builds the signer for the private key h: it reads the public key
// (from the private object for RSA, from the public object with the same
// CKA_ID, else the same label, for EC).
func (t *Token) loadKey(s session, h pkcs11.ObjectHandle, label string) (*Key, error) {
	kt, pub, err := t.publicKey(s.h, h, label)
	if err != nil {
		return nil, err
	}
	return &Key{t: t, label: label, kt: kt, pub: pub, priv: h, gen: s.gen}, nil
}

func (t *Token) publicKey(s pkcs11.SessionHandle, h pkcs11.ObjectHandle, label string) (KeyType, crypto.PublicKey, error) {
	kt, curve, err := t.privateKeyType(s, h)
	if err != nil {
		return "", nil, err
	}
	switch {
	case kt == ECDSAP256 || kt == ECDSAP384:
		attrs, err := t.ctx.GetAttributeValue(s, h, []*pkcs11.Attribute{pkcs11.NewAttribute(pkcs11.CKA_ID, nil)})
		if err != nil {
			return "", nil, err
		}
		var hs []pkcs11.ObjectHandle
		if id := attrs[0].Value; len(id) > 0 {
			if hs, err = t.find(s, pkcs11.CKO_PUBLIC_KEY, "", id, 1); err != nil {
				return "", nil, err
			}
		}
		if len(hs) == 0 {
			if hs, err = t.find(s, pkcs11.CKO_PUBLIC_KEY, label, nil, 1); err != nil {
				return "", nil, err
			}
		}
		if len(hs) == 0 {
			return "", nil, fmt.Errorf("%w: no public key object for EC key %q", ErrKeyNotFound, label)
		}
		attrs, err = t.ctx.GetAttributeValue(s, hs[0], []*pkcs11.Attribute{pkcs11.NewAttribute(pkcs11.CKA_EC_POINT, nil)})
		if err != nil {
			return "", nil, err
		}
		pub, err := parseECPoint(curve, attrs[0].Value)
		return kt, pub, err
	case len(kt) > 4 && kt[:4] == "rsa-":
		attrs, err := t.ctx.GetAttributeValue(s, h, []*pkcs11.Attribute{
			pkcs11.NewAttribute(pkcs11.CKA_MODULUS, nil),
			pkcs11.NewAttribute(pkcs11.CKA_PUBLIC_EXPONENT, nil),
		})
		if err != nil {
			return "", nil, err
		}
		e := new(big.Int).SetBytes(attrs[1].Value)
		if !e.IsInt64() || e.Int64() < 3 || e.Int64() > 1<<31-1 {
			return "", nil, fmt.Errorf("%w: RSA public exponent out of range", ErrKeyType)
		}
		return kt, &rsa.PublicKey{N: new(big.Int).SetBytes(attrs[0].Value), E: int(e.Int64())}, nil
	}
	return "", nil, fmt.Errorf("%w: %s", ErrKeyType, kt)
}

// parseECPoint decodes CKA_EC_POINT: a DER OCTET STRING holding the
// uncompressed point (PKCS#11 v2.40), or the raw point some modules return.
func parseECPoint(curve elliptic.Curve, v []byte) (*ecdsa.PublicKey, error) {
	var inner []byte
	if rest, err := asn1.Unmarshal(v, &inner); err == nil && len(rest) == 0 {
		if pub, err := ecdsa.ParseUncompressedPublicKey(curve, inner); err == nil {
			return pub, nil
		}
	}
	pub, err := ecdsa.ParseUncompressedPublicKey(curve, v)
	if err != nil {
		return nil, fmt.Errorf("hsm: CKA_EC_POINT: %w", err)
	}
	return pub, nil
}

// ulong decodes a CK_ULONG attribute value (native byte order and size).
func ulong(b []byte) uint {
	switch len(b) {
	case 8:
		return uint(binary.NativeEndian.Uint64(b))
	case 4:
		return uint(binary.NativeEndian.Uint32(b))
	}
	return ^uint(0)
}

// Key is a private key in a Token. It implements crypto.Signer; Public needs
// no session. It is safe for concurrent use; if its object handle goes stale
// (sessions died, the module re-initialised) it finds the key again by label
// and checks that the public key is unchanged.
type Key struct {
	t     *Token
	label string
	kt    KeyType
	pub   crypto.PublicKey

	mu     sync.Mutex
	priv   pkcs11.ObjectHandle // what signs: the session copy, or the token object
	gen    uint64
	stale  bool
	copied bool // priv is a session copy made in the login session of generation gen
	tried  bool // a session copy was attempted in generation gen
}

func (k *Key) public() crypto.PublicKey { return k.pub }

func (k *Key) keyLabel() string { return k.label }

func (k *Key) keyType() KeyType { return k.kt }

// handle returns a private key handle valid in the generation of s.
func (k *Key) handle(s session) (pkcs11.ObjectHandle, error) {
	k.mu.Lock()
	defer k.mu.Unlock()
	if !k.stale && k.gen == s.gen {
		if !k.tried { // the first signature of a Key found or generated: copy it now
			k.tried = true
			if c, ok := k.t.sessionCopy(k.priv, s.gen); ok {
				k.priv, k.copied = c, true
			}
		}
		return k.priv, nil
	}
	h, err := k.t.findPrivate(s.h, k.label)
	if err != nil {
		return 0, err
	}
	_, pub, err := k.t.publicKey(s.h, h, k.label)
	if err != nil {
		return 0, err
	}
	if eq, ok := pub.(interface{ Equal(crypto.PublicKey) bool }); !ok || !eq.Equal(k.pub) {
		return 0, fmt.Errorf("%w: key labelled %q was replaced by a different key", ErrKeyNotFound, k.label)
	}
	if k.copied && k.gen == s.gen {
		k.t.destroyCopy(k.priv, k.gen) // stale within its login session: do not leave it behind
	}
	k.copied, k.tried = false, true
	if c, ok := k.t.sessionCopy(h, s.gen); ok {
		h, k.copied = c, true
	}
	k.priv, k.gen, k.stale = h, s.gen, false
	return h, nil
}

// sessionCopy copies the private key object h as a session object of the
// login session of generation gen (see Options.SignWithTokenObjects). It
// reports false, and the caller signs with h, if copies are off, the
// generation is over, or the module refuses the copy.
func (t *Token) sessionCopy(h pkcs11.ObjectHandle, gen uint64) (pkcs11.ObjectHandle, bool) {
	if t.tokenObjects {
		return 0, false
	}
	t.loginMu.Lock()
	defer t.loginMu.Unlock()
	login, ok := t.loginOf(gen)
	if !ok {
		return 0, false
	}
	c, err := t.ctx.CopyObject(login, h, []*pkcs11.Attribute{pkcs11.NewAttribute(pkcs11.CKA_TOKEN, false)})
	if err != nil {
		return 0, false
	}
	return c, true
}

// destroyCopy destroys a session copy made in generation gen, if its login
// session is still the Token's (otherwise the copy died with it).
func (t *Token) destroyCopy(c pkcs11.ObjectHandle, gen uint64) {
	t.loginMu.Lock()
	defer t.loginMu.Unlock()
	if login, ok := t.loginOf(gen); ok {
		_ = t.ctx.DestroyObject(login, c)
	}
}

// loginOf returns the login session if it is still that of generation gen.
// The caller holds loginMu.
func (t *Token) loginOf(gen uint64) (pkcs11.SessionHandle, bool) {
	t.mu.Lock()
	defer t.mu.Unlock()
	return t.login, t.login != 0 && t.gen == gen
}

func (k *Key) markStale(err error) {
	if classify(err) != classFatal {
		k.mu.Lock()
		k.stale = true
		k.mu.Unlock()
	}
}

func (k *Key) sign(digest []byte, opts crypto.SignerOpts) ([]byte, error) {
	mech, data, err := k.mechanism(digest, opts)
	if err != nil {
		return nil, fmt.Errorf("hsm: sign with %q: %w", k.label, err)
	}
	var sig []byte
	err = k.t.do("sign", func(s session) error {
		h, err := k.handle(s)
		if err != nil {
			return err
		}
		if k.t.one != nil && mech[0].Parameter == nil {
			sig, err = k.t.one.sign(s.h, mech[0].Mechanism, h, data, make([]byte, k.sigSize()))
			k.markStale(err)
			return err
		}
		if err := k.t.ctx.SignInit(s.h, mech, h); err != nil {
			k.markStale(err)
			return err
		}
		sig, err = k.t.ctx.Sign(s.h, data)
		k.markStale(err)
		return err
	})
	if err != nil {
		return nil, fmt.Errorf("hsm: sign with %q: %w", k.label, err)
	}
	if _, ok := k.pub.(*ecdsa.PublicKey); ok {
		return ecdsaDER(sig)
	}
	return sig, nil
}

// sigSize is the length of the key's raw PKCS#11 signatures: r || s for
// ECDSA, the modulus length for RSA.
func (k *Key) sigSize() int {
	switch pub := k.pub.(type) {
	case *ecdsa.PublicKey:
		return 2 * ((pub.Curve.Params().BitSize + 7) / 8)
	case *rsa.PublicKey:
		return pub.Size()
	}
	return 1024
}

// ecdsaDER converts a PKCS#11 ECDSA signature (r || s, equal halves) to the
// DER Ecdsa-Sig-Value of RFC 5480 section 2.2 / RFC 3279 section 2.2.3.
func ecdsaDER(raw []byte) ([]byte, error) {
	if len(raw) == 0 || len(raw)%2 != 0 {
		return nil, fmt.Errorf("hsm: malformed ECDSA signature of %d bytes", len(raw))
	}
	n := len(raw) / 2
	return asn1.Marshal(struct{ R, S *big.Int }{
		new(big.Int).SetBytes(raw[:n]), new(big.Int).SetBytes(raw[n:]),
	})
}
