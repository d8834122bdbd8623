// Package storefill fills a store with many issued certificates quickly,
// through the store API, for the scale benchmark (`make bench-scale`) and
// its small version in the tests: the store a busy appliance has after a
// million enrollments, without a million DTLS handshakes and HSM
// signatures.
//
// Every certificate is a copy of one sample taken from a real enrollment
// (Sample): its DER with the serial and the subject key identifier
// replaced in place by unique values of the same length (the size of a
// real certificate; the issuing CA's signature no longer verifies), the
// requester fingerprint and CSR digest unique, the requester's subject,
// IDevID serial and policy identity varied in their last eight characters
// (same length; hashed, so devices come in no order, as in a fleet), and the issued audit record the CA wrote for the sample
// with the same replacements. Fill stores them with store.DB.Issue from
// many goroutines, so that the store's group committer merges them as it
// merges concurrent enrollments, and signs a head every HeadEvery
// certificates as a server's periodic heads do. The store then holds what
// the ca package writes, record for record: Verify passes on it.
//
// # What it does not do
//
// It does not make valid certificates (the CA's signature over a modified
// DER does not verify), store requests held for approval, revocations or
// denials, or talk to an HSM (heads are signed by the store's
// Options.Signer).
//
// # Concurrency
//
// Fill runs Options.Workers goroutines against one *store.DB and returns
// when they have stopped. Other users of the DB may run meanwhile.
//
// # Caveats
//
// Certificates are derived from Options.Seed and their number: two fills
// of one store with the same seed collide (store.ErrDuplicateSerial).
package storefill
