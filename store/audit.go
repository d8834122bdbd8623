package store

import (
	"bytes"
	"crypto/sha256"
	"encoding/binary"
	"encoding/json"
	"fmt"
	"strings"
	"time"

	bolt "go.etcd.io/bbolt"
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

// Audit events.
const (
	EventIssued   Event = "issued"
	EventDenied   Event = "denied"
	EventPending  Event = "pending"
	EventApproved Event = "approved"
	EventRevoked  Event = "revoked"
	EventKeygen   Event = "keygen"
	EventConfig   Event = "config"
	EventStart    Event = "start"
	EventStop     Event = "stop"
)

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
	// Prev is the previous record's Hash (empty for Seq 1).
	Prev []byte
	// Hash is SHA-256(Prev || canonical encoding of the record without Hash).
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

// wireRecord is the canonical encoding of a record without its hash. Field
// order is fixed by the struct, so encoding/json output is deterministic.
type wireRecord struct {
	V         int      `json:"v"`
	Seq       uint64   `json:"seq"`
	Time      int64    `json:"time"`
	Event     Event    `json:"event"`
	Requester Identity `json:"requester"`
	CSRDigest string   `json:"csr_digest,omitempty"`
	Serial    string   `json:"serial,omitempty"`
	Profile   string   `json:"profile,omitempty"`
	Verdict   string   `json:"verdict,omitempty"`
	Reason    string   `json:"reason,omitempty"`
	Flags     []string `json:"flags,omitempty"`
	Prev      []byte   `json:"prev,omitempty"`
}

const recordVersion = 1

// encodeRecord returns the canonical encoding of r without its Hash.
func encodeRecord(r AuditRecord) ([]byte, error) {
	return json.Marshal(wireRecord{
		V: recordVersion, Seq: r.Seq, Time: unixNano(r.Time), Event: r.Event, Requester: r.Requester,
		CSRDigest: r.CSRDigest, Serial: r.Serial, Profile: r.Profile, Verdict: r.Verdict,
		Reason: r.Reason, Flags: r.Flags, Prev: r.Prev,
	})
}

// recordHash is SHA-256(prev || enc).
func recordHash(prev, enc []byte) []byte {
	h := sha256.New()
	h.Write(prev)
	h.Write(enc)
	return h.Sum(nil)
}

// decodeStored parses a stored value (32-byte hash, then the canonical
// encoding). It fails unless the encoding is exactly canonical.
func decodeStored(v []byte) (AuditRecord, []byte, error) {
	if len(v) < sha256.Size {
		return AuditRecord{}, nil, fmt.Errorf("short value")
	}
	enc := v[sha256.Size:]
	var w wireRecord
	dec := json.NewDecoder(bytes.NewReader(enc))
	dec.DisallowUnknownFields()
	if err := dec.Decode(&w); err != nil {
		return AuditRecord{}, nil, err
	}
	if w.V != recordVersion {
		return AuditRecord{}, nil, fmt.Errorf("record version %d", w.V)
	}
	r := AuditRecord{
		Seq: w.Seq, Time: fromUnixNano(w.Time), Event: w.Event, Requester: w.Requester,
		CSRDigest: w.CSRDigest, Serial: w.Serial, Profile: w.Profile, Verdict: w.Verdict,
		Reason: w.Reason, Flags: w.Flags, Prev: w.Prev,
		Hash: bytes.Clone(v[:sha256.Size]),
	}
	again, err := encodeRecord(r)
	if err != nil {
		return AuditRecord{}, nil, err
	}
	if !bytes.Equal(again, enc) {
		return AuditRecord{}, nil, fmt.Errorf("non-canonical encoding")
	}
	return r, enc, nil
}

// chainHead reads the meta chain head (seq 0 and nil hash when empty).
func chainHead(tx *bolt.Tx) (uint64, []byte, error) {
	m := bucket(tx, bucketMeta)
	if m == nil {
		return 0, nil, nil
	}
	v := m.Get(keyChainHead)
	if v == nil {
		return 0, nil, nil
	}
	if len(v) != 8+sha256.Size {
		return 0, nil, fmt.Errorf("store: corrupt chain head")
	}
	return binary.BigEndian.Uint64(v[:8]), bytes.Clone(v[8:]), nil
}

// appendRecord chains rec after the current head inside tx and returns it.
// It only writes through tx, so it is safe to re-run in a batch.
func appendRecord(tx *bolt.Tx, rec AuditRecord) (AuditRecord, error) {
	seq, prev, err := chainHead(tx)
	if err != nil {
		return AuditRecord{}, err
	}
	rec.Seq = seq + 1
	rec.Prev = prev
	rec.Hash = nil
	rec.Time = fromUnixNano(unixNano(rec.Time))
	enc, err := encodeRecord(rec)
	if err != nil {
		return AuditRecord{}, fmt.Errorf("store: encode audit record: %w", err)
	}
	rec.Hash = recordHash(prev, enc)
	val := make([]byte, 0, len(rec.Hash)+len(enc))
	val = append(append(val, rec.Hash...), enc...)
	if err := tx.Bucket(bucketAudit).Put(u64(rec.Seq), val); err != nil {
		return AuditRecord{}, err
	}
	head := make([]byte, 0, 8+sha256.Size)
	head = append(append(head, u64(rec.Seq)...), rec.Hash...)
	if err := tx.Bucket(bucketMeta).Put(keyChainHead, head); err != nil {
		return AuditRecord{}, err
	}
	return rec, nil
}

// Append adds an audit record of any event other than issued and revoked
// (which only Issue and Revoke write), durably and group-committed, and
// returns it as chained.
func (db *DB) Append(rec AuditRecord) (AuditRecord, error) {
	switch rec.Event {
	case "":
		return AuditRecord{}, fmt.Errorf("%w: audit record without event", ErrInvalid)
	case EventIssued, EventRevoked:
		return AuditRecord{}, fmt.Errorf("%w: %s records are written by Issue and Revoke", ErrInvalid, rec.Event)
	}
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

// AuditRecords returns the records matching f in sequence order. It decodes
// but does not verify them; use Verify for that.
func (db *DB) AuditRecords(f AuditFilter) ([]AuditRecord, error) {
	out := []AuditRecord{}
	err := db.view(func(tx *bolt.Tx) error {
		b := bucket(tx, bucketAudit)
		if b == nil {
			return nil
		}
		cur := b.Cursor()
		for k, v := cur.Seek(u64(f.AfterSeq + 1)); k != nil; k, v = cur.Next() {
			if f.Limit > 0 && len(out) >= f.Limit {
				break
			}
			r, _, err := decodeStored(v)
			if err != nil {
				return fmt.Errorf("store: decode audit record %x: %w", k, err)
			}
			if !f.Since.IsZero() && r.Time.Before(f.Since) {
				continue
			}
			if f.Serial != "" && r.Serial != f.Serial {
				continue
			}
			if f.Requester != "" && r.Requester.Fingerprint != f.Requester &&
				!strings.Contains(r.Requester.Subject, f.Requester) {
				continue
			}
			out = append(out, r)
		}
		return nil
	})
	return out, err
}
