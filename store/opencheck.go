package store

import (
	"bytes"
	"errors"
	"fmt"
	"os"
	"sort"

	bolt "go.etcd.io/bbolt"

	"github.com/estca/estca/store/internal/wire"
)

// openCheck is the audit check Open runs when Options.AuditKey is set. It
// costs the records written since the checkpoint plus the revocation set,
// not the whole chain:
//
//  1. the newest signed head (meta head → its record) must verify;
//  2. the store must extend the checkpoint file: its head with the
//     checkpoint's counter has the checkpoint's digest, or a signed record
//     acknowledges the checkpoint as superseded (a restore);
//  3. the records from that point to the last one must chain (hashes from
//     the signed hash on), heads in between must chain and verify, and
//     each issued record must find its certificate;
//  4. the revocations bucket, folded in record order, must give the
//     revocation accumulator the newest head signs (plus revocations after
//     it): the revocation set the store answers from is the one the chain
//     proves.
//
// When the store is ahead of the checkpoint (a crash between a commit and
// the checkpoint write) or supersedes it, the checkpoint file is brought up
// to date.
func (db *DB) openCheck() error {
	pub := db.opts.AuditKey
	var newest Head
	rewrite := false
	err := db.view(func(tx *bolt.Tx) error {
		st, err := readHeadState(tx)
		if err != nil {
			return err
		}
		if st.counter == 0 {
			return &VerifyError{Reason: "no signed head", Detail: "an initialised store always has one"}
		}
		newest, err = headRecord(tx, st.recordSeq)
		if err != nil {
			return &VerifyError{Seq: st.recordSeq, Reason: "malformed record", Detail: err.Error()}
		}
		if newest.Counter != st.counter || !bytes.Equal(newest.Digest(), st.digest) {
			return &VerifyError{Seq: st.recordSeq, Reason: "heads index mismatch",
				Detail: fmt.Sprintf("the meta head names head %d, record %d holds head %d", st.counter, st.recordSeq, newest.Counter)}
		}
		if err := newest.Verify(pub); err != nil {
			if errors.Is(err, errBadSignature) {
				return &VerifyError{Seq: st.recordSeq, Reason: "bad head signature", Detail: fmt.Sprintf("head %d", newest.Counter)}
			}
			return err
		}
		c := newChainCheck(tx, pub, db.storeID)
		from, prev := uint64(0), []byte(nil)
		ackSeq := uint64(0)
		switch {
		case db.opts.Checkpoint == "" || db.opts.SkipCheckpoint:
			c.fromHead(newest, st.recordSeq)
			from = newest.Seq + 1
		default:
			k, err := db.readCheckpointFor(newest.Ref())
			if err != nil {
				return err
			}
			h, hseq, err := headByCounter(tx, k.Counter)
			if err == nil && bytes.Equal(h.Digest(), k.Digest) {
				c.fromHead(h, hseq)
				from = h.Seq + 1
				rewrite = k.Counter != newest.Counter
				break
			}
			ackSeq, prev, err = ackFor(tx, k)
			if err != nil {
				return err
			}
			if ackSeq == 0 {
				reason := "forked"
				if k.Counter > newest.Counter {
					reason = "behind"
				}
				return &CheckpointError{Reason: reason, Path: db.opts.Checkpoint, Checkpoint: k, Newest: newest.Ref()}
			}
			// Superseded by a signed acknowledgement: check from it on.
			c.headsKnown, c.revKnown = false, false
			from, rewrite = ackSeq, true
		}
		if err := c.walk(from, prev); err != nil {
			return err
		}
		if ackSeq > 0 && (!c.headsKnown || c.headCovered < ackSeq) {
			return &VerifyError{Seq: ackSeq, Reason: "acknowledgement not signed",
				Detail: "no signed head covers the record that acknowledges the checkpoint"}
		}
		if err := c.finish(); err != nil {
			return err
		}
		revs, err := provenRevocations(tx, c.revCount, c.revAcc)
		if err != nil {
			return err
		}
		db.revMu.Lock()
		db.revs = revs
		db.revMu.Unlock()
		return nil
	})
	if err != nil {
		return err
	}
	if rewrite && !db.readOnly {
		if err := WriteCheckpoint(db.opts.Checkpoint, newest); err != nil {
			return err
		}
	}
	return nil
}

