package store

import (
	"bytes"
	"crypto"
	"encoding/binary"
	"errors"
	"fmt"
	"slices"
	"sort"

	bolt "go.etcd.io/bbolt"

	"github.com/estca/estca/store/internal/wire"
)

// VerifyReport summarises a successful Verify.
type VerifyReport struct {
	// Records is the number of audit records walked; LastSeq the last one's seq.
	Records int
	LastSeq uint64
	// Heads is the number of signed heads checked; Newest the newest.
	Heads  int
	Newest HeadRef
	// Unsigned is how many records follow the newest head's covered record:
	// they are hash-chained but no signature vouches for them yet.
	Unsigned uint64
	// Certificates and Revocations are the numbers cross-checked with the chain.
	Certificates int
	Revocations  int
	// Checkpoints is how many checkpoints the store was found to extend.
	Checkpoints int
	// Superseded lists the checkpoints the store does not extend but that
	// an operator acknowledged as superseded in a signed record (a restore
	// of an older backup, a checkpoint reset, a migration).
	Superseded []Superseded
}

// Superseded is a checkpoint acknowledged as superseded by record AckSeq.
type Superseded struct {
	Checkpoint HeadRef
	AckSeq     uint64
	Event      Event
}

// VerifyError names the first thing that fails verification.
type VerifyError struct {
	// Seq is the first audit record that cannot be trusted (records before
	// it verify), or 0 when the failure is not about one record (a
	// certificate or revocation without its record, a bucket count).
	Seq uint64
	// Reason is a fixed phrase: "malformed record", "sequence gap", "out of
	// order", "hash mismatch", "signed head mismatch", "bad head
	// signature", "head chain broken", "head of another store", "heads index
	// mismatch", "chain head mismatch", "no signed head", "issued record out
	// of sequence", "issued record without its certificate", "certificate
	// differs from its issued record", "certificate without issued record",
	// "serial index mismatch", "request index mismatch", "revocation of an
	// unknown certificate", "known certificate revoked as unknown",
	// "revoked twice", "revocation without its
	// record", "revocation differs from its record", "revocation missing",
	// "revocation accumulator mismatch", "revocation set differs from the
	// audit chain", "acknowledgement not signed".
	Reason string
	// Detail says which certificate, serial, head or record, e.g.
	// "certificate 8 (serial 3f2a…) is missing".
	Detail string
}

// Error implements error.
func (e *VerifyError) Error() string {
	msg := "store: audit verification failed"
	if e.Seq > 0 {
		msg += fmt.Sprintf(" at record %d", e.Seq)
	}
	msg += ": " + e.Reason
	if e.Detail != "" {
		msg += " (" + e.Detail + ")"
	}
	return msg
}

// Verify walks every audit record, signed head, certificate and revocation
// in one read transaction and checks that the chain is whole and signed
// and that the buckets agree with it both ways (see "What Verify proves" in
// the package documentation); then that the store extends each checkpoint
// given. It returns a *VerifyError naming the first failure, a
// *CheckpointError for a checkpoint the store does not extend, or another
// error (I/O, unsupported key type).
func (db *DB) Verify(pub crypto.PublicKey, checkpoints ...Checkpoint) (VerifyReport, error) {
	var rep VerifyReport
	err := db.view(func(tx *bolt.Tx) error {
		c := newChainCheck(tx, pub, db.storeID)
		for _, cp := range checkpoints {
			c.digests[cp.Counter] = nil
		}
		c.issuedBase = 0
		c.full = true
		if err := c.walk(1, nil); err != nil {
			return err
		}
		if err := c.finish(); err != nil {
			return err
		}
		rep = c.rep
		for _, cp := range checkpoints {
			if err := c.checkpoint(cp, &rep); err != nil {
				return err
			}
		}
		return nil
	})
	return rep, err
}

// revSnap is the revocation accumulator after a revoked record.
type revSnap struct {
	seq, count uint64
	acc        []byte
}

