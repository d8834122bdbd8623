package main

import (
	"errors"
	"log/slog"
	"time"

	"github.com/estca/estca/store"
)

// Intervals of the store watch in `estca serve`.
const (
	// storeWatchInterval is how often the store's file identity and health
	// are looked at: two stat calls and a mutex, cheap.
	storeWatchInterval = time.Second
	// storeFailureReport is how often a continuing write outage is logged again.
	storeFailureReport = time.Minute
)

// storeWatch turns the store's state into log lines, each condition once:
// when writes start failing (disk full: every request is answered 5.03
// meanwhile, without a log line of its own), once a minute while they keep
// failing, once when they recover; once when the store file is replaced or
// found damaged (writes stay refused until a restart); once when the
// background page check ends; and, when configured, every new checkpoint
// as one line for a journal kept off the box.
type storeWatch struct {
	db             *store.DB
	log            *slog.Logger
	logCheckpoints bool
	retryAfter     time.Duration

	failing    bool
	reportedAt time.Time
	replaced   bool
	damaged    bool
	checked    bool
	head       uint64
}

// poll looks at the store once.
func (w *storeWatch) poll(now time.Time) {
	_ = w.db.CheckFile()
	h := w.db.Health()
	switch {
	case h.WriteErr != nil && !w.failing:
		w.failing, w.reportedAt = true, now
		w.log.Error("store writes failing: enrollments are answered 5.03 until they recover",
			"error", h.WriteErr, "since", h.Since, "max_age", w.retryAfter)
	case h.WriteErr != nil && now.Sub(w.reportedAt) >= storeFailureReport:
		w.reportedAt = now
		w.log.Warn("store writes still failing", "error", h.WriteErr, "since", h.Since, "failed_writes", h.Failures)
	case h.WriteErr == nil && w.failing:
		w.failing = false
		w.log.Info("store writes recovered", "after", now.Sub(h.Since).Round(time.Second))
	}
	if h.Replaced != nil && !w.replaced {
		w.replaced = true
		w.log.Error("store file replaced or removed while serving: no more enrollments (5.03) until estca serve is restarted on the store its path names",
			"path", w.db.Path(), "error", h.Replaced)
	}
	if h.Damaged != nil && !w.damaged {
		w.damaged = true
		w.log.Error("store damaged: no more writes; stop estca serve and restore a backup", "error", h.Damaged)
	}
	if h.CheckDone && !w.checked {
		w.checked = true
		w.log.Info("store page check complete", "pages", h.CheckedPages)
	}
	w.logHead()
}

// logHead logs the newest checkpoint when it changed.
func (w *storeWatch) logHead() {
	if !w.logCheckpoints {
		return
	}
	head, err := w.db.NewestHead()
	if err != nil {
		if !errors.Is(err, store.ErrNotFound) {
			w.log.Warn("reading the newest audit head", "error", err)
		}
		return
	}
	if head.Counter != w.head {
		w.head = head.Counter
		w.log.Info("audit checkpoint", "checkpoint", head.Checkpoint().Line())
	}
}
