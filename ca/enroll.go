package ca

import (
	"context"
	"crypto/sha256"
	"crypto/x509"
	"encoding/hex"
	"errors"
	"fmt"
	"hash/maphash"
	"io"
	"math/big"
	"strings"
	"time"

	"github.com/estca/estca/policy"
	"github.com/estca/estca/store"
)

// Audit vocabulary written by the authority.
const (
	// VerdictAccepted and VerdictRejected are the audit verdicts of issued
	// and denied records; VerdictPending of a request kept for an operator.
	VerdictAccepted = "accepted"
	VerdictRejected = "rejected"
	VerdictPending  = "pending"
	// FlagExpiredIDevID marks a record of a requester whose expired IDevID
	// was accepted under a tolerant anchor (policy.Decision.Flags names it
	// the same).
	FlagExpiredIDevID = "expired-idevid-accepted"
)

// maxSerialAttempts bounds retries after a serial collision in the store.
const maxSerialAttempts = 4

// identityStripes is the number of locks that serialise the enrollments of
// one policy identity under a rate limit or manual approval, so that the
// counters it is decided on stay true until its certificate is stored.
const identityStripes = 64

var identitySeed = maphash.MakeSeed()

// lockIdentity locks the stripe of identity and returns its unlock.
func (a *Authority) lockIdentity(identity string) func() {
	m := &a.idLocks[maphash.String(identitySeed, identity)%identityStripes]
	m.Lock()
	return m.Unlock
}

// flight is one in-progress enrollment for a requester + CSR digest; later
// identical requests wait for it instead of issuing a second certificate.
type flight struct {
	done chan struct{}
	res  *Result
	err  error
}

// Enroll decides and, if the policy engine says so, fulfils an enrollment
// (/sen, RFC 7030 §4.2.1) or re-enrollment (/sren, §4.2.2, req.Operation).
//
// Every request is decided by the policy engine in force
// (policy.Engine.Evaluate) on the requester re-checked now (its revocation
// in the store, on every request of an open session), the CSR (parsed and
// its signature checked, policy.ParseCSR), and the counters the store keeps
// for the requester's identity: certificates in the profile's rate window,
// requests pending, and an operator's decision on this exact request. The
// decision issues the certificate from the engine's template, keeps the
// request for an operator (KindPending, 5.03 with the profile's Max-Age,
// RFC 9148 §4.7), or refuses it with the engine's reason (KindBadRequest
// for what the CSR got wrong, KindForbidden for what the requester may not
// do, KindNotFound for an unknown profile, KindUnavailable with Max-Age for
// rate limits). Each decision is an audit record naming its reason codes;
// a retry of a request already pending is not recorded again.
//
// The certificate and its audit record are durable in the store before
// Enroll returns. An identical CSR from the same requester returns the
// certificate already issued for it with Existing set (re-decided by the
// policy in force, without rate limit or approval), also when the requests
// run concurrently (RFC 9148 §4.7 retries): once approved, the device's
// retry gets its certificate exactly once. Errors are *Error.
func (a *Authority) Enroll(ctx context.Context, req Request) (*Result, error) {
	if err := ctx.Err(); err != nil {
		return nil, &Error{Kind: KindUnavailable, Reason: "request cancelled", Err: err}
	}
	// Network requesters come from Authenticate and carry their leaf; the
	// local operator (`estca issue`) has none.
	if req.Requester.Identity.Fingerprint == "" || (req.Requester.Leaf == nil && req.Requester.Kind != KindOperator) {
		return nil, &Error{Kind: KindUnauthenticated, Reason: "requester not authenticated"}
	}
	if req.Operation == 0 {
		req.Operation = policy.OpSen
	}
	sum := sha256.Sum256(req.CSR)
	digest := hex.EncodeToString(sum[:])
	key := req.Requester.Identity.Fingerprint + "/" + digest

	a.mu.Lock()
	if f := a.inflight[key]; f != nil {
		a.mu.Unlock()
		select {
		case <-f.done:
		case <-ctx.Done():
			return nil, &Error{Kind: KindUnavailable, Reason: "request cancelled", Err: ctx.Err()}
		}
		if f.err != nil {
			return nil, f.err
		}
		r := *f.res
		r.Existing = true
		return &r, nil
	}
	f := &flight{done: make(chan struct{})}
	a.inflight[key] = f
	a.mu.Unlock()

	f.res, f.err = a.enroll(req, digest)

	a.mu.Lock()
	delete(a.inflight, key)
	a.mu.Unlock()
	close(f.done)
	if f.err != nil {
		return nil, f.err
	}
	r := *f.res
	return &r, nil
}

