package softhsm_test

import (
	"crypto"
	"crypto/rand"
	"crypto/sha256"
	"errors"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"

	"github.com/estca/estca/hsm"
	"github.com/estca/estca/policy/pkitest"
	"github.com/estca/estca/softhsm"
	"github.com/estca/estca/softhsm/softhsmtest"
)

// provision provisions a token without opening it; SOFTHSM2_CONF and the PIN
// environment variable are restored after the test.
func provision(t *testing.T, label string) *softhsm.Token {
	t.Helper()
	softhsmtest.Provision(t) // skip/fail policy, and t.Setenv of SOFTHSM2_CONF and the PIN env
	st, err := softhsm.Provision(t.TempDir(), label, softhsm.ProvisionOptions{})
	if err != nil {
		t.Fatal(err)
	}
	return st
}

// activateOpen activates st and opens its token; the caller closes it.
func activateOpen(t *testing.T, st *softhsm.Token) *hsm.Token {
	t.Helper()
	if err := st.Activate(); err != nil {
		t.Fatal(err)
	}
	tok, err := hsm.Open(softhsmtest.Options(t, st))
	if err != nil {
		t.Fatalf("open %s in %s: %v", st.Label, st.Dir, err)
	}
	return tok
}

func TestModule(t *testing.T) {
	p, err := softhsm.Module()
	if errors.Is(err, softhsm.ErrNotInstalled) {
		if !strings.Contains(err.Error(), "softhsm2") {
			t.Errorf("error does not name the Debian package: %v", err)
		}
		if pkitest.CI() {
			t.Fatalf("%v (CI=%s)", err, os.Getenv("CI"))
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
	c, err := softhsm.Provision(filepath.Join(t.TempDir(), "new", "dir"), "files-c", softhsm.ProvisionOptions{KeepSOPIN: true})
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
		"\ndirectories.tokendir = tokens\n", "objectstore.backend = file\n", "log.level = ERROR\n",
	} {
		if !strings.Contains(string(conf), want) {
			t.Errorf("softhsm2.conf lacks %q:\n%s", want, conf)
		}
	}
	if strings.Contains(string(conf), a.Dir) {
		t.Errorf("softhsm2.conf names its directory by absolute path:\n%s", conf)
	}
	// The SO PIN is forgotten unless asked for.
	for _, tok := range []*softhsm.Token{a, b} {
		if _, err := os.Stat(filepath.Join(tok.Dir, softhsm.SOPINFile)); !errors.Is(err, os.ErrNotExist) || tok.SOPINFile != "" {
			t.Errorf("%s: SO PIN kept without KeepSOPIN (%v, %q)", tok.Label, err, tok.SOPINFile)
		}
	}
	if c.SOPINFile != filepath.Join(c.Dir, softhsm.SOPINFile) {
		t.Errorf("KeepSOPIN: SOPINFile = %q", c.SOPINFile)
	}
	pins := map[string]bool{}
	for _, p := range []string{a.PINFile, b.PINFile, c.PINFile, c.SOPINFile} {
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
	for _, tok := range []*softhsm.Token{a, c} {
		loaded, err := softhsm.Load(tok.Dir)
		if err != nil {
			t.Fatal(err)
		}
		if *loaded != *tok {
			t.Errorf("Load = %+v, want %+v", loaded, tok)
		}
	}
	if _, err := softhsm.Load(t.TempDir()); !errors.Is(err, softhsm.ErrNotProvisioned) {
		t.Errorf("Load(empty dir) = %v, want ErrNotProvisioned", err)
	}
	if _, err := softhsm.Provision(a.Dir, "again", softhsm.ProvisionOptions{}); !errors.Is(err, softhsm.ErrProvisioned) {
		t.Errorf("Provision twice = %v, want ErrProvisioned", err)
	}
	if _, err := softhsm.Provision(t.TempDir(), strings.Repeat("x", 33), softhsm.ProvisionOptions{}); err == nil {
		t.Error("Provision accepted a 33-byte label")
	}
	pin, err := os.ReadFile(a.PINFile)
	if err != nil {
		t.Fatal(err)
	}
	if o, err := a.Options(); err != nil || o.Module != a.Module || o.TokenLabel != "files-a" || string(o.PIN)+"\n" != string(pin) {
		t.Errorf("Options = %v, %v", o.TokenLabel, err)
	}
}

// TestEffective: relative token directories are resolved against the
// configuration's directory, whatever the working directory; absolute ones
// (configurations from before) are used as they are.
func TestEffective(t *testing.T) {
	a := provision(t, "effective")
	t.Chdir(t.TempDir())
	eff, err := softhsm.Effective(a.Conf)
	if err != nil {
		t.Fatal(err)
	}
	if eff != filepath.Join(a.Dir, softhsm.EffectiveConfFile) {
		t.Fatalf("Effective = %s", eff)
	}
	b, err := os.ReadFile(eff)
	if err != nil {
		t.Fatal(err)
	}
	if !strings.Contains(string(b), "\ndirectories.tokendir = "+filepath.Join(a.Dir, "tokens")+"\n") {
		t.Errorf("effective configuration:\n%s", b)
	}
	if fi, _ := os.Stat(eff); fi.Mode().Perm() != 0o600 {
		t.Errorf("effective configuration has mode %v", fi.Mode().Perm())
	}
	legacy := filepath.Join(t.TempDir(), "softhsm2.conf")
	if err := os.WriteFile(legacy, []byte("directories.tokendir = "+t.TempDir()+"\n"), 0o600); err != nil {
		t.Fatal(err)
	}
	if got, err := softhsm.Effective(legacy); err != nil || got != legacy {
		t.Errorf("Effective(absolute) = %q, %v; want the file itself", got, err)
	}
	if _, err := softhsm.Effective(filepath.Join(t.TempDir(), "missing.conf")); err == nil {
		t.Error("Effective of a missing file succeeded")
	}
	if err := os.Rename(filepath.Join(a.Dir, "tokens"), filepath.Join(a.Dir, "tokens.away")); err != nil {
		t.Fatal(err)
	}
	if _, err := softhsm.Effective(a.Conf); err == nil || !strings.Contains(err.Error(), "token directory "+filepath.Join(a.Dir, "tokens")) {
		t.Errorf("Effective without the token directory: %v", err)
	}
}

// TestProvisionRefusesUnparsablePath: SoftHSM's configuration file cannot
// hold a token directory with '=' or '#' (C_Initialize fails with
// CKR_GENERAL_ERROR); Provision says so, and leaves nothing behind.
func TestProvisionRefusesUnparsablePath(t *testing.T) {
	for _, name := range []string{"a=b", "a#b"} {
		dir := filepath.Join(t.TempDir(), name, "hsm")
		_, err := softhsm.Provision(dir, "estca", softhsm.ProvisionOptions{})
		if err == nil || !strings.Contains(err.Error(), "cannot hold a path with '=' or '#'") {
			t.Errorf("%s: %v", name, err)
		}
		if _, err := os.Stat(filepath.Join(dir, softhsm.ConfFile)); !errors.Is(err, os.ErrNotExist) {
			t.Errorf("%s: configuration left behind: %v", name, err)
		}
	}
}

// TestCopiedDirUsesOwnToken copies a provisioned directory with cp -a, as an
// operator copying or restoring an appliance would, moves the original away
// and shows that the copy opens its own token: same keys as at the copy,
// changes to one not seen by the other.
func TestCopiedDirUsesOwnToken(t *testing.T) {
	orig := provision(t, "copied")
	digest := sha256.Sum256([]byte("x"))
	tok := activateOpen(t, orig)
	key, err := tok.GenerateKey("before-copy", hsm.ECDSAP256)
	if err != nil {
		t.Fatal(err)
	}
	if err := tok.Close(); err != nil {
		t.Fatal(err)
	}
	if err := softhsm.Activate(orig.Conf); err != nil { // leaves an effective file naming the original
		t.Fatal(err)
	}
	copyDir := filepath.Join(t.TempDir(), "copy")
	if out, err := exec.Command("cp", "-a", orig.Dir, copyDir).CombinedOutput(); err != nil {
		t.Fatalf("cp -a: %v\n%s", err, out)
	}
	moved := orig.Dir + ".moved"
	if err := os.Rename(orig.Dir, moved); err != nil {
		t.Fatal(err)
	}
	cp, err := softhsm.Load(copyDir)
	if err != nil {
		t.Fatal(err)
	}
	tok = activateOpen(t, cp)
	k, err := tok.FindKey("before-copy")
	if err != nil {
		t.Fatalf("the copy does not open its own token: %v", err)
	}
	if !k.Public().(interface{ Equal(crypto.PublicKey) bool }).Equal(key.Public()) {
		t.Fatal("the copy's key differs")
	}
	if _, err := k.Sign(rand.Reader, digest[:], crypto.SHA256); err != nil {
		t.Fatal(err)
	}
	if _, err := tok.GenerateKey("only-in-copy", hsm.ECDSAP256); err != nil {
		t.Fatal(err)
	}
	if err := tok.Close(); err != nil {
		t.Fatal(err)
	}
	// The original, back in place, has not seen the copy's change.
	if err := os.Rename(moved, orig.Dir); err != nil {
		t.Fatal(err)
	}
	tok = activateOpen(t, orig)
	defer tok.Close()
	if _, err := tok.FindKey("only-in-copy"); !errors.Is(err, hsm.ErrKeyNotFound) {
		t.Errorf("the original sees the copy's key: %v", err)
	}
}

// TestTokensInSeparateDirs shows the documented way to use several
// directories in one process: one after the other, each Token closed first.
func TestTokensInSeparateDirs(t *testing.T) {
	a := provision(t, "dir-a")
	b := provision(t, "dir-b")
	digest := sha256.Sum256([]byte("x"))

	tokA := activateOpen(t, a)
	keyA, err := tokA.GenerateKey("only-in-a", hsm.ECDSAP256)
	if err != nil {
		t.Fatal(err)
	}
	// While A is open, the module keeps A's configuration: B is invisible, and
	// provisioning is refused.
	if err := b.Activate(); err != nil {
		t.Fatal(err)
	}
	if _, err := hsm.Open(softhsmtest.Options(t, b)); !errors.Is(err, hsm.ErrTokenNotFound) {
		t.Errorf("Open(B) while A is open = %v, want ErrTokenNotFound", err)
	}
	dirC := t.TempDir()
	if _, err := softhsm.Provision(dirC, "dir-c", softhsm.ProvisionOptions{}); !errors.Is(err, hsm.ErrInUse) {
		t.Errorf("Provision while A is open = %v, want hsm.ErrInUse", err)
	}
	if left, _ := os.ReadDir(dirC); len(left) != 0 {
		t.Errorf("failed Provision left %d entries in its directory", len(left))
	}
	if err := tokA.Close(); err != nil {
		t.Fatal(err)
	}

	tokB := activateOpen(t, b)
	if _, err := tokB.FindKey("only-in-a"); !errors.Is(err, hsm.ErrKeyNotFound) {
		t.Errorf("B sees A's key: %v", err)
	}
	if _, err := tokB.GenerateKey("only-in-b", hsm.ECDSAP256); err != nil {
		t.Fatal(err)
	}
	if err := tokB.Close(); err != nil {
		t.Fatal(err)
	}
	if _, err := softhsm.Provision(dirC, "dir-c", softhsm.ProvisionOptions{}); err != nil {
		t.Errorf("Provision after the failed attempt: %v", err)
	}

	loaded, err := softhsm.Load(a.Dir)
	if err != nil {
		t.Fatal(err)
	}
	tokA = activateOpen(t, loaded)
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
