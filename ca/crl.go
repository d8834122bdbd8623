package ca

import (
	"crypto/x509"
	"errors"
	"fmt"
	"math/big"
	"slices"
	"strconv"
	"strings"
	"sync"
	"time"

	"github.com/estca/estca/store"
)

// DefaultCRLValidity is the time from a CRL's thisUpdate to its nextUpdate
// when CRLOptions.Validity is zero.
const DefaultCRLValidity = 7 * 24 * time.Hour

// CRLOptions configure the authority's certificate revocation lists.
type CRLOptions struct {
	// DistributionPoint, if set, is the http(s) URL where relying parties
	// fetch the CRL; every certificate issued carries it in a
	// cRLDistributionPoints extension (RFC 5280 §4.2.1.13).
	DistributionPoint string
	// Validity is nextUpdate minus thisUpdate; 0 means DefaultCRLValidity.
	// Publish a new CRL well before it runs out (the caller's schedule).
	Validity time.Duration
	// LastNumber is the cRLNumber of the newest CRL published before this
	// authority was made (kept by the caller, e.g. in the CRL file); every
	// CRL number PublishCRL assigns is greater (RFC 5280 §5.2.3).
	LastNumber *big.Int
}

// CRL is a certificate revocation list the authority published.
type CRL struct {
	// DER is the CRL (RFC 5280 §5), signed by the issuing key.
	DER []byte
	// Number is its cRLNumber; ThisUpdate and NextUpdate its validity.
	Number                 *big.Int
	ThisUpdate, NextUpdate time.Time
	// Revoked is the number of entries.
	Revoked int
}

// crlState is the newest CRL and the number it had.
type crlState struct {
	mu       sync.Mutex
	validity time.Duration
	last     *big.Int
	current  *CRL
}

func (s *crlState) init(o CRLOptions) error {
	s.validity = o.Validity
	if s.validity == 0 {
		s.validity = DefaultCRLValidity
	}
	if s.validity < time.Minute {
		return fmt.Errorf("ca: CRL validity %v is shorter than a minute", o.Validity)
	}
	s.last = new(big.Int)
	if o.LastNumber != nil {
		if o.LastNumber.Sign() < 0 || o.LastNumber.BitLen() > 158 {
			return fmt.Errorf("ca: last CRL number %v out of range", o.LastNumber)
		}
		s.last.Set(o.LastNumber)
	}
	return nil
}

// PublishCRL makes and signs a new CRL (RFC 5280 §5) of every revocation in
// force in the store, with the issuing key through the verifying signer (a
// bad HSM signature never leaves the authority): issuer and
// authorityKeyIdentifier of the issuing CA, a cRLNumber greater than every
// one before (the Unix time of thisUpdate, or the previous number plus one
// if that is not greater), thisUpdate now, nextUpdate now plus the
// validity, each entry with its revocation time and reasonCode (omitted for
// unspecified). The new CRL becomes the one CRL returns. Concurrent calls
// are serialised so that numbers grow in publication order.
func (a *Authority) PublishCRL() (*CRL, error) {
	a.crl.mu.Lock()
	defer a.crl.mu.Unlock()
	if a.issuing.KeyUsage&x509.KeyUsageCRLSign == 0 {
		return nil, &Error{Kind: KindInternal, Reason: "issuing CA cannot sign CRLs",
			Err: errors.New("ca: the issuing CA certificate lacks the cRLSign key usage")}
	}
	revs, err := a.store.Revocations()
	if err != nil {
		return nil, &Error{Kind: KindInternal, Reason: "revocation lookup failed", Err: err}
	}
	now := a.now().UTC().Truncate(time.Second)
	number := big.NewInt(now.Unix())
	if number.Cmp(a.crl.last) <= 0 {
		number = new(big.Int).Add(a.crl.last, big.NewInt(1))
	}
	tmpl := &x509.RevocationList{Number: number, ThisUpdate: now, NextUpdate: now.Add(a.crl.validity)}
	for _, r := range revs {
		n, ok := new(big.Int).SetString(r.Serial, 16)
		if !ok {
			return nil, &Error{Kind: KindInternal, Reason: "revocation unreadable", Err: fmt.Errorf("ca: serial %q", r.Serial)}
		}
		tmpl.RevokedCertificateEntries = append(tmpl.RevokedCertificateEntries, x509.RevocationListEntry{
			SerialNumber: n, RevocationTime: r.Time, ReasonCode: r.Reason})
	}
	der, err := x509.CreateRevocationList(a.rand, tmpl, a.issuing, a.signer)
	switch {
	case errors.Is(err, ErrHSMUnavailable):
		return nil, &Error{Kind: KindUnavailable, Reason: "hsm unavailable", MaxAge: HSMRetryAfter, Err: err}
	case err != nil:
		return nil, &Error{Kind: KindInternal, Reason: "CRL signing failed", Err: err}
	}
	c := &CRL{DER: der, Number: number, ThisUpdate: tmpl.ThisUpdate, NextUpdate: tmpl.NextUpdate, Revoked: len(revs)}
	a.crl.last, a.crl.current = number, c
	return c, nil
}

// CRL returns the newest CRL PublishCRL made; KindUnavailable before the
// first.
func (a *Authority) CRL() (*CRL, error) {
	a.crl.mu.Lock()
	defer a.crl.mu.Unlock()
	if a.crl.current == nil {
		return nil, &Error{Kind: KindUnavailable, Reason: "no CRL yet", MaxAge: 10 * time.Second}
	}
	return a.crl.current, nil
}

