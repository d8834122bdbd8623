package store

import (
	"bytes"
	"encoding/binary"
	"fmt"
	"time"

	bolt "go.etcd.io/bbolt"

	"github.com/estca/estca/store/internal/wire"
)

// Certificate is an issued certificate and the metadata the CA keeps with it.
type Certificate struct {
	// Seq is the issuance sequence number (from 1), set by Issue.
	Seq uint64
	// Serial is the lowercase hex of the positive serial number, no leading zeros.
	Serial string
	// DER is the certificate; the store does not parse it.
	DER []byte
	// Subject is the subject DN in string form.
	Subject string
	// SKI is the subject key identifier.
	SKI []byte
	// Requester is the Identity.Fingerprint of the requester; "" for none.
	Requester string
	// Identity is the policy identity the certificate counts for in rate
	// limits (policy.IdentityOf; indexed with its issue time, see
	// IssuedTo); "" for none.
	Identity string
	// Profile names the certificate profile.
	Profile string
	// CSRDigest is the hex SHA-256 of the CSR DER; "" when there was no CSR.
	CSRDigest string
	// NotBefore and NotAfter are the validity period.
	NotBefore, NotAfter time.Time
	// IssuedAt is when the certificate was stored; zero means the store's clock.
	IssuedAt time.Time
}

// CertFilter selects a page of certificates in issuance order.
type CertFilter struct {
	// Limit caps the result; 0 means no limit.
	Limit int
	// After is a serial cursor: only certificates issued after it are returned.
	After string
}

func certFromWire(seq uint64, w *wire.Cert) Certificate {
	return Certificate{Seq: seq, Serial: w.Serial, DER: w.DER, Subject: w.Subject, SKI: w.SKI,
		Requester: w.Requester, Identity: w.Identity, Profile: w.Profile, CSRDigest: w.CSRDigest,
		NotBefore: fromUnixNano(w.NotBefore), NotAfter: fromUnixNano(w.NotAfter), IssuedAt: fromUnixNano(w.IssuedAt)}
}

// Issue stores the certificate under the next issuance sequence number, its
// serial and policy identity indexes, the request → certificate mapping
// (requester + CSRDigest) and the audit record (event issued, committing to
// the SHA-256 of the DER) in one transaction, durably committed (fsync)
// before it returns. Concurrent callers are group-committed (the function
// may be re-run, see Caveats in the package documentation). It returns the
// record as chained. ErrDuplicateSerial if the serial exists and
// ErrDuplicateRequest if requester + CSRDigest already has a certificate;
// in both cases nothing is written.
func (db *DB) Issue(c Certificate, rec AuditRecord) (AuditRecord, error) {
	p, err := prepareIssue(c, rec, db.now())
	if err != nil {
		return AuditRecord{}, err
	}
	var out AuditRecord
	err = db.batch(func(tx *bolt.Tx) error {
		var err error
		out, err = p.write(tx)
		return err
	})
	if err != nil {
		return AuditRecord{}, err
	}
	return out, nil
}

// issue is a checked Issue, ready to write in a transaction.
type issue struct {
	c   Certificate
	wc  wire.Cert
	rec AuditRecord
	sk  []byte
	now time.Time
}

// prepareIssue checks c and completes rec (see Issue).
func prepareIssue(c Certificate, rec AuditRecord, now time.Time) (*issue, error) {
	sk := wire.SerialKey(c.Serial)
	if sk == nil {
		return nil, fmt.Errorf("%w: serial %q", ErrInvalid, c.Serial)
	}
	if len(c.DER) == 0 {
		return nil, fmt.Errorf("%w: empty certificate", ErrInvalid)
	}
	if rec.Requester.Fingerprint == "" {
		rec.Requester.Fingerprint = c.Requester
	} else if rec.Requester.Fingerprint != c.Requester {
		return nil, fmt.Errorf("%w: audit requester differs from certificate requester", ErrInvalid)
	}
	if c.IssuedAt.IsZero() {
		c.IssuedAt = now
	}
	if rec.Time.IsZero() {
		rec.Time = c.IssuedAt
	}
	rec.Event = EventIssued
	rec.Serial = c.Serial
	rec.CertDigest = wire.CertDigest(c.DER)
	rec.Revocation, rec.Head, rec.Ack = nil, nil, nil
	if rec.CSRDigest == "" {
		rec.CSRDigest = c.CSRDigest
	}
	if rec.Profile == "" {
		rec.Profile = c.Profile
	}
	wc := wire.Cert{Serial: c.Serial, DER: c.DER, Subject: c.Subject, SKI: c.SKI, Requester: c.Requester,
		Profile: c.Profile, CSRDigest: c.CSRDigest, NotBefore: unixNano(c.NotBefore),
		NotAfter: unixNano(c.NotAfter), IssuedAt: unixNano(c.IssuedAt), Identity: c.Identity}
	return &issue{c: c, wc: wc, rec: rec, sk: sk, now: now}, nil
}

