package policy

import (
	"crypto/x509"
	"encoding/asn1"
	"errors"
	"fmt"
	"net/netip"
	"regexp"
	"slices"
	"strconv"
	"strings"
	"time"
)

// Source says where the value of a subject attribute comes from.
type Source uint8

// Sources of subject values.
const (
	// SourceIdentity (the zero value): the value of the same attribute in
	// the requester's identity (the IDevID, or the operational certificate
	// being renewed). The CSR may repeat it or leave it out; any other value
	// is refused (CodeSubjectNotBound). For the local operator, who has no
	// identity, the CSR's value is taken.
	SourceIdentity Source = iota
	// SourceFixed: the profile's Value. The CSR may repeat it or leave it out.
	SourceFixed
	// SourceDerived: the profile's Value with ${placeholders} replaced by
	// identity values (see Profile). The CSR may repeat it or leave it out.
	SourceDerived
	// SourceCSR: the CSR's value, which must match Pattern if set.
	SourceCSR
)

var sourceNames = []string{"identity", "fixed", "derived", "csr"}

// String returns "identity", "fixed", "derived" or "csr".
func (s Source) String() string { return enumString(sourceNames, s) }

// ParseSource returns the Source named s.
func ParseSource(s string) (Source, bool) { return enumParse[Source](sourceNames, s) }

// enumString names the value v of a small enumeration.
func enumString[T ~uint8](names []string, v T) string {
	if int(v) < len(names) {
		return names[v]
	}
	return "(" + strconv.Itoa(int(v)) + ")"
}

// enumParse finds the value named s of a small enumeration.
func enumParse[T ~uint8](names []string, s string) (T, bool) {
	i := slices.Index(names, s)
	if i < 0 {
		return 0, false
	}
	return T(i), true
}

// SubjectAttr is one attribute the certificates of a profile may carry. The
// certificate's subject holds the profile's attributes in profile order;
// attributes the profile does not list are refused in CSRs.
type SubjectAttr struct {
	// Type is the attribute: CN, serialNumber, C, ST, L, O, OU, title,
	// dnQualifier, pseudonym, UID (short or X.520 names, or dotted OIDs).
	Type string
	// From says where the value comes from.
	From Source
	// Value is the value (SourceFixed) or the template (SourceDerived), e.g.
	// "dev-${serialNumber}". Placeholders: ${serialNumber}, ${commonName},
	// ${hwSerial} (the hardwareModuleName serial as text),
	// ${hwSerialHex} (the same in lowercase hex).
	Value string
	// Pattern is an RE2 expression the whole CSR value must match
	// (SourceCSR only); "" allows any valid value.
	Pattern string
	// Optional lets the attribute be absent: for SourceCSR when the CSR has
	// none, for SourceIdentity and SourceDerived when the identity lacks the
	// value. A non-optional attribute that cannot be filled refuses the
	// request (CodeSubjectAttrMissing, CodeIdentityIncomplete).
	Optional bool
}

// DefaultSubject is the subject template of a profile that sets none: the
// certificate mirrors the requester's identity (its C, ST, L, O, OU, CN and
// serialNumber, each when the identity has it), and the CSR may only repeat
// those values. This binds every certificate to the IDevID (or operational
// certificate) that asked for it.
func DefaultSubject() []SubjectAttr {
	var out []SubjectAttr
	for _, t := range []string{"C", "ST", "L", "O", "OU", "CN", "serialNumber"} {
		out = append(out, SubjectAttr{Type: t, From: SourceIdentity, Optional: true})
	}
	return out
}

// HardwareNameMode says what happens with RFC 4108 hardwareModuleName
// otherNames in the SAN.
type HardwareNameMode uint8

// Hardware module name modes.
const (
	// HardwareNameIdentity (the zero value): the identity's
	// hardwareModuleName is always put in the certificate; the CSR may repeat
	// it, and any other is refused (CodeHardwareNameNotBound).
	HardwareNameIdentity HardwareNameMode = iota
	// HardwareNameForbid: none in the certificate; refused in CSRs.
	HardwareNameForbid
	// HardwareNameCSR: taken from the CSR unchecked; only for profiles that
	// only the local operator may use.
	HardwareNameCSR
)

