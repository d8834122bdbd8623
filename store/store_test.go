package store

import (
	"bytes"
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"testing"
	"time"

	bolt "go.etcd.io/bbolt"

	"github.com/estca/estca/store/internal/wire"
)

func TestIssueAndLookup(t *testing.T) {
	t.Parallel()
	db, _ := openTest(t, Options{Now: func() time.Time { return fixedNow }})
	m := newCertMaker(t)
	alice, bob := ident("alice"), ident("bob")
	// Serials chosen so that string order differs from numeric order.
	certs := []Certificate{
		m.cert(t, "ff", alice.Fingerprint, "csr-a1"),
		m.cert(t, "100", alice.Fingerprint, "csr-a2"),
		m.cert(t, "1f", bob.Fingerprint, "csr-b1"),
		m.cert(t, "abcdef0123456789abcdef0123456789abcdef01", bob.Fingerprint, "csr-b2"),
	}
	certs[3].SKI = certs[0].SKI // same key re-certified
	for i, c := range certs {
		who := alice
		if c.Requester == bob.Fingerprint {
			who = bob
		}
		rec, err := db.Issue(c, AuditRecord{Requester: who, Verdict: "accept"})
		if err != nil {
			t.Fatalf("Issue %s: %v", c.Serial, err)
		}
		if rec.Seq != uint64(createdRecords+i+1) || rec.Event != EventIssued || rec.Serial != c.Serial || rec.CertSeq != uint64(i+1) ||
			rec.CSRDigest != c.CSRDigest || len(rec.Hash) != 32 || !rec.Time.Equal(fixedNow) || len(rec.CertDigest) != 32 {
			t.Fatalf("Issue %s returned record %+v", c.Serial, rec)
		}
	}

	t.Run("by serial", func(t *testing.T) {
		for _, want := range certs {
			got, err := db.Certificate(want.Serial)
			if err != nil {
				t.Fatalf("Certificate(%s): %v", want.Serial, err)
			}
			if !bytes.Equal(got.DER, want.DER) || got.Seq == 0 || got.Subject != want.Subject || !bytes.Equal(got.SKI, want.SKI) ||
				got.Requester != want.Requester || got.Profile != want.Profile || got.CSRDigest != want.CSRDigest ||
				!got.NotBefore.Equal(want.NotBefore) || !got.NotAfter.Equal(want.NotAfter) || !got.IssuedAt.Equal(fixedNow) {
				t.Errorf("Certificate(%s) = %+v, want %+v", want.Serial, got, want)
			}
		}
	})

	lookups := []struct {
		name string
		get  func() ([]Certificate, error)
		want []string
	}{
		{"all in issuance order", func() ([]Certificate, error) { return db.Certificates(CertFilter{}) }, []string{"ff", "100", "1f", certs[3].Serial}},
		{"page 1", func() ([]Certificate, error) { return db.Certificates(CertFilter{Limit: 2}) }, []string{"ff", "100"}},
		{"page 2", func() ([]Certificate, error) { return db.Certificates(CertFilter{Limit: 2, After: "100"}) }, []string{"1f", certs[3].Serial}},
		{"after last", func() ([]Certificate, error) { return db.Certificates(CertFilter{After: certs[3].Serial}) }, nil},
	}
	for _, tc := range lookups {
		t.Run(tc.name, func(t *testing.T) {
			got, err := tc.get()
			if err != nil {
				t.Fatal(err)
			}
			if got == nil {
				t.Fatal("nil slice, want empty")
			}
			if s := serials(got); fmt.Sprint(s) != fmt.Sprint(tc.want) && !(len(s) == 0 && len(tc.want) == 0) {
				t.Errorf("got %v, want %v", s, tc.want)
			}
		})
	}

	t.Run("issued for", func(t *testing.T) {
		for _, c := range certs {
			got, err := db.IssuedFor(c.Requester, c.CSRDigest)
			if err != nil || got.Serial != c.Serial {
				t.Errorf("IssuedFor(%s) = %s, %v", c.Serial, got.Serial, err)
			}
		}
		for _, q := range [][2]string{{alice.Fingerprint, digest("csr-b1")}, {bob.Fingerprint, digest("csr-a1")}, {"", ""}} {
			if _, err := db.IssuedFor(q[0], q[1]); !errors.Is(err, ErrNotFound) {
				t.Errorf("IssuedFor(%.8s, %.8s) err = %v, want ErrNotFound", q[0], q[1], err)
			}
		}
	})

	t.Run("not found and count", func(t *testing.T) {
		for _, s := range []string{"2", "0ff", "FF", ""} {
			if _, err := db.Certificate(s); !errors.Is(err, ErrNotFound) {
				t.Errorf("Certificate(%q) err = %v", s, err)
			}
		}
		if n, err := db.CountCertificates(); err != nil || n != len(certs) {
			t.Errorf("CountCertificates = %d, %v", n, err)
		}
		if _, err := db.Certificates(CertFilter{After: "0x1"}); !errors.Is(err, ErrInvalid) {
			t.Errorf("bad cursor err = %v", err)
		}
		if _, err := db.Certificates(CertFilter{After: "fe"}); !errors.Is(err, ErrNotFound) {
			t.Errorf("absent cursor err = %v", err)
		}
	})
}