func (a *Authority) enroll(req Request, digest string) (*Result, error) {
	e := a.Policy()
	now := a.now()
	who := &req.Requester
	pr, err := a.policyRequester(who)
	if err != nil {
		return nil, err
	}
	lim, known := e.Limits(req.Profile)
	csr, perr := policy.ParseCSR(req.CSR, req.Operation)
	if perr != nil {
		// The request cannot be evaluated; still report what the requester
		// may not do before what its CSR got wrong.
		d := policy.Decision{Profile: lim.Profile, Identity: policy.IdentityOf(pr)}
		if !known {
			d.Reasons = append(d.Reasons, policy.Reason{Code: policy.CodeProfileUnknown, Detail: "label " + fmt.Sprintf("%q", clip(req.Profile, maxRejectField))})
		}
		if r, ok := e.Recheck(pr, now); !ok {
			d.Reasons = append(d.Reasons, r)
		}
		r := policy.Reason{Code: policy.CodeCSRMalformed, Detail: perr.Error()}
		var pe *policy.Error
		if errors.As(perr, &pe) && pe.Code != 0 {
			r.Code = pe.Code
		}
		d.Reasons = append(d.Reasons, r)
		return nil, a.refuse(req, digest, &d)
	}

	// What the store knows of this exact request: an operator's decision,
	// a pending state, or the certificate already issued for it.
	fp := who.Identity.Fingerprint
	var c policy.Counters
	var issued *store.Certificate
	switch q, err := a.store.Request(fp, digest); {
	case err == nil:
		switch q.State {
		case store.StateIssued:
			cert, err := a.store.IssuedFor(fp, digest)
			if err != nil {
				return nil, &Error{Kind: KindInternal, Reason: "store lookup failed", Err: err}
			}
			issued, c.Operator = &cert, policy.OperatorApproved
		case store.StateApproved:
			c.Operator = policy.OperatorApproved
		case store.StateDenied:
			c.Operator = policy.OperatorRejected
		case store.StatePending:
			c.ThisPending = true
		}
	case !errors.Is(err, store.ErrNotFound):
		return nil, &Error{Kind: KindInternal, Reason: "store lookup failed", Err: err}
	}

	identity := policy.IdentityOf(pr)
	if known && issued == nil && (lim.RateCount > 0 || lim.Manual) {
		// Count and issue under the identity's lock: two concurrent
		// requests must not both take the last slot.
		defer a.lockIdentity(identity)()
		if lim.RateCount > 0 && c.Operator == policy.OperatorNone {
			if c.Issued, c.OldestIssued, err = a.store.IssuedTo(identity, now.Add(-lim.RateWindow), lim.RateCount); err != nil {
				return nil, &Error{Kind: KindInternal, Reason: "store lookup failed", Err: err}
			}
		}
		if lim.Manual && !c.ThisPending && c.Operator == policy.OperatorNone {
			if c.Pending, err = a.store.PendingCount(identity); err != nil {
				return nil, &Error{Kind: KindInternal, Reason: "store lookup failed", Err: err}
			}
		}
	}

	d := e.Evaluate(policy.Request{Requester: pr, CSR: csr, Operation: req.Operation, Profile: req.Profile,
		Time: now, Counters: c})
	switch d.Action {
	case policy.ActionIssue:
		if issued != nil {
			return a.resend(req, digest, &d, *issued)
		}
		return a.issue(req, digest, identity, &d)
	case policy.ActionPending:
		return nil, a.pending(req, digest, identity, &d, c.ThisPending)
	}
	return nil, a.refuse(req, digest, &d)
}

// refuse audits a denial the policy engine decided and returns the
// client-facing error (the first reason's text and class), marked Audited.
func (a *Authority) refuse(req Request, digest string, d *policy.Decision) error {
	cls := d.Class()
	first := policy.Reason{Code: policy.CodeInvalidRequest}
	if len(d.Reasons) > 0 {
		first = d.Reasons[0]
	}
	e := &Error{Kind: kindOfClass(cls), Reason: first.Text(), Code: first.Code, Err: errors.New(reasonsText(d.Reasons))}
	if cls == policy.ClassRetry {
		e.MaxAge = d.RetryAfter
	}
	return a.audit(store.AuditRecord{
		Event:     store.EventDenied,
		Requester: req.Requester.Identity,
		CSRDigest: digest,
		Profile:   d.Profile,
		Verdict:   VerdictRejected,
		Reason:    req.Operation.String() + ": " + reasonsText(d.Reasons),
		Flags:     flags(req, d),
	}, e)
}