// revEntry is a revoked record walked.
type revEntry struct {
	seq    uint64
	serial string
	rev    wire.Rev
}

// chainCheck walks audit records from a trusted starting point, checking
// the hash chain, the head chain and signatures, and each record against
// the buckets it names. Verify runs it from record 1; Open from the
// checkpoint (see openCheck).
type chainCheck struct {
	tx      *bolt.Tx
	pub     crypto.PublicKey
	storeID []byte
	full    bool // from record 1: also check the buckets have nothing more
	rep     VerifyReport
	err     error // first failure

	audit, certs, serials, requests *bolt.Bucket

	prev []byte
	next uint64

	// Revocations: the state after record revBase is known (revKnown) as
	// (baseCount, baseAcc); snaps holds the state after each revoked record
	// walked since; walked every revoked record walked.
	revKnown           bool
	revBase, baseCount uint64
	baseAcc            []byte
	revCount           uint64
	revAcc             []byte
	snaps              []revSnap
	walked             []revEntry
	revs               map[string]wire.Revocation

	// issuedBase is the issuance number before the first issued record
	// walked; -1 (max) means unknown until the first one.
	issuedBase uint64
	issued     uint64
	issuedSet  bool

	headsKnown  bool // a head baseline is set
	headCounter uint64
	headDigest  []byte
	headRecord  uint64 // seq of the newest head's record
	headCovered uint64 // seq the newest head covers

	digests map[uint64][]byte // head digests wanted by checkpoints, by counter
	acks    []ackInfo
	// ackCounter is the highest counter acknowledged as superseded since
	// the newest head: the next head's counter continues after it, so that
	// heads of the superseded history and of this one never share a counter.
	ackCounter uint64
}

// ackInfo is a record acknowledging a superseded checkpoint.
type ackInfo struct {
	seq   uint64
	event Event
	ref   wire.Ref
}

// supersedes reports whether an acknowledgement of ref also covers
// checkpoint cp: the very head, or an older one of the same store (the
// operator accepted losing everything up to ref, so any head up to it;
// heads after an acknowledgement are numbered past ref.Counter, so no head
// of the history kept shares a counter with one of the history lost).
func supersedes(ref wire.Ref, cp Checkpoint) bool {
	return bytes.Equal(ref.Digest, cp.Digest) || cp.Counter <= ref.Counter
}

func newChainCheck(tx *bolt.Tx, pub crypto.PublicKey, storeID []byte) *chainCheck {
	return &chainCheck{
		tx: tx, pub: pub, storeID: storeID,
		audit: tx.Bucket(wire.BucketAudit), certs: tx.Bucket(wire.BucketCerts),
		serials: tx.Bucket(wire.BucketSerials), requests: tx.Bucket(wire.BucketRequests),
		revKnown: true, baseAcc: wire.ZeroAcc(), revAcc: wire.ZeroAcc(), revs: map[string]wire.Revocation{},
		headDigest: make([]byte, wire.HashSize), headsKnown: true,
		digests: map[uint64][]byte{},
	}
}

// fromHead sets the baseline to a signed head kept in record recordSeq:
// the walk goes on after the record it covers, whose hash it signs.
func (c *chainCheck) fromHead(h Head, recordSeq uint64) {
	c.prev = h.Hash
	c.headCounter, c.headDigest, c.headRecord, c.headCovered = h.Counter, h.Digest(), recordSeq, h.Seq
	c.setRevBase(h.Seq, h.Revocations, h.RevocationDigest)
}

// setRevBase makes the revocation state after record seq known and refolds
// the revoked records walked after it.
func (c *chainCheck) setRevBase(seq, count uint64, acc []byte) {
	c.revKnown, c.revBase, c.baseCount, c.baseAcc = true, seq, count, acc
	c.revCount, c.revAcc, c.snaps = count, acc, nil
	for _, e := range c.walked {
		if e.seq > seq {
			c.fold(e)
		}
	}
}

