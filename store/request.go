package store

import (
	"bytes"
	"errors"
	"fmt"
	"strings"
	"time"

	bolt "go.etcd.io/bbolt"

	"github.com/estca/estca/store/internal/wire"
)

// RequestState is the life-cycle state of an enrollment request.
type RequestState string

// Request states.
const (
	// StatePending waits for an operator decision (delayed enrollment, RFC 9148 §4.2).
	StatePending RequestState = "pending"
	// StateApproved is approved and not yet issued.
	StateApproved RequestState = "approved"
	// StateDenied was refused by an operator.
	StateDenied RequestState = "denied"
	// StateIssued has a certificate (Request.Serial).
	StateIssued RequestState = "issued"
)

var stateCodes = map[RequestState]byte{StatePending: 1, StateApproved: 2, StateDenied: 3, StateIssued: 4}

func stateOf(b byte) (RequestState, bool) {
	for s, c := range stateCodes {
		if c == b {
			return s, true
		}
	}
	return "", false
}

// Request is an enrollment request and its decision, keyed by requester
// fingerprint and CSR digest so an identical re-sent CSR finds it.
type Request struct {
	// Requester is who asked. Only the fingerprint is kept for requests that
	// were issued at once (the issued audit record holds the rest).
	Requester Identity
	// Identity is the policy identity of the requester (policy.IdentityOf):
	// pending requests are counted per identity (PendingCount).
	Identity string
	// CSRDigest is the hex SHA-256 of the CSR DER.
	CSRDigest string
	// CSR is the DER CSR, kept for pending requests so they can be issued later.
	CSR []byte
	// Profile names the requested profile.
	Profile string
	// State is the decision state.
	State RequestState
	// Serial is the issued certificate's serial once State is StateIssued.
	Serial string
	// Reason is the operator's reason for the decision.
	Reason string
	// Created is when the request was first stored; Decided when its state last changed.
	Created, Decided time.Time
}

// storedRequest is a request as kept, with its certificate's issuance number.
type storedRequest struct {
	wire.Request
	requester, csrDigest string
}

// putRequest stores q and keeps the pending index in step with its state.
func putRequest(tx *bolt.Tx, requester, csrDigest string, q *wire.Request) error {
	if err := tx.Bucket(wire.BucketRequests).Put(wire.RequestKey(requester, csrDigest), wire.EncodeRequest(q)); err != nil {
		return err
	}
	pb, err := addedBucket(tx, wire.BucketPending)
	if err != nil {
		return err
	}
	k := wire.PendingKey(q.Identity, requester, csrDigest)
	if q.State == stateCodes[StatePending] {
		return pb.Put(k, nil)
	}
	return pb.Delete(k)
}

// addedBucket returns one of wire.AddedBuckets in a write transaction,
// creating it in a store made before it existed.
func addedBucket(tx *bolt.Tx, name []byte) (*bolt.Bucket, error) {
	if b := tx.Bucket(name); b != nil {
		return b, nil
	}
	return tx.CreateBucket(name)
}

func getRequest(tx *bolt.Tx, requester, csrDigest string) (storedRequest, error) {
	if requester == "" || csrDigest == "" {
		return storedRequest{}, fmt.Errorf("%w: request", ErrNotFound)
	}
	v := tx.Bucket(wire.BucketRequests).Get(wire.RequestKey(requester, csrDigest))
	if v == nil {
		return storedRequest{}, fmt.Errorf("%w: request", ErrNotFound)
	}
	q, err := wire.DecodeRequest(v)
	if err != nil {
		return storedRequest{}, fmt.Errorf("store: request: %w", err)
	}
	return storedRequest{q, requester, csrDigest}, nil
}

// public converts a stored request, looking up its certificate's serial.
func (q storedRequest) public(tx *bolt.Tx) (Request, error) {
	st, ok := stateOf(q.State)
	if !ok {
		return Request{}, fmt.Errorf("%w: request state %d", ErrDamaged, q.State)
	}
	r := Request{
		Requester: Identity{Fingerprint: q.requester, Subject: q.Subject, IDevIDSerial: q.IDevIDSerial,
			Anchor: q.Anchor, Kind: q.Kind},
		Identity:  q.Identity,
		CSRDigest: q.csrDigest, CSR: q.CSR, Profile: q.Profile, State: st, Reason: q.Reason,
		Created: fromUnixNano(q.Created), Decided: fromUnixNano(q.Decided),
	}
	if q.CertSeq != 0 {
		c, err := certBySeq(tx, q.CertSeq)
		if err != nil {
			return Request{}, err
		}
		r.Serial = c.Serial
	}
	return r, nil
}