// write stores the certificate, its indexes and its record in tx. It only
// writes through tx, so it is safe to re-run in a batch.
func (p *issue) write(tx *bolt.Tx) (AuditRecord, error) {
	c := p.c
	serials := tx.Bucket(wire.BucketSerials)
	if serials.Get(p.sk) != nil {
		return AuditRecord{}, fmt.Errorf("%w: %s", ErrDuplicateSerial, c.Serial)
	}
	certs := tx.Bucket(wire.BucketCerts)
	certs.FillPercent = 1 // keys only ever append
	seq, err := certs.NextSequence()
	if err != nil {
		return AuditRecord{}, err
	}
	if c.Requester != "" && c.CSRDigest != "" {
		if err := markIssued(tx, c, seq, p.now); err != nil {
			return AuditRecord{}, err
		}
	}
	r := p.rec
	r.CertSeq = seq
	out, err := appendRecord(tx, r)
	if err != nil {
		return AuditRecord{}, err
	}
	w := p.wc
	w.AuditSeq = out.Seq
	if err := certs.Put(wire.U64(seq), wire.EncodeCert(&w)); err != nil {
		return AuditRecord{}, err
	}
	if err := serials.Put(p.sk, wire.U64(seq)); err != nil {
		return AuditRecord{}, err
	}
	if c.Identity != "" {
		ib, err := addedBucket(tx, wire.BucketByIdentity)
		if err != nil {
			return AuditRecord{}, err
		}
		if err := ib.Put(wire.IndexKey(wire.IdentityPart(c.Identity), seq), wire.U64(uint64(p.wc.IssuedAt))); err != nil {
			return AuditRecord{}, err
		}
	}
	return out, nil
}

// IssuedTo counts the certificates issued to the policy identity at or
// after since, newest first, stopping at limit (0: no limit); oldest is the
// issue time of the oldest one counted (zero if none). With limit N it reads
// at most N index entries: what a rate limit of N per window needs (the
// oldest of the N newest is the one whose leaving the window frees a slot).
func (db *DB) IssuedTo(identity string, since time.Time, limit int) (n int, oldest time.Time, err error) {
	if identity == "" {
		return 0, time.Time{}, nil
	}
	prefix := wire.IndexPrefix(wire.IdentityPart(identity))
	from := unixNano(since)
	err = db.view(func(tx *bolt.Tx) error {
		ib := tx.Bucket(wire.BucketByIdentity)
		if ib == nil {
			return nil
		}
		c := ib.Cursor()
		// The entries of one identity are in issuance order: start after the
		// last one and walk back.
		end := binary.BigEndian.AppendUint64(bytes.Clone(prefix), ^uint64(0))
		var k, v []byte
		if k, _ = c.Seek(end); k == nil {
			k, v = c.Last()
		} else {
			k, v = c.Prev()
		}
		for ; k != nil && bytes.HasPrefix(k, prefix); k, v = c.Prev() {
			if len(k) != len(prefix)+8 || len(v) != 8 {
				return fmt.Errorf("%w: identity index entry %x", ErrDamaged, k)
			}
			at := int64(binary.BigEndian.Uint64(v))
			if at < from {
				break
			}
			n++
			oldest = fromUnixNano(at)
			if limit > 0 && n >= limit {
				break
			}
		}
		return nil
	})
	return n, oldest, err
}

