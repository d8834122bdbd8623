package storetest

import (
	"bytes"
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"testing"
	"time"

	bolt "go.etcd.io/bbolt"

	"github.com/estca/estca/store/internal/wire"
)

// Tamper is a kind of damage done to a store file by someone who can write
// the file but does not hold the audit key. In the descriptions c is the
// record the newest signed head covers and "/" is integer division.
type Tamper int

// Kinds of damage. The zero Tamper is not one of them.
const (
	// EditRecord changes the reason of record c/2-1 and keeps its stored
	// hash. Verify: "hash mismatch" at c/2-1.
	EditRecord Tamper = iota + 1
	// EditRechain changes the reason of record c/2-1 and recomputes its
	// hash. Verify: "hash mismatch" at c/2 (the next record no longer chains).
	EditRechain
	// EditRechainDropHeads changes the reason of record c/2-1, re-chains
	// every record after it, and deletes the signed heads that covered the
	// changed part (their records and index entries, renumbering the rest).
	// The chain is consistent again: only the checkpoint tells, "behind".
	EditRechainDropHeads
	// DeleteMiddle removes record c/2. Verify: "sequence gap" at c/2.
	DeleteMiddle
	// TruncateTail1, TruncateTail10 and TruncateTail60 delete the last 1,
	// 10 or 60 records together with the heads over them, the certificates
	// and revocations those records made, and fix every index, as a careful
	// forger would. Only the checkpoint tells: "behind"; when the cut
	// records are all after the newest head (unsigned), nothing tells and
	// Apply returns an empty Expect.
	TruncateTail1
	TruncateTail10
	TruncateTail60
	// Reorder swaps the stored values of records c/2-2 and c/2+2. Verify:
	// "out of order" at c/2-2.
	Reorder
	// Insert forges a record at c/2, renumbers and re-chains the rest and
	// fixes every index. Verify: "signed head mismatch" at the record the
	// first head covering c/2 or later signs.
	Insert
	// ForgeHeadSignature flips a bit in the newest head's signature (and
	// re-hashes its record). Verify: "bad head signature" at that record.
	ForgeHeadSignature
	// BreakHeadChain deletes the second newest head (its record and index
	// entry), renumbers and re-chains the records after it. Verify: "head
	// chain broken" at the newest head's record.
	BreakHeadChain
	// AddCertificate adds a certificate (a copy of the newest, under a new
	// serial) to the certificate bucket and the serial index. Verify:
	// "certificate without issued record".
	AddCertificate
	// DeleteCertificate deletes the certificate of the issued record
	// nearest c/2 and its serial index entry. Verify: "issued record
	// without its certificate" at that record.
	DeleteCertificate
	// RemoveRevocation deletes the oldest revocation from the revocation
	// set. Verify: "revocation missing"; Open with the audit key: "revocation
	// set differs from the audit chain".
	RemoveRevocation
	// ChangeRevocation changes the reason code of the oldest revocation.
	// Verify: "revocation differs from its record".
	ChangeRevocation
)

var names = map[Tamper]string{
	EditRecord: "EditRecord", EditRechain: "EditRechain", EditRechainDropHeads: "EditRechainDropHeads",
	DeleteMiddle: "DeleteMiddle", TruncateTail1: "TruncateTail1", TruncateTail10: "TruncateTail10",
	TruncateTail60: "TruncateTail60", Reorder: "Reorder", Insert: "Insert",
	ForgeHeadSignature: "ForgeHeadSignature", BreakHeadChain: "BreakHeadChain",
	AddCertificate: "AddCertificate", DeleteCertificate: "DeleteCertificate",
	RemoveRevocation: "RemoveRevocation", ChangeRevocation: "ChangeRevocation",
}

// Tampers returns every kind of damage, in declaration order.
func Tampers() []Tamper {
	out := make([]Tamper, 0, len(names))
	for k := EditRecord; k <= ChangeRevocation; k++ {
		out = append(out, k)
	}
	return out
}

// String returns the constant's name, e.g. "EditRecord".
func (k Tamper) String() string {
	if n, ok := names[k]; ok {
		return n
	}
	return fmt.Sprintf("Tamper(%d)", int(k))
}

