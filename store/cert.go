package store

import (
	"bytes"
	"encoding/json"
	"fmt"
	"time"

	bolt "go.etcd.io/bbolt"
)

// maxSerialHex is the longest serial accepted: 20 octets (RFC 5280 §4.1.2.2).
const maxSerialHex = 40

// Certificate is an issued certificate and the metadata the CA keeps with it.
type Certificate struct {
	// Serial is the lowercase hex of the positive serial number, no leading zeros.
	Serial string
	// DER is the certificate; the store does not parse it.
	DER []byte
	// Subject is the subject DN in string form.
	Subject string
	// SKI is the subject key identifier (indexed).
	SKI []byte
	// Requester is the Identity.Fingerprint of the requester (indexed); "" for none.
	Requester string
	// Profile names the certificate profile.
	Profile string
	// CSRDigest is the hex SHA-256 of the CSR DER; "" when there was no CSR.
	CSRDigest string
	// NotBefore and NotAfter are the validity period.
	NotBefore, NotAfter time.Time
	// IssuedAt is when the certificate was stored; zero means the store's clock.
	IssuedAt time.Time
}

// CertFilter selects a page of certificates in serial-number order.
type CertFilter struct {
	// Limit caps the result; 0 means no limit.
	Limit int
	// After is a serial cursor: only serials numerically greater are returned.
	After string
}

// Revocation records that a certificate is revoked.
type Revocation struct {
	// Serial is the revoked certificate's serial.
	Serial string
	// Reason is the CRLReason code (RFC 5280 §5.3.1).
	Reason int
	// Time is the revocation time.
	Time time.Time
}

// wireCert is the stored encoding of a Certificate.
type wireCert struct {
	DER       []byte `json:"der"`
	Subject   string `json:"subject,omitempty"`
	SKI       []byte `json:"ski,omitempty"`
	Requester string `json:"requester,omitempty"`
	Profile   string `json:"profile,omitempty"`
	CSRDigest string `json:"csr_digest,omitempty"`
	NotBefore int64  `json:"not_before"`
	NotAfter  int64  `json:"not_after"`
	IssuedAt  int64  `json:"issued_at"`
}

type wireRevocation struct {
	Reason int   `json:"reason"`
	Time   int64 `json:"time"`
}

// validSerial reports whether s is lowercase hex of a positive integer with
// no leading zeros, at most 20 octets.
func validSerial(s string) bool {
	if s == "" || len(s) > maxSerialHex || s[0] == '0' {
		return false
	}
	for i := 0; i < len(s); i++ {
		c := s[i]
		if (c < '0' || c > '9') && (c < 'a' || c > 'f') {
			return false
		}
	}
	return true
}

