package main

import (
	"fmt"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/estca/estca/store"
	"github.com/estca/estca/store/storetest"
)

// fillStore adds n issued certificates (with a signed head after every
// fifth) and one revocation to a stopped appliance's store, through the
// store API with the appliance's own audit key in its token: a history long
// enough to cut 60 records from. It returns the revoked serial.
func fillStore(t *testing.T, cfgPath string, n int) string {
	t.Helper()
	cfg, err := loadConfig(cfgPath)
	if err != nil {
		t.Fatal(err)
	}
	tok, signer, pub, err := openAuditToken(cfg)
	if err != nil {
		t.Fatal(err)
	}
	defer tok.Close()
	db, err := openStore(cfg, signer, pub)
	if err != nil {
		t.Fatal(err)
	}
	defer db.Close()
	var revoked string
	for i := 1; i <= n; i++ {
		serial := fmt.Sprintf("%x", 0x7a0000+i)
		c := store.Certificate{Serial: serial, DER: []byte{0x30, 0x03, 0x02, 0x01, byte(i)}, Subject: "CN=filler-" + serial,
			Requester: fmt.Sprintf("%064x", i), CSRDigest: fmt.Sprintf("%064x", 1<<20+i), Profile: "default",
			NotBefore: time.Now(), NotAfter: time.Now().Add(time.Hour)}
		if _, err := db.Issue(c, store.AuditRecord{Verdict: "accepted"}); err != nil {
			t.Fatal(err)
		}
		if i == 4 {
			if err := db.Revoke(serial, 1, time.Now(), store.AuditRecord{Verdict: "revoked"}); err != nil {
				t.Fatal(err)
			}
			revoked = serial
		}
		if i%5 == 0 {
			if _, err := db.SignHead(); err != nil {
				t.Fatal(err)
			}
		}
	}
	if _, err := db.SignHead(); err != nil {
		t.Fatal(err)
	}
	return revoked
}

// tamperedConfig copies the appliance's store and checkpoint, damages the
// copy with k, and returns a config that uses the copies, with what
// verification reports.
func tamperedConfig(t *testing.T, dir, cfgPath string, k storetest.Tamper) (string, storetest.Expect) {
	t.Helper()
	copyPath := storetest.Copy(t, filepath.Join(dir, "store", "estca.db"))
	cp := copyPath + ".checkpoint"
	b, err := os.ReadFile(filepath.Join(dir, "store", "estca.db.checkpoint"))
	if err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(cp, b, 0o600); err != nil {
		t.Fatal(err)
	}
	want := storetest.Apply(t, copyPath, k)
	orig, err := os.ReadFile(cfgPath)
	if err != nil {
		t.Fatal(err)
	}
	body := strings.Replace(string(orig), "path: store/estca.db\n", "path: "+copyPath+"\n", 1)
	body = strings.Replace(body, "checkpoint: store/estca.db.checkpoint", "checkpoint: "+cp, 1)
	body = strings.Replace(body, "admin_socket: run/estca.sock", "admin_socket: "+filepath.Join(filepath.Dir(copyPath), "estca.sock"), 1)
	if !strings.Contains(body, copyPath) || !strings.Contains(body, cp) {
		t.Fatal("store or checkpoint path not found in the config")
	}
	tcfg := filepath.Join(dir, "estca-"+k.String()+".yaml")
	if err := os.WriteFile(tcfg, []byte(body), 0o600); err != nil {
		t.Fatal(err)
	}
	return tcfg, want
}