func (c *chainCheck) fold(e revEntry) {
	c.revAcc = wire.RevAccNext(c.revAcc, e.seq, e.serial, e.rev.Reason, e.rev.At)
	c.revCount++
	c.snaps = append(c.snaps, revSnap{e.seq, c.revCount, c.revAcc})
}

func (c *chainCheck) fail(seq uint64, reason, format string, a ...any) {
	if c.err == nil {
		c.err = &VerifyError{Seq: seq, Reason: reason, Detail: fmt.Sprintf(format, a...)}
	}
}

// walk checks records from seq from to the last one; prev is the hash of
// record from-1 (nil for record 1).
func (c *chainCheck) walk(from uint64, prev []byte) error {
	if c.prev == nil {
		c.prev = prev
	}
	c.next = from
	cur := c.audit.Cursor()
	for k, v := cur.Seek(wire.U64(from)); k != nil && c.err == nil; k, v = cur.Next() {
		c.rep.Records++
		if len(k) != 8 {
			c.fail(c.next, "malformed record", "key %x", k)
			break
		}
		key := binary.BigEndian.Uint64(k)
		if key != c.next {
			c.fail(c.next, "sequence gap", "record %d is missing; the next stored is %d", c.next, key)
			break
		}
		hash, enc, err := wire.SplitStored(v)
		var rec wire.Record
		if err == nil {
			rec, err = wire.DecodeRecord(enc)
		}
		if err != nil {
			c.fail(key, "malformed record", "%v", err)
			break
		}
		if rec.Seq != key {
			c.fail(key, "out of order", "record stored as %d says it is record %d", key, rec.Seq)
			break
		}
		if !bytes.Equal(wire.RecordHash(c.prev, enc), hash) {
			c.fail(key, "hash mismatch", "record %d does not hash to its stored hash after record %d", key, key-1)
			break
		}
		c.record(key, &rec)
		c.prev = bytes.Clone(hash)
		c.next++
	}
	if c.err != nil {
		return c.err
	}
	c.rep.LastSeq = c.next - 1
	return nil
}

// record checks one record against the head chain and the buckets.
func (c *chainCheck) record(seq uint64, r *wire.Record) {
	if (r.Head != nil) != (r.Event == string(EventHead)) || (r.Rev != nil) != (r.Event == string(EventRevoked)) {
		c.fail(seq, "malformed record", "%s record with the fields of another event", r.Event)
		return
	}
	switch Event(r.Event) {
	case EventIssued:
		c.issuedRecord(seq, r)
	case EventRevoked:
		c.revokedRecord(seq, r)
	case EventHead:
		c.headRecordCheck(seq, r)
	}
	if r.Ack != nil {
		c.acks = append(c.acks, ackInfo{seq, Event(r.Event), *r.Ack})
		c.ackCounter = max(c.ackCounter, r.Ack.Counter)
	}
}

