package store

import (
	"bytes"
	"crypto"
	"crypto/rand"
	"encoding/binary"
	"errors"
	"fmt"
	"os"
	"runtime/debug"
	"slices"
	"sync"
	"sync/atomic"
	"syscall"
	"time"

	bolt "go.etcd.io/bbolt"
	bolterrors "go.etcd.io/bbolt/errors"

	"github.com/estca/estca/store/internal/wire"
)

// Sentinel errors. Test for them with errors.Is.
var (
	// ErrNotFound means the certificate, request, revocation or record does not exist.
	ErrNotFound = errors.New("store: not found")
	// ErrLocked means another DB handle (this process or another) holds the file.
	ErrLocked = errors.New("store: database is locked by another process")
	// ErrDuplicateSerial means a certificate with that serial is already stored.
	ErrDuplicateSerial = errors.New("store: duplicate serial")
	// ErrDuplicateRequest means the requester already has a certificate for that CSR.
	ErrDuplicateRequest = errors.New("store: duplicate request")
	// ErrReadOnly means a write was attempted on a store opened with ReadOnly.
	ErrReadOnly = errors.New("store: read-only")
	// ErrInvalid means an argument is malformed (serial, digest, reason, ...).
	ErrInvalid = errors.New("store: invalid argument")
	// ErrAlreadyRevoked means the certificate has already been revoked.
	ErrAlreadyRevoked = errors.New("store: already revoked")
	// ErrCertificateKnown means RevokeUnknown was given the serial of a
	// certificate the store holds.
	ErrCertificateKnown = errors.New("store: certificate is in the store")
	// ErrVersion means the file was written by another store format version.
	ErrVersion = errors.New("store: unsupported store format")
	// ErrClosed means a write was submitted after Close.
	ErrClosed = errors.New("store: closed")
	// ErrNoSigner means a head was to be signed but Options.Signer is nil.
	ErrNoSigner = errors.New("store: no audit signer")

	// ErrNoStore means the store file does not exist (only Create makes one).
	ErrNoStore = errors.New("store: no store file")
	// ErrEmpty means the store file is empty.
	ErrEmpty = errors.New("store: empty store file")
	// ErrForeign means the file is not an estca store (not bbolt, or bbolt
	// without estca's layout).
	ErrForeign = errors.New("store: not an estca store")
	// ErrTruncated means the file is shorter than its own meta page says.
	ErrTruncated = errors.New("store: truncated store file")
	// ErrDamaged means the file's page structure is damaged.
	ErrDamaged = errors.New("store: damaged store file")

	// ErrUnavailable is matched by every error of a write the store could
	// not carry out for a reason outside the request: the disk is full or
	// failing (a *WriteError), the file was replaced (ErrReplaced) or found
	// damaged. Callers answer "try again later".
	ErrUnavailable = errors.New("store: not accepting writes")
	// ErrReplaced means the store's path no longer names the file this DB
	// has open; the DB accepts no more writes.
	ErrReplaced = errors.New("store: store file replaced or removed while open")
)

// Default option values.
const (
	DefaultLockTimeout   = 2 * time.Second
	DefaultMaxBatchDelay = time.Millisecond
	DefaultMaxBatchSize  = 256
	// DefaultCommitWait is Options.CommitWait's default.
	DefaultCommitWait = 2 * time.Millisecond
	// DefaultCheckPages is how many pages Open checks before it returns;
	// the rest is checked in the background (see Health).
	DefaultCheckPages = 1 << 16
	// DefaultWriteRetry is how long writes fail fast after a failed commit
	// before the next commit is tried.
	DefaultWriteRetry = 2 * time.Second
)

