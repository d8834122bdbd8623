// Package hsm is the only package of estca that speaks PKCS#11. It opens a
// token (module, token label or serial, user PIN), keeps a bounded pool of
// sessions, generates, finds, describes and deletes key pairs, and gives out
// crypto.Signer values backed by private keys that never leave the token.
//
// # What it does
//
//   - Open loads the module (C_Initialize, sharing an initialisation that
//     already exists in the process), finds the token and logs in. The token is
//     addressed by Options fields or an RFC 7512 pkcs11: URI (token=, serial=,
//     module-path=). The PIN is handed in as bytes (Options.PIN): this
//     package reads no PIN file or environment variable (cmd/estca does), and
//     a URI with pin-source= or pin-value= is refused. The Token keeps a copy
//     of the PIN to log in again after a recovery and zeroes it in Close.
//     Each failure has its own sentinel: ErrModule, ErrTokenNotFound,
//     ErrNoPIN, ErrPIN.
//   - GenerateKey creates ECDSA P-256 (default), P-384 or RSA-3072 key pairs
//     as token objects; the private key is CKA_SENSITIVE, not CKA_EXTRACTABLE,
//     CKA_SIGN only (PKCS#11 v2.40 section 4.9). Labels are unique per token.
//   - Key implements crypto.Signer: ECDSA signatures are returned ASN.1 DER
//     (RFC 5480 section 2.2), RSA signs RSASSA-PKCS1-v1_5 or, with
//     *rsa.PSSOptions, RSASSA-PSS (RFC 8017), so x509.CreateCertificate and
//     CRL/OCSP signing work unchanged. Public needs no session. By default
//     a Key signs with a session copy of its private key (C_CopyObject with
//     CKA_TOKEN false, made at its first signature in the login session,
//     every protection attribute unchanged; Options.SignWithTokenObjects
//     turns this off): SoftHSM re-reads a token object's file under a lock
//     at every C_SignInit, which halves the cost of a signature (about 150
//     against 77 µs, BenchmarkSignP256). A module that refuses the copy
//     (CKA_COPYABLE false) gets the token object. DeleteKey destroys the
//     copies with the key; a recovery makes them again. Where the module
//     exports C_SignInit and C_Sign (dlsym; SoftHSM does), a signature
//     without mechanism parameters (ECDSA, RSA PKCS#1 v1.5) makes one cgo
//     call for both instead of two through miekg/pkcs11: a cgo call of more
//     than about 20 µs makes the Go scheduler hand its P to another thread
//     and back, so this saves context switches and about 30 µs of CPU per
//     signature on SoftHSM (perf stat, BenchmarkSignP256, GOMAXPROCS=1).
//   - InitToken initialises a fresh token (C_InitToken, C_InitPIN) in-process,
//     for the softhsm package.
//   - Server-side key generation (RFC 9148 §4.8, keygen_api.go):
//     GenerateExportable generates a device key pair (P-256, P-384,
//     RSA-2048, RSA-3072) with the token's RNG (CKA_LOCAL), CKA_SENSITIVE and
//     CKA_EXTRACTABLE, with no usage in the token, and exports it with
//     C_WrapKey (CKM_AES_KEY_WRAP_PAD, RFC 5649) under a fresh AES-256 session
//     key. By default the pair is made of session objects destroyed in the
//     same operation (a crash cannot leave them behind); kept for escrow it is
//     a token object labelled PendingPrefix..., relabelled EscrowPrefix+serial
//     by EscrowKey; CleanupGenerated destroys pending leftovers.
//     ImportKEK stores pre-shared AES key-encryption keys (non-extractable,
//     CKA_WRAP only); a KEK wraps content-encryption keys in the token
//     (CKM_AES_KEY_WRAP, RFC 3394), as package ca/cms's KEKWrapper.
//
// # What it does not do
//
// It does not log (errors carry the detail; PINs never appear in errors),
// store certificates in the token, import keys other than key-encryption
// keys, or unwrap keys into the token. It does not unwrap exported keys
// either: the caller (package ca, with ca/cms) does, in memory.
// It does not decide which key to use for what: that is the ca package.
//
// # Sessions, recovery and concurrency
//
// A Token and its Keys are safe for concurrent use. A Token keeps one session
// open only to hold the login (login state in PKCS#11 belongs to the
// application, not to a session, and ends when the last session closes) and
// at most MaxSessions-1 operation sessions; each operation takes one session
// exclusively and blocks while all are busy.
//
// Operations recover by themselves, escalating only as far as needed. When
// one fails with CKR_SESSION_HANDLE_INVALID, CKR_SESSION_CLOSED,
// CKR_USER_NOT_LOGGED_IN, CKR_DEVICE_REMOVED, CKR_TOKEN_NOT_PRESENT,
// CKR_DEVICE_ERROR, CKR_SLOT_ID_INVALID or CKR_CRYPTOKI_NOT_INITIALIZED, or
// with an invalid object handle or a key that cannot be found while the token
// no longer answers C_GetTokenInfo or the login is lost:
//
//  1. the Token finds the slot again, opens and logs in a new login session,
//     discards every pooled session of the old generation, and the
//     operation is retried once;
//  2. if that fails, the Token re-initialises the module: it waits until no
//     operation uses it, calls C_Finalize and C_Initialize, finds the slot
//     and logs in again (SoftHSM, for one, does not see a token whose
//     directory came back until it is initialised again), and the operation
//     is retried once;
//  3. if that fails too, the token is down. Every operation then fails at
//     once with ErrUnavailable, without touching the module (no hang, no
//     retry per request), and one background goroutine repeats step 2 after
//     FirstRecoveryDelay, doubling the wait up to Options.MaxRecoveryDelay,
//     until the token is back or the Token is closed.
//
// Keys then re-find their private key by label and check that its public
// key is unchanged (a different key under the same label is ErrKeyNotFound,
// never silently used). A key that cannot be found while the token is
// present and logged in is really absent: ErrKeyNotFound, and the token stays
// up. Recoveries are serialised and counted by a generation number, so a
// burst of failures triggers one recovery, not one per goroutine. A PIN that
// the token rejects at a new login takes the token down without retries
// (Status.Retrying is false): a retry loop could lock the PIN.
//
// The package never logs. Status reports whether the token is up, since when
// and why not; Check probes it without an operation (the caller decides how
// often); Options.Observer receives an Event when the token goes down (once
// per outage), comes back (once, with the outage's length), recovers a lost
// login or re-initialises the module, and for every operation that fails,
// with a fixed reason (FailureUnavailable, FailureKeyNotFound, FailurePIN,
// FailureRequest, FailureDevice). The caller logs and counts these (cmd/estca does).
//
// The package does not verify the signatures the token returns: the
// consumer that knows which public key a signature must verify under does
// (package ca, for every HSM key estca uses).
//
// # Builds without cgo
//
// miekg/pkcs11 needs cgo. Without it the package still builds, with the
// same exported API, and every function and method returns ErrNoCgo
// ("hsm: built without cgo: PKCS#11 unavailable"); `make test` runs the
// package's tests with CGO_ENABLED=0 to keep it so.
//
// # Why miekg/pkcs11 directly and not crypto11
//
// DESIGN names crypto11 for the signers. This package uses
// github.com/miekg/pkcs11 alone because crypto11 v1.2.5 cannot recover:
// its session pool puts a session back after every operation, broken or not,
// and offers no way to evict it, so after C_CloseAllSessions (or a network HSM
// reconnect) every later operation fails until the whole crypto11.Context is
// closed and configured again. That teardown waits for operations in flight,
// finalises the module when its package-level reference count drops to zero
// (breaking any other handle in the process, such as the raw one needed for
// wrapping), and hands out new key objects the callers do not hold. crypto11
// also wraps errors with pkg/errors v0.8.1, which errors.Is cannot see
// through, so CKR_* codes could not be classified. What crypto11 would add
// here — the r||s to DER conversion, the DigestInfo prefixes, PSS parameters —
// is about a hundred lines in sign.go, tested against crypto/ecdsa,
// crypto/rsa and openssl.
//
// # Caveats
//
//   - The PIN is zeroed in Go memory (the Token's copy in Close), but
//     miekg/pkcs11 copies it into C memory for each C_Login and frees that
//     copy without zeroing it, and the module may keep its own.
//   - One C_Initialize per module per process. The Token whose C_Initialize
//     succeeded owns the module: it calls C_Finalize in Close, and only it
//     re-initialises the module to recover (step 2 above). A Token opened
//     while the module was already initialised shares it and leaves it in
//     place: its recovery stops at a new login, so it cannot bring back a
//     SoftHSM token whose directory vanished unless the owner does. Close the
//     owner last, or open one Token per module per process (estca does). If
//     an owner finalises under another Token, that Token initialises the
//     module again on its next operation (and owns it from then on).
//   - Re-initialising the module invalidates every handle of the process on
//     that module, including raw handles opened next to the Token (they share
//     the library state). The Token forgets its own old session handles
//     without closing them, since the module may hand the same values out
//     again.
//   - Outages are noticed by operations (or Check): a token that vanishes
//     while nothing uses it is reported down at the next use or Check. A
//     signature with a session copy does not touch SoftHSM's token files:
//     a vanished SoftHSM token directory is noticed by the next Check (estca
//     serve probes every 5 s) or operation on token objects, and signatures
//     go on until then. (On a hardware HSM the copy lives in the device and
//     fails with it.)
//   - SoftHSM reads SOFTHSM2_CONF at C_Initialize only: see package softhsm.
//     A re-initialisation reads it again, so it must still name the token's
//     configuration then (estca sets it once, before Open).
//   - Recovery closes the stale handles of the Token's own sessions. A module
//     that reused session handle values immediately could have one of those
//     closes hit a fresh session; SoftHSM numbers handles monotonically.
//   - A session copy outlives the deletion of its token key by another
//     process (estca keys, pkcs11-tool) until the Token's next recovery or
//     Close: a running server keeps signing with a key destroyed under it.
//     Stop the server before destroying its keys, or set
//     Options.SignWithTokenObjects.
//   - GenerateKey's label check is atomic within one Token, not across
//     processes sharing the token.
//   - Key material handed to the module (a KEK to import, a content key to
//     wrap, the transport key) goes through miekg/pkcs11's C copies of the
//     attribute values, which it frees without zeroing; the Go buffers are
//     the caller's to zero (ExportedKey.Zero).
//   - CleanupGenerated destroys every pending generated key of the token:
//     run it only in the one process that generates keys there (estca serve
//     at start). Two appliances sharing one token would destroy each
//     other's keys in flight.
//   - CKA_WRAP_WITH_TRUSTED is not set on generated keys: only a wrapping
//     key marked CKA_TRUSTED by the security officer could then export them,
//     and estca keeps no SO session. The generated key being a session
//     object, destroyed in the operation that exports it, bounds its life
//     in the token instead.
//
// # Standards
//
// PKCS#11 v2.40 (OASIS), RFC 7512 (pkcs11: URI), RFC 5480 (ECDSA keys and
// signatures), RFC 8017 (RSA PKCS#1 v1.5 and PSS).
package hsm
