package store

import (
	"os"

	bolt "go.etcd.io/bbolt"
)

// Space is how the store file's bytes are spent: what `make bench-scale`
// and the size benchmarks report per certificate.
type Space struct {
	// FileSize is the size of the file on disk.
	FileSize int64
	// InUse is the high-water mark of the newest transaction (FileSize
	// minus the slack bbolt grew the file into).
	InUse int64
	// Free is the part of InUse on free pages (released by earlier
	// transactions, to be reused).
	Free int64
	// PageSize is bbolt's page size.
	PageSize int
	// Buckets are the top-level buckets, in key order.
	Buckets []BucketSpace
}

// BucketSpace is one bucket's share of the file.
type BucketSpace struct {
	Name string
	// Keys is the number of key/value pairs.
	Keys int
	// Alloc is the bytes of the pages the bucket holds (leaf and branch,
	// inline buckets included in their parent's).
	Alloc int64
	// Used is the bytes of those pages actually filled.
	Used int64
	// Depth is the B+tree's depth.
	Depth int
}

// Space measures the file in one read transaction. It reads every page of
// every bucket: a walk of the whole file, for benchmarks and operators,
// not for a request path.
func (db *DB) Space() (Space, error) {
	var s Space
	err := db.view(func(tx *bolt.Tx) error {
		s.PageSize = db.bolt.Info().PageSize
		s.InUse = tx.Size()
		return tx.ForEach(func(name []byte, b *bolt.Bucket) error {
			st := b.Stats()
			s.Buckets = append(s.Buckets, BucketSpace{Name: string(name), Keys: st.KeyN,
				Alloc: int64(st.BranchAlloc + st.LeafAlloc), Used: int64(st.BranchInuse + st.LeafInuse), Depth: st.Depth})
			return nil
		})
	})
	if err != nil {
		return Space{}, err
	}
	s.Free = int64(db.bolt.Stats().FreePageN) * int64(s.PageSize)
	fi, err := os.Stat(db.Path())
	if err != nil {
		return Space{}, err
	}
	s.FileSize = fi.Size()
	return s, nil
}