func serials(cs []Certificate) []string {
	out := []string{}
	for _, c := range cs {
		out = append(out, c.Serial)
	}
	return out
}

// snapshot captures everything Issue could have written.
type snapshot struct {
	count   int
	records int
	head    string
	reqs    int
	serials int
}

func takeSnapshot(t *testing.T, db *DB) snapshot {
	t.Helper()
	var s snapshot
	err := db.bolt.View(func(tx *bolt.Tx) error {
		s.count = int(tx.Bucket(wire.BucketCerts).Sequence())
		s.records = tx.Bucket(wire.BucketAudit).Stats().KeyN
		s.head = fmt.Sprintf("%x", tx.Bucket(wire.BucketMeta).Get(wire.MetaChain))
		s.reqs = tx.Bucket(wire.BucketRequests).Stats().KeyN
		s.serials = tx.Bucket(wire.BucketSerials).Stats().KeyN
		if n := tx.Bucket(wire.BucketCerts).Stats().KeyN; n != s.count {
			return fmt.Errorf("cert count %d != keys %d", s.count, n)
		}
		return nil
	})
	if err != nil {
		t.Fatal(err)
	}
	return s
}

func TestIssueRejectsDuplicates(t *testing.T) {
	t.Parallel()
	db, _ := openTest(t, Options{})
	m := newCertMaker(t)
	alice := ident("alice")
	orig := m.cert(t, "a1", alice.Fingerprint, "csr-1")
	if _, err := db.Issue(orig, AuditRecord{Requester: alice}); err != nil {
		t.Fatal(err)
	}
	dupSerial := m.cert(t, "a1", alice.Fingerprint, "csr-2")
	dupSerial.SKI = []byte("other-ski")
	dupReq := m.cert(t, "a2", alice.Fingerprint, "csr-1")
	cases := []struct {
		name string
		c    Certificate
		rec  AuditRecord
		want error
	}{
		{"duplicate serial", dupSerial, AuditRecord{Requester: alice}, ErrDuplicateSerial},
		{"duplicate request", dupReq, AuditRecord{Requester: alice}, ErrDuplicateRequest},
		{"invalid serial leading zero", m.cert(t, "a3", alice.Fingerprint, "x"), AuditRecord{}, ErrInvalid},
		{"empty DER", Certificate{Serial: "a4"}, AuditRecord{}, ErrInvalid},
		{"requester mismatch", m.cert(t, "a5", alice.Fingerprint, "y"), AuditRecord{Requester: ident("bob")}, ErrInvalid},
	}
	cases[2].c.Serial = "0a3"
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			before := takeSnapshot(t, db)
			_, err := db.Issue(tc.c, tc.rec)
			if !errors.Is(err, tc.want) {
				t.Fatalf("err = %v, want %v", err, tc.want)
			}
			if after := takeSnapshot(t, db); after != before {
				t.Errorf("store changed: before %+v after %+v", before, after)
			}
		})
	}
	got, err := db.Certificate("a1")
	if err != nil || !bytes.Equal(got.DER, orig.DER) {
		t.Errorf("original certificate changed: %v", err)
	}
	if _, err := db.Certificate("a2"); !errors.Is(err, ErrNotFound) {
		t.Errorf("rejected duplicate request was stored: %v", err)
	}
}

