package store

import (
	"errors"
	"path/filepath"
	"testing"
	"time"

	bolt "go.etcd.io/bbolt"

	"github.com/estca/estca/store/internal/wire"
)

// TestIssuedTo counts certificates per policy identity in a time window, as
// the authority does for rate limits, and reads no more than the limit.
func TestIssuedTo(t *testing.T) {
	t.Parallel()
	now := fixedNow
	db, _ := openTest(t, Options{Now: func() time.Time { return now }})
	m := newCertMaker(t)
	issue := func(i int, identity string, at time.Time) {
		t.Helper()
		c := m.cert(t, serialOf(i), fp("dev"), serialOf(i))
		c.Identity, c.IssuedAt = identity, at
		if _, err := db.Issue(c, AuditRecord{}); err != nil {
			t.Fatal(err)
		}
	}
	base := fixedNow
	for i := range 5 {
		issue(i, "idevid/acme/sn:A", base.Add(time.Duration(i)*time.Hour))
	}
	issue(5, "idevid/acme/sn:B", base.Add(10*time.Hour))
	// An identity that is a prefix of another must not count the other's.
	issue(6, "idevid/acme/sn:", base.Add(11*time.Hour))

	tests := []struct {
		name     string
		identity string
		since    time.Time
		limit    int
		want     int
		oldest   time.Time
	}{
		{"all", "idevid/acme/sn:A", time.Time{}, 0, 5, base},
		{"window", "idevid/acme/sn:A", base.Add(2 * time.Hour), 0, 3, base.Add(2 * time.Hour)},
		{"limit", "idevid/acme/sn:A", time.Time{}, 2, 2, base.Add(3 * time.Hour)},
		{"other", "idevid/acme/sn:B", time.Time{}, 0, 1, base.Add(10 * time.Hour)},
		{"prefix identity", "idevid/acme/sn:", time.Time{}, 0, 1, base.Add(11 * time.Hour)},
		{"none", "idevid/acme/sn:C", time.Time{}, 0, 0, time.Time{}},
		{"after all", "idevid/acme/sn:A", base.Add(100 * time.Hour), 0, 0, time.Time{}},
		{"empty identity", "", time.Time{}, 0, 0, time.Time{}},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			n, oldest, err := db.IssuedTo(tc.identity, tc.since, tc.limit)
			if err != nil || n != tc.want || !oldest.Equal(tc.oldest) {
				t.Fatalf("IssuedTo = %d, %v, %v; want %d, %v", n, oldest, err, tc.want, tc.oldest)
			}
		})
	}
	// The identity survives the round trip and the audit trail verifies
	// with version 3 certificate values.
	c, err := db.Certificate(serialOf(5))
	if err != nil || c.Identity != "idevid/acme/sn:B" {
		t.Fatalf("Certificate = %+v, %v", c, err)
	}
	if _, err := db.Verify(db.opts.AuditKey); err != nil {
		t.Fatal(err)
	}
}

