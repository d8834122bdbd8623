package policy

import (
	"bytes"
	"crypto/sha256"
	"crypto/x509"
	"encoding/hex"
	"errors"
	"fmt"
	"math/big"
	"slices"
	"strings"
	"time"
)

// Kinds of authenticated requester, as returned in Verified.Kind.
const (
	// KindOperational is a client certificate issued by this CA.
	KindOperational = "operational"
	// KindIDevID is a manufacturer IDevID (IEEE 802.1AR) under an Anchor.
	KindIDevID = "idevid"
)

// Anchor is a manufacturer trust anchor for IDevIDs.
type Anchor struct {
	// Name identifies the anchor in audit records; it must be unique and non-empty.
	Name string
	// Roots are the manufacturer's root certificates (at least one).
	Roots []*x509.Certificate
	// Intermediates are optional manufacturer sub-CAs; clients may also send
	// intermediates in their chain.
	Intermediates []*x509.Certificate
	// TolerateExpiry accepts an expired IDevID chain if it verifies at the
	// leaf's notAfter, the leaf's notBefore has passed, and the leaf serial is
	// not in DenySerials (RFC 9148 §3). The zero value rejects expired chains.
	TolerateExpiry bool
	// DenySerials are IDevID certificate serial numbers (hex, case, colons
	// and leading zeros ignored) that are refused whatever their validity.
	DenySerials []string
	// DenyFingerprints are SHA-256 fingerprints of IDevID certificates (64
	// hex digits, case and colons ignored) that are refused.
	DenyFingerprints []string
	// AllowSerials and AllowFingerprints, when either is non-empty, make an
	// allow-list: only the IDevIDs listed (by serial or by fingerprint) are
	// accepted. Deny-lists win over allow-lists.
	AllowSerials      []string
	AllowFingerprints []string
	// CRLs are the manufacturer's revocation lists, already parsed. Each must
	// be signed by one of Roots or Intermediates (checked by NewVerifier);
	// every certificate of a verified chain is looked up in the CRLs of its
	// issuer. A CRL past its nextUpdate is still consulted, but an expired
	// IDevID is then refused (its revocation status is unknown).
	CRLs []*x509.RevocationList
	// Profiles names the profiles this manufacturer's devices may use; empty
	// means every profile. Checked by Engine.Evaluate, not by Verify.
	Profiles []string
}

// Requesters is the configuration of who may talk to the CA.
type Requesters struct {
	// Operational holds this CA's certificates, issuing CA first, then its
	// root: a leaf signed by Operational[0] is an operational requester. May be
	// empty (no operational certificates accepted).
	Operational []*x509.Certificate
	// Anchors are the manufacturer trust anchors for IDevIDs, tried in order.
	Anchors []Anchor
	// OperationalGrace accepts an expired operational certificate for this
	// long after its notAfter (Verified.InGrace is then set), so that it can
	// renew; zero accepts none. New sets it to the longest renewal grace of
	// its profiles; Evaluate applies each profile's own grace.
	OperationalGrace time.Duration
}

// Verified is the result of a successful chain verification.
type Verified struct {
	// Kind is KindOperational or KindIDevID.
	Kind string
	// Anchor is the name of the accepting Anchor (KindIDevID only).
	Anchor string
	// Chain is the verified chain, leaf first, ending in a trusted certificate.
	Chain []*x509.Certificate
	// ExpiredAccepted is set when the chain was accepted only because its
	// anchor tolerates expiry.
	ExpiredAccepted bool
	// InGrace is set when an expired operational certificate was accepted
	// within Requesters.OperationalGrace.
	InGrace bool
}

type anchor struct {
	name          string
	roots         *x509.CertPool
	intermediates *x509.CertPool
	extra         []*x509.Certificate
	tolerate      bool
	deny, allow   map[string]bool // normalized certificate serials
	denyFP        map[[32]byte]bool
	allowFP       map[[32]byte]bool
	crls          []crlSet
	profiles      map[string]bool // nil: every profile
}

// crlSet is what one issuing certificate of an anchor has revoked, merged
// from all its CRLs.
type crlSet struct {
	issuer     *x509.Certificate
	revoked    map[string]bool // serial as big.Int.Text(16)
	nextUpdate time.Time       // the latest nextUpdate of its CRLs; zero if none says
}

// Verifier verifies client certificate chains against a Requesters
// configuration. It is immutable and safe for concurrent use.
type Verifier struct {
	issuing *x509.Certificate
	opChain []*x509.Certificate
	grace   time.Duration
	anchors []anchor
}

