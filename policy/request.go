package policy

import (
	"crypto"
	"crypto/x509"
	"crypto/x509/pkix"
	"encoding/asn1"
	"time"
)

// KindOperator is the local operator issuing from a file (`estca issue`,
// `estca requests approve` of a file): no certificate, no identity binding;
// identity-bound values come from the CSR and are syntax-checked only.
const KindOperator = "operator"

// Operation is the EST function of a request (RFC 9148 §4.1).
type Operation uint8

// Operations.
const (
	// OpSen is simple enrollment (/sen, RFC 7030 §4.2.1). With an operational
	// certificate it is a renewal of that certificate's identity.
	OpSen Operation = iota + 1
	// OpSren is simple re-enrollment (/sren, RFC 7030 §4.2.2).
	OpSren
	// OpSkg is server-side key generation (/skg, RFC 9148 §4.8).
	OpSkg
	// OpSkc is server-side key generation returning a single certificate (/skc).
	OpSkc
)

// String returns the EST-coaps path name: "sen", "sren", "skg", "skc".
func (o Operation) String() string {
	switch o {
	case OpSen:
		return "sen"
	case OpSren:
		return "sren"
	case OpSkg:
		return "skg"
	case OpSkc:
		return "skc"
	}
	return "op?"
}

// ParseOperation returns the Operation named s ("sen", "sren", "skg", "skc").
func ParseOperation(s string) (Operation, bool) {
	for o := OpSen; o <= OpSkc; o++ {
		if o.String() == s {
			return o, true
		}
	}
	return 0, false
}

// serverKeygen reports whether the server generates the key (the CSR's key
// and signature are ignored, RFC 9148 §4.8).
func (o Operation) serverKeygen() bool { return o == OpSkg || o == OpSkc }

// Requester is who asks, as the caller established it.
type Requester struct {
	// Verified is what Verify (or Engine.Verify) returned for the client
	// chain; for the local operator set only Kind = KindOperator. The chain
	// must come from Verify: Evaluate re-checks what may change while a
	// session is open (validity, revocation lists, deny/allow lists, the
	// anchor still being configured) but not the signatures.
	Verified
	// Revoked is the caller's lookup of the operational leaf in this CA's
	// store at request time: true if it is revoked. Evaluate refuses a
	// revoked operational certificate on every request, also on an open
	// DTLS session.
	Revoked bool
	// Unknown is the caller's lookup of the operational leaf in this CA's
	// store: true if the store does not hold it (CodeCertUnknown). Evaluate
	// and Recheck refuse it.
	Unknown bool
	// IssuedProfile is the profile the operational leaf was issued under, as
	// recorded in the store; "" if unknown (then not checked).
	IssuedProfile string
}

// OperatorDecision is an operator's decision on one exact request
// (requester + CSR digest), as the caller's store of pending requests has it.
type OperatorDecision uint8

// Operator decisions.
const (
	// OperatorNone: no operator has decided this request.
	OperatorNone OperatorDecision = iota
	// OperatorApproved: an operator approved this exact request.
	OperatorApproved
	// OperatorRejected: an operator denied this exact request.
	OperatorRejected
)

// Counters are the caller's counts for rate limiting and approvals, looked up
// for the requester's identity (IdentityOf) before calling Evaluate. The zero
// value means "nothing issued, nothing pending, no operator decision".
type Counters struct {
	// Issued is the number of certificates issued to this identity within
	// the profile's rate window (Limits.RateWindow) before Request.Time.
	Issued int
	// OldestIssued is the issuance time of the oldest of those; with the
	// window it gives the Max-Age of a rate-limit refusal. Zero means "use
	// the whole window".
	OldestIssued time.Time
	// Pending is the number of this identity's requests waiting for
	// approval, this request excluded.
	Pending int
	// ThisPending is true when this exact request already waits for
	// approval (a device retry after Max-Age).
	ThisPending bool
	// Operator is the operator's decision on this exact request.
	Operator OperatorDecision
}

// Request is one enrollment request to decide.
type Request struct {
	// Requester is who asks.
	Requester Requester
	// CSR is the parsed request, its signature checked by the caller (use
	// ParseCSR). For OpSkg and OpSkc its key and signature are ignored.
	// CSR.Raw is the DER as received.
	CSR *x509.CertificateRequest
	// Operation is the EST function.
	Operation Operation
	// Profile is the path label; "" selects the default profile.
	Profile string
	// Time is the decision time (the caller's clock). Required.
	Time time.Time
	// Counters are the caller's counts for this identity.
	Counters Counters
	// EncryptedKey says, for OpSkg and OpSkc, that the CSR asks for the
	// generated key encrypted: it carries a DecryptKeyIdentifier or an
	// AsymmetricDecryptKeyIdentifier attribute (RFC 9148 §4.8, RFC 7030
	// §4.4.1). The caller reads the attributes (ca/cms ParseKeyRequest);
	// a profile with RequireEncryptedKeys refuses the request without it.
	EncryptedKey bool
}

// Action is what to do with a request.
type Action uint8

