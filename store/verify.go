package store

import (
	"bytes"
	"crypto"
	"crypto/ecdsa"
	"crypto/ed25519"
	"crypto/rand"
	"crypto/rsa"
	"crypto/sha256"
	"encoding/binary"
	"encoding/json"
	"errors"
	"fmt"
	"time"

	bolt "go.etcd.io/bbolt"
)

// Head is a signed statement of the audit chain head: the record at Seq has Hash.
type Head struct {
	// Seq is the sequence number of the newest record covered.
	Seq uint64
	// Hash is that record's Hash.
	Hash []byte
	// Time is when the head was signed.
	Time time.Time
	// Signature is over HeadMessage(Seq, Hash, Time): ASN.1 ECDSA or RSA
	// PKCS#1 v1.5 over its SHA-256, or Ed25519 over the message itself.
	Signature []byte
}

// VerifyReport summarises a successful Verify.
type VerifyReport struct {
	// Records is the number of audit records walked.
	Records int
	// Heads is the number of signed heads checked.
	Heads int
	// LastSeq is the sequence number of the last record.
	LastSeq uint64
}

// VerifyError names the first audit record at which verification fails.
type VerifyError struct {
	// Seq is the first sequence number that cannot be trusted: records
	// 1..Seq-1 verify, record Seq is altered, missing, misplaced or
	// contradicts a signed head.
	Seq uint64
	// Reason is one of "malformed record", "sequence gap", "out of order",
	// "hash mismatch", "broken link", "signed head mismatch", "bad head
	// signature", "missing records after signed head", "malformed head",
	// "chain head mismatch".
	Reason string
}

// Error implements error.
func (e *VerifyError) Error() string {
	return fmt.Sprintf("store: audit log fails verification at seq %d: %s", e.Seq, e.Reason)
}

type wireHead struct {
	Seq       uint64 `json:"seq"`
	Hash      []byte `json:"hash"`
	Time      int64  `json:"time"`
	Signature []byte `json:"sig"`
}

// headDomain separates head signatures from any other use of the audit key.
const headDomain = "estca audit head v1\x00"

// HeadMessage returns the bytes a head signature covers: a domain string, the
// big-endian seq and Unix-nanosecond time, then the hash.
func HeadMessage(seq uint64, hash []byte, t time.Time) []byte {
	m := make([]byte, 0, len(headDomain)+16+len(hash))
	m = append(m, headDomain...)
	m = binary.BigEndian.AppendUint64(m, seq)
	m = binary.BigEndian.AppendUint64(m, uint64(unixNano(t)))
	return append(m, hash...)
}

// SignHead signs the current chain head with s (the audit key) and stores the
// signed head durably in its own bucket. ErrEmptyLog if there are no records.
func (db *DB) SignHead(s crypto.Signer) (Head, error) {
	if db.readOnly {
		return Head{}, ErrReadOnly
	}
	var h Head
	err := db.view(func(tx *bolt.Tx) error {
		var err error
		h.Seq, h.Hash, err = chainHead(tx)
		return err
	})
	if err != nil {
		return Head{}, err
	}
	if h.Seq == 0 {
		return Head{}, ErrEmptyLog
	}
	h.Time = fromUnixNano(unixNano(db.now()))
	msg := HeadMessage(h.Seq, h.Hash, h.Time)
	if _, ok := s.Public().(ed25519.PublicKey); ok {
		h.Signature, err = s.Sign(rand.Reader, msg, crypto.Hash(0))
	} else {
		d := sha256.Sum256(msg)
		h.Signature, err = s.Sign(rand.Reader, d[:], crypto.SHA256)
	}
	if err != nil {
		return Head{}, fmt.Errorf("store: sign audit head: %w", err)
	}
	if err := verifyHeadSig(s.Public(), msg, h.Signature); err != nil {
		return Head{}, fmt.Errorf("store: audit head signature does not verify: %w", err)
	}
	val, err := json.Marshal(wireHead{Seq: h.Seq, Hash: h.Hash, Time: unixNano(h.Time), Signature: h.Signature})
	if err != nil {
		return Head{}, fmt.Errorf("store: encode head: %w", err)
	}
	err = db.batch(func(tx *bolt.Tx) error {
		b := tx.Bucket(bucketHeads)
		n, err := b.NextSequence()
		if err != nil {
			return err
		}
		return b.Put(u64(n), val)
	})
	if err != nil {
		return Head{}, err
	}
	return h, nil
}

// Heads returns the signed heads in the order they were made.
func (db *DB) Heads() ([]Head, error) {
	out := []Head{}
	err := db.view(func(tx *bolt.Tx) error {
		b := bucket(tx, bucketHeads)
		if b == nil {
			return nil
		}
		return b.ForEach(func(k, v []byte) error {
			var w wireHead
			if err := json.Unmarshal(v, &w); err != nil {
				return fmt.Errorf("store: decode head %x: %w", k, err)
			}
			out = append(out, Head{Seq: w.Seq, Hash: w.Hash, Time: fromUnixNano(w.Time), Signature: w.Signature})
			return nil
		})
	})
	return out, err
}

