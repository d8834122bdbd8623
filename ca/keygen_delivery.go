package ca

import (
	"bytes"
	"crypto/x509"
	"errors"

	"github.com/estca/estca/ca/cms"
	"github.com/estca/estca/hsm"
	"github.com/estca/estca/policy"
)

// Recipient kinds of the keygen audit record.
const (
	recipientKEK        = "kek"             // a pre-shared key-encryption key in the token
	recipientRequester  = "requester-cert"  // the requester's own certificate (IDevID or operational)
	recipientRegistered = "registered-cert" // a certificate registered for the requester's identity
)

// delivery is how a generated key goes back to the requester.
type delivery struct {
	kind          string // DeliveryPlain, DeliveryKEK, DeliveryKTRI, DeliveryKARI
	recipient     *cms.Recipient
	recipientKind string // recipientKEK, recipientRequester, recipientRegistered
	keyID         []byte // DecryptKeyIdentifier or AsymmetricDecryptKeyIdentifier
	subject       string // subject of the recipient certificate
	content       cms.ContentEncryption
}

func (d *delivery) recipientText() string {
	switch d.recipientKind {
	case recipientKEK:
		return "pre-shared key-encryption key"
	case recipientRequester:
		return "requester's certificate " + d.subject
	}
	return "registered recipient certificate " + d.subject
}

// badRequest is a refusal of the request's content (4.00), audited by
// ServerKeygen.
func badRequest(reason string, cause error) error {
	return &Error{Kind: KindBadRequest, Reason: reason, Err: cause}
}

// delivery resolves the recipient the CSR's attributes ask for (RFC 7030
// §4.4.1.1, §4.4.1.2; RFC 9148 §4.8) before any key is generated, so that
// a request that cannot be served costs no key generation: no identifier
// gives plain PKCS#8 (a profile that requires encryption has refused the
// request already: policy.Request.EncryptedKey); a
// DecryptKeyIdentifier names a key-encryption key in the token; an
// AsymmetricDecryptKeyIdentifier names the requester's own certificate or a
// certificate registered for its identity, by key identifier. The content
// encryption is the first of the requester's SMIMECapabilities this server
// supports at the strength of the key type kt to generate (AES-CBC without
// the attribute).
func (g *Keygen) delivery(req Request, kr *cms.KeyRequest, kt hsm.KeyType) (*delivery, error) {
	d := &delivery{keyID: kr.KeyID}
	switch kr.Delivery {
	case cms.DeliverPlain:
		d.kind = DeliveryPlain
		return d, nil
	case cms.DeliverKEK:
		kek, err := g.kek(kr.KeyID)
		switch {
		case errors.Is(err, hsm.ErrKeyNotFound):
			return nil, badRequest("unknown key-encryption key", err)
		case err != nil:
			return nil, g.a.hsmError("key-encryption key lookup failed", err)
		}
		if d.recipient, err = cms.NewKEKRecipient(kr.KeyID, kek); err != nil {
			return nil, badRequest("unknown key-encryption key", err)
		}
		d.kind, d.recipientKind = DeliveryKEK, recipientKEK
	case cms.DeliverAsymmetric:
		cert, kind, err := g.recipientCertificate(req, kr.KeyID)
		if err != nil {
			return nil, err
		}
		// The answer names the recipient as the request did when that is
		// the certificate's subject key identifier; a key identifier
		// computed from the key (certificates without the extension, as
		// many IDevIDs) would not let OpenSSL find its certificate, so the
		// certificate is then named by issuer and serial number.
		if bytes.Equal(cert.SubjectKeyId, kr.KeyID) {
			d.recipient, err = cms.NewPublicKeyRecipient(cert.PublicKey, kr.KeyID)
		} else {
			d.recipient, err = cms.NewCertificateRecipient(cert, false)
		}
		if err != nil {
			return nil, badRequest("recipient key not usable", err)
		}
		d.recipientKind, d.subject = kind, cert.Subject.String()
		d.kind = DeliveryKARI
		if d.recipient.Kind() == cms.RecipientKeyTrans {
			d.kind = DeliveryKTRI
		}
	default:
		return nil, badRequest("malformed key request attributes", nil)
	}
	ce, err := kr.ContentEncryption(contentBits(kt))
	if err != nil {
		return nil, badRequest("no usable content-encryption algorithm", err)
	}
	d.content = ce
	return d, nil
}

// recipientCertificate finds the certificate whose key the requester named
// by key identifier: its own certificate (the one it authenticated with:
// IDevID or operational), else one registered for its identity.
func (g *Keygen) recipientCertificate(req Request, id []byte) (*x509.Certificate, string, error) {
	if leaf := req.Requester.Leaf; leaf != nil && matchesKeyID(leaf, id) {
		return leaf, recipientRequester, nil
	}
	if g.recipients != nil && req.Requester.Kind != KindOperator {
		certs, err := g.recipients.RecipientCertificates(RequesterIdentity(req.Requester))
		if err != nil {
			return nil, "", &Error{Kind: KindInternal, Reason: "recipient lookup failed", Err: err}
		}
		for _, c := range certs {
			if matchesKeyID(c, id) {
				return c, recipientRegistered, nil
			}
		}
	}
	return nil, "", badRequest("no recipient key matches the identifier", nil)
}

// RequesterIdentity is the identity under which recipient certificates are
// registered for r (policy.IdentityOf): "idevid/<anchor>/sn:<serialNumber>"
// (or ".../fp:<sha-256>" for an IDevID without a usable serialNumber
// attribute), "operational/subject:<hash>".
func RequesterIdentity(r Requester) string {
	return policy.IdentityOf(policy.Requester{Verified: r.verified()})
}

// kek returns the key-encryption key named id, from the cache of those
// found before (a search of the token costs more than the wrap), or the
// token. A KEK deleted since it was cached is noticed when it wraps
// (forgetKEK).
func (g *Keygen) kek(id []byte) (*hsm.KEK, error) {
	if k, ok := g.keks.Load(string(id)); ok {
		return k.(*hsm.KEK), nil
	}
	k, err := g.tok.FindKEK(id)
	if err != nil {
		return nil, err
	}
	g.keks.Store(string(id), k)
	return k, nil
}

// forgetKEK drops a cached KEK that the token no longer has.
func (g *Keygen) forgetKEK(id []byte) { g.keks.Delete(string(id)) }
