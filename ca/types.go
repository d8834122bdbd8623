package ca

import (
	"crypto/x509"
	"errors"
	"time"

	"github.com/estca/estca/policy"
	"github.com/estca/estca/store"
)

// RequesterKind says how a requester authenticated.
type RequesterKind string

// Requester kinds.
const (
	// KindIDevID is a device that presented a manufacturer IDevID (IEEE 802.1AR)
	// chaining to a configured manufacturer trust anchor.
	KindIDevID RequesterKind = "idevid"
	// KindOperational is a device that presented a certificate issued by this CA.
	KindOperational RequesterKind = "operational"
	// KindOperator is a local operator issuing from a file (`estca issue`):
	// requester rules do not apply, CSR and profile rules do.
	KindOperator RequesterKind = "operator"
)

// Requester is an authenticated EST client, as established from its DTLS client
// certificate chain by Authority.Authenticate.
type Requester struct {
	// Identity is what the store and the audit log record of the requester.
	Identity store.Identity
	// Kind says which trust path authenticated the requester.
	Kind RequesterKind
	// Leaf is the client certificate; Chain the verified chain, leaf first.
	Leaf  *x509.Certificate
	Chain []*x509.Certificate
	// Anchor names the manufacturer trust anchor (IDevID) that accepted the chain.
	Anchor string
	// ExpiredAccepted is set when an expired IDevID was accepted because its
	// anchor tolerates expiry (RFC 9148 §3); the audit record is flagged.
	ExpiredAccepted bool
	// InGrace is set when an expired operational certificate was accepted
	// within the longest renewal grace of the profiles (for renewal only).
	InGrace bool
	// IssuedProfile is the profile an operational certificate was issued
	// under, from the store ("" if unknown).
	IssuedProfile string
	// inStore: Authenticate found the operational certificate in the store
	// (a Requester built elsewhere is looked up per request).
	inStore bool
}

// Request is one enrollment request (RFC 7030 §4.2, RFC 9148 §4.2).
type Request struct {
	// CSR is the DER PKCS#10 request (Content-Format 286).
	CSR []byte
	// Profile is the profile selected by the path label; "" means the default.
	Profile string
	// Requester is the authenticated client.
	Requester Requester
	// Operation is the EST function: OpSen (the zero value means OpSen) or
	// OpSren (re-enrollment, RFC 7030 §4.2.2).
	Operation Operation
}

// Operation is the EST function of a request (RFC 9148 §4.1). It is the
// policy engine's type, re-exported so that the front end (package est)
// depends on ca alone (cmd → est → ca → policy).
type Operation = policy.Operation

// The EST functions, as the policy engine knows them.
const (
	// OpSen is simple enrollment (/sen, RFC 7030 §4.2.1).
	OpSen = policy.OpSen
	// OpSren is simple re-enrollment (/sren, RFC 7030 §4.2.2).
	OpSren = policy.OpSren
	// OpSkg is server-side key generation (/skg, RFC 9148 §4.8).
	OpSkg = policy.OpSkg
	// OpSkc is server-side key generation returning a single certificate
	// (/skc, RFC 9148 §4.8).
	OpSkc = policy.OpSkc
)

// Code is the reason code of a policy decision (Error.Code), re-exported
// with Operation so that est needs no import of policy.
type Code = policy.Code

// Result is the outcome of a successful enrollment.
type Result struct {
	// Certificate is the issued certificate; DER its encoding.
	Certificate *x509.Certificate
	// Serial is the lowercase hex serial number.
	Serial string
	// Chain is the issuing chain above Certificate, issuing CA first.
	Chain []*x509.Certificate
	// Existing is true when an identical earlier request from the same requester
	// already had this certificate (no new certificate was issued).
	Existing bool
}

// ErrorKind classifies authority errors; the EST front end maps each kind to
// exactly one CoAP response code (RFC 9148 §4.5).
type ErrorKind int

// Error kinds.
const (
	// KindInternal is an unexpected failure (5.00); its detail is logged, never sent.
	KindInternal ErrorKind = iota
	// KindBadRequest is a malformed or unacceptable request (4.00).
	KindBadRequest
	// KindUnauthenticated means the requester could not be authenticated (4.01).
	KindUnauthenticated
	// KindForbidden means the requester is authenticated but not allowed (4.03).
	KindForbidden
	// KindNotFound means the profile/label or resource does not exist (4.04).
	KindNotFound
	// KindPending means the request waits for approval; retry after MaxAge (5.03).
	KindPending
	// KindUnavailable means the authority cannot serve now, e.g. the HSM is
	// unreachable; retry after MaxAge (5.03).
	KindUnavailable
)

// String returns the kind's name as used in logs and metrics.
func (k ErrorKind) String() string {
	switch k {
	case KindBadRequest:
		return "bad-request"
	case KindUnauthenticated:
		return "unauthenticated"
	case KindForbidden:
		return "forbidden"
	case KindNotFound:
		return "not-found"
	case KindPending:
		return "pending"
	case KindUnavailable:
		return "unavailable"
	default:
		return "internal"
	}
}

// Error is an authority error that carries its kind, a short reason that is
// safe to send to the client, and the underlying cause (logged, never sent).
type Error struct {
	Kind   ErrorKind
	Reason string        // short, fixed, client-safe text, e.g. "bad CSR signature"
	MaxAge time.Duration // for KindPending and KindUnavailable
	Err    error         // cause; may be nil
	// Code is the policy reason of a refusal the policy engine decided (its
	// first reason), 0 for other errors.
	Code Code
	// Audited is set when the authority has already written the audit record
	// of this refusal (Enroll's denials); the front end must not write a
	// second one (see Audited and RecordRejection).
	Audited bool
}

// Error implements error.
func (e *Error) Error() string {
	if e.Err != nil {
		return "ca: " + e.Reason + ": " + e.Err.Error()
	}
	return "ca: " + e.Reason
}

// Unwrap returns the cause.
func (e *Error) Unwrap() error { return e.Err }

// KindOf returns the kind of err: the Kind of the first *Error in its chain, or
// KindInternal.
func KindOf(err error) ErrorKind {
	var e *Error
	if errors.As(err, &e) {
		return e.Kind
	}
	return KindInternal
}
