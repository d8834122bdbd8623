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
	"errors"
	"fmt"
	"time"

	bolt "go.etcd.io/bbolt"

	"github.com/estca/estca/store/internal/wire"
)

// Head is a signed statement about the audit chain, made with the audit
// key: record Seq has Hash; Prev is the Digest of head Counter-1 (32 zero
// bytes for head 1), so heads form a chain of their own; Revocations
// revocations with accumulator RevocationDigest precede Seq; Store is the
// store's id. Each head is also kept as a record of the chain (event
// head), which the next head covers.
type Head struct {
	Counter          uint64
	Seq              uint64
	Hash             []byte
	Prev             []byte
	Revocations      uint64
	RevocationDigest []byte
	Time             time.Time
	Store            []byte
	// Signature is over Message(): ASN.1 ECDSA or RSA PKCS#1 v1.5 over its
	// SHA-256, or Ed25519 over the message itself.
	Signature []byte
}

// HeadRef names a signed head by counter, covered record and digest.
type HeadRef struct {
	Counter uint64
	Seq     uint64
	Digest  []byte
}

func (h *Head) toWire() wire.Head {
	return wire.Head{Store: h.Store, Counter: h.Counter, Seq: h.Seq, Hash: h.Hash, Prev: h.Prev,
		RevCount: h.Revocations, RevAcc: h.RevocationDigest, Time: unixNano(h.Time), Signature: h.Signature}
}

func headFromWire(w *wire.Head) Head {
	return Head{Counter: w.Counter, Seq: w.Seq, Hash: w.Hash, Prev: w.Prev, Revocations: w.RevCount,
		RevocationDigest: w.RevAcc, Time: fromUnixNano(w.Time), Store: w.Store, Signature: w.Signature}
}

// Message returns the bytes the signature covers (see wire.HeadMessage:
// a domain string, then the fields at fixed sizes).
func (h Head) Message() []byte {
	w := h.toWire()
	return wire.HeadMessage(&w)
}

// Digest is SHA-256(Message()): the head's identity.
func (h Head) Digest() []byte {
	d := sha256.Sum256(h.Message())
	return d[:]
}

// Ref returns the head's counter, seq and digest.
func (h Head) Ref() HeadRef { return HeadRef{Counter: h.Counter, Seq: h.Seq, Digest: h.Digest()} }

// wellFormed checks the field sizes the message layout assumes.
func (h Head) wellFormed() bool {
	return len(h.Store) == 16 && len(h.Hash) == wire.HashSize && len(h.Prev) == wire.HashSize &&
		len(h.RevocationDigest) == wire.HashSize && h.Counter > 0 && h.Seq > 0
}

// errBadSignature is returned by verifySig for a signature that does not verify.
var errBadSignature = errors.New("store: bad signature")

