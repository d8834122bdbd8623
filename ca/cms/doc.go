// Package cms builds and parses the Cryptographic Message Syntax structures
// of EST server-side key generation (RFC 7030 §4.4, RFC 9148 §4.8): the
// server-generated private key in an AsymmetricKeyPackage (RFC 5958),
// signed in a SignedData (RFC 5652 §5) by the party that generated it, and
// encrypted for the requester in an EnvelopedData (RFC 5652 §6) or an
// AuthEnvelopedData (RFC 5083), Content-Format 280:
//
//	ContentInfo( EnvelopedData | AuthEnvelopedData(
//	    SignedData( AsymmetricKeyPackage( OneAsymmetricKey = PKCS#8 ) ) ) )
//
// It also reads and writes the CSR attributes with which a requester asks
// for that encryption, and implements AES key wrap (RFC 3394) and AES key
// wrap with padding (RFC 5649).
//
// It is pure Go (no cgo) and imports only the standard library and
// golang.org/x/crypto, so that the device client (est/client) can use it.
//
// # Server side
//
//	req, err := cms.ParseKeyRequest(csrDER)       // DeliverPlain, DeliverKEK or DeliverAsymmetric
//	ce, err := req.ContentEncryption(128)         // 128 for P-256/RSA, 256 for P-384; ErrNoUsableAlgorithm
//	r, err := cms.NewKEKRecipient(req.KeyID, hsmKEK)        // KEKRecipientInfo, the token wraps
//	r, err := cms.NewCertificateRecipient(cert, true)       // RSA: KeyTransRecipientInfo, EC: KeyAgreeRecipientInfo
//	s, err := cms.NewSigner(hsmKey, signerCert, cms.SignerOptions{Chain: ...}) // once, at start
//	der, err := s.SealKeyPackage(pkcs8, r, cms.SealOptions{EncryptOptions: cms.EncryptOptions{Content: ce}})
//
// The recipient kinds are:
//   - KEKRecipientInfo (version 4): kekid is the DecryptKeyIdentifier; the
//     content-encryption key (CEK) is wrapped with AES key wrap (RFC 3394,
//     id-aes128/192/256-wrap) under a pre-shared KEK, through the
//     KEKWrapper interface so that the KEK can stay in an HSM (AESKEK is the
//     software implementation).
//   - KeyTransRecipientInfo: RSAES-OAEP with SHA-256 and MGF1-SHA-256 (RFC
//     8017, parameters as RFC 4055 §4.1), rid by issuer and serial number or
//     subject key identifier.
//   - KeyAgreeRecipientInfo (RFC 5753 §3.1): ephemeral-static ECDH on P-256
//     or P-384, dhSinglePass-stdDH-sha256kdf-scheme, ANSI X9.63 KDF over
//     ECC-CMS-SharedInfo, AES key wrap of the CEK's strength; originator is
//     the ephemeral public key, rid by issuer and serial or rKeyId.
//
// Content encryption is AES-128/256-CBC in an EnvelopedData, or
// AES-128/256-GCM (12-byte nonce, 16-byte ICV, RFC 5084) in an
// AuthEnvelopedData; the caller chooses the strength. The SignedData has
// version 3, one SignerInfo (issuerAndSerialNumber, version 1, or
// subjectKeyIdentifier, version 3), signed attributes content-type,
// message-digest and optionally signing-time, ECDSA with SHA-256/384/512 by
// curve or RSA PKCS #1 v1.5 with SHA-256, and carries the signer's
// certificate and chain. The signature is verified before SealKeyPackage or
// SignKeyPackage return, so that a faulty HSM signature never leaves.
//
// Every buffer this package allocates that holds key material in the clear
// (the key package and SignedData, built in one exactly sized buffer; the
// CEK; ECDH shared secrets and derived KEKs; unwrapped keys; decrypted
// content inside OpenKeyPackage) is zeroed before the function returns.
// The caller's pkcs8 argument is the caller's to zero; KeyPackage.Zero and
// Decrypted.Content are the caller's too.
//
// # Client side
//
//	csr, err := cms.CreateCertificateRequest(rand.Reader, tmpl, key, &cms.KeyRequest{
//	    Delivery: cms.DeliverKEK, KeyID: kekID, Capabilities: cms.ContentCapabilities(cms.AES128GCM, cms.AES128CBC)})
//	kp, err := cms.OpenKeyPackage(der, &cms.DecryptKey{KEKID: kekID, KEK: kek}, cms.VerifyOptions{Roots: caPool})
//	defer kp.Zero()                                // kp.PrivateKey is PKCS#8
//
// Decrypt decrypts any EnvelopedData or AuthEnvelopedData of the kinds above
// (also with SHA-384/512 KDFs, OAEP hashes and ukm, as other senders make
// them); VerifyKeyPackage verifies a SignedData key package (exactly one
// signer, content-type and message-digest attributes, signature, chain to
// the given roots) and returns its one key.
//
// The CSR attributes (RFC 7030 §4.4.1.1, §4.4.1.2, in the PKCS#10 attributes
// of RFC 2986) are SMIMECapabilities (1.2.840.113549.1.9.15, RFC 8551
// §2.5.2), DecryptKeyIdentifier (id-aa-decryptKeyID, RFC 4108 §2.2.5) and
// AsymmetricDecryptKeyIdentifier (id-aa-asymmDecryptKeyID). Go's
// x509.CreateCertificateRequest cannot express OCTET STRING attribute
// values, so CreateCertificateRequest lets it make the CSR, rebuilds the
// CertificationRequestInfo with the attributes added (DER SET order) and
// signs it again with the same algorithm.
//
// # What it does not do
//
// No key generation, no HSM calls (the KEKWrapper and crypto.Signer come
// from the caller), no choice of recipient from the request (the server
// finds the certificate the AsymmetricDecryptKeyIdentifier names), no
// logging. Parsing is strict and bounded: DER only (no BER indefinite
// lengths or constructed strings), at most MaxMessageSize (64 KiB) per
// message and MaxCSRSize per CSR, at most 16 recipients, certificates or
// digest algorithms, 64 attributes, and exact algorithm OIDs: no PKCS #1
// v1.5 key transport, no SHA-1 (OAEP defaults, sha1kdf), no
// static-static or cofactor ECDH, no password or other recipient infos,
// no RSA-PSS signatures, no detached content, no more than one signer or
// one key per package. Recipient certificates' key usage is not checked
// (the requester named the key); a signer certificate with a key usage
// extension must allow digitalSignature.
//
// Errors wrap one of the sentinels (ErrMalformed, with a *SyntaxError;
// ErrUnsupported; ErrTooLarge; ErrNoRecipient; ErrDecrypt; ErrSignature;
// ErrCertificate; ErrKeyMismatch; ErrUnwrap; ErrNoUsableAlgorithm).
//
// Concurrency: Signer, Recipient and AESKEK are immutable after
// construction and safe for concurrent use (if the crypto.Signer or
// KEKWrapper they hold is); the functions keep no state.
//
// Standards: RFC 5652 (CMS), RFC 5083 and RFC 5084 (AuthEnvelopedData,
// AES-GCM), RFC 3565 (AES in CMS), RFC 3394 and RFC 5649 (AES key wrap),
// RFC 5753 (ECC in CMS), RFC 8017 and RFC 4055 (RSAES-OAEP), RFC 5754 and
// RFC 5758 (SHA-2, ECDSA in CMS), RFC 5958 (asymmetric key packages), RFC
// 4108 (DecryptKeyIdentifier), RFC 8551 (SMIMECapabilities), RFC 2986
// (PKCS#10), RFC 7030 §4.4 and RFC 9148 §4.8 (EST server-side key
// generation).
//
// # Caveats
//
// Tested against OpenSSL 3.0 (3.0.19): `openssl cms -decrypt` decrypts all
// three recipient kinds with AES-CBC and AES-GCM, `openssl cms -verify`
// verifies the SignedData, and this package opens what `openssl cms
// -encrypt`/`-sign` make. Points to know:
//   - OpenSSL up to at least 3.6 cannot parse an AuthEnvelopedData that has
//     authAttrs (its template tags them [2], and it does not feed them to
//     GCM as AAD: openssl#26101, #31635). RFC 5083 §2.1 requires authAttrs
//     with a content-type attribute when the content is not id-data, as it
//     is here, so that is the default; set EncryptOptions.NoAuthAttrs for
//     OpenSSL-based receivers (this package decrypts both forms; BouncyCastle
//     needs the attributes).
//   - `openssl cms -decrypt` writes the bare SignedData of an id-signedData
//     content; `openssl cms -verify` wants it inside a ContentInfo
//     (SEQUENCE { id-signedData, [0] SignedData }). In 3.0 the extra chain
//     certificates are given with -certfile (cms has no -untrusted), and the
//     default purpose is smimesign: the signer certificate must have no EKU
//     or one allowing emailProtection, else use -purpose any.
//   - `openssl cms -encrypt` always labels its content id-data, uses PKCS #1
//     v1.5 and the sha1kdf by default (refused here): pass -keyopt
//     rsa_padding_mode:oaep, rsa_oaep_md:sha256, rsa_mgf1_md:sha256, or
//     ecdh_kdf_md:sha256.
//   - `openssl req -text` names SMIMECapabilities and the key identifier
//     attributes but cannot print their values; `openssl asn1parse` shows
//     them.
//   - SoftHSM 2.6.1 zero-pads a PKCS#8 key to a multiple of 8 before its
//     CKM_AES_KEY_WRAP_PAD: after UnwrapPad, TrimDERPadding cuts it to the
//     DER length.
//   - Zeroing reaches this package's buffers only: Go's crypto keeps copies
//     it does not clear (AES key schedules, big.Int and ECDH private values
//     of parsed keys), and what they free keeps its contents until the
//     memory is reused.
package cms