// Revoke revokes the certificate with the given serial (lowercase hex) for
// reason (an RFC 5280 §5.3.1 CRLReason a leaf certificate can have, see
// CheckRevocationReason): the revocation and its audit record (naming
// operator) are durable, and in force for Authenticate, Check and Enroll,
// when the store returns; then a new CRL is published and returned. Errors
// wrap store.ErrNotFound (no such certificate), store.ErrAlreadyRevoked,
// store.ErrHeadNotSigned (the revocation is in force, its head unsigned;
// the CRL is published all the same) or are *Error.
func (a *Authority) Revoke(serial string, reason int, operator string) (*CRL, error) {
	if err := CheckRevocationReason(reason); err != nil {
		return nil, &Error{Kind: KindBadRequest, Reason: "revocation reason not allowed", Err: err}
	}
	c, err := a.store.Certificate(serial)
	if err != nil {
		return nil, err
	}
	return a.revoke(c.Serial, c.Profile, reason, operator, a.store.Revoke)
}

// RevokeUnknown revokes a serial (lowercase hex) of a certificate this CA
// issued that its store does not hold, issued after the backup a restore
// with accepted loss put back, so that the CRL lists it: the operator's
// explicit act, audited with the flag store.FlagUnknownCertificate and
// signed at once, like Revoke. Errors wrap store.ErrCertificateKnown (the
// store holds it: use Revoke), store.ErrAlreadyRevoked,
// store.ErrHeadNotSigned, or are *Error.
func (a *Authority) RevokeUnknown(serial string, reason int, operator string) (*CRL, error) {
	if err := CheckRevocationReason(reason); err != nil {
		return nil, &Error{Kind: KindBadRequest, Reason: "revocation reason not allowed", Err: err}
	}
	return a.revoke(serial, "", reason, operator, a.store.RevokeUnknown)
}

// revoke records the revocation with fn (store.Revoke or RevokeUnknown) and
// publishes a new CRL.
func (a *Authority) revoke(serial, profile string, reason int, operator string, fn func(string, int, time.Time, store.AuditRecord) error) (*CRL, error) {
	now := a.now()
	err := fn(serial, reason, now, store.AuditRecord{
		Time: now, Serial: serial, Profile: profile,
		Requester: store.Identity{Subject: operator}, Verdict: "revoked",
		Reason: fmt.Sprintf("%s (reason code %d)", RevocationReasonName(reason), reason),
	})
	if err != nil && !errors.Is(err, store.ErrHeadNotSigned) {
		return nil, err
	}
	crl, cerr := a.PublishCRL()
	return crl, errors.Join(err, cerr)
}

// revocationReasons are the CRLReason names of RFC 5280 §5.3.1 by code.
var revocationReasons = map[int]string{
	0: "unspecified", 1: "keyCompromise", 2: "cACompromise", 3: "affiliationChanged",
	4: "superseded", 5: "cessationOfOperation", 6: "certificateHold", 8: "removeFromCRL",
	9: "privilegeWithdrawn", 10: "aACompromise",
}

// RevocationReasonName returns the RFC 5280 name of a CRLReason code.
func RevocationReasonName(code int) string {
	if n, ok := revocationReasons[code]; ok {
		return n
	}
	return "reason(" + strconv.Itoa(code) + ")"
}

// leafRevocationReasons are the CRLReason codes an end-entity certificate
// of this CA may be revoked for. Unexported: an exported slice variable
// could be changed by any importer, and with it what CheckRevocationReason
// accepts.
var leafRevocationReasons = []int{0, 1, 3, 4, 5, 9}

// LeafRevocationReasons returns the CRLReason codes (RFC 5280 §5.3.1) an
// end-entity certificate of this CA may be revoked for, in order; the
// slice is the caller's.
func LeafRevocationReasons() []int { return slices.Clone(leafRevocationReasons) }

// CheckRevocationReason reports whether code is a CRLReason for revoking an
// end-entity certificate: not cACompromise (it is no CA), certificateHold
// (revocations here are final) or removeFromCRL (delta CRLs only),
// aACompromise (attribute authorities), or the unused value 7.
func CheckRevocationReason(code int) error {
	for _, c := range leafRevocationReasons {
		if c == code {
			return nil
		}
	}
	if n, ok := revocationReasons[code]; ok {
		return fmt.Errorf("ca: %s (%d) is not a reason to revoke a device certificate; use one of %s", n, code, leafReasonNames())
	}
	return fmt.Errorf("ca: %d is not an RFC 5280 CRLReason; use one of %s", code, leafReasonNames())
}

// leafReasonNames lists the names of leafRevocationReasons.
func leafReasonNames() string {
	var names []string
	for _, c := range leafRevocationReasons {
		names = append(names, revocationReasons[c])
	}
	return strings.Join(names, ", ")
}

// ParseRevocationReason reads a CRLReason given by name (case-insensitive,
// "keyCompromise") or number ("1") and checks it with CheckRevocationReason.
func ParseRevocationReason(s string) (int, error) {
	if n, err := strconv.Atoi(s); err == nil {
		return n, CheckRevocationReason(n)
	}
	for code, name := range revocationReasons {
		if strings.EqualFold(name, s) {
			return code, CheckRevocationReason(code)
		}
	}
	return -1, fmt.Errorf("ca: unknown revocation reason %q; use one of %s", s, leafReasonNames())
}
