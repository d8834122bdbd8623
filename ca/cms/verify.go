package cms

import (
	"bytes"
	"crypto"
	"crypto/ecdsa"
	"crypto/rsa"
	"crypto/x509"
	"encoding/asn1"
	"errors"
	"fmt"
	"time"

	"golang.org/x/crypto/cryptobyte"
	cbasn1 "golang.org/x/crypto/cryptobyte/asn1"
)

// MaxMessageSize bounds the CMS messages the parsers accept. A key package
// for an RSA-4096 key with a three-certificate RSA chain is under 12 KiB.
const MaxMessageSize = 64 << 10

// VerifyOptions say what a key package's signer must chain to.
type VerifyOptions struct {
	// Roots are the trust anchors for the signer's certificate (normally the
	// EST server's CA certificates, RFC 7030 §4.1.3). Required.
	Roots *x509.CertPool
	// Intermediates are added to the certificates carried in the SignedData
	// when building the signer's chain.
	Intermediates []*x509.Certificate
	// CurrentTime is the time to verify the chain at; zero means now.
	CurrentTime time.Time
	// KeyUsages are the extended key usages the signer's chain must allow;
	// nil means any (x509.ExtKeyUsageAny).
	KeyUsages []x509.ExtKeyUsage
}

// KeyPackage is a verified, decrypted server-generated key.
type KeyPackage struct {
	// PrivateKey is the OneAsymmetricKey DER, which for version 0 is a PKCS#8
	// PrivateKeyInfo (x509.ParsePKCS8PrivateKey). It is a copy owned by the
	// caller, who should Zero it after use.
	PrivateKey []byte
	// Signer is the certificate that signed the package; Chains are the
	// verified chains from it to Roots.
	Signer *x509.Certificate
	Chains [][]*x509.Certificate
	// SigningTime is the signing-time attribute, zero when absent.
	SigningTime time.Time
	// ContentEncryption and Recipient say how the package was protected;
	// zero for VerifyKeyPackage (no encryption).
	ContentEncryption ContentEncryption
	Recipient         RecipientKind
}

// Zero overwrites the private key.
func (p *KeyPackage) Zero() {
	if p != nil {
		zero(p.PrivateKey)
	}
}

// VerifyKeyPackage verifies a DER ContentInfo holding a SignedData over an
// AsymmetricKeyPackage (as SignKeyPackage makes it, RFC 7030 §4.4.2 without
// the encryption layer): exactly one SignerInfo, its signed content-type and
// message-digest attributes, its signature, and its certificate's chain to
// o.Roots. It returns the one key of the package.
func VerifyKeyPackage(der []byte, o VerifyOptions) (*KeyPackage, error) {
	if len(der) > MaxMessageSize {
		return nil, tooLarge("message of %d bytes", len(der))
	}
	ct, content, err := parseContentInfo(der)
	if err != nil {
		return nil, err
	}
	if !ct.Equal(oidSignedData) {
		return nil, unsupported("content type %s, want signed-data", ct)
	}
	return verifySignedKeyPackage(content, o)
}

// parseContentInfo parses ContentInfo (RFC 5652 §3) and returns its content
// (aliasing der).
func parseContentInfo(der []byte) (asn1.ObjectIdentifier, []byte, error) {
	s := cryptobyte.String(der)
	var ci, content cryptobyte.String
	var ct asn1.ObjectIdentifier
	if !s.ReadASN1(&ci, cbasn1.SEQUENCE) || !s.Empty() {
		return nil, nil, malformed("ContentInfo", "want one DER SEQUENCE")
	}
	if !ci.ReadASN1ObjectIdentifier(&ct) || !ci.ReadASN1(&content, tagExplicit0) || !ci.Empty() {
		return nil, nil, malformed("ContentInfo", "want contentType and [0] content")
	}
	return ct, content, nil
}

// signedData is a parsed SignedData with one SignerInfo.
type signedData struct {
	eContentType asn1.ObjectIdentifier
	eContent     []byte
	digestAlgs   []asn1.ObjectIdentifier
	certs        []*x509.Certificate
	signer       signerInfo
}

type signerInfo struct {
	version     int64
	sidIAS      []byte // IssuerAndSerialNumber element, or
	sidSKI      []byte // subjectKeyIdentifier
	digestAlg   algID
	signedAttrs []byte // the [0] IMPLICIT element as received
	attrs       []attribute
	sigAlg      algID
	signature   []byte
}

