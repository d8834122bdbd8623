package main

import (
	"crypto/x509"
	"encoding/pem"
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"reflect"
	"strings"
	"time"

	"gopkg.in/yaml.v3"

	"github.com/estca/estca/est"
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
	Policy         PolicyConfig         `yaml:"policy"`
	Profiles       []ProfileConfig      `yaml:"profiles"`
	DefaultProfile string               `yaml:"default_profile"`
	Manufacturers  []ManufacturerConfig `yaml:"manufacturers"`
	CRL            CRLConfig            `yaml:"crl"`
	Keys           KeysConfig           `yaml:"keys"`

	dir      string   // directory of the config file
	warnings []string // removed keys (see removedKeys) and deprecated ones
}

// HSMConfig selects the PKCS#11 token.
type HSMConfig struct {
	Module      string `yaml:"module"`       // PKCS#11 library path
	Token       string `yaml:"token"`        // token label
	URI         string `yaml:"uri"`          // RFC 7512 pkcs11: URI, alternative to module+token
	PINFile     string `yaml:"pin_file"`     // user PIN file; ESTCA_HSM_PIN overrides
	SoftHSMConf string `yaml:"softhsm_conf"` // embedded default: SOFTHSM2_CONF to use
	MaxSessions int    `yaml:"max_sessions"` // 0: sized for concurrency
	// SignWithTokenObjects: sign with the token's key objects instead of
	// session copies of them (hsm.Options.SignWithTokenObjects).
	SignWithTokenObjects bool `yaml:"sign_with_token_objects"`
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
	ExternalRoot bool   `yaml:"external_root"` // root key held elsewhere: missing CA certificates mean "run estca ca import"
}

// StoreConfig configures the bbolt store.
type StoreConfig struct {
	Path string `yaml:"path"`
	// LockTimeout bounds the wait for the store's file lock; default 2s.
	LockTimeout Duration `yaml:"lock_timeout"`
	// MaxBatchSize caps the writes group-committed in one transaction;
	// 0: the store's default (256).
	MaxBatchSize int `yaml:"max_batch_size"`
	// AuditSignInterval is how often the audit chain head is signed; default 1m.
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
	HandshakeRate        *float64 `yaml:"handshake_rate"` // per source prefix, per second, after the cookie; 0: unlimited
	MaxBody              int      `yaml:"max_body"`
	// Limits of issue 10 (0: the est package default, see README).
	DTLSMTU                int      `yaml:"dtls_mtu"`
	MaxMessageSize         int      `yaml:"max_message_size"`
	MaxSessionsPerPrefix   int      `yaml:"max_sessions_per_prefix"`
	MaxSessionsPerIdentity int      `yaml:"max_sessions_per_identity"`
	MaxHandshakes          int      `yaml:"max_handshakes"`
	MaxHandshakesPerPrefix int      `yaml:"max_handshakes_per_prefix"`
	HandshakeBurst         int      `yaml:"handshake_burst"`
	HandshakeMaxWait       Duration `yaml:"handshake_max_wait"`
	CookieRotation         Duration `yaml:"cookie_rotation"`
	BlockTransfersSession  int      `yaml:"blockwise_per_session"`
	BlockTransfersIdentity int      `yaml:"blockwise_per_identity"`
	BlockTransfersTotal    int      `yaml:"blockwise_total"`
	ResponseCacheEntries   int      `yaml:"response_cache_entries"`
	ResponseCacheBytes     int      `yaml:"response_cache_bytes"`
	AuditInterval          Duration `yaml:"audit_interval"`
	MetricsListen          string   `yaml:"metrics_listen"`
	AdminSocket            string   `yaml:"admin_socket"`
}

// Duration is a time.Duration written as "90s", "8760h". A duration key
// that is given must be positive: zero and negative values are errors, not
// a silent default (a key left out, or left empty, takes its default). A
// key whose zero means something would need a type of its own.
type Duration time.Duration

// UnmarshalYAML implements yaml.Unmarshaler.
func (d *Duration) UnmarshalYAML(n *yaml.Node) error {
	// A *yaml.TypeError lets the decoder go on and report every problem.
	v, err := time.ParseDuration(n.Value)
	if err != nil {
		return &yaml.TypeError{Errors: []string{fmt.Sprintf("line %d: invalid duration %q (want e.g. 90s, 15m, 8760h)", n.Line, n.Value)}}
	}
	if v <= 0 {
		return &yaml.TypeError{Errors: []string{fmt.Sprintf("line %d: must be positive, not %q", n.Line, n.Value)}}
	}
	*d = Duration(v)
	return nil
}

