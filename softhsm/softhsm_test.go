package softhsm_test

import (
	"crypto"
	"crypto/rand"
	"crypto/sha256"
	"errors"
	"os"
	"path/filepath"
	"strings"
	"testing"

	"github.com/estca/estca/hsm"
	"github.com/estca/estca/softhsm"
	"github.com/estca/estca/softhsm/softhsmtest"
)

// provision provisions a token without opening it; SOFTHSM2_CONF and the PIN
// environment variable are restored after the test.
func provision(t *testing.T, label string) *softhsm.Token {
	t.Helper()
	softhsmtest.Provision(t) // skip/fail policy, and t.Setenv of SOFTHSM2_CONF and the PIN env
	st, err := softhsm.Provision(t.TempDir(), label)
	if err != nil {
		t.Fatal(err)
	}
	return st
}

func TestModule(t *testing.T) {
	p, err := softhsm.Module()
	if errors.Is(err, softhsm.ErrNotInstalled) {
		if !strings.Contains(err.Error(), "softhsm2") {
			t.Errorf("error does not name the Debian package: %v", err)
		}
		t.Skip(err)
	}
	if err != nil || !filepath.IsAbs(p) {
		t.Fatalf("Module() = %q, %v", p, err)
	}
}

func TestProvisionFiles(t *testing.T) {
	a := provision(t, "files-a")
	b := provision(t, "files-b")
	before := os.Getenv(softhsm.ConfEnv)
	c, err := softhsm.Provision(filepath.Join(t.TempDir(), "new", "dir"), "files-c")
	if err != nil {
		t.Fatal(err)
	}
	if got := os.Getenv(softhsm.ConfEnv); got != before {
		t.Errorf("Provision left %s=%q, want %q", softhsm.ConfEnv, got, before)
	}
	conf, err := os.ReadFile(a.Conf)
	if err != nil {
		t.Fatal(err)
	}
	for _, want := range []string{
		"directories.tokendir = " + filepath.Join(a.Dir, "tokens") + "\n",
		"objectstore.backend = file\n", "log.level = ERROR\n",
	} {
		if !strings.Contains(string(conf), want) {
			t.Errorf("softhsm2.conf lacks %q:\n%s", want, conf)
		}
	}
	pins := map[string]bool{}
	for _, tok := range []*softhsm.Token{a, b, c} {
		for _, p := range []string{tok.PINFile, tok.SOPINFile} {
			fi, err := os.Stat(p)
			if err != nil {
				t.Fatal(err)
			}
			if fi.Mode().Perm() != 0o600 {
				t.Errorf("%s has mode %v, want 0600", p, fi.Mode().Perm())
			}
			b, err := os.ReadFile(p)
			if err != nil {
				t.Fatal(err)
			}
			pin := strings.TrimSuffix(string(b), "\n")
			if len(pin) < 20 || pins[pin] {
				t.Errorf("PIN in %s is short or repeated", p)
			}
			pins[pin] = true
		}
	}
	loaded, err := softhsm.Load(a.Dir)
	if err != nil {
		t.Fatal(err)
	}
	if *loaded != *a {
		t.Errorf("Load = %+v, want %+v", loaded, a)
	}
	if _, err := softhsm.Load(t.TempDir()); !errors.Is(err, softhsm.ErrNotProvisioned) {
		t.Errorf("Load(empty dir) = %v, want ErrNotProvisioned", err)
	}
	if _, err := softhsm.Provision(a.Dir, "again"); !errors.Is(err, softhsm.ErrProvisioned) {
		t.Errorf("Provision twice = %v, want ErrProvisioned", err)
	}
	if _, err := softhsm.Provision(t.TempDir(), strings.Repeat("x", 33)); err == nil {
		t.Error("Provision accepted a 33-byte label")
	}
	if o := a.Options(); o.Module != a.Module || o.TokenLabel != "files-a" || o.PINFile != a.PINFile {
		t.Errorf("Options = %+v", o)
	}
}

// TestTokensInSeparateDirs shows the documented way to use several
// directories in one process: one after the other, each Token closed first.
func TestTokensInSeparateDirs(t *testing.T) {
	a := provision(t, "dir-a")
	b := provision(t, "dir-b")
	digest := sha256.Sum256([]byte("x"))

	open := func(st *softhsm.Token) *hsm.Token {
		t.Helper()
		if err := st.Activate(); err != nil {
			t.Fatal(err)
		}
		tok, err := hsm.Open(st.Options())
		if err != nil {
			t.Fatalf("open %s: %v", st.Label, err)
		}
		return tok
	}
	tokA := open(a)
	keyA, err := tokA.GenerateKey("only-in-a", hsm.ECDSAP256)
	if err != nil {
		t.Fatal(err)
	}
	// While A is open, the module keeps A's configuration: B is invisible, and
	// provisioning is refused.
	if err := b.Activate(); err != nil {
		t.Fatal(err)
	}
	if _, err := hsm.Open(b.Options()); !errors.Is(err, hsm.ErrTokenNotFound) {
		t.Errorf("Open(B) while A is open = %v, want ErrTokenNotFound", err)
	}
	dirC := t.TempDir()
	if _, err := softhsm.Provision(dirC, "dir-c"); !errors.Is(err, hsm.ErrInUse) {
		t.Errorf("Provision while A is open = %v, want hsm.ErrInUse", err)
	}
	if left, _ := os.ReadDir(dirC); len(left) != 0 {
		t.Errorf("failed Provision left %d entries in its directory", len(left))
	}
	if err := tokA.Close(); err != nil {
		t.Fatal(err)
	}

	tokB := open(b)
	if _, err := tokB.FindKey("only-in-a"); !errors.Is(err, hsm.ErrKeyNotFound) {
		t.Errorf("B sees A's key: %v", err)
	}
	if _, err := tokB.GenerateKey("only-in-b", hsm.ECDSAP256); err != nil {
		t.Fatal(err)
	}
	if err := tokB.Close(); err != nil {
		t.Fatal(err)
	}
	if _, err := softhsm.Provision(dirC, "dir-c"); err != nil {
		t.Errorf("Provision after the failed attempt: %v", err)
	}

	loaded, err := softhsm.Load(a.Dir)
	if err != nil {
		t.Fatal(err)
	}
	tokA = open(loaded)
	defer tokA.Close()
	again, err := tokA.FindKey("only-in-a")
	if err != nil {
		t.Fatal(err)
	}
	if !again.Public().(interface{ Equal(crypto.PublicKey) bool }).Equal(keyA.Public()) {
		t.Error("A's key changed across reopen")
	}
	if _, err := again.Sign(rand.Reader, digest[:], crypto.SHA256); err != nil {
		t.Fatal(err)
	}
	if _, err := tokA.FindKey("only-in-b"); !errors.Is(err, hsm.ErrKeyNotFound) {
		t.Errorf("A sees B's key: %v", err)
	}
}
