package policy

import (
	"bytes"
	"crypto/x509"
	"errors"
	"fmt"
	"math/big"
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
	// DenySerials are IDevID serial numbers (hex, case, colons and leading
	// zeros ignored) that are refused whatever their validity.
	DenySerials []string
}

// Requesters is the configuration of who may talk to the CA.
type Requesters struct {
	// Operational holds this CA's certificates, issuing CA first, then its
	// root: a leaf signed by Operational[0] is an operational requester. May be
	// empty (no operational certificates accepted).
	Operational []*x509.Certificate
	// Anchors are the manufacturer trust anchors for IDevIDs, tried in order.
	Anchors []Anchor
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
}

type anchor struct {
	name          string
	roots         *x509.CertPool
	intermediates *x509.CertPool
	extra         []*x509.Certificate
	tolerate      bool
	deny          map[string]bool
}

// Verifier verifies client certificate chains against a Requesters
// configuration. It is immutable and safe for concurrent use.
type Verifier struct {
	issuing *x509.Certificate
	opChain []*x509.Certificate
	anchors []anchor
}

// NewVerifier validates r and prepares the certificate pools once, so that
// Verify stays cheap (it runs per DTLS handshake). All problems are reported
// together.
func NewVerifier(r Requesters) (*Verifier, error) {
	var errs []error
	v := &Verifier{}
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
		if len(a.Roots) == 0 {
			errs = append(errs, fmt.Errorf("policy: anchor %q has no roots", a.Name))
		}
		pa := anchor{name: a.Name, roots: x509.NewCertPool(), intermediates: x509.NewCertPool(),
			tolerate: a.TolerateExpiry, deny: map[string]bool{}}
		for _, c := range a.Roots {
			if c == nil {
				errs = append(errs, fmt.Errorf("policy: anchor %q has a nil root", a.Name))
				continue
			}
			pa.roots.AddCert(c)
		}
		for _, c := range a.Intermediates {
			if c == nil {
				errs = append(errs, fmt.Errorf("policy: anchor %q has a nil intermediate", a.Name))
				continue
			}
			pa.intermediates.AddCert(c)
			pa.extra = append(pa.extra, c)
		}
		for _, s := range a.DenySerials {
			n, ok := NormalizeSerial(s)
			if !ok {
				errs = append(errs, fmt.Errorf("policy: anchor %q: bad deny-listed serial %q", a.Name, s))
				continue
			}
			pa.deny[n] = true
		}
		v.anchors = append(v.anchors, pa)
	}
	if err := errors.Join(errs...); err != nil {
		return nil, err
	}
	return v, nil
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
// be within its validity; anything else must verify as an IDevID under one of
// the anchors. Errors are *Error with ErrUntrusted, ErrExpired,
// ErrNotYetValid or ErrDenied.
func (v *Verifier) Verify(chain []*x509.Certificate, now time.Time) (Verified, error) {
	if len(chain) == 0 || chain[0] == nil {
		return Verified{}, &Error{Reason: "no client certificate", Err: ErrUntrusted}
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
		return Verified{}, &Error{Reason: "client certificate is a CA", Err: ErrUntrusted}
	}
	if now.Before(leaf.NotBefore) {
		return Verified{}, &Error{Reason: "certificate not yet valid", Err: ErrNotYetValid}
	}
	if now.After(leaf.NotAfter) {
		return Verified{}, &Error{Reason: "certificate expired", Err: ErrExpired}
	}
	if !clientAuth(leaf) {
		// e.g. the DTLS server certificate, also issued by this CA.
		return Verified{}, &Error{Reason: "certificate not for client authentication", Err: ErrUntrusted}
	}
	for _, c := range v.opChain {
		if now.Before(c.NotBefore) || now.After(c.NotAfter) {
			return Verified{}, &Error{Reason: "issuing CA outside validity", Err: ErrExpired}
		}
	}
	out := make([]*x509.Certificate, 0, 1+len(v.opChain))
	out = append(out, leaf)
	out = append(out, v.opChain...)
	return Verified{Kind: KindOperational, Chain: out}, nil
}

func (v *Verifier) idevid(chain []*x509.Certificate, now time.Time) (Verified, error) {
	leaf := chain[0]
	if now.Before(leaf.NotBefore) {
		return Verified{}, &Error{Reason: "certificate not yet valid", Err: ErrNotYetValid}
	}
	serial := leaf.SerialNumber.Text(16)
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
				expired = &Error{Reason: "certificate expired", Err: fmt.Errorf("%w: %w", ErrExpired, err)}
				continue
			}
			// RFC 9148 §3: the chain must verify at the leaf's notAfter,
			// and notBefore still applies to every certificate of it now.
			opts.CurrentTime = leaf.NotAfter
			chains, err = leaf.Verify(opts)
			if err != nil {
				expired = &Error{Reason: "certificate expired", Err: fmt.Errorf("%w: %w", ErrExpired, err)}
				continue
			}
			if notYet(chains[0], now) {
				expired = &Error{Reason: "certificate not yet valid", Err: ErrNotYetValid}
				continue
			}
			accepted = true
		}
		if a.deny[serial] {
			return Verified{}, &Error{Reason: "certificate serial is deny-listed", Err: ErrDenied}
		}
		return Verified{Kind: KindIDevID, Anchor: a.name, Chain: chains[0], ExpiredAccepted: accepted}, nil
	}
	if expired != nil {
		return Verified{}, expired
	}
	return Verified{}, &Error{Reason: "unknown certificate issuer", Err: ErrUntrusted}
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
