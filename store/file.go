package store

import (
	"encoding/binary"
	"errors"
	"fmt"
	"hash/fnv"
	"io"
	"os"
	"syscall"
	"time"

	"golang.org/x/sys/unix"
)

// FileError says why a file is not an openable store: missing, empty, not a
// store, truncated or damaged. It matches its sentinel (ErrNoStore,
// ErrEmpty, ErrForeign, ErrTruncated, ErrDamaged) with errors.Is.
type FileError struct {
	// Path is the file.
	Path string
	// Err is the sentinel of the kind of damage.
	Err error
	// Detail names the damage, e.g. "the newest meta page (txid 81) needs
	// 1048576 bytes up to page 256, the file has 524288".
	Detail string
}

// Error implements error.
func (e *FileError) Error() string {
	msg := e.Err.Error() + ": " + e.Path
	if e.Detail != "" {
		msg += ": " + e.Detail
	}
	return msg
}

// Unwrap returns the sentinel.
func (e *FileError) Unwrap() error { return e.Err }

func fileErr(path string, kind error, format string, a ...any) *FileError {
	return &FileError{Path: path, Err: kind, Detail: fmt.Sprintf(format, a...)}
}

// bbolt's on-disk constants (go.etcd.io/bbolt/internal/common; file format
// version 2). They are checked here, before bbolt maps the file, because
// bbolt trusts them: a meta page that points beyond the end of the file
// makes a mapped read fault (SIGBUS), and a garbage page makes it panic or
// loop.
const (
	boltMagic        = 0xED0CDAED
	boltVersion      = 2
	pageHeaderSize   = 16
	metaSize         = 64 // magic .. checksum
	metaChecksumOff  = 56
	elementSize      = 16 // branch and leaf page elements
	branchPageFlag   = 0x01
	leafPageFlag     = 0x02
	metaPageFlag     = 0x04
	freelistPageFlag = 0x10
	bucketLeafFlag   = 0x01
	noFreelist       = ^uint64(0)
	minPageSize      = 1024
	maxPageSize      = 1 << 16
)

// boltMeta is a decoded bbolt meta page.
type boltMeta struct {
	pageSize uint32
	root     uint64 // root bucket's page
	freelist uint64 // freelist page, or noFreelist
	hwm      uint64 // high-water mark: pages [0, hwm) are in use or free
	txid     uint64
}

// fileInfo is what the file checks learnt about a store file.
type fileInfo struct {
	size int64
	meta boltMeta // the meta page bbolt will use
	slot int      // 0 or 1: which meta page that is
}

// lockTimeoutStep is how often a contended lock is retried.
const lockTimeoutStep = 10 * time.Millisecond

// openLocked opens path (never creating it) and takes bbolt's lock on it:
// exclusive for a writer, shared for a reader, waiting at most timeout.
// bbolt is later handed a duplicate of this descriptor, which shares the
// open file description and so the lock.
func openLocked(path string, readOnly bool, timeout time.Duration) (*os.File, error) {
	flag := os.O_RDWR
	how := syscall.LOCK_EX
	if readOnly {
		flag = os.O_RDONLY
		how = syscall.LOCK_SH
	}
	f, err := os.OpenFile(path, flag, 0)
	if err != nil {
		if errors.Is(err, os.ErrNotExist) {
			return nil, fileErr(path, ErrNoStore, "no such file (only `estca init` creates a store)")
		}
		return nil, fmt.Errorf("store: open %s: %w", path, err)
	}
	if fi, err := f.Stat(); err == nil && !fi.Mode().IsRegular() {
		f.Close()
		return nil, fileErr(path, ErrForeign, "not a regular file (%s)", fi.Mode().Type())
	}
	deadline := time.Now().Add(timeout)
	for {
		err := syscall.Flock(int(f.Fd()), how|syscall.LOCK_NB)
		if err == nil {
			return f, nil
		}
		if !errors.Is(err, syscall.EWOULDBLOCK) && !errors.Is(err, syscall.EINTR) {
			f.Close()
			return nil, fmt.Errorf("store: lock %s: %w", path, err)
		}
		if time.Now().After(deadline) {
			f.Close()
			return nil, fmt.Errorf("%w: %s", ErrLocked, path)
		}
		time.Sleep(lockTimeoutStep)
	}
}

