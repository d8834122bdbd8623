// Package wire holds the EST-coaps wire formats that both ends need: the
// server in package est and the device client in est/client (and the load
// generator in est/bench). It is a leaf: it imports no cgo code and nothing of
// ca, store, hsm or policy, so the device client built on it cross-compiles
// with CGO_ENABLED=0 for the ARM boards of device gateways.
//
// What it holds:
//
//   - the Content-Format numbers of RFC 9148 §8.1 and RFC 8710, the EST-coaps
//     resource names and roots (RFC 9148 §4.1), the coaps default port and
//     the Request-Tag option number (RFC 9175);
//   - CertsOnly and ParseCertsOnly: the degenerate certs-only CMS SignedData
//     of Content-Format 281 (RFC 5652 §5, RFC 8551 §3.2.2, RFC 7030 §4.1.3);
//   - ParseLinks: RFC 6690 link-format documents (Content-Format 40), as
//     answered by discovery;
//   - EncodeMultipart and ParseMultipart: application/multipart-core
//     (Content-Format 62, RFC 8710), the container of server-side key
//     generation responses (RFC 9148 §4.8).
//
// Why "wire": these are byte formats on the wire, not protocol behaviour;
// the name keeps the package apart from est (the server) and est/client
// (the behaviour of a device), and says what may go in it.
//
// # What it does not do
//
// No transport, no CoAP messages (go-coap's), no block-wise transfer
// (est/block on the server, est/client on the device), no policy. It does
// not verify certificate chains or signatures: ParseCertsOnly returns the
// certificates as they come. CMS EnvelopedData for server-generated keys is
// not here yet.
//
// # Untrusted input
//
// Every decoder takes bytes from the peer: errors wrap ErrMalformedPayload,
// sizes are bounded (MaxCertsOnly certificates, MaxLinks links, MaxParts
// parts), only DER is accepted for PKCS#7 and only definite lengths for
// CBOR, and each decoder has a fuzz target.
//
// # Concurrency
//
// Functions only; no state.
//
// # RFCs
//
// RFC 9148, RFC 7030, RFC 5652, RFC 8551, RFC 6690, RFC 8710, RFC 8949,
// RFC 7252, RFC 9175.
package wire
