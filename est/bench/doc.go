// Package bench is the EST-coaps load generator behind `estca bench`: Workers
// device clients (est/client) run one operation after another against a
// server for a fixed Duration, and Run reports operations per second,
// latency percentiles and errors by kind.
//
// Modes: ModeEnroll opens a new DTLS session for every enrollment (the
// handshake is part of the measured latency), ModeEnrollReuse enrolls many
// times over one session per worker, ModeCACerts fetches /crts over one
// session per worker, ModeKeygen and ModeKeygenSingle ask for server-side
// key generation (/skg, /skc) over one session per worker, the key
// delivered plain or encrypted as Options.KeyRequest asks (the server's
// profile, selected by the path label, decides the key type).
//
// Measurement rules:
//
//   - CSRs (each with its own P-256 key) are prepared before the clock starts,
//     because preparing them costs CPU the server needs on a small machine.
//   - Every issued certificate is verified after the timed loop against its
//     CSR's public key and the CA chain fetched from /crts; a mismatch counts
//     as a "verify" error, not as an operation. A server-generated key is
//     opened (decrypted with Options.DecryptKey, its SignedData verified to
//     the CA) and matched to its certificate (client.OpenServerKey).
//   - A 5.03 is an error of the run ("coap 5.03"), never retried: the report
//     measures the server, not Max-Age waits.
//   - Latencies are of successful operations, percentiles by nearest rank.
//
// Why a package of its own: it is a program on top of the client, not part of
// the device client, and it shares the client's cgo-free build (it runs from
// gateways as well). Options holds a client.Options rather than repeating its
// fields.
//
// # What it does not do
//
// It makes no assertions about speed (a report is data; tests check
// correctness, benchmarks measure), does not pace requests to a target rate,
// and does not start a server.
//
// # Concurrency
//
// Run is safe to call concurrently; each call owns its workers and sessions.
//
// # RFCs
//
// RFC 9148 (through est/client).
package bench
