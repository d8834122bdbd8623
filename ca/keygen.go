package ca

import (
	"bytes"
	"context"
	"crypto"
	"crypto/rand"
	"crypto/x509"
	"encoding/hex"
	"errors"
	"fmt"
	"io"
	"slices"
	"sync"

	"github.com/estca/estca/ca/cms"
	"github.com/estca/estca/hsm"
	"github.com/estca/estca/policy"
	"github.com/estca/estca/store"
)

// Audit vocabulary of server-side key generation.
const (
	// FlagServerKeygen marks the issued and denied records of /skg and /skc.
	FlagServerKeygen = "server-keygen"
	// FlagEscrow marks the issued record of a certificate whose key is
	// escrowed in the token.
	FlagEscrow = "escrow"
	// VerdictDestroyed and VerdictEscrowed are the verdicts of a keygen
	// record: what became of the key in the token.
	VerdictDestroyed = "destroyed"
	VerdictEscrowed  = "escrowed"
)

// Delivery kinds of a server-generated key, as KeygenResult.Delivery and
// the audit record name them.
const (
	DeliveryPlain = "plain" // PKCS#8, Content-Format 284
	DeliveryKEK   = "kekri" // EnvelopedData with KEKRecipientInfo (280)
	DeliveryKTRI  = "ktri"  // EnvelopedData with KeyTransRecipientInfo (280)
	DeliveryKARI  = "kari"  // EnvelopedData with KeyAgreeRecipientInfo (280)
)

// KeyToken is what server-side key generation needs from the PKCS#11
// token; *hsm.Token implements it.
type KeyToken interface {
	// GenerateExportable generates a key pair with the token's RNG and
	// exports it wrapped; keep leaves it in the token, pending escrow.
	GenerateExportable(kt hsm.KeyType, keep bool) (*hsm.ExportedKey, error)
	// EscrowKey relabels a kept key by its certificate's serial.
	EscrowKey(label, serial string) error
	// DeleteKey destroys a kept key that will not be escrowed.
	DeleteKey(label string) error
	// FindKEK returns the pre-shared key-encryption key named id, or an
	// error wrapping hsm.ErrKeyNotFound.
	FindKEK(id []byte) (*hsm.KEK, error)
}

// Recipients are the recipient certificates registered for requester
// identities (`estca keys add-recipient`): a device may ask for its key
// encrypted to one of them by its key identifier (RFC 7030 §4.4.1.2).
type Recipients interface {
	// RecipientCertificates returns the certificates registered for the
	// identity (policy.IdentityOf); none is not an error.
	RecipientCertificates(identity string) ([]*x509.Certificate, error)
}

// KeygenOptions configure server-side key generation (NewKeygen).
type KeygenOptions struct {
	// Token generates the keys and holds the key-encryption keys. Required.
	Token KeyToken
	// Signer is the key-package signing key (in the HSM) and
	// SignerCertificate its certificate, issued by the issuing CA with
	// digitalSignature and no extended key usage (see
	// KeyPackageSignerTemplate). Required. Every signature is verified
	// before it leaves (package cms).
	Signer            crypto.Signer
	SignerCertificate *x509.Certificate
	// Recipients are the registered recipient certificates; nil means none.
	Recipients Recipients
	// NoAuthAttrs leaves out the authenticated attributes of an
	// AuthEnvelopedData (AES-GCM, when a request's SMIMECapabilities ask
	// for it). RFC 5083 §2.1 requires them, with a content-type attribute,
	// when the content is not id-data (here it is id-signedData), so they
	// are sent by default; OpenSSL up to at least 3.6 cannot parse an
	// AuthEnvelopedData that has them (openssl#26101): set this for fleets
	// that decrypt with OpenSSL and ask for GCM. AES-CBC (the default
	// without SMIMECapabilities) is not concerned.
	NoAuthAttrs bool
	// SignerCertificateOnly leaves the issuing CA certificate out of the
	// key package's SignedData, which then carries the signer's certificate
	// only. RFC 5652 §5.1 allows fewer certificates than a path needs where
	// recipients have another means of obtaining them: an EST client that
	// fetched the CA certificates of /crts as 281 (the chain) has the
	// issuing CA; one that fetched the root alone (287) has not, and could
	// no longer verify the package. Left out, the issuing CA certificate
	// (about 400 bytes for a P-256 CA) costs neither the constrained link
	// nor a Block2 exchange: a P-256 key package for a KARI recipient and
	// its certificate fit in two 1024-byte blocks instead of three. By
	// default the package carries both certificates.
	SignerCertificateOnly bool
	// Rand is the randomness of the CMS layer (content keys, IVs, ephemeral
	// keys); nil means crypto/rand.Reader. Key pairs come from the token.
	Rand io.Reader
}

