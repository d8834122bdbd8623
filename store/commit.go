package store

import (
	"errors"
	"fmt"
	"sync"
	"sync/atomic"
	"time"

	bolt "go.etcd.io/bbolt"
)

// CommitStat describes one commit attempt of the store's group committer
// (Options.OnCommit).
type CommitStat struct {
	// Duration is how long the transaction took, its fsync included.
	Duration time.Duration
	// Writes is the number of write calls (Issue, Append, ...) it committed.
	Writes int
	// Err is the *WriteError of a failed commit, nil when it committed.
	Err error
}

// errSolo tells a submitter to re-run its function alone (as bbolt's Batch does).
var errSolo = errors.New("store: re-run alone")

// committer group-commits write functions: a single goroutine takes every
// function queued while the previous commit was running (up to maxBatch) and
// runs them in one durable bbolt transaction. Unlike bbolt's DB.Batch it
// never waits for a timer: a lone writer commits at once, and under load a
// batch is whatever arrived during the previous fsync, and the writes
// announced with DB.Expect that arrive within the gather window.
type committer struct {
	db       *bolt.DB
	maxBatch int
	// gatherWait bounds how long a commit waits for announced writes
	// (Options.CommitWait); 0: it never waits.
	gatherWait time.Duration
	// expected counts the writes announced (DB.Expect) and not withdrawn;
	// inside counts the calls inside do (queued, committing or re-run
	// alone). expected - inside writes are on their way.
	expected, inside atomic.Int64
	nudge            chan struct{} // capacity 1: a call was queued or a write withdrawn
	lastBatch        int           // writes of the previous commit (loop goroutine only)
	// before runs before each commit; its error fails the whole batch
	// without a commit (the store file no longer being the open one).
	before func() error
	// observe, if not nil, hears of every commit attempt (Options.OnCommit).
	observe func(CommitStat)

	mu     sync.Mutex
	queue  []call
	closed bool
	wake   chan struct{} // capacity 1
	done   chan struct{} // closed when loop returns
}

type call struct {
	fn  func(*bolt.Tx) error
	err chan error // capacity 1
}

func newCommitter(db *bolt.DB, maxBatch int, gatherWait time.Duration, before func() error, observe func(CommitStat)) *committer {
	c := &committer{db: db, maxBatch: maxBatch, gatherWait: gatherWait, before: before, observe: observe,
		wake: make(chan struct{}, 1), nudge: make(chan struct{}, 1), done: make(chan struct{})}
	go c.loop()
	return c
}

// do queues fn and waits for its transaction to commit.
func (c *committer) do(fn func(*bolt.Tx) error) error {
	ch := make(chan error, 1)
	c.inside.Add(1)
	defer c.inside.Add(-1)
	c.mu.Lock()
	if c.closed {
		c.mu.Unlock()
		return ErrClosed
	}
	c.queue = append(c.queue, call{fn: fn, err: ch})
	select {
	case c.wake <- struct{}{}:
	default: // the loop is already due to look at the queue
	}
	c.mu.Unlock()
	c.poke()
	err := <-ch
	if err == errSolo {
		if err = c.before(); err == nil {
			start := time.Now()
			err = update(c.db, fn)
			var we *WriteError
			if err == nil || errors.As(err, &we) {
				c.report(start, 1, err)
			}
		}
	}
	return err
}

// expect announces a write (DB.Expect) and returns its withdrawal, which
// only the first call carries out.
func (c *committer) expect() (withdraw func()) {
	if c.gatherWait <= 0 {
		return func() {}
	}
	c.expected.Add(1)
	var once atomic.Bool
	return func() {
		if once.CompareAndSwap(false, true) {
			c.expected.Add(-1)
			c.poke()
		}
	}
}

// poke tells a gathering commit to look again.
func (c *committer) poke() {
	select {
	case c.nudge <- struct{}{}:
	default:
	}
}

// gather holds the next commit back, for at most gatherWait, when other
// writes are likely to come, so that they share the transaction and its two
// fsyncs (as PostgreSQL's commit_delay with commit_siblings does):
//   - while writes announced with DB.Expect are on their way (announced and
//     not inside do);
//   - for the whole window when the previous commit held more than one
//     write (concurrent requests: a queue that empties at every commit
//     would pay two fsyncs per write).
//
// A lone writer commits at once. It returns early when the queue is full
// and when the store closes.
func (c *committer) gather() {
	coming := func() bool { return c.expected.Load() > c.inside.Load() }
	linger := c.lastBatch > 1
	if c.gatherWait <= 0 || (!linger && !coming()) {
		return
	}
	t := time.NewTimer(c.gatherWait)
	defer t.Stop()
	for linger || coming() {
		c.mu.Lock()
		stop := c.closed || len(c.queue) >= c.maxBatch
		c.mu.Unlock()
		if stop {
			return
		}
		select {
		case <-c.nudge:
		case <-t.C:
			return
		}
	}
}

// report tells the observer of a commit attempt that started at start.
func (c *committer) report(start time.Time, writes int, err error) {
	if c.observe != nil {
		c.observe(CommitStat{Duration: time.Since(start), Writes: writes, Err: err})
	}
}

// close stops accepting work, commits what is queued and stops the loop.
func (c *committer) close() {
	c.mu.Lock()
	if c.closed {
		c.mu.Unlock()
		<-c.done
		return
	}
	c.closed = true
	close(c.wake)
	c.mu.Unlock()
	c.poke() // a gathering commit stops waiting
	<-c.done
}

func (c *committer) loop() {
	defer close(c.done)
	for range c.wake {
		c.drain()
	}
	c.drain()
}

// drain commits batches until the queue is empty.
func (c *committer) drain() {
	for {
		c.gather()
		c.mu.Lock()
		n := min(len(c.queue), c.maxBatch)
		batch := make([]call, n)
		copy(batch, c.queue)
		c.queue = c.queue[n:]
		if len(c.queue) == 0 {
			c.queue = nil
		}
		c.mu.Unlock()
		c.lastBatch = n // 0 after a window in which nothing came: the next writer does not linger
		if n == 0 {
			return
		}
		c.run(batch)
	}
}

// run commits batch, taking out (and sending back to run alone) any function
// that fails, exactly like bbolt's Batch. A failed commit fails every call
// of the batch with the same *WriteError.
func (c *committer) run(batch []call) {
	if err := c.before(); err != nil {
		for _, cl := range batch {
			cl.err <- err
		}
		return
	}
	for len(batch) > 0 {
		failed := -1
		start := time.Now()
		err := update(c.db, func(tx *bolt.Tx) error {
			for i, cl := range batch {
				if err := safelyCall(cl.fn, tx); err != nil {
					failed = i
					return err
				}
			}
			return nil
		})
		if failed >= 0 {
			batch[failed].err <- errSolo
			batch = append(batch[:failed], batch[failed+1:]...)
			continue
		}
		c.report(start, len(batch), err)
		for _, cl := range batch {
			cl.err <- err
		}
		return
	}
}

func safelyCall(fn func(*bolt.Tx) error, tx *bolt.Tx) (err error) {
	defer func() {
		if p := recover(); p != nil {
			err = fmt.Errorf("store: write function panicked: %v", p)
		}
	}()
	return fn(tx)
}
