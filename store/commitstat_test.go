package store

import (
	"errors"
	"fmt"
	"sync"
	"testing"
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