// Keygen is server-side key generation (RFC 9148 §4.8, RFC 7030 §4.4) on
// top of an Authority. It is safe for concurrent use.
type Keygen struct {
	keks sync.Map // string(KEK id) → *hsm.KEK, found before

	a           *Authority
	tok         KeyToken
	signer      *cms.Signer
	recipients  Recipients
	noAuthAttrs bool
	rand        io.Reader
}

// NewKeygen returns the server-side key generation of a. The signer
// certificate must be issued by a's issuing CA, be valid now, allow
// digitalSignature and carry no extended key usage other than
// emailProtection (so that `openssl cms -verify` accepts it).
func (a *Authority) NewKeygen(o KeygenOptions) (*Keygen, error) {
	if o.Token == nil {
		return nil, errors.New("ca: keygen: no token")
	}
	c := o.SignerCertificate
	if o.Signer == nil || c == nil {
		return nil, errors.New("ca: keygen: no key-package signer")
	}
	if err := checkKeyPackageSigner(c, a.issuing, a.now()); err != nil {
		return nil, err
	}
	var so cms.SignerOptions
	if !o.SignerCertificateOnly {
		so.Chain = a.chain[:1]
	}
	s, err := cms.NewSigner(o.Signer, c, so)
	if err != nil {
		return nil, fmt.Errorf("ca: keygen: key-package signer: %w", err)
	}
	g := &Keygen{a: a, tok: o.Token, signer: s, recipients: o.Recipients, noAuthAttrs: o.NoAuthAttrs, rand: o.Rand}
	if g.rand == nil {
		g.rand = rand.Reader
	}
	return g, nil
}

// KeygenRequest is one /skg or /skc request.
type KeygenRequest struct {
	// CSR is the DER PKCS#10 request (Content-Format 286). Its public key
	// and signature are ignored (RFC 9148 §4.8); its subject, SAN and
	// attributes are used.
	CSR []byte
	// Profile is the profile selected by the path label; "" means the default.
	Profile string
	// Requester is the authenticated client.
	Requester Requester
	// Operation is OpSkg or OpSkc.
	Operation Operation
}

// KeygenResult is a server-generated key and its certificate.
type KeygenResult struct {
	Result
	// Key is the private key: a DER PKCS#8 PrivateKeyInfo when Delivery is
	// DeliveryPlain (Content-Format 284), else a DER ContentInfo holding an
	// EnvelopedData or AuthEnvelopedData of a SignedData of an
	// AsymmetricKeyPackage (RFC 7030 §4.4.2, Content-Format 280). A plain
	// key is the caller's to zero (Zero) once it is sent.
	Key      []byte
	Delivery string
	// Escrowed says the key is kept in the token (hsm.EscrowPrefix+Serial).
	Escrowed bool
}

// Encrypted reports whether Key is CMS (280) rather than PKCS#8 (284).
func (r *KeygenResult) Encrypted() bool { return r.Delivery != DeliveryPlain }

// Zero overwrites Key.
func (r *KeygenResult) Zero() {
	if r != nil {
		clear(r.Key)
	}
}

