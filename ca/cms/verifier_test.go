package cms

import (
	"crypto"
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/sha256"
	"crypto/sha512"
	"errors"
	"math/big"
	"path/filepath"
	"testing"

	"golang.org/x/crypto/cryptobyte"
	cbasn1 "golang.org/x/crypto/cryptobyte/asn1"
)

// derSig encodes r and s as an ASN.1 ECDSA signature, whatever their values.
func derSig(r, s *big.Int) []byte {
	var b cryptobyte.Builder
	b.AddASN1(cbasn1.SEQUENCE, func(b *cryptobyte.Builder) {
		b.AddASN1BigInt(r)
		b.AddASN1BigInt(s)
	})
	return b.BytesOrPanic()
}

func splitSig(t testing.TB, sig []byte) (r, s *big.Int) {
	r, s = new(big.Int), new(big.Int)
	in := cryptobyte.String(sig)
	var inner cryptobyte.String
	if !in.ReadASN1(&inner, cbasn1.SEQUENCE) || !inner.ReadASN1Integer(r) || !inner.ReadASN1Integer(s) {
		t.Fatal("bad test signature")
	}
	return r, s
}

// sameAnswer fails t unless v answers for (digest, sig) what crypto/ecdsa
// answers under pub.
func sameAnswer(t testing.TB, v *Verifier, pub *ecdsa.PublicKey, digest, sig []byte, what string) {
	t.Helper()
	want := ecdsa.VerifyASN1(pub, digest, sig)
	err := v.Verify(digest, sig, crypto.SHA256)
	if err != nil && !errors.Is(err, ErrSignature) {
		t.Fatalf("%s: error %v is not ErrSignature", what, err)
	}
	if got := err == nil; got != want {
		t.Fatalf("%s: Verifier says %v, crypto/ecdsa says %v (digest %x, sig %x)", what, got, want, digest, sig)
	}
}

// TestVerifierMatchesECDSA holds the table verification of P-256 keys to
// crypto/ecdsa on good signatures and on every way of spoiling one.
func TestVerifierMatchesECDSA(t *testing.T) {
	n := elliptic.P256().Params().N
	for k := range 3 {
		key, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
		if err != nil {
			t.Fatal(err)
		}
		v := NewVerifier(&key.PublicKey)
		other, _ := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
		for i := range 100 {
			var digest []byte
			switch i % 5 {
			case 0:
				d := sha512.Sum384([]byte{byte(k), byte(i)}) // longer than the order: truncated
				digest = d[:]
			case 1:
				digest = []byte{byte(i), 1, 2, 3, 4, 5, 6, 7, 8, 9, 10, 11, 12, 13, 14, 15, 16, 17, 18, 19} // shorter (SHA-1 size)
			case 2:
				digest = make([]byte, 32) // e = 0
			case 3:
				digest = []byte("\xff\xff\xff\xff\xff\xff\xff\xff\xff\xff\xff\xff\xff\xff\xff\xff\xff\xff\xff\xff\xff\xff\xff\xff\xff\xff\xff\xff\xff\xff\xff\xff") // e ≥ n
			default:
				d := sha256.Sum256([]byte{byte(k), byte(i)})
				digest = d[:]
			}
			sig, err := ecdsa.SignASN1(rand.Reader, key, digest)
			if err != nil {
				t.Fatal(err)
			}
			if err := v.Verify(digest, sig, crypto.SHA256); err != nil {
				t.Fatalf("good signature %d refused: %v", i, err)
			}
			r, s := splitSig(t, sig)
			flipped := append([]byte(nil), digest...)
			flipped[i%len(flipped)] ^= 1 << (i % 8)
			sameAnswer(t, v, &key.PublicKey, flipped, sig, "other digest")
			bad := append([]byte(nil), sig...)
			bad[len(bad)-1-i%8] ^= 0x40
			sameAnswer(t, v, &key.PublicKey, digest, bad, "spoiled signature")
			sameAnswer(t, v, &key.PublicKey, digest, derSig(r, new(big.Int).Sub(n, s)), "s → n−s") // valid too
			sameAnswer(t, v, &key.PublicKey, digest, derSig(r, new(big.Int).Add(s, n)), "s + n")
			sameAnswer(t, v, &key.PublicKey, digest, derSig(new(big.Int).Add(r, n), s), "r + n")
			sameAnswer(t, v, &key.PublicKey, digest, derSig(new(big.Int).Neg(r), s), "−r")
			sameAnswer(t, v, &key.PublicKey, digest, derSig(s, r), "r and s swapped")
			sameAnswer(t, v, &key.PublicKey, digest, append(append([]byte(nil), sig...), 0), "trailing byte")
			sameAnswer(t, v, &key.PublicKey, digest, sig[:len(sig)-1], "truncated")
			osig, _ := ecdsa.SignASN1(rand.Reader, other, digest)
			sameAnswer(t, v, &key.PublicKey, digest, osig, "another key's signature")
		}
		d := sha256.Sum256([]byte("edges"))
		for _, rs := range [][2]*big.Int{
			{big.NewInt(0), big.NewInt(1)}, {big.NewInt(1), big.NewInt(0)}, {n, big.NewInt(1)}, {big.NewInt(1), n},
			{new(big.Int).Sub(n, big.NewInt(1)), new(big.Int).Sub(n, big.NewInt(1))}, {big.NewInt(1), big.NewInt(1)},
		} {
			sameAnswer(t, v, &key.PublicKey, d[:], derSig(rs[0], rs[1]), "edge r, s")
		}
		for _, junk := range [][]byte{nil, {}, {0x30, 0}, {0x30, 3, 2, 1, 1}, []byte("not a signature")} {
			sameAnswer(t, v, &key.PublicKey, d[:], junk, "junk")
		}
	}
}

