package store

import (
	"bytes"
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"
)

func TestBackupWhileWriting(t *testing.T) {
	t.Parallel()
	db, _, key := openKeyed(t, Options{})
	m := newCertMaker(t)
	der := m.der(t, "1")
	if _, err := db.Append(AuditRecord{Event: EventStart}); err != nil {
		t.Fatal(err)
	}
	if _, err := db.SignHead(); err != nil {
		t.Fatal(err)
	}
	var next atomic.Int64
	stop := make(chan struct{})
	var wg sync.WaitGroup
	for w := range 4 {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for {
				select {
				case <-stop:
					return
				default:
				}
				s := serialOf(int(next.Add(1)))
				if _, err := db.Issue(Certificate{Serial: s, DER: der, Requester: fp(fmt.Sprint(w)), CSRDigest: digest(s)}, AuditRecord{}); err != nil {
					t.Error(err)
					return
				}
				if next.Load()%50 == 0 {
					if _, err := db.SignHead(); err != nil {
						t.Error(err)
						return
					}
				}
			}
		}()
	}
	stopWriters := sync.OnceFunc(func() { close(stop); wg.Wait() })
	defer stopWriters()
	dir := t.TempDir()
	type copyInfo struct {
		path string
		n    int64
	}
	var copies []copyInfo
	for i := range 4 {
		// Let the writers make progress between backups.
		for spins := 0; next.Load() < int64(40*(i+1)); spins++ {
			if spins > 10000 {
				t.Fatal("writers made no progress")
			}
			time.Sleep(time.Millisecond)
		}
		p := filepath.Join(dir, fmt.Sprintf("b%d.db", i))
		if i%2 == 0 {
			if err := db.BackupFile(p); err != nil {
				t.Fatal(err)
			}
			copies = append(copies, copyInfo{p, 0})
			continue
		}
		var buf bytes.Buffer
		n, err := db.Backup(&buf)
		if err != nil || n != int64(buf.Len()) {
			t.Fatalf("Backup = %d, %v (buffer %d)", n, err, buf.Len())
		}
		if err := os.WriteFile(p, buf.Bytes(), 0o600); err != nil {
			t.Fatal(err)
		}
		copies = append(copies, copyInfo{p, n})
	}
	stopWriters()
	var prev uint64
	for _, c := range copies {
		fi, err := os.Stat(c.path)
		if err != nil {
			t.Fatal(err)
		}
		if fi.Mode().Perm() != 0o600 {
			t.Errorf("%s mode %v, want 0600", c.path, fi.Mode().Perm())
		}
		b, err := Open(c.path, Options{ReadOnly: true})
		if err != nil {
			t.Fatalf("open backup %s: %v", c.path, err)
		}
		checkDB(t, b)
		rep, err := b.Verify(&key.PublicKey)
		if err != nil {
			t.Errorf("backup %s does not verify: %v", c.path, err)
		}
		n, _ := b.CountCertificates()
		if rep.Certificates != n || rep.LastSeq < prev {
			t.Errorf("backup %s: %+v with %d certificates (previous last seq %d)", c.path, rep, n, prev)
		}
		prev = rep.LastSeq
		b.Close()
	}
	if prev == 0 {
		t.Fatal("backups were empty")
	}
	entries, _ := os.ReadDir(dir)
	for _, e := range entries {
		if filepath.Ext(e.Name()) != ".db" {
			t.Errorf("temporary file left behind: %s", e.Name())
		}
	}
}

func TestBackupFileErrors(t *testing.T) {
	t.Parallel()
	db, _ := openTest(t, Options{})
	if err := db.BackupFile(filepath.Join(t.TempDir(), "missing-dir", "b.db")); err == nil {
		t.Error("BackupFile into a missing directory succeeded")
	}
	// Replacing an existing file is atomic: the old content is gone, the new verifies.
	p := filepath.Join(t.TempDir(), "b.db")
	if err := os.WriteFile(p, []byte("old"), 0o644); err != nil {
		t.Fatal(err)
	}
	if err := db.BackupFile(p); err != nil {
		t.Fatal(err)
	}
	b, err := Open(p, Options{ReadOnly: true})
	if err != nil {
		t.Fatal(err)
	}
	defer b.Close()
	if _, err := b.Verify(db.opts.AuditKey); err != nil {
		t.Error(err)
	}
	if fi, _ := os.Stat(p); fi.Mode().Perm() != 0o600 {
		t.Errorf("mode %v", fi.Mode().Perm())
	}
}

// TestBackupRefusesLiveStore: a backup must never be written over the live
// store or its checkpoint, however the path names them.
func TestBackupRefusesLiveStore(t *testing.T) {
	t.Parallel()
	db, path := openTest(t, Options{})
	dir := filepath.Dir(path)
	link := filepath.Join(t.TempDir(), "link.db")
	if err := os.Symlink(path, link); err != nil {
		t.Fatal(err)
	}
	hard := filepath.Join(dir, "hard.db")
	if err := os.Link(path, hard); err != nil {
		t.Fatal(err)
	}
	dirLink := filepath.Join(t.TempDir(), "storedir")
	if err := os.Symlink(dir, dirLink); err != nil {
		t.Fatal(err)
	}
	before, _ := os.Stat(path)
	for name, target := range map[string]string{
		"same path":          path,
		"dot-dot":            filepath.Join(dir, "..", filepath.Base(dir), "estca.db"),
		"symlink":            link,
		"hard link":          hard,
		"directory":          dir,
		"through dir link":   filepath.Join(dirLink, "estca.db"),
		"checkpoint":         db.opts.Checkpoint,
		"relative same path": relTo(t, path),
	} {
		if err := db.BackupFile(target); !errors.Is(err, ErrBackupTarget) {
			t.Errorf("%s (%s): err = %v, want ErrBackupTarget", name, target, err)
		}
	}
	after, _ := os.Stat(path)
	if !os.SameFile(before, after) || db.CheckFile() != nil {
		t.Fatal("the live store was replaced")
	}
	if _, err := db.Append(AuditRecord{Event: EventStart}); err != nil {
		t.Fatalf("store unusable after refused backups: %v", err)
	}
}

