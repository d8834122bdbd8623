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
//   - The gate (gate.go) owns the UDP socket. A ClientHello without a valid
//     cookie gets a stateless HelloVerifyRequest (RFC 6347 §4.2.1; HMAC over
//     client address, port and hello parameters, secret rotating every
//     CookieRotation) and leaves nothing behind: no session slot, handshake
//     slot, rate token or memory. Only a peer that returns a valid cookie is
//     admitted (admit.go): sessions and handshakes in progress, in all and
//     per source prefix (IPv4 /32, IPv6 /64), and the handshake rate per
//     prefix as a token bucket with reservations (a handshake over the rate
//     waits for its token up to HandshakeMaxWait, else gets an
//     internal_error alert at once). Then it gets a pion connection, to
//     which the gate replays pion's own cookie exchange (pioncookie.go: the
//     one write into pion's unexported state, found by reflection and
//     checked at NewServer). Datagrams of admitted peers are routed by
//     address or connection ID (RFC 9146).
//   - pion/dtls v3 runs the handshake (DTLS 1.2 only, secp256r1, by default
//     the single suite TLS_ECDHE_ECDSA_WITH_AES_128_CCM_8 because pion
//     follows the client's order; Extended Master Secret requested;
//     optional Connection IDs; handshake messages fragmented to Options.MTU).
//     Client certificates are required (RequireAnyClientCert) and checked
//     inside the handshake by Authority.Authenticate through
//     VerifyPeerCertificate: a failure ends the handshake with a
//     bad_certificate alert, so no application data is ever served to a
//     client without an acceptable certificate (RFC 9148 §3, §9.1). The same
//     callback bounds the sessions per identity (MaxSessionsPerIdentity):
//     the slot it reserves belongs to the handshake's connection until the
//     session takes it, so a handshake that fails after the check (no
//     Finished, timeout, the device restarted) gives it back at once. A
//     client without a certificate gets handshake_failure: pion sends
//     no_certificate (41), which TLS 1.2 forbids, and the gate rewrites that
//     plaintext alert record (rewriteNoCertificate says why that is safe).
//     The requester established there is handed to the session and used for
//     every request on it.
//   - The CoAP sessions run on go-coap v3's message layer
//     (dtls/server.NewSession, udp/client.NewConnWithOpts) in the server's
//     own loop, with go-coap's block-wise transfer off and one handler (no
//     mux: routing, hygiene and block-wise need the raw options of every
//     request), and a response cache bounded per session in entries and
//     bytes (respcache.go) instead of go-coap's, which keeps every response
//     for 247 s. Block-wise transfer (RFC 7959) is done by est/block, keyed
//     by session, method, path and Request-Tag, never by token (libcoap
//     uses a fresh token per block), with limits per session, per identity
//     and in all. The resource runs once per complete request; later
//     Block2 blocks of a POST response are served from the stored response,
//     in the Block2 size the client asked for in any request of the
//     transfer, else no larger than its Block1 size.
//
// # Resources (RFC 9148 §4.1)
//
//	/.well-known/est/<res>          default profile
//	/.well-known/est/<label>/<res>  profile <label>; unknown label → 4.04
//	/est/<res>                      default profile (alias, advertised by discovery)
//	/est/<label>/<res>              profile <label>; unknown label → 4.04
//	/.well-known/core               RFC 6690 discovery; filters on href, rt, ct
//	/est/crl                        the CA's CRL (CRLPath; not an EST resource)
//
// crts (GET; 281 by default; 287 = the root CA certificate alone, the last
// of the chain: the one certificate that works as the explicit trust anchor
// with OpenSSL, which by default wants a self-signed anchor, and with GnuTLS
// (both tested with libcoap's coap-client-openssl and coap-client-gnutls;
// mbedTLS, the stack of Zephyr and many constrained devices, is expected to
// behave the same but is NOT verified by our tests: Debian ships no mbedTLS
// build of libcoap); the server sends its intermediates in the handshake), sen and
// sren (POST 286; 2.04 with 281 or 287), att (GET; 285), skg and skc (POST
// 286 with Accept 62 or none, RFC 9148 §4.8; 2.04 with Content-Format 62,
// the CBOR array [key-format, key, cert-format, cert] of RFC 8710: the key
// as 284 PKCS#8 or 280 CMS, then the certificate as 281 for skg or 287 for
// skc; an answer of about 1-3 KiB, sent block-wise at the Block2 size of
// the request), served by Options.Keygen (ca.Keygen). Without a Keygen, skg
// and skc are routed but answer 4.04 "not implemented" and are not listed
// in discovery. Discovery lists /est/crts, /est/sen, /est/sren, /est/att,
// /est/skg and /est/skc with ct=62 (when served) and
// </est/crl>;rt="estca.crl";ct=281; a filter that matches nothing answers
// 4.04 Not Found. rt and ct are space-separated lists: a filter matches one
// of their values (ct=287 matches "281 287"); the filters apply to the CRL's
// link like to the others (rt=estca.crl, href=/est/crl). The CRL (GET, 281
// only) is a certs-only SignedData carrying the authority's newest CRL in
// its crls field (RFC 8551 §3.6): EST-coaps defines no CRL resource and no
// CoAP Content-Format is registered for application/pkix-crl.
//
// # Requesters of open sessions
//
// The requester established at the handshake is re-checked
// (Authority.Check: revoked since, manufacturer removed or deny-listed by a
// reload, expired) before every request is served, and on every open session
// each RecheckInterval (1 s): a refused requester gets 4.03 with the
// reason's text and its session is closed 50 ms later, once the answer is
// out (log "session closed", metric estca_est_sessions_closed_total{reason});
// RecheckSessions runs the check at once (after a revocation or a reload).
// The sessions checked are those of the gate's peer table whose handshake
// completed: the gate's table is the one registry of peers, for admission,
// routing, shutdown and the re-check alike.
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
// are not requests (ACK/RST types, response codes). Before go-coap, the
// session also rejects with RST an Empty message carrying a token, options
// or payload, a token length above 8 and codes of the reserved classes 1, 6
// and 7 (go-coap would ACK them), ignores other CoAP versions and duplicate
// NON requests, and answers a request larger than MaxMessageSize with 4.13,
// Block1 and Size1 instead of losing the DTLS session (datagram.go). A NON
// request gets a NON response (RFC 7252 §5.2.3): go-coap v3.8.0 would send a
// CON and retransmit it, so the handler writes the NON response to the
// session itself and leaves go-coap's response unset (writeNon).
//
// # Auditing
//
// The authority audits its own decisions (ca.Enroll). Every other refusal of
// an authenticated request — an answer of 4.00 or above decided here
// (routing, Content-Format, Accept, method, options, block-wise, internal
// errors, authority errors the authority did not audit), or a NON request
// rejected without an answer — is reported through Authority.RecordRejection
// with the CoAP code and the fixed diagnostic: the first refusal of an
// identity, reason and code in an audit interval synchronously, before the
// answer is sent; the further ones of the interval as one aggregate record
// with their count when the interval ends (refusal.go), so that an
// authenticated peer cannot make the store write per packet either. Errors
// for which ca.Audited is true are not reported again, and a stored
// block-wise response that is replayed is not a new refusal. Successful
// requests are not audited. Refused DTLS handshakes (no or bad certificate, rejected by the authority, timeout,
// rate-limited, too many sessions, and handshakes the server could not sign
// because the HSM is down, "hsm-unavailable", or because its signature did
// not verify, "hsm-bad-signature", logged as an error; the server's key is
// expected to be a ca.VerifySigner; and the admission limits) are tallied
// by reason and written as one record per reason, with the count, the last
// peer address and the last presented subject, every HandshakeAuditInterval (10 s by default) and
// when Serve ends, so that unauthenticated peers cannot make the store
// write per packet.
//
// # What it does not do
//
// It makes no policy decisions. A plain server-generated key (284) is
// zeroed once encoded, and the encoded response that carries it is marked
// sensitive (block.Response.Sensitive): the block layer zeroes it after the
// last block was served or when it is evicted or expires, each block copy
// is zeroed after go-coap wrote it (responsewriter.AfterWrite), and the
// session's response cache zeroes what it evicts, what expires and all it
// holds when the session ends. Not zeroed: go-coap's own copies of each sent
// message (the payload ReadBody copies out, its pooled marshal buffers) and
// a block copy of a response go-coap never writes (the session closing):
// profiles that must not leave keys in memory set require_encrypted_keys.
// It does not implement Observe, proxying or OSCORE. It logs one structured line per request (request id, peer,
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