func TestSerialValidation(t *testing.T) {
	t.Parallel()
	cases := map[string]bool{
		"1": true, "a": true, "ff": true, "1234567890abcdef1234567890abcdef12345678": true,
		"": false, "0": false, "01": false, "FF": false, "g1": false, "-1": false,
		"1234567890abcdef1234567890abcdef123456789": false,
	}
	for s, want := range cases {
		if got := wire.ValidSerial(s); got != want {
			t.Errorf("ValidSerial(%q) = %v, want %v", s, got, want)
		}
		if got := wire.SerialKey(s); (got != nil) != want {
			t.Errorf("SerialKey(%q) = %x", s, got)
		} else if back, err := wire.ParseSerialKey(got); want && (err != nil || back != s) {
			t.Errorf("ParseSerialKey(SerialKey(%q)) = %q, %v", s, back, err)
		}
	}
}

// commitModes are the two group-commit implementations.
var commitModes = []struct {
	name string
	opts Options
}{
	{"committer", Options{}},
	{"bolt-batch", Options{BoltBatch: true}},
}

func TestConcurrentIssue(t *testing.T) {
	t.Parallel()
	for _, mode := range commitModes {
		t.Run(mode.name, func(t *testing.T) {
			t.Parallel()
			testConcurrentIssue(t, mode.opts)
		})
	}
}

func testConcurrentIssue(t *testing.T, opts Options) {
	db, _ := openTest(t, opts)
	m := newCertMaker(t)
	const workers, each = 32, 8
	var wg sync.WaitGroup
	errs := make(chan error, workers*each)
	certs := make([][]Certificate, workers)
	for w := range workers {
		for i := range each {
			certs[w] = append(certs[w], m.cert(t, serialOf(w*each+i), fp(fmt.Sprint("w", w)), fmt.Sprint("csr", i)))
		}
	}
	for w := range workers {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for _, c := range certs[w] {
				if _, err := db.Issue(c, AuditRecord{}); err != nil {
					errs <- err
				}
			}
		}()
	}
	wg.Wait()
	close(errs)
	for err := range errs {
		t.Error(err)
	}
	for w := range workers {
		for _, c := range certs[w] {
			if got, err := db.IssuedFor(c.Requester, c.CSRDigest); err != nil || got.Serial != c.Serial {
				t.Errorf("IssuedFor %s: %s %v", c.Serial, got.Serial, err)
			}
		}
	}
	if n, _ := db.CountCertificates(); n != workers*each {
		t.Errorf("count = %d", n)
	}
	rep, err := db.Verify(db.opts.AuditKey)
	if err != nil {
		t.Fatalf("Verify: %v", err)
	}
	if rep.Records != workers*each+createdRecords || rep.Certificates != workers*each {
		t.Errorf("report %+v", rep)
	}
	recs, err := db.AuditRecords(AuditFilter{})
	if err != nil {
		t.Fatal(err)
	}
	seen := map[string]bool{}
	for _, r := range recs {
		if r.Event == EventIssued {
			seen[r.Serial] = true
		}
	}
	if len(seen) != workers*each {
		t.Errorf("%d distinct serials in audit, want %d", len(seen), workers*each)
	}
}

// TestBatchRerun mixes duplicates into concurrent batches: bbolt retries a
// batch without the failing call and re-runs that call alone, which must
// neither lose the good calls nor double-append audit records.
func TestBatchRerun(t *testing.T) {
	t.Parallel()
	for _, mode := range commitModes {
		t.Run(mode.name, func(t *testing.T) {
			t.Parallel()
			opts := mode.opts
			opts.MaxBatchDelay = 5 * time.Millisecond
			testBatchRerun(t, opts)
		})
	}
}

