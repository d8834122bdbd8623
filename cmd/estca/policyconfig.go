package main

import (
	"crypto/x509"
	"encoding/hex"
	"encoding/pem"
	"errors"
	"fmt"
	"net/url"
	"os"
	"regexp"
	"strings"
	"time"

	"gopkg.in/yaml.v3"

	"github.com/estca/estca/policy"
)

// The policy part of estca.yaml: manufacturers (IDevID trust anchors),
// profiles, reserved names and CRLs. Decoded strictly with the rest of the
// configuration (parseConfig), checked with every problem at once as
// "where: problem" (profiles[0].key_usage.rsa: ...), and turned into
// policy.Options by policyOptions, which reads the certificate and CRL files
// (at start, at every reload, and by `estca policy check`).

// PolicyConfig is the policy section: what applies to every profile.
type PolicyConfig struct {
	// ReservedNames are DNS names, IP addresses and common names no device
	// may claim, besides this CA's names and its server certificate's.
	ReservedNames []string `yaml:"reserved_names"`
}

// ManufacturerConfig is an IDevID trust anchor (policy.Anchor).
type ManufacturerConfig struct {
	Name          string   `yaml:"name"`
	Roots         []string `yaml:"roots"`         // PEM files
	Intermediates []string `yaml:"intermediates"` // PEM files
	// AllowExpired accepts expired IDevIDs of this manufacturer (RFC 9148
	// §3): the chain verified at the leaf's notAfter, notBefore applies.
	AllowExpired *bool `yaml:"allow_expired"`
	// TolerateExpiry is the name allow_expired had before; accepted with a
	// deprecation warning.
	TolerateExpiry    *bool    `yaml:"tolerate_expiry"`
	CRLs              []string `yaml:"crls"` // DER or PEM files
	DenySerials       []string `yaml:"deny_serials"`
	DenyFingerprints  []string `yaml:"deny_fingerprints"`
	AllowSerials      []string `yaml:"allow_serials"`
	AllowFingerprints []string `yaml:"allow_fingerprints"`
	Profiles          []string `yaml:"profiles"`
}

// ProfileConfig is one certificate profile (policy.Profile).
type ProfileConfig struct {
	Name          string   `yaml:"name"`
	Validity      Duration `yaml:"validity"`
	Backdate      Duration `yaml:"backdate"`
	Operations    []string `yaml:"operations"`
	Requesters    []string `yaml:"requesters"`
	KeyTypes      []string `yaml:"key_types"`
	ServerKeyType string   `yaml:"server_key_type"`
	// RequireEncryptedKeys refuses skg/skc requests that do not ask for
	// the key encrypted (no plain PKCS#8 leaves); EscrowKeys keeps the
	// generated keys in the token, labelled by serial. Both need skg or
	// skc among the operations.
	RequireEncryptedKeys bool                `yaml:"require_encrypted_keys"`
	EscrowKeys           bool                `yaml:"escrow_keys"`
	KeyUsage             KeyUsageConfig      `yaml:"key_usage"`
	ExtKeyUsage          []string            `yaml:"ext_key_usage"`
	KeyReuse             string              `yaml:"key_reuse"` // allow | forbid
	Subject              []SubjectAttrConfig `yaml:"subject"`
	SAN                  SANConfig           `yaml:"san"`
	Extensions           ExtensionsConfig    `yaml:"extensions"`
	Approval             string              `yaml:"approval"` // auto | manual
	PendingMaxAge        Duration            `yaml:"pending_max_age"`
	MaxPending           int                 `yaml:"max_pending"`
	RateLimit            RateLimitConfig     `yaml:"rate_limit"`
	RenewalGrace         Duration            `yaml:"renewal_grace"`
	RenewFrom            []string            `yaml:"renew_from"`
	CSRAttrs             []string            `yaml:"csr_attrs"`
	// AllowSAN is a key of the first configuration, reported as removed.
	AllowSAN *bool `yaml:"allow_san"`
}

