package main

import (
	"bytes"
	"crypto/x509"
	"encoding/pem"
	"errors"
	"fmt"
	"io"
	"os"
	"path/filepath"
	"strings"
	"time"

	"gopkg.in/yaml.v3"

	"github.com/estca/estca/ca"
	"github.com/estca/estca/hsm"
)

// Config is the whole of estca.yaml. Relative paths are resolved against the
// directory that holds the config file. Secrets never live here: the HSM PIN
// comes from hsm.pin_file or the ESTCA_HSM_PIN environment variable.
type Config struct {
	HSM            HSMConfig            `yaml:"hsm"`
	CA             CAConfig             `yaml:"ca"`
	Store          StoreConfig          `yaml:"store"`
	EST            ESTConfig            `yaml:"est"`
	Profiles       []ProfileConfig      `yaml:"profiles"`
	DefaultProfile string               `yaml:"default_profile"`
	Manufacturers  []ManufacturerConfig `yaml:"manufacturers"`
	Keys           KeysConfig           `yaml:"keys"`

	dir string // directory of the config file
}

// HSMConfig selects the PKCS#11 token.
type HSMConfig struct {
	Module      string `yaml:"module"`       // PKCS#11 library path
	Token       string `yaml:"token"`        // token label
	URI         string `yaml:"uri"`          // RFC 7512 pkcs11: URI, alternative to module+token
	PINFile     string `yaml:"pin_file"`     // user PIN file; ESTCA_HSM_PIN overrides
	SoftHSMConf string `yaml:"softhsm_conf"` // embedded default: SOFTHSM2_CONF to use
	MaxSessions int    `yaml:"max_sessions"` // 0: sized for concurrency
}

// CAConfig names the CA certificates (files) and keys (token labels).
type CAConfig struct {
	Root         string `yaml:"root"`          // PEM
	Issuing      string `yaml:"issuing"`       // PEM
	ServerCert   string `yaml:"server_cert"`   // PEM, DTLS server certificate
	AuditPublic  string `yaml:"audit_public"`  // PEM public key that verifies signed audit heads
	IssuingKey   string `yaml:"issuing_key"`   // token label
	ServerKey    string `yaml:"server_key"`    // token label
	AuditKey     string `yaml:"audit_key"`     // token label
	KeyType      string `yaml:"key_type"`      // CA key type: ecdsa-p256 (default), ecdsa-p384, rsa-3072
	ExternalRoot bool   `yaml:"external_root"` // root key held elsewhere
}

// StoreConfig configures the bbolt store.
type StoreConfig struct {
	Path              string   `yaml:"path"`
	LockTimeout       Duration `yaml:"lock_timeout"`
	MaxBatchDelay     Duration `yaml:"max_batch_delay"`
	MaxBatchSize      int      `yaml:"max_batch_size"`
	AuditSignInterval Duration `yaml:"audit_sign_interval"`
	// Checkpoint is the file that keeps the newest signed audit head outside
	// the store; default: the store path + ".checkpoint".
	Checkpoint string `yaml:"checkpoint"`
	// LogCheckpoints logs every new checkpoint as one line (for a journal
	// kept off the box); default true.
	LogCheckpoints *bool `yaml:"log_checkpoints"`
	// CheckPages bounds the page check at open before serving (the rest runs
	// in the background); 0: the store's default.
	CheckPages int `yaml:"check_pages"`
	// RetryAfter is the Max-Age of the 5.03 answered while the store cannot
	// write (disk full, file replaced); default 30s.
	RetryAfter Duration `yaml:"retry_after"`
}

// ESTConfig configures the EST-coaps front end.
type ESTConfig struct {
	Listen               string   `yaml:"listen"`
	CipherSuites         []string `yaml:"cipher_suites"`
	ExtendedMasterSecret string   `yaml:"extended_master_secret"` // request (default) | require
	MaxSessions          int      `yaml:"max_sessions"`
	IdleTimeout          Duration `yaml:"idle_timeout"`
	HandshakeRate        *float64 `yaml:"handshake_rate"` // per source address, per second; 0: unlimited
	MaxBody              int      `yaml:"max_body"`
	MetricsListen        string   `yaml:"metrics_listen"`
	AdminSocket          string   `yaml:"admin_socket"`
}