func testBatchRerun(t *testing.T, opts Options) {
	db, _ := openTest(t, opts)
	m := newCertMaker(t)
	const n = 40
	var wg sync.WaitGroup
	results := make([]error, 2*n)
	for i := range 2 * n {
		// Every serial is issued twice; exactly one of each pair wins.
		c := m.cert(t, serialOf(i/2), fp("x"), fmt.Sprint("csr", i))
		wg.Add(1)
		go func() {
			defer wg.Done()
			_, results[i] = db.Issue(c, AuditRecord{})
		}()
	}
	wg.Wait()
	ok, dup := 0, 0
	for _, err := range results {
		switch {
		case err == nil:
			ok++
		case errors.Is(err, ErrDuplicateSerial):
			dup++
		default:
			t.Errorf("unexpected error %v", err)
		}
	}
	if ok != n || dup != n {
		t.Errorf("ok=%d dup=%d, want %d each", ok, dup, n)
	}
	rep, err := db.Verify(db.opts.AuditKey)
	if err != nil || rep.Records != n+createdRecords {
		t.Errorf("Verify = %+v, %v; want %d records", rep, err, n+createdRecords)
	}
}

func TestRevoke(t *testing.T) {
	t.Parallel()
	db, _ := openTest(t, Options{Now: func() time.Time { return fixedNow }})
	m := newCertMaker(t)
	for _, s := range []string{"10", "11"} {
		if _, err := db.Issue(m.cert(t, s, fp("a"), s), AuditRecord{}); err != nil {
			t.Fatal(err)
		}
	}
	at := fixedNow.Add(time.Hour)
	cases := []struct {
		name   string
		serial string
		reason int
		want   error
	}{
		{"unknown", "12", 1, ErrNotFound},
		{"invalid reason 7", "10", 7, ErrInvalid},
		{"invalid reason 11", "10", 11, ErrInvalid},
		{"invalid serial", "010", 1, ErrInvalid},
		{"ok", "10", 1, nil},
		{"again", "10", 4, ErrAlreadyRevoked},
		{"ok zero time", "11", 0, nil},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			when := at
			if tc.name == "ok zero time" {
				when = time.Time{}
			}
			err := db.Revoke(tc.serial, tc.reason, when, AuditRecord{Reason: "key compromise reported"})
			if !errors.Is(err, tc.want) {
				t.Fatalf("err = %v, want %v", err, tc.want)
			}
		})
	}
	r, err := db.Revocation("10")
	if err != nil || r.Reason != 1 || !r.Time.Equal(at) {
		t.Errorf("Revocation(10) = %+v, %v", r, err)
	}
	if r, err := db.Revocation("11"); err != nil || !r.Time.Equal(fixedNow) {
		t.Errorf("Revocation(11) = %+v, %v", r, err)
	}
	if _, err := db.Revocation("12"); !errors.Is(err, ErrNotFound) {
		t.Errorf("Revocation(12) err = %v", err)
	}
	all, err := db.Revocations()
	if err != nil || len(all) != 2 || all[0].Serial != "10" || all[1].Serial != "11" {
		t.Errorf("Revocations = %+v, %v", all, err)
	}
	recs, err := db.AuditRecords(AuditFilter{Serial: "10"})
	if err != nil || len(recs) != 2 || recs[1].Event != EventRevoked || recs[1].Reason != "key compromise reported" ||
		recs[1].Revocation == nil || recs[1].Revocation.Reason != 1 || !recs[1].Revocation.Time.Equal(at) {
		t.Errorf("audit for 10 = %+v, %v", recs, err)
	}
	// Each revocation is followed at once by a signed head covering it.
	heads, err := db.Heads()
	if err != nil || len(heads) != 3 || heads[2].Revocations != 2 || heads[1].Revocations != 1 {
		t.Fatalf("heads after two revocations = %+v, %v", heads, err)
	}
	if rep, err := db.Verify(db.opts.AuditKey); err != nil || rep.Records != createdRecords+6 || rep.Revocations != 2 || rep.Unsigned != 1 {
		t.Errorf("Verify = %+v, %v", rep, err)
	}
}