// KeyUsageConfig lists key usages per key algorithm.
type KeyUsageConfig struct {
	ECDSA   []string `yaml:"ecdsa"`
	RSA     []string `yaml:"rsa"`
	Ed25519 []string `yaml:"ed25519"`
	// list holds the values of the first configuration's form (one list for
	// every key), which is reported as an error.
	list []string
	// unknown holds keys that are not key algorithms, with their lines.
	unknown []string
}

// UnmarshalYAML decodes the mapping form strictly and keeps the old list
// form for a precise error.
func (k *KeyUsageConfig) UnmarshalYAML(n *yaml.Node) error {
	switch n.Kind {
	case yaml.SequenceNode:
		if err := n.Decode(&k.list); err != nil {
			return err
		}
		if k.list == nil {
			k.list = []string{}
		}
		return nil
	case yaml.MappingNode:
		for i := 0; i+1 < len(n.Content); i += 2 {
			key, val := n.Content[i], n.Content[i+1]
			var dst *[]string
			switch key.Value {
			case "ecdsa":
				dst = &k.ECDSA
			case "rsa":
				dst = &k.RSA
			case "ed25519":
				dst = &k.Ed25519
			default:
				k.unknown = append(k.unknown, key.Value)
				continue
			}
			if err := val.Decode(dst); err != nil {
				return err
			}
		}
		return nil
	}
	return &yaml.TypeError{Errors: []string{fmt.Sprintf("line %d: key_usage: want a mapping of key algorithm to usages", n.Line)}}
}

// SubjectAttrConfig is one attribute of a subject template.
type SubjectAttrConfig struct {
	Type     string `yaml:"type"`
	From     string `yaml:"from"` // identity (default) | fixed | derived | csr
	Value    string `yaml:"value"`
	Pattern  string `yaml:"pattern"`
	Optional bool   `yaml:"optional"`
}

// SANConfig is the subjectAltName policy of a profile.
type SANConfig struct {
	HardwareModuleName string     `yaml:"hardware_module_name"` // identity (default) | forbid | csr
	DNS                NameConfig `yaml:"dns"`
	IP                 IPConfig   `yaml:"ip"`
	URI                NameConfig `yaml:"uri"`
	Email              NameConfig `yaml:"email"`
	MaxNames           int        `yaml:"max_names"`
}

// NameConfig says which names of one SAN type a CSR may carry.
type NameConfig struct {
	Allow    []string `yaml:"allow"`
	Patterns []string `yaml:"patterns"`
	Derived  []string `yaml:"derived"`
	Max      int      `yaml:"max"`
}

// IPConfig says which IP addresses a CSR may carry.
type IPConfig struct {
	Allow []string `yaml:"allow"`
	Max   int      `yaml:"max"`
}

// ExtensionsConfig is what happens to extensions requested in CSRs.
type ExtensionsConfig struct {
	Unknown string   `yaml:"unknown"` // reject (default) | drop
	Copy    []string `yaml:"copy"`
}

// RateLimitConfig bounds the certificates per device.
type RateLimitConfig struct {
	Count  int      `yaml:"count"`
	Window Duration `yaml:"window"`
}

// CRLConfig configures the certificate revocation lists.
type CRLConfig struct {
	// Path is where the newest CRL is kept (DER); its number is where the
	// next one continues.
	Path string `yaml:"path"`
	// Validity is nextUpdate minus thisUpdate; Refresh how often a new CRL
	// is published (besides every revocation).
	Validity Duration `yaml:"validity"`
	Refresh  Duration `yaml:"refresh"`
	// Listen is an HTTP listener that serves the CRL at /crl to relying
	// parties ("": none; the metrics listener serves it too).
	Listen string `yaml:"listen"`
	// DistributionPoint is the URL put into every certificate issued.
	DistributionPoint string `yaml:"distribution_point"`
}

// CRL defaults.
const (
	defaultCRLPath     = "ca/crl.der"
	defaultCRLValidity = 7 * 24 * time.Hour
	defaultCRLRefresh  = 24 * time.Hour
)