// Options configures Open and Create. The zero value opens a store without
// audit checks and without a signer.
type Options struct {
	// LockTimeout bounds how long Open waits for the file lock; 0 means 2s.
	// Opening a store another DB handle holds fails with ErrLocked, never hangs.
	LockTimeout time.Duration
	// MaxBatchDelay is the group-commit window of bbolt's DB.Batch, used
	// only with BoltBatch; 0 means 1ms. The default committer has no window.
	MaxBatchDelay time.Duration
	// MaxBatchSize caps the writes committed in one transaction; 0 means 256.
	MaxBatchSize int
	// CommitWait bounds how long the group committer holds a commit back
	// for writes announced with DB.Expect that are on their way; 0 means
	// DefaultCommitWait, a negative value never waits.
	CommitWait time.Duration
	// BoltBatch group-commits with bbolt's timer-based DB.Batch instead of
	// the default committer, which starts a commit as soon as the previous
	// one ends and measured 1.1-1.8x faster (see BenchmarkIssue).
	BoltBatch bool
	// ReadOnly opens the file with a shared lock; every write returns ErrReadOnly.
	ReadOnly bool
	// Now is the clock for records without a time; nil means time.Now.
	Now func() time.Time

	// AuditKey is the audit public key. When set, Open checks the audit
	// chain before it returns (see "Open" in the package documentation):
	// the newest signed head, the chain from the checkpoint to the newest
	// record, and the revocation set against the heads.
	AuditKey crypto.PublicKey
	// Signer is the audit key (in the HSM) that signs heads: SignHead, and
	// Revoke after every revocation. It must match AuditKey when both are set.
	Signer crypto.Signer
	// Checkpoint is the file that keeps the newest signed head outside the
	// store: Open (with AuditKey) refuses a store whose chain does not
	// extend it, and every signed head is written to it (atomically,
	// fsynced). "" means none.
	Checkpoint string
	// SkipCheckpoint makes Open not compare the store with the checkpoint
	// file (it is still written). For restores and the operator's explicit
	// acknowledgement of a missing or superseded checkpoint only.
	SkipCheckpoint bool
	// CheckPages bounds the page-structure check Open runs before it
	// returns; 0 means DefaultCheckPages for a writer and every page for a
	// ReadOnly store (a query reads with nothing else running), negative
	// means every page. The rest is checked in the background. When the file
	// has no persisted freelist (after a crash) and is opened for writing,
	// every page is checked first regardless, since bbolt reads them all at
	// open.
	CheckPages int
	// WriteRetry is how long writes fail fast (ErrUnavailable) after a
	// commit failed, before the next one is tried; 0 means 2s.
	WriteRetry time.Duration
	// OnCommit, if not nil, is called after every commit attempt of the
	// group committer (not with BoltBatch), from the committing goroutine:
	// it must return quickly and must not use the DB. The store does not
	// measure or export anything itself; a server feeds its metrics from it.
	OnCommit func(CommitStat)
}

func (o *Options) defaults() {
	if o.LockTimeout <= 0 {
		o.LockTimeout = DefaultLockTimeout
	}
	if o.MaxBatchDelay <= 0 {
		o.MaxBatchDelay = DefaultMaxBatchDelay
	}
	if o.MaxBatchSize <= 0 {
		o.MaxBatchSize = DefaultMaxBatchSize
	}
	if o.CommitWait == 0 {
		o.CommitWait = DefaultCommitWait
	}
	if o.Now == nil {
		o.Now = time.Now
	}
	if o.CheckPages == 0 {
		o.CheckPages = DefaultCheckPages
		if o.ReadOnly {
			o.CheckPages = -1 // a short-lived reader checks every page before it reads
		}
	}
	if o.WriteRetry <= 0 {
		o.WriteRetry = DefaultWriteRetry
	}
}

// DB is an open store. It is safe for concurrent use by multiple goroutines.
type DB struct {
	bolt     *bolt.DB
	file     *os.File // holds the lock; identifies the open file
	id       identity
	commit   *committer // nil when read-only or using bbolt's Batch
	now      func() time.Time
	readOnly bool
	opts     Options
	storeID  []byte

	signMu sync.Mutex // serialises head signing and checkpoint writes

	revMu sync.RWMutex
	revs  map[string]Revocation // the revocation set in force, loaded (and checked) at Open

	health health
	closed atomic.Bool

	bgStop chan struct{} // closes to stop the background page check
	bgDone chan struct{} // closed when it has stopped
}

