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

// flight is one in-progress request for a requester + CSR digest; later
// identical requests wait for it instead of deciding again (see once).
type flight struct {
	done    chan struct{}
	waiters int   // requests waiting for this one; guarded by Authority.mu
	copies  []any // one result per waiter, taken under Authority.mu
	err     error
}

// once runs fn for the request named key unless an identical request is in
// flight: then it waits for that one and returns its error, or its own copy
// of its result (share makes one per waiter before any waiter wakes up, so
// that every copy has exactly one owner, e.g. a plain key buffer the caller
// zeroes once sent; drop releases a copy whose waiter left). RFC 9148 §4.7
// retries then get the answer of the request in flight, never a second
// certificate.
func once[T any](ctx context.Context, a *Authority, key string, fn func() (T, error), share func(T) T, drop func(T)) (T, error) {
	var zero T
	a.mu.Lock()
	if f := a.inflight[key]; f != nil {
		f.waiters++
		a.mu.Unlock()
		select {
		case <-f.done:
		case <-ctx.Done():
			a.mu.Lock()
			if a.inflight[key] == f {
				// Not counted yet: no copy will be made for this waiter.
				f.waiters--
				a.mu.Unlock()
			} else {
				// Counted: its copy is being made; take it and drop it.
				a.mu.Unlock()
				<-f.done
				if f.err == nil {
					drop(takeCopy[T](a, f))
				}
			}
			return zero, &Error{Kind: KindUnavailable, Reason: "request cancelled", Err: ctx.Err()}
		}
		if f.err != nil {
			return zero, f.err
		}
		return takeCopy[T](a, f), nil
	}
	f := &flight{done: make(chan struct{})}
	a.inflight[key] = f
	a.mu.Unlock()

	res, err := fn()

	a.mu.Lock()
	delete(a.inflight, key)
	n := f.waiters
	a.mu.Unlock()
	if f.err = err; err == nil {
		for range n {
			f.copies = append(f.copies, share(res))
		}
	}
	close(f.done)
	return res, err
}

// takeCopy takes one waiter's copy of the result of a finished flight.
func takeCopy[T any](a *Authority, f *flight) T {
	a.mu.Lock()
	defer a.mu.Unlock()
	c := f.copies[len(f.copies)-1]
	f.copies = f.copies[:len(f.copies)-1]
	return c.(T)
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
	if err := checkRequest(ctx, &req); err != nil {
		return nil, err
	}
	if req.Operation == 0 {
		req.Operation = policy.OpSen
	}
	digest := csrDigest(req.CSR)
	return once(ctx, a, req.Requester.Identity.Fingerprint+"/"+digest,
		func() (*Result, error) { return a.enroll(req, digest) },
		func(r *Result) *Result { c := *r; c.Existing = true; return &c },
		func(*Result) {})
}

// checkRequest refuses a cancelled request and an unauthenticated requester.
func checkRequest(ctx context.Context, req *Request) error {
	if err := ctx.Err(); err != nil {
		return &Error{Kind: KindUnavailable, Reason: "request cancelled", Err: err}
	}
	// Network requesters come from Authenticate and carry their leaf; the
	// local operator (`estca issue`) has none.
	if req.Requester.Identity.Fingerprint == "" || (req.Requester.Leaf == nil && req.Requester.Kind != KindOperator) {
		return &Error{Kind: KindUnauthenticated, Reason: "requester not authenticated"}
	}
	return nil
}

// csrDigest is the hex SHA-256 of a CSR's DER: with the requester's
// fingerprint, the key of a request in the store.
func csrDigest(der []byte) string {
	sum := sha256.Sum256(der)
	return hex.EncodeToString(sum[:])
}

func (a *Authority) enroll(req Request, digest string) (*Result, error) {
	// Nearly every request ends in a store write (a certificate, a pending
	// request, a refusal's audit record): announced, it shares the commit
	// of the requests already being decided and signed.
	defer a.store.Expect()()
	dc, release, err := a.decide(req, digest, nil)
	if err != nil {
		return nil, err
	}
	defer release()
	d := &dc.Decision
	switch d.Action {
	case policy.ActionIssue:
		if dc.issued != nil {
			return a.resend(req, digest, d, *dc.issued)
		}
		return a.issue(req, digest, dc.identity, d)
	case policy.ActionPending:
		return nil, a.pending(req, digest, dc.identity, d, dc.counters.ThisPending)
	}
	return nil, a.refuse(req, digest, d)
}

// decision is the policy engine's decision on a request, with what the
// store knew of it.
type decision struct {
	policy.Decision
	// identity is the requester's policy identity (policy.IdentityOf).
	identity string
	// counters are what the decision was taken on (Operator: an operator's
	// decision on this exact request; ThisPending: it waits for one).
	counters policy.Counters
	// issued is the certificate already issued for this exact request.
	issued *store.Certificate
}

