// Package store is estca's persistent state, kept in one bbolt file: issued
// certificates (by serial, indexed by subject key identifier and by requester
// fingerprint), enrollment requests and their decisions (keyed by requester +
// CSR digest, so an identical re-sent CSR is answered with the certificate
// already issued for it, RFC 9148 §4.2 delayed enrollment), revocations (with
// RFC 5280 §5.3.1 reason codes), and an append-only, hash-chained audit log
// whose head is periodically signed by an audit key.
//
// It is the only package that imports go.etcd.io/bbolt (with its test helper
// store/storetest, which damages copies of store files for tamper tests).
//
// # Durability
//
// Every write (Issue, Revoke, Append, PutPending, Decide, SignHead) is one
// bbolt transaction committed with fsync before the call returns: a
// certificate handed to a device can never be lost by a crash. Concurrent
// writers are group-committed, so many issuances share one fsync: a
// committer goroutine runs, in one transaction, every write queued while the
// previous commit was running (at most Options.MaxBatchSize). A lone writer
// commits at once; under load a batch is whatever arrived during the last
// fsync. Options.BoltBatch switches to bbolt's DB.Batch, which waits
// MaxBatchDelay before each commit; on the 2-core development machine (disk
// shared with other jobs, so noisy) the committer measured 1.1-1.8x its
// throughput at 8 and 32 writers and about half its latency for one writer. The file uses the hashmap freelist and
// keeps freelist syncing and fsync on.
//
// # Audit chain
//
// Record n is stored under the 8-byte big-endian key n (from 1) as its
// 32-byte Hash followed by its canonical encoding (JSON of a fixed struct,
// times as Unix nanoseconds, Hash excluded, Prev included), with
// Hash = SHA-256(Prev || encoding). Seq 1 has an empty Prev. The meta bucket
// holds the chain head (seq, hash). SignHead signs HeadMessage(seq, hash,
// time) with a crypto.Signer (ECDSA and RSA PKCS#1 v1.5 over SHA-256,
// Ed25519 directly) and keeps the result in its own bucket. Verify walks
// everything and names the first failing record in a *VerifyError.
//
// # What it does not do
//
// It does not parse certificates or CSRs, sign anything other than audit
// heads, decide policy, or log. Serial uniqueness is checked, but the serial
// inside the DER is not compared with Certificate.Serial.
//
// # Concurrency
//
// A *DB is safe for concurrent use by many goroutines. Reads run in parallel
// read transactions; writes are serialised by bbolt (batched). Open starts
// one committer goroutine for a writable store; Close commits what is queued
// and stops it, and writes after Close fail with ErrClosed.
//
// # Caveats
//
//   - Batch re-runs: a write function may run more than once (when one
//     function in a batch fails, the batch is retried without it and the
//     failing one is re-run alone, as bbolt's DB.Batch does). Write functions here only write through
//     the transaction and recompute their results on every run, so a re-run
//     neither double-appends nor leaks a stale audit sequence number. A failing
//     write (for example ErrDuplicateSerial) costs its batch a retry.
//   - Single process: bbolt holds an exclusive flock on the file. A second
//     Open, from another process or from this one, waits Options.LockTimeout
//     and fails with ErrLocked. ReadOnly handles share a lock with each other
//     but not with a writer.
//   - What Verify proves: the stored records form one unbroken chain from
//     seq 1, no record covered by a signed head was altered, removed,
//     reordered or inserted, and the chain was not truncated below a signed
//     head. What it does not prove: records appended after the newest signed
//     head can be rewritten or dropped (together with the meta chain head)
//     by anyone who can write the file, since SHA-256 needs no key; sign heads
//     often. A whole signed head can be deleted unnoticed. It says nothing
//     about certificates, requests or revocations beyond the audit records
//     that mention them, and trusts the clock that set record times.
//   - Backup copies the live file inside a read transaction (tx.WriteTo); long
//     backups keep old pages from being reused, so the file may grow meanwhile.
package store
