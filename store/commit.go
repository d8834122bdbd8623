package store

import (
	"errors"
	"fmt"
	"sync"
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
// batch is whatever arrived during the previous fsync.
type committer struct {
	db       *bolt.DB
	maxBatch int
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

func newCommitter(db *bolt.DB, maxBatch int, before func() error, observe func(CommitStat)) *committer {
	c := &committer{db: db, maxBatch: maxBatch, before: before, observe: observe, wake: make(chan struct{}, 1), done: make(chan struct{})}
	go c.loop()
	return c
}

// do queues fn and waits for its transaction to commit.
func (c *committer) do(fn func(*bolt.Tx) error) error {
	ch := make(chan error, 1)
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
		c.mu.Lock()
		n := min(len(c.queue), c.maxBatch)
		batch := make([]call, n)
		copy(batch, c.queue)
		c.queue = c.queue[n:]
		if len(c.queue) == 0 {
			c.queue = nil
		}
		c.mu.Unlock()
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