// CRLHTTPPath is where the HTTP listeners serve the CRL (DER,
// application/pkix-crl, RFC 5280 §4.2.1.13).
const CRLHTTPPath = "/crl"

func (c *Config) applyPolicyDefaults() {
	if c.CRL.Path == "" {
		c.CRL.Path = defaultCRLPath
	}
	if c.CRL.Validity == 0 {
		c.CRL.Validity = Duration(defaultCRLValidity)
	}
	if c.CRL.Refresh == 0 {
		c.CRL.Refresh = Duration(min(defaultCRLRefresh, c.CRL.Validity.D()/2))
	}
}

// validatePolicy checks the policy part of the configuration without
// reading files: each problem as "where: problem". It also runs every
// profile through the policy engine (combinations that cannot work, patterns,
// templates). Deprecated keys add warnings.
func (c *Config) validatePolicy() []error {
	var errs []error
	bad := func(where, format string, a ...any) {
		errs = append(errs, fmt.Errorf("%s: %s", where, fmt.Sprintf(format, a...)))
	}
	profiles, perrs := c.profileOptions()
	errs = append(errs, perrs...)
	if len(perrs) == 0 {
		if _, err := policy.New(policy.Options{Profiles: profiles, DefaultProfile: c.DefaultProfile}); err != nil {
			errs = append(errs, c.explainPolicy(err)...)
		}
	}
	known := map[string]bool{}
	for _, p := range c.Profiles {
		known[p.Name] = true
	}
	names := map[string]bool{}
	for i, m := range c.Manufacturers {
		where := fmt.Sprintf("manufacturers[%d]", i)
		switch {
		case m.Name == "":
			bad(where+".name", "required")
		case names[m.Name]:
			bad(where+".name", "%q is used twice", m.Name)
		}
		names[m.Name] = true
		if len(m.Roots) == 0 {
			bad(where+".roots", "at least one trust anchor certificate is required")
		}
		if m.TolerateExpiry != nil {
			if m.AllowExpired != nil && *m.AllowExpired != *m.TolerateExpiry {
				bad(where+".tolerate_expiry", "contradicts allow_expired (tolerate_expiry is its old name: remove it)")
			} else {
				c.warnings = append(c.warnings, fmt.Sprintf("%s.tolerate_expiry: deprecated, now allow_expired", where))
			}
		}
		for _, l := range []struct {
			field string
			list  []string
		}{{"deny_serials", m.DenySerials}, {"allow_serials", m.AllowSerials}} {
			for j, s := range l.list {
				if _, err := parseSerial(s); err != nil {
					errs = append(errs, fmt.Errorf("%s.%s[%d]: %w", where, l.field, j, err))
				}
			}
		}
		for field, list := range map[string][]string{"deny_fingerprints": m.DenyFingerprints, "allow_fingerprints": m.AllowFingerprints} {
			for j, s := range list {
				if b, err := hex.DecodeString(strings.ReplaceAll(s, ":", "")); err != nil || len(b) != 32 {
					bad(fmt.Sprintf("%s.%s[%d]", where, field, j), "%q is not a SHA-256 fingerprint (64 hex digits)", s)
				}
			}
		}
		for j, p := range m.Profiles {
			if !known[p] {
				bad(fmt.Sprintf("%s.profiles[%d]", where, j), "no profile %q", p)
			}
		}
	}
	if c.CRL.Validity.D() < time.Minute {
		bad("crl.validity", "must be at least 1m")
	}
	if c.CRL.Refresh.D() < time.Second || c.CRL.Refresh >= c.CRL.Validity {
		bad("crl.refresh", "must be at least 1s and shorter than crl.validity (%s)", c.CRL.Validity.D())
	}
	if u := c.CRL.DistributionPoint; u != "" {
		if p, err := url.Parse(u); err != nil || (p.Scheme != "http" && p.Scheme != "https") || p.Host == "" ||
			strings.IndexFunc(u, func(r rune) bool { return r <= ' ' || r >= 0x7f }) >= 0 {
			bad("crl.distribution_point", "%q: want an absolute http:// or https:// URL of printable ASCII", u)
		}
	}
	return errs
}

