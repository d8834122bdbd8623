package store

import (
	"errors"
	"fmt"

	bolt "go.etcd.io/bbolt"
)

// CheckReport describes the pages a full check read.
type CheckReport struct {
	// Pages is the number of pages reachable from the buckets (Branches,
	// Leaves and Overflow of them), Buckets the number of buckets.
	Pages, Branches, Leaves, Overflow, Buckets int
	// HighWater is the number of pages in use or free; FileSize the file's size.
	HighWater uint64
	FileSize  int64
	// Bolt is set when bbolt's own tx.Check also ran (the store was opened
	// read-only, so no writer could run meanwhile).
	Bolt bool
}

// Check reads every page of the store in a read transaction and checks the
// page structure (see walker): the full form of the check Open starts with.
// It runs beside writers. A store opened read-only is then also checked by
// bbolt's tx.Check (reachable, freed and leaked pages). Damage is returned
// as a *FileError wrapping ErrDamaged.
func (db *DB) Check() (CheckReport, error) {
	var rep CheckReport
	tx, err := db.bolt.Begin(false)
	if err != nil {
		return rep, fmt.Errorf("store: check: %w", err)
	}
	defer tx.Rollback()
	st, err := db.file.Stat()
	if err != nil {
		return rep, fmt.Errorf("store: check: %w", err)
	}
	ps := int64(db.bolt.Info().PageSize)
	hwm := uint64(tx.Size() / ps)
	rep.HighWater, rep.FileSize = hwm, st.Size()
	if rep.FileSize < tx.Size() {
		return rep, fileErr(db.Path(), ErrTruncated, "the file has %d bytes, the open transaction uses %d", rep.FileSize, tx.Size())
	}
	w := newWalker(db.file, db.Path(), fileInfo{meta: boltMeta{pageSize: uint32(ps), hwm: hwm, freelist: noFreelist}})
	w.started = true
	setBit(w.seen, 0)
	setBit(w.seen, 1)
	if root, ok := db.rootOf(uint64(tx.ID())); ok {
		// The root bucket's page is known: the walk finds the buckets.
		w.queue = append(w.queue, walkItem{id: root})
	} else {
		err = tx.ForEach(func(name []byte, b *bolt.Bucket) error {
			w.Buckets++
			if root := uint64(b.Root()); root != 0 {
				w.queue = append(w.queue, walkItem{id: root, bucket: string(name)})
			}
			return nil
		})
	}
	if err == nil {
		err = db.checkPages(w)
	}
	rep.Pages, rep.Branches, rep.Leaves, rep.Overflow, rep.Buckets = w.Pages, w.Branches, w.Leaves, w.Overflow, w.Buckets
	if err != nil || !db.readOnly {
		return rep, err
	}
	rep.Bolt = true
	for err := range tx.Check() {
		return rep, fileErr(db.Path(), ErrDamaged, "bbolt check: %v", err)
	}
	return rep, nil
}

// checkPages runs the walk, turning a fault in reading into damage.
func (db *DB) checkPages(w *walker) (err error) {
	defer func() {
		if p := recover(); p != nil {
			err = fileErr(db.Path(), ErrDamaged, "check: %v", p)
		}
	}()
	err = w.run(-1)
	var fe *FileError
	if err != nil && !errors.As(err, &fe) {
		return fmt.Errorf("store: check: %w", err)
	}
	return err
}

// rootOf returns the root bucket page of transaction txid when a meta page
// of the file still describes it.
func (db *DB) rootOf(txid uint64) (uint64, bool) {
	for _, off := range []int64{0, int64(db.bolt.Info().PageSize)} {
		if m, err := readMeta(db.file, off); err == nil && m.txid == txid {
			return m.root, true
		}
	}
	return 0, false
}