// markIssued records, inside Issue's transaction, that requester + CSR now
// has certificate certSeq. It fails with ErrDuplicateRequest if it already
// had one.
func markIssued(tx *bolt.Tx, c Certificate, certSeq uint64, now time.Time) error {
	q, err := getRequest(tx, c.Requester, c.CSRDigest)
	switch {
	case err == nil:
		if q.CertSeq != 0 {
			prev, _ := certBySeq(tx, q.CertSeq)
			return fmt.Errorf("%w: requester already has certificate %s for this CSR", ErrDuplicateRequest, prev.Serial)
		}
	default:
		q = storedRequest{Request: wire.Request{Profile: c.Profile, Created: unixNano(now), Identity: c.Identity}}
	}
	q.State = stateCodes[StateIssued]
	q.CertSeq = certSeq
	q.Decided = unixNano(now)
	return putRequest(tx, c.Requester, c.CSRDigest, &q.Request)
}

// PutPending stores a new request waiting for approval together with its audit
// record (Event pending), durably. ErrDuplicateRequest if the requester +
// CSRDigest is already known (look it up with Request).
func (db *DB) PutPending(r Request, rec AuditRecord) (AuditRecord, error) {
	if r.Requester.Fingerprint == "" || r.CSRDigest == "" {
		return AuditRecord{}, fmt.Errorf("%w: request needs requester fingerprint and CSR digest", ErrInvalid)
	}
	now := db.now()
	if rec.Time.IsZero() {
		rec.Time = now
	}
	rec.Event = EventPending
	rec.Requester = r.Requester
	rec.CSRDigest = r.CSRDigest
	if rec.Profile == "" {
		rec.Profile = r.Profile
	}
	q := wire.Request{State: stateCodes[StatePending], Subject: r.Requester.Subject,
		IDevIDSerial: r.Requester.IDevIDSerial, Anchor: r.Requester.Anchor, Kind: r.Requester.Kind,
		CSR: r.CSR, Profile: r.Profile, Created: unixNano(now), Identity: r.Identity}
	var out AuditRecord
	err := db.batch(func(tx *bolt.Tx) error {
		if tx.Bucket(wire.BucketRequests).Get(wire.RequestKey(r.Requester.Fingerprint, r.CSRDigest)) != nil {
			return fmt.Errorf("%w: request already stored", ErrDuplicateRequest)
		}
		if err := putRequest(tx, r.Requester.Fingerprint, r.CSRDigest, &q); err != nil {
			return err
		}
		var err error
		out, err = appendRecord(tx, rec)
		return err
	})
	if err != nil {
		return AuditRecord{}, err
	}
	return out, nil
}

// Decide approves or denies a pending request and appends the audit record
// (Event approved or denied) in the same durable transaction. ErrNotFound if
// the request does not exist, ErrInvalid if it is not pending.
func (db *DB) Decide(requester, csrDigest string, approve bool, reason string, rec AuditRecord) (AuditRecord, error) {
	now := db.now()
	state, ev := StateDenied, EventDenied
	if approve {
		state, ev = StateApproved, EventApproved
	}
	if rec.Time.IsZero() {
		rec.Time = now
	}
	rec.Event = ev
	rec.CSRDigest = csrDigest
	if rec.Reason == "" {
		rec.Reason = reason
	}
	var out AuditRecord
	err := db.batch(func(tx *bolt.Tx) error {
		q, err := getRequest(tx, requester, csrDigest)
		if err != nil {
			return err
		}
		if q.State != stateCodes[StatePending] {
			st, _ := stateOf(q.State)
			return fmt.Errorf("%w: request is %s, not pending", ErrInvalid, st)
		}
		q.State, q.Reason, q.Decided = stateCodes[state], reason, unixNano(now)
		if err := putRequest(tx, requester, csrDigest, &q.Request); err != nil {
			return err
		}
		rec := rec
		rec.Requester = Identity{Fingerprint: requester, Subject: q.Subject, IDevIDSerial: q.IDevIDSerial,
			Anchor: q.Anchor, Kind: q.Kind}
		if rec.Profile == "" {
			rec.Profile = q.Profile
		}
		out, err = appendRecord(tx, rec)
		return err
	})
	if err != nil {
		return AuditRecord{}, err
	}
	return out, nil
}