// profileOptions converts the profiles; problems of single values are
// reported with their path, combinations by policy.New.
func (c *Config) profileOptions() ([]policy.Profile, []error) {
	var errs []error
	bad := func(where, format string, a ...any) {
		errs = append(errs, fmt.Errorf("%s: %s", where, fmt.Sprintf(format, a...)))
	}
	out := make([]policy.Profile, 0, len(c.Profiles))
	for i, pc := range c.Profiles {
		where := fmt.Sprintf("profiles[%d]", i)
		p := policy.Profile{
			Name: pc.Name, Validity: pc.Validity.D(), Backdate: pc.Backdate.D(), Requesters: pc.Requesters,
			KeyTypes: pc.KeyTypes, ServerKeyType: pc.ServerKeyType, MaxPending: pc.MaxPending,
			RequireEncryptedKeys: pc.RequireEncryptedKeys, EscrowKeys: pc.EscrowKeys,
			PendingMaxAge: pc.PendingMaxAge.D(), RenewalGrace: pc.RenewalGrace.D(), RenewFrom: pc.RenewFrom,
			CSRAttrs:  pc.CSRAttrs,
			RateLimit: policy.RateLimit{Count: pc.RateLimit.Count, Window: pc.RateLimit.Window.D()},
		}
		if pc.AllowSAN != nil {
			bad(where+".allow_san", "removed: SAN names are allowed per type under san: (dns, ip, uri, email; hardware_module_name)")
		}
		if p.Validity < time.Hour {
			bad(where+".validity", "must be at least 1h")
		}
		p.Operations = parseEach(pc.Operations, policy.ParseOperation, func(j int, o string) {
			bad(fmt.Sprintf("%s.operations[%d]", where, j), "unknown operation %q (want sen, sren, skg, skc)", o)
		})
		for j, r := range pc.Requesters {
			switch r {
			case policy.KindIDevID, policy.KindOperational, policy.KindOperator:
			default:
				bad(fmt.Sprintf("%s.requesters[%d]", where, j), "unknown requester %q (want idevid, operational, operator)", r)
			}
		}
		for j, k := range pc.KeyTypes {
			if !policy.KnownKeyType(k) && k != "rsa-1024" && k != "ecdsa-p224" {
				bad(fmt.Sprintf("%s.key_types[%d]", where, j), "unknown key type %q", k)
			}
		}
		if where, problem := serverKeyProblem(where, pc, p.Operations); problem != "" {
			bad(where, "%s", problem)
		}
		ku := pc.KeyUsage
		if ku.list != nil {
			bad(where+".key_usage", "is now per key algorithm, e.g. {ecdsa: [digitalSignature, keyAgreement], rsa: [digitalSignature, keyEncipherment]}")
		}
		for _, k := range ku.unknown {
			bad(where+".key_usage."+k, "unknown key algorithm (want ecdsa, rsa, ed25519)")
		}
		for _, f := range []struct {
			name  string
			names []string
			dst   *x509.KeyUsage
		}{{"ecdsa", ku.ECDSA, &p.KeyUsage.ECDSA}, {"rsa", ku.RSA, &p.KeyUsage.RSA}, {"ed25519", ku.Ed25519, &p.KeyUsage.Ed25519}} {
			for j, n := range f.names {
				u, ok := policy.ParseKeyUsage(n)
				if !ok {
					bad(fmt.Sprintf("%s.key_usage.%s[%d]", where, f.name, j), "unknown key usage %q", n)
				}
				*f.dst |= u
			}
		}
		p.ExtKeyUsage = parseEach(pc.ExtKeyUsage, policy.ParseExtKeyUsage, func(j int, n string) {
			bad(fmt.Sprintf("%s.ext_key_usage[%d]", where, j), "unknown extended key usage %q", n)
		})
		switch pc.KeyReuse {
		case "", "allow":
		case "forbid":
			p.ForbidKeyReuse = true
		default:
			bad(where+".key_reuse", "%q: want allow or forbid", pc.KeyReuse)
		}
		if pc.Subject != nil {
			p.Subject = []policy.SubjectAttr{}
		}
		for j, a := range pc.Subject {
			sa := policy.SubjectAttr{Type: a.Type, Value: a.Value, Pattern: a.Pattern, Optional: a.Optional}
			if a.From != "" {
				src, ok := policy.ParseSource(a.From)
				if !ok {
					bad(fmt.Sprintf("%s.subject[%d].from", where, j), "%q: want identity, fixed, derived or csr", a.From)
				}
				sa.From = src
			}
			p.Subject = append(p.Subject, sa)
		}
		san := pc.SAN
		p.SAN = policy.SANPolicy{MaxNames: san.MaxNames,
			DNS:   policy.NamePolicy(san.DNS),
			URI:   policy.NamePolicy(san.URI),
			Email: policy.NamePolicy(san.Email),
			IP:    policy.IPPolicy(san.IP)}
		if san.HardwareModuleName != "" {
			m, ok := policy.ParseHardwareNameMode(san.HardwareModuleName)
			if !ok {
				bad(where+".san.hardware_module_name", "%q: want identity, forbid or csr", san.HardwareModuleName)
			}
			p.SAN.HardwareModuleName = m
		}
		if pc.Extensions.Unknown != "" {
			m, ok := policy.ParseExtensionMode(pc.Extensions.Unknown)
			if !ok {
				bad(where+".extensions.unknown", "%q: want reject or drop", pc.Extensions.Unknown)
			}
			p.Extensions.Unknown = m
		}
		p.Extensions.Copy = pc.Extensions.Copy
		if pc.Approval != "" {
			m, ok := policy.ParseApprovalMode(pc.Approval)
			if !ok {
				bad(where+".approval", "%q: want auto or manual", pc.Approval)
			}
			p.Approval = m
		}
		out = append(out, p)
	}
	return out, errs
}

