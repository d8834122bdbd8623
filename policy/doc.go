// Package policy holds estca's pure decisions: which client certificate chains
// authenticate a requester (operational certificates of this CA, or
// manufacturer IDevIDs under a trust anchor's expiry rule), which PKCS#10
// requests are acceptable for a profile, and whether a re-enrollment request
// keeps the identity of the certificate being renewed.
//
// What it does not do: policy performs no I/O, keeps no state between calls,
// and does not log. It does not consult the store (revocation of operational
// certificates is the caller's lookup), does not issue certificates, and does
// not map its errors to protocol codes; package ca does that.
//
// Errors are *Error values carrying a short, fixed, client-safe Reason and one
// of the ErrXxx sentinels (test with errors.Is), so the caller can tell an
// unknown requester (ErrUntrusted, ErrExpired, ErrNotYetValid) from a known
// but refused one (ErrDenied), and a rejected CSR (ErrRejected).
//
// Concurrency: a *Verifier is immutable after NewVerifier and safe for
// concurrent use; CheckCSR and CheckRenewal are pure functions.
//
// Standards: RFC 5280 (path validation, SubjectAltName, BasicConstraints),
// RFC 2986 (PKCS#10), RFC 7030 §3.3.2 and §4.2.2 (client authentication,
// re-enrollment keeps Subject and SubjectAltName), RFC 9148 §3 (expired IDevIDs
// may be accepted against the manufacturer trust store; notBefore still
// applies), RFC 4108 §5 (hardwareModuleName otherName), IEEE 802.1AR (IDevID).
package policy