// readCheckpointFor reads the checkpoint file; newest is the store's newest
// head, for the error.
func (db *DB) readCheckpointFor(newest HeadRef) (Checkpoint, error) {
	path := db.opts.Checkpoint
	k, err := ReadCheckpoint(path)
	switch {
	case errors.Is(err, os.ErrNotExist):
		return k, &CheckpointError{Reason: "missing", Path: path, Newest: newest, Err: err}
	case err != nil:
		return k, &CheckpointError{Reason: "unreadable", Path: path, Newest: newest, Err: err}
	case !bytes.Equal(k.Store, db.storeID):
		return k, &CheckpointError{Reason: "other store", Path: path, Checkpoint: k, Newest: newest}
	}
	if err := k.Verify(db.opts.AuditKey); err != nil {
		return k, &CheckpointError{Reason: "bad signature", Path: path, Checkpoint: k, Newest: newest, Err: err}
	}
	return k, nil
}

// ackFor returns the seq of the newest acknowledgement record if it
// supersedes checkpoint k, with the stored hash of the record before it; 0
// otherwise.
func ackFor(tx *bolt.Tx, k Checkpoint) (uint64, []byte, error) {
	v := tx.Bucket(wire.BucketMeta).Get(wire.MetaAck)
	if v == nil {
		return 0, nil, nil
	}
	seq, err := wire.ParseU64(v)
	if err != nil || seq == 0 {
		return 0, nil, fmt.Errorf("%w: meta ack", ErrDamaged)
	}
	r, _, err := record(tx, seq)
	if err != nil || r.Ack == nil || !supersedes(*r.Ack, k) {
		return 0, nil, nil
	}
	var prev []byte
	if seq > 1 {
		pv := tx.Bucket(wire.BucketAudit).Get(wire.U64(seq - 1))
		if len(pv) < wire.HashSize {
			return 0, nil, &VerifyError{Seq: seq - 1, Reason: "sequence gap"}
		}
		prev = pv[:wire.HashSize]
	}
	return seq, prev, nil
}

// provenRevocations folds the revocations bucket in record order and
// returns it as the revocation set if it gives the accumulator (count,
// acc) the chain proves; otherwise a *VerifyError naming the difference.
func provenRevocations(tx *bolt.Tx, count uint64, acc []byte) (map[string]Revocation, error) {
	type entry struct {
		serial string
		wire.Revocation
	}
	var all []entry
	err := tx.Bucket(wire.BucketRevocations).ForEach(func(k, v []byte) error {
		serial, err := wire.ParseSerialKey(k)
		if err != nil {
			return &VerifyError{Reason: "revocation without its record", Detail: fmt.Sprintf("revocation key %x", k)}
		}
		w, err := wire.DecodeRevocation(v)
		if err != nil {
			return &VerifyError{Reason: "revocation differs from its record", Detail: fmt.Sprintf("serial %s: %v", serial, err)}
		}
		all = append(all, entry{serial, w})
		return nil
	})
	if err != nil {
		return nil, err
	}
	sort.Slice(all, func(i, j int) bool { return all[i].RecordSeq < all[j].RecordSeq })
	a := wire.ZeroAcc()
	for _, e := range all {
		a = wire.RevAccNext(a, e.RecordSeq, e.serial, e.Reason, e.Time)
	}
	if uint64(len(all)) != count || !bytes.Equal(a, acc) {
		detail := fmt.Sprintf("the revocation set holds %d revocations, the signed audit chain %d", len(all), count)
		if uint64(len(all)) == count {
			detail = fmt.Sprintf("the %d revocations in the revocation set differ from the ones the signed audit chain records", count)
		}
		return nil, &VerifyError{Reason: "revocation set differs from the audit chain",
			Detail: detail + "; run `estca audit verify` to name the serial"}
	}
	out := make(map[string]Revocation, len(all))
	for _, e := range all {
		out[e.serial] = Revocation{Serial: e.serial, Reason: e.Reason, Time: fromUnixNano(e.Time)}
	}
	return out, nil
}