// ServerKeygen serves /skg and /skc (RFC 9148 §4.8, RFC 7030 §4.4). The
// request is decided like Enroll's (policy.Engine.Evaluate with OpSkg or
// OpSkc on the re-checked requester, the CSR and the store's counters: the
// CSR's subject, SAN and extensions are bound and checked as for any
// enrollment, its key and signature ignored; a profile that requires
// encrypted keys refuses a request that does not ask for one; rate limits,
// approvals and pending caps apply). A refusal or a pending request
// (KindPending, 5.03 with Max-Age) costs no key generation. Then it
// resolves how the key is to be delivered (cms.ParseKeyRequest: plain
// PKCS#8; a KEK in the token named by DecryptKeyIdentifier; the
// requester's own certificate or a registered recipient certificate named
// by AsymmetricDecryptKeyIdentifier), has the token generate the key pair
// of the template's ServerKeyType, packages it (plain, or signed by the
// key-package signer and encrypted for the recipient with a content key of
// the generated key's strength), issues the certificate for it from the
// engine's template (durable in the store with its audit record, which is
// the record of the key generation: profile, key type, delivery, recipient
// kind and key identifier, content encryption, CKA_LOCAL, escrowed or
// destroyed, the CSR digest; never key material) and escrows the token
// copy if the profile says so (Template.EscrowKey).
//
// Under automatic approval every request gets a new key and certificate:
// an identical CSR sent again is served again (the key of the first answer
// is gone unless escrowed). A request an operator approved gets exactly one
// key and certificate, at the device's first retry after the approval
// (concurrent identical retries share that answer); a later identical
// retry is refused (KindForbidden): the key is delivered once. Refusals
// are audited *Error values with the engine's reason (KindForbidden,
// KindBadRequest, KindNotFound, KindUnavailable for rate limits) or the
// delivery's (KindBadRequest: unknown KEK, no matching recipient, no
// usable content encryption); KindUnavailable when the HSM or the store
// cannot serve for now. A key that cannot be escrowed after its
// certificate was stored is destroyed, a keygen record says so, and the
// request fails.
func (g *Keygen) ServerKeygen(ctx context.Context, req KeygenRequest) (*KeygenResult, error) {
	r := Request(req)
	if err := checkRequest(ctx, &r); err != nil {
		return nil, err
	}
	if r.Operation != policy.OpSkg && r.Operation != policy.OpSkc {
		return nil, &Error{Kind: KindInternal, Reason: "not a key generation request"}
	}
	digest := csrDigest(r.CSR)
	return once(ctx, g.a, r.Operation.String()+"/"+r.Requester.Identity.Fingerprint+"/"+digest,
		func() (*KeygenResult, error) { return g.serverKeygen(r, digest) },
		func(k *KeygenResult) *KeygenResult {
			c := *k
			c.Key, c.Existing = bytes.Clone(k.Key), true
			return &c
		},
		(*KeygenResult).Zero)
}

func (g *Keygen) serverKeygen(r Request, digest string) (*KeygenResult, error) {
	a := g.a
	defer a.store.Expect()() // see enroll
	var kr *cms.KeyRequest
	dc, release, err := a.decide(r, digest, func() (bool, error) {
		var err error
		if kr, err = cms.ParseKeyRequest(r.CSR); err != nil {
			return false, err
		}
		return kr.Delivery != cms.DeliverPlain, nil
	})
	if err != nil {
		return nil, err
	}
	defer release()
	d := &dc.Decision
	switch {
	case d.Action == policy.ActionPending:
		// The key is generated when the approved request comes back.
		return nil, a.pending(r, digest, dc.identity, d, dc.counters.ThisPending)
	case d.Action != policy.ActionIssue:
		return nil, a.refuse(r, digest, d)
	case dc.issued != nil:
		return nil, a.deny(d.Profile, r, digest, KindForbidden, reasonDelivered, nil)
	}
	// A request an operator approved is mapped to its certificate: it gets
	// one. Others get a new key each time.
	certDigest := ""
	if dc.counters.Operator == policy.OperatorApproved {
		certDigest = digest
	}
	return g.generate(r, digest, certDigest, dc.identity, d, kr)
}

// reasonDelivered refuses an identical retry of an approved /skg or /skc
// request whose key was delivered.
const reasonDelivered = "CSR already used: a server-generated key is delivered once"

