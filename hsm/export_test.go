//go:build cgo

package hsm

import "github.com/miekg/pkcs11"

// CountKeyObjects counts the private, public and secret key objects the
// application sees, session objects included (find sees token objects only).
func (t *Token) CountKeyObjects() (int, error) {
	n := 0
	err := t.do("count", func(s session) error {
		n = 0
		for _, class := range []uint{pkcs11.CKO_PRIVATE_KEY, pkcs11.CKO_PUBLIC_KEY, pkcs11.CKO_SECRET_KEY} {
			if err := t.ctx.FindObjectsInit(s.h, []*pkcs11.Attribute{pkcs11.NewAttribute(pkcs11.CKA_CLASS, class)}); err != nil {
				return err
			}
			hs, _, err := t.ctx.FindObjects(s.h, 10000)
			if ferr := t.ctx.FindObjectsFinal(s.h); err == nil {
				err = ferr
			}
			if err != nil {
				return err
			}
			n += len(hs)
		}
		return nil
	})
	return n, err
}

// KEKValueReadable reports whether the token hands out the value of the
// key-encryption key id (it must not: CKA_SENSITIVE, not CKA_EXTRACTABLE).
func (t *Token) KEKValueReadable(id []byte) (bool, error) {
	readable := false
	err := t.do("kek-value", func(s session) error {
		h, err := t.findKEKHandle(s.h, kekLabel(id))
		if err != nil {
			return err
		}
		attrs, err := t.ctx.GetAttributeValue(s.h, h, []*pkcs11.Attribute{
			pkcs11.NewAttribute(pkcs11.CKA_VALUE, nil),
		})
		readable = err == nil && len(attrs) == 1 && len(attrs[0].Value) > 0
		attrs, err = t.ctx.GetAttributeValue(s.h, h, []*pkcs11.Attribute{
			pkcs11.NewAttribute(pkcs11.CKA_EXTRACTABLE, nil),
		})
		if err != nil {
			return err
		}
		readable = readable || (len(attrs[0].Value) == 1 && attrs[0].Value[0] != 0)
		return nil
	})
	return readable, err
}

// FailWith runs an operation through the Token's real path (session pool,
// recovery, error classification, observer) whose PKCS#11 call returns rv:
// for return values SoftHSM cannot be made to produce, such as
// CKR_DEVICE_MEMORY.
func (t *Token) FailWith(rv uint) error {
	return t.do("fail-with", func(session) error { return pkcs11.Error(rv) })
}

// SessionCopies describes the session copies of the private key labelled
// label (Options.SignWithTokenObjects).
func (t *Token) SessionCopies(label string) ([]KeyInfo, error) {
	var out []KeyInfo
	err := t.do("copies", func(s session) error {
		out = nil
		hs, err := t.findCopies(s.h, label)
		if err != nil {
			return err
		}
		for _, h := range hs {
			ki, err := t.objectInfo(s.h, h, label)
			if err != nil {
				return err
			}
			out = append(out, ki)
		}
		return nil
	})
	return out, err
}

// GenerateUncopyable generates a P-256 signing key as GenerateKey does, with
// CKA_COPYABLE false: the token must refuse its session copy.
func (t *Token) GenerateUncopyable(label string) error {
	mech, pubT, privT, err := pairTemplates(ECDSAP256, label, []byte(label), true, false)
	if err != nil {
		return err
	}
	privT = append(privT, pkcs11.NewAttribute(pkcs11.CKA_COPYABLE, false))
	return t.do("generate-uncopyable", func(s session) error {
		_, _, err := t.ctx.GenerateKeyPair(s.h, mech, pubT, privT)
		return err
	})
}

// OneCall reports whether the Token signs with C_SignInit and C_Sign in one
// cgo call (the module exports both).
func (t *Token) OneCall() bool { return t.one != nil }

// OneCallWraps reports whether the Token wraps with one C_WrapKey call
// (no length query first), and how many such calls it made.
func (t *Token) OneCallWraps() (bool, uint64) { return t.one.canWrap(), t.one.wrapCalls() }

// SetWrapBufferSize sets the buffer of the one-call C_WrapKey, returning
// the previous size: a small one exercises the retry with the length the
// module asks for.
func SetWrapBufferSize(n int) int {
	old := wrapBufferSize
	wrapBufferSize = n
	return old
}
