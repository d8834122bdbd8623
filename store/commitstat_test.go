package store

import (
	"errors"
	"fmt"
	"runtime"
	"sync"
	"testing"
	"time"

	bolt "go.etcd.io/bbolt"
)

// TestOnCommit: the commit hook hears of every commit of the group
// committer, with the writes it committed, and of no rolled-back attempt:
// the writes it reports add up to the writes that succeeded, duplicates
// (refused inside the transaction and re-run alone) included.
func TestOnCommit(t *testing.T) {
	t.Parallel()
	var mu sync.Mutex
	var commits, writes int
	counting := false
	db, _ := openTest(t, Options{OnCommit: func(s CommitStat) {
		mu.Lock()
		defer mu.Unlock()
		if s.Duration <= 0 || s.Writes < 1 || s.Err != nil {
			t.Errorf("commit stat %+v", s)
		}
		if counting {
			commits++
			writes += s.Writes
		}
	}})
	mu.Lock()
	counting = true
	mu.Unlock()
	m := newCertMaker(t)
	const n = 30
	var wg sync.WaitGroup
	results := make([]error, 2*n)
	for i := range 2 * n {
		c := m.cert(t, serialOf(i/2), fp("x"), fmt.Sprint("csr", i)) // each serial twice
		wg.Add(1)
		go func() {
			defer wg.Done()
			_, results[i] = db.Issue(c, AuditRecord{})
		}()
	}
	wg.Wait()
	ok := 0
	for _, err := range results {
		if err == nil {
			ok++
		} else if !errors.Is(err, ErrDuplicateSerial) {
			t.Fatal(err)
		}
	}
	mu.Lock()
	defer mu.Unlock()
	if ok != n || writes != n || commits < 1 || commits > n {
		t.Fatalf("%d issued; the hook saw %d writes in %d commits", ok, writes, commits)
	}
}

// TestGroupCommitMergesWriters: 8 writers that arrive while a commit runs
// are committed together in the next transaction: one commit (one bbolt
// fsync pair) for the 8, not 8.
func TestGroupCommitMergesWriters(t *testing.T) {
	t.Parallel()
	db, commits := openRecording(t, Options{})
	release := make(chan struct{})
	blocked := make(chan struct{})
	done := make(chan error, 1)
	go func() {
		done <- db.batch(func(*bolt.Tx) error {
			select {
			case <-blocked:
			default:
				close(blocked)
			}
			<-release
			return nil
		})
	}()
	<-blocked
	m := newCertMaker(t)
	const writers = 8
	var wg sync.WaitGroup
	errs := make([]error, writers)
	for i := range writers {
		c := m.cert(t, serialOf(i), fp(fmt.Sprint("w", i)), fmt.Sprint("csr", i))
		wg.Add(1)
		go func() {
			defer wg.Done()
			_, errs[i] = db.Issue(c, AuditRecord{})
		}()
	}
	giveUp := time.Now().Add(time.Minute) // a hang guard, not a speed limit
	for queued := 0; queued < writers; {
		if time.Now().After(giveUp) {
			close(release)
			t.Fatalf("%d of %d writers queued", queued, writers)
		}
		db.commit.mu.Lock()
		queued = len(db.commit.queue)
		db.commit.mu.Unlock()
		runtime.Gosched()
	}
	close(release)
	wg.Wait()
	if err := <-done; err != nil {
		t.Fatal(err)
	}
	for _, err := range errs {
		if err != nil {
			t.Fatal(err)
		}
	}
	if stats := commits(); len(stats) != 2 || stats[0].Writes != 1 || stats[1].Writes != writers {
		t.Fatalf("commits %+v, want the blocking write alone, then the %d writers in one", stats, writers)
	}
}

// openRecording opens a test store whose commits after opening it are
// recorded: commits returns them so far.
func openRecording(t testing.TB, opts Options) (db *DB, commits func() []CommitStat) {
	var mu sync.Mutex
	var stats []CommitStat
	opts.OnCommit = func(s CommitStat) {
		mu.Lock()
		defer mu.Unlock()
		stats = append(stats, s)
	}
	db, _ = openTest(t, opts)
	mu.Lock()
	stats = nil
	mu.Unlock()
	return db, func() []CommitStat {
		mu.Lock()
		defer mu.Unlock()
		return append([]CommitStat(nil), stats...)
	}
}