var hardwareNameModes = []string{"identity", "forbid", "csr"}

// String returns "identity", "forbid" or "csr".
func (m HardwareNameMode) String() string { return enumString(hardwareNameModes, m) }

// ParseHardwareNameMode returns the mode named s.
func ParseHardwareNameMode(s string) (HardwareNameMode, bool) {
	return enumParse[HardwareNameMode](hardwareNameModes, s)
}

// NamePolicy says which SAN names of one type (DNS, URI, email) a CSR may
// ask for. The zero value allows none.
type NamePolicy struct {
	// Allow lists the exact names allowed (DNS names and email addresses
	// compared case-insensitively).
	Allow []string
	// Patterns are RE2 expressions a name may fully match instead.
	Patterns []string
	// Derived are templates (see SubjectAttr.Value) whose expansion is
	// always put in the certificate, e.g. "${serialNumber}.dev.example.com";
	// the CSR may repeat them.
	Derived []string
	// Max bounds the names of this type taken from the CSR; 0 means only
	// SANPolicy.MaxNames applies.
	Max int
}

// IPPolicy says which iPAddress SANs a CSR may ask for. The zero value
// allows none.
type IPPolicy struct {
	// Allow lists addresses ("192.0.2.7") and prefixes ("10.20.0.0/16").
	Allow []string
	// Max bounds the addresses taken from the CSR; 0 means only
	// SANPolicy.MaxNames applies.
	Max int
}

// SANPolicy are the SubjectAltName rules of a profile. The zero value puts
// the identity's hardwareModuleName in the certificate and allows no other
// name: "none by default".
type SANPolicy struct {
	HardwareModuleName HardwareNameMode
	DNS                NamePolicy
	IP                 IPPolicy
	URI                NamePolicy
	Email              NamePolicy
	// MaxNames bounds the SAN entries of a CSR; 0 means DefaultMaxSANs.
	MaxNames int
}

// ExtensionMode says what happens to a requested extension the profile
// neither manages nor copies.
type ExtensionMode uint8

// Extension modes.
const (
	// ExtensionsReject (the zero value) refuses the CSR (CodeExtensionNotAllowed).
	ExtensionsReject ExtensionMode = iota
	// ExtensionsDrop leaves the extension out of the certificate and lists it
	// in Template.Dropped. Critical extensions are refused all the same.
	ExtensionsDrop
)

var extensionModes = []string{"reject", "drop"}

// String returns "reject" or "drop".
func (m ExtensionMode) String() string { return enumString(extensionModes, m) }

// ParseExtensionMode returns the mode named s ("reject", "drop").
func ParseExtensionMode(s string) (ExtensionMode, bool) {
	return enumParse[ExtensionMode](extensionModes, s)
}

// ExtensionPolicy are the rules for extensions requested in the CSR
// (PKCS #9 extensionRequest). subjectAltName, keyUsage, extKeyUsage,
// basicConstraints and subjectKeyIdentifier are managed by the profile: the
// CSR's values are checked (no cA, no key usage impossible for the key) but
// the certificate gets the profile's.
type ExtensionPolicy struct {
	// Copy lists extension OIDs (dotted) copied verbatim from the CSR.
	Copy []string
	// Unknown says what happens to the other requested extensions.
	Unknown ExtensionMode
}

// ApprovalMode says whether requests wait for an operator.
type ApprovalMode uint8

// Approval modes.
const (
	// ApprovalAuto (the zero value) issues without an operator.
	ApprovalAuto ApprovalMode = iota
	// ApprovalManual keeps every request pending until an operator approves
	// it (Counters.Operator).
	ApprovalManual
)

var approvalModes = []string{"auto", "manual"}

// String returns "auto" or "manual".
func (m ApprovalMode) String() string { return enumString(approvalModes, m) }

