// Package esttest runs a small recording EST-coaps peer for the tests of the
// device side (est/client, est/bench), in the spirit of net/http/httptest.
//
// The Peer is go-coap's real DTLS 1.2 server on 127.0.0.1:0 with one
// handler: it requires a client certificate from a given CA, records every
// request as it arrived (token, Block1/Block2, Request-Tag, Size1,
// Content-Format, payload length), reassembles Block1 bodies by path and
// Request-Tag, and serves Block2 from the stored response, in blocks no
// larger than the size it is started with. It answers discovery with two
// links, /crts with a certs-only chain (settable, for trust-anchor updates),
// and /sen by signing the CSR's key with its CA; it can be told to answer
// 5.03 with Max-Age 7 a number of times, or to certify a wrong key.
//
// # What it is not
//
// It is not estca's server (package est, exercised with a real authority in
// est's own tests and in cmd/estca's). It implements none of the server's
// hygiene, policy or audit, and only the resources above; anything else is
// 4.04. It is for checking what a client puts on the wire and how it handles
// answers, including bad ones.
//
// # Concurrency
//
// A Peer serves each session on its own goroutine; its setters and Requests
// are safe for concurrent use with them.
package esttest
