package est

import (
	"slices"
	"strings"
	"sync"

	"github.com/estca/estca/ca"
)

// Aggregated audit records of refused requests.
//
// Every refusal of an authenticated request is audited (audit.go), but an
// authenticated peer must not be able to make the store write and fsync
// once per packet: refusals are keyed by identity, reason and code; the
// first refusal of a key in an interval is written at once, as before, and
// the further ones are counted and written as one record (Count, flag
// "aggregated") when the interval ends (HandshakeAuditInterval) and at
// shutdown. A peer repeating one refused request thus costs at most two
// audit records per interval, and a refusal is never left out.

// flagAggregated marks an audit record that stands for several refusals.
const flagAggregated = "aggregated"

// refusalAuditMax bounds the keys tallied per interval; beyond it refusals
// are tallied per reason and code, whatever the identity.
const refusalAuditMax = 4096

type refusalKey struct{ identity, reason, code, flags string }

type refusalTally struct {
	count int
	last  ca.Rejection
}

type refusalAudit struct {
	mu    sync.Mutex
	tally map[refusalKey]*refusalTally
}

// note reports whether r (refusal of the request whose identity key is id)
// is the first of its key in this interval and must be written now;
// otherwise it has been counted for the next flush.
func (a *refusalAudit) note(id string, r ca.Rejection) bool {
	k := refusalKey{identity: id, reason: r.Reason, code: r.Code, flags: strings.Join(r.Flags, ",")}
	a.mu.Lock()
	defer a.mu.Unlock()
	if a.tally == nil {
		a.tally = map[refusalKey]*refusalTally{}
	}
	t, ok := a.tally[k]
	if !ok && len(a.tally) >= refusalAuditMax {
		k.identity = ""
		t, ok = a.tally[k]
	}
	if !ok {
		a.tally[k] = &refusalTally{}
		return true
	}
	t.count++
	t.last = r
	return false
}

// take returns the aggregate records since the last take (keys with more
// than the one refusal already written) and starts a new interval.
func (a *refusalAudit) take() []ca.Rejection {
	a.mu.Lock()
	tally := a.tally
	a.tally = nil
	a.mu.Unlock()
	out := make([]ca.Rejection, 0, len(tally))
	for k, t := range tally {
		if t.count == 0 {
			continue
		}
		r := t.last
		r.Count = t.count
		if k.identity == "" {
			r.Requester = nil // several identities
		}
		r.Flags = append(slices.Clone(r.Flags), flagAggregated)
		out = append(out, r)
	}
	slices.SortFunc(out, func(a, b ca.Rejection) int {
		return strings.Compare(a.Reason+a.Code+a.Resource, b.Reason+b.Code+b.Resource)
	})
	return out
}

// recordRefusal audits the refusal r of a request by who: written now, or
// counted for the interval's aggregate record.
func (s *Server) recordRefusal(who *ca.Requester, r ca.Rejection, id uint64) {
	if !s.reqAudit.note(identityKey(who), r) {
		s.metrics.auditRefusal("aggregated")
		return
	}
	s.metrics.auditRefusal("written")
	if err := s.auth.RecordRejection(r); err != nil {
		s.auditFailed(err, "req", id)
	}
}

// flushAudits writes the aggregated handshake and request refusals.
func (s *Server) flushAudits() {
	s.flushHandshakes()
	s.flushMu.Lock()
	defer s.flushMu.Unlock()
	for _, r := range s.reqAudit.take() {
		if err := s.auth.RecordRejection(r); err != nil {
			s.auditFailed(err, "refusal_reason", r.Reason, "count", r.Count)
		}
	}
}