func (c *chainCheck) issuedRecord(seq uint64, r *wire.Record) {
	if !c.issuedSet {
		if !c.full {
			c.issuedBase = r.CertSeq - 1
		}
		c.issued, c.issuedSet = c.issuedBase, true
	}
	if r.CertSeq != c.issued+1 {
		c.fail(seq, "issued record out of sequence", "certificate %d after certificate %d", r.CertSeq, c.issued)
		return
	}
	c.issued++
	v := c.certs.Get(wire.U64(r.CertSeq))
	if v == nil {
		c.fail(seq, "issued record without its certificate", "certificate %d (serial %s) is not in the certificate bucket", r.CertSeq, r.Serial)
		return
	}
	cert, err := wire.DecodeCert(v)
	if err != nil {
		c.fail(seq, "certificate differs from its issued record", "certificate %d: %v", r.CertSeq, err)
		return
	}
	switch {
	case cert.Serial != r.Serial:
		c.fail(seq, "certificate differs from its issued record", "certificate %d has serial %s, the record %s", r.CertSeq, cert.Serial, r.Serial)
	case !bytes.Equal(wire.CertDigest(cert.DER), r.CertDigest):
		c.fail(seq, "certificate differs from its issued record", "certificate %d (serial %s): its DER does not have the SHA-256 the record commits to", r.CertSeq, r.Serial)
	case cert.AuditSeq != seq || cert.Requester != r.Fingerprint || cert.CSRDigest != r.CSRDigest || cert.Profile != r.Profile:
		c.fail(seq, "certificate differs from its issued record", "certificate %d (serial %s): requester, CSR digest, profile or record number", r.CertSeq, r.Serial)
	}
	if !bytes.Equal(c.serials.Get(wire.SerialKey(r.Serial)), wire.U64(r.CertSeq)) {
		c.fail(seq, "serial index mismatch", "serial %s does not lead to certificate %d", r.Serial, r.CertSeq)
	}
	if cert.Requester != "" && cert.CSRDigest != "" {
		q, err := wire.DecodeRequest(c.requests.Get(wire.RequestKey(cert.Requester, cert.CSRDigest)))
		if err != nil || q.CertSeq != r.CertSeq {
			c.fail(seq, "request index mismatch", "the request of certificate %d (serial %s) does not lead to it", r.CertSeq, r.Serial)
		}
	}
}

func (c *chainCheck) revokedRecord(seq uint64, r *wire.Record) {
	if _, dup := c.revs[r.Serial]; dup {
		c.fail(seq, "revoked twice", "serial %s", r.Serial)
		return
	}
	sv := c.serials.Get(wire.SerialKey(r.Serial))
	known := sv != nil && (!c.issuedSet || binary.BigEndian.Uint64(sv) <= c.issued)
	switch unknown := slices.Contains(r.Flags, FlagUnknownCertificate); {
	case !known && !unknown:
		c.fail(seq, "revocation of an unknown certificate", "serial %s was not issued before record %d", r.Serial, seq)
		return
	case known && unknown:
		// RevokeUnknown refuses this; a record that does it anyway could
		// stand in for a deleted certificate.
		c.fail(seq, "known certificate revoked as unknown", "serial %s was issued before record %d", r.Serial, seq)
		return
	}
	c.revs[r.Serial] = wire.Revocation{RecordSeq: seq, Reason: r.Rev.Reason, Time: r.Rev.At}
	e := revEntry{seq, r.Serial, *r.Rev}
	c.walked = append(c.walked, e)
	if c.revKnown {
		c.fold(e)
	}
}

// revAt returns the revocation state after record seq, or ok=false when it
// is not known (before the baseline of this walk).
func (c *chainCheck) revAt(seq uint64) (uint64, []byte, bool) {
	if !c.revKnown || seq < c.revBase {
		return 0, nil, false
	}
	i := sort.Search(len(c.snaps), func(i int) bool { return c.snaps[i].seq > seq })
	if i > 0 {
		return c.snaps[i-1].count, c.snaps[i-1].acc, true
	}
	return c.baseCount, c.baseAcc, true
}