// Actions. The zero value is ActionDeny.
const (
	// ActionDeny: refuse; Reasons say why, RetryAfter is set for ClassRetry.
	ActionDeny Action = iota
	// ActionIssue: issue Template.
	ActionIssue
	// ActionPending: keep the request for an operator and answer 5.03 with
	// Max-Age RetryAfter (RFC 9148 §4.7); Template is what would be issued.
	ActionPending
)

// String returns "deny", "issue" or "pending".
func (a Action) String() string {
	switch a {
	case ActionIssue:
		return "issue"
	case ActionPending:
		return "pending"
	}
	return "deny"
}

// Renewal says how a request relates to the requester's current key, for the
// audit.
type Renewal uint8

// Renewal kinds.
const (
	// RenewalNone: a first enrollment (IDevID or operator requester).
	RenewalNone Renewal = iota
	// RenewalRenew: an operational certificate renewed with the same key.
	RenewalRenew
	// RenewalRekey: an operational certificate renewed with a new key
	// (server-generated keys are always new).
	RenewalRekey
)

// String returns "", "renew" or "rekey".
func (r Renewal) String() string {
	switch r {
	case RenewalRenew:
		return "renew"
	case RenewalRekey:
		return "rekey"
	}
	return ""
}

// Decision is the outcome of Evaluate.
type Decision struct {
	// Action is what to do.
	Action Action
	// Profile is the name of the profile that decided ("" if unknown).
	Profile string
	// Identity is IdentityOf(requester): the key of the caller's counters.
	Identity string
	// Reasons are the findings, most important first: every violated rule
	// for a denial (bounded), the pending reason for ActionPending, none for
	// ActionIssue.
	Reasons []Reason
	// RetryAfter is the Max-Age for ActionPending and ClassRetry denials.
	RetryAfter time.Duration
	// Renewal says renew (same key) or rekey (new key) for renewals.
	Renewal Renewal
	// KeyReused is set when the CSR key equals the key of the requester's
	// certificate (IDevID or operational).
	KeyReused bool
	// ExpiredAccepted is set when an expired IDevID was accepted under its
	// anchor's expiry tolerance; InGrace when an expired operational
	// certificate renews within the profile's grace period.
	ExpiredAccepted, InGrace bool
	// Template is the certificate to issue (ActionIssue) or that would be
	// issued on approval (ActionPending); nil on denial.
	Template *Template
}

// Class returns the class of the first reason: the response a denial
// deserves. ActionPending is ClassRetry; ActionIssue is 0.
func (d *Decision) Class() Class {
	if d.Action == ActionIssue {
		return 0
	}
	if len(d.Reasons) == 0 {
		return ClassInternal
	}
	return d.Reasons[0].Class()
}

// Text returns the client diagnostic: the first reason's text.
func (d *Decision) Text() string {
	if len(d.Reasons) == 0 {
		return ""
	}
	return d.Reasons[0].Text()
}

// Has reports whether the decision carries a reason with code c.
func (d *Decision) Has(c Code) bool {
	for _, r := range d.Reasons {
		if r.Code == c {
			return true
		}
	}
	return false
}

// Flags returns the audit flags of the decision: "expired-idevid-accepted",
// "renewal-grace", "renew" or "rekey", "key-reused".
func (d *Decision) Flags() []string {
	var f []string
	if d.ExpiredAccepted {
		f = append(f, "expired-idevid-accepted")
	}
	if d.InGrace {
		f = append(f, "renewal-grace")
	}
	if s := d.Renewal.String(); s != "" {
		f = append(f, s)
	}
	if d.KeyReused {
		f = append(f, "key-reused")
	}
	return f
}

// Template is the certificate the engine decided on. Everything in it has
// passed the profile's rules; the issuer adds serial number, issuer name,
// subject and authority key identifiers, basicConstraints cA=FALSE, and
// signs. Slices are shared with the engine or the request: read only.
type Template struct {
	// Subject is the DER Name to put in the certificate (possibly an empty
	// SEQUENCE, then SubjectAltName is present and critical).
	Subject []byte
	// SubjectAltName is the DER extnValue of the subjectAltName extension,
	// nil for none; SANCritical says whether to mark it critical (RFC 5280
	// §4.2.1.6: when the subject is empty).
	SubjectAltName []byte
	SANCritical    bool
	// PublicKey and RawSubjectPublicKeyInfo are the CSR's key; nil for
	// server-side key generation, where ServerKeyType names the key to
	// generate ("ecdsa-p256", …).
	PublicKey               crypto.PublicKey
	RawSubjectPublicKeyInfo []byte
	ServerKeyType           string
	// EscrowKey says the generated key is kept in the token, not destroyed
	// once delivered (Profile.EscrowKeys); false for CSR keys.
	EscrowKey bool
	// KeyUsage is derived from the profile per key algorithm; ExtKeyUsage is
	// the profile's.
	KeyUsage    x509.KeyUsage
	ExtKeyUsage []x509.ExtKeyUsage
	// NotBefore is Request.Time minus the profile's backdate; NotAfter is
	// Request.Time plus the profile's validity, capped at the issuing CA's
	// notAfter when the engine knows it.
	NotBefore, NotAfter time.Time
	// Extensions are CSR extensions the profile copies verbatim.
	Extensions []pkix.Extension
	// Dropped are CSR extensions the profile dropped (for the audit).
	Dropped []asn1.ObjectIdentifier
}
