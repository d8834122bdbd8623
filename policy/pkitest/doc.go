// Package pkitest makes the software PKI that tests of estca need: P-256
// keys, self-signed and subordinate CAs, leaf certificates for given roles,
// DTLS identities, certificate pools, CSRs, PEM files, and a way to run the
// real openssl binary. It is imported by tests only.
//
// raw.go adds builders for what crypto/x509 will not make or that tests
// need byte for byte: keys of other kinds (NewKey: P-384, P-224, RSA,
// Ed25519), certificates from a template (IssueTemplate, SignTemplate),
// CRLs, DER Names, ATVs and RDNs in a given order and string type,
// GeneralNames (hardwareModuleName, otherwise-tagged names), extensions,
// attributes, and PKCS#10 requests of other versions or with MD5 or SHA-1
// signatures (Request, SignRequest).
//
// Why here: the certificates of the tests of policy, ca, est, est/client and
// est/bench used to be made by copies of the same helpers in each package.
// This package imports only the standard library and x/crypto/cryptobyte,
// so the in-package tests of every one of them can use it without an import
// cycle; it lives under
// policy, the bottom of the dependency chain est → ca → policy, so no test
// import points upwards.
//
// # What it does not do
//
// It is not a CA: keys are software ECDSA P-256 keys, not SoftHSM tokens
// (softhsm/softhsmtest provides those), and certificates are made with
// x509.CreateCertificate. Apart from the requests crypto/x509 refuses to
// write (Request), it makes no deliberately malformed objects; tests that
// need those build them themselves.
//
// # Defaults
//
// A Spec's zero fields take defaults: a random 64-bit serial, notBefore an
// hour ago, notAfter 24 hours from now, key usage digitalSignature (plus
// keyCertSign and cRLSign for a CA). Go generates the subject key identifier
// of CA certificates from the public key.
//
// # Failures
//
// Functions that take a testing.TB end the test with t.Fatal on error.
// Cert.Sign does not, so that handlers running on other goroutines can issue
// certificates and answer an error instead. RequireTool (and OpenSSL) skip
// the test when an external program is missing, except under CI (the
// variable CI set, and not "0" or "false"), where that is a failure.
//
// # Concurrency
//
// Everything is safe for concurrent use; a Cert is not modified after it is
// made.
package pkitest
