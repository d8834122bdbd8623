package store

import (
	"crypto"
	"errors"
	"fmt"
	"io"
	"os"
	"path/filepath"
	"time"

	bolt "go.etcd.io/bbolt"
)

// ErrBackupTarget means a backup or restore was refused because its path
// is, or resolves to, a file the live store needs.
var ErrBackupTarget = errors.New("store: refusing a path that is the live store")

// Backup writes a consistent copy of the whole database to w from a read
// transaction, while writers continue. It returns the bytes written.
func (db *DB) Backup(w io.Writer) (int64, error) {
	var n int64
	err := db.view(func(tx *bolt.Tx) error {
		var err error
		n, err = tx.WriteTo(w)
		return err
	})
	if err != nil {
		return n, fmt.Errorf("store: backup: %w", err)
	}
	return n, nil
}

// BackupFile writes a consistent copy of the database to path atomically: a
// temporary file in the same directory, fsync, rename, fsync of the directory.
// The file has mode 0600. An existing file at path is replaced, unless it is
// (or resolves to) the store itself or its checkpoint (ErrBackupTarget).
func (db *DB) BackupFile(path string) (err error) {
	if err := CheckBackupTarget(path, db.Path(), db.opts.Checkpoint); err != nil {
		return err
	}
	dir := filepath.Dir(path)
	f, err := os.CreateTemp(dir, "."+filepath.Base(path)+".tmp-*")
	if err != nil {
		return fmt.Errorf("store: backup: %w", err)
	}
	tmp := f.Name()
	defer func() {
		if err != nil {
			_ = f.Close()
			_ = os.Remove(tmp)
		}
	}()
	if err = f.Chmod(0o600); err != nil {
		return fmt.Errorf("store: backup: %w", err)
	}
	if _, err = db.Backup(f); err != nil {
		return err
	}
	if err = f.Sync(); err != nil {
		return fmt.Errorf("store: backup: %w", err)
	}
	if err = f.Close(); err != nil {
		return fmt.Errorf("store: backup: %w", err)
	}
	if err = os.Rename(tmp, path); err != nil {
		return fmt.Errorf("store: backup: %w", err)
	}
	if err = syncDir(dir); err != nil {
		return fmt.Errorf("store: backup: %w", err)
	}
	return nil
}

// resolve returns the absolute, symlink-free form of p as far as it
// exists: the longest existing prefix resolved, the rest appended.
func resolve(p string) (string, error) {
	abs, err := filepath.Abs(p)
	if err != nil {
		return "", err
	}
	rest := ""
	for cur := abs; ; {
		if r, err := filepath.EvalSymlinks(cur); err == nil {
			return filepath.Join(r, rest), nil
		}
		parent := filepath.Dir(cur)
		if parent == cur {
			return abs, nil
		}
		rest = filepath.Join(filepath.Base(cur), rest)
		cur = parent
	}
}

// CheckBackupTarget refuses a path a backup would be written to (or a
// restore read from) when it is, or resolves to, one of the protected
// files (the live store, its checkpoint): the same path, the same path
// through symbolic links or "..", the same file under another name (a hard
// link: same device and inode), or a directory. Empty protected entries
// are ignored. The error matches ErrBackupTarget.
func CheckBackupTarget(path string, protected ...string) error {
	fi, statErr := os.Stat(path)
	if statErr == nil && fi.IsDir() {
		return fmt.Errorf("%w: %s is a directory", ErrBackupTarget, path)
	}
	target, err := resolve(path)
	if err != nil {
		return fmt.Errorf("store: %s: %w", path, err)
	}
	for _, p := range protected {
		if p == "" {
			continue
		}
		live, err := resolve(p)
		if err != nil {
			return fmt.Errorf("store: %s: %w", p, err)
		}
		if target == live {
			return fmt.Errorf("%w: %s is %s", ErrBackupTarget, path, p)
		}
		if pfi, err := os.Stat(p); err == nil && statErr == nil && os.SameFile(fi, pfi) {
			return fmt.Errorf("%w: %s is the same file as %s (a hard link)", ErrBackupTarget, path, p)
		}
	}
	return nil
}