// Create makes a new store at path, which must not exist, and returns it
// open for writing: the buckets, the format version and a random store id,
// then a "created" audit record; with Options.Signer it also signs the
// first head (and writes Options.Checkpoint). Only `estca init` (and a
// migration or restore) creates stores; everything else uses Open, which
// never creates one. On failure the new file is removed.
func Create(path string, opts Options) (_ *DB, err error) {
	opts.defaults()
	if opts.ReadOnly {
		return nil, fmt.Errorf("%w: Create with ReadOnly", ErrInvalid)
	}
	f, err := os.OpenFile(path, os.O_RDWR|os.O_CREATE|os.O_EXCL, 0o600)
	if err != nil {
		if errors.Is(err, os.ErrExist) {
			return nil, fmt.Errorf("store: create %s: the file exists; refusing to overwrite it", path)
		}
		return nil, fmt.Errorf("store: create %s: %w", path, err)
	}
	defer func() {
		if err != nil {
			os.Remove(path)
		}
	}()
	if err := syscall.Flock(int(f.Fd()), syscall.LOCK_EX|syscall.LOCK_NB); err != nil {
		f.Close()
		return nil, fmt.Errorf("store: lock %s: %w", path, err)
	}
	db, err := openBolt(path, f, opts)
	if err != nil {
		return nil, err
	}
	id := make([]byte, 16)
	if _, err := rand.Read(id); err != nil {
		db.Close()
		return nil, err
	}
	err = db.bolt.Update(func(tx *bolt.Tx) error {
		for _, name := range append(slices.Clone(wire.Buckets), wire.AddedBuckets...) {
			if _, err := tx.CreateBucket(name); err != nil {
				return fmt.Errorf("store: create bucket %s: %w", name, err)
			}
		}
		m := tx.Bucket(wire.BucketMeta)
		if err := m.Put(wire.MetaVersion, wire.U64(wire.Version)); err != nil {
			return err
		}
		if err := m.Put(wire.MetaRevocations, append(wire.U64(0), wire.ZeroAcc()...)); err != nil {
			return err
		}
		return m.Put(wire.MetaStoreID, id)
	})
	if err == nil {
		err = db.load()
	}
	if err == nil {
		_, err = db.appendOwn(AuditRecord{Event: EventCreated, Verdict: "created",
			Reason: fmt.Sprintf("store created (format %d, id %x)", wire.Version, id)})
	}
	if err == nil && db.opts.Signer != nil {
		_, err = db.SignHead()
	}
	if err != nil {
		db.Close()
		return nil, err
	}
	return db, nil
}

// Open opens the existing store at path. It never creates one: a missing,
// empty, foreign, truncated or damaged file is refused with a *FileError
// naming the damage, an older format with ErrVersion, and, when
// Options.AuditKey is set, an audit chain that fails the open check with a
// *VerifyError or *CheckpointError. The file is checked before bbolt maps
// it (see "Open" in the package documentation), so no file makes Open hang,
// panic or fault.
func Open(path string, opts Options) (*DB, error) {
	opts.defaults()
	f, err := openLocked(path, opts.ReadOnly, opts.LockTimeout)
	if err != nil {
		return nil, err
	}
	info, err := checkFile(f, path)
	if err != nil {
		f.Close()
		return nil, err
	}
	w := newWalker(f, path, info)
	budget := opts.CheckPages
	if !opts.ReadOnly && info.meta.freelist == noFreelist {
		budget = -1 // bbolt walks every page to rebuild its freelist
	}
	if err := w.run(budget); err != nil {
		f.Close()
		return nil, err
	}
	db, err := openBolt(path, f, opts)
	if err != nil {
		return nil, err
	}
	if err := db.load(); err != nil {
		db.Close()
		return nil, err
	}
	if err := db.addBuckets(); err != nil {
		db.Close()
		return nil, err
	}
	if !w.done() {
		if err := db.checkInBackground(w, info.meta.txid); err != nil {
			db.Close()
			return nil, err
		}
	} else {
		db.health.checked(w, nil)
	}
	if opts.AuditKey != nil {
		if err := db.openCheck(); err != nil {
			db.Close()
			return nil, err
		}
	}
	return db, nil
}