// NewVerifier validates r and prepares the certificate pools, lists and
// revocation lists once, so that Verify stays cheap (it runs per DTLS
// handshake). All problems are reported together.
func NewVerifier(r Requesters) (*Verifier, error) {
	var errs []error
	v := &Verifier{grace: r.OperationalGrace}
	if r.OperationalGrace < 0 {
		errs = append(errs, errors.New("policy: negative operational grace"))
	}
	for i, c := range r.Operational {
		if c == nil {
			errs = append(errs, fmt.Errorf("policy: operational certificate %d is nil", i))
			continue
		}
		if !c.IsCA {
			errs = append(errs, fmt.Errorf("policy: operational certificate %d (%s) is not a CA", i, c.Subject))
		}
	}
	if len(r.Operational) > 0 && r.Operational[0] != nil {
		v.issuing = r.Operational[0]
		v.opChain = r.Operational
	}
	seen := map[string]bool{}
	for i, a := range r.Anchors {
		if a.Name == "" {
			errs = append(errs, fmt.Errorf("policy: anchor %d has no name", i))
		} else if seen[a.Name] {
			errs = append(errs, fmt.Errorf("policy: anchor %q is listed twice", a.Name))
		}
		seen[a.Name] = true
		pa, aerrs := newAnchor(a)
		errs = append(errs, aerrs...)
		v.anchors = append(v.anchors, pa)
	}
	if err := errors.Join(errs...); err != nil {
		return nil, err
	}
	return v, nil
}

func newAnchor(a Anchor) (anchor, []error) {
	var errs []error
	bad := func(format string, args ...any) {
		errs = append(errs, fmt.Errorf("policy: anchor %q: "+format, append([]any{a.Name}, args...)...))
	}
	if len(a.Roots) == 0 {
		errs = append(errs, fmt.Errorf("policy: anchor %q has no roots", a.Name))
	}
	pa := anchor{name: a.Name, roots: x509.NewCertPool(), intermediates: x509.NewCertPool(),
		tolerate: a.TolerateExpiry}
	var certs []*x509.Certificate
	for _, c := range a.Roots {
		if c == nil {
			errs = append(errs, fmt.Errorf("policy: anchor %q has a nil root", a.Name))
			continue
		}
		pa.roots.AddCert(c)
		certs = append(certs, c)
	}
	for _, c := range a.Intermediates {
		if c == nil {
			errs = append(errs, fmt.Errorf("policy: anchor %q has a nil intermediate", a.Name))
			continue
		}
		pa.intermediates.AddCert(c)
		pa.extra = append(pa.extra, c)
		certs = append(certs, c)
	}
	serials := func(list []string, what string) map[string]bool {
		m := map[string]bool{}
		for _, s := range list {
			n, ok := NormalizeSerial(s)
			if !ok {
				bad("bad %s serial %q", what, s)
				continue
			}
			m[n] = true
		}
		return m
	}
	fingerprints := func(list []string, what string) map[[32]byte]bool {
		m := map[[32]byte]bool{}
		for _, s := range list {
			fp, ok := parseFingerprint(s)
			if !ok {
				bad("bad %s fingerprint %q (want 64 hex digits of SHA-256)", what, s)
				continue
			}
			m[fp] = true
		}
		return m
	}
	pa.deny = serials(a.DenySerials, "deny-listed")
	pa.allow = serials(a.AllowSerials, "allow-listed")
	pa.denyFP = fingerprints(a.DenyFingerprints, "deny-listed")
	pa.allowFP = fingerprints(a.AllowFingerprints, "allow-listed")
	for i, crl := range a.CRLs {
		if crl == nil {
			bad("CRL %d is nil", i)
			continue
		}
		var issuer *x509.Certificate
		for _, c := range certs {
			if bytes.Equal(c.RawSubject, crl.RawIssuer) && crl.CheckSignatureFrom(c) == nil {
				issuer = c
				break
			}
		}
		if issuer == nil {
			bad("CRL %d (issuer %s) is not signed by any of its certificates", i, crl.Issuer)
			continue
		}
		j := slices.IndexFunc(pa.crls, func(s crlSet) bool { return s.issuer == issuer })
		if j < 0 {
			pa.crls = append(pa.crls, crlSet{issuer: issuer, revoked: map[string]bool{}})
			j = len(pa.crls) - 1
		}
		s := &pa.crls[j]
		for _, e := range crl.RevokedCertificateEntries {
			if e.SerialNumber != nil {
				s.revoked[e.SerialNumber.Text(16)] = true
			}
		}
		if crl.NextUpdate.After(s.nextUpdate) {
			s.nextUpdate = crl.NextUpdate
		}
	}
	if len(a.Profiles) > 0 {
		pa.profiles = map[string]bool{}
		for _, p := range a.Profiles {
			pa.profiles[p] = true
		}
	}
	return pa, errs
}

