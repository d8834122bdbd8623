package store

import (
	"crypto/ecdsa"
	"encoding/hex"
	"errors"
	"os"
	"path/filepath"
	"strings"
	"testing"

	bolt "go.etcd.io/bbolt"

	"github.com/estca/estca/store/internal/wire"
)

// v1Fixture copies testdata/v1.db (written by the format 1 code: 10
// records, 3 signed heads, the last record unsigned, 5 certificates, one
// revoked, one pending request) and returns its path and audit key
// (testdata/v1-audit.key, a software test key).
func v1Fixture(t *testing.T) (string, *ecdsa.PrivateKey) {
	t.Helper()
	b, err := os.ReadFile("testdata/v1.db")
	if err != nil {
		t.Fatal(err)
	}
	path := filepath.Join(t.TempDir(), "estca.db")
	if err := os.WriteFile(path, b, 0o600); err != nil {
		t.Fatal(err)
	}
	return path, readKey(t, "testdata/v1-audit.key")
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
