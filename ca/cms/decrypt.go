package cms

import (
	"bytes"
	"crypto/aes"
	"crypto/cipher"
	"crypto/subtle"
	"encoding/asn1"
	"errors"
	"fmt"

	"golang.org/x/crypto/cryptobyte"
	cbasn1 "golang.org/x/crypto/cryptobyte/asn1"
)

// Decrypted is the content recovered by Decrypt.
type Decrypted struct {
	// ContentType is the encryptedContentInfo's content type.
	ContentType asn1.ObjectIdentifier
	// Content is the decrypted content, owned by the caller (zero it if it
	// holds key material).
	Content []byte
	// ContentEncryption is the algorithm the content was encrypted with.
	ContentEncryption ContentEncryption
	// Recipient is the kind of RecipientInfo the key was recovered from.
	Recipient RecipientKind
}

// envelope is a parsed EnvelopedData or AuthEnvelopedData.
type envelope struct {
	authenticated bool
	recipients    []recipient
	contentType   asn1.ObjectIdentifier
	alg           algID
	ciphertext    []byte
	authAttrs     []byte // [1] IMPLICIT element as received, nil when absent
	mac           []byte
}

// recipient is one parsed RecipientInfo; exactly one field is set, or none
// for a kind this package does not decrypt (pwri, ori).
type recipient struct {
	kek *kekri
	kt  *ktri
	ka  *kari
}

// Decrypt decrypts a DER ContentInfo holding an EnvelopedData (AES-CBC) or
// an AuthEnvelopedData (AES-GCM) with k, and returns the content. It tries
// the RecipientInfos that name k (see DecryptKey) and fails with
// ErrNoRecipient when none does, ErrDecrypt when the key cannot be recovered
// or the content does not decrypt (GCM tag, CBC padding).
func Decrypt(der []byte, k *DecryptKey) (*Decrypted, error) {
	if k == nil {
		return nil, errors.New("cms: no decryption key")
	}
	if len(der) > MaxMessageSize {
		return nil, tooLarge("message of %d bytes", len(der))
	}
	ct, content, err := parseContentInfo(der)
	if err != nil {
		return nil, err
	}
	var env *envelope
	switch {
	case ct.Equal(oidEnvelopedData):
		env, err = parseEnvelope(content, false)
	case ct.Equal(oidAuthEnvelopedData):
		env, err = parseEnvelope(content, true)
	default:
		return nil, unsupported("content type %s, want enveloped-data or authEnveloped-data", ct)
	}
	if err != nil {
		return nil, err
	}
	ce, err := env.contentEncryption()
	if err != nil {
		return nil, err
	}
	cek, kind, err := env.recoverKey(k, ce.KeySize())
	if err != nil {
		return nil, err
	}
	defer zero(cek)
	plain, err := env.decryptContent(ce, cek)
	if err != nil {
		return nil, err
	}
	return &Decrypted{ContentType: env.contentType, Content: plain, ContentEncryption: ce, Recipient: kind}, nil
}

// OpenKeyPackage is the device side of RFC 7030 §4.4.2: it decrypts an
// EnvelopedData or AuthEnvelopedData whose content is a SignedData
// (content type id-signedData), verifies the SignedData and its signer's
// chain as VerifyKeyPackage does, and returns the key. The decrypted
// SignedData is zeroed before returning.
func OpenKeyPackage(der []byte, k *DecryptKey, o VerifyOptions) (*KeyPackage, error) {
	d, err := Decrypt(der, k)
	if err != nil {
		return nil, err
	}
	defer zero(d.Content)
	if !d.ContentType.Equal(oidSignedData) {
		return nil, unsupported("encrypted content type %s, want id-signedData", d.ContentType)
	}
	p, err := verifySignedKeyPackage(d.Content, o)
	if err != nil {
		return nil, err
	}
	p.ContentEncryption, p.Recipient = d.ContentEncryption, d.Recipient
	return p, nil
}

