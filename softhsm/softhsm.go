package softhsm

import (
	"bytes"
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
	// ConfFile is the SoftHSM configuration as provisioned and edited by the
	// operator; its token directory is relative to the file's directory.
	ConfFile = "softhsm2.conf"
	// EffectiveConfFile is ConfFile with relative paths made absolute, written
	// by Activate and Effective at every use: SoftHSM would resolve a relative
	// path against the process's working directory.
	EffectiveConfFile = "softhsm2.effective.conf"
	TokensDir         = "tokens"
	UserPINFile       = "user.pin"
	// SOPINFile holds the security officer PIN only if Provision was asked to
	// keep it (ProvisionOptions.KeepSOPIN), or in directories provisioned
	// before estca stopped keeping it.
	SOPINFile = "so.pin"
	LabelFile = "label"
)

// tokenDirKey is the SoftHSM configuration key of the token directory.
const tokenDirKey = "directories.tokendir"

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
	Dir     string // the provisioned directory
	Conf    string // Dir/softhsm2.conf
	Label   string // the token label
	Module  string // path of libsofthsm2.so
	PINFile string // Dir/user.pin (mode 0600)
	// SOPINFile is Dir/so.pin (mode 0600) if the SO PIN was kept, else "".
	SOPINFile string
}

func paths(dir, label, module string) *Token {
	return &Token{
		Dir:     dir,
		Conf:    filepath.Join(dir, ConfFile),
		Label:   label,
		Module:  module,
		PINFile: filepath.Join(dir, UserPINFile),
	}
}

// ProvisionOptions adjust Provision. The zero value is the default.
type ProvisionOptions struct {
	// KeepSOPIN writes the security officer PIN to Dir/so.pin (mode 0600).
	// By default it is used to initialise the token and then forgotten:
	// nothing estca does needs it afterwards, and a PIN on disk next to the
	// token is one more secret to protect. Keep it only to re-initialise the
	// token or reset the user PIN with SoftHSM's tools later.
	KeepSOPIN bool
}