// TestVerifierOtherKeys: keys other than P-256 are VerifySignature's, and a
// P-256 key that is not on the curve is refused (no table, no panic).
func TestVerifierOtherKeys(t *testing.T) {
	d := sha512.Sum384([]byte("x"))
	k384, _ := ecdsa.GenerateKey(elliptic.P384(), rand.Reader)
	sig, _ := ecdsa.SignASN1(rand.Reader, k384, d[:])
	v := NewVerifier(&k384.PublicKey)
	if err := v.Verify(d[:], sig, crypto.SHA384); err != nil {
		t.Fatalf("P-384: %v", err)
	}
	sig[len(sig)-1] ^= 1
	if err := v.Verify(d[:], sig, crypto.SHA384); !errors.Is(err, ErrSignature) {
		t.Fatalf("spoiled P-384 signature: %v", err)
	}
	rsaKey, err := readKey(filepath.Join("testdata", "recip-rsa.key"))
	if err != nil {
		t.Fatal(err)
	}
	h := sha256.Sum256([]byte("x"))
	rsig, err := rsaKey.Sign(rand.Reader, h[:], crypto.SHA256)
	if err != nil {
		t.Fatal(err)
	}
	if err := NewVerifier(rsaKey.Public()).Verify(h[:], rsig, crypto.SHA256); err != nil {
		t.Fatalf("RSA: %v", err)
	}

	k, _ := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	psig, _ := ecdsa.SignASN1(rand.Reader, k, h[:])
	//lint:ignore SA1019 the deprecated coordinates are the one way to make a key off the curve
	off := &ecdsa.PublicKey{Curve: elliptic.P256(), X: k.X, Y: new(big.Int).Add(k.Y, big.NewInt(1))}
	if err := NewVerifier(off).Verify(h[:], psig, crypto.SHA256); err == nil {
		t.Fatal("a key off the curve verified a signature")
	}
	if err := NewVerifier(&ecdsa.PublicKey{Curve: elliptic.P256()}).Verify(h[:], psig, crypto.SHA256); err == nil {
		t.Fatal("an empty key verified a signature")
	}
}

// FuzzVerifier: for any digest and signature, the table verification of a
// fixed P-256 key answers what crypto/ecdsa answers. The seeds are good
// signatures, so that mutations stay near the accepting path.
func FuzzVerifier(f *testing.F) {
	key, err := readKey(filepath.Join("testdata", "issuing.key"))
	if err != nil {
		f.Fatal(err)
	}
	ek := key.(*ecdsa.PrivateKey)
	for i := range 4 {
		d := sha256.Sum256([]byte{byte(i)})
		sig, err := ecdsa.SignASN1(rand.Reader, ek, d[:])
		if err != nil {
			f.Fatal(err)
		}
		f.Add(d[:], sig)
	}
	v := NewVerifier(&ek.PublicKey)
	f.Fuzz(func(t *testing.T, digest, sig []byte) {
		sameAnswer(t, v, &ek.PublicKey, digest, sig, "fuzz")
	})
}

// BenchmarkVerifier compares the table verification of a fixed P-256 key
// with crypto/ecdsa's (which ca.VerifyingSigner used before).
func BenchmarkVerifier(b *testing.B) {
	key, _ := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	d := sha256.Sum256([]byte("a TBSCertificate"))
	sig, _ := ecdsa.SignASN1(rand.Reader, key, d[:])
	b.Run("crypto-ecdsa", func(b *testing.B) {
		for b.Loop() {
			if !ecdsa.VerifyASN1(&key.PublicKey, d[:], sig) {
				b.Fatal("refused")
			}
		}
	})
	b.Run("table", func(b *testing.B) {
		v := NewVerifier(&key.PublicKey)
		_ = v.Verify(d[:], sig, crypto.SHA256) // builds the table
		b.ResetTimer()
		for b.Loop() {
			if err := v.Verify(d[:], sig, crypto.SHA256); err != nil {
				b.Fatal(err)
			}
		}
	})
	b.Run("table-build", func(b *testing.B) {
		for b.Loop() {
			if newP256Table(&key.PublicKey) == nil {
				b.Fatal("no table")
			}
		}
	})
}