// errBadSignature is returned by verifyHeadSig for a signature that does not verify.
var errBadSignature = errors.New("store: bad signature")

func verifyHeadSig(pub crypto.PublicKey, msg, sig []byte) error {
	d := sha256.Sum256(msg)
	switch k := pub.(type) {
	case *ecdsa.PublicKey:
		if !ecdsa.VerifyASN1(k, d[:], sig) {
			return errBadSignature
		}
	case *rsa.PublicKey:
		if rsa.VerifyPKCS1v15(k, crypto.SHA256, d[:], sig) != nil {
			return errBadSignature
		}
	case ed25519.PublicKey:
		if !ed25519.Verify(k, msg, sig) {
			return errBadSignature
		}
	default:
		return fmt.Errorf("%w: unsupported audit key type %T", ErrInvalid, pub)
	}
	return nil
}

// Verify walks every audit record and every signed head in one read
// transaction. It checks that sequence numbers are contiguous from 1 and
// match their keys, that each encoding is canonical and its Hash recomputes,
// that each Prev is the previous Hash, that the meta chain head is the last
// record, and that every signed head matches the record at its Seq and its
// signature verifies with pub. On failure it returns a *VerifyError naming
// the lowest failing sequence number (see VerifyError.Seq); other errors
// (unsupported key type, I/O) are returned as such.
func (db *DB) Verify(pub crypto.PublicKey) (VerifyReport, error) {
	var rep VerifyReport
	var first *VerifyError
	fail := func(seq uint64, reason string) {
		if first == nil || seq < first.Seq {
			first = &VerifyError{Seq: seq, Reason: reason}
		}
	}
	err := db.view(func(tx *bolt.Tx) error {
		audit := bucket(tx, bucketAudit)
		if audit == nil {
			return nil
		}
		// Records: stop at the first failure, everything after it is untrusted.
		var prev []byte
		expect := uint64(1)
		cur := audit.Cursor()
		for k, v := cur.First(); k != nil; k, v = cur.Next() {
			rep.Records++
			if len(k) != 8 {
				fail(expect, "malformed record")
				break
			}
			key := binary.BigEndian.Uint64(k)
			if key != expect {
				fail(expect, "sequence gap")
				break
			}
			r, enc, err := decodeStored(v)
			if err != nil {
				fail(key, "malformed record")
				break
			}
			if r.Seq != key {
				fail(key, "out of order")
				break
			}
			if !bytes.Equal(recordHash(r.Prev, enc), r.Hash) {
				fail(key, "hash mismatch")
				break
			}
			if !bytes.Equal(r.Prev, prev) {
				fail(key, "broken link")
				break
			}
			prev = r.Hash
			expect++
		}
		var last uint64
		if k, _ := cur.Last(); len(k) == 8 {
			last = binary.BigEndian.Uint64(k)
		}
		rep.LastSeq = last

		// The meta chain head must be the last record.
		hseq, hhash, err := chainHead(tx)
		if err != nil {
			fail(0, "chain head mismatch")
		} else {
			switch {
			case hseq > last:
				fail(last+1, "chain head mismatch")
			case hseq < last:
				fail(hseq+1, "chain head mismatch")
			case hseq > 0 && !bytes.Equal(storedHash(audit.Get(u64(hseq))), hhash):
				fail(hseq, "chain head mismatch")
			}
		}

		// Signed heads.
		heads := bucket(tx, bucketHeads)
		if heads == nil {
			return nil
		}
		return heads.ForEach(func(_, v []byte) error {
			rep.Heads++
			var w wireHead
			if err := json.Unmarshal(v, &w); err != nil {
				fail(0, "malformed head")
				return nil
			}
			if pub == nil {
				return fmt.Errorf("%w: signed heads present but no audit public key", ErrInvalid)
			}
			switch err := verifyHeadSig(pub, HeadMessage(w.Seq, w.Hash, fromUnixNano(w.Time)), w.Signature); {
			case errors.Is(err, errBadSignature):
				fail(w.Seq, "bad head signature")
				return nil
			case err != nil:
				return err
			}
			if w.Seq > last {
				fail(last+1, "missing records after signed head")
				return nil
			}
			if !bytes.Equal(storedHash(audit.Get(u64(w.Seq))), w.Hash) {
				fail(w.Seq, "signed head mismatch")
			}
			return nil
		})
	})
	if err != nil {
		return rep, err
	}
	if first != nil {
		return rep, first
	}
	return rep, nil
}

// storedHash returns the hash prefix of a stored record value (nil if short).
func storedHash(v []byte) []byte {
	if len(v) < sha256.Size {
		return nil
	}
	return v[:sha256.Size]
}