// parseFingerprint reads a SHA-256 fingerprint written as 64 hex digits,
// optionally separated by colons.
func parseFingerprint(s string) ([32]byte, bool) {
	var fp [32]byte
	b, err := hex.DecodeString(strings.ReplaceAll(s, ":", ""))
	if err != nil || len(b) != len(fp) {
		return fp, false
	}
	copy(fp[:], b)
	return fp, true
}

// admit applies the anchor's deny/allow lists and revocation lists to a
// chain verified under it (leaf first, ending at a root). expired says the
// leaf is accepted only under the anchor's expiry tolerance: its revocation
// status must then be known from a fresh CRL when the anchor has CRLs.
// It returns 0 when the chain is admitted.
func (a *anchor) admit(chain []*x509.Certificate, now time.Time, expired bool) (Code, string) {
	leaf := chain[0]
	serial := leaf.SerialNumber.Text(16)
	if a.deny[serial] {
		return CodeCertDenied, "serial " + serial + " is deny-listed"
	}
	var fp [32]byte
	if len(a.denyFP) > 0 || len(a.allowFP) > 0 {
		fp = sha256.Sum256(leaf.Raw)
		if a.denyFP[fp] {
			return CodeCertDenied, "fingerprint is deny-listed"
		}
	}
	if (len(a.allow) > 0 || len(a.allowFP) > 0) && !a.allow[serial] && !a.allowFP[fp] {
		return CodeCertNotAllowed, "serial " + serial + " is not allow-listed"
	}
	for i := 0; i+1 < len(chain); i++ {
		s := a.crlFor(chain[i+1])
		if s == nil {
			if i == 0 && expired && len(a.crls) > 0 {
				return CodeCRLStale, "no CRL for the issuer of an expired IDevID"
			}
			continue
		}
		if s.revoked[chain[i].SerialNumber.Text(16)] {
			if i == 0 {
				return CodeCertRevoked, "serial " + serial + " is on the manufacturer CRL"
			}
			return CodeCertRevoked, "an issuing CA is on the manufacturer CRL"
		}
		if i == 0 && expired && (s.nextUpdate.IsZero() || now.After(s.nextUpdate)) {
			return CodeCRLStale, "manufacturer CRL past its nextUpdate"
		}
	}
	return 0, ""
}

// crlFor returns the revocations issued by issuer, or nil.
func (a *anchor) crlFor(issuer *x509.Certificate) *crlSet {
	for i := range a.crls {
		c := a.crls[i].issuer
		if c == issuer || bytes.Equal(c.RawSubject, issuer.RawSubject) &&
			bytes.Equal(c.RawSubjectPublicKeyInfo, issuer.RawSubjectPublicKeyInfo) {
			return &a.crls[i]
		}
	}
	return nil
}

// NormalizeSerial turns a hex serial number as operators write it
// ("00:A1:b2", "0xa1b2") into the lowercase form without leading zeros used
// by the store. It reports false if s is not hex.
func NormalizeSerial(s string) (string, bool) {
	s = strings.TrimPrefix(strings.ToLower(strings.ReplaceAll(s, ":", "")), "0x")
	n, ok := new(big.Int).SetString(s, 16)
	if !ok || n.Sign() < 0 {
		return "", false
	}
	return n.Text(16), true
}

// Verify classifies and verifies chain (leaf first, as received from the DTLS
// peer) at time now. A leaf signed by the issuing CA is operational and must
// be within its validity (or within OperationalGrace after it); anything else
// must verify as an IDevID under one of the anchors and pass the anchor's
// lists and CRLs. Errors are *Error with ErrUntrusted, ErrExpired,
// ErrNotYetValid or ErrDenied, and a Code.
func (v *Verifier) Verify(chain []*x509.Certificate, now time.Time) (Verified, error) {
	if len(chain) == 0 || chain[0] == nil {
		return Verified{}, &Error{Reason: "no client certificate", Code: CodeUntrusted, Err: ErrUntrusted}
	}
	leaf := chain[0]
	if v.issuing != nil && bytes.Equal(leaf.RawIssuer, v.issuing.RawSubject) {
		if err := leaf.CheckSignatureFrom(v.issuing); err == nil {
			return v.operational(leaf, now)
		}
		// Same issuer name, foreign signature: may still be some anchor's.
	}
	return v.idevid(chain, now)
}