// Request returns the request of requester for the CSR digest, or ErrNotFound.
func (db *DB) Request(requester, csrDigest string) (Request, error) {
	var r Request
	err := db.view(func(tx *bolt.Tx) error {
		q, err := getRequest(tx, requester, csrDigest)
		if err != nil {
			return err
		}
		r, err = q.public(tx)
		return err
	})
	return r, err
}

// Requests returns the requests in the given state ("" for all), ordered by
// requester fingerprint then CSR digest (as stored); pending requests come
// from the pending index, ordered by identity, requester and CSR digest.
func (db *DB) Requests(state RequestState) ([]Request, error) {
	if state == StatePending {
		return db.pending("")
	}
	out := []Request{}
	err := db.view(func(tx *bolt.Tx) error {
		return tx.Bucket(wire.BucketRequests).ForEach(func(k, v []byte) error {
			requester, digest, err := wire.ParseRequestKey(k)
			if err != nil {
				return fmt.Errorf("store: request key %x: %w", k, err)
			}
			q, err := wire.DecodeRequest(v)
			if err != nil {
				return fmt.Errorf("store: request: %w", err)
			}
			if st, _ := stateOf(q.State); state != "" && st != state {
				return nil
			}
			r, err := storedRequest{q, requester, digest}.public(tx)
			if err != nil {
				return err
			}
			out = append(out, r)
			return nil
		})
	})
	return out, err
}

// pending returns the pending requests whose identity starts with prefix
// ("" for all), from the pending index.
func (db *DB) pending(prefix string) ([]Request, error) {
	out := []Request{}
	err := db.view(func(tx *bolt.Tx) error {
		pb := tx.Bucket(wire.BucketPending)
		if pb == nil {
			return nil
		}
		return pb.ForEach(func(k, _ []byte) error {
			identity, requester, digest, err := wire.ParsePendingKey(k)
			if err != nil {
				return fmt.Errorf("%w: pending index key %x: %v", ErrDamaged, k, err)
			}
			if !strings.HasPrefix(identity, prefix) {
				return nil
			}
			q, err := getRequest(tx, requester, digest)
			if err != nil {
				return fmt.Errorf("%w: pending index names a missing request: %v", ErrDamaged, err)
			}
			r, err := q.public(tx)
			if err != nil {
				return err
			}
			out = append(out, r)
			return nil
		})
	})
	return out, err
}

// PendingCount returns how many requests of the policy identity wait for an
// operator decision (constant work per pending request of that identity).
func (db *DB) PendingCount(identity string) (int, error) {
	n := 0
	prefix := wire.IndexPrefix(wire.IdentityPart(identity))
	err := db.view(func(tx *bolt.Tx) error {
		pb := tx.Bucket(wire.BucketPending)
		if pb == nil {
			return nil
		}
		c := pb.Cursor()
		for k, _ := c.Seek(prefix); k != nil && bytes.HasPrefix(k, prefix); k, _ = c.Next() {
			n++
		}
		return nil
	})
	return n, err
}

// RequestID is the short name operators use for a request: the first 16 hex
// digits of its CSR digest (FindPending also takes a longer prefix, or the
// whole digest).
func (r Request) ID() string {
	if len(r.CSRDigest) < 16 {
		return r.CSRDigest
	}
	return r.CSRDigest[:16]
}

// ErrAmbiguous is returned by FindPending when an ID names several requests.
var ErrAmbiguous = errors.New("store: ambiguous request id")

// MinRequestID is the shortest ID prefix FindPending accepts.
const MinRequestID = 8

// FindPending returns the pending request whose CSR digest starts with id
// (lowercase hex, at least MinRequestID digits), ErrNotFound if none does,
// ErrAmbiguous if several do.
func (db *DB) FindPending(id string) (Request, error) {
	id = strings.ToLower(id)
	if len(id) < MinRequestID || len(id) > 64 || strings.Trim(id, "0123456789abcdef") != "" {
		return Request{}, fmt.Errorf("%w: request id %q: want at least %d hex digits of the CSR digest", ErrInvalid, id, MinRequestID)
	}
	all, err := db.pending("")
	if err != nil {
		return Request{}, err
	}
	var found []Request
	for _, r := range all {
		if strings.HasPrefix(r.CSRDigest, id) {
			found = append(found, r)
		}
	}
	switch len(found) {
	case 0:
		return Request{}, fmt.Errorf("%w: no pending request %s", ErrNotFound, id)
	case 1:
		return found[0], nil
	}
	return Request{}, fmt.Errorf("%w: %s names %d pending requests; give more digits", ErrAmbiguous, id, len(found))
}