func TestPendingApproval(t *testing.T) {
	t.Parallel()
	db, _ := openTest(t, Options{Now: func() time.Time { return fixedNow }})
	m := newCertMaker(t)
	alice := ident("alice")
	csr := digest("pending-csr")
	req := Request{Requester: alice, CSRDigest: csr, CSR: []byte("csr-der"), Profile: "meter"}
	rec, err := db.PutPending(req, AuditRecord{Verdict: "pending", Reason: "manual approval"})
	if err != nil || rec.Event != EventPending || rec.Requester != alice {
		t.Fatalf("PutPending = %+v, %v", rec, err)
	}
	if _, err := db.PutPending(req, AuditRecord{}); !errors.Is(err, ErrDuplicateRequest) {
		t.Errorf("second PutPending err = %v", err)
	}
	if _, err := db.IssuedFor(alice.Fingerprint, csr); !errors.Is(err, ErrNotFound) {
		t.Errorf("IssuedFor pending err = %v", err)
	}
	if got, _ := db.Requests(StatePending); len(got) != 1 || got[0].CSRDigest != csr || got[0].Requester != alice || string(got[0].CSR) != "csr-der" {
		t.Errorf("Requests(pending) = %+v", got)
	}
	if _, err := db.Decide(alice.Fingerprint, digest("nope"), true, "", AuditRecord{}); !errors.Is(err, ErrNotFound) {
		t.Errorf("Decide unknown err = %v", err)
	}
	rec, err = db.Decide(alice.Fingerprint, csr, true, "operator ok", AuditRecord{})
	if err != nil || rec.Event != EventApproved || rec.Profile != "meter" || rec.Reason != "operator ok" {
		t.Fatalf("Decide = %+v, %v", rec, err)
	}
	if _, err := db.Decide(alice.Fingerprint, csr, false, "", AuditRecord{}); !errors.Is(err, ErrInvalid) {
		t.Errorf("Decide twice err = %v", err)
	}
	c := m.cert(t, "beef", alice.Fingerprint, "pending-csr")
	if _, err := db.Issue(c, AuditRecord{Requester: alice}); err != nil {
		t.Fatal(err)
	}
	r, err := db.Request(alice.Fingerprint, csr)
	if err != nil || r.State != StateIssued || r.Serial != "beef" || !r.Created.Equal(fixedNow) || string(r.CSR) != "csr-der" {
		t.Errorf("Request after issue = %+v, %v", r, err)
	}
	if got, err := db.IssuedFor(alice.Fingerprint, csr); err != nil || got.Serial != "beef" {
		t.Errorf("IssuedFor = %s, %v", got.Serial, err)
	}
	// Deny path.
	csr2 := digest("denied-csr")
	if _, err := db.PutPending(Request{Requester: alice, CSRDigest: csr2}, AuditRecord{}); err != nil {
		t.Fatal(err)
	}
	if rec, err := db.Decide(alice.Fingerprint, csr2, false, "unknown device", AuditRecord{}); err != nil || rec.Event != EventDenied {
		t.Errorf("deny = %+v, %v", rec, err)
	}
	if got, _ := db.Requests(""); len(got) != 2 {
		t.Errorf("Requests(all) = %d", len(got))
	}
	if _, err := db.SignHead(); err != nil {
		t.Fatal(err)
	}
	if rep, err := db.Verify(db.opts.AuditKey); err != nil || rep.Records != createdRecords+6 {
		t.Errorf("Verify = %+v, %v", rep, err)
	}
}