// generate serves a request the engine decided to issue: delivery, key
// generation, key package, certificate, escrow.
func (g *Keygen) generate(r Request, digest, certDigest, identity string, d *policy.Decision, kr *cms.KeyRequest) (*KeygenResult, error) {
	a := g.a
	deny := func(kind ErrorKind, reason string, cause error, flags ...string) error {
		return a.deny(d.Profile, r, digest, kind, reason, cause, flags...)
	}
	if a.issuingExpired() {
		return nil, deny(KindUnavailable, "issuing CA expired", nil)
	}
	kt, err := hsm.ParseDeviceKeyType(d.Template.ServerKeyType)
	if err != nil {
		// The configuration check refuses such profiles; a policy set
		// through SetPolicy alone is not checked against the token.
		return nil, deny(KindInternal, "server key type not supported by the token", err)
	}
	dl, err := g.delivery(r, kr, kt)
	if err != nil {
		if e := (*Error)(nil); errors.As(err, &e) && e.Kind == KindBadRequest {
			return nil, deny(e.Kind, e.Reason, e.Err)
		}
		return nil, err
	}

	k, err := g.tok.GenerateExportable(kt, d.Template.EscrowKey)
	if err != nil {
		return nil, g.a.hsmError("key generation failed", err)
	}
	defer k.Zero()
	pkcs8, err := unwrapExported(k)
	if err != nil {
		g.discard(k)
		return nil, err
	}
	defer clear(pkcs8)

	// The key package before the certificate: a packaging failure (a KEK
	// deleted since, the HSM) costs no certificate, and an approved
	// request is not used up by it.
	out := &KeygenResult{Delivery: dl.kind}
	if dl.recipient == nil {
		out.Key = bytes.Clone(pkcs8)
	} else if out.Key, err = g.signer.SealKeyPackage(pkcs8, dl.recipient, cms.SealOptions{
		EncryptOptions: cms.EncryptOptions{Content: dl.content, NoAuthAttrs: g.noAuthAttrs, Rand: g.rand},
		SigningTime:    a.now(),
	}); err != nil {
		g.discard(k)
		if errors.Is(err, ErrHSMUnavailable) {
			return nil, g.a.hsmError("key package signing failed", err)
		}
		if dl.recipientKind == recipientKEK && errors.Is(err, hsm.ErrKeyNotFound) {
			// Deleted from the token since it was cached.
			g.forgetKEK(dl.keyID)
			return nil, deny(KindBadRequest, "unknown key-encryption key", err)
		}
		var flags []string
		if errors.Is(err, cms.ErrSignature) {
			flags = append(flags, FlagBadSignature)
		}
		return nil, deny(KindInternal, "key packaging failed", err, flags...)
	}

	res, err := g.issue(r, digest, certDigest, identity, d, k, dl)
	if err == nil && res.Existing {
		// Another instance served this approved request meanwhile.
		err = deny(KindForbidden, reasonDelivered, nil)
	}
	if err != nil {
		g.discard(k)
		out.Zero()
		return nil, err
	}
	out.Result = *res
	if k.Label != "" {
		if err := g.tok.EscrowKey(k.Label, res.Serial); err != nil {
			g.discard(k)
			out.Zero()
			return nil, g.escrowFailed(d.Profile, r, digest, res.Serial, err)
		}
		out.Escrowed = true
	}
	return out, nil
}

// discard destroys the token copy of a key that will not be delivered
// (kept keys only: session keys are gone already). A failure leaves it
// pending, for hsm.Token.CleanupGenerated at the next start.
func (g *Keygen) discard(k *hsm.ExportedKey) {
	if k.Label != "" {
		_ = g.tok.DeleteKey(k.Label)
	}
}

// unwrapExported recovers the PKCS#8 of an exported key in memory
// (RFC 5649; some tokens zero-pad it before wrapping) and checks that it is
// the key the token reported, so that a token fault never delivers a key
// that does not match its certificate.
func unwrapExported(k *hsm.ExportedKey) ([]byte, error) {
	padded, err := cms.UnwrapPad(k.TransportKey, k.Wrapped)
	if err != nil {
		return nil, &Error{Kind: KindInternal, Reason: "key export failed", Err: err}
	}
	der, err := cms.TrimDERPadding(padded)
	if err != nil {
		clear(padded)
		return nil, &Error{Kind: KindInternal, Reason: "key export failed", Err: err}
	}
	priv, err := x509.ParsePKCS8PrivateKey(der)
	if err == nil {
		pub, ok := priv.(crypto.Signer)
		if !ok || !samePublicKey(pub.Public(), k.Public) {
			err = errors.New("ca: exported private key does not match the generated public key")
		}
	}
	if err != nil {
		clear(padded)
		return nil, &Error{Kind: KindInternal, Reason: "key export failed", Err: err}
	}
	return der, nil
}