// ProfileConfig is one certificate profile.
type ProfileConfig struct {
	Name        string   `yaml:"name"`
	Validity    Duration `yaml:"validity"`
	KeyUsage    []string `yaml:"key_usage"`
	ExtKeyUsage []string `yaml:"ext_key_usage"`
	KeyTypes    []string `yaml:"key_types"`
	AllowSAN    bool     `yaml:"allow_san"`
	CSRAttrs    []string `yaml:"csr_attrs"`
	// Operations are the EST functions offered: sen, sren, skg, skc;
	// default [sen, sren] (server-side key generation only where listed).
	Operations []string `yaml:"operations"`
	// ServerKeyType is the key generated for skg/skc: ecdsa-p256,
	// ecdsa-p384, rsa-2048, rsa-3072; default the first of key_types.
	ServerKeyType string `yaml:"server_key_type"`
	// RequireEncryptedKeys refuses skg/skc requests that do not ask for the
	// key encrypted (no plain PKCS#8).
	RequireEncryptedKeys bool `yaml:"require_encrypted_keys"`
	// EscrowKeys keeps generated keys in the token, labelled by serial.
	EscrowKeys bool `yaml:"escrow_keys"`
}

// ManufacturerConfig is an IDevID trust anchor.
type ManufacturerConfig struct {
	Name           string   `yaml:"name"`
	Roots          []string `yaml:"roots"`
	Intermediates  []string `yaml:"intermediates"`
	TolerateExpiry bool     `yaml:"tolerate_expiry"`
	DenySerials    []string `yaml:"deny_serials"`
}

// Duration is a time.Duration written as "90s", "8760h".
type Duration time.Duration

// UnmarshalYAML implements yaml.Unmarshaler.
func (d *Duration) UnmarshalYAML(n *yaml.Node) error {
	// A *yaml.TypeError lets the decoder go on and report every problem.
	v, err := time.ParseDuration(n.Value)
	if err != nil {
		return &yaml.TypeError{Errors: []string{fmt.Sprintf("line %d: invalid duration %q", n.Line, n.Value)}}
	}
	if v < 0 {
		return &yaml.TypeError{Errors: []string{fmt.Sprintf("line %d: negative duration %q", n.Line, n.Value)}}
	}
	*d = Duration(v)
	return nil
}

// MarshalYAML implements yaml.Marshaler.
func (d Duration) MarshalYAML() (any, error) { return time.Duration(d).String(), nil }

// D returns the value as a time.Duration.
func (d Duration) D() time.Duration { return time.Duration(d) }

// loadConfig reads path strictly (unknown keys are errors) and validates it,
// reporting every problem at once.
func loadConfig(path string) (*Config, error) {
	b, err := os.ReadFile(path)
	if err != nil {
		if errors.Is(err, os.ErrNotExist) {
			return nil, fmt.Errorf("config %s does not exist (create one with `estca init --dir DIR`)", path)
		}
		return nil, fmt.Errorf("config: %w", err)
	}
	return parseConfig(b, filepath.Dir(path))
}

func parseConfig(b []byte, dir string) (*Config, error) {
	var c Config
	dec := yaml.NewDecoder(bytes.NewReader(b))
	dec.KnownFields(true)
	var errs []error
	if err := dec.Decode(&c); err != nil && !errors.Is(err, io.EOF) {
		// Type errors and unknown keys leave the rest decoded: validate it
		// too, so that every problem is reported at once. Anything else is
		// a syntax error that stops here.
		var te *yaml.TypeError
		if !errors.As(err, &te) {
			return nil, fmt.Errorf("config: %w", err)
		}
		for _, e := range te.Errors {
			errs = append(errs, errors.New(e))
		}
	}
	abs, err := filepath.Abs(dir)
	if err != nil {
		return nil, err
	}
	c.dir = abs
	c.applyDefaults()
	if err := c.validate(); err != nil {
		errs = append(errs, err)
	}
	if len(errs) > 0 {
		return nil, fmt.Errorf("config: %w", errors.Join(errs...))
	}
	return &c, nil
}