func TestAppendAndFilter(t *testing.T) {
	t.Parallel()
	db, _ := openTest(t, Options{Now: func() time.Time { return fixedNow }})
	m := newCertMaker(t)
	alice, bob := ident("alice"), ident("bob")
	t0 := fixedNow
	steps := []AuditRecord{
		{Event: EventStart, Time: t0},
		{Event: EventDenied, Time: t0.Add(1 * time.Minute), Requester: bob, Verdict: "deny", Reason: "csr key too small"},
		{Event: EventKeygen, Time: t0.Add(2 * time.Minute), Requester: alice, Flags: []string{"expired-idevid-accepted"}},
		{Event: EventConfig, Reason: "profile meter changed"}, // zero time: store clock
	}
	for _, r := range steps {
		if _, err := db.Append(r); err != nil {
			t.Fatalf("Append %s: %v", r.Event, err)
		}
	}
	if _, err := db.Issue(m.cert(t, "77", alice.Fingerprint, "c"), AuditRecord{Requester: alice, Time: t0.Add(3 * time.Minute)}); err != nil {
		t.Fatal(err)
	}
	for _, bad := range []Event{"", EventIssued, EventRevoked, EventHead, EventCreated, EventRestored} {
		if _, err := db.Append(AuditRecord{Event: bad}); !errors.Is(err, ErrInvalid) {
			t.Errorf("Append(%q) err = %v", bad, err)
		}
	}
	cases := []struct {
		name string
		f    AuditFilter
		want []uint64
	}{
		{"all", AuditFilter{}, []uint64{3, 4, 5, 6, 7}},
		{"since", AuditFilter{Since: t0.Add(90 * time.Second)}, []uint64{5, 7}},
		{"serial", AuditFilter{Serial: "77"}, []uint64{7}},
		{"requester fingerprint", AuditFilter{Requester: alice.Fingerprint}, []uint64{5, 7}},
		{"requester subject substring", AuditFilter{Requester: "CN=bob"}, []uint64{4}},
		{"requester org substring", AuditFilter{Requester: "O=Acme"}, []uint64{4, 5, 7}},
		{"limit", AuditFilter{Limit: 2}, []uint64{3, 4}},
		{"cursor", AuditFilter{AfterSeq: 3}, []uint64{6, 7}},
		{"cursor and limit", AuditFilter{AfterSeq: 1, Limit: 1, Requester: "Acme"}, []uint64{4}},
		{"none", AuditFilter{Serial: "78"}, nil},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			f := tc.f
			f.AfterSeq += createdRecords // past the store's own first records
			got, err := db.AuditRecords(f)
			if err != nil {
				t.Fatal(err)
			}
			var seqs []uint64
			for _, r := range got {
				seqs = append(seqs, r.Seq)
			}
			if fmt.Sprint(seqs) != fmt.Sprint(tc.want) {
				t.Errorf("got %v, want %v", seqs, tc.want)
			}
		})
	}
	recs, _ := db.AuditRecords(AuditFilter{AfterSeq: createdRecords})
	if r := recs[2]; r.Requester != alice || fmt.Sprint(r.Flags) != "[expired-idevid-accepted]" || !r.Time.Equal(t0.Add(2*time.Minute)) {
		t.Errorf("record 3 round trip = %+v", r)
	}
	if !recs[3].Time.Equal(fixedNow) {
		t.Errorf("zero time not set from clock: %v", recs[3].Time)
	}
	for i := 1; i < len(recs); i++ {
		if !bytes.Equal(recs[i].Prev, recs[i-1].Hash) {
			t.Errorf("record %d Prev != record %d Hash", recs[i].Seq, recs[i-1].Seq)
		}
	}
}

func TestReopenAndReadOnly(t *testing.T) {
	t.Parallel()
	key := auditKey(t)
	path := filepath.Join(t.TempDir(), "s.db")
	db, err := Create(path, withKey(Options{}, key, path))
	if err != nil {
		t.Fatal(err)
	}
	m := newCertMaker(t)
	if _, err := db.Issue(m.cert(t, "5", fp("a"), "c"), AuditRecord{}); err != nil {
		t.Fatal(err)
	}
	if err := db.Close(); err != nil {
		t.Fatal(err)
	}
	if _, err := Create(path, Options{}); err == nil || !strings.Contains(err.Error(), "exists") {
		t.Fatalf("Create over an existing store: %v", err)
	}
	ro, err := Open(path, Options{ReadOnly: true})
	if err != nil {
		t.Fatal(err)
	}
	defer ro.Close()
	if c, err := ro.Certificate("5"); err != nil || c.Serial != "5" {
		t.Errorf("read-only Certificate = %v", err)
	}
	ro2, err := Open(path, Options{ReadOnly: true, LockTimeout: 100 * time.Millisecond})
	if err != nil {
		t.Errorf("second read-only Open: %v", err)
	} else {
		ro2.Close()
	}
	writes := map[string]func() error{
		"Issue":    func() error { _, err := ro.Issue(m.cert(t, "6", fp("a"), "d"), AuditRecord{}); return err },
		"Append":   func() error { _, err := ro.Append(AuditRecord{Event: EventStart}); return err },
		"Revoke":   func() error { return ro.Revoke("5", 1, time.Time{}, AuditRecord{}) },
		"SignHead": func() error { _, err := ro.SignHead(); return err },
		"PutPending": func() error {
			_, err := ro.PutPending(Request{Requester: ident("a"), CSRDigest: "d"}, AuditRecord{})
			return err
		},
	}
	for name, w := range writes {
		if err := w(); !errors.Is(err, ErrReadOnly) {
			t.Errorf("%s on read-only store err = %v", name, err)
		}
	}
	absent := filepath.Join(t.TempDir(), "absent.db")
	for _, ro := range []bool{true, false} {
		if _, err := Open(absent, Options{ReadOnly: ro}); !errors.Is(err, ErrNoStore) {
			t.Errorf("Open (read-only %v) of a missing file: %v", ro, err)
		}
	}
	if _, err := os.Stat(absent); !errors.Is(err, os.ErrNotExist) {
		t.Errorf("Open created %s", absent)
	}
}

