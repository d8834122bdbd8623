package store

import (
	"bytes"
	"encoding/binary"
	"fmt"
	"os"
	"path/filepath"
	"slices"

	bolt "go.etcd.io/bbolt"

	"github.com/estca/estca/store/internal/wire"
)

// formatOf is the format version a bbolt file's meta bucket states (0 when
// it states none: format 1, or not a store).
func formatOf(db *bolt.DB) uint64 {
	var n uint64
	_ = db.View(func(tx *bolt.Tx) error {
		if m := tx.Bucket(wire.BucketMeta); m != nil {
			if v := m.Get(wire.MetaVersion); len(v) == 8 {
				n = binary.BigEndian.Uint64(v)
			}
		}
		return nil
	})
	return n
}

// copyChunk is how many keys one transaction of migrateV2's copy writes.
const copyChunk = 20000

// migrateV2 converts the format 2 store old (at path, locked and its pages
// checked by Migrate) into format 3: it copies every bucket but
// wire.DroppedBuckets, key by key in key order into a new file next to it
// (pages filled to 100 %, so the copy is also compacted), sets the format
// version, opens the copy with the audit check and verifies its whole
// chain with AuditKey (the records, heads, certificates and revocations
// are the original's, byte for byte: the old store verifies, or nothing is
// changed), appends a migration record and signs a head. The store id and
// the head chain continue, so checkpoints of the format 2 store stay
// valid. The original is kept as PATH.v2.
func migrateV2(path string, old *bolt.DB, o MigrateOptions) (MigrateReport, error) {
	rep := MigrateReport{From: 2}
	tmp := filepath.Join(filepath.Dir(path), "."+filepath.Base(path)+".migrate")
	os.Remove(tmp)
	defer os.Remove(tmp) // a no-op once renamed
	if err := copyV2(old, tmp); err != nil {
		return rep, fmt.Errorf("store: migrate: %w", err)
	}
	db, err := Open(tmp, Options{AuditKey: o.AuditKey, Signer: o.Signer, Now: o.Now, SkipCheckpoint: true, CheckPages: -1})
	if err != nil {
		return rep, fmt.Errorf("store: %s does not verify as a format 2 store; not migrating it: %w", path, err)
	}
	vr, err := db.Verify(o.AuditKey)
	if err != nil {
		db.Close()
		return rep, fmt.Errorf("store: %s does not verify as a format 2 store; not migrating it: %w", path, err)
	}
	rep.Records, rep.Heads, rep.Certificates, rep.Revocations = int(vr.Records), vr.Heads, vr.Certificates, vr.Revocations
	rep.V1Seq, rep.V1Unsigned = vr.LastSeq-vr.Unsigned, int(vr.Unsigned)
	err = db.view(func(tx *bolt.Tx) error {
		rep.Requests = tx.Bucket(wire.BucketRequests).Stats().KeyN
		_, hash, err := record(tx, rep.V1Seq)
		rep.V1Hash = bytes.Clone(hash)
		return err
	})
	if err == nil {
		_, err = db.appendOwn(AuditRecord{Event: EventMigrated, Verdict: "migrated", Reason: fmt.Sprintf(
			"migrated from store format 2 (%s, kept as %s.v2) to format 3, without the certificate indexes by SKI and by requester: %d records verified with the audit key up to the newest signed head (%d heads) over record %d with hash %x; %d records after it unsigned; %d certificates, %d revocations, %d requests",
			path, filepath.Base(path), rep.Records, rep.Heads, rep.V1Seq, rep.V1Hash, rep.V1Unsigned,
			rep.Certificates, rep.Revocations, rep.Requests)})
	}
	if err == nil {
		rep.Head, err = db.SignHead()
	}
	if cerr := db.Close(); err == nil {
		err = cerr
	}
	if err != nil {
		return rep, fmt.Errorf("store: migrate: %w", err)
	}
	rep.Kept = path + ".v2"
	return rep, install(path, tmp, rep.Kept, rep.Head, o.Checkpoint)
}

// copyV2 writes the format 3 copy of the format 2 store old to the new file
// tmp (see migrateV2), fsynced.
func copyV2(old *bolt.DB, tmp string) error {
	dst, err := bolt.Open(tmp, 0o600, &bolt.Options{FreelistType: bolt.FreelistMapType})
	if err != nil {
		return err
	}
	err = old.View(func(src *bolt.Tx) error {
		var names [][]byte
		err := src.ForEach(func(name []byte, _ *bolt.Bucket) error {
			if !slices.ContainsFunc(wire.DroppedBuckets, func(d []byte) bool { return bytes.Equal(d, name) }) {
				names = append(names, bytes.Clone(name))
			}
			return nil
		})
		if err != nil {
			return err
		}
		for _, name := range names {
			if err := copyBucket(src.Bucket(name), dst, name); err != nil {
				return fmt.Errorf("bucket %s: %w", name, err)
			}
		}
		return dst.Update(func(tx *bolt.Tx) error {
			m := tx.Bucket(wire.BucketMeta)
			if m == nil {
				return fmt.Errorf("%w: no meta bucket", ErrForeign)
			}
			return m.Put(wire.MetaVersion, wire.U64(wire.Version))
		})
	})
	if cerr := dst.Close(); err == nil {
		err = cerr
	}
	return err
}

// copyBucket copies the flat bucket b into a new bucket name of dst, in
// chunks of copyChunk keys per transaction.
func copyBucket(b *bolt.Bucket, dst *bolt.DB, name []byte) error {
	if err := dst.Update(func(tx *bolt.Tx) error {
		nb, err := tx.CreateBucket(name)
		if err == nil {
			err = nb.SetSequence(b.Sequence())
		}
		return err
	}); err != nil {
		return err
	}
	c := b.Cursor()
	k, v := c.First()
	for k != nil {
		err := dst.Update(func(tx *bolt.Tx) error {
			nb := tx.Bucket(name)
			nb.FillPercent = 1 // keys arrive in order
			for n := 0; k != nil && n < copyChunk; n++ {
				if v == nil {
					return fmt.Errorf("%w: nested bucket %x", ErrForeign, k)
				}
				if err := nb.Put(bytes.Clone(k), bytes.Clone(v)); err != nil {
					return err
				}
				k, v = c.Next()
			}
			return nil
		})
		if err != nil {
			return err
		}
	}
	return nil
}
