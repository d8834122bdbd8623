package store

import (
	"encoding/json"
	"fmt"
	"time"

	bolt "go.etcd.io/bbolt"
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

// Request is an enrollment request and its decision, keyed by requester
// fingerprint and CSR digest so an identical re-sent CSR finds it.
type Request struct {
	// Requester is who asked.
	Requester Identity
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

type wireRequest struct {
	Requester Identity     `json:"requester"`
	CSR       []byte       `json:"csr,omitempty"`
	Profile   string       `json:"profile,omitempty"`
	State     RequestState `json:"state"`
	Serial    string       `json:"serial,omitempty"`
	Reason    string       `json:"reason,omitempty"`
	Created   int64        `json:"created"`
	Decided   int64        `json:"decided,omitempty"`
}

func requestKey(requester, csrDigest string) []byte {
	return lenPrefixed([]byte(requester), []byte(csrDigest))
}

func putRequest(tx *bolt.Tx, r Request) error {
	v, err := json.Marshal(wireRequest{
		Requester: r.Requester, CSR: r.CSR, Profile: r.Profile, State: r.State,
		Serial: r.Serial, Reason: r.Reason, Created: unixNano(r.Created), Decided: unixNano(r.Decided),
	})
	if err != nil {
		return fmt.Errorf("store: encode request: %w", err)
	}
	return tx.Bucket(bucketRequests).Put(requestKey(r.Requester.Fingerprint, r.CSRDigest), v)
}

func decodeRequest(k, v []byte) (Request, error) {
	var w wireRequest
	if err := json.Unmarshal(v, &w); err != nil {
		return Request{}, fmt.Errorf("store: decode request: %w", err)
	}
	if len(k) < 2 {
		return Request{}, fmt.Errorf("store: corrupt request key")
	}
	n := int(k[0])<<8 | int(k[1])
	if len(k) < 2+n {
		return Request{}, fmt.Errorf("store: corrupt request key")
	}
	return Request{
		Requester: w.Requester, CSRDigest: string(k[2+n:]), CSR: w.CSR, Profile: w.Profile,
		State: w.State, Serial: w.Serial, Reason: w.Reason,
		Created: fromUnixNano(w.Created), Decided: fromUnixNano(w.Decided),
	}, nil
}

func getRequest(tx *bolt.Tx, requester, csrDigest string) (Request, error) {
	b := bucket(tx, bucketRequests)
	if b == nil || requester == "" || csrDigest == "" {
		return Request{}, fmt.Errorf("%w: request", ErrNotFound)
	}
	k := requestKey(requester, csrDigest)
	v := b.Get(k)
	if v == nil {
		return Request{}, fmt.Errorf("%w: request", ErrNotFound)
	}
	return decodeRequest(k, v)
}

// markIssued records, inside Issue's transaction, that requester + CSR now has
// certificate c. It fails with ErrDuplicateRequest if it already had one.
func markIssued(tx *bolt.Tx, c Certificate, who Identity, now time.Time) error {
	r, err := getRequest(tx, c.Requester, c.CSRDigest)
	switch {
	case err == nil:
		if r.Serial != "" {
			return fmt.Errorf("%w: requester already has certificate %s for this CSR", ErrDuplicateRequest, r.Serial)
		}
	default:
		r = Request{Requester: who, CSRDigest: c.CSRDigest, Profile: c.Profile, Created: now}
	}
	r.Requester.Fingerprint = c.Requester
	r.CSRDigest = c.CSRDigest
	r.State = StateIssued
	r.Serial = c.Serial
	r.Decided = now
	return putRequest(tx, r)
}

// PutPending stores a new request waiting for approval together with its audit
// record (Event pending), durably. ErrDuplicateRequest if the requester +
// CSRDigest is already known (look it up with Request).
func (db *DB) PutPending(r Request, rec AuditRecord) (AuditRecord, error) {
	if r.Requester.Fingerprint == "" || r.CSRDigest == "" {
		return AuditRecord{}, fmt.Errorf("%w: request needs requester fingerprint and CSR digest", ErrInvalid)
	}
	now := db.now()
	r.State, r.Serial, r.Created, r.Decided = StatePending, "", now, time.Time{}
	if rec.Time.IsZero() {
		rec.Time = now
	}
	rec.Event = EventPending
	rec.Requester = r.Requester
	rec.CSRDigest = r.CSRDigest
	if rec.Profile == "" {
		rec.Profile = r.Profile
	}
	var out AuditRecord
	err := db.batch(func(tx *bolt.Tx) error {
		if tx.Bucket(bucketRequests).Get(requestKey(r.Requester.Fingerprint, r.CSRDigest)) != nil {
			return fmt.Errorf("%w: request already stored", ErrDuplicateRequest)
		}
		if err := putRequest(tx, r); err != nil {
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
		r, err := getRequest(tx, requester, csrDigest)
		if err != nil {
			return err
		}
		if r.State != StatePending {
			return fmt.Errorf("%w: request is %s, not pending", ErrInvalid, r.State)
		}
		r.State, r.Reason, r.Decided = state, reason, now
		if err := putRequest(tx, r); err != nil {
			return err
		}
		rec := rec
		rec.Requester = r.Requester
		if rec.Profile == "" {
			rec.Profile = r.Profile
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
		var err error
		r, err = getRequest(tx, requester, csrDigest)
		return err
	})
	return r, err
}

// Requests returns the requests in the given state ("" for all), ordered by
// requester fingerprint then CSR digest.
func (db *DB) Requests(state RequestState) ([]Request, error) {
	out := []Request{}
	err := db.view(func(tx *bolt.Tx) error {
		b := bucket(tx, bucketRequests)
		if b == nil {
			return nil
		}
		return b.ForEach(func(k, v []byte) error {
			r, err := decodeRequest(k, v)
			if err != nil {
				return err
			}
			if state == "" || r.State == state {
				out = append(out, r)
			}
			return nil
		})
	})
	return out, err
}