func relTo(t *testing.T, path string) string {
	wd, err := os.Getwd()
	if err != nil {
		t.Fatal(err)
	}
	r, err := filepath.Rel(wd, path)
	if err != nil {
		t.Fatal(err)
	}
	return r
}

// TestReplacedFileStopsWrites renames another file over the live store path
// (what the old backup did): the next write fails with ErrReplaced instead of
// going to the unlinked file, and so does every later one.
func TestReplacedFileStopsWrites(t *testing.T) {
	t.Parallel()
	db, path := openTest(t, Options{})
	m := newCertMaker(t)
	if _, err := db.Issue(m.cert(t, "a1", fp("x"), "c1"), AuditRecord{}); err != nil {
		t.Fatal(err)
	}
	other := filepath.Join(filepath.Dir(path), "other.db")
	if err := db.BackupFile(other); err != nil {
		t.Fatal(err)
	}
	if err := os.Rename(other, path); err != nil {
		t.Fatal(err)
	}
	if err := db.CheckFile(); !errors.Is(err, ErrReplaced) || !errors.Is(err, ErrUnavailable) {
		t.Fatalf("CheckFile after rename = %v", err)
	}
	for i := range 2 {
		_, err := db.Issue(m.cert(t, serialOf(i), fp("x"), fmt.Sprint("c", i+2)), AuditRecord{})
		if !errors.Is(err, ErrReplaced) {
			t.Fatalf("Issue %d after the file was replaced: %v", i, err)
		}
	}
	if h := db.Health(); h.Replaced == nil {
		t.Errorf("Health = %+v", h)
	}
}

// TestRestore restores a verified backup into a stopped appliance: the old
// file is moved aside, the restore is recorded and signed, the checkpoint
// rewritten; an older backup is refused unless the loss is accepted.
func TestRestore(t *testing.T) {
	t.Parallel()
	db, path, key := openKeyed(t, Options{})
	m := newCertMaker(t)
	if _, err := db.Issue(m.cert(t, "b1", fp("x"), "c1"), AuditRecord{}); err != nil {
		t.Fatal(err)
	}
	if _, err := db.SignHead(); err != nil {
		t.Fatal(err)
	}
	backup := filepath.Join(t.TempDir(), "backup.db")
	if err := db.BackupFile(backup); err != nil {
		t.Fatal(err)
	}
	ro := RestoreOptions{AuditKey: &key.PublicKey, Signer: key, Checkpoint: db.opts.Checkpoint, LockTimeout: 100 * time.Millisecond}
	if _, err := Restore(backup, path, ro); !errors.Is(err, ErrLocked) {
		t.Fatalf("Restore while the store is open: %v", err)
	}
	if _, err := Restore(path, path, ro); !errors.Is(err, ErrBackupTarget) {
		t.Fatalf("Restore of the live store onto itself: %v", err)
	}
	// Certificates issued after the backup: the backup is now behind.
	if _, err := db.Issue(m.cert(t, "b2", fp("x"), "c2"), AuditRecord{}); err != nil {
		t.Fatal(err)
	}
	if _, err := db.SignHead(); err != nil {
		t.Fatal(err)
	}
	db.Close()
	var ce *CheckpointError
	if _, err := Restore(backup, path, ro); !errors.As(err, &ce) || ce.Reason != "behind" {
		t.Fatalf("Restore of an older backup without AcceptLoss: %v", err)
	}
	ro.AcceptLoss, ro.Reason = true, "disk replaced"
	rep, err := Restore(backup, path, ro)
	if err != nil {
		t.Fatal(err)
	}
	if rep.Aside == "" || rep.Superseded == nil {
		t.Fatalf("report = %+v", rep)
	}
	if _, err := os.Stat(rep.Aside); err != nil {
		t.Fatalf("old store not kept aside: %v", err)
	}
	got, err := Open(path, withKey(Options{}, key, path))
	if err != nil {
		t.Fatalf("Open after restore: %v", err)
	}
	defer got.Close()
	if _, err := got.Certificate("b2"); !errors.Is(err, ErrNotFound) {
		t.Errorf("certificate issued after the backup present: %v", err)
	}
	recs, _ := got.AuditRecords(AuditFilter{})
	var restored *AuditRecord
	for i := range recs {
		if recs[i].Event == EventRestored {
			restored = &recs[i]
		}
	}
	if restored == nil || restored.Ack == nil || !strings.Contains(restored.Reason, "disk replaced") {
		t.Fatalf("no restore record acknowledging the old checkpoint: %+v", restored)
	}
	if cp, _ := ReadCheckpoint(db.opts.Checkpoint); cp.Counter != rep.Head.Counter {
		t.Errorf("checkpoint is head %d, want %d", cp.Counter, rep.Head.Counter)
	}
	if _, err := got.Verify(&key.PublicKey); err != nil {
		t.Errorf("restored store does not verify: %v", err)
	}
	// A damaged backup is refused whatever is accepted.
	bad := filepath.Join(t.TempDir(), "bad.db")
	os.WriteFile(bad, []byte("not a store"), 0o600)
	if _, err := Restore(bad, filepath.Join(t.TempDir(), "new.db"), ro); err == nil {
		t.Error("Restore of a non-store succeeded")
	}
}
