// Package baseline is the ceiling estca's performance is measured against
// (issue 11): an authority for the est server that does no CA work. It
// verifies the client's certificate chain in the handshake (one ECDSA P-256
// path validation, like the IDevID check of the real authority), parses the
// CSR and checks its signature on /sen and /sren, and answers every
// enrollment with the same fixed certificate; /crts answers its CA. Nothing
// is signed per request, nothing is stored, audited or logged.
//
// Run behind the same est.Server code as the appliance, it measures what
// the transport alone costs (pion DTLS, go-coap, the est front end: gate,
// hygiene, block-wise, response cache), so that `estca bench --baseline` and
// est's BenchmarkCeiling can report the appliance's server CPU per
// enrollment as a ratio to it, measured in the same run on the same
// machine. Absolute rates describe one machine; the ratio travels.
//
// NewPKI mints, in memory, what a baseline server needs: a P-256 CA, the
// DTLS server certificate and key, a client certificate with the subject and
// extensions of a given template (so that the requests of a load generator
// look like the appliance's), and the fixed certificate. The DTLS server key
// is an in-memory ECDSA key, as in the minimal go-coap + pion server the
// issue's 2.8× and 7.6× were measured against; the appliance's key is in
// the HSM and every one of its signatures verified, which is part of what
// the ratio measures.
//
// # What it is not
//
// It is not a CA: the certificate it answers does not carry the CSR's key.
// A load generator against it must not match certificates to CSRs
// (est/bench Options.FixedAnswer). It implements none of the policy,
// revocation, approval or CRL functions: /att answers an empty attribute
// set, /est/crl 4.04, and no refusal is recorded.
//
// # Concurrency
//
// An Authority is safe for concurrent use; it holds no mutable state.
package baseline