// checkFile validates the file's bbolt meta pages the way bbolt will use
// them, before bbolt maps the file: the newest valid meta page must be
// consistent and describe pages that exist in the file.
func checkFile(f *os.File, path string) (fileInfo, error) {
	st, err := f.Stat()
	if err != nil {
		return fileInfo{}, fmt.Errorf("store: stat %s: %w", path, err)
	}
	info := fileInfo{size: st.Size()}
	if info.size == 0 {
		return info, fileErr(path, ErrEmpty, "0 bytes (only `estca init` creates a store; restore a backup with `estca restore`)")
	}
	if info.size < 2*minPageSize {
		return info, fileErr(path, ErrForeign, "%d bytes, too short for a bbolt file", info.size)
	}
	// Meta page 0 sits at offset 0; its page size tells where page 1 is.
	// When page 0 is bad, bbolt searches for page 1 at every power of two.
	m0, err0 := readMeta(f, 0)
	var metas [2]*boltMeta
	var errs [2]error
	metas[0], errs[0] = m0, err0
	switch {
	case m0 != nil:
		metas[1], errs[1] = readMeta(f, int64(m0.pageSize))
	default:
		for ps := int64(minPageSize); ps <= maxPageSize && ps < info.size; ps <<= 1 {
			if m, err := readMeta(f, ps); m != nil {
				metas[1], errs[1] = m, err
				break
			} else if errs[1] == nil {
				errs[1] = err
			}
		}
	}
	if metas[0] == nil && metas[1] == nil {
		if errors.Is(errs[0], errNotBolt) && (errs[1] == nil || errors.Is(errs[1], errNotBolt)) {
			return info, fileErr(path, ErrForeign, "not a bbolt database (no bbolt magic in its meta pages)")
		}
		return info, fileErr(path, ErrDamaged, "both bbolt meta pages are invalid (page 0: %v; page 1: %v)", errs[0], errs[1])
	}
	// bbolt uses the valid meta page with the higher transaction id.
	info.slot = 0
	if metas[0] == nil || (metas[1] != nil && metas[1].txid > metas[0].txid) {
		info.slot = 1
	}
	m := *metas[info.slot]
	if metas[0] != nil && metas[1] != nil && metas[0].pageSize != metas[1].pageSize {
		return info, fileErr(path, ErrDamaged, "the meta pages disagree on the page size (%d, %d)", metas[0].pageSize, metas[1].pageSize)
	}
	info.meta = m
	ps := int64(m.pageSize)
	if info.size%ps != 0 {
		// bbolt grows files in whole pages; a partial last page is a cut.
		return info, fileErr(path, ErrTruncated, "%d bytes is not a whole number of %d-byte pages: the file was cut", info.size, ps)
	}
	if m.hwm < 4 || m.hwm > uint64(info.size/ps) {
		need := uint64(m.hwm) * uint64(ps)
		return info, fileErr(path, ErrTruncated, "the newest meta page (page %d, txid %d) needs %d bytes (pages 0..%d), the file has %d (%d pages): it was truncated",
			info.slot, m.txid, need, m.hwm-1, info.size, info.size/ps)
	}
	if m.root < 2 || m.root >= m.hwm {
		return info, fileErr(path, ErrDamaged, "root page %d outside 2..%d", m.root, m.hwm-1)
	}
	if m.freelist != noFreelist && (m.freelist < 2 || m.freelist >= m.hwm) {
		return info, fileErr(path, ErrDamaged, "freelist page %d outside 2..%d", m.freelist, m.hwm-1)
	}
	return info, nil
}

// errNotBolt marks a meta page without bbolt's magic number.
var errNotBolt = errors.New("no bbolt magic")

// readMeta reads and validates the meta page at off: page header flags,
// magic, version, checksum and page size.
func readMeta(f *os.File, off int64) (*boltMeta, error) {
	buf := make([]byte, pageHeaderSize+metaSize)
	if _, err := f.ReadAt(buf, off); err != nil {
		if errors.Is(err, io.EOF) {
			return nil, errors.New("beyond the end of the file")
		}
		return nil, err
	}
	m := buf[pageHeaderSize:]
	le := binary.LittleEndian
	if le.Uint32(m[0:]) != boltMagic {
		return nil, errNotBolt
	}
	if v := le.Uint32(m[4:]); v != boltVersion {
		return nil, fmt.Errorf("bbolt format version %d", v)
	}
	h := fnv.New64a()
	h.Write(m[:metaChecksumOff])
	if le.Uint64(m[metaChecksumOff:]) != h.Sum64() {
		return nil, errors.New("meta page checksum mismatch")
	}
	if flags := le.Uint16(buf[8:]); flags&metaPageFlag == 0 {
		return nil, fmt.Errorf("page flags %#x on a meta page", flags)
	}
	ps := le.Uint32(m[8:])
	if ps < minPageSize || ps > maxPageSize || ps&(ps-1) != 0 {
		return nil, fmt.Errorf("page size %d", ps)
	}
	return &boltMeta{
		pageSize: ps,
		root:     le.Uint64(m[16:]),
		freelist: le.Uint64(m[32:]),
		hwm:      le.Uint64(m[40:]),
		txid:     le.Uint64(m[48:]),
	}, nil
}

// identity records which file a DB has open, to notice when its path no
// longer names that file (renamed over, deleted, replaced by a restore).
type identity struct {
	path string
	file *os.File
}

// check returns an error naming how the path changed, or nil.
func (id identity) check() error {
	open, err := id.file.Stat()
	if err != nil {
		return fmt.Errorf("stat of the open store file: %w", err)
	}
	cur, err := os.Stat(id.path)
	switch {
	case errors.Is(err, os.ErrNotExist):
		return fmt.Errorf("%s no longer exists", id.path)
	case err != nil:
		return fmt.Errorf("stat %s: %w", id.path, err)
	case !os.SameFile(open, cur):
		return fmt.Errorf("%s now names another file than the one this process has open", id.path)
	}
	if s, ok := open.Sys().(*syscall.Stat_t); ok && s.Nlink == 0 {
		return fmt.Errorf("the open store file was unlinked")
	}
	return nil
}

// dupFile duplicates f's descriptor as a new *os.File named name: it shares
// f's open file description, so its flock is the same lock. The duplicate
// is close-on-exec from the start (F_DUPFD_CLOEXEC), as every descriptor
// Go opens is: a child process started meanwhile must not inherit the lock.
func dupFile(f *os.File, name string) (*os.File, error) {
	fd, err := unix.FcntlInt(f.Fd(), unix.F_DUPFD_CLOEXEC, 0)
	if err != nil {
		return nil, err
	}
	return os.NewFile(uintptr(fd), name), nil
}