// pending keeps a request for an operator (once: a device's retry of a
// request already pending is answered the same without a new record) and
// returns the 5.03 with the profile's Max-Age.
func (a *Authority) pending(req Request, digest, identity string, d *policy.Decision, known bool) error {
	e := &Error{Kind: KindPending, Reason: d.Text(), MaxAge: d.RetryAfter, Code: policy.CodePendingApproval, Audited: true}
	if known {
		return e
	}
	_, err := a.store.PutPending(store.Request{
		Requester: req.Requester.Identity, Identity: identity, CSRDigest: digest, CSR: req.CSR, Profile: d.Profile,
	}, store.AuditRecord{
		Time:    a.now(),
		Verdict: VerdictPending,
		Profile: d.Profile,
		Reason:  req.Operation.String() + ": " + reasonsText(d.Reasons),
		Flags:   flags(req, d),
	})
	switch {
	case err == nil, errors.Is(err, store.ErrDuplicateRequest):
		// A concurrent identical request stored it first.
		return e
	}
	return a.storeErr("audit write failed", err)
}

// issue signs the engine's template and stores the certificate with its
// audit record.
func (a *Authority) issue(req Request, digest, identity string, d *policy.Decision) (*Result, error) {
	// A CA that is expired, or about to be, would issue certificates that
	// end before they start (notAfter is capped at the issuing CA's).
	if a.issuing.NotAfter.Sub(a.now()) < minRemaining {
		return nil, a.deny(d.Profile, req, digest, KindUnavailable, "issuing CA expired", nil)
	}
	t := d.Template
	reason := req.Operation.String()
	if len(t.Dropped) > 0 {
		var ids []string
		for _, oid := range t.Dropped {
			ids = append(ids, oid.String())
		}
		reason += "; dropped requested extensions " + strings.Join(ids, ", ")
	}
	fp := req.Requester.Identity.Fingerprint
	rec := store.AuditRecord{
		Event:     store.EventIssued,
		Requester: req.Requester.Identity,
		CSRDigest: digest,
		Profile:   d.Profile,
		Verdict:   VerdictAccepted,
		Reason:    reason,
		Flags:     flags(req, d),
	}
	for range maxSerialAttempts {
		cert, err := a.sign(t, t.PublicKey, t.RawSubjectPublicKeyInfo)
		if errors.Is(err, ErrBadSignature) {
			// Nothing was stored or sent; the refusal is audited (and the
			// front end logs the detail of this internal error).
			return nil, a.deny(d.Profile, req, digest, KindInternal, "invalid HSM signature", err, FlagBadSignature)
		}
		if err != nil {
			return nil, err
		}
		sc := store.Certificate{
			Serial:    cert.SerialNumber.Text(16),
			DER:       cert.Raw,
			Subject:   cert.Subject.String(),
			SKI:       cert.SubjectKeyId,
			Requester: fp,
			Identity:  identity,
			Profile:   d.Profile,
			CSRDigest: digest,
			NotBefore: cert.NotBefore,
			NotAfter:  cert.NotAfter,
			// The rate limit counts issue times on the authority's clock.
			IssuedAt: a.now(),
		}
		rec.Time = sc.IssuedAt
		rec.Serial = sc.Serial
		_, err = a.store.Issue(sc, rec)
		switch {
		case err == nil:
			return &Result{Certificate: cert, Serial: sc.Serial, Chain: a.chain}, nil
		case errors.Is(err, store.ErrDuplicateSerial):
			continue
		case errors.Is(err, store.ErrDuplicateRequest):
			// Another authority instance won the race: return its certificate.
			c, err := a.store.IssuedFor(fp, digest)
			if err != nil {
				return nil, &Error{Kind: KindInternal, Reason: "store lookup failed", Err: err}
			}
			return a.existing(c)
		default:
			return nil, a.storeErr("store write failed", err)
		}
	}
	return nil, &Error{Kind: KindInternal, Reason: "serial collisions", Err: store.ErrDuplicateSerial}
}

// flags are the audit flags of a decision: the engine's (expired IDevID
// accepted, renewal grace, renew or rekey, key reuse).
func flags(req Request, d *policy.Decision) []string {
	f := d.Flags()
	if req.Requester.ExpiredAccepted && !d.ExpiredAccepted {
		// Decided before the engine saw the requester (a malformed CSR).
		f = append(f, FlagExpiredIDevID)
	}
	return f
}

