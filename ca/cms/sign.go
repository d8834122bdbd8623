package cms

import (
	"crypto"
	"crypto/ecdsa"
	"crypto/ed25519"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/rsa"
	"crypto/x509"
	"encoding/asn1"
	"errors"
	"fmt"
	"io"
	"time"

	"golang.org/x/crypto/cryptobyte"
	cbasn1 "golang.org/x/crypto/cryptobyte/asn1"
)

// Signer signs AsymmetricKeyPackages into a CMS SignedData (RFC 5652 §5,
// RFC 5958 §3) with a crypto.Signer, normally a key in the HSM. It is
// immutable after NewSigner and safe for concurrent use if its key is.
type Signer struct {
	key       crypto.Signer
	cert      *x509.Certificate
	hash      crypto.Hash
	digestAlg []byte // DER AlgorithmIdentifier
	sigAlg    []byte // DER AlgorithmIdentifier
	sid       []byte // DER SignerIdentifier
	version   int64  // SignerInfo version: 1 issuerAndSerialNumber, 3 subjectKeyIdentifier
	certs     []byte // DER certificates [0] IMPLICIT CertificateSet
	verify    *Verifier
}

// SignerOptions are the optional settings of NewSigner.
type SignerOptions struct {
	// Chain lists the certificates to include besides the signer's own,
	// normally the issuing CA (a recipient verifies to its own roots; the
	// root itself may be included too).
	Chain []*x509.Certificate
	// SubjectKeyID identifies the signer by subjectKeyIdentifier (SignerInfo
	// version 3) instead of issuerAndSerialNumber (version 1). The
	// certificate must carry a subject key identifier.
	SubjectKeyID bool
}

// NewSigner checks that key belongs to cert and that this package can sign
// with it: ECDSA on P-256 (SHA-256), P-384 (SHA-384) or P-521 (SHA-512), or
// RSA of at least 2048 bits (PKCS #1 v1.5 with SHA-256). A certificate with
// a key usage extension must allow digitalSignature.
func NewSigner(key crypto.Signer, cert *x509.Certificate, o SignerOptions) (*Signer, error) {
	if key == nil || cert == nil || len(cert.Raw) == 0 {
		return nil, errors.New("cms: signer needs a key and a parsed certificate")
	}
	pub, ok := cert.PublicKey.(interface{ Equal(crypto.PublicKey) bool })
	if !ok || !pub.Equal(key.Public()) {
		return nil, fmt.Errorf("%w: signing key is not the certificate's", ErrKeyMismatch)
	}
	if cert.KeyUsage != 0 && cert.KeyUsage&x509.KeyUsageDigitalSignature == 0 {
		return nil, fmt.Errorf("%w: certificate key usage does not allow digitalSignature", ErrKeyMismatch)
	}
	s := &Signer{key: key, cert: cert, version: 1, verify: NewVerifier(cert.PublicKey)}
	var sigOID asn1.ObjectIdentifier
	null := false
	switch k := cert.PublicKey.(type) {
	case *ecdsa.PublicKey:
		switch k.Curve {
		case elliptic.P256():
			s.hash, sigOID = crypto.SHA256, oidSigECDSAWithSHA256
		case elliptic.P384():
			s.hash, sigOID = crypto.SHA384, oidSigECDSAWithSHA384
		case elliptic.P521():
			s.hash, sigOID = crypto.SHA512, oidSigECDSAWithSHA512
		default:
			return nil, unsupported("signer curve %s", k.Curve.Params().Name)
		}
	case *rsa.PublicKey:
		if k.N.BitLen() < 2048 {
			return nil, unsupported("RSA signer key of %d bits", k.N.BitLen())
		}
		s.hash, sigOID, null = crypto.SHA256, oidSigSHA256WithRSA, true
	default:
		return nil, unsupported("signer key type %T", cert.PublicKey)
	}
	var err error
	if s.digestAlg, err = encodeAlgID(hashOID(s.hash), false); err != nil {
		return nil, err
	}
	if s.sigAlg, err = encodeAlgID(sigOID, null); err != nil { // RFC 5758 §3.2 absent, RFC 4055 §5 NULL
		return nil, err
	}
	if o.SubjectKeyID {
		if len(cert.SubjectKeyId) == 0 {
			return nil, errors.New("cms: signer certificate has no subject key identifier")
		}
		var b cryptobyte.Builder
		b.AddASN1(tagImplicit0, func(b *cryptobyte.Builder) { b.AddBytes(cert.SubjectKeyId) })
		s.sid, err = b.Bytes()
		s.version = 3
	} else {
		s.sid, err = issuerAndSerial(cert)
	}
	if err != nil {
		return nil, err
	}
	raw := [][]byte{cert.Raw}
	for i, c := range o.Chain {
		if c == nil || len(c.Raw) == 0 {
			return nil, fmt.Errorf("cms: chain certificate %d is empty", i)
		}
		raw = append(raw, c.Raw)
	}
	if len(raw) > maxCertificates {
		return nil, tooLarge("%d certificates", len(raw))
	}
	if s.certs, err = derSet(tagExplicit0, raw); err != nil {
		return nil, err
	}
	return s, nil
}