// decide has the policy engine in force decide req: the requester
// re-checked now, the CSR (policy.ParseCSR for req.Operation), what the
// store knows of this exact request (an operator's decision, pending, the
// certificate issued for it) and, under a rate limit or manual approval,
// the identity's counters, counted under the identity's lock. encrypted,
// for server-side key generation, reads whether the CSR asks for the key
// encrypted (policy.Request.EncryptedKey) once the CSR parses; its error
// makes the CSR malformed. A request that cannot be evaluated is refused
// here (audited, returned as the error). Otherwise the caller acts on the
// decision and then calls release, which drops the identity's lock: the
// counters stay true until its certificate is stored.
func (a *Authority) decide(req Request, digest string, encrypted func() (bool, error)) (*decision, func(), error) {
	e := a.Policy()
	now := a.now()
	who := &req.Requester
	pr, err := a.policyRequester(who)
	if err != nil {
		return nil, nil, err
	}
	lim, known := e.Limits(req.Profile)
	csr, perr := policy.ParseCSR(req.CSR, req.Operation)
	var enc bool
	if perr == nil && encrypted != nil {
		if enc, err = encrypted(); err != nil {
			perr = fmt.Errorf("key request attributes: %w", err)
		}
	}
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
		return nil, nil, a.refuse(req, digest, &d)
	}

	// What the store knows of this exact request: an operator's decision,
	// a pending state, or the certificate already issued for it.
	fp := who.Identity.Fingerprint
	dc := &decision{identity: policy.IdentityOf(pr)}
	c := &dc.counters
	switch q, err := a.store.Request(fp, digest); {
	case err == nil:
		switch q.State {
		case store.StateIssued:
			cert, err := a.store.IssuedFor(fp, digest)
			if err != nil {
				return nil, nil, &Error{Kind: KindInternal, Reason: "store lookup failed", Err: err}
			}
			dc.issued, c.Operator = &cert, policy.OperatorApproved
		case store.StateApproved:
			c.Operator = policy.OperatorApproved
		case store.StateDenied:
			c.Operator = policy.OperatorRejected
		case store.StatePending:
			c.ThisPending = true
		}
	case !errors.Is(err, store.ErrNotFound):
		return nil, nil, &Error{Kind: KindInternal, Reason: "store lookup failed", Err: err}
	}

	release := func() {}
	if known && dc.issued == nil && (lim.RateCount > 0 || lim.Manual) {
		// Count and issue under the identity's lock: two concurrent
		// requests must not both take the last slot.
		release = a.lockIdentity(dc.identity)
		if lim.RateCount > 0 && c.Operator == policy.OperatorNone {
			if c.Issued, c.OldestIssued, err = a.store.IssuedTo(dc.identity, now.Add(-lim.RateWindow), lim.RateCount); err != nil {
				release()
				return nil, nil, &Error{Kind: KindInternal, Reason: "store lookup failed", Err: err}
			}
		}
		if lim.Manual && !c.ThisPending && c.Operator == policy.OperatorNone {
			if c.Pending, err = a.store.PendingCount(dc.identity); err != nil {
				release()
				return nil, nil, &Error{Kind: KindInternal, Reason: "store lookup failed", Err: err}
			}
		}
	}
	dc.Decision = e.Evaluate(policy.Request{Requester: pr, CSR: csr, Operation: req.Operation, Profile: req.Profile,
		Time: now, Counters: *c, EncryptedKey: enc})
	return dc, release, nil
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

// issue signs the engine's template for the CSR's key and stores the
// certificate with its audit record, mapped to the request (an identical
// CSR re-sent gets it again).
func (a *Authority) issue(req Request, digest, identity string, d *policy.Decision) (*Result, error) {
	// A CA that is expired, or about to be, would issue certificates that
	// end before they start (notAfter is capped at the issuing CA's).
	if a.issuingExpired() {
		return nil, a.deny(d.Profile, req, digest, KindUnavailable, "issuing CA expired", nil)
	}
	t := d.Template
	rec := store.AuditRecord{
		Event:     store.EventIssued,
		Requester: req.Requester.Identity,
		CSRDigest: digest,
		Profile:   d.Profile,
		Verdict:   VerdictAccepted,
		Reason:    issueReason(req, t),
		Flags:     flags(req, d),
	}
	return a.signAndStore(req, digest, digest, identity, d, t.PublicKey, t.RawSubjectPublicKeyInfo, rec)
}

// issuingExpired reports whether the issuing CA is expired or about to be:
// it would issue certificates that end before they start (notAfter is
// capped at the issuing CA's).
func (a *Authority) issuingExpired() bool { return a.issuing.NotAfter.Sub(a.now()) < minRemaining }

// issueReason is the reason of an issued record: the operation and the
// requested extensions the profile dropped.
func issueReason(req Request, t *policy.Template) string {
	reason := req.Operation.String()
	if len(t.Dropped) > 0 {
		var ids []string
		for _, oid := range t.Dropped {
			ids = append(ids, oid.String())
		}
		reason += "; dropped requested extensions " + strings.Join(ids, ", ")
	}
	return reason
}

// flags are the audit flags of a decision: the engine's (expired IDevID
// accepted, renewal grace, renew or rekey, key reuse).
func flags(req Request, d *policy.Decision) []string {
	f := d.Flags()
	if req.Requester.ExpiredAccepted && !d.ExpiredAccepted {
		// Decided before the engine saw the requester (a malformed CSR).
		f = append(f, FlagExpiredIDevID)
	}
	return append(f, opFlags(req)...)
}

// requestFlags are the audit flags of a request the engine did not decide:
// an expired IDevID accepted, the operation's.
func requestFlags(req Request) []string {
	var f []string
	if req.Requester.ExpiredAccepted {
		f = append(f, FlagExpiredIDevID)
	}
	return append(f, opFlags(req)...)
}

// opFlags are the audit flags of the operation: server-keygen for /skg and
// /skc.
func opFlags(req Request) []string {
	if req.Operation == policy.OpSkg || req.Operation == policy.OpSkc {
		return []string{FlagServerKeygen}
	}
	return nil
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
	return a.audit(store.AuditRecord{
		Event:     store.EventDenied,
		Requester: req.Requester.Identity,
		CSRDigest: digest,
		Profile:   profile,
		Verdict:   VerdictRejected,
		Reason:    req.Operation.String() + ": " + reason,
		Flags:     append(requestFlags(req), extraFlags...),
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