// RestoreOptions configures Restore.
type RestoreOptions struct {
	// AuditKey verifies the backup; Signer (the audit key in the HSM) signs
	// the head over the restore record. Both are required.
	AuditKey crypto.PublicKey
	Signer   crypto.Signer
	// Checkpoint is the appliance's checkpoint file: the reference the
	// backup is checked against (unless Reference is set), rewritten with
	// the new head after the restore.
	Checkpoint string
	// Reference is the checkpoint to check the backup against; nil means
	// the Checkpoint file, when it exists.
	Reference *Checkpoint
	// AcceptLoss restores a backup that does not extend the reference
	// (behind it, forked from it, of another store, or with no reference
	// at all): the records and certificates after the backup are lost. The
	// restore record then acknowledges the superseded checkpoint.
	AcceptLoss bool
	// Reason is the operator's note, kept in the restore record.
	Reason string
	// LockTimeout bounds the wait for the live store's lock (default 2s):
	// a running server holds it, and Restore refuses.
	LockTimeout time.Duration
	// Now is the clock; nil means time.Now.
	Now func() time.Time
}

// RestoreReport says what Restore did.
type RestoreReport struct {
	// Verified is the backup's verification.
	Verified VerifyReport
	// Aside is where the replaced store file was moved ("" if there was none).
	Aside string
	// Superseded is the checkpoint the backup did not extend (AcceptLoss), or nil.
	Superseded *CheckpointError
	// Head is the head signed over the restore record.
	Head Head
}

// Restore replaces the store at live with a verified copy of backup, for a
// stopped appliance. It takes the live store's lock (ErrLocked when a
// server runs), verifies the backup completely (Verify with AuditKey)
// and against the reference checkpoint, copies it next to the live file,
// appends a restore record (acknowledging a superseded checkpoint when the
// backup is older) and signs a head over it, then moves the old file aside
// (renamed to LIVE.replaced-TIME, never deleted), renames the copy into
// place, and writes the new checkpoint. A crash at any step leaves either
// the old store in place or the new one, and both open.
func Restore(backup, live string, o RestoreOptions) (RestoreReport, error) {
	var rep RestoreReport
	if o.AuditKey == nil || o.Signer == nil {
		return rep, fmt.Errorf("%w: restore needs the audit key and signer", ErrInvalid)
	}
	if o.LockTimeout <= 0 {
		o.LockTimeout = DefaultLockTimeout
	}
	if o.Now == nil {
		o.Now = time.Now
	}
	if err := CheckBackupTarget(backup, live, o.Checkpoint); err != nil {
		return rep, err
	}
	if lf, err := openLocked(live, false, o.LockTimeout); err == nil {
		defer lf.Close() // held until the new file is in place
	} else if !errors.Is(err, ErrNoStore) {
		return rep, err
	}
	ref := o.Reference
	if ref == nil && o.Checkpoint != "" {
		if k, err := ReadCheckpoint(o.Checkpoint); err == nil {
			ref = &k
		} else if !errors.Is(err, os.ErrNotExist) {
			return rep, &CheckpointError{Reason: "unreadable", Path: o.Checkpoint, Err: err}
		}
	}
	// Verify the backup.
	b, err := Open(backup, Options{ReadOnly: true, CheckPages: -1, LockTimeout: o.LockTimeout})
	if err != nil {
		return rep, fmt.Errorf("store: backup %s: %w", backup, err)
	}
	var refs []Checkpoint
	if ref != nil {
		refs = append(refs, *ref)
	}
	rep.Verified, err = b.Verify(o.AuditKey, refs...)
	b.Close()
	var ce *CheckpointError
	switch {
	case errors.As(err, &ce) && ce.Reason != "bad signature" && o.AcceptLoss:
		rep.Superseded = ce
	case err != nil:
		return rep, fmt.Errorf("store: backup %s does not verify: %w", backup, err)
	case ref == nil && !o.AcceptLoss:
		return rep, &CheckpointError{Reason: "missing", Path: o.Checkpoint, Newest: rep.Verified.Newest,
			Err: errors.New("without a checkpoint the backup cannot be shown current; give one, or accept the loss")}
	}
	// Copy it next to the live file and record the restore in the copy.
	tmp, err := copyFile(backup, filepath.Dir(live), "."+filepath.Base(live)+".restore-*")
	if err != nil {
		return rep, fmt.Errorf("store: restore: %w", err)
	}
	defer os.Remove(tmp) // a no-op once renamed
	db, err := Open(tmp, Options{AuditKey: o.AuditKey, Signer: o.Signer, SkipCheckpoint: true, Now: o.Now})
	if err != nil {
		return rep, fmt.Errorf("store: restore: %w", err)
	}
	rec := AuditRecord{Event: EventRestored, Verdict: "restored",
		Reason: fmt.Sprintf("restored from backup %s (newest head %d, record %d)", backup, rep.Verified.Newest.Counter, rep.Verified.Newest.Seq)}
	if rep.Superseded != nil {
		k := rep.Superseded.Checkpoint
		rec.Ack = &HeadRef{Counter: k.Counter, Seq: k.Seq, Digest: k.Digest}
		rec.Reason += fmt.Sprintf("; operator accepted the loss of what followed it: checkpoint head %d (record %d) is superseded (%s)", k.Counter, k.Seq, rep.Superseded.Reason)
	}
	if ref == nil {
		rec.Reason += "; operator accepted it without a checkpoint to compare with"
	}
	if o.Reason != "" {
		rec.Reason += "; " + o.Reason
	}
	if _, err = db.appendOwn(rec); err == nil {
		rep.Head, err = db.SignHead()
	}
	if cerr := db.Close(); err == nil {
		err = cerr
	}
	if err != nil {
		return rep, fmt.Errorf("store: restore: %w", err)
	}
	// Swap the files.
	if _, err := os.Lstat(live); err == nil {
		rep.Aside = fmt.Sprintf("%s.replaced-%s", live, o.Now().UTC().Format("20060102T150405Z"))
		if err := os.Rename(live, rep.Aside); err != nil {
			return rep, fmt.Errorf("store: restore: move the old store aside: %w", err)
		}
	}
	if err := os.Rename(tmp, live); err != nil {
		return rep, fmt.Errorf("store: restore: %w", err)
	}
	if err := syncDir(filepath.Dir(live)); err != nil {
		return rep, fmt.Errorf("store: restore: %w", err)
	}
	if o.Checkpoint != "" {
		if err := WriteCheckpoint(o.Checkpoint, rep.Head); err != nil {
			return rep, err
		}
	}
	return rep, nil
}