func verifySig(pub crypto.PublicKey, msg, sig []byte) error {
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

// Verify checks the head's field sizes and its signature with pub.
func (h Head) Verify(pub crypto.PublicKey) error {
	if !h.wellFormed() {
		return fmt.Errorf("%w: malformed head %d", errBadSignature, h.Counter)
	}
	return verifySig(pub, h.Message(), h.Signature)
}

// headState is the meta bucket's newest head: counter, record seq, digest.
type headState struct {
	counter, recordSeq uint64
	digest             []byte
}

func readHeadState(tx *bolt.Tx) (headState, error) {
	v := tx.Bucket(wire.BucketMeta).Get(wire.MetaHead)
	if v == nil {
		return headState{digest: make([]byte, wire.HashSize)}, nil
	}
	if len(v) != 16+wire.HashSize {
		return headState{}, fmt.Errorf("%w: meta head of %d bytes", ErrDamaged, len(v))
	}
	return headState{binary.BigEndian.Uint64(v), binary.BigEndian.Uint64(v[8:]), bytes.Clone(v[16:])}, nil
}

// headRecord reads the head kept in record seq.
func headRecord(tx *bolt.Tx, seq uint64) (Head, error) {
	r, _, err := record(tx, seq)
	if err != nil {
		return Head{}, err
	}
	if r.Head == nil || r.Event != string(EventHead) {
		return Head{}, fmt.Errorf("%w: record %d holds no signed head", ErrDamaged, seq)
	}
	return headFromWire(r.Head), nil
}

// headByCounter reads head n through the heads bucket.
func headByCounter(tx *bolt.Tx, n uint64) (Head, uint64, error) {
	v := tx.Bucket(wire.BucketHeads).Get(wire.U64(n))
	if v == nil {
		return Head{}, 0, fmt.Errorf("%w: head %d", ErrNotFound, n)
	}
	seq, err := wire.ParseU64(v)
	if err != nil {
		return Head{}, 0, err
	}
	h, err := headRecord(tx, seq)
	return h, seq, err
}

// SignHead signs the current chain head with Options.Signer (the audit key
// in the HSM), appends the head as a record (event head) in the same
// durable transaction that indexes it, then writes it to Options.Checkpoint.
// When the newest record is already the newest head's own record there is
// nothing new to sign: it returns that head. The signature is verified
// before anything is stored. A checkpoint that cannot be written is an
// error after the head is stored.
func (db *DB) SignHead() (Head, error) {
	if db.readOnly {
		return Head{}, ErrReadOnly
	}
	if db.opts.Signer == nil {
		return Head{}, ErrNoSigner
	}
	db.signMu.Lock()
	defer db.signMu.Unlock()
	var h Head
	var last headState
	var next uint64
	upToDate := false
	err := db.view(func(tx *bolt.Tx) error {
		var err error
		if last, err = readHeadState(tx); err != nil {
			return err
		}
		if h.Seq, h.Hash, err = chainState(tx); err != nil {
			return err
		}
		if last.counter > 0 && h.Seq == last.recordSeq {
			upToDate = true
			h, err = headRecord(tx, last.recordSeq)
			return err
		}
		if next, err = nextCounter(tx, last); err != nil {
			return err
		}
		h.Revocations, h.RevocationDigest, err = revState(tx)
		return err
	})
	if err != nil || upToDate {
		return h, err
	}
	if h.Seq == 0 {
		return Head{}, fmt.Errorf("%w: empty audit log", ErrInvalid)
	}
	h.Counter, h.Prev, h.Store = next, last.digest, db.storeID
	h.Time = fromUnixNano(unixNano(db.now()))
	msg := h.Message()
	if _, ok := db.opts.Signer.Public().(ed25519.PublicKey); ok {
		h.Signature, err = db.opts.Signer.Sign(rand.Reader, msg, crypto.Hash(0))
	} else {
		d := sha256.Sum256(msg)
		h.Signature, err = db.opts.Signer.Sign(rand.Reader, d[:], crypto.SHA256)
	}
	if err != nil {
		return Head{}, fmt.Errorf("store: sign audit head: %w", err)
	}
	if err := h.Verify(db.opts.Signer.Public()); err != nil {
		return Head{}, fmt.Errorf("store: audit head signature does not verify: %w", err)
	}
	err = db.batch(func(tx *bolt.Tx) error {
		cur, err := readHeadState(tx)
		if err != nil {
			return err
		}
		if cur.counter != last.counter {
			return fmt.Errorf("%w: head %d was signed meanwhile", ErrInvalid, cur.counter)
		}
		rec, err := appendRecord(tx, AuditRecord{Time: h.Time, Event: EventHead, Verdict: "signed", Head: &h})
		if err != nil {
			return err
		}
		heads := tx.Bucket(wire.BucketHeads)
		heads.FillPercent = 1
		if err := heads.Put(wire.U64(h.Counter), wire.U64(rec.Seq)); err != nil {
			return err
		}
		st := append(append(wire.U64(h.Counter), wire.U64(rec.Seq)...), h.Digest()...)
		return tx.Bucket(wire.BucketMeta).Put(wire.MetaHead, st)
	})
	if err != nil {
		return Head{}, err
	}
	if db.opts.Checkpoint != "" {
		if err := WriteCheckpoint(db.opts.Checkpoint, h); err != nil {
			return h, err
		}
	}
	return h, nil
}

// nextCounter is the counter of the next head: one past the newest, or
// past the counter of a checkpoint acknowledged as superseded since, so
// that heads of the lost history and of this one never share a counter.
func nextCounter(tx *bolt.Tx, last headState) (uint64, error) {
	next := last.counter + 1
	v := tx.Bucket(wire.BucketMeta).Get(wire.MetaAck)
	if v == nil {
		return next, nil
	}
	seq, err := wire.ParseU64(v)
	if err != nil {
		return 0, fmt.Errorf("%w: meta ack", ErrDamaged)
	}
	if seq <= last.recordSeq {
		return next, nil
	}
	r, _, err := record(tx, seq)
	if err != nil || r.Ack == nil {
		return 0, fmt.Errorf("%w: meta ack names record %d, which acknowledges nothing", ErrDamaged, seq)
	}
	return max(next, r.Ack.Counter+1), nil
}

// NewestHead returns the newest signed head, or ErrNotFound if none.
func (db *DB) NewestHead() (Head, error) {
	var h Head
	err := db.view(func(tx *bolt.Tx) error {
		st, err := readHeadState(tx)
		if err != nil {
			return err
		}
		if st.counter == 0 {
			return fmt.Errorf("%w: no signed head", ErrNotFound)
		}
		h, err = headRecord(tx, st.recordSeq)
		return err
	})
	return h, err
}

// Heads returns the signed heads in the order they were made.
func (db *DB) Heads() ([]Head, error) {
	out := []Head{}
	err := db.view(func(tx *bolt.Tx) error {
		return tx.Bucket(wire.BucketHeads).ForEach(func(k, v []byte) error {
			seq, err := wire.ParseU64(v)
			if err != nil {
				return fmt.Errorf("store: heads index %x: %w", k, err)
			}
			h, err := headRecord(tx, seq)
			if err != nil {
				return err
			}
			out = append(out, h)
			return nil
		})
	})
	return out, err
}
