// Package storetest damages copies of store files so that tests can check
// that tampering is detected, and how, and provides a small file system to
// fill.
//
// Copy makes a consistent copy of a store file in the test's temporary
// directory; Apply performs one kind of Tamper on a closed store file, the
// way someone with write access to the file but not the audit key would,
// and returns the Expect that verification reports for that damage: the
// record and reason store.Verify names, or, for damage only the external
// checkpoint reveals (the tail cut together with the heads over it, an
// edited record re-chained with the later heads deleted), the checkpoint
// reason. The kinds cover issue 6: records edited, re-chained, deleted,
// reordered and inserted; the last 1, 10 or 60 records cut with their
// heads, certificates and revocations (every index fixed, as a careful
// forger would); a head signature forged and the head chain broken;
// certificates added and deleted; revocations removed and changed. InUse
// tells how much of a file bbolt uses (the rest is slack). For disk-full
// tests, SmallFS mounts a small tmpfs and Fill fills it (ENOSPC, needs
// root), and LimitFileSize lowers a process's file-size limit (EFBIG, no
// root needed).
//
// Besides package store it is the only package that imports
// go.etcd.io/bbolt. It edits the file below the store API, with the
// layout of store/internal/wire (buckets, keys, canonical record
// encoding). It does not import package store, so store's own tests can
// use it. Apply checks the layout before it writes (every record decodes,
// hashes and chains, the meta chain head is the last record) and fails the
// test, rather than damaging the file blindly, when it drifts.
//
// # What it does not do
//
// It does not verify head signatures (it has no key) or create stores. It
// is for tests only: it imports package testing.
//
// # Concurrency
//
// Copy and Apply may run in parallel tests on different files. Apply needs
// the store to be closed: bbolt's file lock makes it wait a few seconds and
// then fail the test when a *store.DB still holds the file.
//
// # Preconditions
//
// Apply needs a store that verifies, with at least two signed heads, the
// newest covering at least MinCovered records; targets are chosen from the
// record it covers so that every kind of damage lies under a signature. The
// certificate and revocation kinds need a certificate and a revocation;
// TruncateTail60 needs more than 60 records. SmallFS needs root (it skips
// the test with the reason otherwise, and fails it under CI=true).
package storetest
