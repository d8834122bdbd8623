package storetest

import (
	"bytes"
	"crypto/sha256"
	"encoding/binary"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"os"
	"path/filepath"
	"testing"
	"time"

	bolt "go.etcd.io/bbolt"
)

// Tamper is a kind of damage done to the audit log of a store file. In the
// descriptions c is the sequence number of the newest signed head (at least
// 6) and n the last record's; "/" is integer division.
type Tamper int

// Kinds of damage. The zero Tamper is not one of them.
const (
	// EditRecord changes the event of record c/2-1 and keeps its stored
	// hash. Verify names c/2-1 ("hash mismatch").
	EditRecord Tamper = iota + 1
	// EditRechain changes the event of record c/2-1 and recomputes its
	// hash, leaving the records after it alone. Verify names c/2
	// ("broken link"), or c/2-1 itself when a signed head is at c/2-1
	// ("signed head mismatch").
	EditRechain
	// DeleteMiddle removes record c/2. Verify names c/2 ("sequence gap").
	DeleteMiddle
	// DeleteTail removes records c-1 to n and points the chain head at c-2,
	// as a careful forger would. Verify names c-1 ("missing records after
	// signed head").
	DeleteTail
	// Reorder swaps the stored values of records c/2-2 and c/2+2. Verify
	// names c/2-2 ("out of order").
	Reorder
	// Insert forges a record at c/2 (a copy of the record there with another
	// event), moves records c/2 to n up by one, renumbers and rechains them
	// and the chain head, so only signed heads can tell. Verify names the
	// lowest signed head at or after c/2 ("signed head mismatch").
	Insert
	// ForgeHeadSignature flips a bit in the signature of the newest signed
	// head. Verify names c ("bad head signature").
	ForgeHeadSignature
)

// Tampers returns every kind of damage, in declaration order.
func Tampers() []Tamper {
	return []Tamper{EditRecord, EditRechain, DeleteMiddle, DeleteTail, Reorder, Insert, ForgeHeadSignature}
}