// ParseApprovalMode returns the mode named s ("auto", "manual").
func ParseApprovalMode(s string) (ApprovalMode, bool) {
	return enumParse[ApprovalMode](approvalModes, s)
}

// RateLimit bounds the certificates issued to one identity.
type RateLimit struct {
	// Count certificates per Window; zero Count means no limit.
	Count  int
	Window time.Duration
}

// Defaults of Profile fields left zero.
const (
	// DefaultBackdate is subtracted from notBefore for device clock skew.
	DefaultBackdate = time.Minute
	// DefaultPendingMaxAge is the Max-Age of a pending answer.
	DefaultPendingMaxAge = 5 * time.Minute
	// DefaultMaxPending is how many requests one identity may have pending.
	DefaultMaxPending = 1
)

// Profile is one certificate profile: what a certificate issued under it
// looks like and who may get one. The zero value of every field but Name
// and Validity is a safe default (documented per field).
type Profile struct {
	// Name is the path label selecting the profile (/est/<name>/sen).
	Name string
	// Validity of issued certificates; must be positive.
	Validity time.Duration
	// Backdate is subtracted from notBefore; zero means DefaultBackdate.
	Backdate time.Duration
	// Operations offered; empty means OpSen and OpSren. OpSkg and OpSkc
	// generate the key in the server (ServerKeyType).
	Operations []Operation
	// Requesters lists the requester kinds that may use the profile
	// (KindIDevID, KindOperational, KindOperator); empty means all three.
	Requesters []string
	// KeyTypes accepted in CSRs (see KnownKeyType); empty means ecdsa-p256
	// and ecdsa-p384.
	KeyTypes []string
	// ServerKeyType is the key generated for OpSkg and OpSkc; "" means the
	// first of KeyTypes.
	ServerKeyType string
	// RequireEncryptedKeys refuses OpSkg and OpSkc requests that do not ask
	// for the generated key encrypted (Request.EncryptedKey false:
	// CodeKeyEncryptionRequired): no plain PKCS#8 leaves the server. Only
	// with OpSkg or OpSkc among the Operations.
	RequireEncryptedKeys bool
	// EscrowKeys keeps the keys generated for OpSkg and OpSkc in the token
	// instead of destroying them once delivered (Template.EscrowKey). Only
	// with OpSkg or OpSkc among the Operations.
	EscrowKeys bool
	// KeyUsage granted, per key algorithm; impossible usages are
	// configuration errors.
	KeyUsage KeyUsages
	// ExtKeyUsage of issued certificates; empty means clientAuth.
	ExtKeyUsage []x509.ExtKeyUsage
	// ForbidKeyReuse refuses a CSR whose key is the key of the requester's
	// certificate (the IDevID, or the operational certificate being renewed).
	ForbidKeyReuse bool
	// Subject is the subject template; nil means DefaultSubject().
	Subject []SubjectAttr
	// SAN is the SubjectAltName policy.
	SAN SANPolicy
	// Extensions is the requested-extension policy.
	Extensions ExtensionPolicy
	// Approval says whether an operator must approve each request.
	Approval ApprovalMode
	// PendingMaxAge is the Max-Age of pending answers and of
	// too-many-pending refusals; zero means DefaultPendingMaxAge.
	PendingMaxAge time.Duration
	// MaxPending is how many requests one identity may have waiting for
	// approval; zero means DefaultMaxPending.
	MaxPending int
	// RateLimit bounds issuance per identity.
	RateLimit RateLimit
	// RenewalGrace lets an operational certificate renew for this long after
	// its notAfter; zero means no renewal once expired.
	RenewalGrace time.Duration
	// RenewFrom lists other profiles whose certificates may renew into this
	// one (a certificate always may renew under its own profile).
	RenewFrom []string
	// CSRAttrs are more OIDs (dotted) advertised by /att in the RFC 7030 form.
	CSRAttrs []string
}

// placeholder is a ${name} of a template.
type placeholder uint8