// parseEach parses every name of a list with parse; unknown ones go to
// unknown with their index and are left out.
func parseEach[T any](names []string, parse func(string) (T, bool), unknown func(int, string)) []T {
	var out []T
	for j, n := range names {
		v, ok := parse(n)
		if !ok {
			unknown(j, n)
			continue
		}
		out = append(out, v)
	}
	return out
}

// policyErrorWhere matches the subject of a policy error: `policy: profile
// "NAME": ` or `policy: anchor "NAME": `.
var policyErrorWhere = regexp.MustCompile(`^policy: (profile|anchor) "((?:[^"\\]|\\.)*)": `)

// explainPolicy splits a policy.New error into its problems and names each
// by its configuration path (profiles[0]: ..., manufacturers[1]: ...).
func (c *Config) explainPolicy(err error) []error {
	var list []error
	if j, ok := err.(interface{ Unwrap() []error }); ok {
		list = j.Unwrap()
	} else {
		list = []error{err}
	}
	var out []error
	for _, e := range list {
		msg := e.Error()
		if sub, ok := e.(interface{ Unwrap() []error }); ok {
			out = append(out, c.explainPolicy(errors.Join(sub.Unwrap()...))...)
			continue
		}
		if m := policyErrorWhere.FindStringSubmatch(msg); m != nil {
			where := ""
			switch m[1] {
			case "profile":
				for i, p := range c.Profiles {
					if fmt.Sprintf("%q", p.Name) == `"`+m[2]+`"` {
						where = fmt.Sprintf("profiles[%d]", i)
						break
					}
				}
			case "anchor":
				for i, a := range c.Manufacturers {
					if fmt.Sprintf("%q", a.Name) == `"`+m[2]+`"` {
						where = fmt.Sprintf("manufacturers[%d]", i)
						break
					}
				}
			}
			if where != "" {
				msg = where + ": " + msg[len(m[0]):]
			}
		} else if strings.HasPrefix(msg, "policy: default profile") {
			msg = "default_profile: " + strings.TrimPrefix(msg, "policy: ")
		}
		out = append(out, errors.New(msg))
	}
	return out
}

