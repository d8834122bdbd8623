package ca

import (
	"context"
	"crypto"
	"crypto/ecdsa"
	"crypto/rand"
	"crypto/rsa"
	"crypto/sha256"
	"crypto/sha512"
	"encoding/asn1"
	"errors"
	"io"
	"math/big"
	"slices"
	"strings"
	"sync"
	"testing"

	"github.com/estca/estca/hsm"
	"github.com/estca/estca/policy/pkitest"
	"github.com/estca/estca/store"
)

// fault is what a faultySigner does to the signatures of the key it wraps.
type fault int

const (
	faultNone     fault = iota
	faultFlip           // flip the low bit of ECDSA s (still valid DER) or of an RSA/Ed25519 signature
	faultWrongKey       // sign with another key, claim the real one
	faultGarbage        // return bytes that are not a signature at all
)

// faultySigner injects faults into the signatures of a real key, as a faulty
// HSM, a glitched computation or a key swapped in the token would.
type faultySigner struct {
	crypto.Signer               // the real key
	other         crypto.Signer // faultWrongKey signs with this one

	mu   sync.Mutex
	mode fault
}

func (f *faultySigner) set(m fault) {
	f.mu.Lock()
	f.mode = m
	f.mu.Unlock()
}

func (f *faultySigner) Sign(r io.Reader, digest []byte, opts crypto.SignerOpts) ([]byte, error) {
	f.mu.Lock()
	mode := f.mode
	f.mu.Unlock()
	s := f.Signer
	if mode == faultWrongKey {
		s = f.other
	}
	sig, err := s.Sign(r, digest, opts)
	if err != nil {
		return nil, err
	}
	switch mode {
	case faultFlip:
		return flipBit(sig), nil
	case faultGarbage:
		return []byte{0x30, 0x03, 0x02, 0x01, 0x01}, nil
	}
	return sig, nil
}

// flipBit flips the lowest bit of an ECDSA signature's s (keeping the DER
// valid, so only verification can tell) or of a raw signature.
func flipBit(sig []byte) []byte {
	var rs struct{ R, S *big.Int }
	if rest, err := asn1.Unmarshal(sig, &rs); err == nil && len(rest) == 0 {
		rs.S.SetBit(rs.S, 0, rs.S.Bit(0)^1)
		out, err := asn1.Marshal(rs)
		if err != nil {
			panic(err)
		}
		return out
	}
	out := slices.Clone(sig)
	out[len(out)-1] ^= 1
	return out
}

func TestVerifySigner(t *testing.T) {
	t.Parallel()
	ec256, ec384, other := pkitest.NewKey(t, "p256"), pkitest.NewKey(t, "p384"), pkitest.NewKey(t, "p256")
	rsaKey, otherRSA := pkitest.NewKey(t, "rsa2048"), pkitest.NewKey(t, "rsa2048")
	edKey, otherEd := pkitest.NewKey(t, "ed25519"), pkitest.NewKey(t, "ed25519")
	d256 := sha256.Sum256([]byte("tbs"))
	d384 := sha512.Sum384([]byte("tbs"))
	msg := []byte("tbs")
	cases := []struct {
		name   string
		key    crypto.Signer
		other  crypto.Signer
		digest []byte
		opts   crypto.SignerOpts
	}{
		{"ecdsa-p256", ec256, other, d256[:], crypto.SHA256},
		{"ecdsa-p384", ec384, other, d384[:], crypto.SHA384},
		{"rsa-pkcs1", rsaKey, otherRSA, d256[:], crypto.SHA256},
		{"rsa-pss", rsaKey, otherRSA, d256[:], &rsa.PSSOptions{SaltLength: rsa.PSSSaltLengthEqualsHash, Hash: crypto.SHA256}},
		{"ed25519", edKey, otherEd, msg, crypto.Hash(0)},
	}
	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			fs := &faultySigner{Signer: c.key, other: c.other}
			var bad []error
			v := VerifySigner(fs, c.key.Public(), func(err error) { bad = append(bad, err) })
			for _, m := range []fault{faultNone, faultFlip, faultWrongKey, faultGarbage, faultNone} {
				fs.set(m)
				sig, err := v.Sign(rand.Reader, c.digest, c.opts)
				if m == faultNone {
					if err != nil || len(sig) == 0 {
						t.Fatalf("good signature refused: %v", err)
					}
					continue
				}
				if !errors.Is(err, ErrBadSignature) || sig != nil {
					t.Fatalf("fault %d: Sign = %x, %v; want no signature and ErrBadSignature", m, sig, err)
				}
			}
			if len(bad) != 3 {
				t.Errorf("onBad called %d times, want 3", len(bad))
			}
		})
	}
	// The wrapped signer's own errors pass unchanged; Public is the given key.
	v := VerifySigner(errSigner{ec256}, other.Public(), nil)
	if _, err := v.Sign(rand.Reader, d256[:], crypto.SHA256); !errors.Is(err, hsm.ErrUnavailable) || errors.Is(err, ErrBadSignature) {
		t.Errorf("signer error = %v", err)
	}
	if !v.Public().(*ecdsa.PublicKey).Equal(other.Public()) {
		t.Error("Public is not the key given")
	}
}

