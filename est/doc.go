// Package est is estca's EST-coaps server (RFC 9148): the DTLS 1.2 listener,
// CoAP routing, the EST resources and discovery, and the error-to-CoAP-code
// table. It is the server only; its sub-packages are
//
//   - est/block: server-side block-wise transfer (RFC 7959), keyed by
//     session, method, path and Request-Tag;
//   - est/wire: the wire formats both ends need (Content-Formats, certs-only
//     PKCS#7, link-format, multipart-core), a cgo-free leaf;
//   - est/client: the device client behind `estca enroll`, cgo-free;
//   - est/bench: the load generator behind `estca bench`;
//   - est/esttest: a recording EST-coaps peer for the client's tests.
//
// Nothing in est/client, est/bench or est/wire imports this package, ca,
// store or hsm, so device builds need no cgo; est imports est/wire and
// est/block only.
//
// # Server
//
// NewServer builds a Server from Options; Listen binds the UDP socket (so that
// Addr is known), Serve runs until its context ends or Shutdown is called.
// The pieces are wired as follows:
//
//   - pion/dtls v3 listens (DTLS 1.2 only, secp256r1, by default the single
//     suite TLS_ECDHE_ECDSA_WITH_AES_128_CCM_8 because pion follows the
//     client's order; HelloVerifyRequest cookies on; Extended Master Secret
//     requested; optional Connection IDs, RFC 9146). Client certificates are
//     required (RequireAnyClientCert) and checked inside the handshake by
//     Authority.Authenticate through VerifyPeerCertificate: a failure ends
//     the handshake with a bad_certificate alert, so no application data is
//     ever served to a client without an acceptable certificate (RFC 9148
//     §3, §9.1). The requester established there is handed to the session
//     and used for every request on it.
//   - A per-IP token bucket (HandshakeRate) and MaxSessions are enforced on
//     each new handshake attempt (pion's OnConnectionAttempt).
//   - go-coap v3's DTLS server runs the sessions with its own block-wise
//     transfer disabled and one handler (no mux: routing, hygiene and
//     block-wise need the raw options of every request). Block-wise transfer
//     (RFC 7959) is done by est/block, keyed by session, method, path and
//     Request-Tag, never by token (libcoap uses a fresh token per block).
//     The resource runs once per complete request; later Block2 blocks of a
//     POST response are served from the stored response.
//
// # Resources (RFC 9148 §4.1)
//
//	/.well-known/est/<res>   default profile
//	/est/<res>               default profile (alias, advertised by discovery)
//	/est/<label>/<res>       profile <label>; unknown label → 4.04
//	/.well-known/core        RFC 6690 discovery; rt filter with trailing '*'
//
// crts (GET; 281 by default, 287 = the issuing CA certificate alone), sen and
// sren (POST 286; 2.04 with 281 or 287), att (GET; 285), skg and skc (POST
// 286 with Accept 62 or none, RFC 9148 §4.8; 2.04 with Content-Format 62,
// the CBOR array [key-format, key, cert-format, cert] of RFC 8710: the key
// as 284 PKCS#8 or 280 CMS, then the certificate as 281 for skg or 287 for
// skc), served by Options.Keygen (ca.Keygen). Without a Keygen, skg and skc
// are routed but answer 4.04 "not implemented" and are not listed in
// discovery. Discovery lists /est/crts, /est/sen, /est/sren, /est/att (and
// /est/skg, /est/skc with ct=62); a filter that matches nothing answers 4.04
// Not Found.
//
// # Errors
//
// StatusOf is the one table from error kinds (ErrorKind: the authority's
// ca.ErrorKind and the server's protocol errors) to CoAP codes (RFC 9148
// §4.5). Diagnostic payloads are short fixed texts, or the client-safe
// Reason of a *ca.Error; internal errors answer 5.00 "internal error" and
// their detail is logged under the request id. 5.03 carries Max-Age.
//
// # Message hygiene (RFC 7252 §3, §4, §5.4; RFC 7959 §2.2)
//
// go-coap would answer an unrecognised critical option, or a critical option
// of its known set with an out-of-range length, itself, with its library
// diagnostic, before any handler or hook runs (see critical.go). The
// server's session therefore screens each datagram before go-coap decodes it
// and answers such a request itself: 4.02 with the fixed diagnostic "bad
// option" for CON (a retransmission gets the same answer), nothing for NON;
// counted, logged and audited like any refusal. go-coap answers an
// unparsable CON message (bad option encoding, payload marker without
// payload) with RST and drops other unparsable messages, without ending the
// DTLS session; it drops elective options of bad length while decoding.
// This package then rejects the critical options go-coap knows but estca does
// not implement (If-Match, If-None-Match, OSCORE, Q-Block1/2, Proxy-Uri,
// Proxy-Scheme) and repeated non-repeatable critical options with 4.02 "bad
// option" (CON) or no answer (NON), a Block option with SZX 7 with 4.00,
// ignores supernumerary elective options, and does not serve messages that
// are not requests (ACK/RST types, response codes). A NON request gets a CON
// response: RFC 7252 §5.2.3 says it SHOULD be NON, but go-coap v3.8.0 sets
// the type itself after the handler with no hook; clients must accept both.
//
// # Auditing
//
// The authority audits its own decisions (ca.Enroll). Every other refusal of
// an authenticated request — an answer of 4.00 or above decided here
// (routing, Content-Format, Accept, method, options, block-wise, internal
// errors, authority errors the authority did not audit), or a NON request
// rejected without an answer — is reported once, synchronously and before
// the answer is sent, through Authority.RecordRejection with the CoAP code
// and the fixed diagnostic; errors for which ca.Audited is true are not
// reported again, and a stored block-wise response that is replayed is not
// a new refusal. Successful requests are not audited. Refused DTLS
// handshakes (no or bad certificate, rejected by the authority, timeout,
// rate-limited, too many sessions, and handshakes the server could not sign
// because the HSM is down, "hsm-unavailable", or because its signature did
// not verify, "hsm-bad-signature", logged as an error; the server's key is
// expected to be a ca.VerifySigner) are tallied by reason and written as one
// record per reason, with the count, the last peer address and the last
// presented subject, every HandshakeAuditInterval (10 s by default) and
// when Serve ends, so that unauthenticated peers cannot make the store
// write per packet.
//
// # What it does not do
//
// It makes no policy decisions. A plain server-generated key (284) is
// zeroed once encoded, but the encoded response that carries it stays with
// the block layer until its transfer completes or expires and is copied into
// go-coap's message buffers, neither of which is zeroed: profiles that must
// not leave keys in memory set require_encrypted_keys. It does not implement Observe, proxying or
// OSCORE. It logs one structured line per request (request id, peer,
// identity fingerprint prefix and subject, method, resource, code,
// duration, and for refusals the fixed reason); it never logs keys or CSRs.
//
// # Concurrency
//
// A Server is safe for concurrent use; go-coap serves each session on its
// own goroutine. Metrics are safe for concurrent use and live in their own
// Prometheus registry.
//
// # RFCs
//
// RFC 9148, RFC 7030, RFC 7252, RFC 7959, RFC 9175 (Request-Tag), RFC 6690,
// RFC 6347, RFC 7925, RFC 7627, RFC 9146, RFC 7967 (No-Response).
package est
