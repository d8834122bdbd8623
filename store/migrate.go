package store

import (
	"bytes"
	"crypto"
	"crypto/sha256"
	"encoding/binary"
	"encoding/json"
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"syscall"
	"time"

	bolt "go.etcd.io/bbolt"

	"github.com/estca/estca/store/internal/wire"
)

// MigrateOptions configures Migrate.
type MigrateOptions struct {
	// AuditKey verifies the old chain and its signed heads; Signer (the
	// same audit key, in the HSM) signs the new heads. Required.
	AuditKey crypto.PublicKey
	Signer   crypto.Signer
	// Checkpoint is the checkpoint file to write for the new store.
	Checkpoint string
	// LockTimeout bounds the wait for the store's lock (default 2s).
	LockTimeout time.Duration
	// Now is the clock; nil means time.Now.
	Now func() time.Time
}

// MigrateReport says what Migrate did.
type MigrateReport struct {
	// From is the format migrated from (1 or 2).
	From int
	// Records, Heads, Certificates, Revocations and Requests are what the
	// old store held.
	Records, Heads, Certificates, Revocations, Requests int
	// V1Seq and V1Hash are the record the newest old signed head covers;
	// V1Unsigned how many records followed it (carried over, but no old
	// signature vouched for them).
	V1Seq      uint64
	V1Hash     []byte
	V1Unsigned int
	// Kept is where the old file now is (PATH.v1, PATH.v2).
	Kept string
	// Head is the format 2 head signed over the migration record.
	Head Head
}

// Migrate converts the format 1 or 2 store at path into the current
// format (3). It takes the store's lock (ErrLocked while a server runs)
// and checks the file's pages; a format 2 store is converted as
// migrateV2 says. Of a format 1 store it verifies the whole format 1 audit chain and its signed heads with
// AuditKey, and refuses a store that does not verify or whose buckets
// disagree with its records. It then writes a new store next to it: every
// format 1 record again, in order (issued records now commit to their
// certificate's SHA-256, revoked ones state their revocation), the
// certificates, requests and revocations, then a migration record that
// commits to the format 1 chain (its final signed head's record and hash)
// and a signed head; moves the format 1 file to PATH.v1 (kept, never
// deleted), renames the new store into place and writes the checkpoint.
func Migrate(path string, o MigrateOptions) (MigrateReport, error) {
	var rep MigrateReport
	if o.AuditKey == nil || o.Signer == nil {
		return rep, fmt.Errorf("%w: migration needs the audit key and signer", ErrInvalid)
	}
	if o.LockTimeout <= 0 {
		o.LockTimeout = DefaultLockTimeout
	}
	if o.Now == nil {
		o.Now = time.Now
	}
	f, err := openLocked(path, false, o.LockTimeout)
	if err != nil {
		return rep, err
	}
	defer f.Close()
	info, err := checkFile(f, path)
	if err != nil {
		return rep, err
	}
	if err := newWalker(f, path, info).run(-1); err != nil {
		return rep, err
	}
	old, err := bolt.Open(path, 0o600, &bolt.Options{ReadOnly: true, Timeout: o.LockTimeout,
		OpenFile: func(string, int, os.FileMode) (*os.File, error) { return dupFile(f, path) }})
	if err != nil {
		return rep, fmt.Errorf("store: open %s: %w", path, err)
	}
	defer old.Close()
	switch n := formatOf(old); {
	case n == 2:
		return migrateV2(path, old, o)
	case n >= wire.Version:
		return rep, fmt.Errorf("store: %s: %w: format %d is the current format: nothing to migrate", path, ErrVersion, n)
	}
	var v1 *v1Store
	err = old.View(func(tx *bolt.Tx) error {
		var err error
		v1, err = readV1(tx, o.AuditKey)
		return err
	})
	if err != nil {
		if errors.Is(err, ErrVersion) {
			return rep, fmt.Errorf("store: %s: %w", path, err)
		}
		return rep, fmt.Errorf("store: %s does not verify as a format 1 store; not migrating it: %w", path, err)
	}
	rep.From = 1
	rep.Records, rep.Heads, rep.Certificates = len(v1.records), v1.heads, len(v1.certs)
	rep.Revocations, rep.Requests = len(v1.revs), len(v1.requests)
	rep.V1Seq, rep.V1Hash = v1.signedSeq, v1.signedHash
	rep.V1Unsigned = len(v1.records) - int(v1.signedSeq)

	tmp := filepath.Join(filepath.Dir(path), "."+filepath.Base(path)+".migrate")
	os.Remove(tmp)
	db, err := Create(tmp, Options{AuditKey: o.AuditKey, Signer: o.Signer, Now: o.Now})
	if err != nil {
		return rep, err
	}
	defer os.Remove(tmp) // a no-op once renamed
	err = db.replay(v1)
	if err == nil {
		_, err = db.appendOwn(AuditRecord{Event: EventMigrated, Verdict: "migrated", Reason: fmt.Sprintf(
			"migrated from store format 1 (%s, kept as %s.v1): %d records verified with the audit key up to its newest signed head (%d heads) over record %d with hash %x; %d records after it carried over unsigned; %d certificates, %d revocations, %d requests",
			path, filepath.Base(path), rep.Records, rep.Heads, rep.V1Seq, rep.V1Hash, rep.V1Unsigned,
			rep.Certificates, rep.Revocations, rep.Requests)})
	}
	if err == nil {
		rep.Head, err = db.SignHead()
	}
	if err == nil {
		_, err = db.Verify(o.AuditKey)
	}
	if cerr := db.Close(); err == nil {
		err = cerr
	}
	if err != nil {
		return rep, fmt.Errorf("store: migrate: %w", err)
	}
	rep.Kept = path + ".v1"
	return rep, install(path, tmp, rep.Kept, rep.Head, o.Checkpoint)
}

