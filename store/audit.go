package store

import (
	"bytes"
	"fmt"
	"strings"
	"time"

	bolt "go.etcd.io/bbolt"

	"github.com/estca/estca/store/internal/wire"
)

// Identity is how a requester is recorded: derived from its DTLS client certificate.
type Identity struct {
	// Fingerprint is the hex SHA-256 of the client certificate DER.
	Fingerprint string `json:"fingerprint,omitempty"`
	// Subject is the client certificate's subject DN.
	Subject string `json:"subject,omitempty"`
	// IDevIDSerial is the IDevID serialNumber attribute, if any.
	IDevIDSerial string `json:"idevid_serial,omitempty"`
	// Anchor names the trust anchor that accepted the chain.
	Anchor string `json:"anchor,omitempty"`
	// Kind is "idevid" or "operational".
	Kind string `json:"kind,omitempty"`
}

// Event names what an audit record records.
type Event string

// Audit events. Issued, revoked, head, created, restored, migrated and
// checkpoint records are written by the store itself (Issue, Revoke,
// SignHead, Create, Restore, Migrate, AcknowledgeCheckpoint); Append
// writes the others.
const (
	EventIssued     Event = "issued"
	EventDenied     Event = "denied"
	EventPending    Event = "pending"
	EventApproved   Event = "approved"
	EventRevoked    Event = "revoked"
	EventKeygen     Event = "keygen"
	EventConfig     Event = "config"
	EventStart      Event = "start"
	EventStop       Event = "stop"
	EventHead       Event = "head"
	EventCreated    Event = "created"
	EventRestored   Event = "restored"
	EventMigrated   Event = "migrated"
	EventCheckpoint Event = "checkpoint"
)

// storeEvents are the events only the store writes.
var storeEvents = map[Event]bool{EventIssued: true, EventRevoked: true, EventHead: true,
	EventCreated: true, EventRestored: true, EventMigrated: true, EventCheckpoint: true}

// AuditRecord is one entry of the hash-chained audit log. Seq, Prev and Hash
// are set by the store; Time is set by the store when zero.
type AuditRecord struct {
	// Seq is the record's position, from 1, contiguous.
	Seq uint64
	// Time is when the event happened (stored with nanosecond precision, UTC).
	Time time.Time
	// Event says what happened.
	Event Event
	// Requester is who asked, if anyone.
	Requester Identity
	// CSRDigest is the hex SHA-256 of the CSR DER, if any.
	CSRDigest string
	// Serial is the certificate concerned, if any.
	Serial string
	// Profile is the certificate profile, if any.
	Profile string
	// Verdict is the policy outcome in words.
	Verdict string
	// Reason explains the verdict.
	Reason string
	// Flags mark notable conditions, e.g. "expired-idevid-accepted".
	Flags []string
	// CertSeq is, in an issued record, the certificate's issuance sequence
	// number (set by Issue).
	CertSeq uint64 `json:",omitempty"`
	// CertDigest is, in an issued record, the SHA-256 of the certificate
	// DER (set by Issue): the record commits to the certificate.
	CertDigest []byte `json:",omitempty"`
	// Revocation is, in a revoked record, the revocation it makes (set by Revoke).
	Revocation *Revocation `json:",omitempty"`
	// Head is, in a head record, the signed head (set by SignHead).
	Head *Head `json:",omitempty"`
	// Ack is, in a restored, migrated or checkpoint record, the signed head
	// the operator acknowledged as superseded (see AcknowledgeCheckpoint).
	Ack *HeadRef `json:",omitempty"`
	// Prev is the previous record's Hash (empty for Seq 1).
	Prev []byte
	// Hash is SHA-256(Prev || canonical encoding of the record).
	Hash []byte
}

// AuditFilter selects audit records, in sequence order.
type AuditFilter struct {
	// Since keeps records with Time at or after it (zero: all).
	Since time.Time
	// Serial keeps records about that serial ("": all).
	Serial string
	// Requester keeps records whose requester fingerprint equals it or whose
	// subject contains it ("": all).
	Requester string
	// AfterSeq is a cursor: only records with a greater Seq.
	AfterSeq uint64
	// Limit caps the result; 0 means no limit.
	Limit int
}

// unixNano encodes t, keeping the zero time distinguishable.
func unixNano(t time.Time) int64 {
	if t.IsZero() {
		return 0
	}
	return t.UnixNano()
}

// fromUnixNano is the inverse of unixNano (in UTC).
func fromUnixNano(n int64) time.Time {
	if n == 0 {
		return time.Time{}
	}
	return time.Unix(0, n).UTC()
}