func (c *Config) applyDefaults() {
	def := func(s *string, v string) {
		if *s == "" {
			*s = v
		}
	}
	def(&c.CA.Root, "ca/root.pem")
	def(&c.CA.Issuing, "ca/issuing.pem")
	def(&c.CA.ServerCert, "ca/server.pem")
	def(&c.CA.AuditPublic, "ca/audit-public.pem")
	def(&c.CA.IssuingKey, "estca-issuing")
	def(&c.CA.ServerKey, "estca-server")
	def(&c.CA.AuditKey, "estca-audit")
	def(&c.CA.KeyType, string(hsm.ECDSAP256))
	def(&c.Store.Path, "store/estca.db")
	def(&c.EST.Listen, fmt.Sprintf(":%d", 5684))
	def(&c.EST.ExtendedMasterSecret, "request")
	def(&c.EST.AdminSocket, "run/estca.sock")
	def(&c.EST.MetricsListen, "127.0.0.1:9684")
	if c.Store.LockTimeout == 0 {
		c.Store.LockTimeout = Duration(2 * time.Second)
	}
	if c.Store.AuditSignInterval == 0 {
		c.Store.AuditSignInterval = Duration(time.Minute)
	}
	def(&c.Store.Checkpoint, c.Store.Path+".checkpoint")
	if c.Store.LogCheckpoints == nil {
		t := true
		c.Store.LogCheckpoints = &t
	}
	if c.Store.RetryAfter == 0 {
		c.Store.RetryAfter = Duration(30 * time.Second)
	}
	if c.EST.MaxSessions == 0 {
		c.EST.MaxSessions = 10000
	}
	if c.EST.IdleTimeout == 0 {
		c.EST.IdleTimeout = Duration(5 * time.Minute)
	}
	if c.EST.HandshakeRate == nil {
		r := 50.0
		c.EST.HandshakeRate = &r
	}
	if c.EST.MaxBody == 0 {
		c.EST.MaxBody = 64 << 10
	}
	if len(c.Profiles) == 0 {
		c.Profiles = []ProfileConfig{defaultProfile()}
	}
	for i := range c.Profiles {
		if c.Profiles[i].Validity == 0 {
			c.Profiles[i].Validity = Duration(365 * 24 * time.Hour)
		}
	}
	def(&c.DefaultProfile, c.Profiles[0].Name)
	c.Keys.applyDefaults()
}

func defaultProfile() ProfileConfig {
	return ProfileConfig{
		Name:        "default",
		Validity:    Duration(365 * 24 * time.Hour),
		KeyUsage:    []string{"digitalSignature", "keyAgreement"},
		ExtKeyUsage: []string{"clientAuth"},
		KeyTypes:    []string{"ecdsa-p256", "ecdsa-p384"},
		AllowSAN:    true,
	}
}

// path resolves p against the config's directory.
func (c *Config) path(p string) string {
	if p == "" || filepath.IsAbs(p) {
		return p
	}
	return filepath.Join(c.dir, p)
}

var keyUsages = map[string]x509.KeyUsage{
	"digitalSignature":  x509.KeyUsageDigitalSignature,
	"contentCommitment": x509.KeyUsageContentCommitment,
	"keyEncipherment":   x509.KeyUsageKeyEncipherment,
	"dataEncipherment":  x509.KeyUsageDataEncipherment,
	"keyAgreement":      x509.KeyUsageKeyAgreement,
}

var extKeyUsages = map[string]x509.ExtKeyUsage{
	"serverAuth":      x509.ExtKeyUsageServerAuth,
	"clientAuth":      x509.ExtKeyUsageClientAuth,
	"codeSigning":     x509.ExtKeyUsageCodeSigning,
	"emailProtection": x509.ExtKeyUsageEmailProtection,
	"timeStamping":    x509.ExtKeyUsageTimeStamping,
	"ocspSigning":     x509.ExtKeyUsageOCSPSigning,
}

var csrKeyTypes = map[string]bool{
	"ecdsa-p256": true, "ecdsa-p384": true, "rsa-2048": true, "rsa-3072": true, "ed25519": true,
}

