package store

import (
	"crypto"
	"crypto/ecdsa"
	"crypto/ed25519"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/rsa"
	"encoding/json"
	"errors"
	"fmt"
	"path/filepath"
	"testing"
	"time"

	bolt "go.etcd.io/bbolt"

	"github.com/estca/estca/store/storetest"
)

func TestSignHeadSigners(t *testing.T) {
	t.Parallel()
	ecKey, _ := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	rsaKey, _ := rsa.GenerateKey(rand.Reader, 2048)
	_, edKey, _ := ed25519.GenerateKey(rand.Reader)
	otherEC, _ := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	signers := []struct {
		name  string
		s     crypto.Signer
		wrong crypto.PublicKey
	}{
		{"ecdsa-p256", ecKey, &otherEC.PublicKey},
		{"rsa-pkcs1v15", rsaKey, &otherEC.PublicKey},
		{"ed25519", edKey, &ecKey.PublicKey},
	}
	for _, tc := range signers {
		t.Run(tc.name, func(t *testing.T) {
			t.Parallel()
			db, _ := openTest(t, Options{Now: func() time.Time { return fixedNow }})
			if _, err := db.SignHead(tc.s); !errors.Is(err, ErrEmptyLog) {
				t.Fatalf("SignHead on empty log err = %v", err)
			}
			for i := range 3 {
				if _, err := db.Append(AuditRecord{Event: EventStart, Reason: fmt.Sprint(i)}); err != nil {
					t.Fatal(err)
				}
			}
			h, err := db.SignHead(tc.s)
			if err != nil {
				t.Fatal(err)
			}
			if h.Seq != 3 || len(h.Hash) != 32 || !h.Time.Equal(fixedNow) {
				t.Errorf("head = %+v", h)
			}
			if _, err := db.Append(AuditRecord{Event: EventStop}); err != nil {
				t.Fatal(err)
			}
			if _, err := db.SignHead(tc.s); err != nil {
				t.Fatal(err)
			}
			rep, err := db.Verify(tc.s.Public())
			if err != nil {
				t.Fatalf("Verify: %v", err)
			}
			if rep != (VerifyReport{Records: 4, Heads: 2, LastSeq: 4}) {
				t.Errorf("report = %+v", rep)
			}
			heads, err := db.Heads()
			if err != nil || len(heads) != 2 || heads[0].Seq != 3 || heads[1].Seq != 4 {
				t.Errorf("Heads = %+v, %v", heads, err)
			}
			var ve *VerifyError
			if _, err := db.Verify(tc.wrong); !errors.As(err, &ve) || ve.Seq != 3 || ve.Reason != "bad head signature" {
				t.Errorf("Verify with wrong key err = %v", err)
			}
			if _, err := db.Verify(nil); !errors.Is(err, ErrInvalid) {
				t.Errorf("Verify(nil) with heads err = %v", err)
			}
		})
	}
}

// rawRecord reads record seq from a raw bbolt tx.
func rawRecord(t *testing.T, tx *bolt.Tx, seq uint64) AuditRecord {
	t.Helper()
	v := tx.Bucket(bucketAudit).Get(u64(seq))
	if v == nil {
		t.Fatalf("record %d absent", seq)
	}
	r, _, err := decodeStored(v)
	if err != nil {
		t.Fatalf("record %d: %v", seq, err)
	}
	return r
}

// putRaw stores r under key with the given hash (nil: recompute honestly).
func putRaw(t *testing.T, tx *bolt.Tx, key uint64, r AuditRecord, hash []byte) []byte {
	t.Helper()
	enc, err := encodeRecord(r)
	if err != nil {
		t.Fatal(err)
	}
	if hash == nil {
		hash = recordHash(r.Prev, enc)
	}
	if err := tx.Bucket(bucketAudit).Put(u64(key), append(append([]byte{}, hash...), enc...)); err != nil {
		t.Fatal(err)
	}
	return hash
}

// setMeta points the meta chain head at seq/hash, as a careful forger would.
func setMeta(t *testing.T, tx *bolt.Tx, seq uint64, hash []byte) {
	t.Helper()
	if err := tx.Bucket(bucketMeta).Put(keyChainHead, append(u64(seq), hash...)); err != nil {
		t.Fatal(err)
	}
}