// Certificate returns the signer's certificate.
func (s *Signer) Certificate() *x509.Certificate { return s.cert }

func encodeAlgID(oid asn1.ObjectIdentifier, null bool) ([]byte, error) {
	var b cryptobyte.Builder
	addAlgID(&b, oid, null)
	return b.Bytes()
}

// SignKeyPackage returns a DER ContentInfo holding a SignedData over an
// AsymmetricKeyPackage with the one key pkcs8 (a PKCS#8 PrivateKeyInfo or
// RFC 5958 OneAsymmetricKey). The signed attributes are content-type,
// message-digest and, unless signingTime is zero, signing-time (RFC 5652
// §11). The signature is verified with the certificate's public key before
// the result is returned, so a faulty signature never leaves.
//
// The result contains the private key in the clear: the caller zeroes it
// after use. pkcs8 is not modified or retained. rand nil means crypto/rand.
func (s *Signer) SignKeyPackage(pkcs8 []byte, signingTime time.Time, rand io.Reader) ([]byte, error) {
	ci, _, err := s.signedData(pkcs8, signingTime, rand)
	return ci, err
}

// signedData builds the ContentInfo in one exactly sized buffer and also
// returns the bare SignedData inside it (for EnvelopedData, whose content is
// the SignedData value itself, RFC 5652 §6.1).
func (s *Signer) signedData(pkcs8 []byte, signingTime time.Time, rnd io.Reader) (ci, sd []byte, err error) {
	if err := checkOneAsymmetricKey(pkcs8, "private key"); err != nil {
		return nil, nil, err
	}
	if rnd == nil {
		rnd = rand.Reader
	}
	pkg := keyPackageNode(pkcs8)
	h := s.hash.New()
	h.Write(pkg.header())
	h.Write(pkcs8)
	digest := h.Sum(nil)

	attrs, err := signedAttributes(oidAsymmetricKeyPackage, digest, signingTime)
	if err != nil {
		return nil, nil, err
	}
	h = s.hash.New()
	h.Write(attrs)
	attrsDigest := h.Sum(nil)
	sig, err := s.key.Sign(rnd, attrsDigest, s.hash)
	if err != nil {
		return nil, nil, fmt.Errorf("cms: signing key package: %w", err)
	}
	if err := s.verify.Verify(attrsDigest, sig, s.hash); err != nil {
		return nil, nil, fmt.Errorf("cms: the signer produced an invalid signature: %w", err)
	}

	var b cryptobyte.Builder
	b.AddASN1(cbasn1.SEQUENCE, func(b *cryptobyte.Builder) {
		b.AddASN1Int64(s.version)
		b.AddBytes(s.sid)
		b.AddBytes(s.digestAlg)
		b.AddASN1(tagExplicit0, func(b *cryptobyte.Builder) { b.AddBytes(attrs[len(derSetHeader(attrs)):]) })
		b.AddBytes(s.sigAlg)
		b.AddASN1OctetString(sig)
	})
	signerInfo, err := b.Bytes()
	if err != nil {
		return nil, nil, err
	}
	b = cryptobyte.Builder{}
	b.AddASN1Int64(3) // RFC 5652 §5.1: eContentType is not id-data
	b.AddASN1(cbasn1.SET, func(b *cryptobyte.Builder) { b.AddBytes(s.digestAlg) })
	prefix, err := b.Bytes()
	if err != nil {
		return nil, nil, err
	}
	b = cryptobyte.Builder{}
	b.AddBytes(s.certs)
	b.AddASN1(cbasn1.SET, func(b *cryptobyte.Builder) { b.AddBytes(signerInfo) })
	suffix, err := b.Bytes()
	if err != nil {
		return nil, nil, err
	}
	sdNode := derNode(0x30,
		derRaw(prefix),
		derNode(0x30, // EncapsulatedContentInfo
			derRaw(oidDER(oidAsymmetricKeyPackage)),
			derNode(0xA0, derNode(0x04, pkg))),
		derRaw(suffix))
	ciNode := derNode(0x30, derRaw(oidDER(oidSignedData)), derNode(0xA0, sdNode))
	ci = ciNode.encode()
	return ci, ci[len(ci)-sdNode.size():], nil
}

