package est

import (
	"context"
	"errors"
	"log/slog"
	"slices"
	"strings"
	"sync"
	"time"

	"github.com/plgd-dev/go-coap/v3/message/codes"

	"github.com/estca/estca/ca"
)

// DefaultHandshakeAuditInterval is how often aggregated handshake rejections
// are written to the audit log when Options.HandshakeAuditInterval is zero.
const DefaultHandshakeAuditInterval = 10 * time.Second

// flagUnanswered marks the audit record of a refused request that gets no
// response: a non-confirmable request with a bad option (RFC 7252 §5.4.1).
const flagUnanswered = "unanswered"

// exchange is one request as the server reports it: counted in the metrics,
// logged, and, when refused, audited.
type exchange struct {
	id       uint64
	start    time.Time
	peer     string
	who      *ca.Requester
	method   codes.Code
	resource string     // metric and log label: a routed resource or "-"
	target   string     // audit: the routed resource, else the request path
	profile  string     // profile label of the request, "" for the default
	code     codes.Code // response sent; 0 when none
	// refused is the error behind a refusal decided by this request (not a
	// stored response replayed by the block layer); nil otherwise.
	refused error
}

// auditRefusal audits a refused request through Authority.RecordRejection,
// unless the authority audited it already (ca.Audited) or the peer is not
// authenticated: the first refusal of an identity and reason in an interval
// is written synchronously, before the response is sent (the store
// group-commits, and the wait gives back-pressure), the further ones go
// into one aggregate record (refusal.go). A failed write is logged; the
// answer stays the same.
func (s *Server) auditRefusal(x *exchange) {
	if x.refused == nil || x.who == nil || ca.Audited(x.refused) {
		return
	}
	st := StatusOf(x.refused)
	r := ca.Rejection{
		Requester: x.who,
		Peer:      x.peer,
		Method:    x.method.String(),
		Resource:  x.target,
		Profile:   x.profile,
		Code:      codeString(st.Code),
		Reason:    auditReason(x.refused, st),
	}
	if x.code == 0 {
		r.Flags = []string{flagUnanswered}
	}
	s.recordRefusal(x.who, r, x.id)
}

// auditFailed logs a failed audit write. While the store cannot write
// (ca.KindUnavailable: disk full, file replaced) every request would fail
// the same way; that outage is logged once by whoever watches the store, so
// each failure here is only a debug line.
func (s *Server) auditFailed(err error, args ...any) {
	lvl := slog.LevelError
	if ca.KindOf(err) == ca.KindUnavailable {
		lvl = slog.LevelDebug
	}
	s.log.Log(context.Background(), lvl, "audit write failed", append(args, "error", err)...)
}

// auditReason is the fixed text an audit record gives for err: the
// diagnostic sent, or for internal errors the client-safe reason of the
// error (e.g. "store write failed") instead of "internal error". Library
// error strings never go into the audit log.
func auditReason(err error, st Status) string {
	if st.Kind != KindInternal {
		return st.Diagnostic
	}
	var e *Error
	var ce *ca.Error
	switch {
	case errors.As(err, &e) && safeReason(e.Reason):
		return e.Reason
	case errors.As(err, &ce) && safeReason(ce.Reason):
		return ce.Reason
	}
	return st.Diagnostic
}

// report counts and logs a request once its answer (if any) is sent.
func (s *Server) report(x *exchange) {
	s.metrics.request(x.resource, x.code)
	fp, subject := identity(x.who)
	attrs := []slog.Attr{
		slog.Uint64("req", x.id),
		slog.String("peer", x.peer),
		slog.String("identity", fp),
		slog.String("subject", subject),
		slog.String("method", x.method.String()),
		slog.String("resource", x.resource),
		slog.String("code", codeString(x.code)),
		slog.Duration("duration", s.now().Sub(x.start)),
	}
	if x.refused != nil {
		attrs = append(attrs, slog.String("reason", auditReason(x.refused, StatusOf(x.refused))))
	}
	s.log.LogAttrs(context.Background(), slog.LevelInfo, "est request", attrs...)
}

// handshakeAudit aggregates refused DTLS handshakes by reason, so that an
// unauthenticated peer cannot make the store write (and fsync) per packet:
// the server writes one audit record per reason at most every
// HandshakeAuditInterval and at shutdown.
type handshakeAudit struct {
	mu    sync.Mutex
	tally map[string]*handshakeTally
}

type handshakeTally struct {
	count   int
	peer    string
	subject string
}

// handshakeAuditMax bounds the number of distinct reasons kept between
// flushes; reasons are fixed texts, so it is never reached in practice.
const handshakeAuditMax = 64

// note tallies one refused handshake: reason is the failure reason (the
// metric label, with the authority's fixed reason when it gave one), peer the
// transport address, subject the presented leaf subject ("" if none).
func (h *handshakeAudit) note(reason, peer, subject string) {
	h.mu.Lock()
	defer h.mu.Unlock()
	if h.tally == nil {
		h.tally = map[string]*handshakeTally{}
	}
	t := h.tally[reason]
	if t == nil {
		if len(h.tally) >= handshakeAuditMax {
			reason = "other"
			if t = h.tally[reason]; t == nil {
				t = &handshakeTally{}
				h.tally[reason] = t
			}
		} else {
			t = &handshakeTally{}
			h.tally[reason] = t
		}
	}
	t.count++
	t.peer = peer
	if subject != "" {
		t.subject = subject
	}
}

// take returns the tallies since the last take, ordered by reason.
func (h *handshakeAudit) take() []ca.Rejection {
	h.mu.Lock()
	tally := h.tally
	h.tally = nil
	h.mu.Unlock()
	out := make([]ca.Rejection, 0, len(tally))
	for reason, t := range tally {
		out = append(out, ca.Rejection{Handshake: true, Reason: reason, Count: t.count, Peer: t.peer, Subject: t.subject})
	}
	slices.SortFunc(out, func(a, b ca.Rejection) int { return strings.Compare(a.Reason, b.Reason) })
	return out
}

// noteHandshake records a refused handshake for the next audit flush.
func (s *Server) noteHandshake(reason, peer, subject string) {
	s.hsAudit.note(reason, peer, subject)
}

// flushHandshakes writes one audit record per handshake failure reason seen
// since the last flush, and logs the same tally at warning level (each
// refusal on its own is only a debug line). Flushes are serialised so that
// records keep order.
func (s *Server) flushHandshakes() {
	s.flushMu.Lock()
	defer s.flushMu.Unlock()
	for _, r := range s.hsAudit.take() {
		s.log.Warn("dtls handshakes refused", "reason", r.Reason, "count", r.Count,
			"last_peer", r.Peer, "subject", r.Subject, "interval", s.o.HandshakeAuditInterval)
		if err := s.auth.RecordRejection(r); err != nil {
			s.auditFailed(err, "handshake_reason", r.Reason, "count", r.Count)
		}
	}
}

// auditLoop flushes the handshake and request refusal tallies every
// HandshakeAuditInterval until ctx ends.
func (s *Server) auditLoop(ctx context.Context) {
	t := time.NewTicker(s.o.HandshakeAuditInterval)
	defer t.Stop()
	for {
		select {
		case <-ctx.Done():
			return
		case <-t.C:
			s.flushAudits()
		}
	}
}