const (
	phNone placeholder = iota
	phSerialNumber
	phCommonName
	phHWSerial
	phHWSerialHex
)

var placeholders = map[string]placeholder{
	"serialNumber": phSerialNumber,
	"commonName":   phCommonName,
	"hwSerial":     phHWSerial,
	"hwSerialHex":  phHWSerialHex,
}

type tmplPart struct {
	lit string
	ph  placeholder
}

// tmpl is a parsed template: literal text and placeholders.
type tmpl []tmplPart

func parseTemplate(s string) (tmpl, error) {
	var t tmpl
	n := 0
	for s != "" {
		i := strings.Index(s, "${")
		if i < 0 {
			t = append(t, tmplPart{lit: s})
			break
		}
		if i > 0 {
			t = append(t, tmplPart{lit: s[:i]})
		}
		j := strings.IndexByte(s[i:], '}')
		if j < 0 {
			return nil, fmt.Errorf("unterminated ${ in template")
		}
		name := s[i+2 : i+j]
		ph, ok := placeholders[name]
		if !ok {
			return nil, fmt.Errorf("unknown placeholder ${%s} (have serialNumber, commonName, hwSerial, hwSerialHex)", name)
		}
		t = append(t, tmplPart{ph: ph})
		n++
		s = s[i+j+1:]
	}
	if n == 0 {
		return nil, errors.New("template has no ${placeholder}: use a fixed value")
	}
	return t, nil
}

// expand fills the template from id; false if id lacks a value.
func (t tmpl) expand(id *identity) (string, bool) {
	var b strings.Builder
	for _, p := range t {
		if p.ph == phNone {
			b.WriteString(p.lit)
			continue
		}
		v, ok := id.value(p.ph)
		if !ok {
			return "", false
		}
		b.WriteString(v)
	}
	return b.String(), true
}

// subjAttr is a compiled SubjectAttr.
type subjAttr struct {
	typ      *attrType
	from     Source
	fixed    string
	fixedATV []byte
	tmpl     tmpl
	re       *regexp.Regexp
	optional bool
}

// nameRules is a compiled NamePolicy.
type nameRules struct {
	allow   map[string]bool
	res     []*regexp.Regexp
	derived []tmpl
	max     int
	fold    bool // compare case-insensitively
}

func (r *nameRules) on() bool { return len(r.allow) > 0 || len(r.res) > 0 || len(r.derived) > 0 }

type sanRules struct {
	hmn               HardwareNameMode
	dns, uri, email   nameRules
	ips               []netip.Prefix
	ipMax             int
	max               int
	anyName, anyOther bool // any name at all; any non-hardware name
}

// profile is a compiled Profile.
type profile struct {
	name                      string
	validity, backdate        time.Duration
	ops                       [OpSkc + 1]bool
	idevid, operational, oper bool
	keyTypes                  []*keyType
	serverKey                 *keyType
	requireEncrypted, escrow  bool
	ku                        KeyUsages
	eku                       []x509.ExtKeyUsage
	forbidReuse               bool
	subject                   []subjAttr
	san                       sanRules
	extCopy                   []asn1.ObjectIdentifier
	extDrop                   bool
	manual                    bool
	pendingMaxAge             time.Duration
	maxPending                int
	rateCount                 int
	rateWindow, grace         time.Duration
	renewFrom                 map[string]bool
	csrAttrs                  []asn1.ObjectIdentifier
}

// managedExtensions are set by the CA; a profile cannot copy them from CSRs.
var managedExtensions = []asn1.ObjectIdentifier{
	OIDSubjectAltName, oidKeyUsage, oidExtKeyUsage, OIDBasicConstraints,
	{2, 5, 29, 14},              // subjectKeyIdentifier
	{2, 5, 29, 35},              // authorityKeyIdentifier
	{2, 5, 29, 30},              // nameConstraints
	{2, 5, 29, 31},              // cRLDistributionPoints
	{2, 5, 29, 32},              // certificatePolicies
	{2, 5, 29, 33},              // policyMappings
	{2, 5, 29, 36},              // policyConstraints
	{2, 5, 29, 46},              // freshestCRL
	{2, 5, 29, 54},              // inhibitAnyPolicy
	{1, 3, 6, 1, 5, 5, 7, 1, 1}, // authorityInfoAccess
}