func (c *chainCheck) headRecordCheck(seq uint64, r *wire.Record) {
	h := headFromWire(r.Head)
	if c.headsKnown && c.headRecord != 0 && seq == c.headRecord {
		// The record of the baseline head of a walk that starts after it.
		if !bytes.Equal(h.Digest(), c.headDigest) {
			c.fail(seq, "heads index mismatch", "record %d does not hold head %d", seq, c.headCounter)
		}
		return
	}
	switch {
	case !h.wellFormed():
		c.fail(seq, "malformed record", "head record with malformed fields")
		return
	case !bytes.Equal(h.Store, c.storeID):
		c.fail(seq, "head of another store", "head %d names store %x", h.Counter, h.Store)
		return
	case !c.headsKnown:
		// Open from an acknowledgement: the first head sets the baseline.
		c.headsKnown = true
	case h.Counter != max(c.headCounter, c.ackCounter)+1:
		c.fail(seq, "head chain broken", "head %d follows head %d", h.Counter, c.headCounter)
		return
	case !bytes.Equal(h.Prev, c.headDigest):
		c.fail(seq, "head chain broken", "head %d does not name head %d as its predecessor", h.Counter, c.headCounter)
		return
	}
	if h.Seq >= seq || h.Seq < c.headRecord {
		c.fail(seq, "head chain broken", "head %d covers record %d", h.Counter, h.Seq)
		return
	}
	stored := c.audit.Get(wire.U64(h.Seq))
	if len(stored) < wire.HashSize || !bytes.Equal(stored[:wire.HashSize], h.Hash) {
		c.fail(h.Seq, "signed head mismatch", "head %d signs another hash for record %d", h.Counter, h.Seq)
		return
	}
	if n, acc, ok := c.revAt(h.Seq); ok && (n != h.Revocations || !bytes.Equal(acc, h.RevocationDigest)) {
		c.fail(h.Seq, "signed head mismatch", "head %d signs %d revocations up to record %d, the chain has %d", h.Counter, h.Revocations, h.Seq, n)
		return
	}
	switch err := h.Verify(c.pub); {
	case c.pub == nil:
		c.err = fmt.Errorf("%w: signed heads present but no audit public key", ErrInvalid)
		return
	case errors.Is(err, errBadSignature):
		c.fail(seq, "bad head signature", "head %d", h.Counter)
		return
	case err != nil:
		c.err = err
		return
	}
	if !bytes.Equal(c.tx.Bucket(wire.BucketHeads).Get(wire.U64(h.Counter)), wire.U64(seq)) {
		c.fail(seq, "heads index mismatch", "head %d is not indexed at record %d", h.Counter, seq)
		return
	}
	c.rep.Heads++
	c.headCounter, c.headDigest, c.headRecord, c.headCovered = h.Counter, h.Digest(), seq, h.Seq
	c.ackCounter = 0
	if !c.revKnown {
		c.setRevBase(h.Seq, h.Revocations, h.RevocationDigest)
	}
	if _, want := c.digests[h.Counter]; want {
		c.digests[h.Counter] = c.headDigest
	}
}

// finish checks the meta bucket against the walk and, for a full walk,
// that the buckets hold nothing the chain does not account for.
func (c *chainCheck) finish() error {
	if seq, hash, err := chainState(c.tx); err != nil || seq != c.rep.LastSeq || !bytes.Equal(hash, c.prev) {
		c.fail(c.rep.LastSeq+1, "chain head mismatch", "the meta chain head is record %d, the last record is %d", seq, c.rep.LastSeq)
		return c.err
	}
	st, err := readHeadState(c.tx)
	if err != nil || st.counter != c.headCounter || st.recordSeq != c.headRecord || !bytes.Equal(st.digest, c.headDigest) {
		c.fail(0, "heads index mismatch", "the meta head is head %d at record %d, the chain's newest is head %d at record %d",
			st.counter, st.recordSeq, c.headCounter, c.headRecord)
		return c.err
	}
	if c.headCounter == 0 {
		c.fail(0, "no signed head", "the audit chain has no signed head")
		return c.err
	}
	n, acc, err := revState(c.tx)
	if err != nil || n != c.revCount || !bytes.Equal(acc, c.revAcc) {
		c.fail(0, "revocation accumulator mismatch", "the meta bucket counts %d revocations, the chain %d", n, c.revCount)
		return c.err
	}
	c.rep.Newest = HeadRef{Counter: c.headCounter, Seq: c.headCovered, Digest: c.headDigest}
	c.rep.Unsigned = c.rep.LastSeq - c.headCovered
	if c.full {
		c.bucketsAgree()
	}
	return c.err
}