// Expect is what verification reports after a Tamper. The zero Expect means
// that verification cannot see the damage (records after the newest signed
// head were cut).
type Expect struct {
	// Seq is the record store.Verify names (0: none, or not about a record).
	Seq uint64
	// Reason is the store.VerifyError reason, or the store.CheckpointError
	// reason when Checkpoint is set.
	Reason string
	// Checkpoint is set when only the checkpoint reveals the damage: the
	// store verifies on its own.
	Checkpoint bool
}

// MinCovered is how many records the newest signed head must cover for Apply.
const MinCovered = 6

// lockTimeout bounds the wait for a file another handle holds.
const lockTimeout = 2 * time.Second

// Copy makes a consistent copy of the store file src in a new t.TempDir(),
// under the same base name, and returns its path. It opens src read-only
// with bbolt and copies it in a read transaction, so src must not be open
// for writing (close the *store.DB, or use its BackupFile instead).
func Copy(t testing.TB, src string) string {
	t.Helper()
	if _, err := os.Stat(src); err != nil {
		t.Fatalf("storetest: copy: %v", err)
	}
	db, err := bolt.Open(src, 0o600, &bolt.Options{ReadOnly: true, Timeout: lockTimeout})
	if err != nil {
		t.Fatalf("storetest: copy: open %s read-only (is it still open for writing?): %v", src, err)
	}
	defer db.Close()
	dst := filepath.Join(t.TempDir(), filepath.Base(src))
	if err := db.View(func(tx *bolt.Tx) error { return tx.CopyFile(dst, 0o600) }); err != nil {
		t.Fatalf("storetest: copy %s: %v", src, err)
	}
	return dst
}

// Apply does k to the store file at path, which must be closed, in one
// bbolt transaction, and returns what verification reports afterwards (see
// the Tamper constants). It fails the test without writing when the file is
// missing or locked, k is unknown, or the preconditions do not hold: the
// records must form a valid chain matching the meta bucket, the newest
// signed head must cover at least MinCovered records, at least two heads
// must exist, and the certificate and revocation kinds need a certificate
// and a revocation. Head signatures are not checked.
func Apply(t testing.TB, path string, k Tamper) Expect {
	t.Helper()
	if _, ok := names[k]; !ok {
		t.Fatalf("storetest: unknown tamper %v", k)
	}
	if _, err := os.Stat(path); err != nil {
		t.Fatalf("storetest: %v: %v", k, err)
	}
	db, err := bolt.Open(path, 0o600, &bolt.Options{Timeout: lockTimeout, FreelistType: bolt.FreelistMapType, NoFreelistSync: true})
	if err != nil {
		t.Fatalf("storetest: %v: open %s (is it still open?): %v", k, path, err)
	}
	var exp Expect
	err = db.Update(func(tx *bolt.Tx) error {
		s, err := load(tx)
		if err != nil {
			return err
		}
		exp, err = s.apply(k)
		return err
	})
	cerr := db.Close()
	if err != nil {
		t.Fatalf("storetest: %v on %s: %v", k, path, err)
	}
	if cerr != nil {
		t.Fatalf("storetest: close %s: %v", path, cerr)
	}
	return exp
}

// errPrecondition marks a store Apply cannot meaningfully damage.
var errPrecondition = errors.New("precondition")

// store is a store file's audit chain and buckets inside a write transaction.
type store struct {
	tx                                                 *bolt.Tx
	audit, heads, meta, certs, serials, requests, revs *bolt.Bucket
	// recs[i] is record i+1; hashes[i] its stored hash.
	recs   []wire.Record
	hashes [][]byte
	// newest is the newest head; covered the record it signs (c).
	newest  *wire.Head
	covered uint64
	nheads  int
}

