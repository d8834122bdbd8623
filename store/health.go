package store

import (
	"errors"
	"fmt"
	"sync"
	"time"

	bolt "go.etcd.io/bbolt"
	bolterrors "go.etcd.io/bbolt/errors"
)

// WriteError is a write the store could not commit for a reason outside
// the request: the disk is full (ENOSPC), over quota or size limit
// (EFBIG), failing (EIO, a failed fsync), or bbolt failed. It matches
// ErrUnavailable and its cause with errors.Is.
type WriteError struct {
	// Err is the cause, e.g. a *fs.PathError wrapping syscall.ENOSPC.
	Err error
	// FailFast is set when the commit was not tried because an earlier
	// one failed less than Options.WriteRetry ago.
	FailFast bool
	// Panic is set when bbolt panicked; the DB then accepts no more writes.
	Panic bool
}

// Error implements error.
func (e *WriteError) Error() string {
	if e.FailFast {
		return "store: write refused while writes are failing: " + e.Err.Error()
	}
	return "store: write failed: " + e.Err.Error()
}

// Unwrap returns ErrUnavailable and the cause.
func (e *WriteError) Unwrap() []error { return []error{ErrUnavailable, e.Err} }

// fnError marks an error returned by a write function (a refusal such as
// ErrDuplicateSerial), as opposed to a failed commit.
type fnError struct{ err error }

func (e fnError) Error() string { return e.err.Error() }

// classify turns what bbolt's Update or Batch returned into the caller's
// error: a write function's own error as is, anything else as a *WriteError.
func classify(err error) error {
	var fe fnError
	switch {
	case err == nil:
		return nil
	case errors.As(err, &fe):
		return fe.err
	case errors.Is(err, bolterrors.ErrDatabaseNotOpen):
		return ErrClosed
	}
	return &WriteError{Err: err}
}

// update runs fn in one bbolt write transaction, with classify's errors;
// a bbolt panic (a damaged page met while writing) becomes a *WriteError.
func update(db *bolt.DB, fn func(*bolt.Tx) error) (err error) {
	defer func() {
		if p := recover(); p != nil {
			err = &WriteError{Err: fmt.Errorf("bbolt panicked: %v", p), Panic: true}
		}
	}()
	return classify(db.Update(func(tx *bolt.Tx) error {
		if err := safelyCall(fn, tx); err != nil {
			return fnError{err}
		}
		return nil
	}))
}

// Health is the state of a store's writes and of its background check.
type Health struct {
	// WriteErr is the newest write failure while writes are failing; nil
	// once a commit succeeded again.
	WriteErr error
	// Since is when writes started failing; Failures how many writes
	// failed or were refused since then.
	Since    time.Time
	Failures uint64
	// Replaced is set (for good) when the store's path no longer named the
	// open file; it matches ErrReplaced.
	Replaced error
	// Damaged is set (for good) when the page check or a read found damage;
	// it matches ErrDamaged.
	Damaged error
	// CheckDone is set when every page has been checked; CheckedPages is
	// how many pages were.
	CheckDone    bool
	CheckedPages int
}

// health tracks write failures (with a fail-fast window), and the sticky
// conditions under which the DB refuses writes.
type health struct {
	mu       sync.Mutex
	writeErr error
	since    time.Time
	failures uint64
	retryAt  time.Time
	replaced error
	damaged  error
	done     bool
	pages    int
}

// gate refuses a write at once when the file was replaced or damaged, or
// while a failed commit's retry window lasts. With id it also checks the
// file identity (two stat calls); the committer does that once per commit
// instead (checkFile).
func (h *health) gate(now time.Time, id *identity) error {
	if id != nil {
		h.checkFile(*id)
	}
	h.mu.Lock()
	defer h.mu.Unlock()
	switch {
	case h.replaced != nil:
		return h.replaced
	case h.damaged != nil:
		return fmt.Errorf("%w: %w", ErrUnavailable, h.damaged)
	case h.writeErr != nil && now.Before(h.retryAt):
		h.failures++
		return &WriteError{Err: h.writeErr.(*WriteError).Err, FailFast: true}
	}
	return nil
}

