package store

import (
	"encoding/binary"
	"errors"
	"fmt"
	"time"

	bolt "go.etcd.io/bbolt"
	bolterrors "go.etcd.io/bbolt/errors"
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
	// ErrEmptyLog means the audit log has no record to sign.
	ErrEmptyLog = errors.New("store: audit log is empty")
	// ErrVersion means the file was written by an incompatible store version.
	ErrVersion = errors.New("store: unsupported database version")
	// ErrClosed means a write was submitted after Close.
	ErrClosed = errors.New("store: closed")
)

// Default option values.
const (
	DefaultLockTimeout   = 2 * time.Second
	DefaultMaxBatchDelay = time.Millisecond
	DefaultMaxBatchSize  = 256
)

// formatVersion is the on-disk layout version kept in the meta bucket.
const formatVersion = 1

// Bucket and meta key names.
var (
	bucketMeta     = []byte("meta")
	bucketCerts    = []byte("certs")
	bucketBySKI    = []byte("certs_by_ski")
	bucketByReq    = []byte("certs_by_requester")
	bucketRequests = []byte("requests")
	bucketRevoked  = []byte("revocations")
	bucketAudit    = []byte("audit")
	bucketHeads    = []byte("audit_heads")

	keyVersion   = []byte("version")
	keyChainHead = []byte("chain_head")

	allBuckets = [][]byte{bucketMeta, bucketCerts, bucketBySKI, bucketByReq,
		bucketRequests, bucketRevoked, bucketAudit, bucketHeads}
)

// Options configures Open. The zero value is usable.
type Options struct {
	// LockTimeout bounds how long Open waits for the file lock; 0 means 2s.
	// Opening a store another DB handle holds fails with ErrLocked, never hangs.
	LockTimeout time.Duration
	// MaxBatchDelay is the group-commit window of bbolt's DB.Batch, used
	// only with BoltBatch; 0 means 1ms. The default committer has no window.
	MaxBatchDelay time.Duration
	// MaxBatchSize caps the writes committed in one transaction; 0 means 256.
	MaxBatchSize int
	// BoltBatch group-commits with bbolt's timer-based DB.Batch instead of
	// the default committer, which starts a commit as soon as the previous
	// one ends and measured 1.1-1.8x faster (see BenchmarkIssue).
	BoltBatch bool
	// ReadOnly opens the file with a shared lock; every write returns ErrReadOnly.
	ReadOnly bool
	// Now is the clock for records without a time; nil means time.Now.
	Now func() time.Time
}

// DB is an open store. It is safe for concurrent use by multiple goroutines.
type DB struct {
	bolt     *bolt.DB
	commit   *committer // nil when read-only or using bbolt's Batch
	now      func() time.Time
	readOnly bool
}

// Open opens (creating if needed, unless ReadOnly) the store at path.
func Open(path string, opts Options) (*DB, error) {
	if opts.LockTimeout <= 0 {
		opts.LockTimeout = DefaultLockTimeout
	}
	if opts.MaxBatchDelay <= 0 {
		opts.MaxBatchDelay = DefaultMaxBatchDelay
	}
	if opts.MaxBatchSize <= 0 {
		opts.MaxBatchSize = DefaultMaxBatchSize
	}
	if opts.Now == nil {
		opts.Now = time.Now
	}
	bdb, err := bolt.Open(path, 0o600, &bolt.Options{
		Timeout:      opts.LockTimeout,
		ReadOnly:     opts.ReadOnly,
		FreelistType: bolt.FreelistMapType,
	})
	if err != nil {
		if errors.Is(err, bolterrors.ErrTimeout) {
			return nil, fmt.Errorf("%w: %s", ErrLocked, path)
		}
		return nil, fmt.Errorf("store: open %s: %w", path, err)
	}
	bdb.MaxBatchDelay = opts.MaxBatchDelay
	bdb.MaxBatchSize = opts.MaxBatchSize
	db := &DB{bolt: bdb, now: opts.Now, readOnly: opts.ReadOnly}
	if err := db.init(); err != nil {
		_ = bdb.Close()
		return nil, err
	}
	if !opts.ReadOnly && !opts.BoltBatch {
		db.commit = newCommitter(bdb, opts.MaxBatchSize)
	}
	return db, nil
}

// init creates the buckets and checks the layout version.
func (db *DB) init() error {
	check := func(tx *bolt.Tx) error {
		m := tx.Bucket(bucketMeta)
		if m == nil {
			return nil
		}
		if v := m.Get(keyVersion); v != nil && (len(v) != 8 || binary.BigEndian.Uint64(v) != formatVersion) {
			return ErrVersion
		}
		return nil
	}
	if db.readOnly {
		return db.bolt.View(check)
	}
	return db.bolt.Update(func(tx *bolt.Tx) error {
		for _, name := range allBuckets {
			if _, err := tx.CreateBucketIfNotExists(name); err != nil {
				return fmt.Errorf("store: create bucket %s: %w", name, err)
			}
		}
		if err := check(tx); err != nil {
			return err
		}
		m := tx.Bucket(bucketMeta)
		if m.Get(keyVersion) == nil {
			return m.Put(keyVersion, u64(formatVersion))
		}
		return nil
	})
}

// Close releases the file lock and closes the file. Pending batched writes
// complete before it returns.
func (db *DB) Close() error {
	if db.commit != nil {
		db.commit.close()
	}
	if err := db.bolt.Close(); err != nil {
		return fmt.Errorf("store: close: %w", err)
	}
	return nil
}

// Path returns the file the store was opened from.
func (db *DB) Path() string { return db.bolt.Path() }

// batch runs fn in a group-committed, durable write transaction. fn may be
// run more than once (a batch is re-run without a failing call, and the
// failing call alone), so it must only write through tx and only set results
// that are overwritten on every run.
func (db *DB) batch(fn func(tx *bolt.Tx) error) error {
	if db.readOnly {
		return ErrReadOnly
	}
	if db.commit != nil {
		return db.commit.do(fn)
	}
	err := db.bolt.Batch(fn)
	if errors.Is(err, bolterrors.ErrDatabaseNotOpen) {
		return ErrClosed
	}
	return err
}

// view runs fn in a read transaction.
func (db *DB) view(fn func(tx *bolt.Tx) error) error {
	return db.bolt.View(fn)
}

// bucket returns the named bucket or nil; a read-only store on a fresh file
// has no buckets.
func bucket(tx *bolt.Tx, name []byte) *bolt.Bucket { return tx.Bucket(name) }

// u64 encodes v as an 8-byte big-endian key.
func u64(v uint64) []byte {
	var b [8]byte
	binary.BigEndian.PutUint64(b[:], v)
	return b[:]
}

// lenPrefixed returns a 2-byte length, then part, then the rest: a composite key
// whose prefix scans cannot confuse a short part with a longer one.
func lenPrefixed(part []byte, rest ...[]byte) []byte {
	n := 2 + len(part)
	for _, r := range rest {
		n += len(r)
	}
	k := make([]byte, 0, n)
	k = binary.BigEndian.AppendUint16(k, uint16(len(part)))
	k = append(k, part...)
	for _, r := range rest {
		k = append(k, r...)
	}
	return k
}
