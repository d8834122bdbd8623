package hsm

import (
	"errors"
	"time"
)

// Status is a snapshot of a Token's availability (Token.Status).
type Status struct {
	// Up is true while operations reach the token, false while it is down
	// (operations then fail at once with ErrUnavailable).
	Up bool
	// Since is when Up last changed (the Open time at first).
	Since time.Time
	// Err is, while the token is down, the failure that took it down or the
	// last failed attempt to bring it back; nil while it is up.
	Err error
	// Retrying is false while the token is down only if the Token gave up
	// bringing it back by itself: the PIN was rejected at a new login
	// (retrying could lock the PIN), or the module is shared with another
	// initialisation (see the Caveats of the package documentation).
	Retrying bool
	// Recoveries counts how often the Token logged in again or re-initialised
	// the module since Open.
	Recoveries uint64
}

// EventKind says what an Event reports.
type EventKind int

// Event kinds.
const (
	// EventDown: the token became unavailable; Err says why. Reported once
	// per outage, by the operation (or Check) that found it.
	EventDown EventKind = iota + 1
	// EventUp: the token is available again after an outage of Outage.
	// Reported once per outage, after the module was re-initialised and the
	// user logged in again.
	EventUp
	// EventRecovered: sessions or the login were lost and restored without
	// an outage (Reason is RecoveryLogin), or the module was re-initialised
	// (RecoveryReinit), also when that ended an outage.
	EventRecovered
	// EventFailure: an operation (Op) returned an error (Err) to its caller;
	// Reason classifies it (FailureUnavailable, ...).
	EventFailure
)

// String returns the kind's name as used in logs.
func (k EventKind) String() string {
	switch k {
	case EventDown:
		return "down"
	case EventUp:
		return "up"
	case EventRecovered:
		return "recovered"
	case EventFailure:
		return "failure"
	}
	return "unknown"
}

// Failure reasons of EventFailure, fixed texts suitable as metric labels.
const (
	// FailureUnavailable: the token is down (ErrUnavailable).
	FailureUnavailable = "unavailable"
	// FailureKeyNotFound: no such key (ErrKeyNotFound).
	FailureKeyNotFound = "key-not-found"
	// FailurePIN: the PIN was rejected or could not be read (ErrPIN, ErrNoPIN).
	FailurePIN = "pin"
	// FailureRequest: the request itself was refused (ErrKeyExists).
	FailureRequest = "request"
	// FailureDevice: any other error of the module.
	FailureDevice = "device"
)

// Recovery reasons of EventRecovered.
const (
	// RecoveryLogin: a new login session replaced lost sessions.
	RecoveryLogin = "login"
	// RecoveryReinit: the module was finalised and initialised again
	// (C_Finalize, C_Initialize), the slot found and the user logged in.
	RecoveryReinit = "reinit"
)

// Event is something a Token reports to Options.Observer. Events carry no
// PIN and no key material; Err is an error of this package.
type Event struct {
	Kind EventKind
	Time time.Time
	// Op is the operation of an EventFailure: "sign", "find-key",
	// "generate-key", "key-info", "delete-key" or "check".
	Op string
	// Reason is the failure reason (EventFailure) or the recovery reason
	// (EventRecovered).
	Reason string
	// Err is the cause: of the outage (EventDown) or of the failure.
	Err error
	// Outage is how long the token was down (EventUp).
	Outage time.Duration
}

// failureReason classifies an error returned by an operation.
func failureReason(err error) string {
	switch {
	case errors.Is(err, ErrUnavailable):
		return FailureUnavailable
	case errors.Is(err, ErrKeyNotFound):
		return FailureKeyNotFound
	case errors.Is(err, ErrPIN), errors.Is(err, ErrNoPIN):
		return FailurePIN
	case errors.Is(err, ErrKeyExists):
		return FailureRequest
	}
	return FailureDevice
}