// serialKey orders serials numerically: the length first, then the hex digits.
func serialKey(s string) []byte {
	k := make([]byte, 0, 1+len(s))
	k = append(k, byte(len(s)))
	return append(k, s...)
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

func encodeCert(c Certificate) ([]byte, error) {
	return json.Marshal(wireCert{
		DER: c.DER, Subject: c.Subject, SKI: c.SKI, Requester: c.Requester,
		Profile: c.Profile, CSRDigest: c.CSRDigest,
		NotBefore: unixNano(c.NotBefore), NotAfter: unixNano(c.NotAfter), IssuedAt: unixNano(c.IssuedAt),
	})
}

func decodeCert(serial string, v []byte) (Certificate, error) {
	var w wireCert
	if err := json.Unmarshal(v, &w); err != nil {
		return Certificate{}, fmt.Errorf("store: decode certificate %s: %w", serial, err)
	}
	return Certificate{
		Serial: serial, DER: w.DER, Subject: w.Subject, SKI: w.SKI, Requester: w.Requester,
		Profile: w.Profile, CSRDigest: w.CSRDigest,
		NotBefore: fromUnixNano(w.NotBefore), NotAfter: fromUnixNano(w.NotAfter), IssuedAt: fromUnixNano(w.IssuedAt),
	}, nil
}

// Issue stores the certificate, its SKI and requester indexes, the request →
// serial mapping (requester + CSRDigest) and the audit record (Event issued)
// in one transaction, durably committed (fsync) before it returns. Concurrent
// callers are group-committed (the function may be re-run, see Caveats in the
// package documentation). It returns the record as chained (Seq, Time,
// Prev, Hash set). ErrDuplicateSerial if the serial exists and
// ErrDuplicateRequest if requester + CSRDigest already has a certificate; in
// both cases nothing is written.
func (db *DB) Issue(c Certificate, rec AuditRecord) (AuditRecord, error) {
	if !validSerial(c.Serial) {
		return AuditRecord{}, fmt.Errorf("%w: serial %q", ErrInvalid, c.Serial)
	}
	if len(c.DER) == 0 {
		return AuditRecord{}, fmt.Errorf("%w: empty certificate", ErrInvalid)
	}
	if rec.Requester.Fingerprint == "" {
		rec.Requester.Fingerprint = c.Requester
	} else if rec.Requester.Fingerprint != c.Requester {
		return AuditRecord{}, fmt.Errorf("%w: audit requester differs from certificate requester", ErrInvalid)
	}
	now := db.now()
	if c.IssuedAt.IsZero() {
		c.IssuedAt = now
	}
	if rec.Time.IsZero() {
		rec.Time = c.IssuedAt
	}
	rec.Event = EventIssued
	rec.Serial = c.Serial
	if rec.CSRDigest == "" {
		rec.CSRDigest = c.CSRDigest
	}
	if rec.Profile == "" {
		rec.Profile = c.Profile
	}
	val, err := encodeCert(c)
	if err != nil {
		return AuditRecord{}, fmt.Errorf("store: encode certificate: %w", err)
	}
	sk := serialKey(c.Serial)
	var out AuditRecord
	err = db.batch(func(tx *bolt.Tx) error {
		certs := tx.Bucket(bucketCerts)
		if certs.Get(sk) != nil {
			return fmt.Errorf("%w: %s", ErrDuplicateSerial, c.Serial)
		}
		if c.Requester != "" && c.CSRDigest != "" {
			if err := markIssued(tx, c, rec.Requester, now); err != nil {
				return err
			}
		}
		if err := certs.Put(sk, val); err != nil {
			return err
		}
		if err := certs.SetSequence(certs.Sequence() + 1); err != nil {
			return err
		}
		if len(c.SKI) > 0 {
			if err := tx.Bucket(bucketBySKI).Put(lenPrefixed(c.SKI, sk), nil); err != nil {
				return err
			}
		}
		if c.Requester != "" {
			if err := tx.Bucket(bucketByReq).Put(lenPrefixed([]byte(c.Requester), sk), nil); err != nil {
				return err
			}
		}
		r, err := appendRecord(tx, rec)
		out = r
		return err
	})
	if err != nil {
		return AuditRecord{}, err
	}
	return out, nil
}

// Certificate returns the certificate with the given serial, or ErrNotFound.
func (db *DB) Certificate(serial string) (Certificate, error) {
	var c Certificate
	err := db.view(func(tx *bolt.Tx) error {
		var err error
		c, err = getCert(tx, serial)
		return err
	})
	return c, err
}

func getCert(tx *bolt.Tx, serial string) (Certificate, error) {
	b := bucket(tx, bucketCerts)
	if b == nil || !validSerial(serial) {
		return Certificate{}, fmt.Errorf("%w: certificate %q", ErrNotFound, serial)
	}
	v := b.Get(serialKey(serial))
	if v == nil {
		return Certificate{}, fmt.Errorf("%w: certificate %s", ErrNotFound, serial)
	}
	return decodeCert(serial, v)
}

// IssuedFor returns the certificate issued to requester for the CSR with the
// given digest, or ErrNotFound if none was issued.
func (db *DB) IssuedFor(requester, csrDigest string) (Certificate, error) {
	var c Certificate
	err := db.view(func(tx *bolt.Tx) error {
		r, err := getRequest(tx, requester, csrDigest)
		if err != nil {
			return err
		}
		if r.Serial == "" {
			return fmt.Errorf("%w: no certificate for request", ErrNotFound)
		}
		c, err = getCert(tx, r.Serial)
		return err
	})
	return c, err
}

// CertificatesBySKI returns every certificate with that subject key
// identifier, in serial order; an empty slice if none.
func (db *DB) CertificatesBySKI(ski []byte) ([]Certificate, error) {
	return db.byIndex(bucketBySKI, ski)
}

// CertificatesByRequester returns every certificate issued to the requester
// with that fingerprint, in serial order; an empty slice if none.
func (db *DB) CertificatesByRequester(fingerprint string) ([]Certificate, error) {
	return db.byIndex(bucketByReq, []byte(fingerprint))
}

func (db *DB) byIndex(name, part []byte) ([]Certificate, error) {
	out := []Certificate{}
	if len(part) == 0 {
		return out, nil
	}
	prefix := lenPrefixed(part)
	err := db.view(func(tx *bolt.Tx) error {
		idx := bucket(tx, name)
		if idx == nil {
			return nil
		}
		cur := idx.Cursor()
		for k, _ := cur.Seek(prefix); k != nil && bytes.HasPrefix(k, prefix); k, _ = cur.Next() {
			sk := k[len(prefix):]
			if len(sk) < 1 {
				return fmt.Errorf("store: corrupt index key in %s", name)
			}
			c, err := getCert(tx, string(sk[1:]))
			if err != nil {
				return fmt.Errorf("store: index %s: %w", name, err)
			}
			out = append(out, c)
		}
		return nil
	})
	return out, err
}

// Certificates returns certificates in numeric serial order, starting after
// f.After, at most f.Limit of them (0: all).
func (db *DB) Certificates(f CertFilter) ([]Certificate, error) {
	if f.After != "" && !validSerial(f.After) {
		return nil, fmt.Errorf("%w: cursor %q", ErrInvalid, f.After)
	}
	out := []Certificate{}
	err := db.view(func(tx *bolt.Tx) error {
		b := bucket(tx, bucketCerts)
		if b == nil {
			return nil
		}
		cur := b.Cursor()
		var k, v []byte
		if f.After == "" {
			k, v = cur.First()
		} else {
			after := serialKey(f.After)
			k, v = cur.Seek(after)
			if k != nil && bytes.Equal(k, after) {
				k, v = cur.Next()
			}
		}
		for ; k != nil; k, v = cur.Next() {
			if f.Limit > 0 && len(out) >= f.Limit {
				break
			}
			c, err := decodeCert(string(k[1:]), v)
			if err != nil {
				return err
			}
			out = append(out, c)
		}
		return nil
	})
	return out, err
}

// CountCertificates returns the number of stored certificates (constant time).
func (db *DB) CountCertificates() (int, error) {
	var n int
	err := db.view(func(tx *bolt.Tx) error {
		if b := bucket(tx, bucketCerts); b != nil {
			n = int(b.Sequence())
		}
		return nil
	})
	return n, err
}

// validReason reports whether r is a CRLReason code (RFC 5280 §5.3.1; 7 is unused).
func validReason(r int) bool { return r >= 0 && r <= 10 && r != 7 }

// Revoke marks the certificate revoked with the CRLReason code and time (zero
// means now) and appends the audit record (Event revoked) in the same durable
// transaction. ErrNotFound if there is no such certificate, ErrAlreadyRevoked
// if it is already revoked.
func (db *DB) Revoke(serial string, reason int, at time.Time, rec AuditRecord) error {
	if !validSerial(serial) {
		return fmt.Errorf("%w: serial %q", ErrInvalid, serial)
	}
	if !validReason(reason) {
		return fmt.Errorf("%w: revocation reason %d", ErrInvalid, reason)
	}
	if at.IsZero() {
		at = db.now()
	}
	if rec.Time.IsZero() {
		rec.Time = at
	}
	rec.Event = EventRevoked
	rec.Serial = serial
	val, err := json.Marshal(wireRevocation{Reason: reason, Time: unixNano(at)})
	if err != nil {
		return fmt.Errorf("store: encode revocation: %w", err)
	}
	sk := serialKey(serial)
	return db.batch(func(tx *bolt.Tx) error {
		if tx.Bucket(bucketCerts).Get(sk) == nil {
			return fmt.Errorf("%w: certificate %s", ErrNotFound, serial)
		}
		rb := tx.Bucket(bucketRevoked)
		if rb.Get(sk) != nil {
			return fmt.Errorf("%w: %s", ErrAlreadyRevoked, serial)
		}
		if err := rb.Put(sk, val); err != nil {
			return err
		}
		_, err := appendRecord(tx, rec)
		return err
	})
}

// Revocation returns the revocation of serial, or ErrNotFound if it is not revoked.
func (db *DB) Revocation(serial string) (Revocation, error) {
	var r Revocation
	err := db.view(func(tx *bolt.Tx) error {
		b := bucket(tx, bucketRevoked)
		if b == nil || !validSerial(serial) {
			return fmt.Errorf("%w: revocation %q", ErrNotFound, serial)
		}
		v := b.Get(serialKey(serial))
		if v == nil {
			return fmt.Errorf("%w: revocation %s", ErrNotFound, serial)
		}
		var err error
		r, err = decodeRevocation(serial, v)
		return err
	})
	return r, err
}

// Revocations returns every revocation in serial order (for CRL generation).
func (db *DB) Revocations() ([]Revocation, error) {
	out := []Revocation{}
	err := db.view(func(tx *bolt.Tx) error {
		b := bucket(tx, bucketRevoked)
		if b == nil {
			return nil
		}
		return b.ForEach(func(k, v []byte) error {
			r, err := decodeRevocation(string(k[1:]), v)
			if err != nil {
				return err
			}
			out = append(out, r)
			return nil
		})
	})
	return out, err
}

func decodeRevocation(serial string, v []byte) (Revocation, error) {
	var w wireRevocation
	if err := json.Unmarshal(v, &w); err != nil {
		return Revocation{}, fmt.Errorf("store: decode revocation %s: %w", serial, err)
	}
	return Revocation{Serial: serial, Reason: w.Reason, Time: fromUnixNano(w.Time)}, nil
}