// parseSignedData parses a SignedData value (RFC 5652 §5.1). Only DER is
// accepted; the content must be encapsulated (not detached); exactly one
// SignerInfo; certificates must be plain X.509 certificates.
func parseSignedData(der []byte) (*signedData, error) {
	const where = "SignedData"
	s := cryptobyte.String(der)
	var sd, algs, encap, certs, infos cryptobyte.String
	var version int64
	if !s.ReadASN1(&sd, cbasn1.SEQUENCE) || !s.Empty() {
		return nil, malformed(where, "want one SEQUENCE")
	}
	if !sd.ReadASN1Integer(&version) || !sd.ReadASN1(&algs, cbasn1.SET) || !sd.ReadASN1(&encap, cbasn1.SEQUENCE) {
		return nil, malformed(where, "bad version, digestAlgorithms or encapContentInfo")
	}
	p := &signedData{}
	for !algs.Empty() {
		if len(p.digestAlgs) == maxAttrValues {
			return nil, tooLarge("more than %d digest algorithms", maxAttrValues)
		}
		a, err := readAlgID(&algs, where+".digestAlgorithms")
		if err != nil {
			return nil, err
		}
		p.digestAlgs = append(p.digestAlgs, a.oid)
	}
	var eContent cryptobyte.String
	var hasContent bool
	if !encap.ReadASN1ObjectIdentifier(&p.eContentType) ||
		!encap.ReadOptionalASN1(&eContent, &hasContent, tagExplicit0) || !encap.Empty() {
		return nil, malformed(where+".encapContentInfo", "bad eContentType or eContent")
	}
	if !hasContent {
		return nil, unsupported("detached SignedData content")
	}
	if !eContent.ReadASN1((*cryptobyte.String)(&p.eContent), cbasn1.OCTET_STRING) || !eContent.Empty() {
		return nil, malformed(where+".eContent", "want a primitive DER OCTET STRING")
	}
	var hasCerts bool
	if !sd.ReadOptionalASN1(&certs, &hasCerts, tagExplicit0) {
		return nil, malformed(where+".certificates", "bad CertificateSet")
	}
	for !certs.Empty() {
		if len(p.certs) == maxCertificates {
			return nil, tooLarge("more than %d certificates", maxCertificates)
		}
		var raw cryptobyte.String
		if !certs.ReadASN1Element(&raw, cbasn1.SEQUENCE) {
			return nil, unsupported("certificate choice other than an X.509 certificate")
		}
		// A copy: the certificate outlives the decrypted buffer, which is zeroed.
		c, err := x509.ParseCertificate(bytes.Clone(raw))
		if err != nil {
			return nil, fmt.Errorf("%w: %w", malformed(where+".certificates", "unparsable certificate"), err)
		}
		p.certs = append(p.certs, c)
	}
	if !sd.SkipOptionalASN1(tagExplicit1) { // crls: not used
		return nil, malformed(where+".crls", "bad RevocationInfoChoices")
	}
	if !sd.ReadASN1(&infos, cbasn1.SET) || !sd.Empty() {
		return nil, malformed(where, "bad signerInfos or trailing data")
	}
	var si cryptobyte.String
	if !infos.ReadASN1(&si, cbasn1.SEQUENCE) {
		return nil, malformed(where+".signerInfos", "no SignerInfo")
	}
	if !infos.Empty() {
		return nil, unsupported("more than one SignerInfo")
	}
	if err := parseSignerInfo(si, &p.signer); err != nil {
		return nil, err
	}
	want := int64(1) // RFC 5652 §5.1 version rules for what is accepted here
	if !p.eContentType.Equal(oidData) || p.signer.version == 3 {
		want = 3
	}
	if version != want {
		return nil, malformed(where+".version", fmt.Sprintf("%d, want %d", version, want))
	}
	return p, nil
}

