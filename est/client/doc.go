// Package client is the EST-coaps device client (RFC 9148): one DTLS 1.2
// session to an EST-coaps server, over which it discovers the resources,
// fetches the CA certificates and updates its trust anchors, enrolls and
// re-enrolls, asks for CSR attributes and for server-side key generation.
// `estca enroll` is a thin command around it, and est/bench drives many of
// them.
//
// It builds without cgo (CGO_ENABLED=0, any GOOS/GOARCH), because the devices
// and gateways that run it are often ARM boards without a C toolchain: it
// imports go-coap, pion/dtls and est/wire, and nothing of ca, store, hsm or
// policy. A test in this package cross-compiles it for linux/arm64 with
// CGO_ENABLED=0 and checks its dependencies, so that it stays so.
//
// # Use
//
// Dial opens the session and completes the handshake (a rejected client
// certificate or an untrusted server is a *HandshakeError there, with a reason
// a person can act on). The Conn's methods are the EST functions:
// Discover (GET /.well-known/core?rt=ace.est*), CACerts (/crts), Enroll
// (/sen), Reenroll (/sren), CSRAttrs (/att), ServerKeygen (/skg, /skc) and
// UpdateTrust (RFC 9148 §9.1). Options selects the profile path label, the
// block size, the cipher suites and the retry policy.
//
// # Protocol
//
//   - Every function needs the client certificate (RFC 9148 §3); the server
//     is validated against explicit trust anchors only (RFC 7030 §4.1.1).
//   - Bodies larger than the block size go out in Block1 blocks, each with a
//     fresh token and all with one Request-Tag (RFC 7959 §2.3, RFC 9175 §3.2);
//     Block2 responses are reassembled, with early size negotiation for GETs
//     (RFC 7959 §2.4), bounded to 1 MiB, the ETag checked between blocks.
//   - A 5.03 with Max-Age (manual approval) is resent, identical, after
//     min(Max-Age, MaxWait), at most MaxRetries times (RFC 9148 §4.7); any
//     other error response is a *ResponseError with the server's diagnostic.
//   - Enroll and Reenroll return the certificate that carries the CSR's public
//     key (ErrCertMismatch otherwise); UpdateTrust takes the self-signed
//     certificates of /crts as the new anchors only if they validate the
//     current server certificate (ErrTrustUpdate otherwise).
//
// # What it does not do
//
// It does not generate keys or CSRs (the caller does: ca/cms
// CreateCertificateRequest adds the attributes asking for an encrypted
// server-generated key), keep state across sessions, store trust anchors
// (UpdateTrust returns them), or implement Observe, OSCORE or proxying.
// OpenServerKey decrypts and verifies a server-generated key with package
// ca/cms (pure Go): the EnvelopedData, the SignedData's signer chain to the
// trust anchors, the key against its certificate. It logs only retries, at debug level, through Options.Logger.
//
// # Concurrency
//
// A Conn is safe for concurrent use; go-coap sends one request of a session
// at a time (NSTART 1, RFC 7252 §4.7), so concurrent operations interleave
// message by message. Close ends the session and its goroutines.
//
// # RFCs
//
// RFC 9148, RFC 7030, RFC 7252, RFC 7959, RFC 9175, RFC 6690, RFC 8710,
// RFC 6347, RFC 7925.
package client
