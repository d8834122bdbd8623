// Package store is estca's persistent state, kept in one bbolt file (store
// format 3): issued certificates (in issuance order, indexed by serial and
// by policy identity), enrollment requests
// and their decisions (keyed by requester + CSR digest, so that an
// identical re-sent CSR is answered with the certificate already issued
// for it, RFC 9148 §4.7), revocations (RFC 5280 §5.3.1 reason codes), and
// an append-only, hash-chained audit log with chained signed heads and an
// external checkpoint.
//
// It is the only package that imports go.etcd.io/bbolt (with its test
// helper store/storetest, which damages copies of store files; both share
// the layout in store/internal/wire). It does not import hsm: heads are
// signed through the crypto.Signer passed in Options.
//
// # Creating and opening
//
// Only Create makes a store (`estca init`, a restore, a migration); Open
// never does. Before bbolt maps the file, Open takes bbolt's lock and
// checks it: the meta pages (magic, version, checksum, page size) of the
// newest valid one, whose high-water mark must lie inside the file, then
// the page tree by reading the file (each page carries its own id, is a
// branch or leaf page whose elements lie inside it, holds strictly
// increasing keys inside the bounds its parent gives, and is reachable
// once). A missing, empty, foreign, truncated or damaged file is a
// *FileError naming the damage (ErrNoStore, ErrEmpty, ErrForeign,
// ErrTruncated, ErrDamaged), never a hang, panic or SIGBUS, which is what
// bbolt does with such files. The page check reads at most
// Options.CheckPages pages before Open returns and the rest in the
// background, inside a read transaction (Health reports the result; damage
// found stops writes); after a crash (no persisted freelist) it reads every
// page first, because bbolt then reads every page at open itself. Close
// persists bbolt's freelist, so that a clean restart need not. Check reads
// every page on demand.
//
// With Options.AuditKey, Open also checks the audit chain (see "Open's
// audit check"); a format 1 or 2 file is refused with ErrVersion (Migrate
// converts it).
//
// # Layout (format 3)
//
// Buckets: meta (format version, 16-byte random store id, chain head,
// newest signed head, revocation accumulator, newest acknowledgement);
// certs (8-byte issuance sequence → certificate: serial, DER, subject,
// SKI, requester, profile, CSR digest, validity, issue time, record seq);
// serials (serial as integer bytes → issuance sequence); requests
// (requester + CSR digest → state, issuance sequence, CSR, identity of
// pending requests); revocations (serial → record seq, reason, time);
// audit (8-byte seq → 32-byte hash + record); heads (counter → record
// seq); certs_by_identity (length-prefixed policy identity + issuance
// sequence → issue time: IssuedTo, the rate limits) and requests_pending
// (length-prefixed identity + request key → empty: PendingCount,
// Requests(StatePending), FindPending). Certificates and requests that
// carry a policy identity are stored as version 3 values. The indexes are
// derived data, not covered by the audit chain (the decisions are).
// Records, certificates and requests are compact canonical binary
// (package wire documents every byte); hex fingerprints and digests are
// stored as bytes. The append-only buckets are filled to 100 %; bbolt runs
// with the hashmap freelist and does not write it per commit.
//
// Format 3 is format 2 without the certificate indexes by SKI and by
// requester fingerprint, which no query used and which cost two
// random-key inserts (two more B+tree leaves and their branches written
// per commit) and about 155 bytes per certificate. Migrate converts a
// format 2 store (see migrateV2: the chain, heads and store id carry over
// unchanged, so existing checkpoints stay valid) and a format 1 store.
//
// Size and growth, measured by `make bench-scale` (est.BenchmarkScale,
// store/storefill) and storefill.BenchmarkIssueAtScale: see the README's
// "Scale" section. Every certificate still costs random-key inserts in
// serials, requests and certs_by_identity (serials are random, RFC 5280
// §4.1.2.2; requesters arrive in any order), so a commit's page writes
// grow with the depth of those trees.
//
// # Durability
//
// Every write (Issue, Revoke, Append, PutPending, Decide, SignHead) is one
// bbolt transaction committed with fsync before the call returns: a
// certificate handed to a device can never be lost by a crash. Concurrent
// writers are group-committed: a committer goroutine runs, in one
// transaction, every write queued while the previous commit was running (at
// most Options.MaxBatchSize). A commit is held back, at most
// Options.CommitWait (2 ms), while writes announced with DB.Expect are on
// their way, and for the whole window after a commit of several writes, so
// that concurrent requests share a transaction and its two fsyncs; a lone
// writer commits at once. Options.BoltBatch switches to bbolt's DB.Batch,
// which waits MaxBatchDelay before each commit.
//
// A commit that fails for a reason outside the request (disk full, EFBIG,
// EIO, a failed fsync, bbolt failing) returns a *WriteError matching
// ErrUnavailable and its cause; for Options.WriteRetry after it, writes fail
// fast without touching the disk, then the next commit is tried, so that the
// store recovers by itself when space is back (Health tells a server when to
// log). Before each write the store checks that its path still names the
// file it has open (stat against fstat); once it does not (the file was
// renamed over, deleted or restored under it), every write fails with
// ErrReplaced, for good.
//
// # Audit chain
//
// Record n is SHA-256(hash of record n-1 || canonical encoding of record
// n), the first with an empty predecessor. An issued record commits to the
// SHA-256 of its certificate's DER and its issuance sequence; a revoked
// record states serial, reason and time and advances the revocation
// accumulator acc' = SHA-256(domain || acc || record seq || serial ||
// reason || time). A signed head (SignHead, with Options.Signer, the audit
// key in the HSM) states: the store id, its counter, the newest record and
// its hash, the digest of the previous head, and the revocation count and
// accumulator at that record; it is signed (ECDSA or RSA PKCS#1 v1.5 over
// SHA-256, or Ed25519), verified with the public key before it is stored,
// and appended as a record itself (event head), so that the next head
// covers it. Revoke signs a head at once. Each signed head is also written
// to the checkpoint file (Options.Checkpoint), atomically and fsynced,
// after its commit.
//
// # What Verify proves
//
// Verify walks the whole store in one read transaction. For an attacker
// who can edit the store file arbitrarily but cannot sign with the audit
// key, success proves:
//
//   - every record up to the newest signed head is as it was written:
//     none altered, removed, reordered or inserted (hashes, contiguous
//     sequence numbers, heads that sign the hash of the record they
//     cover);
//   - the signed heads form one chain (counter and predecessor digest) of
//     this store (store id), each verifying with the audit public key;
//   - the certificate bucket holds exactly the certificates the issued
//     records name, each with the DER its record commits to, reachable
//     through the serial and request indexes; the revocation set holds
//     exactly the revocations the revoked records state (nothing added,
//     removed or changed, named by serial), each of a certificate an
//     issued record before it names, except a revocation flagged
//     FlagUnknownCertificate (RevokeUnknown), which must name a serial no
//     issued record before it names, so it cannot stand in for a deleted
//     certificate; every head signs the revocation state at its record;
//   - with checkpoints: the store extends each (it holds that head,
//     identical), or a signed record acknowledges the checkpoint as
//     superseded (a restore of an older backup, a checkpoint reset): a
//     store cut back with the heads over the cut is "behind", one rebuilt
//     from another history "forked", naming both heads.
//
// What it cannot prove: anything signed with the audit key by someone else
// who holds it (the HSM PIN): such a person can rewrite the history and
// sign it; records after the newest signed head (VerifyReport.Unsigned):
// they are only hash-chained, and can be cut without a trace together with
// the heads over them, back to the newest checkpoint one still has: keep a
// recent checkpoint off the box (the journal line of `estca serve`, `estca
// audit checkpoint`); the truth of what a record says (times come from the
// server's clock, requesters from its own checks); and the contents of
// requests, SKI and requester indexes beyond what issued records commit to.
//
// # Open's audit check
//
// With Options.AuditKey, Open verifies the newest signed head, finds in the
// store the head the checkpoint file names (or the signed acknowledgement
// that supersedes it) and verifies the records from there on: hashes,
// heads, each issued record's certificate. It then folds the revocations
// bucket in record order and compares it with the accumulator the heads
// sign: a revocation removed, added or changed in the file makes Open fail.
// The revocation set so proven is kept in memory: Revocation and
// Revocations answer from it (and Revoke updates it), never from the file,
// so an edit of the file while the store is open cannot revive a revoked
// certificate. The cost is the records since the checkpoint plus the
// revocations, not the whole chain (that is Verify's job): records before
// the checkpoint are covered by the signed head it names.
//
// # Backups and restores
//
// Backup copies the live file inside a read transaction (tx.WriteTo);
// BackupFile and CheckBackupTarget refuse a target that is, or resolves to,
// the live store or its checkpoint (same path, symbolic links, "..", a hard
// link, a directory). Restore replaces a stopped appliance's store with a
// backup after verifying it completely and against the checkpoint; an
// older backup needs RestoreOptions.AcceptLoss, and the restore record then
// acknowledges the superseded checkpoint. Heads after an acknowledgement
// are numbered past the superseded head, so a checkpoint kept from before
// the restore is reported superseded while one kept from after it still
// catches a later cut. The old file is moved aside, never deleted.
// Certificates issued after the backup are then unknown to the store: the
// CA refuses them as requesters, and RevokeUnknown can still put their
// serials on the CRL.
//
// # What it does not do
//
// It does not parse certificates or CSRs, sign anything other than audit
// heads, decide policy, or log.
//
// # Concurrency
//
// A *DB is safe for concurrent use by many goroutines. Reads run in parallel
// read transactions; writes are serialised by bbolt (batched); SignHead
// calls are serialised. Open starts one committer goroutine for a writable
// store (and one for the background page check); Close stops them, and
// writes after Close fail with ErrClosed.
//
// # Caveats
//
//   - Batch re-runs: a write function may run more than once (when one
//     function in a batch fails, the batch is retried without it and the
//     failing one is re-run alone, as bbolt's DB.Batch does). Write
//     functions here only write through the transaction and recompute their
//     results on every run. A failing write (for example
//     ErrDuplicateSerial) costs its batch a retry.
//   - Single process: the store holds bbolt's flock. A second Open, from
//     another process or from this one, waits Options.LockTimeout and fails
//     with ErrLocked. ReadOnly handles share a lock with each other but not
//     with a writer.
//   - A failed commit makes bbolt rebuild its freelist by reading every
//     page; the fail-fast window bounds how often that happens while the
//     disk is full. After a failed fsync the page cache is not trusted by
//     anyone: the next commit is tried after the window as usual.
//   - Long read transactions (a backup, the background page check, Verify)
//     keep old pages from being reused, so the file may grow meanwhile, and
//     a commit that must grow bbolt's memory map waits for them.
//   - The file checks read bbolt's on-disk format 2 on little-endian hosts,
//     the only ones estca is built for.
package store
