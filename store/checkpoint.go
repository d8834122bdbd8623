package store

import (
	"bytes"
	"crypto"
	"encoding/base64"
	"encoding/hex"
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"time"
)

// Checkpoint is a signed head kept outside the store, so that a store cut
// back to an earlier state (records and the heads over them deleted) can be
// told from the real one: the store must contain head Counter with this
// Digest. Head is the full signed head when the checkpoint carries it (the
// file form); the one-line form carries only the reference.
type Checkpoint struct {
	Store   []byte
	Counter uint64
	Seq     uint64
	Digest  []byte
	Head    *Head
}

// Checkpoint returns h as a checkpoint.
func (h Head) Checkpoint() Checkpoint {
	hh := h
	return Checkpoint{Store: h.Store, Counter: h.Counter, Seq: h.Seq, Digest: h.Digest(), Head: &hh}
}

// checkpointTitle is the first line of the file form.
const checkpointTitle = "estca audit checkpoint"

// FormatCheckpoint returns the file form of h: a title line, then one
// "key value" line each for format, store (hex), head, seq, time (RFC
// 3339), hash, prev (hex), revocations (count and hex digest), signature
// (base64) and digest (hex, for people comparing checkpoints).
func FormatCheckpoint(h Head) []byte {
	var b bytes.Buffer
	fmt.Fprintf(&b, "%s\nformat 2\nstore %x\nhead %d\nseq %d\ntime %s\nhash %x\nprev %x\nrevocations %d %x\nsignature %s\ndigest %x\n",
		checkpointTitle, h.Store, h.Counter, h.Seq, h.Time.UTC().Format(time.RFC3339Nano), h.Hash, h.Prev,
		h.Revocations, h.RevocationDigest, base64.StdEncoding.EncodeToString(h.Signature), h.Digest())
	return b.Bytes()
}

// Line returns the one-line form, fit for a log line the journal keeps:
// "estca-checkpoint store=HEX head=N seq=N digest=HEX".
func (c Checkpoint) Line() string {
	return fmt.Sprintf("estca-checkpoint store=%x head=%d seq=%d digest=%x", c.Store, c.Counter, c.Seq, c.Digest)
}

// ErrCheckpointFormat means a checkpoint could not be parsed.
var ErrCheckpointFormat = errors.New("store: malformed checkpoint")

// ParseCheckpoint parses either form (FormatCheckpoint, or Line, also
// inside a whole log line as `estca serve` writes it). The file form's
// digest line must match the head it describes.
func ParseCheckpoint(b []byte) (Checkpoint, error) {
	text := strings.TrimSpace(string(b))
	if i := strings.Index(text, "estca-checkpoint "); i >= 0 && !strings.Contains(text, "\n") {
		line, _, _ := strings.Cut(text[i:], `"`) // the log line quotes it
		return parseLine(line)
	}
	lines := strings.Split(text, "\n")
	keys := []string{"format", "store", "head", "seq", "time", "hash", "prev", "revocations", "signature", "digest"}
	if len(lines) != len(keys)+1 || strings.TrimSpace(lines[0]) != checkpointTitle {
		return Checkpoint{}, fmt.Errorf("%w: want %q and %d lines", ErrCheckpointFormat, checkpointTitle, len(keys))
	}
	val := map[string]string{}
	for i, k := range keys {
		key, v, ok := strings.Cut(strings.TrimSpace(lines[i+1]), " ")
		if !ok || key != k {
			return Checkpoint{}, fmt.Errorf("%w: line %d: want %q", ErrCheckpointFormat, i+2, k)
		}
		val[k] = v
	}
	if val["format"] != "2" {
		return Checkpoint{}, fmt.Errorf("%w: format %q", ErrCheckpointFormat, val["format"])
	}
	var h Head
	var errs []error
	hexOf := func(k string) []byte {
		d, err := hex.DecodeString(val[k])
		if err != nil {
			errs = append(errs, fmt.Errorf("%s: %w", k, err))
		}
		return d
	}
	num := func(k, s string) uint64 {
		n, err := strconv.ParseUint(s, 10, 64)
		if err != nil {
			errs = append(errs, fmt.Errorf("%s: %w", k, err))
		}
		return n
	}
	h.Store, h.Hash, h.Prev = hexOf("store"), hexOf("hash"), hexOf("prev")
	h.Counter, h.Seq = num("head", val["head"]), num("seq", val["seq"])
	t, err := time.Parse(time.RFC3339Nano, val["time"])
	if err != nil {
		errs = append(errs, err)
	}
	h.Time = t.UTC()
	count, acc, _ := strings.Cut(val["revocations"], " ")
	h.Revocations = num("revocations", count)
	h.RevocationDigest, err = hex.DecodeString(acc)
	if err != nil {
		errs = append(errs, err)
	}
	if h.Signature, err = base64.StdEncoding.DecodeString(val["signature"]); err != nil {
		errs = append(errs, err)
	}
	digest := hexOf("digest")
	if err := errors.Join(errs...); err != nil {
		return Checkpoint{}, fmt.Errorf("%w: %w", ErrCheckpointFormat, err)
	}
	if !h.wellFormed() {
		return Checkpoint{}, fmt.Errorf("%w: field sizes", ErrCheckpointFormat)
	}
	c := h.Checkpoint()
	if !bytes.Equal(c.Digest, digest) {
		return Checkpoint{}, fmt.Errorf("%w: the digest line does not match the head", ErrCheckpointFormat)
	}
	return c, nil
}