// TestAuditVerifyCatchesTampering damages copies of a real appliance's store
// in every way storetest knows (edits, re-chaining, deletions, the tail cut
// with the heads over it, certificates added and deleted, revocations
// removed and changed, the head chain broken) and checks that `estca audit
// verify` exits 1 naming what is wrong, while the original verifies.
func TestAuditVerifyCatchesTampering(t *testing.T) {
	dir, cfg := newAppliance(t)
	for i := range 3 {
		csr := filepath.Join(t.TempDir(), "c.der")
		writeCSR(t, csr, fmt.Sprintf("device-%d", i))
		mustEstca(t, "--config", cfg, "issue", "--csr", csr)
	}
	fillStore(t, cfg, 60)
	if v := mustEstca(t, "--config", cfg, "audit", "verify"); !strings.Contains(v, "63 certificates, 1 revocations; extends 1 checkpoint") {
		t.Fatalf("original store: %s", v)
	}
	for _, k := range storetest.Tampers() {
		t.Run(k.String(), func(t *testing.T) {
			tcfg, want := tamperedConfig(t, dir, cfg, k)
			code, out, errs := estca(t, "--config", tcfg, "audit", "verify")
			if code != 1 {
				t.Fatalf("audit verify exit %d, want 1\n%s%s", code, out, errs)
			}
			if !strings.Contains(errs, want.Reason) {
				t.Fatalf("audit verify does not name %q:\n%s", want.Reason, errs)
			}
			if want.Seq > 0 && !strings.Contains(errs, fmt.Sprintf("record %d:", want.Seq)) {
				t.Fatalf("audit verify does not name record %d:\n%s", want.Seq, errs)
			}
		})
	}
	if v := mustEstca(t, "--config", cfg, "audit", "verify"); !strings.Contains(v, "audit chain ok") {
		t.Fatalf("original store: %s", v)
	}

	// The checkpoint printed for keeping off the box verifies, and a
	// deleted checkpoint file is itself an error.
	kept := filepath.Join(t.TempDir(), "kept.checkpoint")
	if err := os.WriteFile(kept, []byte(mustEstca(t, "--config", cfg, "audit", "checkpoint")), 0o600); err != nil {
		t.Fatal(err)
	}
	mustEstca(t, "--config", cfg, "audit", "verify", "--checkpoint", kept)
	local := filepath.Join(dir, "store", "estca.db.checkpoint")
	if err := os.Rename(local, local+".away"); err != nil {
		t.Fatal(err)
	}
	if code, _, errs := estca(t, "--config", cfg, "audit", "verify"); code != 1 || !strings.Contains(errs, "missing") {
		t.Fatalf("audit verify without the checkpoint file: exit %d\n%s", code, errs)
	}
	if code, out, errs := estca(t, "--config", cfg, "audit", "verify", "--checkpoint", kept); code != 0 || !strings.Contains(errs, "warning") {
		t.Fatalf("audit verify with only a kept checkpoint: exit %d\n%s%s", code, out, errs)
	}
	os.Rename(local+".away", local)

	// A mistyped store path is an error, not an empty store that "verifies".
	orig, _ := os.ReadFile(cfg)
	typo := filepath.Join(dir, "estca-typo.yaml")
	os.WriteFile(typo, []byte(strings.Replace(string(orig), "path: store/estca.db\n", "path: stroe/estca.db\n", 1)), 0o600)
	if code, out, errs := estca(t, "--config", typo, "audit", "verify"); code == 0 || !strings.Contains(errs, "no store file") {
		t.Fatalf("audit verify of a missing store: exit %d %s%s", code, out, errs)
	}
	if _, err := os.Stat(filepath.Join(dir, "stroe")); err == nil {
		t.Fatal("audit verify created a store")
	}
}

// TestStoreMigrateRefusesCurrentFormat: `estca store migrate` on a current
// store changes nothing and says why.
func TestStoreMigrateRefusesCurrentFormat(t *testing.T) {
	dir, cfg := newAppliance(t)
	before, _ := os.ReadFile(filepath.Join(dir, "store", "estca.db"))
	code, _, errs := estca(t, "--config", cfg, "store", "migrate")
	if code != 1 || !strings.Contains(errs, "nothing to migrate") {
		t.Fatalf("store migrate on a current store: exit %d\n%s", code, errs)
	}
	after, _ := os.ReadFile(filepath.Join(dir, "store", "estca.db"))
	if string(before) != string(after) {
		t.Error("the store changed")
	}
	mustEstca(t, "--config", cfg, "audit", "verify")
}