// policyOptions builds the policy engine's options: the profiles, the
// manufacturers with their certificate and CRL files read now, this CA's
// certificates (operational requesters, reserved names) and the DTLS server
// certificate (reserved names). Every problem is reported at once, by
// configuration path.
func (c *Config) policyOptions(root, issuing, server *x509.Certificate) (policy.Options, error) {
	profiles, errs := c.profileOptions()
	o := policy.Options{
		Profiles:       profiles,
		DefaultProfile: c.DefaultProfile,
		ReservedNames:  c.Policy.ReservedNames,
		Requesters:     policy.Requesters{Operational: []*x509.Certificate{issuing, root}},
	}
	if issuing.Equal(root) {
		o.Requesters.Operational = o.Requesters.Operational[:1]
	}
	if server != nil {
		o.Reserved = []*x509.Certificate{server}
	}
	for i, m := range c.Manufacturers {
		where := fmt.Sprintf("manufacturers[%d]", i)
		// Serials in any form parseSerial reads (the CLI's one serial
		// parser), handed down in the store's form.
		a := policy.Anchor{Name: m.Name, DenySerials: serialForms(m.DenySerials), DenyFingerprints: m.DenyFingerprints,
			AllowSerials: serialForms(m.AllowSerials), AllowFingerprints: m.AllowFingerprints, Profiles: m.Profiles}
		switch {
		case m.AllowExpired != nil:
			a.TolerateExpiry = *m.AllowExpired
		case m.TolerateExpiry != nil:
			a.TolerateExpiry = *m.TolerateExpiry
		}
		for j, p := range m.Roots {
			cs, err := readCerts(c.path(p))
			if err != nil {
				errs = append(errs, fmt.Errorf("%s.roots[%d]: %w", where, j, err))
			}
			a.Roots = append(a.Roots, cs...)
		}
		for j, p := range m.Intermediates {
			cs, err := readCerts(c.path(p))
			if err != nil {
				errs = append(errs, fmt.Errorf("%s.intermediates[%d]: %w", where, j, err))
			}
			a.Intermediates = append(a.Intermediates, cs...)
		}
		for j, p := range m.CRLs {
			crl, err := readCRL(c.path(p))
			if err != nil {
				errs = append(errs, fmt.Errorf("%s.crls[%d]: %w", where, j, err))
				continue
			}
			a.CRLs = append(a.CRLs, crl)
		}
		o.Requesters.Anchors = append(o.Requesters.Anchors, a)
	}
	if len(errs) > 0 {
		return policy.Options{}, errors.Join(errs...)
	}
	if _, err := policy.New(o); err != nil {
		return policy.Options{}, errors.Join(c.explainPolicy(err)...)
	}
	return o, nil
}

// serialForms returns the serials in the store's form (parseSerial); those
// it cannot read are left as they are (validatePolicy reports them).
func serialForms(list []string) []string {
	out := make([]string, 0, len(list))
	for _, s := range list {
		if n, err := parseSerial(s); err == nil {
			s = n
		}
		out = append(out, s)
	}
	return out
}

// readCRL reads a CRL file, DER or PEM ("X509 CRL").
func readCRL(path string) (*x509.RevocationList, error) {
	b, err := os.ReadFile(path)
	if err != nil {
		return nil, err
	}
	if blk, _ := pem.Decode(b); blk != nil {
		if blk.Type != "X509 CRL" {
			return nil, fmt.Errorf("%s: PEM block %q, want X509 CRL", path, blk.Type)
		}
		b = blk.Bytes
	}
	crl, err := x509.ParseRevocationList(b)
	if err != nil {
		return nil, fmt.Errorf("%s: %w", path, err)
	}
	return crl, nil
}
