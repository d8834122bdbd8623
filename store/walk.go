package store

import (
	"bytes"
	"encoding/binary"
	"fmt"
	"os"
)

// walker checks the page structure of a bbolt file by reading it (never
// through bbolt's memory map), breadth first from the root bucket: every
// page reachable from the meta page the check started from must lie below
// the high-water mark, carry its own id, be a branch or leaf page whose
// elements lie inside the page, hold strictly increasing keys within the
// bounds its parent gives, and be reachable once. These are the properties
// bbolt asserts (with a panic or, through its memory map, a fault) when it
// reads a page; a file that passes can be read by bbolt without either.
//
// run takes a page budget so that Open can check the top of the tree at
// once and the rest later; the queue carries the key bounds, so the check
// resumes exactly where it stopped.
type walker struct {
	f        *os.File
	path     string
	pageSize int64
	meta     boltMeta
	seen     []uint64 // bitset over [0, hwm)
	freed    []uint64 // bitset: pages in the persisted freelist
	queue    []walkItem
	started  bool

	// Statistics of the pages checked so far.
	Pages, Branches, Leaves, Overflow, Buckets int
}

type walkItem struct {
	id     uint64
	lo, hi []byte // bounds of the keys: lo <= key < hi (nil: unbounded)
	bucket string // bucket path, for messages
}

func newWalker(f *os.File, path string, info fileInfo) *walker {
	words := (info.meta.hwm + 63) / 64
	return &walker{
		f: f, path: path, pageSize: int64(info.meta.pageSize), meta: info.meta,
		seen: make([]uint64, words), freed: make([]uint64, words),
	}
}

// done reports whether every reachable page has been checked.
func (w *walker) done() bool { return w.started && len(w.queue) == 0 }

func bit(set []uint64, id uint64) bool { return set[id/64]&(1<<(id%64)) != 0 }
func setBit(set []uint64, id uint64)   { set[id/64] |= 1 << (id % 64) }

func (w *walker) fail(item walkItem, format string, a ...any) error {
	where := fmt.Sprintf("page %d", item.id)
	if item.bucket != "" {
		where += " (bucket " + item.bucket + ")"
	}
	return fileErr(w.path, ErrDamaged, "%s: %s", where, fmt.Sprintf(format, a...))
}

// start marks the meta pages and checks the freelist page, then queues the root.
func (w *walker) start() error {
	w.started = true
	setBit(w.seen, 0)
	setBit(w.seen, 1)
	if fl := w.meta.freelist; fl != noFreelist {
		if err := w.checkFreelist(fl); err != nil {
			return err
		}
	}
	w.queue = append(w.queue, walkItem{id: w.meta.root})
	return nil
}

// run checks up to budget pages (budget <= 0: all). It returns the first
// damage found as a *FileError wrapping ErrDamaged.
func (w *walker) run(budget int) error {
	if !w.started {
		if err := w.start(); err != nil {
			return err
		}
	}
	for n := 0; len(w.queue) > 0 && (budget <= 0 || n < budget); n++ {
		item := w.queue[0]
		w.queue = w.queue[1:]
		if err := w.visit(item); err != nil {
			w.queue = nil
			return err
		}
	}
	if len(w.queue) == 0 {
		w.queue = nil
	}
	return nil
}

// readPage reads page id with its overflow pages after checking its header.
func (w *walker) readPage(item walkItem) ([]byte, error) {
	id := item.id
	if id < 2 || id >= w.meta.hwm {
		return nil, w.fail(item, "referenced page lies outside 2..%d (the high-water mark)", w.meta.hwm-1)
	}
	var hdr [pageHeaderSize]byte
	if _, err := w.f.ReadAt(hdr[:], int64(id)*w.pageSize); err != nil {
		return nil, w.fail(item, "read: %v", err)
	}
	le := binary.LittleEndian
	if got := le.Uint64(hdr[0:]); got != id {
		return nil, w.fail(item, "page says it is page %d", got)
	}
	over := uint64(le.Uint32(hdr[12:]))
	if over >= w.meta.hwm-id {
		return nil, w.fail(item, "%d overflow pages run past the high-water mark", over)
	}
	for i := id; i <= id+over; i++ {
		if bit(w.seen, i) {
			return nil, w.fail(item, "page %d is referenced twice", i)
		}
		if bit(w.freed, i) {
			return nil, w.fail(item, "page %d is reachable and also in the freelist", i)
		}
		setBit(w.seen, i)
	}
	buf := make([]byte, int64(over+1)*w.pageSize)
	if _, err := w.f.ReadAt(buf, int64(id)*w.pageSize); err != nil {
		return nil, w.fail(item, "read: %v", err)
	}
	w.Pages++
	w.Overflow += int(over)
	return buf, nil
}

func (w *walker) visit(item walkItem) error {
	buf, err := w.readPage(item)
	if err != nil {
		return err
	}
	flags := binary.LittleEndian.Uint16(buf[8:])
	switch flags {
	case branchPageFlag:
		w.Branches++
		return w.branch(item, buf)
	case leafPageFlag:
		w.Leaves++
		return w.leaf(item, buf, 0)
	}
	return w.fail(item, "page type %#x is neither branch nor leaf", flags)
}

// elements returns the count of a page and checks that its element array fits.
func elements(buf []byte) (int, bool) {
	n := int(binary.LittleEndian.Uint16(buf[10:]))
	return n, pageHeaderSize+n*elementSize <= len(buf)
}