// derSetHeader returns the tag and length octets of the DER element b.
func derSetHeader(b []byte) []byte {
	s := cryptobyte.String(b)
	var contents cryptobyte.String
	var tag cbasn1.Tag
	if !s.ReadAnyASN1(&contents, &tag) {
		return nil
	}
	return b[:len(b)-len(contents)]
}

// signedAttributes encodes the SignedAttributes as the DER SET OF that is
// signed (RFC 5652 §5.4: with the SET OF tag, not the IMPLICIT [0]).
func signedAttributes(contentType asn1.ObjectIdentifier, digest []byte, signingTime time.Time) ([]byte, error) {
	var attrs [][]byte
	a, err := encodeAttribute(oidAttrContentType, func(b *cryptobyte.Builder) { b.AddASN1ObjectIdentifier(contentType) })
	if err != nil {
		return nil, err
	}
	attrs = append(attrs, a)
	if a, err = encodeAttribute(oidAttrMessageDigest, func(b *cryptobyte.Builder) { b.AddASN1OctetString(digest) }); err != nil {
		return nil, err
	}
	attrs = append(attrs, a)
	if !signingTime.IsZero() {
		t := signingTime.UTC().Truncate(time.Second)
		a, err = encodeAttribute(oidAttrSigningTime, func(b *cryptobyte.Builder) {
			if t.Year() >= 1950 && t.Year() < 2050 { // RFC 5652 §11.3
				b.AddASN1UTCTime(t)
			} else {
				b.AddASN1GeneralizedTime(t)
			}
		})
		if err != nil {
			return nil, err
		}
		attrs = append(attrs, a)
	}
	return derSet(cbasn1.SET, attrs)
}

func oidDER(oid asn1.ObjectIdentifier) []byte {
	var b cryptobyte.Builder
	b.AddASN1ObjectIdentifier(oid)
	return b.BytesOrPanic() // the OIDs passed are this package's constants
}

// verifySignature checks sig over digest with pub: ECDSA (ASN.1 signature)
// or RSA PKCS #1 v1.5, the schemes this package signs and accepts.
func verifySignature(pub crypto.PublicKey, h crypto.Hash, digest, sig []byte) error {
	switch pub.(type) {
	case *ecdsa.PublicKey, *rsa.PublicKey:
		return VerifySignature(pub, digest, sig, h)
	}
	return unsupported("signer key type %T", pub)
}

// VerifySignature checks sig over digest as crypto.Signer makes it for
// opts: ASN.1 ECDSA (RFC 5480), RSASSA-PKCS1-v1_5 or, with
// *rsa.PSSOptions, RSASSA-PSS (RFC 8017), Ed25519 over the message
// (RFC 8032; opts crypto.Hash(0) or *ed25519.Options). A signature that
// does not verify is ErrSignature. It is the one signature check of the
// module's signers (package ca verifies every HSM signature with it).
func VerifySignature(pub crypto.PublicKey, digest, sig []byte, opts crypto.SignerOpts) error {
	var h crypto.Hash
	if opts != nil {
		h = opts.HashFunc()
	}
	var err error
	switch k := pub.(type) {
	case *ecdsa.PublicKey:
		if !ecdsa.VerifyASN1(k, digest, sig) {
			return ErrSignature
		}
	case *rsa.PublicKey:
		if pss, ok := opts.(*rsa.PSSOptions); ok {
			err = rsa.VerifyPSS(k, h, digest, sig, pss)
		} else {
			err = rsa.VerifyPKCS1v15(k, h, digest, sig)
		}
	case ed25519.PublicKey:
		if o, ok := opts.(*ed25519.Options); ok {
			err = ed25519.VerifyWithOptions(k, digest, sig, o)
		} else if h != 0 || !ed25519.Verify(k, digest, sig) {
			return ErrSignature
		}
	default:
		return unsupported("signer key type %T", pub)
	}
	if err != nil {
		return fmt.Errorf("%w: %v", ErrSignature, err)
	}
	return nil
}
