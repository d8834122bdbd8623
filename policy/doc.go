// Package policy holds estca's pure decisions: who may talk to the CA, and
// what certificate, if any, each enrollment request gets.
//
// # The model
//
// An Engine (New(Options)) is compiled once from the configuration: this
// CA's certificates, the manufacturer trust anchors (roots, intermediates,
// expiry tolerance, CRLs, deny and allow lists, the profiles their devices
// may use), reserved names, and the certificate profiles. New reports every
// configuration problem at once, including impossible combinations (a key
// usage the key algorithm cannot have, a profile that can issue no name, a
// hardwareModuleName taken from CSRs on a profile devices may use, ...).
// A reload builds a new Engine and swaps the pointer; an Engine never changes.
//
// Engine.Recheck runs on every request of an open DTLS session and
// periodically on every session (package est through package ca): what may
// change while a session stays open (a revocation, a reload that removes or
// deny-lists a manufacturer, expiry), without signatures or profile rules.
//
// Engine.Verify runs per DTLS handshake: it classifies the client chain as
// an operational certificate of this CA (optionally accepted for a grace
// period after expiry, for renewal only) or a manufacturer IDevID, verified
// under the anchor's expiry rule (RFC 9148 §3: an expired IDevID only where
// the anchor tolerates it, the chain verified at the leaf's notAfter,
// notBefore always applied) and then checked against the anchor's lists and
// CRLs.
//
// Engine.Evaluate runs per enrollment and returns a Decision: issue (with the
// certificate Template: subject DER, SAN, key usage derived per key
// algorithm, extended key usage, validity, extensions to copy), pending
// (manual approval, with the Max-Age) or deny, with Reasons. Each Reason has
// a Code: a stable audit name, a short fixed text safe to send to the device,
// and a Class: ClassBadRequest (4.00, the CSR is wrong), ClassForbidden
// (4.03, the requester may not do this), ClassNotFound (4.04), ClassRetry
// (5.03 with Decision.RetryAfter as Max-Age), ClassInternal (5.00, a caller
// bug). The EST front end owns the one table from Class to CoAP code.
//
// Identity binding is the default. A profile's subject template says, per
// attribute, whether the value comes from the requester's identity (the
// IDevID, or the operational certificate being renewed), is fixed, is
// derived from the identity ("meter-${serialNumber}"), or is the CSR's
// (optionally constrained by a pattern); attributes the template does not
// list are refused. The identity's hardwareModuleName (RFC 4108) is put in
// the SAN, DNS/IP/URI/email names only come from allow-lists, patterns or
// derived templates, and none are allowed by default. Names reserved for the
// CA and its server are refused everywhere. With no subject template
// (DefaultSubject) the certificate mirrors the identity. /sen with an
// operational certificate is a renewal of that identity: like /sren it must
// keep the subject and SAN byte for byte (RFC 7030 §4.2.2), and the renewed
// certificate keeps them.
//
// Engine.CSRAttrs derives the /att answer from the same rules (an RFC 9908
// CertificationRequestInfoTemplate filled with the requester's bound values,
// followed by RFC 7030 hints), so that a client following it makes an
// acceptable CSR. Engine.Check runs Verify, ParseCSR and Evaluate offline and
// renders a report, for `estca policy check`.
//
// # What the caller supplies
//
// Evaluate performs no I/O, reads no clock and keeps no state. The caller
// (package ca) provides in the Request: the Requester as Verify returned it
// (re-checked under the current configuration: validity, lists, CRLs, the
// anchor still configured), the revocation state of an operational leaf from
// its store (Requester.Revoked, checked on every request of an open session)
// and the profile it was issued under; the CSR parsed and its signature
// checked (ParseCSR, which also refuses other versions than 0 and MD5/SHA-1
// before verifying); the operation and label; the time; and the Counters of
// the requester's identity (IdentityOf): issuances in the profile's rate
// window, pending requests, whether this exact request is pending, and an
// operator's decision on it (Limits says what to count). For server-side key
// generation (OpSkg, OpSkc: the CSR's key and signature are ignored, the
// Template names the ServerKeyType to generate and whether the profile
// escrows it, EscrowKey) the caller also says whether the CSR asks for the
// key encrypted (Request.EncryptedKey, from its decrypt-key attributes,
// which package ca/cms reads): a profile with RequireEncryptedKeys refuses a
// plain request (CodeKeyEncryptionRequired).
//
// # What it does not do
//
// policy does not log, does not read files (certificates and CRLs arrive
// parsed), does not consult the store, does not issue or sign, does not map
// classes to CoAP codes, and does not verify CSR signatures inside Evaluate
// (ParseCSR does, before).
//
// # Concurrency
//
// An Engine and a Verifier are immutable after construction and safe for
// concurrent use. Evaluate costs a few microseconds and about ten
// allocations (BenchmarkEvaluate); Verify is dominated by crypto/x509 path
// validation.
//
// # Standards
//
// RFC 5280 (path validation, names and their upper bounds, SubjectAltName,
// key usage, CRLs), RFC 2986 (PKCS #10), RFC 7030 §3.3.2, §4.2.2, §4.5
// (client authentication, re-enrollment, CSR attributes), RFC 9148 §3, §4.7,
// §4.8 (expired IDevIDs, delayed responses, server-side key generation),
// RFC 9908 (CSR attribute templates), RFC 4108 §5 (hardwareModuleName),
// RFC 8813 and RFC 8410 (key usage for ECDSA and Ed25519), IEEE 802.1AR.
//
// # Caveats
//
// The RFC 9908 attribute OIDs used are 1.2.840.113549.1.9.16.2.61
// (id-aa-certificationRequestInfoTemplate) and .62 (id-aa-extensionReqTemplate),
// as deployed implementations of RFC 9908 use them; clients built against
// drafts (TBD values) will not recognise the template and fall back to the
// RFC 7030 hints that follow it.
// Subject attributes are single-valued and each type appears once: an
// identity with two OUs contributes its first. An operational certificate
// issued before identity binding keeps its names on renewal (its own
// identity); revoke such certificates to force a fresh enrollment. Patterns
// are RE2 and must match the whole value.
package policy
