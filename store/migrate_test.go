package store

import (
	"bytes"
	"crypto/ecdsa"
	"encoding/hex"
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	bolt "go.etcd.io/bbolt"

	"github.com/estca/estca/store/internal/wire"
)

// v1Fixture copies testdata/v1.db (written by the format 1 code: 10
// records, 3 signed heads, the last record unsigned, 5 certificates, one
// revoked, one pending request) and returns its path and audit key
// (testdata/v1-audit.key, a software test key).
func v1Fixture(t *testing.T) (string, *ecdsa.PrivateKey) {
	t.Helper()
	return fixture(t, "testdata/v1.db", "testdata/v1-audit.key")
}

// fixture copies the store file db into a temporary directory and returns
// the copy's path and the audit key in key.
func fixture(t *testing.T, db, key string) (string, *ecdsa.PrivateKey) {
	t.Helper()
	path := filepath.Join(t.TempDir(), "estca.db")
	if err := os.WriteFile(path, mustRead(t, db), 0o600); err != nil {
		t.Fatal(err)
	}
	return path, readKey(t, key)
}

func TestMigrate(t *testing.T) {
	t.Parallel()
	path, key := v1Fixture(t)
	if _, err := Open(path, Options{ReadOnly: true}); !errors.Is(err, ErrVersion) || !strings.Contains(err.Error(), "estca store migrate") {
		t.Fatalf("Open of a format 1 store: %v", err)
	}
	cp := path + ".checkpoint"
	rep, err := Migrate(path, MigrateOptions{AuditKey: &key.PublicKey, Signer: key, Checkpoint: cp})
	if err != nil {
		t.Fatal(err)
	}
	if rep.Records != 10 || rep.Heads != 3 || rep.V1Seq != 9 || rep.V1Unsigned != 1 || rep.Certificates != 5 ||
		rep.Revocations != 1 || rep.Requests != 6 || rep.Kept != path+".v1" {
		t.Fatalf("report = %+v", rep)
	}
	if _, err := os.Stat(rep.Kept); err != nil {
		t.Fatalf("format 1 file not kept: %v", err)
	}
	db, err := Open(path, withKey(Options{}, key, path))
	if err != nil {
		t.Fatalf("Open after migration: %v", err)
	}
	defer db.Close()
	vr, err := db.Verify(&key.PublicKey)
	if err != nil || vr.Certificates != 5 || vr.Revocations != 1 {
		t.Fatalf("Verify after migration = %+v, %v", vr, err)
	}
	if _, err := db.Revocation(serialOf(1)); err != nil {
		t.Errorf("revocation lost: %v", err)
	}
	if q, err := db.Requests(StatePending); err != nil || len(q) != 1 || q[0].Requester.Subject != "CN=other,O=Acme" {
		t.Errorf("pending requests = %+v, %v", q, err)
	}
	if c, err := db.IssuedFor(fp("dev"), digest(serialOf(3))); err != nil || c.Serial != serialOf(3) {
		t.Errorf("IssuedFor after migration = %+v, %v", c, err)
	}
	recs, _ := db.AuditRecords(AuditFilter{})
	var migrated *AuditRecord
	for i := range recs {
		if recs[i].Event == EventMigrated {
			migrated = &recs[i]
		}
	}
	if migrated == nil || !strings.Contains(migrated.Reason, hex.EncodeToString(rep.V1Hash)) {
		t.Fatalf("no migration record committing to the format 1 head: %+v", migrated)
	}
	if recs[2].Event != EventConfig || recs[2].Reason != "appliance initialised" {
		t.Errorf("first replayed record = %+v", recs[2])
	}
}

func TestMigrateRefusesBadV1(t *testing.T) {
	t.Parallel()
	path, key := v1Fixture(t)
	raw, err := bolt.Open(path, 0o600, nil)
	if err != nil {
		t.Fatal(err)
	}
	err = raw.Update(func(tx *bolt.Tx) error {
		b := tx.Bucket([]byte("audit"))
		v := append([]byte(nil), b.Get(wire.U64(3))...)
		i := strings.Index(string(v), "accepted")
		copy(v[i:], "rejected")
		return b.Put(wire.U64(3), v)
	})
	raw.Close()
	if err != nil {
		t.Fatal(err)
	}
	before, _ := os.ReadFile(path)
	var ve *VerifyError
	if _, err := Migrate(path, MigrateOptions{AuditKey: &key.PublicKey, Signer: key}); !errors.As(err, &ve) || ve.Seq != 3 {
		t.Fatalf("Migrate of an edited format 1 store: %v", err)
	}
	after, _ := os.ReadFile(path)
	if string(before) != string(after) {
		t.Error("the format 1 file changed")
	}
	other := auditKey(t)
	if _, err := Migrate(path, MigrateOptions{AuditKey: &other.PublicKey, Signer: other}); err == nil {
		t.Error("Migrate with another audit key succeeded")
	}
	entries, _ := os.ReadDir(filepath.Dir(path))
	for _, e := range entries {
		if strings.Contains(e.Name(), "migrate") || strings.HasSuffix(e.Name(), ".v1") {
			t.Errorf("left behind: %s", e.Name())
		}
	}
}

// v2Fixture copies testdata/v2.db (written by the format 2 code: a config
// record, 5 certificates of one requester with SKI and policy identity,
// the first revoked, one pending request, a head after the third
// certificate and after the revocation, an unsigned stop record last) and
// returns its path and audit key (testdata/v2-audit.key).
func v2Fixture(t *testing.T) (string, *ecdsa.PrivateKey) {
	t.Helper()
	return fixture(t, "testdata/v2.db", "testdata/v2-audit.key")
}

