package est

import (
	"errors"
	"time"
	"unicode/utf8"

	"github.com/plgd-dev/go-coap/v3/message/codes"

	"github.com/estca/estca/ca"
	"github.com/estca/estca/est/block"
)

// ErrorKind classifies every failure the EST-coaps server answers: the
// authority's kinds (ca.ErrorKind) and the server's own protocol errors.
// StatusOf turns each kind into exactly one CoAP response code (RFC 9148 §4.5,
// RFC 7252 §5.9).
type ErrorKind int

// Error kinds, with the CoAP code StatusOf gives them.
const (
	// KindInternal is an unexpected failure: 5.00, detail logged, never sent.
	KindInternal ErrorKind = iota
	// KindBadRequest is a malformed request or a rejected CSR: 4.00.
	KindBadRequest
	// KindUnauthenticated means the client could not be authenticated: 4.01.
	KindUnauthenticated
	// KindBadOption is an unrecognised or malformed critical option, or a
	// repeated non-repeatable one (RFC 7252 §5.4.1, §5.4.5): 4.02.
	KindBadOption
	// KindForbidden means the client is authenticated but not allowed: 4.03.
	KindForbidden
	// KindNotFound is an unknown resource or label, or a function that is not
	// implemented: 4.04.
	KindNotFound
	// KindMethodNotAllowed is a method the resource does not serve: 4.05.
	KindMethodNotAllowed
	// KindNotAcceptable is an Accept the resource cannot produce: 4.06.
	KindNotAcceptable
	// KindIncomplete is a block-wise body with a missing block (RFC 7959 §2.9.2): 4.08.
	KindIncomplete
	// KindTooLarge is a request body above the limit (RFC 7959 §2.9.3): 4.13.
	KindTooLarge
	// KindUnsupportedFormat is a request body whose Content-Format the
	// resource does not accept: 4.15.
	KindUnsupportedFormat
	// KindPending means the request waits for approval (RFC 9148 §4.7): 5.03 with Max-Age.
	KindPending
	// KindUnavailable means the server cannot serve now: 5.03 with Max-Age.
	KindUnavailable
)

// String returns the kind's name as used in logs.
func (k ErrorKind) String() string {
	switch k {
	case KindBadRequest:
		return "bad-request"
	case KindUnauthenticated:
		return "unauthenticated"
	case KindBadOption:
		return "bad-option"
	case KindForbidden:
		return "forbidden"
	case KindNotFound:
		return "not-found"
	case KindMethodNotAllowed:
		return "method-not-allowed"
	case KindNotAcceptable:
		return "not-acceptable"
	case KindIncomplete:
		return "incomplete"
	case KindTooLarge:
		return "too-large"
	case KindUnsupportedFormat:
		return "unsupported-format"
	case KindPending:
		return "pending"
	case KindUnavailable:
		return "unavailable"
	default:
		return "internal"
	}
}

// Server error sentinels; every *Error of the server matches the sentinel of
// its kind with errors.Is.
var (
	ErrBadRequest        = errors.New("est: bad request")
	ErrBadOption         = errors.New("est: bad option")
	ErrNotFound          = errors.New("est: not found")
	ErrMethodNotAllowed  = errors.New("est: method not allowed")
	ErrNotAcceptable     = errors.New("est: not acceptable")
	ErrIncomplete        = errors.New("est: request entity incomplete")
	ErrTooLarge          = errors.New("est: request entity too large")
	ErrUnsupportedFormat = errors.New("est: unsupported content-format")
	ErrUnavailable       = errors.New("est: service unavailable")
	// ErrNotServed marks a request that is dropped without any response: a
	// non-confirmable request with a bad critical option (RFC 7252 §5.4.1), or
	// a message that is not a request.
	ErrNotServed = errors.New("est: request not served")
)

// Error is a protocol error of the server: its kind, a short fixed reason that
// is safe to send as diagnostic payload, and the cause (logged, never sent).
type Error struct {
	Kind   ErrorKind
	Reason string
	MaxAge time.Duration
	Err    error
}

// Error implements error.
func (e *Error) Error() string {
	if e.Err != nil {
		return "est: " + e.Reason + ": " + e.Err.Error()
	}
	return "est: " + e.Reason
}

// Unwrap returns the cause.
func (e *Error) Unwrap() error { return e.Err }

// Is matches the sentinel of e's kind.
func (e *Error) Is(target error) bool {
	switch target {
	case ErrBadRequest:
		return e.Kind == KindBadRequest
	case ErrBadOption:
		return e.Kind == KindBadOption
	case ErrNotFound:
		return e.Kind == KindNotFound
	case ErrMethodNotAllowed:
		return e.Kind == KindMethodNotAllowed
	case ErrNotAcceptable:
		return e.Kind == KindNotAcceptable
	case ErrIncomplete:
		return e.Kind == KindIncomplete
	case ErrTooLarge:
		return e.Kind == KindTooLarge
	case ErrUnsupportedFormat:
		return e.Kind == KindUnsupportedFormat
	case ErrUnavailable:
		return e.Kind == KindUnavailable
	}
	return false
}

