package policy

import (
	"errors"
	"fmt"
)

// Sentinels carried by *Error; test with errors.Is.
var (
	// ErrUntrusted means the chain does not lead to any configured trust anchor.
	ErrUntrusted = errors.New("policy: untrusted certificate chain")
	// ErrExpired means the chain is expired and its anchor does not tolerate expiry.
	ErrExpired = errors.New("policy: certificate expired")
	// ErrNotYetValid means the leaf's notBefore lies in the future.
	ErrNotYetValid = errors.New("policy: certificate not yet valid")
	// ErrDenied means the requester is known but refused (deny-listed serial).
	ErrDenied = errors.New("policy: requester denied")
	// ErrRejected means a certificate request violates a rule.
	ErrRejected = errors.New("policy: request rejected")
	// ErrUnknownProfile means no profile has the requested label.
	ErrUnknownProfile = errors.New("policy: unknown profile")
)

// Error is a policy decision against a requester or a request. Reason is a
// short, fixed text that is safe to send to the client; Err is one of the
// sentinels above, possibly wrapping a cause (e.g. an x509 verification error).
type Error struct {
	Reason string
	// Code is the precise reason for the audit.
	Code Code
	Err  error
}

// Error implements error.
func (e *Error) Error() string {
	if e.Err != nil {
		return "policy: " + e.Reason + ": " + e.Err.Error()
	}
	return "policy: " + e.Reason
}

// Unwrap returns the sentinel (and cause).
func (e *Error) Unwrap() error { return e.Err }

func reject(reason string) *Error { return &Error{Reason: reason, Err: ErrRejected} }

// joinRejected wraps a cause under ErrRejected.
func joinRejected(cause error) error { return fmt.Errorf("%w: %w", ErrRejected, cause) }