// openBolt hands the locked file to bbolt (as a duplicate descriptor, which
// shares the lock) and builds the DB around it.
func openBolt(path string, f *os.File, opts Options) (*DB, error) {
	dup := func(string, int, os.FileMode) (*os.File, error) { return dupFile(f, path) }
	bdb, err := bolt.Open(path, 0o600, &bolt.Options{
		Timeout:        opts.LockTimeout,
		ReadOnly:       opts.ReadOnly,
		FreelistType:   bolt.FreelistMapType,
		NoFreelistSync: true,
		OpenFile:       dup,
	})
	if err != nil {
		f.Close()
		if errors.Is(err, bolterrors.ErrTimeout) {
			return nil, fmt.Errorf("%w: %s", ErrLocked, path)
		}
		return nil, fmt.Errorf("store: open %s: %w", path, err)
	}
	bdb.MaxBatchDelay = opts.MaxBatchDelay
	bdb.MaxBatchSize = opts.MaxBatchSize
	db := &DB{bolt: bdb, file: f, id: identity{path: path, file: f}, now: opts.Now,
		readOnly: opts.ReadOnly, opts: opts, revs: map[string]Revocation{}}
	if opts.Signer != nil && opts.AuditKey != nil && !samePublic(opts.Signer.Public(), opts.AuditKey) {
		db.Close()
		return nil, fmt.Errorf("%w: the audit signer does not match the audit public key", ErrInvalid)
	}
	if !opts.ReadOnly && !opts.BoltBatch {
		db.commit = newCommitter(bdb, opts.MaxBatchSize, opts.CommitWait, func() error { return db.health.checkFile(db.id) }, opts.OnCommit)
	}
	return db, nil
}

// Expect announces a write (Issue, Append, ...) the caller will make soon,
// such as an enrollment whose decision and signature are under way: a
// commit that starts meanwhile waits for it, at most Options.CommitWait,
// so that concurrent enrollments share one transaction and its fsyncs.
// The caller calls withdraw once its write has returned, or when it will
// write nothing; later calls do nothing. An announcement never delays a
// commit by more than CommitWait. A read-only store, one using BoltBatch
// and a negative CommitWait ignore it.
func (db *DB) Expect() (withdraw func()) {
	if db.commit == nil {
		return func() {}
	}
	return db.commit.expect()
}

func samePublic(a, b crypto.PublicKey) bool {
	k, ok := a.(interface{ Equal(crypto.PublicKey) bool })
	return ok && k.Equal(b)
}

// load checks the layout (meta bucket, version, buckets, store id) and
// loads the revocation set.
func (db *DB) load() error {
	path := db.Path()
	return db.view(func(tx *bolt.Tx) error {
		m := tx.Bucket(wire.BucketMeta)
		if m == nil {
			if tx.Bucket([]byte("audit_heads")) != nil {
				return fmt.Errorf("%w: %s is in store format 1 (no meta bucket)", ErrVersion, path)
			}
			return fileErr(path, ErrForeign, "a bbolt database without estca's meta bucket")
		}
		v := m.Get(wire.MetaVersion)
		if len(v) != 8 {
			return fileErr(path, ErrForeign, "a bbolt database without an estca format version")
		}
		if n := binary.BigEndian.Uint64(v); n != wire.Version {
			if n == 1 || n == 2 {
				return fmt.Errorf("%w: %s is in store format %d; this estca reads format %d: convert it with `estca store migrate` (the original is kept)", ErrVersion, path, n, wire.Version)
			}
			return fmt.Errorf("%w: %s is in store format %d; this estca reads format %d", ErrVersion, path, n, wire.Version)
		}
		for _, name := range wire.Buckets {
			if tx.Bucket(name) == nil {
				return fileErr(path, ErrDamaged, "bucket %q is missing", name)
			}
		}
		db.storeID = bytes.Clone(m.Get(wire.MetaStoreID))
		if len(db.storeID) != 16 {
			return fileErr(path, ErrDamaged, "store id is %d bytes", len(db.storeID))
		}
		revs, err := loadRevocations(tx)
		if err != nil {
			return err
		}
		db.revs = revs
		return nil
	})
}