// keyOrder checks k against the previous key and the bounds.
func keyOrder(k, prev []byte, first bool, lo, hi []byte) string {
	switch {
	case len(k) == 0:
		return "empty key"
	case !first && bytes.Compare(prev, k) >= 0:
		return "keys out of order"
	case first && lo != nil && bytes.Compare(k, lo) < 0:
		return "first key below its parent's"
	case hi != nil && bytes.Compare(k, hi) >= 0:
		return "key not below the next key of its parent"
	}
	return ""
}

func (w *walker) branch(item walkItem, buf []byte) error {
	n, ok := elements(buf)
	if !ok || n == 0 {
		return w.fail(item, "branch page with %d elements does not fit", n)
	}
	le := binary.LittleEndian
	keys := make([][]byte, n)
	children := make([]uint64, n)
	for i := range n {
		off := int64(pageHeaderSize + i*elementSize)
		pos, ksize := int64(le.Uint32(buf[off:])), int64(le.Uint32(buf[off+4:]))
		start := off + pos
		if start+ksize > int64(len(buf)) {
			return w.fail(item, "branch element %d points outside the page", i)
		}
		keys[i] = buf[start : start+ksize]
		children[i] = le.Uint64(buf[off+8:])
		var prev []byte
		if i > 0 {
			prev = keys[i-1]
		}
		if msg := keyOrder(keys[i], prev, i == 0, item.lo, item.hi); msg != "" {
			return w.fail(item, "branch element %d: %s", i, msg)
		}
	}
	for i := range n {
		hi := item.hi
		if i+1 < n {
			hi = keys[i+1]
		}
		w.queue = append(w.queue, walkItem{id: children[i], lo: bytes.Clone(keys[i]), hi: bytes.Clone(hi), bucket: item.bucket})
	}
	return nil
}

// maxInlineDepth bounds nested inline buckets (bbolt never nests them).
const maxInlineDepth = 4

func (w *walker) leaf(item walkItem, buf []byte, depth int) error {
	n, ok := elements(buf)
	if !ok {
		return w.fail(item, "leaf page with %d elements does not fit", n)
	}
	le := binary.LittleEndian
	var prev []byte
	for i := range n {
		off := int64(pageHeaderSize + i*elementSize)
		flags := le.Uint32(buf[off:])
		pos, ksize, vsize := int64(le.Uint32(buf[off+4:])), int64(le.Uint32(buf[off+8:])), int64(le.Uint32(buf[off+12:]))
		start := off + pos
		if start+ksize+vsize > int64(len(buf)) {
			return w.fail(item, "leaf element %d points outside the page", i)
		}
		k := buf[start : start+ksize]
		v := buf[start+ksize : start+ksize+vsize]
		if msg := keyOrder(k, prev, i == 0, item.lo, item.hi); msg != "" {
			return w.fail(item, "leaf element %d: %s", i, msg)
		}
		prev = k
		switch flags {
		case 0:
		case bucketLeafFlag:
			if err := w.subBucket(item, k, v, depth); err != nil {
				return err
			}
		default:
			return w.fail(item, "leaf element %d has flags %#x", i, flags)
		}
	}
	return nil
}

// subBucket checks a bucket entry: its header, then its inline page or
// queues its root page.
func (w *walker) subBucket(item walkItem, name, v []byte, depth int) error {
	path := string(name)
	if item.bucket != "" {
		path = item.bucket + "/" + path
	}
	if len(v) < 16 {
		return w.fail(item, "bucket %q has a %d-byte header", path, len(v))
	}
	w.Buckets++
	root := binary.LittleEndian.Uint64(v)
	if root != 0 {
		w.queue = append(w.queue, walkItem{id: root, bucket: path})
		return nil
	}
	inline := v[16:]
	if len(inline) < pageHeaderSize || depth >= maxInlineDepth {
		return w.fail(item, "inline bucket %q is malformed", path)
	}
	if f := binary.LittleEndian.Uint16(inline[8:]); f != leafPageFlag {
		return w.fail(item, "inline bucket %q has page type %#x", path, f)
	}
	return w.leaf(walkItem{id: item.id, bucket: path}, inline, depth+1)
}

// checkFreelist checks the persisted freelist page: its type, bounds and
// sorted page ids below the high-water mark, and records them.
func (w *walker) checkFreelist(id uint64) error {
	item := walkItem{id: id, bucket: "(freelist)"}
	buf, err := w.readPage(item)
	if err != nil {
		return err
	}
	le := binary.LittleEndian
	if f := le.Uint16(buf[8:]); f != freelistPageFlag {
		return w.fail(item, "freelist page has type %#x", f)
	}
	count, start := uint64(le.Uint16(buf[10:])), uint64(pageHeaderSize)
	if count == 0xFFFF {
		if len(buf) < pageHeaderSize+8 {
			return w.fail(item, "freelist count does not fit")
		}
		count, start = le.Uint64(buf[pageHeaderSize:]), pageHeaderSize+8
	}
	if count > (uint64(len(buf))-start)/8 {
		return w.fail(item, "freelist of %d ids does not fit", count)
	}
	var last uint64
	for i := uint64(0); i < count; i++ {
		pid := le.Uint64(buf[start+8*i:])
		if pid < 2 || pid >= w.meta.hwm || (i > 0 && pid <= last) {
			return w.fail(item, "freelist entry %d (page %d) is out of range or order", i, pid)
		}
		if bit(w.seen, pid) {
			return w.fail(item, "freelist names page %d, which is in use", pid)
		}
		setBit(w.freed, pid)
		last = pid
	}
	return nil
}
