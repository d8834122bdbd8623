// Package block implements server-side CoAP block-wise transfer (RFC 7959)
// for the EST-coaps front end (RFC 9148 §4.6): it reassembles Block1 request
// bodies and serves Block2 response bodies, keyed by peer, method, path and
// Request-Tag (RFC 9175) and never by token.
//
// Why: go-coap's built-in block-wise state is keyed by token, but libcoap
// clients use a fresh token for every block (and re-use earlier tokens for
// the Block2 follow-ups), so the est server runs go-coap with block-wise
// disabled and calls this package for every request.
//
// # Use
//
// For each request the caller builds an Incoming (FromMessage does it for a
// go-coap message) and calls Manager.Request. The Decision is either
//
//   - Reply: send Decision.Reply as is (2.31 Continue, a stored Block2 block,
//     or an error); the handler does not run; or
//   - Handle: run the handler exactly once with Decision.Body, then send
//     Manager.Respond(in, response), which echoes the final Block1 and, if
//     the response is larger than one block, returns block 0 (or the block
//     asked for) and keeps the whole response for the later blocks.
//
// A complete Block1 body produces exactly one Handle decision; the later
// Block2 requests of that exchange, and a repeated final Block1 block, are
// answered from the stored response without running the handler again.
//
// # Rules (RFC 7959)
//
// Block1 (§2.3): block 0 starts a new body (superseding any state of the
// Key); later blocks must continue at offset Num*Size of the bytes received
// (the client may lower SZX between blocks); anything else is 4.08 and drops
// the transfer. A non-final block must carry exactly Size bytes and the final
// one at most Size bytes, else 4.00 (transfer dropped). A retransmission of
// the last accepted block is answered 2.31 again without appending. Each
// non-final block is answered 2.31 echoing its Block1; at block 0 the server
// may lower SZX to Options.SZX (§2.3, figure 6). A body above
// Options.MaxBody, by accumulation or announced by Size1 (§4), is answered
// 4.13 with Size1 = MaxBody and the transfer dropped.
//
// Block2 (§2.4, §3.3): the block size is the client's Block2 SZX (control
// usage) capped by Options.SZX, or Options.SZX (default 1024 bytes) without
// a Block2 option; the client may change SZX between blocks and offsets are
// Num*Size. Block 0 of a response larger than one block carries Size2.
// Requests with Block2 Num > 0 are served from the stored response whatever
// else they carry (libcoap 4.3.1 re-sends the POST with Block2, Size1 and
// Request-Tag and no payload; other clients repeat the final Block1 and its
// payload). Without a stored response a GET is recomputed (Handle, then
// Respond slices the block out) and any other method gets 4.08. A block
// beyond the end of the response is 4.02 Bad Option (the block option value
// is unusable); the stored response is kept. Block2 Num 0 is a new request:
// it recomputes and replaces the stored response.
//
// Limits: at most Options.MaxTransfersPerPeer Block1 transfers per peer and
// Options.MaxTransfers in all; beyond them 5.03 with Max-Age =
// Options.RetryAfter. Stored responses have the same limits, but as the
// handler has already run, the least recently used stored response (of the
// peer, else of anyone) is evicted instead. Transfers and stored responses
// expire after Options.Lifetime without activity: lazily when their Key is
// used or a limit is reached, and in Manager.Sweep, which the server calls
// periodically.
//
// A Sensitive response (Response.Sensitive: a private key in the clear) is
// zeroed when the Manager is done with it: at once when it is not stored,
// else after its last block was served (the stored response is then
// dropped: a later request for a block gets 4.08), or when it is evicted,
// expires or is superseded. Every block handed out of it is a copy
// (Outgoing.Sensitive) for the caller to zero once sent.
//
// Errors wrap one of ErrBadOption (4.02), ErrBadBlock (4.00),
// ErrIncomplete (4.08), ErrTooLarge (4.13) and ErrBusy (5.03); Code is the
// table. Error replies carry no payload.
//
// # What it does not do
//
// It does not parse or send CoAP messages (apart from the thin go-coap
// adapter FromMessage/Outgoing.Apply), does not deduplicate retransmissions
// by message ID (the CoAP message layer does), does not implement the
// client side, Q-Block (RFC 9177), ETags or Observe, and does not log.
// Uri-Query is not part of the Key unless the caller puts it in Key.Path.
//
// # Concurrency
//
// A Manager is safe for concurrent use; one mutex guards its state (an
// EST-sized exchange of 27 requests costs about 7 µs of CPU, far below the
// DTLS cost, so it is not sharded). The handler runs outside the lock.
// Bodies handed out in a Decision belong to the caller; response bodies
// passed to Respond are kept without copying and must not be modified.
//
// # RFCs
//
// RFC 7959 (Block1/Block2, Size1/Size2, 2.31, 4.08, 4.13), RFC 7252 §3.2
// (uint option encoding), §5.4.1 (bad critical options), RFC 9175 §3
// (Request-Tag), RFC 9148 §4.6 (block-wise in EST-coaps).
package block