// bucketsAgree checks, after a full walk, that every certificate,
// serial-index entry and revocation in the buckets has its record.
func (c *chainCheck) bucketsAgree() {
	var n uint64
	_ = c.certs.ForEach(func(k, v []byte) error {
		n++
		if len(k) != 8 || binary.BigEndian.Uint64(k) > c.issued || binary.BigEndian.Uint64(k) == 0 {
			serial := "?"
			if w, err := wire.DecodeCert(v); err == nil {
				serial = w.Serial
			}
			c.fail(0, "certificate without issued record", "certificate %x (serial %s) is in the certificate bucket but no issued record names it", k, serial)
			return errStop
		}
		return nil
	})
	if c.err == nil && (n != c.issued || c.certs.Sequence() != c.issued) {
		c.fail(0, "certificate without issued record", "the certificate bucket holds %d certificates (sequence %d), the chain issued %d", n, c.certs.Sequence(), c.issued)
	}
	c.rep.Certificates = int(c.issued)
	var idx uint64
	_ = c.serials.ForEach(func(_, _ []byte) error { idx++; return nil })
	if c.err == nil && idx != c.issued {
		c.fail(0, "serial index mismatch", "the serial index holds %d entries for %d certificates", idx, c.issued)
	}
	seen := map[string]bool{}
	_ = c.tx.Bucket(wire.BucketRevocations).ForEach(func(k, v []byte) error {
		serial, err := wire.ParseSerialKey(k)
		if err != nil {
			c.fail(0, "revocation without its record", "revocation key %x", k)
			return errStop
		}
		seen[serial] = true
		want, ok := c.revs[serial]
		got, err := wire.DecodeRevocation(v)
		switch {
		case !ok:
			c.fail(0, "revocation without its record", "serial %s is in the revocation set but no revoked record names it", serial)
		case err != nil || got != want:
			c.fail(0, "revocation differs from its record", "serial %s: the revocation set says reason %d at %s (record %d), record %d says reason %d at %s",
				serial, got.Reason, fromUnixNano(got.Time).Format("2006-01-02T15:04:05Z"), got.RecordSeq, want.RecordSeq, want.Reason, fromUnixNano(want.Time).Format("2006-01-02T15:04:05Z"))
		}
		if c.err != nil {
			return errStop
		}
		return nil
	})
	for serial, r := range c.revs {
		if c.err == nil && !seen[serial] {
			c.fail(0, "revocation missing", "serial %s, revoked by record %d, is not in the revocation set", serial, r.RecordSeq)
		}
	}
	c.rep.Revocations = len(c.revs)
}

// errStop ends a ForEach early.
var errStop = errors.New("stop")

// checkpoint checks that the walked store extends cp, or that a signed
// acknowledgement supersedes it.
func (c *chainCheck) checkpoint(cp Checkpoint, rep *VerifyReport) error {
	if !bytes.Equal(cp.Store, c.storeID) {
		return &CheckpointError{Reason: "other store", Checkpoint: cp, Newest: rep.Newest}
	}
	if err := cp.Verify(c.pub); err != nil {
		return &CheckpointError{Reason: "bad signature", Checkpoint: cp, Newest: rep.Newest, Err: err}
	}
	d := c.digests[cp.Counter]
	if d != nil && bytes.Equal(d, cp.Digest) {
		rep.Checkpoints++
		return nil
	}
	for i := len(c.acks) - 1; i >= 0; i-- {
		if a := c.acks[i]; a.seq <= c.headCovered && supersedes(a.ref, cp) {
			rep.Superseded = append(rep.Superseded, Superseded{Checkpoint: HeadRef{cp.Counter, cp.Seq, cp.Digest}, AckSeq: a.seq, Event: a.event})
			return nil
		}
	}
	reason := "forked"
	if cp.Counter > c.headCounter {
		reason = "behind"
	}
	return &CheckpointError{Reason: reason, Checkpoint: cp, Newest: rep.Newest}
}
