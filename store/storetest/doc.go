// Package storetest damages copies of store files so that tests can check
// that tampering with the audit log is detected, and where.
//
// Copy makes a consistent copy of a store file in the test's temporary
// directory; Apply performs one kind of Tamper on a closed store file, the
// way someone with write access to the file but not the audit key would, and
// returns the sequence number that store.Verify names in its
// *store.VerifyError for that damage. Both report problems with t.Fatal.
//
// Besides package store it is the only package that imports
// go.etcd.io/bbolt. It edits the file below the store API, so it mirrors the
// on-disk layout described in package store ("Audit chain"): bucket and key
// names, records stored as a 32-byte SHA-256 hash followed by canonical JSON,
// Hash = SHA-256(Prev || JSON), and signed heads stored as JSON with "seq",
// "hash" and "sig" fields. It does not import package store, so store's own
// tests can use it. Apply checks the layout before it writes (every record's
// hash recomputes and every signed head names a stored hash) and fails the
// test, rather than damaging the file blindly, when the layout drifts.
//
// # What it does not do
//
// It does not verify head signatures (it has no key), create stores, or
// touch certificates, requests or revocations. It is for tests only: it
// imports package testing.
//
// # Concurrency
//
// Copy and Apply may run in parallel tests on different files. Apply needs
// the store to be closed: bbolt's file lock makes it wait a few seconds and
// then fail the test when a *store.DB still holds the file.
//
// # Preconditions
//
// Apply needs a store that verifies, whose newest signed head covers at least
// 6 records (records may follow it). Targets are chosen from c, the newest
// signed head's sequence number, so that every kind of damage lies under a
// signature; see the Tamper constants for the exact records and the sequence
// number reported.
package storetest