var (
	oidKeyUsage    = asn1.ObjectIdentifier{2, 5, 29, 15}
	oidExtKeyUsage = asn1.ObjectIdentifier{2, 5, 29, 37}
)

// compileProfile checks a profile on its own and compiles it; cross-profile
// checks (unique names, RenewFrom) are New's.
func compileProfile(p Profile) (*profile, []error) {
	var errs []error
	bad := func(format string, args ...any) {
		errs = append(errs, fmt.Errorf("policy: profile %q: "+format, append([]any{p.Name}, args...)...))
	}
	c := &profile{name: p.Name, validity: p.Validity, backdate: p.Backdate, ku: p.KeyUsage,
		forbidReuse: p.ForbidKeyReuse, extDrop: p.Extensions.Unknown == ExtensionsDrop,
		manual: p.Approval == ApprovalManual, pendingMaxAge: p.PendingMaxAge, maxPending: p.MaxPending,
		rateCount: p.RateLimit.Count, rateWindow: p.RateLimit.Window, grace: p.RenewalGrace}
	if p.Validity <= 0 {
		bad("validity must be positive")
	}
	switch {
	case p.Backdate < 0:
		bad("backdate must not be negative")
	case p.Backdate == 0:
		c.backdate = DefaultBackdate
	}
	ops := p.Operations
	if len(ops) == 0 {
		ops = []Operation{OpSen, OpSren}
	}
	for _, o := range ops {
		if o < OpSen || o > OpSkc {
			bad("unknown operation %d", o)
			continue
		}
		c.ops[o] = true
	}
	kinds := p.Requesters
	if len(kinds) == 0 {
		kinds = []string{KindIDevID, KindOperational, KindOperator}
	}
	for _, k := range kinds {
		switch k {
		case KindIDevID:
			c.idevid = true
		case KindOperational:
			c.operational = true
		case KindOperator:
			c.oper = true
		default:
			bad("unknown requester kind %q (want idevid, operational, operator)", k)
		}
	}
	kts := p.KeyTypes
	if len(kts) == 0 {
		kts = defaultKeyTypes
	}
	for _, name := range kts {
		switch kt := lookupKeyType(name); {
		case kt != nil:
			c.keyTypes = append(c.keyTypes, kt)
		case weakKeyTypeName(name):
			bad("key type %q is too weak (at least rsa-2048 or ecdsa-p256)", name)
		default:
			bad("unknown key type %q", name)
		}
	}
	switch {
	case p.ServerKeyType != "":
		if c.serverKey = lookupKeyType(p.ServerKeyType); c.serverKey == nil {
			bad("unknown server key type %q", p.ServerKeyType)
		}
	case len(c.keyTypes) > 0:
		c.serverKey = c.keyTypes[0]
	}
	c.requireEncrypted, c.escrow = p.RequireEncryptedKeys, p.EscrowKeys
	if (p.ServerKeyType != "" || p.RequireEncryptedKeys || p.EscrowKeys) && !c.ops[OpSkg] && !c.ops[OpSkc] {
		bad("server_key_type, require_encrypted_keys and escrow_keys need skg or skc among the operations")
	}
	for _, f := range []keyFamily{famECDSA, famRSA, famEd25519} {
		if extra := p.KeyUsage.of(f) &^ permittedUsage(f); extra != 0 {
			bad("key usage %s is impossible for %s keys", keyUsageString(extra), familyName(f))
		}
	}
	c.eku = p.ExtKeyUsage
	if len(c.eku) == 0 {
		c.eku = []x509.ExtKeyUsage{x509.ExtKeyUsageClientAuth}
	}
	for _, u := range c.eku {
		if u == x509.ExtKeyUsageAny {
			bad("anyExtendedKeyUsage is not issued to end entities")
		} else if u < 0 || u > x509.ExtKeyUsageMicrosoftKernelCodeSigning {
			bad("unknown extended key usage %d", u)
		}
	}
	subject := p.Subject
	if subject == nil {
		subject = DefaultSubject()
	}
	c.subject = compileSubject(subject, bad)
	c.san = compileSAN(p.SAN, bad)
	if c.san.hmn == HardwareNameCSR && (c.idevid || c.operational) {
		bad("hardware_module_name: csr lets devices claim any hardware serial; allow it only for operator requesters")
	}
	if len(c.subject) == 0 && !c.san.anyName {
		bad("can issue no name: the subject template is empty and the SAN policy allows nothing")
	}
	for _, s := range p.Extensions.Copy {
		oid, err := ParseOID(s)
		if err != nil {
			bad("extensions.copy: %v", err)
			continue
		}
		if slices.ContainsFunc(managedExtensions, oid.Equal) {
			bad("extensions.copy: %s is set by the CA, not copied from CSRs", s)
			continue
		}
		c.extCopy = append(c.extCopy, oid)
	}
	if p.Extensions.Unknown > ExtensionsDrop {
		bad("unknown extension mode %d", p.Extensions.Unknown)
	}
	if p.Approval > ApprovalManual {
		bad("unknown approval mode %d", p.Approval)
	}
	switch {
	case p.PendingMaxAge < 0:
		bad("pending max-age must not be negative")
	case p.PendingMaxAge == 0:
		c.pendingMaxAge = DefaultPendingMaxAge
	}
	switch {
	case p.MaxPending < 0:
		bad("max pending must not be negative")
	case p.MaxPending == 0:
		c.maxPending = DefaultMaxPending
	}
	switch {
	case p.RateLimit.Count < 0 || p.RateLimit.Window < 0:
		bad("rate limit must not be negative")
	case p.RateLimit.Count > 0 && p.RateLimit.Window == 0:
		bad("rate limit of %d needs a window", p.RateLimit.Count)
	case p.RateLimit.Count == 0 && p.RateLimit.Window > 0:
		bad("rate limit window without a count")
	}
	switch {
	case p.RenewalGrace < 0:
		bad("renewal grace must not be negative")
	case p.RenewalGrace > 0 && !c.operational:
		bad("renewal grace without operational requesters")
	}
	if len(p.RenewFrom) > 0 {
		c.renewFrom = map[string]bool{}
		for _, n := range p.RenewFrom {
			c.renewFrom[n] = true
		}
	}
	for _, s := range p.CSRAttrs {
		oid, err := ParseOID(s)
		if err != nil {
			bad("csr_attrs: %v", err)
			continue
		}
		c.csrAttrs = append(c.csrAttrs, oid)
	}
	return c, errs
}