func parseSignerInfo(si cryptobyte.String, p *signerInfo) error {
	const where = "SignerInfo"
	if !si.ReadASN1Integer(&p.version) {
		return malformed(where+".version", "bad INTEGER")
	}
	switch {
	case si.PeekASN1Tag(cbasn1.SEQUENCE):
		ias, err := readIssuerAndSerial(&si, where+".sid")
		if err != nil {
			return err
		}
		p.sidIAS = ias
		if p.version != 1 {
			return malformed(where+".version", "must be 1 with issuerAndSerialNumber")
		}
	case si.PeekASN1Tag(tagImplicit0):
		if !si.ReadASN1((*cryptobyte.String)(&p.sidSKI), tagImplicit0) || len(p.sidSKI) == 0 || len(p.sidSKI) > maxKeyIDLen {
			return malformed(where+".sid", "bad subjectKeyIdentifier")
		}
		if p.version != 3 {
			return malformed(where+".version", "must be 3 with subjectKeyIdentifier")
		}
	default:
		return malformed(where+".sid", "unknown SignerIdentifier")
	}
	var err error
	if p.digestAlg, err = readAlgID(&si, where+".digestAlgorithm"); err != nil {
		return err
	}
	var attrs cryptobyte.String
	if !si.ReadASN1Element(&attrs, tagExplicit0) {
		return unsupported("SignerInfo without signed attributes")
	}
	p.signedAttrs = attrs
	var contents cryptobyte.String
	if !attrs.ReadASN1(&contents, tagExplicit0) {
		return malformed(where+".signedAttrs", "bad SET")
	}
	if p.attrs, err = readAttributes(contents, where+".signedAttrs"); err != nil {
		return err
	}
	if p.sigAlg, err = readAlgID(&si, where+".signatureAlgorithm"); err != nil {
		return err
	}
	if !si.ReadASN1((*cryptobyte.String)(&p.signature), cbasn1.OCTET_STRING) || len(p.signature) == 0 {
		return malformed(where+".signature", "bad OCTET STRING")
	}
	if !si.SkipOptionalASN1(tagExplicit1) || !si.Empty() {
		return malformed(where, "trailing data")
	}
	return nil
}

// signatureHash checks that the SignerInfo's algorithms are ones this
// package accepts and agree with each other and the signer's key, and
// returns the hash.
func (si *signerInfo) signatureHash(pub crypto.PublicKey, digestAlgs []asn1.ObjectIdentifier) (crypto.Hash, error) {
	h, ok := hashByOID(si.digestAlg.oid)
	if !ok || !si.digestAlg.nullOrNoParams() {
		return 0, unsupported("digest algorithm %s", si.digestAlg.oid)
	}
	listed := false
	for _, a := range digestAlgs {
		listed = listed || a.Equal(si.digestAlg.oid)
	}
	if !listed {
		return 0, malformed("SignedData.digestAlgorithms", "does not list the signer's digest algorithm")
	}
	var sigHash crypto.Hash
	_, isEC := pub.(*ecdsa.PublicKey)
	_, isRSA := pub.(*rsa.PublicKey)
	alg := si.sigAlg
	switch {
	case isEC && alg.noParams() && alg.oid.Equal(oidSigECDSAWithSHA256):
		sigHash = crypto.SHA256
	case isEC && alg.noParams() && alg.oid.Equal(oidSigECDSAWithSHA384):
		sigHash = crypto.SHA384
	case isEC && alg.noParams() && alg.oid.Equal(oidSigECDSAWithSHA512):
		sigHash = crypto.SHA512
	case isRSA && alg.nullOrNoParams() && alg.oid.Equal(oidSigSHA256WithRSA):
		sigHash = crypto.SHA256
	case isRSA && alg.nullOrNoParams() && alg.oid.Equal(oidSigSHA384WithRSA):
		sigHash = crypto.SHA384
	case isRSA && alg.nullOrNoParams() && alg.oid.Equal(oidSigSHA512WithRSA):
		sigHash = crypto.SHA512
	case isRSA && alg.nullOrNoParams() && alg.oid.Equal(oidRSAEncryption): // RFC 3370 §3.2, OpenSSL's choice
		sigHash = h
	default:
		return 0, unsupported("signature algorithm %s for a %T signer", alg.oid, pub)
	}
	if sigHash != h {
		return 0, unsupported("signature algorithm %s with digest %s", alg.oid, si.digestAlg.oid)
	}
	return h, nil
}