// record notes the outcome of a write.
func (h *health) record(err error, now time.Time, retry time.Duration) {
	var we *WriteError
	if err != nil && !errors.As(err, &we) {
		return // a refusal, or ErrClosed: says nothing about the disk
	}
	h.mu.Lock()
	defer h.mu.Unlock()
	if we == nil {
		h.writeErr, h.failures = nil, 0
		return
	}
	if h.writeErr == nil {
		h.since = now
	}
	h.writeErr = &WriteError{Err: we.Err}
	h.failures++
	h.retryAt = now.Add(retry)
	if we.Panic && h.damaged == nil {
		h.damaged = fmt.Errorf("%w: %w", ErrDamaged, we.Err)
	}
}

func (h *health) damage(err error) {
	h.mu.Lock()
	defer h.mu.Unlock()
	if h.damaged == nil {
		h.damaged = err
	}
}

func (h *health) checked(w *walker, err error) {
	h.mu.Lock()
	defer h.mu.Unlock()
	h.done = err == nil
	if w != nil {
		h.pages = w.Pages
	}
	if err != nil && h.damaged == nil {
		h.damaged = err
	}
}

// writable reports whether Close may still write (persist the freelist).
func (h *health) writable() bool {
	h.mu.Lock()
	defer h.mu.Unlock()
	return h.replaced == nil && h.damaged == nil && h.writeErr == nil
}

// Health returns the current write and check state. It is cheap; a server
// polls it to log a failure once when it starts and once when it ends.
func (db *DB) Health() Health {
	db.health.mu.Lock()
	defer db.health.mu.Unlock()
	h := &db.health
	return Health{WriteErr: h.writeErr, Since: h.since, Failures: h.failures,
		Replaced: h.replaced, Damaged: h.damaged, CheckDone: h.done, CheckedPages: h.pages}
}

// CheckFile checks that the store's path still names the file this DB has
// open (stat against fstat). Once it does not, every write fails with
// ErrReplaced, for good: restart on the file the path names. Writes run
// this check themselves; a server calls it periodically to notice while idle.
func (db *DB) CheckFile() error { return db.health.checkFile(db.id) }

// checkFile records, for good, that id's path no longer names its file, and
// returns that error (nil while it still does).
func (h *health) checkFile(id identity) error {
	h.mu.Lock()
	done := h.replaced
	h.mu.Unlock()
	if done != nil {
		return done
	}
	err := id.check()
	if err == nil {
		return nil
	}
	h.mu.Lock()
	defer h.mu.Unlock()
	if h.replaced == nil {
		h.replaced = fmt.Errorf("%w: %w: %w", ErrUnavailable, ErrReplaced, err)
	}
	return h.replaced
}

// checkInBackground continues the page check w in a goroutine, inside a
// read transaction that keeps the pages of the checked snapshot (txid)
// from being reused. Damage found stops writes (Health.Damaged).
func (db *DB) checkInBackground(w *walker, txid uint64) error {
	tx, err := db.bolt.Begin(false)
	if err != nil {
		return fmt.Errorf("store: begin background check: %w", err)
	}
	if uint64(tx.ID()) != txid {
		tx.Rollback()
		return fileErr(db.Path(), ErrDamaged, "bbolt opened transaction %d, the checked meta page is %d", tx.ID(), txid)
	}
	db.bgStop, db.bgDone = make(chan struct{}), make(chan struct{})
	go func() {
		defer close(db.bgDone)
		defer tx.Rollback()
		for !w.done() {
			select {
			case <-db.bgStop:
				return
			default:
			}
			if err := w.run(bgStep); err != nil {
				db.health.checked(w, err)
				return
			}
		}
		db.health.checked(w, nil)
	}()
	return nil
}

// bgStep is how many pages the background check reads between looks at bgStop.
const bgStep = 512