// copyFile copies src into a new temporary file in dir (mode 0600,
// fsynced) and returns its name.
func copyFile(src, dir, pattern string) (name string, err error) {
	in, err := os.Open(src)
	if err != nil {
		return "", err
	}
	defer in.Close()
	out, err := os.CreateTemp(dir, pattern)
	if err != nil {
		return "", err
	}
	defer func() {
		if cerr := out.Close(); err == nil {
			err = cerr
		}
		if err != nil {
			os.Remove(out.Name())
		}
	}()
	if err = out.Chmod(0o600); err != nil {
		return "", err
	}
	if _, err = io.Copy(out, in); err != nil {
		return "", err
	}
	return out.Name(), out.Sync()
}

// AcknowledgeCheckpoint records that the operator accepts the store as it
// is although it does not extend old (its checkpoint is missing, behind or
// forked; old is nil when there is none), with reason, and signs a head
// over the record, which rewrites the checkpoint file. Open the store with
// SkipCheckpoint (and, first, verify it) to call this. Open accepts a
// checkpoint the newest acknowledgement names as superseded.
func (db *DB) AcknowledgeCheckpoint(old *Checkpoint, reason string) (Head, error) {
	if db.opts.Signer == nil {
		return Head{}, ErrNoSigner
	}
	rec := AuditRecord{Event: EventCheckpoint, Verdict: "acknowledged", Reason: "operator re-established the checkpoint"}
	if old != nil {
		rec.Ack = &HeadRef{Counter: old.Counter, Seq: old.Seq, Digest: old.Digest}
		rec.Reason += fmt.Sprintf(", superseding checkpoint head %d (record %d)", old.Counter, old.Seq)
	} else {
		rec.Reason += " (no previous checkpoint)"
	}
	if reason != "" {
		rec.Reason += ": " + reason
	}
	if _, err := db.appendOwn(rec); err != nil {
		return Head{}, err
	}
	return db.SignHead()
}
