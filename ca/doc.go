// Package ca is estca's certificate authority: the CA hierarchy kept in a
// PKCS#11 token, client authentication, issuance from the policy engine's
// decisions, serial numbers, revocation and CRLs.
//
// An Authority (New) serves the EST front end. Every decision is the policy
// engine's (package policy; Options.Policy, replaced atomically by
// SetPolicy on a configuration reload, without touching open sessions):
// Authenticate turns a DTLS client chain into a Requester with
// policy.Engine.Verify (operational certificate of this CA, not revoked in
// the store, or manufacturer IDevID under a trust anchor's expiry rule,
// lists and CRLs, RFC 9148 §3); Check re-checks an authenticated requester
// (policy.Engine.Recheck: revoked since, anchor removed or deny-listed by a
// reload, expired), which the front end does on every request and on every
// open session each second; Enroll decides a PKCS#10 request with
// policy.Engine.Evaluate on the requester re-checked, the CSR and the
// store's counters for the requester's identity, and issues from the
// engine's template, keeps the request for an operator (manual approval,
// 5.03 with Max-Age until `estca requests approve|deny`, RFC 9148 §4.7) or
// refuses it with the engine's reason (RFC 7030 §4.2.1, §4.2.2 for
// re-enrollment); CACertificates and CSRAttributes answer /crts and /att
// (RFC 7030 §4.1, §4.5; /att from policy.Engine.CSRAttrs, RFC 9908); the
// EST front end encodes their answers (the certs-only SignedData of
// Content-Format 281 is est/wire's, shared with the device client).
//
// Revoke revokes a certificate for a CRLReason a leaf may have (not
// cACompromise, certificateHold, removeFromCRL, aACompromise) and publishes
// a new CRL; PublishCRL makes one (RFC 5280 §5: cRLNumber that only grows,
// also across restarts through CRLOptions.LastNumber, nextUpdate,
// authorityKeyIdentifier, reasonCode per entry), signed by the issuing key
// through the verifying signer; CRL returns the newest. Scheduling,
// storage and serving of CRLs are the caller's (cmd/estca, est). With
// CRLOptions.DistributionPoint every certificate carries that URL in a
// cRLDistributionPoints extension.
//
// Server-side key generation (RFC 9148 §4.8, RFC 7030 §4.4): NewKeygen
// returns a Keygen whose ServerKeygen serves /skg and /skc. It is decided
// exactly like Enroll: policy.Engine.Evaluate with OpSkg or OpSkc on the
// requester re-checked, the CSR (its key and signature ignored; its
// subject, SAN and extensions bound and checked like any enrollment's) and
// the store's counters (rate limits, approvals, pending caps), issue /
// pending (5.03 + Max-Age) / refuse, audited with the engine's reason
// codes. The profile's policy keys are the engine's: operations,
// server_key_type (Template.ServerKeyType), require_encrypted_keys (a plain
// request is refused with key-encryption-required, told by
// policy.Request.EncryptedKey) and escrow_keys (Template.EscrowKey). The
// CSR's attributes (ca/cms ParseKeyRequest) choose the delivery, resolved
// after the decision and before any key is generated: plain PKCS#8;
// DecryptKeyIdentifier → KEKRecipientInfo under a pre-shared AES key in
// the token, which wraps the content key itself;
// AsymmetricDecryptKeyIdentifier → the requester's own certificate or a
// certificate registered for its identity (Recipients, RequesterIdentity),
// matched by subject key identifier (the extension, or RFC 5280 / RFC 7093
// method 1 of the key), RSA → KeyTransRecipientInfo, EC →
// KeyAgreeRecipientInfo. The token generates the pair of the template's
// ServerKeyType (hsm.Token.GenerateExportable: CKA_LOCAL, sensitive,
// extractable only wrapped, a session object destroyed in the same
// operation unless the profile escrows keys); the PKCS#8 is unwrapped in
// memory only and checked against the generated public key; the key
// package, the EnvelopedData(SignedData(AsymmetricKeyPackage)) of RFC 7030
// §4.4.2 signed by the key-package signer (LabelKeyPackage, its
// certificate from IssueKeyPackageSigner) with a content key of the
// generated key's strength (AES-128, AES-256 for P-384), AES-CBC by
// default, AES-GCM in an AuthEnvelopedData when the SMIMECapabilities ask
// for it, is built before the certificate is stored, so that a packaging
// failure costs no certificate; the certificate is then issued from the
// engine's template for the generated key through the same signing and
// storing step as Enroll (issue.go). An escrowed key is relabelled
// hsm.EscrowPrefix+serial. The certificate's issued record is the audit
// record of the key generation, committed with the certificate in one
// durable write (flag server-keygen; flags and reason name the key type,
// delivery, recipient kind and key identifier, content encryption,
// CKA_LOCAL, escrowed or destroyed; never key material); keygen records
// (store.EventKeygen) mark keys destroyed later: by the operator, at start
// after an interrupted run, after a failed escrow. Every refusal is an
// audited denial flagged server-keygen, and costs no key generation.
//
// Identical /skg requests: with automatic approval every request gets a
// new key and certificate (the key of an earlier answer is gone unless
// escrowed), so the CSR is not mapped to its certificate. A request kept
// for an operator gets no key until it is approved: the key is generated
// when the device's identical retry comes after the approval, the
// certificate is then mapped to the request (exactly one certificate per
// approved request: concurrent retries wait for the one in flight and get
// its answer, and store.ErrDuplicateRequest is the backstop), and a later
// identical retry is refused (4.03: a server-generated key is delivered
// once; the device sends a new CSR). An approval is of the CSR from the
// requester under the profile, not of the operation: the identical CSR
// sent to /sen or /skg after approval is served by the operation it names
// (both are allowed by the profile, or the engine refuses).
//
// Init, ImportIssuing and LoadSigners create and load the hierarchy in the
// token (root, issuing CA, DTLS server key and certificate, audit key); Demo
// makes IDevID-like device fixtures for `estca init --demo`.
//
// Guarantees of Enroll:
//   - The certificate and its audit record (event issued, requester identity,
//     CSR digest, serial, profile, the operation, flags such as
//     "expired-idevid-accepted", "renew" or "rekey", "renewal-grace") are
//     durable in the store before Enroll returns. Every denial of an
//     authenticated requester is audited too (event denied, naming each
//     reason code of the engine with its class and detail, e.g.
//     "sen: subject-not-bound (forbidden): CN ..."), as is every request
//     kept pending (event pending); if the audit write fails the request
//     fails.
//   - Rate limits and pending caps count in the store per policy identity
//     (policy.IdentityOf: an IDevID's anchor and serialNumber, an
//     operational certificate's subject, which renewals keep), under a lock
//     per identity, so that concurrent requests cannot pass a limit.
//   - The same requester sending the same CSR (by SHA-256 of its DER) gets the
//     certificate already issued for it, Existing set, never a second one:
//     concurrent duplicates wait for the one in flight, later ones find it in
//     the store, and store.ErrDuplicateRequest is the backstop across
//     processes (RFC 9148 §4.7).
//   - Serial numbers are 127-bit random positive integers (RFC 5280
//     §4.1.2.2), retried on a store collision.
//   - The certificate is the engine's template: subject and SubjectAltName
//     bound to the requester's identity (DER as the engine built it, so
//     otherName hardwareModuleName, RFC 4108, survives; a critical SAN when
//     the subject is empty), key usage per key algorithm, extended key
//     usage, validity (notBefore backdated by the profile, notAfter never
//     past the issuing CA's), copied CSR extensions. The subject key
//     identifier is RFC 7093 §2 method 1; the authority key identifier is
//     the issuing CA's.
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
// "signing failed" with a MaxAge of 10 s. A token without memory for a
// server-generated key (hsm.ErrTokenFull: CKR_DEVICE_MEMORY, escrowed keys
// fill it) is KindUnavailable "hsm full" with MaxAge Options.StoreRetry.
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
// Concurrency: an *Authority is safe for concurrent use; the policy engine
// is swapped atomically (requests decided with the old one finish with it),
// the in-flight request table and the CRL state are guarded by mutexes, and
// the enrollments of one identity under a rate limit or manual approval are
// serialised by a striped lock. A *Keygen is safe for concurrent use (its
// KEK cache is a sync.Map). Init, ImportIssuing and Demo are not
// meant to run concurrently on one token.
//
// Standards: RFC 5280 (certificates, CRLs, CRLReason), RFC 7093, RFC 2986,
// RFC 5652, RFC 8551, RFC 7030, RFC 9148, RFC 9908, RFC 4108, IEEE 802.1AR.
//
// Caveats: the rate-limit and pending indexes of the store are not covered
// by the audit chain (the decisions are): someone who edits the store file
// can reset a device's counters, not forge its certificates. CRL numbers
// start from the Unix time of thisUpdate, so a fresh appliance's first CRL
// has a large number; CRLs list revoked certificates also after they expire.
package ca