func parseEnvelope(der []byte, authenticated bool) (*envelope, error) {
	where := "EnvelopedData"
	if authenticated {
		where = "AuthEnvelopedData"
	}
	s := cryptobyte.String(der)
	var ed, ris, eci cryptobyte.String
	var version int64
	if !s.ReadASN1(&ed, cbasn1.SEQUENCE) || !s.Empty() {
		return nil, malformed(where, "want one SEQUENCE")
	}
	if !ed.ReadASN1Integer(&version) {
		return nil, malformed(where+".version", "bad INTEGER")
	}
	hasOriginator := ed.PeekASN1Tag(tagExplicit0)
	if !ed.SkipOptionalASN1(tagExplicit0) {
		return nil, malformed(where+".originatorInfo", "bad [0]")
	}
	if !ed.ReadASN1(&ris, cbasn1.SET) {
		return nil, malformed(where+".recipientInfos", "bad SET")
	}
	env := &envelope{authenticated: authenticated}
	allV0, otherKinds := true, false
	for !ris.Empty() {
		if len(env.recipients) == maxRecipients {
			return nil, tooLarge("more than %d recipients", maxRecipients)
		}
		r, v0, other, err := parseRecipientInfo(&ris)
		if err != nil {
			return nil, err
		}
		allV0, otherKinds = allV0 && v0, otherKinds || other
		env.recipients = append(env.recipients, r)
	}
	if len(env.recipients) == 0 {
		return nil, malformed(where+".recipientInfos", "empty")
	}
	if !ed.ReadASN1(&eci, cbasn1.SEQUENCE) || !eci.ReadASN1ObjectIdentifier(&env.contentType) {
		return nil, malformed(where+".encryptedContentInfo", "bad SEQUENCE or contentType")
	}
	var err error
	if env.alg, err = readAlgID(&eci, where+".contentEncryptionAlgorithm"); err != nil {
		return nil, err
	}
	if eci.Empty() {
		return nil, unsupported("detached encrypted content")
	}
	if !eci.ReadASN1((*cryptobyte.String)(&env.ciphertext), tagImplicit0) || !eci.Empty() {
		return nil, malformed(where+".encryptedContent", "want a primitive DER [0] OCTET STRING")
	}
	if authenticated {
		if version != 0 {
			return nil, malformed(where+".version", "must be 0")
		}
		if ed.PeekASN1Tag(tagExplicit1) {
			var attrs cryptobyte.String
			if !ed.ReadASN1Element(&attrs, tagExplicit1) {
				return nil, malformed(where+".authAttrs", "bad [1]")
			}
			env.authAttrs = attrs
		}
		if !ed.ReadASN1((*cryptobyte.String)(&env.mac), cbasn1.OCTET_STRING) ||
			!ed.SkipOptionalASN1(tagExplicit2) || !ed.Empty() {
			return nil, malformed(where+".mac", "bad OCTET STRING or trailing data")
		}
		return env, env.checkAuthAttrs()
	}
	hasUnprotected := ed.PeekASN1Tag(tagExplicit1)
	if !ed.SkipOptionalASN1(tagExplicit1) || !ed.Empty() {
		return nil, malformed(where, "bad unprotectedAttrs or trailing data")
	}
	// RFC 5652 §6.1 version rules (version 4 needs originatorInfo with
	// other certificate formats, which is accepted without being read).
	want := int64(2)
	switch {
	case hasOriginator || hasUnprotected || otherKinds:
		want = 3
	case allV0:
		want = 0
	}
	if version != want && !(hasOriginator && version == 4) {
		return nil, malformed(where+".version", fmt.Sprintf("%d, want %d", version, want))
	}
	return env, nil
}

// parseRecipientInfo reads one RecipientInfo. v0 reports a version-0
// recipient (ktri with issuerAndSerialNumber), other a pwri or ori choice,
// which this package skips (both matter for the EnvelopedData version).
func parseRecipientInfo(s *cryptobyte.String) (r recipient, v0, other bool, err error) {
	var body cryptobyte.String
	var tag cbasn1.Tag
	if !s.ReadAnyASN1(&body, &tag) {
		return r, false, false, malformed("RecipientInfo", "bad element")
	}
	switch tag {
	case cbasn1.SEQUENCE:
		r.kt, err = parseKTRI(body)
		return r, err == nil && r.kt.version == 0, false, err
	case tagExplicit1:
		r.ka, err = parseKARI(body)
	case tagExplicit2:
		r.kek, err = parseKEKRI(body)
	case cbasn1.Tag(3).ContextSpecific().Constructed(), cbasn1.Tag(4).ContextSpecific().Constructed():
		return r, false, true, nil // pwri, ori
	default:
		return r, false, false, malformed("RecipientInfo", "unknown choice")
	}
	return r, false, false, err
}

// checkAuthAttrs: when an AuthEnvelopedData has authAttrs they must carry
// a content-type attribute naming the encrypted content's type (RFC 5083
// §2.1, RFC 5652 §11.1). Their absence for non-data content is tolerated:
// OpenSSL cannot produce them.
func (env *envelope) checkAuthAttrs() error {
	if env.authAttrs == nil {
		return nil
	}
	s := cryptobyte.String(env.authAttrs)
	var set cryptobyte.String
	if !s.ReadASN1(&set, tagExplicit1) {
		return malformed("AuthEnvelopedData.authAttrs", "bad SET")
	}
	attrs, err := readAttributes(set, "AuthEnvelopedData.authAttrs")
	if err != nil {
		return err
	}
	v, ok, err := single(attrs, oidAttrContentType, "AuthEnvelopedData.authAttrs")
	if err != nil {
		return err
	}
	var ct asn1.ObjectIdentifier
	if !ok || !v.ReadASN1ObjectIdentifier(&ct) || !v.Empty() || !ct.Equal(env.contentType) {
		return malformed("AuthEnvelopedData.authAttrs", "content-type attribute missing or not the content's type")
	}
	return nil
}

