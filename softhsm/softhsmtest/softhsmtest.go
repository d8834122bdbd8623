package softhsmtest

import (
	"errors"
	"os"
	"testing"

	"github.com/estca/estca/hsm"
	"github.com/estca/estca/policy/pkitest"
	"github.com/estca/estca/softhsm"
)

// Label is the label of tokens created by New.
const Label = "estca-test"

// Provision provisions a token labelled Label in t.TempDir() and activates it
// for the test with t.Setenv (SOFTHSM2_CONF is restored afterwards), without
// opening it. When libsofthsm2.so is absent it skips the test, unless the
// environment variable CI is set (pkitest.CI), where the absence is a failure.
func Provision(t testing.TB) *softhsm.Token {
	t.Helper()
	if _, err := softhsm.Module(); errors.Is(err, softhsm.ErrNotInstalled) {
		if pkitest.CI() {
			t.Fatalf("softhsmtest: %v (CI=%s)", err, os.Getenv("CI"))
		}
		t.Skipf("softhsmtest: %v", err)
	}
	st, err := softhsm.Provision(t.TempDir(), Label, softhsm.ProvisionOptions{})
	if err != nil {
		t.Fatalf("softhsmtest: %v", err)
	}
	conf, err := softhsm.Effective(st.Conf)
	if err != nil {
		t.Fatalf("softhsmtest: %v", err)
	}
	t.Setenv(softhsm.ConfEnv, conf)
	return st
}

// New provisions and activates a token as Provision does, opens it, and
// closes it in t.Cleanup.
func New(t testing.TB) (*softhsm.Token, *hsm.Token) {
	t.Helper()
	st := Provision(t)
	opts := Options(t, st)
	tok, err := hsm.Open(opts)
	clear(opts.PIN) // as cmd/estca does: the Token keeps its own copy
	if err != nil {
		t.Fatalf("softhsmtest: open: %v", err)
	}
	t.Cleanup(func() {
		if err := tok.Close(); err != nil {
			t.Errorf("softhsmtest: close: %v", err)
		}
	})
	return st, tok
}

// Options returns the hsm.Options of st with its user PIN (st.Options);
// an unreadable PIN file fails the test.
func Options(t testing.TB, st *softhsm.Token) hsm.Options {
	t.Helper()
	o, err := st.Options()
	if err != nil {
		t.Fatalf("softhsmtest: %v", err)
	}
	return o
}