func load(tx *bolt.Tx) (*store, error) {
	b := func(name []byte) *bolt.Bucket { return tx.Bucket(name) }
	s := &store{tx: tx, audit: b(wire.BucketAudit), heads: b(wire.BucketHeads), meta: b(wire.BucketMeta),
		certs: b(wire.BucketCerts), serials: b(wire.BucketSerials), requests: b(wire.BucketRequests),
		revs: b(wire.BucketRevocations)}
	for _, bk := range []*bolt.Bucket{s.audit, s.heads, s.meta, s.certs, s.serials, s.requests, s.revs} {
		if bk == nil {
			return nil, fmt.Errorf("%w: not a format %d store (a bucket is missing)", errPrecondition, wire.Version)
		}
	}
	var prev []byte
	err := s.audit.ForEach(func(k, v []byte) error {
		seq, err := wire.ParseU64(k)
		if err != nil || seq != uint64(len(s.recs))+1 {
			return fmt.Errorf("%w: audit key %x after record %d", errPrecondition, k, len(s.recs))
		}
		hash, enc, err := wire.SplitStored(v)
		if err != nil {
			return fmt.Errorf("%w: record %d: %v", errPrecondition, seq, err)
		}
		r, err := wire.DecodeRecord(enc)
		if err != nil || r.Seq != seq || !bytes.Equal(wire.RecordHash(prev, enc), hash) {
			return fmt.Errorf("%w: record %d does not verify (damaged already, or the layout changed): %v", errPrecondition, seq, err)
		}
		s.recs = append(s.recs, r)
		s.hashes = append(s.hashes, bytes.Clone(hash))
		prev = hash
		if r.Head != nil {
			s.newest, s.covered = r.Head, r.Head.Seq
			s.nheads++
		}
		return nil
	})
	if err != nil {
		return nil, err
	}
	if v := s.meta.Get(wire.MetaChain); !bytes.Equal(v, append(wire.U64(uint64(len(s.recs))), prev...)) {
		return nil, fmt.Errorf("%w: the meta chain head is not the last record", errPrecondition)
	}
	if s.covered < MinCovered || s.nheads < 2 {
		return nil, fmt.Errorf("%w: %d records, %d heads, the newest covering %d: need two heads, the newest covering at least %d records",
			errPrecondition, len(s.recs), s.nheads, s.covered, MinCovered)
	}
	return s, nil
}

func (s *store) n() uint64 { return uint64(len(s.recs)) }

func (s *store) apply(k Tamper) (Expect, error) {
	mid := s.covered / 2
	switch k {
	case EditRecord:
		return Expect{Seq: mid - 1, Reason: "hash mismatch"}, s.edit(mid-1, false)
	case EditRechain:
		return Expect{Seq: mid, Reason: "hash mismatch"}, s.edit(mid-1, true)
	case EditRechainDropHeads:
		return Expect{Reason: "behind", Checkpoint: true}, s.editDropHeads(mid - 1)
	case DeleteMiddle:
		return Expect{Seq: mid, Reason: "sequence gap"}, s.audit.Delete(wire.U64(mid))
	case TruncateTail1, TruncateTail10, TruncateTail60:
		n := map[Tamper]uint64{TruncateTail1: 1, TruncateTail10: 10, TruncateTail60: 60}[k]
		if n >= s.n() {
			return Expect{}, fmt.Errorf("%w: %d records, cannot delete the last %d", errPrecondition, s.n(), n)
		}
		from := s.n() - n + 1
		if s.covered < from && !s.headsFrom(from) {
			// Only records no head covers: nothing can tell.
			return Expect{}, s.rewrite(from, nil)
		}
		return Expect{Reason: "behind", Checkpoint: true}, s.rewrite(from, nil)
	case Reorder:
		va, vb := bytes.Clone(s.audit.Get(wire.U64(mid-2))), bytes.Clone(s.audit.Get(wire.U64(mid+2)))
		if err := s.audit.Put(wire.U64(mid-2), vb); err != nil {
			return Expect{}, err
		}
		return Expect{Seq: mid - 2, Reason: "out of order"}, s.audit.Put(wire.U64(mid+2), va)
	case Insert:
		return s.insert(mid)
	case ForgeHeadSignature:
		return s.forgeNewest()
	case BreakHeadChain:
		return s.breakHeads()
	case AddCertificate:
		return Expect{Reason: "certificate without issued record"}, s.addCert()
	case DeleteCertificate:
		return s.deleteCert(mid)
	case RemoveRevocation, ChangeRevocation:
		return s.tamperRevocation(k == RemoveRevocation)
	}
	return Expect{}, fmt.Errorf("unknown tamper %v", k)
}

// headsFrom reports whether a head record lies at seq from or later.
func (s *store) headsFrom(from uint64) bool {
	for _, r := range s.recs[from-1:] {
		if r.Head != nil {
			return true
		}
	}
	return false
}

// forge changes record r's reason.
func forge(r wire.Record) wire.Record {
	r.Reason += " (forged)"
	return r
}