// issue signs and stores the certificate of the generated key from the
// engine's template. Its issued record is the audit record of the key
// generation, durable together with the certificate: flagged
// server-keygen, it names the key type, the delivery (recipient kind, key
// identifier, content encryption), CKA_LOCAL, the CSR digest and what
// becomes of the key in the token (destroyed already, or escrowed).
func (g *Keygen) issue(r Request, digest, certDigest, identity string, d *policy.Decision, k *hsm.ExportedKey, dl *delivery) (*Result, error) {
	spki, err := x509.MarshalPKIXPublicKey(k.Public)
	if err != nil {
		return nil, &Error{Kind: KindInternal, Reason: "generated key unusable", Err: err}
	}
	fl := append(flags(r, d), "key-type:"+string(k.Type), "delivery:"+dl.kind)
	reason := fmt.Sprintf("%s; server-generated %s key (CKA_LOCAL %t), delivered %s", issueReason(r, d.Template), k.Type, k.Attributes.Local, dl.kind)
	if dl.recipient != nil {
		fl = append(fl, "recipient:"+dl.recipientKind, "key-id:"+hex.EncodeToString(dl.keyID), "content:"+dl.content.String())
		reason += fmt.Sprintf(" (%s) to the %s, key id %x", dl.content, dl.recipientText(), dl.keyID)
	}
	if k.Label != "" {
		fl = append(fl, FlagEscrow, VerdictEscrowed)
		reason += "; escrowed in the token as " + hsm.EscrowPrefix + "SERIAL"
	} else {
		fl = append(fl, VerdictDestroyed)
		reason += "; destroyed in the token"
	}
	// The record's CSR digest is the certificate's (the store checks they
	// agree): the request's only when the certificate is mapped to it (an
	// approved request); the reason names the CSR in every case.
	rec := store.AuditRecord{
		Event:     store.EventIssued,
		Requester: r.Requester.Identity,
		CSRDigest: certDigest,
		Profile:   d.Profile,
		Verdict:   VerdictAccepted,
		Reason:    reason + "; CSR sha256 " + digest,
		Flags:     fl,
	}
	return g.a.signAndStore(r, digest, certDigest, identity, d, k.Public, spki, rec)
}

// escrowFailed records that a key announced as escrowed could not be kept
// (it was destroyed, the answer not sent).
func (g *Keygen) escrowFailed(profile string, r Request, digest, serial string, cause error) error {
	_, err := g.a.store.Append(store.AuditRecord{
		Time:      g.a.now(),
		Event:     store.EventKeygen,
		Requester: r.Requester.Identity,
		CSRDigest: digest,
		Serial:    serial,
		Profile:   profile,
		Verdict:   VerdictDestroyed,
		Reason:    r.Operation.String() + ": escrow failed: the key was destroyed and not delivered",
		Flags:     append(requestFlags(r), VerdictDestroyed),
	})
	if err != nil {
		// The record of the destroyed key could not be written either: a
		// store that cannot write for now is 5.03 with its Max-Age, as
		// every other store write.
		return g.a.storeErr("key escrow failed", errors.Join(cause, err))
	}
	return g.a.hsmError("key escrow failed", cause)
}

// hsmError classifies a token failure: while the HSM is down, 5.03 with
// Max-Age HSMRetryAfter; a token without memory for the key
// (hsm.ErrTokenFull, CKR_DEVICE_MEMORY: escrowed keys fill it) 5.03 "hsm
// full" with the Max-Age of a full store (StoreRetry), since both pass
// once an operator frees room; otherwise an internal error under reason.
func (a *Authority) hsmError(reason string, err error) error {
	switch {
	case errors.Is(err, ErrHSMUnavailable):
		return &Error{Kind: KindUnavailable, Reason: "hsm unavailable", MaxAge: HSMRetryAfter, Err: err}
	case errors.Is(err, hsm.ErrTokenFull):
		return &Error{Kind: KindUnavailable, Reason: "hsm full", MaxAge: a.storeRetry, Err: err}
	}
	return &Error{Kind: KindInternal, Reason: reason, Err: err}
}

// contentBits is the content-encryption key strength matching a generated
// key (NIST SP 800-57: P-256, RSA-2048 and RSA-3072 give at most 128 bits
// of security, P-384 192, for which AES-256 is the next size).
func contentBits(kt hsm.KeyType) int {
	if kt == hsm.ECDSAP384 {
		return 256
	}
	return 128
}

// keyIDs are the identifiers a requester may name a certificate's key by:
// its subject key identifier extension, and the RFC 5280 §4.2.1.2 method 1
// (SHA-1) and RFC 7093 §2 method 1 (SHA-256, 160 bits) identifiers of its
// key, for certificates without the extension or whose issuer used
// another method.
func keyIDs(c *x509.Certificate) [][]byte {
	ids := [][]byte{}
	if len(c.SubjectKeyId) > 0 {
		ids = append(ids, c.SubjectKeyId)
	}
	if bits, err := publicKeyBits(c.RawSubjectPublicKeyInfo); err == nil {
		ids = append(ids, sha1Sum(bits), sha256Prefix(bits))
	}
	return ids
}

func matchesKeyID(c *x509.Certificate, id []byte) bool {
	return slices.ContainsFunc(keyIDs(c), func(k []byte) bool { return bytes.Equal(k, id) })
}