func (v *Verifier) operational(leaf *x509.Certificate, now time.Time) (Verified, error) {
	if leaf.IsCA {
		return Verified{}, &Error{Reason: "client certificate is a CA", Code: CodeNotClientCert, Err: ErrUntrusted}
	}
	if now.Before(leaf.NotBefore) {
		return Verified{}, codeError(CodeCertNotYetValid, ErrNotYetValid)
	}
	inGrace := false
	if now.After(leaf.NotAfter) {
		if v.grace <= 0 || now.Sub(leaf.NotAfter) > v.grace {
			return Verified{}, codeError(CodeCertExpired, ErrExpired)
		}
		inGrace = true
	}
	if !clientAuth(leaf) {
		// e.g. the DTLS server certificate, also issued by this CA.
		return Verified{}, codeError(CodeNotClientCert, ErrUntrusted)
	}
	for _, c := range v.opChain {
		if now.Before(c.NotBefore) || now.After(c.NotAfter) {
			return Verified{}, codeError(CodeIssuingCAInvalid, ErrExpired)
		}
	}
	out := make([]*x509.Certificate, 0, 1+len(v.opChain))
	out = append(out, leaf)
	out = append(out, v.opChain...)
	return Verified{Kind: KindOperational, Chain: out, InGrace: inGrace}, nil
}

func codeError(c Code, sentinel error) *Error {
	return &Error{Reason: c.Text(), Code: c, Err: sentinel}
}

func (v *Verifier) idevid(chain []*x509.Certificate, now time.Time) (Verified, error) {
	leaf := chain[0]
	if leaf.IsCA {
		// A manufacturer CA certificate verifies under its anchor, but
		// identifies no device.
		return Verified{}, &Error{Reason: "client certificate is a CA", Code: CodeNotClientCert, Err: ErrUntrusted}
	}
	if now.Before(leaf.NotBefore) {
		return Verified{}, codeError(CodeCertNotYetValid, ErrNotYetValid)
	}
	var expired *Error
	for i := range v.anchors {
		a := &v.anchors[i]
		opts := x509.VerifyOptions{
			Roots:         a.roots,
			Intermediates: a.intermediates,
			CurrentTime:   now,
			KeyUsages:     []x509.ExtKeyUsage{x509.ExtKeyUsageAny},
		}
		if len(chain) > 1 {
			opts.Intermediates = x509.NewCertPool()
			for _, c := range a.extra {
				opts.Intermediates.AddCert(c)
			}
			for _, c := range chain[1:] {
				if c != nil {
					opts.Intermediates.AddCert(c)
				}
			}
		}
		chains, err := leaf.Verify(opts)
		accepted := false
		if err != nil {
			var inv x509.CertificateInvalidError
			if !errors.As(err, &inv) || inv.Reason != x509.Expired {
				continue
			}
			// crypto/x509 reports "not yet valid" as Expired too: only a
			// leaf that is really past its notAfter may use the tolerance.
			if !a.tolerate || !now.After(leaf.NotAfter) {
				expired = &Error{Reason: "certificate expired", Code: CodeCertExpired, Err: fmt.Errorf("%w: %w", ErrExpired, err)}
				continue
			}
			// RFC 9148 §3: the chain must verify at the leaf's notAfter,
			// and notBefore still applies to every certificate of it now.
			opts.CurrentTime = leaf.NotAfter
			chains, err = leaf.Verify(opts)
			if err != nil {
				expired = &Error{Reason: "certificate expired", Code: CodeCertExpired, Err: fmt.Errorf("%w: %w", ErrExpired, err)}
				continue
			}
			if notYet(chains[0], now) {
				expired = codeError(CodeCertNotYetValid, ErrNotYetValid)
				continue
			}
			accepted = true
		}
		if code, detail := a.admit(chains[0], now, accepted); code != 0 {
			reason := code.Text()
			if code == CodeCertDenied && a.deny[leaf.SerialNumber.Text(16)] {
				reason = "certificate serial is deny-listed"
			}
			return Verified{}, &Error{Reason: reason, Code: code, Err: fmt.Errorf("%w: %s", ErrDenied, detail)}
		}
		return Verified{Kind: KindIDevID, Anchor: a.name, Chain: chains[0], ExpiredAccepted: accepted}, nil
	}
	if expired != nil {
		return Verified{}, expired
	}
	return Verified{}, codeError(CodeUntrusted, ErrUntrusted)
}

// notYet reports whether any certificate of chain is not yet valid at now.
func notYet(chain []*x509.Certificate, now time.Time) bool {
	for _, c := range chain {
		if now.Before(c.NotBefore) {
			return true
		}
	}
	return false
}

// clientAuth reports whether leaf may authenticate a TLS/DTLS client: no
// extended key usage at all, anyExtendedKeyUsage, or id-kp-clientAuth.
func clientAuth(leaf *x509.Certificate) bool {
	if len(leaf.ExtKeyUsage) == 0 && len(leaf.UnknownExtKeyUsage) == 0 {
		return true
	}
	for _, u := range leaf.ExtKeyUsage {
		if u == x509.ExtKeyUsageClientAuth || u == x509.ExtKeyUsageAny {
			return true
		}
	}
	return false
}