type errSigner struct{ crypto.Signer }

func (errSigner) Sign(io.Reader, []byte, crypto.SignerOpts) ([]byte, error) {
	return nil, hsm.ErrUnavailable
}

// TestBadHSMSignature wraps the real SoftHSM issuing key in a fault injector:
// a certificate whose signature does not verify is never stored nor
// returned, the refusal is audited, and the authority issues again once the
// faults stop. The fast TBS path (ECDSA issuing key) and the
// x509.CreateCertificate path are both covered.
func TestBadHSMSignature(t *testing.T) {
	f := newFixture(t)
	other, err := f.tok.GenerateKey("not-the-issuing-key", hsm.ECDSAP256)
	if err != nil {
		t.Fatal(err)
	}
	for _, path := range []string{"fast", "x509"} {
		t.Run(path, func(t *testing.T) {
			fs := &faultySigner{Signer: f.opts.Signer, other: other}
			opts := f.opts
			opts.Signer = fs
			a, err := New(opts)
			if err != nil {
				t.Fatal(err)
			}
			if path == "x509" {
				a.fast = nil
			} else if a.fast == nil {
				t.Fatal("the ECDSA issuing key does not take the fast path")
			}
			req := Request{Requester: f.requester(t, f.demo.Valid)}
			for _, m := range []fault{faultFlip, faultWrongKey, faultGarbage} {
				req.CSR = f.csr(t, f.demo.Valid)
				before := f.count(t)
				fs.set(m)
				res, err := a.Enroll(context.Background(), req)
				if res != nil || !errors.Is(err, ErrBadSignature) {
					t.Fatalf("fault %d: Enroll = %v, %v; want ErrBadSignature and no result", m, res, err)
				}
				wantKind(t, err, KindInternal, "invalid HSM signature")
				if !Audited(err) {
					t.Errorf("fault %d: refusal not audited", m)
				}
				if n := f.count(t); n != before {
					t.Fatalf("fault %d: %d certificates stored by a bad signature", m, n-before)
				}
				rec := f.lastAudit(t)
				if rec.Event != store.EventDenied || rec.Reason != "sen: invalid HSM signature" || !slices.Contains(rec.Flags, FlagBadSignature) {
					t.Fatalf("fault %d: audit record %+v", m, rec)
				}
				// The same CSR goes through once the HSM behaves: nothing
				// of the failed attempt blocks it.
				fs.set(faultNone)
				res = f.enrollWith(t, a, req)
				if err := res.Certificate.CheckSignatureFrom(f.h.Issuing); err != nil {
					t.Fatalf("certificate after the fault: %v", err)
				}
			}
		})
	}
}

func (f *fixture) enrollWith(t testing.TB, a *Authority, req Request) *Result {
	t.Helper()
	res, err := a.Enroll(context.Background(), req)
	if err != nil {
		t.Fatalf("Enroll: %v", err)
	}
	return res
}

// TestHSMUnavailable: a signer that reports the token down gives 5.03 with
// Max-Age HSMRetryAfter, nothing stored.
func TestHSMUnavailable(t *testing.T) {
	f := newFixture(t)
	opts := f.opts
	opts.Signer = errSigner{f.opts.Signer}
	a, err := New(opts)
	if err != nil {
		t.Fatal(err)
	}
	req := Request{Requester: f.requester(t, f.demo.Valid), CSR: f.csr(t, f.demo.Valid)}
	_, err = a.Enroll(context.Background(), req)
	wantKind(t, err, KindUnavailable, "hsm unavailable")
	if e := err.(*Error); e.MaxAge != HSMRetryAfter || !errors.Is(err, ErrHSMUnavailable) {
		t.Errorf("error %v: Max-Age %v", err, e.MaxAge)
	}
	if f.count(t) != 0 {
		t.Error("a certificate was stored")
	}
}

// TestNewChecksWrappedKey: a VerifyingSigner reports the certificate's key as
// its Public; New still checks the key the token holds against the
// certificate, so a wrong key label fails at start, not at every signature.
func TestNewChecksWrappedKey(t *testing.T) {
	f := newFixture(t)
	other, err := f.tok.GenerateKey("wrong-label", hsm.ECDSAP256)
	if err != nil {
		t.Fatal(err)
	}
	opts := f.opts
	opts.Signer = VerifySigner(other, f.h.Issuing.PublicKey, nil)
	if _, err := New(opts); err == nil || !strings.Contains(err.Error(), "issuing signer does not match") {
		t.Fatalf("New with the wrong key behind a VerifyingSigner: %v", err)
	}
	opts.Signer = VerifySigner(f.opts.Signer, f.h.Issuing.PublicKey, nil)
	a, err := New(opts)
	if err != nil {
		t.Fatal(err)
	}
	if a.signer != opts.Signer {
		t.Error("New wrapped a VerifyingSigner for the issuing key a second time")
	}
}