// Certificate returns the certificate with the given serial, or ErrNotFound.
func (db *DB) Certificate(serial string) (Certificate, error) {
	var c Certificate
	err := db.view(func(tx *bolt.Tx) error {
		var err error
		c, err = certBySerial(tx, serial)
		return err
	})
	return c, err
}

// certSeqOf looks a serial up in the serial index (0 when absent).
func certSeqOf(tx *bolt.Tx, serial string) (uint64, error) {
	sk := wire.SerialKey(serial)
	if sk == nil {
		return 0, nil
	}
	v := tx.Bucket(wire.BucketSerials).Get(sk)
	if v == nil {
		return 0, nil
	}
	return wire.ParseU64(v)
}

func certBySerial(tx *bolt.Tx, serial string) (Certificate, error) {
	seq, err := certSeqOf(tx, serial)
	if err != nil {
		return Certificate{}, fmt.Errorf("store: serial index of %s: %w", serial, err)
	}
	if seq == 0 {
		return Certificate{}, fmt.Errorf("%w: certificate %q", ErrNotFound, serial)
	}
	c, err := certBySeq(tx, seq)
	if err == nil && c.Serial != serial {
		err = fmt.Errorf("%w: serial index of %s points at certificate %d (%s)", ErrDamaged, serial, seq, c.Serial)
	}
	return c, err
}

func certBySeq(tx *bolt.Tx, seq uint64) (Certificate, error) {
	v := tx.Bucket(wire.BucketCerts).Get(wire.U64(seq))
	if v == nil {
		return Certificate{}, fmt.Errorf("%w: certificate %d", ErrNotFound, seq)
	}
	w, err := wire.DecodeCert(v)
	if err != nil {
		return Certificate{}, fmt.Errorf("store: certificate %d: %w", seq, err)
	}
	return certFromWire(seq, &w), nil
}

// IssuedFor returns the certificate issued to requester for the CSR with the
// given digest, or ErrNotFound if none was issued.
func (db *DB) IssuedFor(requester, csrDigest string) (Certificate, error) {
	var c Certificate
	err := db.view(func(tx *bolt.Tx) error {
		q, err := getRequest(tx, requester, csrDigest)
		if err != nil {
			return err
		}
		if q.CertSeq == 0 {
			return fmt.Errorf("%w: no certificate for request", ErrNotFound)
		}
		c, err = certBySeq(tx, q.CertSeq)
		return err
	})
	return c, err
}

// Certificates returns certificates in issuance order, starting after the
// certificate f.After, at most f.Limit of them (0: all).
func (db *DB) Certificates(f CertFilter) ([]Certificate, error) {
	if f.After != "" && !wire.ValidSerial(f.After) {
		return nil, fmt.Errorf("%w: cursor %q", ErrInvalid, f.After)
	}
	out := []Certificate{}
	err := db.view(func(tx *bolt.Tx) error {
		from := uint64(1)
		if f.After != "" {
			seq, err := certSeqOf(tx, f.After)
			if err != nil {
				return err
			}
			if seq == 0 {
				return fmt.Errorf("%w: cursor certificate %s", ErrNotFound, f.After)
			}
			from = seq + 1
		}
		cur := tx.Bucket(wire.BucketCerts).Cursor()
		for k, v := cur.Seek(wire.U64(from)); k != nil; k, v = cur.Next() {
			if f.Limit > 0 && len(out) >= f.Limit {
				break
			}
			seq, err := wire.ParseU64(k)
			if err != nil {
				return fmt.Errorf("%w: certificate key %x", ErrDamaged, k)
			}
			w, err := wire.DecodeCert(v)
			if err != nil {
				return fmt.Errorf("store: certificate %d: %w", seq, err)
			}
			out = append(out, certFromWire(seq, &w))
		}
		return nil
	})
	return out, err
}

// CountCertificates returns the number of certificates issued (constant time).
func (db *DB) CountCertificates() (int, error) {
	var n int
	err := db.view(func(tx *bolt.Tx) error {
		n = int(tx.Bucket(wire.BucketCerts).Sequence())
		return nil
	})
	return n, err
}