// contentEncryption checks the content-encryption algorithm against the
// envelope kind: AES-CBC in EnvelopedData, AES-GCM in AuthEnvelopedData.
func (env *envelope) contentEncryption() (ContentEncryption, error) {
	ce, ok := contentEncryptionByOID(env.alg.oid)
	if !ok || ce.Authenticated() != env.authenticated {
		return 0, unsupported("content encryption %s in this envelope", env.alg.oid)
	}
	return ce, nil
}

// recoverKey returns the content-encryption key from the first
// RecipientInfo that names k and yields a key of the right length.
func (env *envelope) recoverKey(k *DecryptKey, keyLen int) ([]byte, RecipientKind, error) {
	var lastErr error
	for _, r := range env.recipients {
		var cek []byte
		var matched bool
		var err error
		var kind RecipientKind
		switch {
		case r.kek != nil:
			kind = RecipientKEK
			cek, matched, err = r.kek.unwrap(k)
		case r.kt != nil:
			kind = RecipientKeyTrans
			cek, matched, err = r.kt.unwrap(k)
		case r.ka != nil:
			kind = RecipientKeyAgree
			cek, matched, err = r.ka.unwrap(k)
		}
		if !matched {
			continue
		}
		if err == nil && len(cek) != keyLen {
			zero(cek)
			err = fmt.Errorf("%w: content-encryption key of %d bytes", ErrDecrypt, len(cek))
		}
		if err == nil {
			return cek, kind, nil
		}
		lastErr = err
	}
	if lastErr != nil {
		return nil, 0, lastErr
	}
	return nil, 0, ErrNoRecipient
}

// decryptContent decrypts the content with cek into a new buffer.
func (env *envelope) decryptContent(ce ContentEncryption, cek []byte) ([]byte, error) {
	block, err := aes.NewCipher(cek)
	if err != nil {
		return nil, err
	}
	if ce.Authenticated() {
		return env.openGCM(block)
	}
	p := cryptobyte.String(env.alg.params)
	var iv cryptobyte.String
	if !p.ReadASN1(&iv, cbasn1.OCTET_STRING) || !p.Empty() || len(iv) != aes.BlockSize {
		return nil, malformed("AES-CBC parameters", "want a 16-byte IV")
	}
	if len(env.ciphertext) == 0 || len(env.ciphertext)%aes.BlockSize != 0 {
		return nil, fmt.Errorf("%w: ciphertext length %d", ErrDecrypt, len(env.ciphertext))
	}
	plain := bytes.Clone(env.ciphertext)
	cipher.NewCBCDecrypter(block, iv).CryptBlocks(plain, plain)
	// RFC 5652 §6.3 padding, checked without branching on its bytes.
	n := len(plain)
	pad := int(plain[n-1])
	good := subtle.ConstantTimeLessOrEq(1, pad) & subtle.ConstantTimeLessOrEq(pad, aes.BlockSize)
	for i := 1; i <= aes.BlockSize; i++ {
		inPad := subtle.ConstantTimeLessOrEq(i, pad)
		good &= subtle.ConstantTimeSelect(inPad, subtle.ConstantTimeByteEq(plain[n-i], byte(pad)), 1)
	}
	if good != 1 {
		zero(plain)
		return nil, fmt.Errorf("%w: bad padding", ErrDecrypt)
	}
	return plain[:n-pad], nil
}

func (env *envelope) openGCM(block cipher.Block) ([]byte, error) {
	p := cryptobyte.String(env.alg.params)
	var params, nonce cryptobyte.String
	icvLen := int64(12) // RFC 5084 §3.2 DEFAULT
	if !p.ReadASN1(&params, cbasn1.SEQUENCE) || !p.Empty() || !params.ReadASN1(&nonce, cbasn1.OCTET_STRING) {
		return nil, malformed("GCMParameters", "bad SEQUENCE or nonce")
	}
	if !params.Empty() && (!params.ReadASN1Integer(&icvLen) || !params.Empty()) {
		return nil, malformed("GCMParameters", "bad aes-ICVlen")
	}
	if len(nonce) != gcmNonceSize || icvLen < 12 || icvLen > 16 || int64(len(env.mac)) != icvLen {
		return nil, unsupported("AES-GCM with a %d-byte nonce and a %d-byte ICV (mac %d bytes)", len(nonce), icvLen, len(env.mac))
	}
	aead, err := cipher.NewGCMWithTagSize(block, int(icvLen))
	if err != nil {
		return nil, err
	}
	var aad []byte
	if env.authAttrs != nil { // RFC 5083 §2.2: authenticated with the SET OF tag
		aad = append([]byte{0x31}, env.authAttrs[1:]...)
	}
	buf := make([]byte, 0, len(env.ciphertext)+len(env.mac))
	buf = append(append(buf, env.ciphertext...), env.mac...)
	plain, err := aead.Open(buf[:0], nonce, buf, aad)
	if err != nil {
		zero(buf)
		return nil, fmt.Errorf("%w: %w", ErrDecrypt, err)
	}
	return plain, nil
}
