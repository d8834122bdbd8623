package store

import (
	"errors"
	"fmt"
	"slices"
	"sort"
	"time"

	bolt "go.etcd.io/bbolt"

	"github.com/estca/estca/store/internal/wire"
)

// Revocation records that a certificate is revoked.
type Revocation struct {
	// Serial is the revoked certificate's serial.
	Serial string
	// Reason is the CRLReason code (RFC 5280 §5.3.1).
	Reason int
	// Time is the revocation time.
	Time time.Time
}

// ErrHeadNotSigned is matched by Revoke's error when the revocation was
// committed and is in force, but the head over it could not be signed.
var ErrHeadNotSigned = errors.New("store: revocation committed, but its audit head is not signed")

// validReason reports whether r is a CRLReason code (RFC 5280 §5.3.1; 7 is unused).
func validReason(r int) bool { return r >= 0 && r <= 10 && r != 7 }

// Revoke marks the certificate revoked with the CRLReason code and time (zero
// means now) and appends the audit record (event revoked, stating serial,
// reason and time) in the same durable transaction; the revocation is in
// force for Revocation as soon as Revoke returns. With Options.Signer it
// then signs a head at once, so that the revocation is covered by a
// signature (and by the checkpoint): a revocation removed from the file
// later fails Open's check. ErrNotFound if there is no such certificate,
// ErrAlreadyRevoked if it is already revoked; an error matching
// ErrHeadNotSigned if only the signing failed.
func (db *DB) Revoke(serial string, reason int, at time.Time, rec AuditRecord) error {
	return db.revoke(serial, reason, at, rec, false)
}

// FlagUnknownCertificate marks the revoked record of a certificate this
// store does not hold (RevokeUnknown).
const FlagUnknownCertificate = "unknown-certificate"

// RevokeUnknown revokes a serial that is not in the store, like Revoke: a
// certificate this CA issued that the store no longer holds (issued after
// the backup a loss-accepting Restore put back), so that the CRL lists it.
// The revoked record carries FlagUnknownCertificate; Verify accepts it only
// for a serial no issued record before it names, so it can never stand in
// for a certificate deleted from the store. It is an operator's act, signed
// at once like every revocation. ErrCertificateKnown if the store holds
// the certificate (use Revoke), ErrAlreadyRevoked if the serial is revoked.
func (db *DB) RevokeUnknown(serial string, reason int, at time.Time, rec AuditRecord) error {
	return db.revoke(serial, reason, at, rec, true)
}

func (db *DB) revoke(serial string, reason int, at time.Time, rec AuditRecord, unknown bool) error {
	p, err := prepareRevoke(serial, reason, at, rec, db.now())
	if err != nil {
		return err
	}
	p.unknown = unknown
	if unknown {
		p.rec.Flags = append(slices.Clip(p.rec.Flags), FlagUnknownCertificate)
	}
	if err := db.batch(p.write); err != nil {
		return err
	}
	db.revMu.Lock()
	db.revs[serial] = *p.rec.Revocation
	db.revMu.Unlock()
	if db.opts.Signer != nil {
		if _, err := db.SignHead(); err != nil {
			return fmt.Errorf("%w: %w", ErrHeadNotSigned, err)
		}
	}
	return nil
}

// revocation is a checked Revoke, ready to write in a transaction.
type revocation struct {
	sk      []byte
	rec     AuditRecord
	unknown bool // RevokeUnknown: the store must not hold the certificate
}

func prepareRevoke(serial string, reason int, at time.Time, rec AuditRecord, now time.Time) (*revocation, error) {
	sk := wire.SerialKey(serial)
	if sk == nil {
		return nil, fmt.Errorf("%w: serial %q", ErrInvalid, serial)
	}
	if !validReason(reason) {
		return nil, fmt.Errorf("%w: revocation reason %d", ErrInvalid, reason)
	}
	if at.IsZero() {
		at = now
	}
	at = fromUnixNano(unixNano(at))
	if rec.Time.IsZero() {
		rec.Time = at
	}
	rec.Event = EventRevoked
	rec.Serial = serial
	rec.Revocation = &Revocation{Serial: serial, Reason: reason, Time: at}
	rec.CertSeq, rec.CertDigest, rec.Head, rec.Ack = 0, nil, nil, nil
	return &revocation{sk: sk, rec: rec}, nil
}

// write stores the revocation and its record in tx (safe to re-run).
func (p *revocation) write(tx *bolt.Tx) error {
	serial := p.rec.Serial
	seq, err := certSeqOf(tx, serial)
	if err != nil {
		return err
	}
	switch {
	case seq == 0 && !p.unknown:
		return fmt.Errorf("%w: certificate %s", ErrNotFound, serial)
	case seq != 0 && p.unknown:
		return fmt.Errorf("%w: %s", ErrCertificateKnown, serial)
	}
	rb := tx.Bucket(wire.BucketRevocations)
	if rb.Get(p.sk) != nil {
		return fmt.Errorf("%w: %s", ErrAlreadyRevoked, serial)
	}
	r, err := appendRecord(tx, p.rec)
	if err != nil {
		return err
	}
	v := p.rec.Revocation
	return rb.Put(p.sk, wire.EncodeRevocation(wire.Revocation{RecordSeq: r.Seq, Reason: v.Reason, Time: unixNano(v.Time)}))
}

// loadRevocations reads the revocations bucket.
func loadRevocations(tx *bolt.Tx) (map[string]Revocation, error) {
	out := map[string]Revocation{}
	err := tx.Bucket(wire.BucketRevocations).ForEach(func(k, v []byte) error {
		serial, err := wire.ParseSerialKey(k)
		if err != nil {
			return fmt.Errorf("%w: revocation key %x", ErrDamaged, k)
		}
		w, err := wire.DecodeRevocation(v)
		if err != nil {
			return fmt.Errorf("%w: revocation of %s: %v", ErrDamaged, serial, err)
		}
		out[serial] = Revocation{Serial: serial, Reason: w.Reason, Time: fromUnixNano(w.Time)}
		return nil
	})
	return out, err
}

// Revocation returns the revocation of serial, or ErrNotFound if it is not
// revoked. It answers from the revocation set loaded at Open (checked
// against the signed heads when Options.AuditKey is set) and kept current by
// Revoke, never from the file: an edit of the file while the store is open
// does not change it.
func (db *DB) Revocation(serial string) (Revocation, error) {
	db.revMu.RLock()
	r, ok := db.revs[serial]
	db.revMu.RUnlock()
	if !ok {
		return Revocation{}, fmt.Errorf("%w: revocation %q", ErrNotFound, serial)
	}
	return r, nil
}

// Revocations returns every revocation in force, in numeric serial order
// (for CRL generation).
func (db *DB) Revocations() ([]Revocation, error) {
	db.revMu.RLock()
	out := make([]Revocation, 0, len(db.revs))
	for _, r := range db.revs {
		out = append(out, r)
	}
	db.revMu.RUnlock()
	sort.Slice(out, func(i, j int) bool {
		a, b := out[i].Serial, out[j].Serial
		if len(a) != len(b) {
			return len(a) < len(b)
		}
		return a < b
	})
	return out, nil
}