// rechain rewrites records from..to so every hash and link is consistent again.
func rechain(t *testing.T, tx *bolt.Tx, from, to uint64) {
	t.Helper()
	prev := rawRecord(t, tx, from-1).Hash
	for s := from; s <= to; s++ {
		r := rawRecord(t, tx, s)
		r.Prev = prev
		prev = putRaw(t, tx, s, r, nil)
	}
	setMeta(t, tx, to, prev)
}

func TestVerifyDetectsTampering(t *testing.T) {
	t.Parallel()
	key, _ := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	db, _ := openTest(t, Options{})
	m := newCertMaker(t)
	// Records 1..10; signed heads (bucket keys 1, 2) at seq 6 and 10.
	for i := 1; i <= 10; i++ {
		if i%2 == 0 {
			if _, err := db.Issue(m.cert(t, serialOf(i), fp("dev"), fmt.Sprint(i)), AuditRecord{Requester: ident("dev")}); err != nil {
				t.Fatal(err)
			}
		} else if _, err := db.Append(AuditRecord{Event: EventDenied, Reason: fmt.Sprint("r", i)}); err != nil {
			t.Fatal(err)
		}
		if i == 6 || i == 10 {
			if _, err := db.SignHead(key); err != nil {
				t.Fatal(err)
			}
		}
	}
	// Cases with a kind are done by storetest.Apply (which picks its targets
	// from the newest signed head, 10: see the storetest.Tamper constants);
	// the others by tamper, with this package's record codec.
	cases := []struct {
		name   string
		kind   storetest.Tamper
		tamper func(t *testing.T, tx *bolt.Tx)
		seq    uint64
		reason string
	}{
		{"untouched", 0, func(*testing.T, *bolt.Tx) {}, 0, ""},
		{"edit field, hash kept", storetest.EditRecord, nil, 4, "hash mismatch"},
		{"edit bytes in place", 0, func(t *testing.T, tx *bolt.Tx) {
			v := append([]byte{}, tx.Bucket(bucketAudit).Get(u64(3))...)
			v[len(v)-3] ^= 1 // inside the JSON, keeps it parseable or not
			if err := tx.Bucket(bucketAudit).Put(u64(3), v); err != nil {
				t.Fatal(err)
			}
		}, 3, ""},
		{"edit and recompute hash, middle", storetest.EditRechain, nil, 5, "broken link"},
		{"edit and recompute hash under signed head", 0, func(t *testing.T, tx *bolt.Tx) {
			r := rawRecord(t, tx, 6)
			r.Reason = "forged"
			putRaw(t, tx, 6, r, nil)
		}, 6, "signed head mismatch"},
		{"edit and rechain to the end", 0, func(t *testing.T, tx *bolt.Tx) {
			r := rawRecord(t, tx, 8)
			r.Reason = "forged"
			putRaw(t, tx, 8, r, nil)
			rechain(t, tx, 9, 10)
		}, 10, "signed head mismatch"},
		{"delete middle record", storetest.DeleteMiddle, nil, 5, "sequence gap"},
		{"delete last records, meta fixed", storetest.DeleteTail, nil, 9, "missing records after signed head"},
		{"delete last records, meta kept", 0, func(t *testing.T, tx *bolt.Tx) {
			for s := uint64(8); s <= 10; s++ {
				if err := tx.Bucket(bucketAudit).Delete(u64(s)); err != nil {
					t.Fatal(err)
				}
			}
		}, 8, ""},
		{"swap two records", storetest.Reorder, nil, 3, "out of order"},
		{"insert forged record, shifting the rest", 0, func(t *testing.T, tx *bolt.Tx) {
			for s := uint64(10); s >= 5; s-- {
				v := append([]byte{}, tx.Bucket(bucketAudit).Get(u64(s))...)
				if err := tx.Bucket(bucketAudit).Put(u64(s+1), v); err != nil {
					t.Fatal(err)
				}
			}
			prev := rawRecord(t, tx, 4).Hash
			putRaw(t, tx, 5, AuditRecord{Seq: 5, Time: fixedNow, Event: EventApproved, Prev: prev}, nil)
			setMeta(t, tx, 11, rawRecord(t, tx, 11).Hash)
		}, 6, "out of order"},
		{"insert forged record and rechain", storetest.Insert, nil, 6, "signed head mismatch"},
		{"append forged record, meta kept", 0, func(t *testing.T, tx *bolt.Tx) {
			last := rawRecord(t, tx, 10)
			putRaw(t, tx, 11, AuditRecord{Seq: 11, Time: fixedNow, Event: EventConfig, Prev: last.Hash}, nil)
		}, 11, "chain head mismatch"},
		{"alter newest head signature", storetest.ForgeHeadSignature, nil, 10, "bad head signature"},
		{"alter oldest head signature", 0, func(t *testing.T, tx *bolt.Tx) { alterHead(t, tx, 1) }, 6, "bad head signature"},
		{"head re-signed by another key", 0, func(t *testing.T, tx *bolt.Tx) {
			other, _ := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
			b := tx.Bucket(bucketHeads)
			var w wireHead
			if err := json.Unmarshal(b.Get(u64(1)), &w); err != nil {
				t.Fatal(err)
			}
			w.Seq = 5
			w.Hash = rawRecord(t, tx, 5).Hash
			w.Signature = signForTest(t, other, HeadMessage(w.Seq, w.Hash, fromUnixNano(w.Time)))
			v, _ := json.Marshal(w)
			if err := b.Put(u64(1), v); err != nil {
				t.Fatal(err)
			}
		}, 5, "bad head signature"},
	}
	dir := t.TempDir()
	for i, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			path := filepath.Join(dir, fmt.Sprintf("copy%d.db", i))
			if err := db.BackupFile(path); err != nil {
				t.Fatal(err)
			}
			if tc.kind != 0 {
				if seq := storetest.Apply(t, path, tc.kind); seq != tc.seq {
					t.Errorf("storetest.Apply(%v) expects seq %d, want %d", tc.kind, seq, tc.seq)
				}
			} else {
				raw, err := bolt.Open(path, 0o600, &bolt.Options{Timeout: time.Second})
				if err != nil {
					t.Fatal(err)
				}
				err = raw.Update(func(tx *bolt.Tx) error { tc.tamper(t, tx); return nil })
				raw.Close()
				if err != nil {
					t.Fatal(err)
				}
			}
			cp, err := Open(path, Options{ReadOnly: true})
			if err != nil {
				t.Fatal(err)
			}
			defer cp.Close()
			checkDB(t, cp)
			rep, err := cp.Verify(&key.PublicKey)
			if tc.seq == 0 {
				if err != nil || rep != (VerifyReport{Records: 10, Heads: 2, LastSeq: 10}) {
					t.Fatalf("untouched copy: %+v, %v", rep, err)
				}
				return
			}
			var ve *VerifyError
			if !errors.As(err, &ve) {
				t.Fatalf("Verify err = %v, want *VerifyError", err)
			}
			if ve.Seq != tc.seq || (tc.reason != "" && ve.Reason != tc.reason) {
				t.Errorf("Verify failed at %d %q, want %d %q", ve.Seq, ve.Reason, tc.seq, tc.reason)
			}
		})
	}
	if _, err := db.Verify(&key.PublicKey); err != nil {
		t.Errorf("original store no longer verifies: %v", err)
	}
}

func alterHead(t *testing.T, tx *bolt.Tx, n uint64) {
	t.Helper()
	b := tx.Bucket(bucketHeads)
	var w wireHead
	if err := json.Unmarshal(b.Get(u64(n)), &w); err != nil {
		t.Fatal(err)
	}
	w.Signature[len(w.Signature)/2] ^= 0x40
	v, _ := json.Marshal(w)
	if err := b.Put(u64(n), v); err != nil {
		t.Fatal(err)
	}
}

func signForTest(t *testing.T, k *ecdsa.PrivateKey, msg []byte) []byte {
	t.Helper()
	h := crypto.SHA256.New()
	h.Write(msg)
	sig, err := ecdsa.SignASN1(rand.Reader, k, h.Sum(nil))
	if err != nil {
		t.Fatal(err)
	}
	return sig
}
