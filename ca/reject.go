package ca

import (
	"errors"
	"strconv"
	"strings"

	"github.com/estca/estca/store"
)

// Audit flags of the records RecordRejection writes.
const (
	// FlagFrontEnd marks a refusal decided by the EST front end (protocol
	// checks, routing, block-wise), not by Enroll.
	FlagFrontEnd = "front-end"
	// FlagHandshake marks an aggregate of refused DTLS handshakes.
	FlagHandshake = "handshake"
)

// Bounds of the free-text parts of a rejection record. Labels, paths and the
// subjects of untrusted certificates come from the network.
const (
	maxRejectField   = 128
	maxRejectSubject = 256
)

// Rejection is a refusal the authority did not decide itself, reported by the
// EST front end so that it is audited: a request answered 4.xx or 5.xx before
// or outside an Enroll decision (wrong Content-Format, unknown label, body too
// large, bad option, …), or an aggregate of refused DTLS handshakes.
//
// A refusal that Enroll already audited (Audited reports true for its error)
// must not be reported again.
type Rejection struct {
	// Requester is the authenticated client; nil for handshake rejections.
	Requester *Requester
	// Peer is the client's transport address (the last one for an aggregate).
	Peer string
	// Method is the CoAP method ("GET", "POST"), "" for handshakes.
	Method string
	// Resource names what was asked for: a routed resource ("sen",
	// "iot/sen", "core") or the request path when it could not be routed.
	Resource string
	// Profile is the profile label of the request; it is recorded as the
	// record's Profile only when it names a profile of this authority.
	Profile string
	// Code is the CoAP response code sent, e.g. "4.15"; for a non-confirmable
	// request that was rejected without an answer, the code it would have had.
	Code string
	// Reason is the short fixed diagnostic (never a library error string), or
	// for handshakes the failure reason, e.g. "unauthenticated".
	Reason string
	// Handshake marks an aggregate of refused DTLS handshakes.
	Handshake bool
	// Count is how many refusals the record stands for; 0 means one.
	Count int
	// Subject is the subject of the last certificate presented in a refused
	// handshake, if any.
	Subject string
	// Flags are added to the record's flags (e.g. "unanswered").
	Flags []string
}

// RecordRejection durably appends one audit record (event denied, verdict
// rejected) for r before it returns. For a request the reason reads
// "<method> <resource> <code>: <reason> (peer <peer>)"; for handshakes
// "dtls handshake rejected: <reason> x<count> (last <peer>, <subject>)".
// Free-text parts are cut to a bounded length and non-printable characters
// replaced; no CSR or key material is ever part of r. Errors are *Error of
// KindUnavailable (the store cannot write for now) or KindInternal.
func (a *Authority) RecordRejection(r Rejection) error {
	rec := store.AuditRecord{
		Time:    a.now(),
		Event:   store.EventDenied,
		Verdict: VerdictRejected,
		Flags:   []string{FlagFrontEnd},
	}
	if r.Requester != nil {
		rec.Requester = r.Requester.Identity
		if r.Requester.ExpiredAccepted {
			rec.Flags = append(rec.Flags, FlagExpiredIDevID)
		}
	}
	if r.Profile != "" && a.HasProfile(r.Profile) {
		rec.Profile = r.Profile
	}
	count := max(r.Count, 1)
	var b strings.Builder
	if r.Handshake {
		rec.Flags[0] = FlagHandshake
		b.WriteString("dtls handshake rejected: ")
		b.WriteString(clip(r.Reason, maxRejectField))
		b.WriteString(" x")
		b.WriteString(strconv.Itoa(count))
		b.WriteString(" (last ")
		b.WriteString(clip(r.Peer, maxRejectField))
		if r.Subject != "" {
			b.WriteString(", ")
			b.WriteString(clip(r.Subject, maxRejectSubject))
		}
		b.WriteString(")")
	} else {
		b.WriteString(clip(r.Method, 16))
		b.WriteString(" ")
		b.WriteString(clip(r.Resource, maxRejectField))
		b.WriteString(" ")
		b.WriteString(clip(r.Code, 8))
		b.WriteString(": ")
		b.WriteString(clip(r.Reason, maxRejectField))
		if count > 1 {
			b.WriteString(" x")
			b.WriteString(strconv.Itoa(count))
		}
		if r.Peer != "" {
			b.WriteString(" (peer ")
			b.WriteString(clip(r.Peer, maxRejectField))
			b.WriteString(")")
		}
	}
	rec.Reason = b.String()
	for _, f := range r.Flags {
		rec.Flags = append(rec.Flags, clip(f, 32))
	}
	if _, err := a.store.Append(rec); err != nil {
		return a.storeErr("audit write failed", err)
	}
	return nil
}

// Audited reports whether err is a refusal the authority has already
// audited (an *Error with Audited set), so that the front end does not write
// a second record for the same request.
func Audited(err error) bool {
	var e *Error
	return errors.As(err, &e) && e.Audited
}

// clip bounds s to n bytes and replaces bytes outside printable ASCII with
// '?', so that network-supplied text cannot forge or bloat audit records.
func clip(s string, n int) string {
	if s == "" {
		return "-"
	}
	cut := len(s) > n
	if cut {
		s = s[:n]
	}
	b := []byte(s)
	for i, c := range b {
		if c < 0x20 || c > 0x7e {
			b[i] = '?'
		}
	}
	if cut {
		return string(b) + "..."
	}
	return string(b)
}