func compileSubject(attrs []SubjectAttr, bad func(string, ...any)) []subjAttr {
	var out []subjAttr
	seen := map[*attrType]bool{}
	for i, a := range attrs {
		t := lookupAttrType(a.Type)
		if t == nil {
			bad("subject[%d]: unsupported attribute type %q", i, a.Type)
			continue
		}
		if seen[t] {
			bad("subject[%d]: %s listed twice", i, t.name)
			continue
		}
		seen[t] = true
		s := subjAttr{typ: t, from: a.From, optional: a.Optional}
		if a.Pattern != "" && a.From != SourceCSR {
			bad("subject[%d] %s: a pattern applies only to values from the CSR", i, t.name)
		}
		switch a.From {
		case SourceIdentity, SourceCSR:
			if a.Value != "" {
				bad("subject[%d] %s: a value applies only to fixed and derived attributes", i, t.name)
			}
			if a.Pattern != "" {
				re, err := compileFull(a.Pattern)
				if err != nil {
					bad("subject[%d] %s: pattern: %v", i, t.name, err)
				}
				s.re = re
			}
		case SourceFixed:
			s.fixed = a.Value
			checkValue(t, valueTag(t), []byte(a.Value), func(_ Code, d string) {
				bad("subject[%d]: fixed value: %s", i, d)
			})
			s.fixedATV = encodeATV(t, a.Value)
		case SourceDerived:
			tm, err := parseTemplate(a.Value)
			if err != nil {
				bad("subject[%d] %s: %v", i, t.name, err)
			}
			s.tmpl = tm
		default:
			bad("subject[%d] %s: unknown source %d", i, t.name, a.From)
		}
		out = append(out, s)
	}
	return out
}