// addBuckets adds the wire.AddedBuckets a store opened for writing lacks
// (made by an estca before they existed); they start empty.
func (db *DB) addBuckets() error {
	if db.readOnly {
		return nil
	}
	var missing [][]byte
	if err := db.view(func(tx *bolt.Tx) error {
		for _, name := range wire.AddedBuckets {
			if tx.Bucket(name) == nil {
				missing = append(missing, name)
			}
		}
		return nil
	}); err != nil || len(missing) == 0 {
		return err
	}
	return db.batch(func(tx *bolt.Tx) error {
		for _, name := range missing {
			if _, err := addedBucket(tx, name); err != nil {
				return err
			}
		}
		return nil
	})
}

// Close stops the background check, commits what is queued, persists
// bbolt's freelist (so the next Open need not rebuild it by reading every
// page), releases the lock and closes the file.
func (db *DB) Close() error {
	if db.closed.Swap(true) {
		return nil
	}
	if db.bgStop != nil {
		close(db.bgStop)
		<-db.bgDone
		db.bgStop = nil
	}
	if db.commit != nil {
		db.commit.close()
	}
	if !db.readOnly && db.health.writable() {
		db.bolt.NoFreelistSync = false
		_ = db.bolt.Update(func(*bolt.Tx) error { return nil })
	}
	err := db.bolt.Close()
	db.file.Close()
	if err != nil {
		return fmt.Errorf("store: close: %w", err)
	}
	return nil
}

// Path returns the file the store was opened from.
func (db *DB) Path() string { return db.id.path }

// StoreID returns the 16 random bytes that name this store (hex in checkpoints).
func (db *DB) StoreID() []byte { return bytes.Clone(db.storeID) }

// batch runs fn in a group-committed, durable write transaction. fn may be
// run more than once (a batch is re-run without a failing call, and the
// failing call alone), so it must only write through tx and only set results
// that are overwritten on every run. Write failures come back as errors
// matching ErrUnavailable; after one, writes fail fast for
// Options.WriteRetry before the next commit is tried.
func (db *DB) batch(fn func(tx *bolt.Tx) error) error {
	if db.readOnly {
		return ErrReadOnly
	}
	if db.closed.Load() {
		return ErrClosed
	}
	var id *identity
	if db.commit == nil {
		id = &db.id // the committer checks once per commit instead
	}
	if err := db.health.gate(db.now(), id); err != nil {
		return err
	}
	var err error
	if db.commit != nil {
		err = db.commit.do(fn)
	} else {
		err = db.boltBatch(fn)
	}
	db.health.record(err, db.now(), db.opts.WriteRetry)
	return err
}

// boltBatch runs fn through bbolt's DB.Batch, telling fn's errors from
// commit failures.
func (db *DB) boltBatch(fn func(tx *bolt.Tx) error) (err error) {
	defer func() {
		if p := recover(); p != nil {
			err = &WriteError{Err: fmt.Errorf("bbolt panicked: %v", p), Panic: true}
		}
	}()
	err = db.bolt.Batch(func(tx *bolt.Tx) error {
		if err := safelyCall(fn, tx); err != nil {
			return fnError{err}
		}
		return nil
	})
	return classify(err)
}

// view runs fn in a read transaction. A page that makes bbolt panic or
// fault (the file was damaged while open) is reported as ErrDamaged, and
// the DB stops accepting writes.
func (db *DB) view(fn func(tx *bolt.Tx) error) (err error) {
	defer debug.SetPanicOnFault(debug.SetPanicOnFault(true))
	defer func() {
		if p := recover(); p != nil {
			err = fileErr(db.Path(), ErrDamaged, "reading the store failed: %v", p)
			db.health.damage(err)
		}
	}()
	return db.bolt.View(fn)
}
