package store

import (
	"bytes"
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"fmt"
	"os"
	"path/filepath"
	"sync"
	"sync/atomic"
	"testing"
	"time"
)

func TestBackupWhileWriting(t *testing.T) {
	t.Parallel()
	key, _ := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	db, _ := openTest(t, Options{})
	m := newCertMaker(t)
	der := m.der(t, "1")
	if _, err := db.Append(AuditRecord{Event: EventStart}); err != nil {
		t.Fatal(err)
	}
	if _, err := db.SignHead(key); err != nil {
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
					if _, err := db.SignHead(key); err != nil {
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
		if rep.Records != n+1 || rep.LastSeq < prev {
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
	if _, err := b.Verify(nil); err != nil {
		t.Error(err)
	}
	if fi, _ := os.Stat(p); fi.Mode().Perm() != 0o600 {
		t.Errorf("mode %v", fi.Mode().Perm())
	}
}