func compileSAN(p SANPolicy, bad func(string, ...any)) sanRules {
	r := sanRules{hmn: p.HardwareModuleName, max: p.MaxNames, ipMax: p.IP.Max}
	if r.hmn > HardwareNameCSR {
		bad("san: unknown hardware module name mode %d", r.hmn)
	}
	if p.MaxNames < 0 {
		bad("san: max names must not be negative")
	}
	if r.max == 0 {
		r.max = DefaultMaxSANs
	}
	r.dns = compileNames("dns", p.DNS, true, func(s string) bool { return validDNSName(s) }, bad)
	r.email = compileNames("email", p.Email, true, validEmail, bad)
	r.uri = compileNames("uri", p.URI, false, validURI, bad)
	for _, s := range p.IP.Allow {
		if pfx, err := netip.ParsePrefix(s); err == nil {
			r.ips = append(r.ips, pfx.Masked())
		} else if a, err := netip.ParseAddr(s); err == nil {
			r.ips = append(r.ips, netip.PrefixFrom(a.Unmap(), a.Unmap().BitLen()))
		} else {
			bad("san.ip: %q is neither an address nor a prefix", s)
		}
	}
	if p.IP.Max < 0 {
		bad("san.ip: max must not be negative")
	}
	r.anyOther = r.dns.on() || r.email.on() || r.uri.on() || len(r.ips) > 0
	r.anyName = r.anyOther || r.hmn != HardwareNameForbid
	return r
}

func compileNames(what string, p NamePolicy, fold bool, valid func(string) bool, bad func(string, ...any)) nameRules {
	r := nameRules{max: p.Max, fold: fold}
	if p.Max < 0 {
		bad("san.%s: max must not be negative", what)
	}
	for _, s := range p.Allow {
		if !valid(s) {
			bad("san.%s: %q is not a valid name", what, s)
			continue
		}
		if r.allow == nil {
			r.allow = map[string]bool{}
		}
		if fold {
			s = strings.ToLower(s)
		}
		r.allow[s] = true
	}
	for _, s := range p.Patterns {
		re, err := compileFull(s)
		if err != nil {
			bad("san.%s: pattern: %v", what, err)
			continue
		}
		r.res = append(r.res, re)
	}
	for _, s := range p.Derived {
		t, err := parseTemplate(s)
		if err != nil {
			bad("san.%s: derived %q: %v", what, s, err)
			continue
		}
		r.derived = append(r.derived, t)
	}
	return r
}

// compileFull compiles an RE2 expression that must match a whole value.
func compileFull(expr string) (*regexp.Regexp, error) {
	return regexp.Compile(`^(?:` + expr + `)$`)
}

// ParseOID parses a dotted object identifier ("1.3.6.1.4.1.32473.1").
func ParseOID(s string) (asn1.ObjectIdentifier, error) {
	var oid asn1.ObjectIdentifier
	parts := strings.Split(s, ".")
	if len(parts) < 2 {
		return nil, fmt.Errorf("policy: %q is not a dotted OID", s)
	}
	for _, p := range parts {
		n, err := strconv.Atoi(p)
		if err != nil || n < 0 || (len(p) > 1 && p[0] == '0') {
			return nil, fmt.Errorf("policy: %q is not a dotted OID", s)
		}
		oid = append(oid, n)
	}
	if oid[0] > 2 || oid[0] < 2 && oid[1] > 39 {
		return nil, fmt.Errorf("policy: %q is not a dotted OID", s)
	}
	return oid, nil
}
