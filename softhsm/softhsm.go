package softhsm

import (
	"crypto/rand"
	"encoding/base32"
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"strings"

	"github.com/estca/estca/hsm"
)

// ConfEnv is the environment variable SoftHSM2 reads, at C_Initialize, to find
// its configuration file.
const ConfEnv = "SOFTHSM2_CONF"

// File names inside a provisioned directory.
const (
	ConfFile    = "softhsm2.conf"
	TokensDir   = "tokens"
	UserPINFile = "user.pin"
	SOPINFile   = "so.pin"
	LabelFile   = "label"
)

// Sentinel errors.
var (
	// ErrNotInstalled reports that libsofthsm2.so was not found.
	ErrNotInstalled = errors.New("softhsm: libsofthsm2.so not found (install the Debian package softhsm2)")
	// ErrProvisioned reports a Provision into a directory that already holds a configuration.
	ErrProvisioned = errors.New("softhsm: directory already provisioned")
	// ErrNotProvisioned reports a Load from a directory Provision did not create.
	ErrNotProvisioned = errors.New("softhsm: directory not provisioned")
)

// modulePaths lists where Debian, Ubuntu, Fedora and source builds install the module.
func modulePaths() []string {
	return []string{
		"/usr/lib/softhsm/libsofthsm2.so",
		"/usr/lib/x86_64-linux-gnu/softhsm/libsofthsm2.so",
		"/usr/lib/aarch64-linux-gnu/softhsm/libsofthsm2.so",
		"/usr/local/lib/softhsm/libsofthsm2.so",
		"/usr/lib64/pkcs11/libsofthsm2.so",
		"/usr/lib/pkcs11/libsofthsm2.so",
	}
}

// Module returns the path of the SoftHSM2 PKCS#11 module, or an error
// wrapping ErrNotInstalled that lists where it looked.
func Module() (string, error) {
	paths := modulePaths()
	for _, p := range paths {
		if fi, err := os.Stat(p); err == nil && fi.Mode().IsRegular() {
			return p, nil
		}
	}
	return "", fmt.Errorf("%w; looked in %s", ErrNotInstalled, strings.Join(paths, ", "))
}

// Token is a SoftHSM2 token provisioned in its own directory.
type Token struct {
	Dir       string // the provisioned directory
	Conf      string // Dir/softhsm2.conf
	Label     string // the token label
	Module    string // path of libsofthsm2.so
	PINFile   string // Dir/user.pin (mode 0600)
	SOPINFile string // Dir/so.pin (mode 0600)
}

func paths(dir, label, module string) *Token {
	return &Token{
		Dir:       dir,
		Conf:      filepath.Join(dir, ConfFile),
		Label:     label,
		Module:    module,
		PINFile:   filepath.Join(dir, UserPINFile),
		SOPINFile: filepath.Join(dir, SOPINFile),
	}
}