func parseLine(s string) (Checkpoint, error) {
	var c Checkpoint
	fields := strings.Fields(s)
	if len(fields) != 5 {
		return c, fmt.Errorf("%w: want store=, head=, seq=, digest=", ErrCheckpointFormat)
	}
	var err1, err2, err3, err4 error
	for i, k := range []string{"store", "head", "seq", "digest"} {
		key, v, ok := strings.Cut(fields[i+1], "=")
		if !ok || key != k {
			return c, fmt.Errorf("%w: field %d: want %s=", ErrCheckpointFormat, i+1, k)
		}
		switch k {
		case "store":
			c.Store, err1 = hex.DecodeString(v)
		case "head":
			c.Counter, err2 = strconv.ParseUint(v, 10, 64)
		case "seq":
			c.Seq, err3 = strconv.ParseUint(v, 10, 64)
		case "digest":
			c.Digest, err4 = hex.DecodeString(v)
		}
	}
	if err := errors.Join(err1, err2, err3, err4); err != nil || len(c.Store) != 16 || len(c.Digest) != 32 || c.Counter == 0 {
		return Checkpoint{}, fmt.Errorf("%w: %v", ErrCheckpointFormat, err)
	}
	return c, nil
}

// ReadCheckpoint reads a checkpoint file (either form). A missing file is
// an error matching os.ErrNotExist.
func ReadCheckpoint(path string) (Checkpoint, error) {
	b, err := os.ReadFile(path)
	if err != nil {
		return Checkpoint{}, err
	}
	c, err := ParseCheckpoint(b)
	if err != nil {
		return Checkpoint{}, fmt.Errorf("%s: %w", path, err)
	}
	return c, nil
}

// Verify checks a checkpoint's own signature when it carries the
// full head.
func (c Checkpoint) Verify(pub crypto.PublicKey) error {
	if c.Head == nil {
		return nil
	}
	if err := c.Head.Verify(pub); err != nil {
		return fmt.Errorf("store: checkpoint head %d: %w", c.Counter, err)
	}
	return nil
}

// WriteCheckpoint writes the file form of h to path atomically: a
// temporary file in the same directory (mode 0600), fsync, rename, fsync
// of the directory.
func WriteCheckpoint(path string, h Head) error {
	if err := writeFileAtomic(path, FormatCheckpoint(h)); err != nil {
		return fmt.Errorf("store: write checkpoint: %w", err)
	}
	return nil
}

// writeFileAtomic replaces path with data, durably.
func writeFileAtomic(path string, data []byte) (err error) {
	dir := filepath.Dir(path)
	f, err := os.CreateTemp(dir, "."+filepath.Base(path)+".tmp-*")
	if err != nil {
		return err
	}
	tmp := f.Name()
	defer func() {
		if err != nil {
			f.Close()
			os.Remove(tmp)
		}
	}()
	if err = f.Chmod(0o600); err != nil {
		return err
	}
	if _, err = f.Write(data); err != nil {
		return err
	}
	if err = f.Sync(); err != nil {
		return err
	}
	if err = f.Close(); err != nil {
		return err
	}
	if err = os.Rename(tmp, path); err != nil {
		return err
	}
	return syncDir(dir)
}

func syncDir(dir string) error {
	d, err := os.Open(dir)
	if err != nil {
		return err
	}
	defer d.Close()
	if err := d.Sync(); err != nil {
		return fmt.Errorf("sync directory %s: %w", dir, err)
	}
	return nil
}

// ErrCheckpoint is matched by every *CheckpointError.
var ErrCheckpoint = errors.New("store: checkpoint")

// CheckpointError says how a store fails to extend a checkpoint.
type CheckpointError struct {
	// Reason is "missing" (no checkpoint file), "unreadable", "other
	// store" (the checkpoint names another store), "bad signature",
	// "behind" (the store has no head with the checkpoint's counter: it was
	// cut back, or is an older copy) or "forked" (its head with that
	// counter differs).
	Reason string
	// Path is the checkpoint file, if it came from one.
	Path string
	// Checkpoint is the reference checked against.
	Checkpoint Checkpoint
	// Newest is the store's newest signed head.
	Newest HeadRef
	// Err is the cause, for "missing" and "unreadable".
	Err error
}

// Error implements error.
func (e *CheckpointError) Error() string {
	from := ""
	if e.Path != "" {
		from = " (" + e.Path + ")"
	}
	switch e.Reason {
	case "behind":
		return fmt.Sprintf("store: the audit chain is behind its checkpoint%s: the checkpoint is head %d (record %d), the store's newest signed head is %d (record %d): records were removed, or this is an older copy",
			from, e.Checkpoint.Counter, e.Checkpoint.Seq, e.Newest.Counter, e.Newest.Seq)
	case "forked":
		return fmt.Sprintf("store: the audit chain is forked from its checkpoint%s: the checkpoint is head %d (record %d), the store's head %d differs (its newest is head %d, record %d)",
			from, e.Checkpoint.Counter, e.Checkpoint.Seq, e.Checkpoint.Counter, e.Newest.Counter, e.Newest.Seq)
	case "other store":
		return fmt.Sprintf("store: the checkpoint%s is of store %x, not of this one", from, e.Checkpoint.Store)
	}
	if e.Err != nil {
		return fmt.Sprintf("store: checkpoint%s %s: %v", from, e.Reason, e.Err)
	}
	return fmt.Sprintf("store: checkpoint%s: %s", from, e.Reason)
}

// Is matches ErrCheckpoint.
func (e *CheckpointError) Is(target error) bool { return target == ErrCheckpoint }

// Unwrap returns the cause.
func (e *CheckpointError) Unwrap() error { return e.Err }
