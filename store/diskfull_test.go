package store

import (
	"errors"
	"os"
	"path/filepath"
	"syscall"
	"testing"
	"time"

	"github.com/estca/estca/store/storetest"
)

// TestDiskFull fills the file system under a real store: writes fail with a
// *WriteError matching ErrUnavailable and ENOSPC (a bbolt commit failing
// in its page writes), fail fast between retries without touching the
// disk, and succeed again by themselves once space is back; the store stays
// consistent throughout.
func TestDiskFull(t *testing.T) {
	t.Parallel()
	dir := storetest.SmallFS(t, 4<<20)
	key := auditKey(t)
	path := filepath.Join(dir, "estca.db")
	opts := withKey(Options{WriteRetry: 50 * time.Millisecond}, key, path)
	db, err := Create(path, opts)
	if err != nil {
		t.Fatal(err)
	}
	defer db.Close()
	m := newCertMaker(t)
	der := m.der(t, "1")
	issue := func(i int) error {
		s := serialOf(i)
		_, err := db.Issue(Certificate{Serial: s, DER: der, Requester: fp(s), CSRDigest: digest(s)}, AuditRecord{})
		return err
	}
	filler := storetest.Fill(t, dir)
	i := 0
	var werr error
	for ; i < 10000; i++ {
		if werr = issue(i); werr != nil {
			break
		}
	}
	var we *WriteError
	if !errors.As(werr, &we) || !errors.Is(werr, ErrUnavailable) || !errors.Is(werr, syscall.ENOSPC) {
		t.Fatalf("issue %d on a full disk: %v", i, werr)
	}
	t.Logf("disk full after %d more certificates: %v", i, werr)
	h := db.Health()
	if h.WriteErr == nil || h.Since.IsZero() {
		t.Fatalf("Health = %+v", h)
	}
	// Within the retry window a write fails at once, without a commit.
	if err := issue(i + 1); !errors.As(err, &we) || !we.FailFast {
		t.Errorf("write within the retry window: %v", err)
	}
	if err := os.Remove(filler); err != nil {
		t.Fatal(err)
	}
	var ok bool
	for deadline := time.Now().Add(30 * time.Second); time.Now().Before(deadline); time.Sleep(20 * time.Millisecond) {
		if err := issue(i + 2); err == nil {
			ok = true
			break
		} else if !errors.Is(err, ErrUnavailable) {
			t.Fatalf("write after space came back: %v", err)
		}
	}
	if !ok {
		t.Fatal("writes did not recover after space came back")
	}
	if h := db.Health(); h.WriteErr != nil {
		t.Errorf("Health after recovery = %+v", h)
	}
	if _, err := db.SignHead(); err != nil {
		t.Fatal(err)
	}
	checkDB(t, db)
	if _, err := db.Verify(&key.PublicKey); err != nil {
		t.Fatalf("Verify after the disk-full episode: %v", err)
	}
	if _, err := db.Certificate(serialOf(i)); !errors.Is(err, ErrNotFound) {
		t.Errorf("the failed certificate is there: %v", err)
	}
	// And the file reopens cleanly.
	db.Close()
	db, err = Open(path, opts)
	if err != nil {
		t.Fatalf("reopen: %v", err)
	}
	db.Close()
}