// MarshalYAML implements yaml.Marshaler.
func (d Duration) MarshalYAML() (any, error) { return time.Duration(d).String(), nil }

// D returns the value as a time.Duration.
func (d Duration) D() time.Duration { return time.Duration(d) }

// defaultAdminSocket is est.admin_socket when the configuration sets none.
const defaultAdminSocket = "run/estca.sock"

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
	var doc yaml.Node
	if err := yaml.Unmarshal(b, &doc); err != nil {
		return nil, fmt.Errorf("config: %w", err)
	}
	// Unknown keys and values of the wrong kind are reported by key path;
	// the rest is decoded and validated too, so that every problem is
	// reported at once.
	errs, warnings := checkYAML(&doc, reflect.TypeOf(c))
	if doc.Kind != 0 {
		if err := doc.Decode(&c); err != nil && len(errs) == 0 {
			var te *yaml.TypeError
			if !errors.As(err, &te) {
				return nil, fmt.Errorf("config: %w", err)
			}
			for _, e := range te.Errors {
				errs = append(errs, errors.New(e))
			}
		}
	}
	abs, err := filepath.Abs(dir)
	if err != nil {
		return nil, err
	}
	c.dir = abs
	c.warnings = warnings
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
	def(&c.EST.AdminSocket, defaultAdminSocket)
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
		// The default binds every certificate to its requester's identity.
		c.Profiles = []ProfileConfig{{Name: "default"}}
	}
	for i := range c.Profiles {
		if c.Profiles[i].Validity == 0 {
			c.Profiles[i].Validity = Duration(365 * 24 * time.Hour)
		}
	}
	def(&c.DefaultProfile, c.Profiles[0].Name)
	c.applyPolicyDefaults()
	c.Keys.applyDefaults()
}

// path resolves p against the config's directory.
func (c *Config) path(p string) string {
	if p == "" || filepath.IsAbs(p) {
		return p
	}
	return filepath.Join(c.dir, p)
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
	for _, a := range []string{"pin-value", "pin-source"} {
		if strings.Contains(strings.ToLower(c.HSM.URI), a) {
			bad("hsm.uri must not carry %s: the PIN comes from hsm.pin_file or $%s", a, pinEnv)
		}
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
	c.validateESTLimits(bad)
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
	}
	if !seen[c.DefaultProfile] {
		bad("default_profile %q is not a defined profile", c.DefaultProfile)
	}
	c.Keys.validate(bad)
	errs = append(errs, c.validatePolicy()...)
	return errors.Join(errs...)
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

// validateESTLimits checks the est limits of issue 10; 0 selects the est
// package's default.
func (c *Config) validateESTLimits(bad func(string, ...any)) {
	e := c.EST
	if e.DTLSMTU != 0 && (e.DTLSMTU < est.MinMTU || e.DTLSMTU > 8192) {
		bad("est.dtls_mtu must be between %d and 8192", est.MinMTU)
	}
	if e.MaxMessageSize != 0 && (e.MaxMessageSize < 64 || e.MaxMessageSize > 8128) {
		bad("est.max_message_size must be between 64 and 8128")
	}
	for _, l := range []struct {
		name string
		v    int
	}{
		{"max_sessions_per_prefix", e.MaxSessionsPerPrefix}, {"max_sessions_per_identity", e.MaxSessionsPerIdentity},
		{"max_handshakes", e.MaxHandshakes}, {"max_handshakes_per_prefix", e.MaxHandshakesPerPrefix},
		{"handshake_burst", e.HandshakeBurst}, {"blockwise_per_session", e.BlockTransfersSession},
		{"blockwise_per_identity", e.BlockTransfersIdentity}, {"blockwise_total", e.BlockTransfersTotal},
		{"response_cache_entries", e.ResponseCacheEntries}, {"response_cache_bytes", e.ResponseCacheBytes},
	} {
		if l.v < 0 {
			bad("est.%s must not be negative", l.name)
		}
	}
	if e.ResponseCacheBytes != 0 && e.ResponseCacheBytes < 1280 {
		bad("est.response_cache_bytes must be at least 1280 (one full block response)")
	}
	if e.HandshakeMaxWait.D() > 5*time.Second {
		bad("est.handshake_max_wait must be at most 5s (clients retransmit after 1s)")
	}
	if e.CookieRotation != 0 && e.CookieRotation.D() < time.Second {
		bad("est.cookie_rotation must be at least 1s")
	}
	if e.AuditInterval != 0 && e.AuditInterval.D() < time.Second {
		bad("est.audit_interval must be at least 1s")
	}
}