// Provision creates a SoftHSM2 token in dir (created with mode 0700 if
// needed): dir/softhsm2.conf (token directory "tokens", relative to dir, file
// object store, log level ERROR), a random user PIN in dir/user.pin (mode
// 0600), the label in dir/label, and the token itself, initialised in this
// process through PKCS#11 (hsm.InitToken) so the PINs never reach a command
// line or a log. The random security officer PIN is forgotten after the
// initialisation unless o.KeepSOPIN.
//
// Because the token directory is relative, a copy of dir (cp -a, a restored
// backup) uses its own token, never the original's: Activate resolves it
// against dir at every use.
//
// SoftHSM reads SOFTHSM2_CONF only at C_Initialize, so Provision sets it to
// the new configuration for the duration of the call and restores the
// previous value afterwards; call Activate before hsm.Open. Provision fails
// with hsm.ErrInUse while an hsm.Token on SoftHSM is open in this process.
func Provision(dir, label string, o ProvisionOptions) (*Token, error) {
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
	conf := fmt.Sprintf("# written by estca softhsm.Provision. Relative paths are relative to this\n"+
		"# file's directory: estca writes %s with them made absolute\n"+
		"# and points SOFTHSM2_CONF there (use it for softhsm2-util too).\n"+
		"%s = %s\nobjectstore.backend = file\nlog.level = ERROR\nslots.removable = false\n",
		EffectiveConfFile, tokenDirKey, TokensDir)
	userPIN, soPIN := randomPIN(), randomPIN()
	files := []struct{ path, data string }{
		{t.PINFile, userPIN + "\n"},
		{filepath.Join(abs, LabelFile), label + "\n"},
		{t.Conf, conf},
	}
	if o.KeepSOPIN {
		t.SOPINFile = filepath.Join(abs, SOPINFile)
		files = append(files, struct{ path, data string }{t.SOPINFile, soPIN + "\n"})
	}
	var written []string
	undo := func() { // leave dir as it was, so that Provision can be tried again
		for _, p := range written {
			_ = os.Remove(p)
		}
		_ = os.Remove(filepath.Join(abs, EffectiveConfFile))
		_ = os.Remove(filepath.Join(abs, TokensDir)) // only if still empty
	}
	for _, f := range files {
		if err := writeFile(f.path, f.data); err != nil {
			undo()
			return nil, err
		}
		written = append(written, f.path)
	}
	effective, err := Effective(t.Conf)
	if err != nil {
		undo()
		return nil, err
	}
	prev, had := os.LookupEnv(ConfEnv)
	if err := os.Setenv(ConfEnv, effective); err != nil {
		undo()
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

// Effective returns the path of the configuration SoftHSM must read for the
// configuration file conf. If conf names its token directory by a relative
// path, that path is resolved against conf's directory (not the process's
// working directory, as SoftHSM would) and the result written, mode 0600, to
// EffectiveConfFile next to conf, replacing it atomically; otherwise conf
// itself is returned (configurations written before paths were relative).
func Effective(conf string) (string, error) {
	abs, err := filepath.Abs(conf)
	if err != nil {
		return "", fmt.Errorf("softhsm: %w", err)
	}
	b, err := os.ReadFile(abs)
	if err != nil {
		return "", fmt.Errorf("softhsm: configuration: %w", err)
	}
	dir := filepath.Dir(abs)
	lines := strings.Split(string(b), "\n")
	relative := false
	for i, l := range lines {
		k, v, ok := strings.Cut(l, "=")
		if !ok || strings.TrimSpace(k) != tokenDirKey || strings.HasPrefix(strings.TrimSpace(l), "#") {
			continue
		}
		v = strings.TrimSpace(v)
		if v != "" && !filepath.IsAbs(v) {
			v = filepath.Join(dir, v)
			lines[i] = tokenDirKey + " = " + v
			relative = true
		}
		// SoftHSM would fail C_Initialize with CKR_GENERAL_ERROR: say why.
		if strings.ContainsAny(v, "=#") {
			return "", fmt.Errorf("softhsm: token directory %s of %s: SoftHSM's configuration file cannot hold a path with '=' or '#': use a directory without them", v, abs)
		}
		if fi, err := os.Stat(v); err != nil || !fi.IsDir() {
			return "", fmt.Errorf("softhsm: token directory %s of %s is missing", v, abs)
		}
	}
	if !relative {
		return abs, nil
	}
	out := filepath.Join(dir, EffectiveConfFile)
	body := "# generated by estca from " + ConfFile + " at every start, with relative paths\n" +
		"# made absolute; edit " + ConfFile + " instead.\n" + strings.Join(lines, "\n")
	f, err := os.CreateTemp(dir, EffectiveConfFile+".*")
	if err != nil {
		return "", fmt.Errorf("softhsm: %w", err)
	}
	_, err = f.WriteString(body)
	if cerr := f.Close(); err == nil {
		err = cerr
	}
	if err == nil {
		err = os.Chmod(f.Name(), 0o600)
	}
	if err == nil {
		err = os.Rename(f.Name(), out)
	}
	if err != nil {
		_ = os.Remove(f.Name())
		return "", fmt.Errorf("softhsm: write %s: %w", out, err)
	}
	return out, nil
}

// Activate points SoftHSM at the configuration file conf: it sets
// SOFTHSM2_CONF for the whole process to Effective(conf). It takes effect at
// the next C_Initialize (the next hsm.Open after every Token on the module
// is closed, or an hsm.Token's re-initialisation).
func Activate(conf string) error {
	effective, err := Effective(conf)
	if err != nil {
		return err
	}
	if err := os.Setenv(ConfEnv, effective); err != nil {
		return fmt.Errorf("softhsm: %w", err)
	}
	return nil
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
// configuration and user PIN files exist; it does not touch the token. The
// directory may have been copied or moved since: its token is the one in its
// own tokens directory (for configurations written by Provision).
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
	for _, p := range []string{t.Conf, t.PINFile} {
		if _, err := os.Stat(p); err != nil {
			return nil, fmt.Errorf("%w: %w", ErrNotProvisioned, err)
		}
	}
	if so := filepath.Join(abs, SOPINFile); fileExists(so) {
		t.SOPINFile = so
	}
	return t, nil
}

func fileExists(p string) bool {
	_, err := os.Stat(p)
	return err == nil
}

// Activate points SoftHSM at this token's configuration: see the function
// Activate.
func (t *Token) Activate() error { return Activate(t.Conf) }

// Options returns the hsm.Options that open this token: module, label and
// the user PIN read from PINFile (hsm reads no PIN files). The caller zeroes
// Options.PIN once hsm.Open returns.
func (t *Token) Options() (hsm.Options, error) {
	b, err := os.ReadFile(t.PINFile)
	if err != nil {
		return hsm.Options{}, fmt.Errorf("softhsm: user pin: %w", err)
	}
	pin := bytes.TrimSuffix(b, []byte("\n"))
	if len(pin) == 0 {
		clear(b)
		return hsm.Options{}, fmt.Errorf("softhsm: user pin file %s is empty", t.PINFile)
	}
	return hsm.Options{Module: t.Module, TokenLabel: t.Label, PIN: pin}, nil
}