// toWire converts r for encoding (Seq set by the caller).
func toWire(r *AuditRecord) wire.Record {
	w := wire.Record{
		Seq: r.Seq, Time: unixNano(r.Time), Event: string(r.Event),
		Fingerprint: r.Requester.Fingerprint, Subject: r.Requester.Subject,
		IDevIDSerial: r.Requester.IDevIDSerial, Anchor: r.Requester.Anchor, Kind: r.Requester.Kind,
		CSRDigest: r.CSRDigest, Serial: r.Serial, Profile: r.Profile, Verdict: r.Verdict,
		Reason: r.Reason, Flags: r.Flags, CertSeq: r.CertSeq, CertDigest: r.CertDigest,
	}
	if v := r.Revocation; v != nil {
		w.Rev = &wire.Rev{Reason: v.Reason, At: unixNano(v.Time)}
	}
	if h := r.Head; h != nil {
		wh := h.toWire()
		w.Head = &wh
	}
	if a := r.Ack; a != nil {
		w.Ack = &wire.Ref{Counter: a.Counter, Seq: a.Seq, Digest: a.Digest}
	}
	return w
}

// fromWire converts a decoded record.
func fromWire(w *wire.Record, prev, hash []byte) AuditRecord {
	r := AuditRecord{
		Seq: w.Seq, Time: fromUnixNano(w.Time), Event: Event(w.Event),
		Requester: Identity{Fingerprint: w.Fingerprint, Subject: w.Subject, IDevIDSerial: w.IDevIDSerial,
			Anchor: w.Anchor, Kind: w.Kind},
		CSRDigest: w.CSRDigest, Serial: w.Serial, Profile: w.Profile, Verdict: w.Verdict, Reason: w.Reason,
		Flags: w.Flags, CertSeq: w.CertSeq, CertDigest: w.CertDigest,
		Prev: bytes.Clone(prev), Hash: bytes.Clone(hash),
	}
	if v := w.Rev; v != nil {
		r.Revocation = &Revocation{Serial: w.Serial, Reason: v.Reason, Time: fromUnixNano(v.At)}
	}
	if h := w.Head; h != nil {
		hh := headFromWire(h)
		r.Head = &hh
	}
	if a := w.Ack; a != nil {
		r.Ack = &HeadRef{Counter: a.Counter, Seq: a.Seq, Digest: a.Digest}
	}
	return r
}

// chainState reads the meta chain head (seq 0 and nil hash when empty).
func chainState(tx *bolt.Tx) (uint64, []byte, error) {
	v := tx.Bucket(wire.BucketMeta).Get(wire.MetaChain)
	if v == nil {
		return 0, nil, nil
	}
	if len(v) != 8+wire.HashSize {
		return 0, nil, fmt.Errorf("%w: meta chain head of %d bytes", ErrDamaged, len(v))
	}
	seq, _ := wire.ParseU64(v[:8])
	return seq, bytes.Clone(v[8:]), nil
}

// revState reads the revocation accumulator after the newest record.
func revState(tx *bolt.Tx) (uint64, []byte, error) {
	v := tx.Bucket(wire.BucketMeta).Get(wire.MetaRevocations)
	if len(v) != 8+wire.HashSize {
		return 0, nil, fmt.Errorf("%w: meta revocation accumulator of %d bytes", ErrDamaged, len(v))
	}
	n, _ := wire.ParseU64(v[:8])
	return n, bytes.Clone(v[8:]), nil
}

// appendRecord chains rec after the current head inside tx and returns it.
// A revoked record also advances the revocation accumulator. It only
// writes through tx, so it is safe to re-run in a batch.
func appendRecord(tx *bolt.Tx, rec AuditRecord) (AuditRecord, error) {
	seq, prev, err := chainState(tx)
	if err != nil {
		return AuditRecord{}, err
	}
	if rec.Serial != "" && !wire.ValidSerial(rec.Serial) {
		return AuditRecord{}, fmt.Errorf("%w: serial %q", ErrInvalid, rec.Serial)
	}
	rec.Seq = seq + 1
	rec.Prev = prev
	rec.Time = fromUnixNano(unixNano(rec.Time))
	w := toWire(&rec)
	enc := wire.EncodeRecord(&w)
	rec.Hash = wire.RecordHash(prev, enc)
	audit := tx.Bucket(wire.BucketAudit)
	audit.FillPercent = 1 // keys only ever append
	if err := audit.Put(wire.U64(rec.Seq), wire.StoredRecord(rec.Hash, enc)); err != nil {
		return AuditRecord{}, err
	}
	meta := tx.Bucket(wire.BucketMeta)
	if err := meta.Put(wire.MetaChain, append(wire.U64(rec.Seq), rec.Hash...)); err != nil {
		return AuditRecord{}, err
	}
	if v := rec.Revocation; v != nil {
		n, acc, err := revState(tx)
		if err != nil {
			return AuditRecord{}, err
		}
		acc = wire.RevAccNext(acc, rec.Seq, rec.Serial, v.Reason, unixNano(v.Time))
		if err := meta.Put(wire.MetaRevocations, append(wire.U64(n+1), acc...)); err != nil {
			return AuditRecord{}, err
		}
	}
	if rec.Ack != nil {
		if err := meta.Put(wire.MetaAck, wire.U64(rec.Seq)); err != nil {
			return AuditRecord{}, err
		}
	}
	return rec, nil
}

