package client

import (
	"bytes"
	"crypto"
	"crypto/sha256"
	"crypto/x509"
	"encoding/asn1"
	"errors"
	"fmt"

	"github.com/estca/estca/ca/cms"
	"github.com/estca/estca/est/wire"
)

// ErrKeyMismatch means a server-generated private key does not belong to
// the certificate that came with it.
var ErrKeyMismatch = errors.New("client: server-generated key does not match the certificate")

// ServerKey is a server-generated key opened and checked by OpenServerKey.
type ServerKey struct {
	// PrivateKey is the parsed key; PKCS8 its DER PrivateKeyInfo, which the
	// caller should Zero after use.
	PrivateKey crypto.Signer
	PKCS8      []byte
	// Certificate is the certificate of the key (the one of the response
	// whose public key is PrivateKey's); Chain its verified chain to the roots.
	Certificate *x509.Certificate
	Chain       []*x509.Certificate
	// Package says how the key was protected (280): signer, content
	// encryption and recipient kind; nil for a plain PKCS#8 (284).
	Package *cms.KeyPackage
}

// Zero overwrites the PKCS#8 copy of the key (Go's parsed PrivateKey keeps
// values that cannot be cleared).
func (k *ServerKey) Zero() {
	if k != nil {
		clear(k.PKCS8)
		k.Package.Zero()
	}
}

// OpenServerKey opens the key of a server-side key generation answer (RFC
// 9148 §4.8, RFC 7030 §4.4.2). A 280 key (EnvelopedData or
// AuthEnvelopedData of a SignedData of an AsymmetricKeyPackage) is
// decrypted with dk and its SignedData verified: one signer, whose
// certificate chains to o.Roots (o.Intermediates and the certificates the
// SignedData carries help build the chain). A 284 key (PKCS#8) needs no dk:
// nil is required, so that a server that ignored the request for encryption
// is noticed (ErrBadResponse). In both cases the key must be the public key
// of a certificate of the response (ErrKeyMismatch), and that certificate
// must chain to o.Roots (with the same intermediates, at o.CurrentTime).
func OpenServerKey(res *KeygenResult, dk *cms.DecryptKey, o cms.VerifyOptions) (*ServerKey, error) {
	if res == nil || len(res.Key) == 0 || len(res.Certificates) == 0 {
		return nil, fmt.Errorf("%w: no key or certificate", ErrBadResponse)
	}
	if o.Roots == nil {
		return nil, errors.New("client: open server key: no trust anchors")
	}
	out := &ServerKey{}
	inter := append([]*x509.Certificate(nil), o.Intermediates...)
	switch {
	case res.KeyFormat == wire.FormatServerGeneratedKey && dk != nil:
		kp, err := cms.OpenKeyPackage(res.Key, dk, o)
		if err != nil {
			return nil, fmt.Errorf("client: server-generated key: %w", err)
		}
		out.Package, out.PKCS8 = kp, kp.PrivateKey
		for _, chain := range kp.Chains {
			inter = append(inter, chain[1:]...)
		}
	case res.KeyFormat == wire.FormatServerGeneratedKey:
		return nil, fmt.Errorf("%w: an encrypted key (280) that was not asked for", ErrBadResponse)
	case res.KeyFormat == wire.FormatPKCS8 && dk == nil:
		out.PKCS8 = bytes.Clone(res.Key)
	case res.KeyFormat == wire.FormatPKCS8:
		return nil, fmt.Errorf("%w: the server sent the key unencrypted (284) although it was asked to encrypt it", ErrBadResponse)
	default:
		return nil, fmt.Errorf("%w: key Content-Format %d", ErrBadResponse, res.KeyFormat)
	}
	k, err := x509.ParsePKCS8PrivateKey(out.PKCS8)
	if err != nil {
		out.Zero()
		return nil, fmt.Errorf("%w: server-generated key: %w", wire.ErrMalformedPayload, err)
	}
	signer, ok := k.(crypto.Signer)
	if !ok {
		out.Zero()
		return nil, fmt.Errorf("%w: server-generated key of type %T", ErrBadResponse, k)
	}
	out.PrivateKey = signer
	spki, err := x509.MarshalPKIXPublicKey(signer.Public())
	if err != nil {
		out.Zero()
		return nil, err
	}
	if out.Certificate = certForKey(res.Certificates, spki); out.Certificate == nil {
		out.Zero()
		return nil, ErrKeyMismatch
	}
	pool := x509.NewCertPool()
	for _, c := range append(inter, res.Certificates...) {
		pool.AddCert(c)
	}
	chains, err := out.Certificate.Verify(x509.VerifyOptions{Roots: o.Roots, Intermediates: pool,
		CurrentTime: o.CurrentTime, KeyUsages: []x509.ExtKeyUsage{x509.ExtKeyUsageAny}})
	if err != nil {
		out.Zero()
		return nil, fmt.Errorf("client: certificate of the server-generated key: %w", err)
	}
	out.Chain = chains[0]
	return out, nil
}

// OpenServerKey is the package's OpenServerKey with the Conn's trust
// anchors as roots. Pass the CA certificates of /crts (CACerts with 281) as
// intermediates: a key package that carries the signer's certificate only
// (an estca appliance with keys.package_chain: false) chains through them.
func (c *Conn) OpenServerKey(res *KeygenResult, dk *cms.DecryptKey, intermediates ...*x509.Certificate) (*ServerKey, error) {
	c.mu.Lock()
	roots := c.roots
	c.mu.Unlock()
	return OpenServerKey(res, dk, cms.VerifyOptions{Roots: roots, Intermediates: intermediates})
}

// Zero overwrites the key part and the raw payload (which holds it too).
func (r *KeygenResult) Zero() {
	if r != nil {
		clear(r.Key)
		clear(r.Raw)
	}
}

// KeyIdentifier is how a request names a recipient certificate in its
// AsymmetricDecryptKeyIdentifier attribute (RFC 7030 §4.4.1.2): the
// certificate's subject key identifier extension, or, for a certificate
// without one, the RFC 7093 §2 method 1 identifier of its key (the leftmost
// 160 bits of the SHA-256 of the subjectPublicKey bits), which estca
// computes too.
func KeyIdentifier(cert *x509.Certificate) ([]byte, error) {
	if len(cert.SubjectKeyId) > 0 {
		return bytes.Clone(cert.SubjectKeyId), nil
	}
	var spki struct {
		Algorithm asn1.RawValue
		Key       asn1.BitString
	}
	if rest, err := asn1.Unmarshal(cert.RawSubjectPublicKeyInfo, &spki); err != nil || len(rest) > 0 {
		return nil, fmt.Errorf("client: key identifier: malformed subjectPublicKeyInfo")
	}
	sum := sha256.Sum256(spki.Key.Bytes)
	return sum[:20], nil
}
