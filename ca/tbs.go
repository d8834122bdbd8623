package ca

import (
	"crypto"
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/x509"
	"encoding/asn1"
	"fmt"
	"time"

	"golang.org/x/crypto/cryptobyte"
	cbasn1 "golang.org/x/crypto/cryptobyte/asn1"
)

// The authority encodes end-entity TBSCertificates itself when the issuing
// key is ECDSA P-256 or P-384 (the HSM key types of estca): it produces the
// same DER as x509.CreateCertificate for the same template (tested byte for
// byte). The fresh signature is still verified, once, by the authority's
// VerifyingSigner (signer.go) under the issuing certificate's key: a faulty
// ECDSA signature can leak the key, and a faulty one must never be stored or
// sent. RSA and other issuing keys go through x509.CreateCertificate.

var (
	oidExtKeyUsage         = asn1.ObjectIdentifier{2, 5, 29, 15}
	oidExtExtKeyUsage      = asn1.ObjectIdentifier{2, 5, 29, 37}
	oidExtBasicConstraints = asn1.ObjectIdentifier{2, 5, 29, 19}
	oidExtSubjectKeyID     = asn1.ObjectIdentifier{2, 5, 29, 14}
	oidExtAuthorityKeyID   = asn1.ObjectIdentifier{2, 5, 29, 35}
	oidECDSAWithSHA256     = asn1.ObjectIdentifier{1, 2, 840, 10045, 4, 3, 2}
	oidECDSAWithSHA384     = asn1.ObjectIdentifier{1, 2, 840, 10045, 4, 3, 3}
)

// extKeyUsageOIDs maps x509.ExtKeyUsage to its OID (RFC 5280 §4.2.1.12 and
// vendor arcs), as crypto/x509 does.
var extKeyUsageOIDs = map[x509.ExtKeyUsage]asn1.ObjectIdentifier{
	x509.ExtKeyUsageAny:                            {2, 5, 29, 37, 0},
	x509.ExtKeyUsageServerAuth:                     {1, 3, 6, 1, 5, 5, 7, 3, 1},
	x509.ExtKeyUsageClientAuth:                     {1, 3, 6, 1, 5, 5, 7, 3, 2},
	x509.ExtKeyUsageCodeSigning:                    {1, 3, 6, 1, 5, 5, 7, 3, 3},
	x509.ExtKeyUsageEmailProtection:                {1, 3, 6, 1, 5, 5, 7, 3, 4},
	x509.ExtKeyUsageIPSECEndSystem:                 {1, 3, 6, 1, 5, 5, 7, 3, 5},
	x509.ExtKeyUsageIPSECTunnel:                    {1, 3, 6, 1, 5, 5, 7, 3, 6},
	x509.ExtKeyUsageIPSECUser:                      {1, 3, 6, 1, 5, 5, 7, 3, 7},
	x509.ExtKeyUsageTimeStamping:                   {1, 3, 6, 1, 5, 5, 7, 3, 8},
	x509.ExtKeyUsageOCSPSigning:                    {1, 3, 6, 1, 5, 5, 7, 3, 9},
	x509.ExtKeyUsageMicrosoftServerGatedCrypto:     {1, 3, 6, 1, 4, 1, 311, 10, 3, 3},
	x509.ExtKeyUsageNetscapeServerGatedCrypto:      {2, 16, 840, 1, 113730, 4, 1},
	x509.ExtKeyUsageMicrosoftCommercialCodeSigning: {1, 3, 6, 1, 4, 1, 311, 2, 1, 22},
	x509.ExtKeyUsageMicrosoftKernelCodeSigning:     {1, 3, 6, 1, 4, 1, 311, 61, 1, 1},
}

// fastSigner holds what every end-entity signature under an ECDSA issuing
// key shares, computed once in New.
type fastSigner struct {
	sigAlg []byte      // DER AlgorithmIdentifier
	hash   crypto.Hash // digest signed by the key
	aki    []byte      // DER Extension authorityKeyIdentifier
}

func newFastSigner(signer crypto.Signer, issuing *x509.Certificate) *fastSigner {
	pub, ok := signer.Public().(*ecdsa.PublicKey)
	if !ok {
		return nil
	}
	f := &fastSigner{}
	var oid asn1.ObjectIdentifier
	switch pub.Curve {
	case elliptic.P256():
		oid, f.hash = oidECDSAWithSHA256, crypto.SHA256
	case elliptic.P384():
		oid, f.hash = oidECDSAWithSHA384, crypto.SHA384
	default:
		return nil
	}
	var b cryptobyte.Builder
	b.AddASN1(cbasn1.SEQUENCE, func(b *cryptobyte.Builder) { b.AddASN1ObjectIdentifier(oid) })
	f.sigAlg = b.BytesOrPanic()
	f.aki = extension(oidExtAuthorityKeyID, false, func(b *cryptobyte.Builder) {
		b.AddASN1(cbasn1.SEQUENCE, func(b *cryptobyte.Builder) {
			b.AddASN1(cbasn1.Tag(0).ContextSpecific(), func(b *cryptobyte.Builder) { b.AddBytes(issuing.SubjectKeyId) })
		})
	})
	return f
}