// install puts the migrated store tmp in place of the store at path,
// which it keeps as kept (never deleted), and writes the checkpoint of
// the migration's head.
func install(path, tmp, kept string, head Head, checkpoint string) error {
	if _, err := os.Stat(kept); err == nil {
		return fmt.Errorf("store: migrate: %s exists; move it away first", kept)
	}
	// The migrated file gets the original's owner (a migration run as root
	// must not lock the service's user out of its store).
	fi, err := os.Stat(path)
	if err != nil {
		return fmt.Errorf("store: migrate: %w", err)
	}
	if st, ok := fi.Sys().(*syscall.Stat_t); ok {
		if err := os.Chown(tmp, int(st.Uid), int(st.Gid)); err != nil {
			return fmt.Errorf("store: migrate: give the migrated store the original's owner: %w", err)
		}
	}
	// A link keeps the original, and the rename then replaces path
	// atomically: a crash in between leaves path naming the old store or
	// the new one, never nothing.
	if err := os.Link(path, kept); err != nil {
		return fmt.Errorf("store: migrate: %w", err)
	}
	if err := os.Rename(tmp, path); err != nil {
		return fmt.Errorf("store: migrate: %w", err)
	}
	if err := syncDir(filepath.Dir(path)); err != nil {
		return fmt.Errorf("store: migrate: %w", err)
	}
	if checkpoint != "" {
		if err := WriteCheckpoint(checkpoint, head); err != nil {
			return err
		}
	}
	return nil
}

// migrateChunk is how many format 1 records one transaction replays.
const migrateChunk = 1000

// replay writes the format 1 store's records, certificates, requests and
// revocations into db, in record order, in chunks.
func (db *DB) replay(v1 *v1Store) error {
	err := update(db.bolt, func(tx *bolt.Tx) error {
		for _, q := range v1.requests {
			if err := putRequest(tx, q.requester, q.csrDigest, &q.Request); err != nil {
				return err
			}
		}
		return nil
	})
	for i := 0; err == nil && i < len(v1.records); i += migrateChunk {
		chunk := v1.records[i:min(i+migrateChunk, len(v1.records))]
		err = update(db.bolt, func(tx *bolt.Tx) error {
			for _, r := range chunk {
				if err := db.replayOne(tx, v1, r); err != nil {
					return fmt.Errorf("format 1 record %d: %w", r.Seq, err)
				}
			}
			return nil
		})
	}
	if err != nil {
		return err
	}
	return db.view(func(tx *bolt.Tx) error {
		revs, err := loadRevocations(tx)
		db.revs = revs
		return err
	})
}

func (db *DB) replayOne(tx *bolt.Tx, v1 *v1Store, r AuditRecord) error {
	r.Seq, r.Prev, r.Hash = 0, nil, nil
	switch r.Event {
	case EventIssued:
		c, ok := v1.certs[r.Serial]
		if !ok {
			return fmt.Errorf("%w: issued record for serial %s without its certificate", ErrInvalid, r.Serial)
		}
		p, err := prepareIssue(c, r, c.IssuedAt)
		if err != nil {
			return err
		}
		_, err = p.write(tx)
		return err
	case EventRevoked:
		v, ok := v1.revs[r.Serial]
		if !ok {
			return fmt.Errorf("%w: revoked record for serial %s without its revocation", ErrInvalid, r.Serial)
		}
		p, err := prepareRevoke(r.Serial, v.Reason, v.Time, r, r.Time)
		if err != nil {
			return err
		}
		return p.write(tx)
	}
	if storeEvents[r.Event] {
		return fmt.Errorf("%w: format 1 has no %s records", ErrInvalid, r.Event)
	}
	_, err := appendRecord(tx, r)
	return err
}