// Provision creates a SoftHSM2 token in dir (created with mode 0700 if
// needed): dir/softhsm2.conf (token directory dir/tokens, file object store,
// log level ERROR), random user and SO PINs in dir/user.pin and dir/so.pin
// (mode 0600), the label in dir/label, and the token itself, initialised in
// this process through PKCS#11 (hsm.InitToken) so the PINs never reach a
// command line or a log.
//
// SoftHSM reads SOFTHSM2_CONF only at C_Initialize, so Provision sets it to
// the new configuration for the duration of the call and restores the
// previous value afterwards; call Activate before hsm.Open. Provision fails
// with hsm.ErrInUse while an hsm.Token on SoftHSM is open in this process.
func Provision(dir, label string) (*Token, error) {
	if label == "" || len(label) > 32 || strings.ContainsAny(label, "\n\r") {
		return nil, fmt.Errorf("softhsm: token label must be 1 to 32 bytes on one line, got %q", label)
	}
	module, err := Module()
	if err != nil {
		return nil, err
	}
	abs, err := filepath.Abs(dir)
	if err != nil {
		return nil, fmt.Errorf("softhsm: %w", err)
	}
	t := paths(abs, label, module)
	if _, err := os.Stat(t.Conf); err == nil {
		return nil, fmt.Errorf("%w: %s", ErrProvisioned, t.Conf)
	}
	if err := os.MkdirAll(filepath.Join(abs, TokensDir), 0o700); err != nil {
		return nil, fmt.Errorf("softhsm: %w", err)
	}
	conf := fmt.Sprintf("# written by estca softhsm.Provision\n"+
		"directories.tokendir = %s\nobjectstore.backend = file\nlog.level = ERROR\nslots.removable = false\n",
		filepath.Join(abs, TokensDir))
	userPIN, soPIN := randomPIN(), randomPIN()
	var written []string
	undo := func() { // leave dir as it was, so that Provision can be tried again
		for _, p := range written {
			_ = os.Remove(p)
		}
		_ = os.Remove(filepath.Join(abs, TokensDir)) // only if still empty
	}
	for _, f := range []struct {
		path, data string
	}{
		{t.PINFile, userPIN + "\n"},
		{t.SOPINFile, soPIN + "\n"},
		{filepath.Join(abs, LabelFile), label + "\n"},
		{t.Conf, conf},
	} {
		if err := writeFile(f.path, f.data); err != nil {
			undo()
			return nil, err
		}
		written = append(written, f.path)
	}
	prev, had := os.LookupEnv(ConfEnv)
	if err := os.Setenv(ConfEnv, t.Conf); err != nil {
		return nil, fmt.Errorf("softhsm: %w", err)
	}
	err = hsm.InitToken(module, label, soPIN, userPIN)
	if had {
		_ = os.Setenv(ConfEnv, prev)
	} else {
		_ = os.Unsetenv(ConfEnv)
	}
	if err != nil {
		undo()
		return nil, fmt.Errorf("softhsm: provision %s: %w", abs, err)
	}
	return t, nil
}

// writeFile creates path with mode 0600, failing if it exists.
func writeFile(path, data string) error {
	f, err := os.OpenFile(path, os.O_WRONLY|os.O_CREATE|os.O_EXCL, 0o600)
	if err != nil {
		return fmt.Errorf("softhsm: %w", err)
	}
	_, err = f.WriteString(data)
	if cerr := f.Close(); err == nil {
		err = cerr
	}
	if err != nil {
		return fmt.Errorf("softhsm: write %s: %w", path, err)
	}
	return nil
}

// randomPIN returns 26 characters of base32 (130 bits) from crypto/rand.
func randomPIN() string {
	b := make([]byte, 16)
	_, _ = rand.Read(b) // never fails (crypto/rand panics rather than return an error)
	return strings.ToLower(base32.StdEncoding.WithPadding(base32.NoPadding).EncodeToString(b))
}

// Load re-opens a directory created by Provision. It checks that the
// configuration and PIN files exist; it does not touch the token.
func Load(dir string) (*Token, error) {
	module, err := Module()
	if err != nil {
		return nil, err
	}
	abs, err := filepath.Abs(dir)
	if err != nil {
		return nil, fmt.Errorf("softhsm: %w", err)
	}
	b, err := os.ReadFile(filepath.Join(abs, LabelFile))
	if err != nil {
		return nil, fmt.Errorf("%w: %w", ErrNotProvisioned, err)
	}
	label := strings.TrimSuffix(string(b), "\n")
	if label == "" {
		return nil, fmt.Errorf("%w: %s is empty", ErrNotProvisioned, filepath.Join(abs, LabelFile))
	}
	t := paths(abs, label, module)
	for _, p := range []string{t.Conf, t.PINFile, t.SOPINFile} {
		if _, err := os.Stat(p); err != nil {
			return nil, fmt.Errorf("%w: %w", ErrNotProvisioned, err)
		}
	}
	return t, nil
}

// Activate points SoftHSM at this token's configuration by setting
// SOFTHSM2_CONF for the whole process. It takes effect at the next
// C_Initialize, i.e. the next hsm.Open after every Token on the module is closed.
func (t *Token) Activate() error {
	if err := os.Setenv(ConfEnv, t.Conf); err != nil {
		return fmt.Errorf("softhsm: %w", err)
	}
	return nil
}

// Options returns the hsm.Options that open this token: module, label and PIN file.
func (t *Token) Options() hsm.Options {
	return hsm.Options{Module: t.Module, TokenLabel: t.Label, PINFile: t.PINFile}
}
