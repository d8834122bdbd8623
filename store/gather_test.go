package store

import (
	"fmt"
	"testing"
	"time"
)

// TestExpectGathersAnnouncedWrites: a commit waits for the writes announced
// with Expect that are not queued yet, so that three announced writers that
// arrive one after the other share one commit; their withdrawals end the
// wait, not the (hour-long) window.
func TestExpectGathersAnnouncedWrites(t *testing.T) {
	t.Parallel()
	db, commits := openRecording(t, Options{CommitWait: time.Hour})
	m := newCertMaker(t)
	const n = 3
	withdraw := make([]func(), n)
	for i := range withdraw {
		withdraw[i] = db.Expect()
	}
	errs := make(chan error, n)
	for i := range n {
		c := m.cert(t, serialOf(100+i), fp("gather"), fmt.Sprint("csr-gather-", i))
		go func() {
			defer withdraw[i]()
			_, err := db.Issue(c, AuditRecord{})
			errs <- err
		}()
		time.Sleep(20 * time.Millisecond) // arrive one after the other, not at once
	}
	for range n {
		select {
		case err := <-errs:
			if err != nil {
				t.Fatal(err)
			}
		case <-time.After(time.Minute):
			t.Fatal("announced writes not committed: the commit waits for its window")
		}
	}
	if stats := commits(); len(stats) != 1 || stats[0].Writes != n {
		t.Fatalf("commits %+v: want the %d announced writes in one", stats, n)
	}
}

// TestExpectLoneWriterCommitsAtOnce: without announced writers and after
// single-write commits a write is committed at once, not after CommitWait;
// an announcement withdrawn without a write (a request that ends without
// writing) holds nothing back, and withdrawing twice counts once.
func TestExpectLoneWriterCommitsAtOnce(t *testing.T) {
	t.Parallel()
	db, _ := openTest(t, Options{CommitWait: time.Hour})
	m := newCertMaker(t)
	w := db.Expect()
	w()
	w()
	for i := range 3 {
		c := m.cert(t, serialOf(200+i), fp("lone"), fmt.Sprint("csr-lone-", i))
		done := make(chan error, 1)
		go func() { _, err := db.Issue(c, AuditRecord{}); done <- err }()
		select {
		case err := <-done:
			if err != nil {
				t.Fatal(err)
			}
		case <-time.After(time.Minute):
			t.Fatalf("write %d waited for the gather window without anybody to wait for", i)
		}
	}
	if e, in := db.commit.expected.Load(), db.commit.inside.Load(); e != 0 || in != 0 {
		t.Fatalf("expected %d, inside %d after the writes: want 0, 0", e, in)
	}
}

// TestExpectClosedStoreDoesNotWait: Close ends a commit's wait for
// announced writes that never come; the queued write is committed.
func TestExpectClosedStoreDoesNotWait(t *testing.T) {
	t.Parallel()
	db, _ := openTest(t, Options{CommitWait: time.Hour})
	m := newCertMaker(t)
	withdraw := db.Expect() // never written: the commit below waits for it
	defer withdraw()
	_ = db.Expect()
	c := m.cert(t, serialOf(300), fp("close"), "csr-close")
	done := make(chan error, 1)
	go func() { _, err := db.Issue(c, AuditRecord{}); done <- err }()
	time.Sleep(50 * time.Millisecond)
	closed := make(chan error, 1)
	go func() { closed <- db.Close() }()
	select {
	case err := <-done:
		if err != nil {
			t.Fatalf("queued write: %v", err)
		}
	case <-time.After(time.Minute):
		t.Fatal("Close did not end the wait for announced writes")
	}
	if err := <-closed; err != nil {
		t.Fatal(err)
	}
}