// builtinExtensions returns the DER Extensions every end-entity
// certificate starts with, in crypto/x509's order: keyUsage (if any),
// extKeyUsage (if any), basicConstraints (cA false).
func builtinExtensions(ku x509.KeyUsage, eku []x509.ExtKeyUsage) ([]byte, error) {
	var b cryptobyte.Builder
	if ku != 0 {
		var bits [2]byte
		bits[0] = reverseBits(byte(ku))
		bits[1] = reverseBits(byte(ku >> 8))
		n := 1
		if bits[1] != 0 {
			n = 2
		}
		v, err := asn1.Marshal(asn1.BitString{Bytes: bits[:n], BitLength: bitLength(bits[:n])})
		if err != nil {
			return nil, err
		}
		b.AddBytes(extension(oidExtKeyUsage, true, func(b *cryptobyte.Builder) { b.AddBytes(v) }))
	}
	if len(eku) > 0 {
		var oids []asn1.ObjectIdentifier
		for _, u := range eku {
			oid, ok := extKeyUsageOIDs[u]
			if !ok {
				return nil, fmt.Errorf("unknown extended key usage %d", u)
			}
			oids = append(oids, oid)
		}
		b.AddBytes(extension(oidExtExtKeyUsage, false, func(b *cryptobyte.Builder) {
			b.AddASN1(cbasn1.SEQUENCE, func(b *cryptobyte.Builder) {
				for _, oid := range oids {
					b.AddASN1ObjectIdentifier(oid)
				}
			})
		}))
	}
	b.AddBytes(extension(oidExtBasicConstraints, true, func(b *cryptobyte.Builder) {
		b.AddASN1(cbasn1.SEQUENCE, func(*cryptobyte.Builder) {})
	}))
	return b.Bytes()
}

// extension encodes an Extension whose extnValue content is written by value.
func extension(id asn1.ObjectIdentifier, critical bool, value func(*cryptobyte.Builder)) []byte {
	var b cryptobyte.Builder
	b.AddASN1(cbasn1.SEQUENCE, func(b *cryptobyte.Builder) {
		b.AddASN1ObjectIdentifier(id)
		if critical {
			b.AddASN1Boolean(true)
		}
		b.AddASN1(cbasn1.OCTET_STRING, value)
	})
	return b.BytesOrPanic()
}

func reverseBits(in byte) byte {
	var out byte
	for i := 0; i < 8; i++ {
		out = out<<1 | in&1
		in >>= 1
	}
	return out
}

func bitLength(b []byte) int {
	for i := len(b) - 1; i >= 0; i-- {
		if b[i] != 0 {
			for bit := 0; bit < 8; bit++ {
				if b[i]>>bit&1 == 1 {
					return (i+1)*8 - bit
				}
			}
		}
	}
	return 0
}

func addTime(b *cryptobyte.Builder, t time.Time) {
	t = t.UTC()
	if t.Year() >= 1950 && t.Year() < 2050 {
		b.AddASN1UTCTime(t)
	} else {
		b.AddASN1GeneralizedTime(t)
	}
}

// certificate encodes, signs and returns the DER of an end-entity
// certificate (RFC 5280 §4.1) for the fast path: the extensions are the
// built-in ones, subjectKeyIdentifier, authorityKeyIdentifier, then the
// extra ones in order (what x509.CreateCertificate makes of the same
// template with them as ExtraExtensions).
func (f *fastSigner) certificate(a *Authority, s *certSpec) ([]byte, error) {
	var tb cryptobyte.Builder
	tb.AddASN1(cbasn1.SEQUENCE, func(b *cryptobyte.Builder) {
		b.AddASN1(cbasn1.Tag(0).ContextSpecific().Constructed(), func(b *cryptobyte.Builder) { b.AddASN1Int64(2) })
		b.AddASN1BigInt(s.serial)
		b.AddBytes(f.sigAlg)
		b.AddBytes(a.issuing.RawSubject)
		b.AddASN1(cbasn1.SEQUENCE, func(b *cryptobyte.Builder) {
			addTime(b, s.notBefore)
			addTime(b, s.notAfter)
		})
		b.AddBytes(s.subject)
		b.AddBytes(s.spki)
		b.AddASN1(cbasn1.Tag(3).ContextSpecific().Constructed(), func(b *cryptobyte.Builder) {
			b.AddASN1(cbasn1.SEQUENCE, func(b *cryptobyte.Builder) {
				b.AddBytes(s.builtin)
				b.AddBytes(extension(oidExtSubjectKeyID, false, func(b *cryptobyte.Builder) {
					b.AddASN1OctetString(s.ski)
				}))
				b.AddBytes(f.aki)
				for _, x := range s.extra {
					b.AddBytes(extension(x.Id, x.Critical, func(b *cryptobyte.Builder) { b.AddBytes(x.Value) }))
				}
			})
		})
	})
	tbs, err := tb.Bytes()
	if err != nil {
		return nil, err
	}
	h := f.hash.New()
	h.Write(tbs)
	sig, err := a.signer.Sign(a.rand, h.Sum(nil), f.hash)
	if err != nil {
		return nil, err
	}
	var cb cryptobyte.Builder
	cb.AddASN1(cbasn1.SEQUENCE, func(b *cryptobyte.Builder) {
		b.AddBytes(tbs)
		b.AddBytes(f.sigAlg)
		b.AddASN1BitString(sig)
	})
	return cb.Bytes()
}