// put stores record r under its seq with the given hash and returns its encoding.
func (s *store) put(r *wire.Record, hash []byte) ([]byte, error) {
	enc := wire.EncodeRecord(r)
	if hash == nil {
		var prev []byte
		if r.Seq > 1 {
			prev = s.hashes[r.Seq-2]
		}
		hash = wire.RecordHash(prev, enc)
	}
	s.hashes[r.Seq-1] = hash
	return hash, s.audit.Put(wire.U64(r.Seq), wire.StoredRecord(hash, enc))
}

// edit changes record seq's reason; rehash recomputes its stored hash.
func (s *store) edit(seq uint64, rehash bool) error {
	r := forge(s.recs[seq-1])
	var hash []byte
	if !rehash {
		hash = s.hashes[seq-1]
	}
	_, err := s.put(&r, hash)
	return err
}

// entry is a record to write, with the seq it had (0 for a forged one).
type entry struct {
	rec wire.Record
	old uint64
}

// tail returns records from seq on as entries.
func (s *store) tail(from uint64) []entry {
	var out []entry
	for i := from; i <= s.n(); i++ {
		out = append(out, entry{s.recs[i-1], i})
	}
	return out
}

// rewrite replaces records from seq from on with entries (renumbered from
// from and re-chained) the way a careful forger would: the records' own
// references are fixed (certificate → issued record, revocation → revoked
// record, heads index), certificates and revocations of records no longer
// written are deleted with their indexes, and the meta bucket is made to
// agree. Signed heads cannot be fixed: their signatures cover the old chain.
func (s *store) rewrite(from uint64, entries []entry) error {
	kept := map[uint64]bool{}
	for _, e := range entries {
		kept[e.old] = true
	}
	for i := from; i <= s.n(); i++ {
		if err := s.audit.Delete(wire.U64(i)); err != nil {
			return err
		}
		if !kept[i] {
			if err := s.drop(&s.recs[i-1]); err != nil {
				return err
			}
		}
	}
	s.recs, s.hashes = s.recs[:from-1], s.hashes[:from-1]
	for i, e := range entries {
		r := e.rec
		r.Seq = from + uint64(i)
		s.recs = append(s.recs, r)
		s.hashes = append(s.hashes, nil)
		if _, err := s.put(&r, nil); err != nil {
			return err
		}
		if err := s.relink(&r); err != nil {
			return err
		}
	}
	return s.fixMeta()
}

// drop deletes what a record no longer written had made.
func (s *store) drop(r *wire.Record) error {
	switch {
	case r.Event == "issued":
		v := s.certs.Get(wire.U64(r.CertSeq))
		c, err := wire.DecodeCert(v)
		if err != nil {
			return fmt.Errorf("%w: certificate %d: %v", errPrecondition, r.CertSeq, err)
		}
		for _, del := range []struct {
			b *bolt.Bucket
			k []byte
		}{
			{s.certs, wire.U64(r.CertSeq)}, {s.serials, wire.SerialKey(c.Serial)},
			{s.requests, wire.RequestKey(c.Requester, c.CSRDigest)},
		} {
			if err := del.b.Delete(del.k); err != nil {
				return err
			}
		}
	case r.Event == "revoked":
		return s.revs.Delete(wire.SerialKey(r.Serial))
	case r.Head != nil:
		return s.heads.Delete(wire.U64(r.Head.Counter))
	}
	return nil
}

// relink points the indexes at a record's new seq.
func (s *store) relink(r *wire.Record) error {
	switch {
	case r.Event == "issued":
		c, err := wire.DecodeCert(s.certs.Get(wire.U64(r.CertSeq)))
		if err != nil {
			return fmt.Errorf("%w: certificate %d: %v", errPrecondition, r.CertSeq, err)
		}
		c.AuditSeq = r.Seq
		return s.certs.Put(wire.U64(r.CertSeq), wire.EncodeCert(&c))
	case r.Event == "revoked":
		sk := wire.SerialKey(r.Serial)
		v, err := wire.DecodeRevocation(s.revs.Get(sk))
		if err != nil {
			return fmt.Errorf("%w: revocation of %s: %v", errPrecondition, r.Serial, err)
		}
		v.RecordSeq = r.Seq
		return s.revs.Put(sk, wire.EncodeRevocation(v))
	case r.Head != nil:
		return s.heads.Put(wire.U64(r.Head.Counter), wire.U64(r.Seq))
	}
	return nil
}