func TestVersionMismatch(t *testing.T) {
	t.Parallel()
	for _, v := range []uint64{1, 99} {
		path := filepath.Join(t.TempDir(), "v.db")
		b, err := bolt.Open(path, 0o600, nil)
		if err != nil {
			t.Fatal(err)
		}
		err = b.Update(func(tx *bolt.Tx) error {
			m, err := tx.CreateBucket(wire.BucketMeta)
			if err != nil {
				return err
			}
			return m.Put(wire.MetaVersion, wire.U64(v))
		})
		b.Close()
		if err != nil {
			t.Fatal(err)
		}
		_, err = Open(path, Options{})
		if !errors.Is(err, ErrVersion) {
			t.Errorf("Open of format %d err = %v, want ErrVersion", v, err)
		}
		if v == 1 && !strings.Contains(fmt.Sprint(err), "estca store migrate") {
			t.Errorf("format 1 error does not say what to do: %v", err)
		}
	}
}

// TestCloseDrains closes the store while writers are queued: every write
// either committed (and survives reopening) or failed with ErrClosed.
func TestCloseDrains(t *testing.T) {
	t.Parallel()
	key := auditKey(t)
	path := filepath.Join(t.TempDir(), "c.db")
	db, err := Create(path, withKey(Options{}, key, path))
	if err != nil {
		t.Fatal(err)
	}
	m := newCertMaker(t)
	der := m.der(t, "1")
	const n = 64
	results := make([]error, n)
	var wg sync.WaitGroup
	started := make(chan struct{}, n)
	for i := range n {
		wg.Add(1)
		go func() {
			defer wg.Done()
			started <- struct{}{}
			s := serialOf(i)
			_, results[i] = db.Issue(Certificate{Serial: s, DER: der, Requester: fp("c"), CSRDigest: digest(s)}, AuditRecord{})
		}()
	}
	for range n / 2 {
		<-started
	}
	if err := db.Close(); err != nil {
		t.Fatal(err)
	}
	wg.Wait()
	db, err = Open(path, withKey(Options{}, key, path))
	if err != nil {
		t.Fatal(err)
	}
	defer db.Close()
	checkDB(t, db)
	committed := 0
	for i, err := range results {
		_, gerr := db.Certificate(serialOf(i))
		switch {
		case err == nil && gerr == nil:
			committed++
		case errors.Is(err, ErrClosed) && errors.Is(gerr, ErrNotFound):
		default:
			t.Errorf("write %d: Issue err %v, lookup err %v", i, err, gerr)
		}
	}
	if rep, err := db.Verify(&key.PublicKey); err != nil || rep.Certificates != committed {
		t.Errorf("Verify = %+v, %v; %d committed", rep, err, committed)
	}
	if _, err := db.Append(AuditRecord{Event: EventStop}); err != nil {
		t.Fatal(err)
	}
	db.Close()
	if _, err := db.Append(AuditRecord{Event: EventStop}); !errors.Is(err, ErrClosed) {
		t.Errorf("Append after Close err = %v", err)
	}
}