func protoErr(kind ErrorKind, reason string) *Error {
	return &Error{Kind: kind, Reason: reason}
}

// Status is the CoAP rendering of an error: response code, diagnostic payload
// (RFC 7252 §5.5.2) and, for 5.03, Max-Age (RFC 9148 §4.7).
type Status struct {
	Code       codes.Code
	Diagnostic string
	// MaxAge is set for 5.03 only; it is at least one second.
	MaxAge time.Duration
	// Kind is the classified kind; KindInternal means the detail must be
	// logged under a request id and never sent.
	Kind ErrorKind
}

// DefaultRetryAfter is the Max-Age of a 5.03 whose error carries none.
const DefaultRetryAfter = 60 * time.Second

// maxDiagnostic bounds the diagnostic payload (RFC 7252 §5.5.2: short).
const maxDiagnostic = 64

// KindOf classifies err: the kind of the first *Error in its chain, else the
// mapped kind of the first *ca.Error, else the kind of an est/block sentinel
// (RFC 7959 §2.9), else KindInternal.
func KindOf(err error) ErrorKind {
	var e *Error
	if errors.As(err, &e) {
		return e.Kind
	}
	var ce *ca.Error
	if errors.As(err, &ce) {
		return fromCA(ce.Kind)
	}
	switch {
	case errors.Is(err, block.ErrBadOption):
		return KindBadOption
	case errors.Is(err, block.ErrBadBlock):
		return KindBadRequest
	case errors.Is(err, block.ErrIncomplete):
		return KindIncomplete
	case errors.Is(err, block.ErrTooLarge):
		return KindTooLarge
	case errors.Is(err, block.ErrBusy):
		return KindUnavailable
	}
	return KindInternal
}

// fromCA maps the authority's kinds onto the server's.
func fromCA(k ca.ErrorKind) ErrorKind {
	switch k {
	case ca.KindBadRequest:
		return KindBadRequest
	case ca.KindUnauthenticated:
		return KindUnauthenticated
	case ca.KindForbidden:
		return KindForbidden
	case ca.KindNotFound:
		return KindNotFound
	case ca.KindPending:
		return KindPending
	case ca.KindUnavailable:
		return KindUnavailable
	default:
		return KindInternal
	}
}

// StatusOf is the one table that turns an error into a CoAP response (RFC
// 9148 §4.5). The diagnostic is the error's own short reason when it carries a
// client-safe one (*Error, *ca.Error), else a fixed text per kind; internal
// errors always answer 5.00 "internal error".
func StatusOf(err error) Status {
	kind := KindOf(err)
	var code codes.Code
	text := ""
	switch kind {
	case KindBadRequest:
		code, text = codes.BadRequest, "bad request"
	case KindUnauthenticated:
		code, text = codes.Unauthorized, "not authenticated"
	case KindBadOption:
		code, text = codes.BadOption, "bad option"
	case KindForbidden:
		code, text = codes.Forbidden, "forbidden"
	case KindNotFound:
		code, text = codes.NotFound, "not found"
	case KindMethodNotAllowed:
		code, text = codes.MethodNotAllowed, "method not allowed"
	case KindNotAcceptable:
		code, text = codes.NotAcceptable, "not acceptable"
	case KindIncomplete:
		code, text = codes.RequestEntityIncomplete, "request entity incomplete"
	case KindTooLarge:
		code, text = codes.RequestEntityTooLarge, "request entity too large"
	case KindUnsupportedFormat:
		code, text = codes.UnsupportedMediaType, "unsupported content-format"
	case KindPending:
		code, text = codes.ServiceUnavailable, "pending approval"
	case KindUnavailable:
		code, text = codes.ServiceUnavailable, "service unavailable"
	default:
		return Status{Code: codes.InternalServerError, Diagnostic: "internal error", Kind: KindInternal}
	}
	st := Status{Code: code, Diagnostic: text, Kind: kind}
	var maxAge time.Duration
	var e *Error
	var ce *ca.Error
	switch {
	case errors.As(err, &e):
		if safeReason(e.Reason) {
			st.Diagnostic = e.Reason
		}
		maxAge = e.MaxAge
	case errors.As(err, &ce):
		if safeReason(ce.Reason) {
			st.Diagnostic = ce.Reason
		}
		maxAge = ce.MaxAge
	}
	if code == codes.ServiceUnavailable {
		if maxAge <= 0 {
			maxAge = DefaultRetryAfter
		}
		st.MaxAge = max(maxAge.Round(time.Second), time.Second)
	}
	return st
}

// safeReason reports whether a reason may go out as diagnostic payload:
// short, valid UTF-8, printable ASCII.
func safeReason(s string) bool {
	if s == "" || len(s) > maxDiagnostic || !utf8.ValidString(s) {
		return false
	}
	for i := 0; i < len(s); i++ {
		if s[i] < 0x20 || s[i] > 0x7e {
			return false
		}
	}
	return true
}