// fixMeta makes the meta bucket agree with the records.
func (s *store) fixMeta() error {
	last := s.n()
	if err := s.meta.Put(wire.MetaChain, append(wire.U64(last), s.hashes[last-1]...)); err != nil {
		return err
	}
	acc, count := wire.ZeroAcc(), uint64(0)
	var head []byte
	var ack []byte
	for _, r := range s.recs {
		if r.Rev != nil {
			acc = wire.RevAccNext(acc, r.Seq, r.Serial, r.Rev.Reason, r.Rev.At)
			count++
		}
		if r.Head != nil {
			head = append(append(wire.U64(r.Head.Counter), wire.U64(r.Seq)...), wire.HeadDigest(r.Head)...)
		}
		if r.Ack != nil {
			ack = wire.U64(r.Seq)
		}
	}
	var lastCert uint64
	if k, _ := s.certs.Cursor().Last(); k != nil {
		lastCert, _ = wire.ParseU64(k)
	}
	if err := s.certs.SetSequence(lastCert); err != nil {
		return err
	}
	if err := s.meta.Put(wire.MetaRevocations, append(wire.U64(count), acc...)); err != nil {
		return err
	}
	if err := s.meta.Put(wire.MetaHead, head); err != nil {
		return err
	}
	if ack == nil {
		return s.meta.Delete(wire.MetaAck)
	}
	return s.meta.Put(wire.MetaAck, ack)
}

// editDropHeads forges record seq, re-chains the rest and drops the heads
// covering the forged part.
func (s *store) editDropHeads(seq uint64) error {
	entries := []entry{{forge(s.recs[seq-1]), seq}}
	for _, e := range s.tail(seq + 1) {
		if e.rec.Head != nil && e.rec.Head.Seq >= seq {
			continue
		}
		entries = append(entries, e)
	}
	return s.rewrite(seq, entries)
}

// insert forges a record at p and renumbers the rest.
func (s *store) insert(p uint64) (Expect, error) {
	entries := append([]entry{{forge(s.recs[p-1]), 0}}, s.tail(p)...)
	var first *wire.Head
	for _, e := range entries {
		if h := e.rec.Head; h != nil && h.Seq >= p && (first == nil || h.Counter < first.Counter) {
			first = h
		}
	}
	if first == nil {
		return Expect{}, fmt.Errorf("%w: no head covers record %d", errPrecondition, p)
	}
	// The forged copy must not repeat the certificate or revocation of the
	// record it copies: make it a plain record.
	entries[0].rec.Event, entries[0].rec.CertSeq, entries[0].rec.CertDigest = "approved", 0, nil
	entries[0].rec.Rev, entries[0].rec.Head, entries[0].rec.Ack = nil, nil, nil
	return Expect{Seq: first.Seq, Reason: "signed head mismatch"}, s.rewrite(p, entries)
}

// forgeNewest flips a bit in the newest head's signature.
func (s *store) forgeNewest() (Expect, error) {
	for i := len(s.recs) - 1; i >= 0; i-- {
		r := s.recs[i]
		if r.Head == nil {
			continue
		}
		h := *r.Head
		h.Signature = bytes.Clone(h.Signature)
		h.Signature[len(h.Signature)/2] ^= 0x40
		r.Head = &h
		entries := append([]entry{{r, r.Seq}}, s.tail(r.Seq+1)...)
		return Expect{Seq: r.Seq, Reason: "bad head signature"}, s.rewrite(r.Seq, entries)
	}
	return Expect{}, fmt.Errorf("%w: no head", errPrecondition)
}

// breakHeads deletes the second newest head.
func (s *store) breakHeads() (Expect, error) {
	var heads []uint64
	for _, r := range s.recs {
		if r.Head != nil {
			heads = append(heads, r.Seq)
		}
	}
	victim := heads[len(heads)-2]
	if err := s.heads.Delete(wire.U64(s.recs[victim-1].Head.Counter)); err != nil {
		return Expect{}, err
	}
	newestNew := heads[len(heads)-1] - 1 // renumbered one down
	return Expect{Seq: newestNew, Reason: "head chain broken"}, s.rewrite(victim, s.tail(victim+1))
}

