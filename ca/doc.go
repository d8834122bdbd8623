// Package ca is estca's certificate authority: the CA hierarchy kept in a
// PKCS#11 token, certificate profiles, client authentication, issuance and
// serial numbers.
//
// An Authority (New) serves the EST front end: Authenticate turns a DTLS client
// chain into a Requester (operational certificate of this CA, or manufacturer
// IDevID under a trust anchor's expiry rule, RFC 9148 §3); Enroll decides a
// PKCS#10 request with package policy and, if accepted, issues and stores the
// certificate (RFC 7030 §4.2.1, §4.2.2 for re-enrollment); CACertificates and
// CSRAttributes answer /crts and /att (RFC 7030 §4.1, §4.5); the EST front
// end encodes their answers (the certs-only SignedData of Content-Format 281
// is est/wire's, shared with the device client).
//
// Server-side key generation (RFC 9148 §4.8, RFC 7030 §4.4): NewKeygen
// returns a Keygen whose ServerKeygen serves /skg and /skc on the profiles
// that list them in Operations. The CSR's key and signature are ignored; its
// subject, SAN and extensions pass the profile's CSR rules like any
// enrollment's (with the policy engine: Engine.Evaluate with OpSkg/OpSkc).
// The CSR's attributes (ca/cms ParseKeyRequest) choose the delivery, which
// is resolved before any key is generated: plain PKCS#8 unless the profile
// sets RequireEncryptedKeys; DecryptKeyIdentifier → KEKRecipientInfo under a
// pre-shared AES key in the token, which wraps the content key itself;
// AsymmetricDecryptKeyIdentifier → the requester's own certificate or a
// certificate registered for its identity (Recipients, RequesterIdentity),
// matched by subject key identifier (the extension, or RFC 5280 / RFC 7093
// method 1 of the key), RSA → KeyTransRecipientInfo, EC →
// KeyAgreeRecipientInfo. The token generates the pair of the profile's
// ServerKeyType (hsm.Token.GenerateExportable: CKA_LOCAL, sensitive,
// extractable only wrapped, a session object destroyed in the same
// operation unless the profile escrows keys); the PKCS#8 is unwrapped in
// memory only and checked against the generated public key; the
// certificate is issued for it through the same signing and storing step
// as Enroll (issue.go), flagged server-keygen and without a request
// mapping (each request gets a new key); the key package is the
// EnvelopedData(SignedData(AsymmetricKeyPackage)) of RFC 7030 §4.4.2,
// signed by the key-package signer (LabelKeyPackage, its certificate from
// IssueKeyPackageSigner), with a content key of the generated key's
// strength (AES-128, AES-256 for P-384), AES-CBC by default, AES-GCM in an
// AuthEnvelopedData when the SMIMECapabilities ask for it. An escrowed key
// is relabelled hsm.EscrowPrefix+serial. The certificate's issued record is
// the audit record of the key generation, committed with the certificate
// in one durable write (flag server-keygen; flags and reason name the key
// type, delivery, recipient kind and key identifier, content encryption,
// CKA_LOCAL, escrowed or destroyed, and the CSR digest; never key
// material); keygen records (store.EventKeygen) mark keys destroyed later:
// by the operator, at start after an interrupted run, after a failed
// escrow. Every refusal is an audited denial flagged server-keygen, and
// costs no key generation.
//
// Init, ImportIssuing and LoadSigners create and load the hierarchy in the
// token (root, issuing CA, DTLS server key and certificate, audit key); Demo
// makes IDevID-like device fixtures for `estca init --demo`.
//
// Guarantees of Enroll:
//   - The certificate and its audit record (event issued, requester identity,
//     CSR digest, serial, profile, flags such as "expired-idevid-accepted") are
//     durable in the store before Enroll returns. Every denial after the
//     requester and profile are known is audited too (event denied, with the
//     client-safe reason); if the audit write fails the request fails.
//   - The same requester sending the same CSR (by SHA-256 of its DER) gets the
//     certificate already issued for it, Existing set, never a second one:
//     concurrent duplicates wait for the one in flight, later ones find it in
//     the store, and store.ErrDuplicateRequest is the backstop across
//     processes (RFC 9148 §4.7).
//   - Serial numbers are 127-bit random positive integers (RFC 5280
//     §4.1.2.2), retried on a store collision.
//   - notBefore is one minute in the past; notAfter never exceeds the issuing
//     CA's. The subject and the SubjectAltName extension are copied verbatim
//     from the CSR (so otherName hardwareModuleName, RFC 4108, survives),
//     after policy.CheckCSR has vetted them. The subject key identifier is
//     RFC 7093 §2 method 1; the authority key identifier is the issuing CA's.
//
// Every signature the HSM returns is verified before anything signed with it
// is stored or sent. New wraps the issuing key in a VerifyingSigner that
// checks each signature under the issuing certificate's public key (not the
// key the signer claims) and returns ErrBadSignature instead of a bad one;
// cmd/estca wraps the DTLS server key and the audit key the same way
// (VerifySigner), under the server certificate's and the published audit
// key. The check sits here, in the consumer, rather than in package hsm,
// because only the consumer knows which public key a signature must verify
// under, and because it must sit outside every layer that could corrupt a
// signature (the token, the PKCS#11 driver, the r||s to DER conversion,
// wrappers for metrics): a fault-injecting wrapper around the real SoftHSM
// key is caught (tested), which a check inside the hsm.Key would not see. A
// faulty ECDSA signature can leak the private key, and RSA-CRT faults can
// too: neither may leave the box. Enroll answers a bad signature as
// KindInternal "invalid HSM signature", audited (flag hsm-bad-signature),
// nothing stored; the next request is signed afresh.
//
// For ECDSA issuing keys the TBSCertificate is encoded here rather than by
// x509.CreateCertificate (byte-identical, tested): CreateCertificate would
// verify the signature a second time under the same key. RSA and other
// issuing keys go through x509.CreateCertificate. See tbs.go. The
// verification costs one ECDSA verification per certificate: P-256 is 77 µs
// on the idle 2-core development machine, and BenchmarkIssuerSignature
// measured +149 µs per signature on the loaded one (SoftHSM signature alone
// 159 µs, verified 308 µs, medians of 5), against 2.4 ms for a durable
// issuance (BenchmarkIssue, 1 goroutine: +6 %, medians of 9 interleaved
// runs; the store's fsync dominates).
//
// While the HSM is unavailable (hsm.ErrUnavailable, also ErrHSMUnavailable)
// Enroll answers KindUnavailable "hsm unavailable" with MaxAge
// HSMRetryAfter, at once; other signing failures are KindUnavailable
// "signing failed" with a MaxAge of 10 s.
//
// Refusals outside Enroll: the EST front end reports every request it refuses
// itself (wrong Content-Format, unknown label, bad option, body too large,
// internal errors, …) through RecordRejection, which appends one denied record
// (flag "front-end") naming method, resource, CoAP code and the fixed
// diagnostic. Errors of Enroll that are already audited carry Audited (see the
// Audited function), so that no request gets two records. Refused DTLS
// handshakes are reported the same way, aggregated by the front end (one
// record per failure reason with a count, flag "handshake"), so that
// unauthenticated peers cannot make the store write per packet.
//
// What it does not do: no transport (package est), no logging, no
// configuration parsing (cmd/estca), no PKCS#11 calls of its own (package hsm),
// no storage format (package store). Authenticate does not audit failed
// handshakes itself (it runs per handshake; the front end aggregates them).
// Manual approval (pending requests) and CRLs are not here yet. Profile
// Operations gate /sen and /sren too (empty: sen and sren), until the
// policy engine takes over the decision.
//
// Errors returned to the front end are *Error with an ErrorKind that maps to
// exactly one CoAP code, and a short fixed Reason safe to send to the client.
// A store that cannot write for now (store.ErrUnavailable: disk full or
// failing, store file replaced) is KindUnavailable, "store unavailable", with
// MaxAge Options.StoreRetry, so that devices retry by themselves; the
// front end does not log it per request. Authenticate consults the
// revocation set the store proved against its signed audit chain when it
// was opened, never the file.
//
// Zeroing: the unwrapped PKCS#8 and every buffer of the CMS layer are
// zeroed before ServerKeygen returns; a plain key (KeygenResult.Key of
// DeliveryPlain) is the caller's to zero once sent. Parsing the PKCS#8 to
// check it against the public key leaves copies in Go's big.Int and
// curve values that cannot be cleared (see ca/cms Caveats).
//
// Concurrency: an *Authority is safe for concurrent use; its configuration is
// immutable after New, and the only shared mutable state is the in-flight
// request table, guarded by a mutex. Init, ImportIssuing and Demo are not
// meant to run concurrently on one token.
//
// Standards: RFC 5280, RFC 7093, RFC 2986, RFC 5652, RFC 8551, RFC 7030,
// RFC 9148, RFC 4108, IEEE 802.1AR.
package ca