// Format 1 (JSON records, certificates keyed by serial), read only here.

type v1Store struct {
	records    []AuditRecord
	heads      int
	signedSeq  uint64
	signedHash []byte
	certs      map[string]Certificate
	revs       map[string]Revocation
	requests   []storedRequest
}

type v1Record struct {
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

type v1Head struct {
	Seq       uint64 `json:"seq"`
	Hash      []byte `json:"hash"`
	Time      int64  `json:"time"`
	Signature []byte `json:"sig"`
}

type v1Cert struct {
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

type v1Revocation struct {
	Reason int   `json:"reason"`
	Time   int64 `json:"time"`
}

type v1Request struct {
	Requester Identity     `json:"requester"`
	CSR       []byte       `json:"csr,omitempty"`
	Profile   string       `json:"profile,omitempty"`
	State     RequestState `json:"state"`
	Serial    string       `json:"serial,omitempty"`
	Reason    string       `json:"reason,omitempty"`
	Created   int64        `json:"created"`
	Decided   int64        `json:"decided,omitempty"`
}

// v1HeadMessage is what a format 1 head signature covers.
func v1HeadMessage(seq uint64, hash []byte, t int64) []byte {
	m := []byte("estca audit head v1\x00")
	m = binary.BigEndian.AppendUint64(m, seq)
	m = binary.BigEndian.AppendUint64(m, uint64(t))
	return append(m, hash...)
}

// strictJSON decodes b into v, refusing unknown fields and trailing data.
func strictJSON(b []byte, v any) error {
	dec := json.NewDecoder(bytes.NewReader(b))
	dec.DisallowUnknownFields()
	if err := dec.Decode(v); err != nil {
		return err
	}
	if dec.More() {
		return errors.New("trailing data")
	}
	return nil
}

// readV1 reads and verifies a format 1 store: the chain (canonical JSON,
// hashes, links, the meta chain head), the signed heads (signatures with
// pub, each matching its record), and the buckets against the records.
func readV1(tx *bolt.Tx, pub crypto.PublicKey) (*v1Store, error) {
	b := func(name string) *bolt.Bucket { return tx.Bucket([]byte(name)) }
	meta, audit, heads, certs, revs, reqs := b("meta"), b("audit"), b("audit_heads"), b("certs"), b("revocations"), b("requests")
	if meta != nil {
		if v := meta.Get([]byte("version")); len(v) == 8 && binary.BigEndian.Uint64(v) != 1 {
			return nil, fmt.Errorf("%w: format %d, not format 1: nothing to migrate", ErrVersion, binary.BigEndian.Uint64(v))
		}
	}
	if meta == nil || audit == nil || heads == nil || certs == nil || revs == nil || reqs == nil {
		return nil, fmt.Errorf("%w: a format 1 bucket is missing", ErrForeign)
	}
	s := &v1Store{certs: map[string]Certificate{}, revs: map[string]Revocation{}}
	var prev []byte
	hashes := map[uint64][]byte{}
	err := audit.ForEach(func(k, v []byte) error {
		seq := uint64(len(s.records)) + 1
		if len(k) != 8 || binary.BigEndian.Uint64(k) != seq || len(v) <= sha256.Size {
			return &VerifyError{Seq: seq, Reason: "sequence gap"}
		}
		hash, enc := v[:sha256.Size], v[sha256.Size:]
		var w v1Record
		if err := strictJSON(enc, &w); err != nil || w.V != 1 || w.Seq != seq {
			return &VerifyError{Seq: seq, Reason: "malformed record"}
		}
		if again, _ := json.Marshal(w); !bytes.Equal(again, enc) {
			return &VerifyError{Seq: seq, Reason: "malformed record", Detail: "non-canonical"}
		}
		if !bytes.Equal(w.Prev, prev) || !bytes.Equal(wire.RecordHash(prev, enc), hash) {
			return &VerifyError{Seq: seq, Reason: "hash mismatch"}
		}
		s.records = append(s.records, AuditRecord{Seq: seq, Time: fromUnixNano(w.Time), Event: w.Event,
			Requester: w.Requester, CSRDigest: w.CSRDigest, Serial: w.Serial, Profile: w.Profile,
			Verdict: w.Verdict, Reason: w.Reason, Flags: w.Flags})
		hashes[seq] = bytes.Clone(hash)
		prev = bytes.Clone(hash)
		return nil
	})
	if err != nil {
		return nil, err
	}
	if v := meta.Get([]byte("chain_head")); !bytes.Equal(v, append(wire.U64(uint64(len(s.records))), prev...)) {
		return nil, &VerifyError{Seq: uint64(len(s.records)) + 1, Reason: "chain head mismatch"}
	}
	err = heads.ForEach(func(_, v []byte) error {
		var h v1Head
		if err := strictJSON(v, &h); err != nil {
			return &VerifyError{Reason: "malformed record", Detail: "format 1 head"}
		}
		if err := verifySig(pub, v1HeadMessage(h.Seq, h.Hash, h.Time), h.Signature); err != nil {
			return &VerifyError{Seq: h.Seq, Reason: "bad head signature", Detail: err.Error()}
		}
		if !bytes.Equal(hashes[h.Seq], h.Hash) {
			return &VerifyError{Seq: h.Seq, Reason: "signed head mismatch"}
		}
		s.heads++
		if h.Seq >= s.signedSeq {
			s.signedSeq, s.signedHash = h.Seq, h.Hash
		}
		return nil
	})
	if err != nil {
		return nil, err
	}
	if s.heads == 0 {
		return nil, &VerifyError{Reason: "no signed head"}
	}
	if err := s.readBuckets(certs, revs, reqs); err != nil {
		return nil, err
	}
	return s, nil
}

// readBuckets reads the certificates, revocations and requests and checks
// them against the records both ways.
func (s *v1Store) readBuckets(certs, revs, reqs *bolt.Bucket) error {
	err := certs.ForEach(func(k, v []byte) error {
		var w v1Cert
		if len(k) < 2 || strictJSON(v, &w) != nil {
			return &VerifyError{Reason: "certificate differs from its issued record", Detail: fmt.Sprintf("format 1 certificate key %x", k)}
		}
		serial := string(k[1:])
		s.certs[serial] = Certificate{Serial: serial, DER: w.DER, Subject: w.Subject, SKI: w.SKI, Requester: w.Requester,
			Profile: w.Profile, CSRDigest: w.CSRDigest, NotBefore: fromUnixNano(w.NotBefore),
			NotAfter: fromUnixNano(w.NotAfter), IssuedAt: fromUnixNano(w.IssuedAt)}
		return nil
	})
	if err != nil {
		return err
	}
	err = revs.ForEach(func(k, v []byte) error {
		var w v1Revocation
		if len(k) < 2 || strictJSON(v, &w) != nil {
			return &VerifyError{Reason: "revocation differs from its record", Detail: fmt.Sprintf("format 1 revocation key %x", k)}
		}
		serial := string(k[1:])
		s.revs[serial] = Revocation{Serial: serial, Reason: w.Reason, Time: fromUnixNano(w.Time)}
		return nil
	})
	if err != nil {
		return err
	}
	issued, revoked := map[string]bool{}, map[string]bool{}
	for _, r := range s.records {
		switch r.Event {
		case EventIssued:
			if _, ok := s.certs[r.Serial]; !ok || issued[r.Serial] {
				return &VerifyError{Seq: r.Seq, Reason: "issued record without its certificate", Detail: "serial " + r.Serial}
			}
			issued[r.Serial] = true
		case EventRevoked:
			if _, ok := s.revs[r.Serial]; !ok || revoked[r.Serial] || !issued[r.Serial] {
				return &VerifyError{Seq: r.Seq, Reason: "revocation missing", Detail: "serial " + r.Serial}
			}
			revoked[r.Serial] = true
		}
	}
	for serial := range s.certs {
		if !issued[serial] {
			return &VerifyError{Reason: "certificate without issued record", Detail: "serial " + serial}
		}
	}
	for serial := range s.revs {
		if !revoked[serial] {
			return &VerifyError{Reason: "revocation without its record", Detail: "serial " + serial}
		}
	}
	return reqs.ForEach(func(k, v []byte) error {
		var w v1Request
		if len(k) < 2 || strictJSON(v, &w) != nil {
			return &VerifyError{Reason: "request index mismatch", Detail: fmt.Sprintf("format 1 request key %x", k)}
		}
		n := int(binary.BigEndian.Uint16(k))
		if len(k) < 2+n {
			return &VerifyError{Reason: "request index mismatch", Detail: fmt.Sprintf("format 1 request key %x", k)}
		}
		st := stateCodes[w.State]
		if w.State == StateIssued {
			st = stateCodes[StateApproved] // Issue marks it issued again when the record is replayed
		}
		s.requests = append(s.requests, storedRequest{
			Request: wire.Request{State: st, Subject: w.Requester.Subject, IDevIDSerial: w.Requester.IDevIDSerial,
				Anchor: w.Requester.Anchor, Kind: w.Requester.Kind, CSR: w.CSR, Profile: w.Profile, Reason: w.Reason,
				Created: w.Created, Decided: w.Decided},
			requester: string(k[2 : 2+n]), csrDigest: string(k[2+n:]),
		})
		return nil
	})
}
