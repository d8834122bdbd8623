package main

import (
	"fmt"
	"os"
	"path/filepath"
	"strings"
	"testing"

	"github.com/estca/estca/store/storetest"
)

// TestAuditVerifyCatchesTampering damages copies of a real appliance's store
// in every way storetest knows (edit, edit and re-chain, delete, truncate,
// reorder, insert, forged head signature) and checks that `estca audit
// verify` exits 1 naming the first bad record, while the original verifies.
func TestAuditVerifyCatchesTampering(t *testing.T) {
	dir, cfg := newAppliance(t)
	for i := range 7 {
		csr := filepath.Join(t.TempDir(), "c.der")
		writeCSR(t, csr, fmt.Sprintf("device-%d", i))
		mustEstca(t, "--config", cfg, "issue", "--csr", csr)
	}
	mustEstca(t, "--config", cfg, "audit", "verify")
	orig, err := os.ReadFile(cfg)
	if err != nil {
		t.Fatal(err)
	}
	for _, k := range storetest.Tampers() {
		t.Run(k.String(), func(t *testing.T) {
			copyPath := storetest.Copy(t, filepath.Join(dir, "store", "estca.db"))
			seq := storetest.Apply(t, copyPath, k)
			tcfg := filepath.Join(dir, "estca-"+k.String()+".yaml")
			body := strings.Replace(string(orig), "path: store/estca.db", "path: "+copyPath, 1)
			if body == string(orig) {
				t.Fatal("store path not found in the config")
			}
			if err := os.WriteFile(tcfg, []byte(body), 0o600); err != nil {
				t.Fatal(err)
			}
			code, out, errs := estca(t, "--config", tcfg, "audit", "verify")
			if code != 1 {
				t.Fatalf("audit verify exit %d, want 1\n%s%s", code, out, errs)
			}
			if want := fmt.Sprintf("record %d:", seq); !strings.Contains(errs, want) {
				t.Fatalf("audit verify does not name %q:\n%s", want, errs)
			}
		})
	}
	if v := mustEstca(t, "--config", cfg, "audit", "verify"); !strings.Contains(v, "8 records") {
		t.Fatalf("original store: %s", v)
	}

	// A mistyped store path is an error, not an empty store that "verifies".
	typo := filepath.Join(dir, "estca-typo.yaml")
	os.WriteFile(typo, []byte(strings.Replace(string(orig), "path: store/estca.db", "path: stroe/estca.db", 1)), 0o600)
	if code, out, errs := estca(t, "--config", typo, "audit", "verify"); code == 0 {
		t.Fatalf("audit verify of a missing store exits 0: %s%s", out, errs)
	}
	if _, err := os.Stat(filepath.Join(dir, "stroe")); err == nil {
		t.Fatal("audit verify created a store")
	}
}