// reasonsText renders the reasons of a decision for its audit record:
// "code (class): detail; ...".
func reasonsText(rs []policy.Reason) string {
	var b strings.Builder
	for i, r := range rs {
		if i > 0 {
			b.WriteString("; ")
		}
		b.WriteString(r.Code.String())
		b.WriteString(" (")
		b.WriteString(r.Class().String())
		b.WriteString(")")
		if r.Detail != "" {
			b.WriteString(": ")
			b.WriteString(r.Detail)
		}
	}
	return b.String()
}

// audit writes rec and returns e marked Audited; if the record cannot be
// written the request fails (not Audited): no decision goes unrecorded.
func (a *Authority) audit(rec store.AuditRecord, e *Error) error {
	if rec.Time.IsZero() {
		rec.Time = a.now()
	}
	if _, err := a.store.Append(rec); err != nil {
		return a.storeErr("audit write failed", errors.Join(err, e))
	}
	e.Audited = true
	return e
}

// deny audits a refusal the authority decided itself (not the policy
// engine: the HSM, the CA's own validity, a re-sent CSR whose certificate
// can no longer serve) and returns the client-facing error, marked Audited.
func (a *Authority) deny(profile string, req Request, digest string, kind ErrorKind, reason string, cause error, extraFlags ...string) error {
	var f []string
	if req.Requester.ExpiredAccepted {
		f = append(f, FlagExpiredIDevID)
	}
	return a.audit(store.AuditRecord{
		Event:     store.EventDenied,
		Requester: req.Requester.Identity,
		CSRDigest: digest,
		Profile:   profile,
		Verdict:   VerdictRejected,
		Reason:    req.Operation.String() + ": " + reason,
		Flags:     append(f, extraFlags...),
	}, &Error{Kind: kind, Reason: reason, Err: cause})
}

// minRemaining is the least validity the issuing CA must have left to issue.
const minRemaining = time.Hour

// resend answers an identical CSR from the same requester (RFC 9148 §4.7)
// that the policy in force still accepts, with the certificate issued for
// it, unless that certificate can no longer serve: revoked, expired, or
// issued under another profile. The device must then send a new CSR; the
// refusal is audited.
func (a *Authority) resend(req Request, digest string, d *policy.Decision, c store.Certificate) (*Result, error) {
	revoked, err := a.revoked(c.Serial)
	switch {
	case err != nil:
		return nil, err
	case revoked:
		return nil, a.deny(d.Profile, req, digest, KindForbidden, "CSR already used for a revoked certificate", nil)
	case !a.now().Before(c.NotAfter):
		return nil, a.deny(d.Profile, req, digest, KindForbidden, "CSR already used for an expired certificate", nil)
	case c.Profile != d.Profile:
		return nil, a.deny(d.Profile, req, digest, KindBadRequest, "CSR already enrolled under another profile", nil)
	}
	return a.existing(c)
}

func (a *Authority) existing(c store.Certificate) (*Result, error) {
	cert, err := x509.ParseCertificate(c.DER)
	if err != nil {
		return nil, &Error{Kind: KindInternal, Reason: "stored certificate unreadable", Err: err}
	}
	return &Result{Certificate: cert, Serial: c.Serial, Chain: a.chain, Existing: true}, nil
}

// newSerial returns a random positive serial of up to 127 bits (RFC 5280
// §4.1.2.2: at most 20 octets; CA/B BR: at least 64 bits of entropy).
func newSerial(r io.Reader) (*big.Int, error) {
	var b [16]byte
	for {
		if _, err := io.ReadFull(r, b[:]); err != nil {
			return nil, fmt.Errorf("ca: serial randomness: %w", err)
		}
		b[0] &= 0x7f
		n := new(big.Int).SetBytes(b[:])
		if n.Sign() > 0 {
			return n, nil
		}
	}
}

// storeErr classifies a failed store write: one the store cannot carry out
// for now (disk full or failing, file replaced or damaged:
// store.ErrUnavailable) is KindUnavailable, answered 5.03 with Max-Age
// StoreRetry, so that devices come back by themselves when it recovers;
// anything else is KindInternal under reason.
func (a *Authority) storeErr(reason string, err error) *Error {
	if errors.Is(err, store.ErrUnavailable) {
		return &Error{Kind: KindUnavailable, Reason: "store unavailable", MaxAge: a.storeRetry, Err: err}
	}
	return &Error{Kind: KindInternal, Reason: reason, Err: err}
}