// addCert copies the newest certificate under a new issuance number and serial.
func (s *store) addCert() error {
	n := s.certs.Sequence()
	c, err := wire.DecodeCert(s.certs.Get(wire.U64(n)))
	if err != nil {
		return fmt.Errorf("%w: no certificate to copy: %v", errPrecondition, err)
	}
	c.Serial = "7e57ab1e" + fmt.Sprintf("%x", n)
	if err := s.certs.Put(wire.U64(n+1), wire.EncodeCert(&c)); err != nil {
		return err
	}
	if err := s.certs.SetSequence(n + 1); err != nil {
		return err
	}
	return s.serials.Put(wire.SerialKey(c.Serial), wire.U64(n+1))
}

// deleteCert deletes the certificate of the issued record nearest p.
func (s *store) deleteCert(p uint64) (Expect, error) {
	best := uint64(0)
	for _, r := range s.recs[:s.covered] {
		if r.Event == "issued" && (best == 0 || absDiff(r.Seq, p) < absDiff(best, p)) {
			best = r.Seq
		}
	}
	if best == 0 {
		return Expect{}, fmt.Errorf("%w: no issued record under the newest head", errPrecondition)
	}
	r := s.recs[best-1]
	if err := s.certs.Delete(wire.U64(r.CertSeq)); err != nil {
		return Expect{}, err
	}
	return Expect{Seq: best, Reason: "issued record without its certificate"}, s.serials.Delete(wire.SerialKey(r.Serial))
}

func absDiff(a, b uint64) uint64 {
	if a > b {
		return a - b
	}
	return b - a
}

// tamperRevocation removes or changes the oldest revocation.
func (s *store) tamperRevocation(remove bool) (Expect, error) {
	for _, r := range s.recs {
		if r.Rev == nil {
			continue
		}
		sk := wire.SerialKey(r.Serial)
		if remove {
			return Expect{Reason: "revocation missing"}, s.revs.Delete(sk)
		}
		v, err := wire.DecodeRevocation(s.revs.Get(sk))
		if err != nil {
			return Expect{}, fmt.Errorf("%w: revocation of %s: %v", errPrecondition, r.Serial, err)
		}
		v.Reason = 6 // certificateHold: a revocation that can be lifted
		if v.Reason == r.Rev.Reason {
			v.Reason = 5
		}
		return Expect{Reason: "revocation differs from its record"}, s.revs.Put(sk, wire.EncodeRevocation(v))
	}
	return Expect{}, fmt.Errorf("%w: no revocation", errPrecondition)
}

// InUse returns how many bytes of the store file at path its newest
// transaction uses (the high-water mark); the rest of the file is slack
// bbolt grew into. The file must be closed.
func InUse(t testing.TB, path string) int64 {
	t.Helper()
	db, err := bolt.Open(path, 0o600, &bolt.Options{ReadOnly: true, Timeout: lockTimeout})
	if err != nil {
		t.Fatalf("storetest: open %s: %v", path, err)
	}
	defer db.Close()
	var n int64
	_ = db.View(func(tx *bolt.Tx) error { n = tx.Size(); return nil })
	return n
}

// LeafPage returns the id of a leaf page in use (reachable, more than two
// keys) in the upper half of the store file at path, which must be closed:
// a page whose damage the store must notice. A page picked by offset alone
// may be free, and then harmless.
func LeafPage(t testing.TB, path string) uint64 {
	t.Helper()
	db, err := bolt.Open(path, 0o600, &bolt.Options{ReadOnly: true, PreLoadFreelist: true, Timeout: lockTimeout})
	if err != nil {
		t.Fatalf("storetest: open %s: %v", path, err)
	}
	defer db.Close()
	var id uint64
	err = db.View(func(tx *bolt.Tx) error {
		hwm := int(tx.Size() / int64(db.Info().PageSize))
		for pid := hwm / 2; pid < hwm; pid++ {
			if pi, err := tx.Page(pid); err == nil && pi != nil && pi.Type == "leaf" && pi.Count > 2 {
				id = uint64(pid)
				return nil
			}
		}
		return fmt.Errorf("no leaf page in use in the upper half of %d pages", hwm)
	})
	if err != nil {
		t.Fatalf("storetest: %v", err)
	}
	return id
}