// Append adds an audit record of an event the store does not write itself
// (see the Event constants), durably and group-committed, and returns it as
// chained. The store-only fields (CertSeq, CertDigest, Revocation, Head,
// Ack) must be empty.
func (db *DB) Append(rec AuditRecord) (AuditRecord, error) {
	switch {
	case rec.Event == "":
		return AuditRecord{}, fmt.Errorf("%w: audit record without event", ErrInvalid)
	case storeEvents[rec.Event]:
		return AuditRecord{}, fmt.Errorf("%w: %s records are written by the store", ErrInvalid, rec.Event)
	case rec.CertSeq != 0 || rec.CertDigest != nil || rec.Revocation != nil || rec.Head != nil || rec.Ack != nil:
		return AuditRecord{}, fmt.Errorf("%w: store-only fields set in an appended record", ErrInvalid)
	}
	return db.appendOwn(rec)
}

// appendOwn appends any record, durably; the store's own records go through it.
func (db *DB) appendOwn(rec AuditRecord) (AuditRecord, error) {
	if rec.Time.IsZero() {
		rec.Time = db.now()
	}
	var out AuditRecord
	err := db.batch(func(tx *bolt.Tx) error {
		var err error
		out, err = appendRecord(tx, rec)
		return err
	})
	if err != nil {
		return AuditRecord{}, err
	}
	return out, nil
}

// record reads and decodes record seq in tx, with its stored hash.
func record(tx *bolt.Tx, seq uint64) (wire.Record, []byte, error) {
	v := tx.Bucket(wire.BucketAudit).Get(wire.U64(seq))
	if v == nil {
		return wire.Record{}, nil, fmt.Errorf("%w: audit record %d", ErrNotFound, seq)
	}
	hash, enc, err := wire.SplitStored(v)
	if err != nil {
		return wire.Record{}, nil, err
	}
	r, err := wire.DecodeRecord(enc)
	if err != nil {
		return wire.Record{}, nil, err
	}
	return r, hash, nil
}

// AuditRecords returns the records matching f in sequence order. It decodes
// but does not verify them; use Verify for that.
func (db *DB) AuditRecords(f AuditFilter) ([]AuditRecord, error) {
	out := []AuditRecord{}
	err := db.view(func(tx *bolt.Tx) error {
		audit := tx.Bucket(wire.BucketAudit)
		var prev []byte
		if f.AfterSeq > 0 {
			if v := audit.Get(wire.U64(f.AfterSeq)); len(v) >= wire.HashSize {
				prev = v[:wire.HashSize]
			}
		}
		cur := audit.Cursor()
		for k, v := cur.Seek(wire.U64(f.AfterSeq + 1)); k != nil; k, v = cur.Next() {
			if f.Limit > 0 && len(out) >= f.Limit {
				break
			}
			hash, enc, err := wire.SplitStored(v)
			if err != nil {
				return fmt.Errorf("store: audit record %x: %w", k, err)
			}
			w, err := wire.DecodeRecord(enc)
			if err != nil {
				return fmt.Errorf("store: audit record %x: %w", k, err)
			}
			p := prev
			prev = hash
			if !f.Since.IsZero() && fromUnixNano(w.Time).Before(f.Since) {
				continue
			}
			if f.Serial != "" && w.Serial != f.Serial {
				continue
			}
			if f.Requester != "" && w.Fingerprint != f.Requester && !strings.Contains(w.Subject, f.Requester) {
				continue
			}
			out = append(out, fromWire(&w, p, hash))
		}
		return nil
	})
	return out, err
}