// TestPendingIndex keeps the pending requests of each identity countable
// and findable by a short ID, through approval, denial and issuance.
func TestPendingIndex(t *testing.T) {
	t.Parallel()
	db, _ := openTest(t, Options{Now: func() time.Time { return fixedNow }})
	m := newCertMaker(t)
	alice, bob := ident("alice"), ident("bob")
	put := func(who Identity, identity, csr string) {
		t.Helper()
		r := Request{Requester: who, Identity: identity, CSRDigest: digest(csr), CSR: []byte(csr), Profile: "gw"}
		if _, err := db.PutPending(r, AuditRecord{}); err != nil {
			t.Fatal(err)
		}
	}
	put(alice, "idevid/acme/sn:alice", "a1")
	put(alice, "idevid/acme/sn:alice", "a2")
	put(bob, "idevid/acme/sn:bob", "b1")
	count := func(identity string, want int) {
		t.Helper()
		if n, err := db.PendingCount(identity); err != nil || n != want {
			t.Fatalf("PendingCount(%s) = %d, %v; want %d", identity, n, err, want)
		}
	}
	count("idevid/acme/sn:alice", 2)
	count("idevid/acme/sn:bob", 1)
	count("idevid/acme/sn:", 0)
	if rs, err := db.Requests(StatePending); err != nil || len(rs) != 3 || rs[0].Identity == "" {
		t.Fatalf("Requests(pending) = %+v, %v", rs, err)
	}

	r, err := db.FindPending(digest("a1")[:12])
	if err != nil || r.CSRDigest != digest("a1") || r.Identity != "idevid/acme/sn:alice" || r.ID() != digest("a1")[:16] {
		t.Fatalf("FindPending = %+v, %v", r, err)
	}
	for _, tc := range []struct {
		id   string
		want error
	}{
		{"abc", ErrInvalid},
		{"zzzzzzzzzz", ErrInvalid},
		{"0000000000000000", ErrNotFound},
	} {
		if _, err := db.FindPending(tc.id); !errors.Is(err, tc.want) {
			t.Errorf("FindPending(%q) err = %v, want %v", tc.id, err, tc.want)
		}
	}

	// Denied: out of the index.
	if _, err := db.Decide(alice.Fingerprint, digest("a2"), false, "no", AuditRecord{}); err != nil {
		t.Fatal(err)
	}
	count("idevid/acme/sn:alice", 1)
	if _, err := db.FindPending(digest("a2")); !errors.Is(err, ErrNotFound) {
		t.Errorf("denied request still pending: %v", err)
	}
	// Approved, then issued: out of the index at approval.
	if _, err := db.Decide(alice.Fingerprint, digest("a1"), true, "ok", AuditRecord{}); err != nil {
		t.Fatal(err)
	}
	count("idevid/acme/sn:alice", 0)
	c := m.cert(t, "beef", alice.Fingerprint, "a1")
	c.Identity = "idevid/acme/sn:alice"
	if _, err := db.Issue(c, AuditRecord{Requester: alice}); err != nil {
		t.Fatal(err)
	}
	if q, err := db.Request(alice.Fingerprint, digest("a1")); err != nil || q.State != StateIssued || q.Identity != "idevid/acme/sn:alice" {
		t.Fatalf("Request = %+v, %v", q, err)
	}
	// Issued straight from pending (an operator approval in the same
	// decision as the issuance): out of the index too.
	c = m.cert(t, "cafe", bob.Fingerprint, "b1")
	c.Identity = "idevid/acme/sn:bob"
	if _, err := db.Issue(c, AuditRecord{Requester: bob}); err != nil {
		t.Fatal(err)
	}
	count("idevid/acme/sn:bob", 0)
	if rs, err := db.Requests(StatePending); err != nil || len(rs) != 0 {
		t.Fatalf("Requests(pending) = %+v, %v", rs, err)
	}
	if _, err := db.Verify(db.opts.AuditKey); err != nil {
		t.Fatal(err)
	}
}

// TestAddedBuckets opens a store made before the identity and pending
// indexes existed: read-only it reads them as empty, for writing it adds
// them.
func TestAddedBuckets(t *testing.T) {
	t.Parallel()
	key := auditKey(t)
	path := filepath.Join(t.TempDir(), "estca.db")
	db, err := Create(path, withKey(Options{}, key, path))
	if err != nil {
		t.Fatal(err)
	}
	if err := db.bolt.Update(func(tx *bolt.Tx) error {
		for _, name := range wire.AddedBuckets {
			if err := tx.DeleteBucket(name); err != nil {
				return err
			}
		}
		return nil
	}); err != nil {
		t.Fatal(err)
	}
	db.Close()

	ro, err := Open(path, Options{ReadOnly: true, AuditKey: &key.PublicKey, Checkpoint: path + ".checkpoint"})
	if err != nil {
		t.Fatal(err)
	}
	if n, err := ro.PendingCount("x"); err != nil || n != 0 {
		t.Errorf("PendingCount = %d, %v", n, err)
	}
	if n, _, err := ro.IssuedTo("x", time.Time{}, 0); err != nil || n != 0 {
		t.Errorf("IssuedTo = %d, %v", n, err)
	}
	if rs, err := ro.Requests(StatePending); err != nil || len(rs) != 0 {
		t.Errorf("Requests = %v, %v", rs, err)
	}
	ro.Close()

	rw, err := Open(path, withKey(Options{}, key, path))
	if err != nil {
		t.Fatal(err)
	}
	defer rw.Close()
	if err := rw.view(func(tx *bolt.Tx) error {
		for _, name := range wire.AddedBuckets {
			if tx.Bucket(name) == nil {
				t.Errorf("bucket %s not added", name)
			}
		}
		return nil
	}); err != nil {
		t.Fatal(err)
	}
	if _, err := rw.PutPending(Request{Requester: ident("a"), Identity: "i", CSRDigest: digest("x")}, AuditRecord{}); err != nil {
		t.Fatal(err)
	}
	if n, err := rw.PendingCount("i"); err != nil || n != 1 {
		t.Errorf("PendingCount = %d, %v", n, err)
	}
}