// verifySignedKeyPackage verifies a bare SignedData value over an
// AsymmetricKeyPackage and returns a copy of its key.
func verifySignedKeyPackage(der []byte, o VerifyOptions) (*KeyPackage, error) {
	if o.Roots == nil {
		return nil, errors.New("cms: VerifyOptions.Roots is required")
	}
	p, err := parseSignedData(der)
	if err != nil {
		return nil, err
	}
	if !p.eContentType.Equal(oidAsymmetricKeyPackage) {
		return nil, unsupported("signed content type %s, want id-ct-KP-aKeyPackage", p.eContentType)
	}
	signer, signingTime, err := p.verify()
	if err != nil {
		return nil, err
	}
	inter := x509.NewCertPool()
	for _, c := range p.certs {
		if c != signer {
			inter.AddCert(c)
		}
	}
	for _, c := range o.Intermediates {
		inter.AddCert(c)
	}
	usages := o.KeyUsages
	if usages == nil {
		usages = []x509.ExtKeyUsage{x509.ExtKeyUsageAny}
	}
	chains, err := signer.Verify(x509.VerifyOptions{Roots: o.Roots, Intermediates: inter,
		CurrentTime: o.CurrentTime, KeyUsages: usages})
	if err != nil {
		return nil, fmt.Errorf("%w: %w", ErrCertificate, err)
	}
	key, err := parseKeyPackage(p.eContent)
	if err != nil {
		return nil, err
	}
	return &KeyPackage{PrivateKey: bytes.Clone(key), Signer: signer, Chains: chains, SigningTime: signingTime}, nil
}

// verify checks the signed attributes and the signature (RFC 5652 §5.4,
// §5.6) and returns the signer's certificate, found among the SignedData's
// certificates.
func (p *signedData) verify() (*x509.Certificate, time.Time, error) {
	si := &p.signer
	var signer *x509.Certificate
	for _, c := range p.certs {
		if (si.sidIAS != nil && matchesIssuerAndSerial(si.sidIAS, c)) ||
			(si.sidSKI != nil && bytes.Equal(si.sidSKI, c.SubjectKeyId)) {
			signer = c
			break
		}
	}
	if signer == nil {
		return nil, time.Time{}, fmt.Errorf("%w: the signer's certificate is not in the SignedData", ErrCertificate)
	}
	if signer.KeyUsage != 0 && signer.KeyUsage&x509.KeyUsageDigitalSignature == 0 {
		return nil, time.Time{}, fmt.Errorf("%w: signer key usage does not allow digitalSignature", ErrCertificate)
	}
	h, err := si.signatureHash(signer.PublicKey, p.digestAlgs)
	if err != nil {
		return nil, time.Time{}, err
	}
	const where = "SignerInfo.signedAttrs"
	ctv, ok, err := single(si.attrs, oidAttrContentType, where)
	if err != nil {
		return nil, time.Time{}, err
	}
	var ct asn1.ObjectIdentifier
	if !ok || !ctv.ReadASN1ObjectIdentifier(&ct) || !ctv.Empty() || !ct.Equal(p.eContentType) {
		return nil, time.Time{}, fmt.Errorf("%w: content-type attribute missing or not %s", ErrSignature, p.eContentType)
	}
	mdv, ok, err := single(si.attrs, oidAttrMessageDigest, where)
	if err != nil {
		return nil, time.Time{}, err
	}
	var md cryptobyte.String
	if !ok || !mdv.ReadASN1(&md, cbasn1.OCTET_STRING) || !mdv.Empty() {
		return nil, time.Time{}, fmt.Errorf("%w: message-digest attribute missing", ErrSignature)
	}
	hh := h.New()
	hh.Write(p.eContent)
	if !bytes.Equal(md, hh.Sum(nil)) {
		return nil, time.Time{}, fmt.Errorf("%w: message digest does not match the content", ErrSignature)
	}
	var signingTime time.Time
	if stv, ok, err := single(si.attrs, oidAttrSigningTime, where); err != nil {
		return nil, time.Time{}, err
	} else if ok {
		if signingTime, err = readTime(stv); err != nil {
			return nil, time.Time{}, err
		}
	}
	// The signature covers the DER of the attributes with the SET OF tag.
	hh = h.New()
	hh.Write([]byte{0x31})
	hh.Write(si.signedAttrs[1:])
	if err := verifySignature(signer.PublicKey, h, hh.Sum(nil), si.signature); err != nil {
		return nil, time.Time{}, err
	}
	return signer, signingTime, nil
}

// readTime parses a Time (UTCTime or GeneralizedTime, RFC 5652 §11.3).
func readTime(v cryptobyte.String) (time.Time, error) {
	var t time.Time
	switch {
	case v.PeekASN1Tag(cbasn1.UTCTime):
		if !v.ReadASN1UTCTime(&t) {
			return t, malformed("signing-time", "bad UTCTime")
		}
	case v.PeekASN1Tag(cbasn1.GeneralizedTime):
		if !v.ReadASN1GeneralizedTime(&t) {
			return t, malformed("signing-time", "bad GeneralizedTime")
		}
	default:
		return t, malformed("signing-time", "not a Time")
	}
	if !v.Empty() {
		return t, malformed("signing-time", "trailing data")
	}
	return t, nil
}
