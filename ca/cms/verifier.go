package cms

import (
	"crypto"
	"crypto/ecdsa"
	"crypto/elliptic"
	"math/big"
	"sync"

	"filippo.io/nistec"
	"golang.org/x/crypto/cryptobyte"
	cbasn1 "golang.org/x/crypto/cryptobyte/asn1"
)

// A Verifier checks signatures under one public key, the way
// VerifySignature does. It is meant for a signer's own key, checked after
// every signature (ca.VerifyingSigner, Signer): for an ECDSA P-256 key it
// keeps, from its first use on, a table of multiples of the key (about
// 780 kB), with which a verification costs about 40% of crypto/ecdsa's
// (BenchmarkVerifier). Every other key goes to VerifySignature.
//
// Verification handles only public values, so the table path need not be
// constant-time: it skips zero digits. TestVerifierMatchesECDSA and
// FuzzVerifier hold it to crypto/ecdsa's answer.
//
// A Verifier is safe for concurrent use.
type Verifier struct {
	pub  crypto.PublicKey
	p256 *ecdsa.PublicKey // nil unless the key is ECDSA P-256

	once  sync.Once
	table *p256Table // nil if the key is not a point of the curve
}

// NewVerifier returns a Verifier for pub. It does no work until the first
// verification.
func NewVerifier(pub crypto.PublicKey) *Verifier {
	v := &Verifier{pub: pub}
	if k, ok := pub.(*ecdsa.PublicKey); ok && k.Curve == elliptic.P256() {
		v.p256 = k
	}
	return v
}

// Public returns the key the Verifier checks with.
func (v *Verifier) Public() crypto.PublicKey { return v.pub }

// Verify is VerifySignature(v.Public(), digest, sig, opts), except that
// a P-256 key off the curve verifies nothing (crypto/ecdsa may panic).
func (v *Verifier) Verify(digest, sig []byte, opts crypto.SignerOpts) error {
	if v.p256 == nil {
		return VerifySignature(v.pub, digest, sig, opts)
	}
	v.once.Do(func() { v.table = newP256Table(v.p256) })
	if v.table == nil || !v.table.verifyASN1(digest, sig) { // no signature verifies under a key off the curve
		return ErrSignature
	}
	return nil
}

// p256Table holds, for the public key Q, d·256^(31-i)·Q in [i][d-1] for
// every byte position i of a 32-byte scalar and digit d in 1..255: u·Q is
// then the sum of at most 32 table points, without doublings.
type p256Table [32][255]nistec.P256Point

// p256N is the order of the P-256 group.
var p256N = elliptic.P256().Params().N

// newP256Table returns the table of pub, or nil if pub is not a point of
// P-256 (crypto/ecdsa verifies nothing under such a key, or panics).
func newP256Table(pub *ecdsa.PublicKey) *p256Table {
	//lint:ignore SA1019 Bytes panics on a key without coordinates
	if pub.X == nil || pub.Y == nil {
		return nil
	}
	enc, err := pub.Bytes() // fails for a key off the curve
	if err != nil {
		return nil
	}
	q, err := nistec.NewP256Point().SetBytes(enc) // checks again that the point is on the curve
	if err != nil {
		return nil
	}
	t := new(p256Table)
	base := nistec.NewP256Point().Set(q) // 256^(31-i)·Q
	for i := 31; i >= 0; i-- {
		t[i][0].Set(base)
		for d := 1; d < 255; d++ {
			t[i][d].Add(&t[i][d-1], base)
		}
		for range 8 {
			base.Double(base)
		}
	}
	return t
}

// verifyASN1 is ECDSA verification (SEC 1 v2 §4.1.4, FIPS 186-5 §6.4.2)
// of an ASN.1 DER signature over digest, as crypto/ecdsa.VerifyASN1 does it.
func (t *p256Table) verifyASN1(digest, sig []byte) bool {
	var r, s big.Int
	in := cryptobyte.String(sig)
	var inner cryptobyte.String
	if !in.ReadASN1(&inner, cbasn1.SEQUENCE) || !in.Empty() ||
		!inner.ReadASN1Integer(&r) || !inner.ReadASN1Integer(&s) || !inner.Empty() {
		return false
	}
	if r.Sign() <= 0 || s.Sign() <= 0 || r.Cmp(p256N) >= 0 || s.Cmp(p256N) >= 0 {
		return false
	}
	// e: the leftmost 256 bits of the digest (the order's length), mod n.
	if len(digest) > 32 {
		digest = digest[:32]
	}
	e := new(big.Int).SetBytes(digest)
	w := new(big.Int).ModInverse(&s, p256N)
	if w == nil {
		return false
	}
	u1 := e.Mul(e, w)
	u1.Mod(u1, p256N)
	u2 := w.Mul(&r, w)
	u2.Mod(u2, p256N)
	var b1, b2 [32]byte
	u1.FillBytes(b1[:])
	u2.FillBytes(b2[:])

	p, err := nistec.NewP256Point().ScalarBaseMult(b1[:])
	if err != nil {
		return false
	}
	for i, d := range b2 {
		if d != 0 {
			p.Add(p, &t[i][d-1])
		}
	}
	x, err := p.BytesX() // fails for the point at infinity
	if err != nil {
		return false
	}
	v := new(big.Int).SetBytes(x)
	v.Mod(v, p256N)
	return v.Cmp(&r) == 0
}