func TestMigrateV2(t *testing.T) {
	t.Parallel()
	path, key := v2Fixture(t)
	if _, err := Open(path, Options{ReadOnly: true}); !errors.Is(err, ErrVersion) || !strings.Contains(err.Error(), "format 2") ||
		!strings.Contains(err.Error(), "estca store migrate") {
		t.Fatalf("Open of a format 2 store: %v", err)
	}
	// A checkpoint of the format 2 store, taken before the migration.
	old, err := bolt.Open(path, 0o600, &bolt.Options{ReadOnly: true})
	if err != nil {
		t.Fatal(err)
	}
	var storeID []byte
	_ = old.View(func(tx *bolt.Tx) error {
		storeID = append([]byte(nil), tx.Bucket(wire.BucketMeta).Get(wire.MetaStoreID)...)
		return nil
	})
	old.Close()
	cp := path + ".checkpoint"
	rep, err := Migrate(path, MigrateOptions{AuditKey: &key.PublicKey, Signer: key, Checkpoint: cp})
	if err != nil {
		t.Fatal(err)
	}
	if rep.From != 2 || rep.Certificates != 5 || rep.Revocations != 1 || rep.Requests != 6 || rep.V1Seq != 10 || rep.V1Unsigned != 3 ||
		rep.Heads < 3 || rep.Kept != path+".v2" || len(rep.V1Hash) != 32 {
		t.Fatalf("report = %+v", rep)
	}
	if kept, _ := os.ReadFile(rep.Kept); !bytes.Equal(kept, mustRead(t, "testdata/v2.db")) {
		t.Fatal("format 2 file not kept as it was")
	}
	db, err := Open(path, withKey(Options{}, key, path))
	if err != nil {
		t.Fatalf("Open after migration: %v", err)
	}
	defer db.Close()
	if !bytes.Equal(db.StoreID(), storeID) {
		t.Error("the store id changed: checkpoints of the format 2 store would not match")
	}
	vr, err := db.Verify(&key.PublicKey)
	if err != nil || vr.Certificates != 5 || vr.Revocations != 1 || vr.Records != rep.Records+2 {
		t.Fatalf("Verify after migration = %+v, %v", vr, err)
	}
	err = db.bolt.View(func(tx *bolt.Tx) error {
		if v := tx.Bucket(wire.BucketMeta).Get(wire.MetaVersion); !bytes.Equal(v, wire.U64(3)) {
			return fmt.Errorf("version %x", v)
		}
		for _, name := range wire.DroppedBuckets {
			if tx.Bucket(name) != nil {
				return fmt.Errorf("bucket %s kept", name)
			}
		}
		return nil
	})
	if err != nil {
		t.Fatal(err)
	}
	if _, err := db.Revocation(serialOf(1)); err != nil {
		t.Errorf("revocation lost: %v", err)
	}
	if q, err := db.Requests(StatePending); err != nil || len(q) != 1 || q[0].Requester.Subject != "CN=other,O=Acme" {
		t.Errorf("pending requests = %+v, %v", q, err)
	}
	if n, _, err := db.IssuedTo("demo/DEV-1", time.Time{}, 0); err != nil || n != 5 {
		t.Errorf("IssuedTo after migration = %d, %v", n, err)
	}
	if c, err := db.IssuedFor(fp("dev"), digest(serialOf(3))); err != nil || c.Serial != serialOf(3) {
		t.Errorf("IssuedFor after migration = %+v, %v", c, err)
	}
	recs, _ := db.AuditRecords(AuditFilter{})
	if last := recs[len(recs)-2]; last.Event != EventMigrated || !strings.Contains(last.Reason, hex.EncodeToString(rep.V1Hash)) {
		t.Fatalf("no migration record committing to the format 2 head: %+v", last)
	}
	// A second migration finds nothing to do.
	db.Close()
	if _, err := Migrate(path, MigrateOptions{AuditKey: &key.PublicKey, Signer: key}); !errors.Is(err, ErrVersion) {
		t.Errorf("Migrate of a format 3 store: %v", err)
	}
}

func TestMigrateV2RefusesBadStore(t *testing.T) {
	t.Parallel()
	path, key := v2Fixture(t)
	raw, err := bolt.Open(path, 0o600, nil)
	if err != nil {
		t.Fatal(err)
	}
	err = raw.Update(func(tx *bolt.Tx) error {
		b := tx.Bucket(wire.BucketAudit)
		v := append([]byte(nil), b.Get(wire.U64(4))...)
		i := bytes.Index(v, []byte("accepted"))
		if i < 0 {
			return errors.New("record 4 has no verdict to edit")
		}
		copy(v[i:], "rejected")
		return b.Put(wire.U64(4), v)
	})
	raw.Close()
	if err != nil {
		t.Fatal(err)
	}
	before := mustRead(t, path)
	var ve *VerifyError
	if _, err := Migrate(path, MigrateOptions{AuditKey: &key.PublicKey, Signer: key}); !errors.As(err, &ve) || ve.Seq != 4 {
		t.Fatalf("Migrate of an edited format 2 store: %v", err)
	}
	if !bytes.Equal(before, mustRead(t, path)) {
		t.Error("the format 2 file changed")
	}
	other := auditKey(t)
	if _, err := Migrate(path, MigrateOptions{AuditKey: &other.PublicKey, Signer: other}); err == nil {
		t.Error("Migrate with another audit key succeeded")
	}
	entries, _ := os.ReadDir(filepath.Dir(path))
	for _, e := range entries {
		if strings.Contains(e.Name(), "migrate") || strings.HasSuffix(e.Name(), ".v2") {
			t.Errorf("left behind: %s", e.Name())
		}
	}
}

func mustRead(t *testing.T, path string) []byte {
	t.Helper()
	b, err := os.ReadFile(path)
	if err != nil {
		t.Fatal(err)
	}
	return b
}