// String returns the constant's name, e.g. "EditRecord".
func (k Tamper) String() string {
	switch k {
	case EditRecord:
		return "EditRecord"
	case EditRechain:
		return "EditRechain"
	case DeleteMiddle:
		return "DeleteMiddle"
	case DeleteTail:
		return "DeleteTail"
	case Reorder:
		return "Reorder"
	case Insert:
		return "Insert"
	case ForgeHeadSignature:
		return "ForgeHeadSignature"
	}
	return fmt.Sprintf("Tamper(%d)", int(k))
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

// Apply does k to the audit log of the store file at path, which must be
// closed, in one bbolt transaction, and returns the sequence number that
// store.Verify names in its *store.VerifyError afterwards (see the Tamper
// constants). It fails the test without writing when the file is missing or
// locked, k is unknown, or the preconditions do not hold: the records must
// form a valid chain from seq 1 matching the chain head, every signed head
// must name a stored record's hash, and the newest must cover at least
// MinCovered records. Head signatures are not checked.
func Apply(t testing.TB, path string, k Tamper) uint64 {
	t.Helper()
	if k < EditRecord || k > ForgeHeadSignature {
		t.Fatalf("storetest: unknown tamper %v", k)
	}
	if _, err := os.Stat(path); err != nil {
		t.Fatalf("storetest: %v: %v", k, err)
	}
	db, err := bolt.Open(path, 0o600, &bolt.Options{Timeout: lockTimeout, FreelistType: bolt.FreelistMapType})
	if err != nil {
		t.Fatalf("storetest: %v: open %s (is it still open?): %v", k, path, err)
	}
	var seq uint64
	err = db.Update(func(tx *bolt.Tx) error {
		c, err := load(tx)
		if err != nil {
			return err
		}
		seq, err = c.apply(k)
		return err
	})
	cerr := db.Close()
	if err != nil {
		t.Fatalf("storetest: %v on %s: %v", k, path, err)
	}
	if cerr != nil {
		t.Fatalf("storetest: close %s: %v", path, cerr)
	}
	return seq
}

// Layout of package store (see its doc.go, "Audit chain").
const (
	bucketAudit  = "audit"
	bucketHeads  = "audit_heads"
	bucketMeta   = "meta"
	keyChainHead = "chain_head"
)

// errPrecondition marks a store Apply cannot meaningfully damage.
var errPrecondition = errors.New("precondition")

// chain is the audit log of a store inside a write transaction.
type chain struct {
	audit, heads, meta *bolt.Bucket
	// n is the last sequence number; records are keyed 1..n.
	n uint64
	// signed holds the seq of each signed head, by bucket key.
	signed []uint64
	// headKeys holds the bucket key of each signed head.
	headKeys [][]byte
	// newest is the highest signed seq (c in the Tamper descriptions).
	newest uint64
}

// load reads the audit log in tx and checks the preconditions of Apply.
func load(tx *bolt.Tx) (*chain, error) {
	c := &chain{
		audit: tx.Bucket([]byte(bucketAudit)),
		heads: tx.Bucket([]byte(bucketHeads)),
		meta:  tx.Bucket([]byte(bucketMeta)),
	}
	if c.audit == nil || c.heads == nil || c.meta == nil {
		return nil, fmt.Errorf("%w: not a store file (buckets %q, %q, %q)", errPrecondition, bucketAudit, bucketHeads, bucketMeta)
	}
	var prev []byte
	err := c.audit.ForEach(func(k, _ []byte) error {
		if len(k) != 8 || binary.BigEndian.Uint64(k) != c.n+1 {
			return fmt.Errorf("%w: audit key %x after seq %d", errPrecondition, k, c.n)
		}
		c.n++
		hash, obj, err := c.record(c.n)
		if err != nil {
			return err
		}
		var seq uint64
		if err := obj.get("seq", &seq); err != nil || seq != c.n {
			return fmt.Errorf("%w: record %d has seq %d (%v)", errPrecondition, c.n, seq, err)
		}
		if !bytes.Equal(chainHash(prev, obj), hash) {
			return fmt.Errorf("%w: record %d: hash does not recompute; damaged already, or the record layout changed", errPrecondition, c.n)
		}
		prev = hash
		return nil
	})
	if err != nil {
		return nil, err
	}
	if h := c.meta.Get([]byte(keyChainHead)); !bytes.Equal(h, append(u64(c.n), prev...)) {
		return nil, fmt.Errorf("%w: chain head %x is not record %d", errPrecondition, h, c.n)
	}
	err = c.heads.ForEach(func(k, v []byte) error {
		obj, err := parseObject(v)
		if err != nil {
			return fmt.Errorf("%w: signed head %x: %v", errPrecondition, k, err)
		}
		var seq uint64
		var hash []byte
		if err := obj.get("seq", &seq); err != nil {
			return fmt.Errorf("%w: signed head %x: %v", errPrecondition, k, err)
		}
		if err := obj.get("hash", &hash); err != nil {
			return fmt.Errorf("%w: signed head %x: %v", errPrecondition, k, err)
		}
		if seq < 1 || seq > c.n || !bytes.Equal(storedHash(c.audit.Get(u64(seq))), hash) {
			return fmt.Errorf("%w: signed head %x (seq %d) does not match the log", errPrecondition, k, seq)
		}
		c.signed = append(c.signed, seq)
		c.headKeys = append(c.headKeys, bytes.Clone(k))
		c.newest = max(c.newest, seq)
		return nil
	})
	if err != nil {
		return nil, err
	}
	if c.newest < MinCovered {
		return nil, fmt.Errorf("%w: %d records, %d signed heads, newest covering %d: need a signed head covering at least %d records",
			errPrecondition, c.n, len(c.signed), c.newest, MinCovered)
	}
	return c, nil
}

// apply does k and returns the seq Verify is expected to name.
func (c *chain) apply(k Tamper) (uint64, error) {
	mid := c.newest / 2
	switch k {
	case EditRecord:
		return mid - 1, c.edit(mid-1, false)
	case EditRechain:
		if err := c.edit(mid-1, true); err != nil {
			return 0, err
		}
		if c.isSigned(mid - 1) {
			return mid - 1, nil
		}
		return mid, nil
	case DeleteMiddle:
		return mid, c.audit.Delete(u64(mid))
	case DeleteTail:
		return c.newest - 1, c.deleteFrom(c.newest - 1)
	case Reorder:
		return mid - 2, c.swap(mid-2, mid+2)
	case Insert:
		if err := c.insert(mid); err != nil {
			return 0, err
		}
		first := c.newest
		for _, s := range c.signed {
			if s >= mid {
				first = min(first, s)
			}
		}
		return first, nil
	case ForgeHeadSignature:
		return c.newest, c.forgeNewestHead()
	}
	return 0, fmt.Errorf("unknown tamper %v", k)
}

func (c *chain) isSigned(seq uint64) bool {
	for _, s := range c.signed {
		if s == seq {
			return true
		}
	}
	return false
}

// edit changes record seq's event; rehash recomputes its stored hash.
func (c *chain) edit(seq uint64, rehash bool) error {
	hash, obj, err := c.record(seq)
	if err != nil {
		return err
	}
	if err := otherEvent(obj); err != nil {
		return err
	}
	if rehash {
		prev, _, err := c.record(seq - 1)
		if err != nil {
			return err
		}
		hash = chainHash(prev, obj)
	}
	return c.put(seq, hash, obj)
}

// deleteFrom removes records from..n and points the chain head at from-1.
func (c *chain) deleteFrom(from uint64) error {
	for s := from; s <= c.n; s++ {
		if err := c.audit.Delete(u64(s)); err != nil {
			return err
		}
	}
	hash, _, err := c.record(from - 1)
	if err != nil {
		return err
	}
	return c.setHead(from-1, hash)
}

// swap exchanges the stored values of records a and b.
func (c *chain) swap(a, b uint64) error {
	va := bytes.Clone(c.audit.Get(u64(a)))
	vb := bytes.Clone(c.audit.Get(u64(b)))
	if err := c.audit.Put(u64(a), vb); err != nil {
		return err
	}
	return c.audit.Put(u64(b), va)
}

// insert forges a record at p and rechains p..n as p+1..n+1.
func (c *chain) insert(p uint64) error {
	objs := make([]object, 0, c.n-p+2)
	_, forged, err := c.record(p)
	if err != nil {
		return err
	}
	if err := otherEvent(forged); err != nil {
		return err
	}
	objs = append(objs, forged)
	for s := p; s <= c.n; s++ {
		_, obj, err := c.record(s)
		if err != nil {
			return err
		}
		if err := obj.set("seq", s+1); err != nil {
			return err
		}
		objs = append(objs, obj)
	}
	prev, _, err := c.record(p - 1)
	if err != nil {
		return err
	}
	for i, obj := range objs {
		if err := obj.set("prev", prev); err != nil {
			return err
		}
		prev = chainHash(prev, obj)
		if err := c.put(p+uint64(i), prev, obj); err != nil {
			return err
		}
	}
	return c.setHead(c.n+1, prev)
}

// forgeNewestHead flips a bit in the signature of the last head with seq c.newest.
func (c *chain) forgeNewestHead() error {
	var key []byte
	for i, s := range c.signed {
		if s == c.newest {
			key = c.headKeys[i]
		}
	}
	obj, err := parseObject(c.heads.Get(key))
	if err != nil {
		return err
	}
	var sig []byte
	if err := obj.get("sig", &sig); err != nil || len(sig) == 0 {
		return fmt.Errorf("%w: signed head %x has no signature (%v)", errPrecondition, key, err)
	}
	sig[len(sig)/2] ^= 0x40
	if err := obj.set("sig", sig); err != nil {
		return err
	}
	return c.heads.Put(key, obj.encode())
}

// record returns a copy of record seq's stored hash and its parsed encoding.
func (c *chain) record(seq uint64) ([]byte, object, error) {
	v := c.audit.Get(u64(seq))
	if len(v) <= sha256.Size {
		return nil, nil, fmt.Errorf("%w: record %d missing or short", errPrecondition, seq)
	}
	obj, err := parseObject(v[sha256.Size:])
	if err != nil {
		return nil, nil, fmt.Errorf("%w: record %d: %v", errPrecondition, seq, err)
	}
	return bytes.Clone(v[:sha256.Size]), obj, nil
}

// put stores obj under seq with the given hash.
func (c *chain) put(seq uint64, hash []byte, obj object) error {
	return c.audit.Put(u64(seq), append(bytes.Clone(hash), obj.encode()...))
}

// setHead points the meta chain head at seq and hash.
func (c *chain) setHead(seq uint64, hash []byte) error {
	return c.meta.Put([]byte(keyChainHead), append(u64(seq), hash...))
}

// otherEvent changes a record's event to a different one.
func otherEvent(obj object) error {
	var ev string
	if err := obj.get("event", &ev); err != nil {
		return err
	}
	forged := "approved"
	if ev == forged {
		forged = "denied"
	}
	return obj.set("event", forged)
}

// chainHash is SHA-256(prev || encoding), the store's record hash.
func chainHash(prev []byte, obj object) []byte {
	h := sha256.New()
	h.Write(prev)
	h.Write(obj.encode())
	return h.Sum(nil)
}

// storedHash returns the hash prefix of a stored record (nil if short).
func storedHash(v []byte) []byte {
	if len(v) < sha256.Size {
		return nil
	}
	return v[:sha256.Size]
}

func u64(v uint64) []byte { return binary.BigEndian.AppendUint64(nil, v) }

// member is one field of a JSON object, its value kept as encoded.
type member struct {
	key string
	val json.RawMessage
}

// object is a JSON object that keeps its field order, so that editing one
// field of the store's canonical encoding leaves the rest byte for byte.
type object []member

// parseObject parses a compact JSON object; it fails unless re-encoding
// gives back exactly b.
func parseObject(b []byte) (object, error) {
	dec := json.NewDecoder(bytes.NewReader(b))
	if tok, err := dec.Token(); err != nil || tok != json.Delim('{') {
		return nil, fmt.Errorf("not a JSON object")
	}
	var o object
	for dec.More() {
		tok, err := dec.Token()
		if err != nil {
			return nil, err
		}
		key, _ := tok.(string)
		var v json.RawMessage
		if err := dec.Decode(&v); err != nil {
			return nil, err
		}
		o = append(o, member{key: key, val: v})
	}
	if tok, err := dec.Token(); err != nil || tok != json.Delim('}') {
		return nil, fmt.Errorf("unterminated JSON object")
	}
	if _, err := dec.Token(); err != io.EOF {
		return nil, fmt.Errorf("data after JSON object")
	}
	if !bytes.Equal(o.encode(), b) {
		return nil, fmt.Errorf("JSON object is not in compact canonical form")
	}
	return o, nil
}

// encode writes the object back in compact form, fields in order.
func (o object) encode() []byte {
	var b bytes.Buffer
	b.WriteByte('{')
	for i, m := range o {
		if i > 0 {
			b.WriteByte(',')
		}
		k, _ := json.Marshal(m.key)
		b.Write(k)
		b.WriteByte(':')
		b.Write(m.val)
	}
	b.WriteByte('}')
	return b.Bytes()
}

// get decodes field key into v.
func (o object) get(key string, v any) error {
	for _, m := range o {
		if m.key == key {
			return json.Unmarshal(m.val, v)
		}
	}
	return fmt.Errorf("%w: no field %q", errPrecondition, key)
}

// set replaces the value of an existing field key with v encoded.
func (o object) set(key string, v any) error {
	enc, err := json.Marshal(v)
	if err != nil {
		return err
	}
	for i := range o {
		if o[i].key == key {
			o[i].val = enc
			return nil
		}
	}
	return fmt.Errorf("%w: no field %q", errPrecondition, key)
}