// validate reports every problem of the configuration at once.
func (c *Config) validate() error {
	var errs []error
	bad := func(format string, a ...any) { errs = append(errs, fmt.Errorf(format, a...)) }
	if c.HSM.URI == "" && c.HSM.Module == "" {
		bad("hsm.module or hsm.uri is required")
	}
	if c.HSM.URI == "" && c.HSM.Token == "" {
		bad("hsm.token or hsm.uri is required")
	}
	if c.HSM.MaxSessions < 0 {
		bad("hsm.max_sessions must not be negative")
	}
	if strings.Contains(strings.ToLower(c.HSM.URI), "pin-value") {
		bad("hsm.uri must not carry pin-value: the PIN comes from hsm.pin_file or $%s", hsm.PINEnv)
	}
	if c.HSM.URI != "" && !strings.HasPrefix(c.HSM.URI, "pkcs11:") {
		bad("hsm.uri must be an RFC 7512 pkcs11: URI")
	}
	if _, err := hsm.ParseKeyType(c.CA.KeyType); err != nil {
		bad("ca.key_type: %v", err)
	}
	switch c.EST.ExtendedMasterSecret {
	case "request", "require", "disable":
	default:
		bad("est.extended_master_secret must be request, require or disable, not %q", c.EST.ExtendedMasterSecret)
	}
	for _, s := range c.EST.CipherSuites {
		if _, ok := cipherSuites[s]; !ok {
			bad("est.cipher_suites: unknown suite %q", s)
		}
	}
	if c.EST.MaxBody < 1024 || c.EST.MaxBody > 16<<20 {
		bad("est.max_body must be between 1024 and 16777216")
	}
	if c.EST.MaxSessions < 0 {
		bad("est.max_sessions must not be negative")
	}
	if c.Store.MaxBatchSize < 0 {
		bad("store.max_batch_size must not be negative")
	}
	if c.Store.CheckPages < 0 {
		bad("store.check_pages must not be negative")
	}
	if c.Store.AuditSignInterval.D() < time.Second {
		bad("store.audit_sign_interval must be at least 1s")
	}
	if *c.EST.HandshakeRate < 0 {
		bad("est.handshake_rate must not be negative")
	}
	seen := map[string]bool{}
	for i, p := range c.Profiles {
		where := fmt.Sprintf("profiles[%d]", i)
		if p.Name == "" {
			bad("%s.name is required", where)
		} else if strings.ContainsAny(p.Name, "/?# ") {
			bad("%s.name %q must be a single path label", where, p.Name)
		} else if seen[p.Name] {
			bad("%s.name %q is used twice", where, p.Name)
		}
		seen[p.Name] = true
		if p.Validity.D() < time.Hour {
			bad("%s.validity must be at least 1h", where)
		}
		for _, u := range p.KeyUsage {
			if _, ok := keyUsages[u]; !ok {
				bad("%s.key_usage: unknown %q", where, u)
			}
		}
		for _, u := range p.ExtKeyUsage {
			if _, ok := extKeyUsages[u]; !ok {
				bad("%s.ext_key_usage: unknown %q", where, u)
			}
		}
		for _, k := range p.KeyTypes {
			if !csrKeyTypes[k] {
				bad("%s.key_types: unknown %q", where, k)
			}
		}
		for _, e := range p.keygenProblems() {
			bad("%s.%s", where, e)
		}
	}
	for _, e := range c.Keys.problems() {
		bad("keys.%s", e)
	}
	if !seen[c.DefaultProfile] {
		bad("default_profile %q is not a defined profile", c.DefaultProfile)
	}
	names := map[string]bool{}
	for i, m := range c.Manufacturers {
		where := fmt.Sprintf("manufacturers[%d]", i)
		if m.Name == "" {
			bad("%s.name is required", where)
		} else if names[m.Name] {
			bad("%s.name %q is used twice", where, m.Name)
		}
		names[m.Name] = true
		if len(m.Roots) == 0 {
			bad("%s.roots: at least one trust anchor certificate is required", where)
		}
	}
	return errors.Join(errs...)
}

// profiles converts the profile section for the authority.
func (c *Config) profiles() []ca.Profile {
	out := make([]ca.Profile, 0, len(c.Profiles))
	for _, p := range c.Profiles {
		var ku x509.KeyUsage
		for _, u := range p.KeyUsage {
			ku |= keyUsages[u]
		}
		var eku []x509.ExtKeyUsage
		for _, u := range p.ExtKeyUsage {
			eku = append(eku, extKeyUsages[u])
		}
		out = append(out, ca.Profile{
			Name: p.Name, Validity: p.Validity.D(), KeyUsage: ku, ExtKeyUsage: eku,
			KeyTypes: p.KeyTypes, AllowSAN: p.AllowSAN, CSRAttrs: p.CSRAttrs,
			Operations: p.operations(), ServerKeyType: p.ServerKeyType,
			RequireEncryptedKeys: p.RequireEncryptedKeys, EscrowKeys: p.EscrowKeys,
		})
	}
	return out
}

// readCerts reads every CERTIFICATE block of a PEM file.
func readCerts(path string) ([]*x509.Certificate, error) {
	b, err := os.ReadFile(path)
	if err != nil {
		return nil, err
	}
	var out []*x509.Certificate
	for {
		var blk *pem.Block
		blk, b = pem.Decode(b)
		if blk == nil {
			break
		}
		if blk.Type != "CERTIFICATE" {
			continue
		}
		c, err := x509.ParseCertificate(blk.Bytes)
		if err != nil {
			return nil, fmt.Errorf("%s: %w", path, err)
		}
		out = append(out, c)
	}
	if len(out) == 0 {
		return nil, fmt.Errorf("%s: no certificate", path)
	}
	return out, nil
}

func readCert(path string) (*x509.Certificate, error) {
	cs, err := readCerts(path)
	if err != nil {
		return nil, err
	}
	return cs[0], nil
}
