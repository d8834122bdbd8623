package policy

import "time"

// Recheck re-applies to an authenticated requester, at time now and under
// this engine's configuration, what may change while its DTLS session stays
// open: for an IDevID, that its manufacturer anchor is still configured, its
// validity under the anchor's expiry rule, the anchor's deny and allow lists
// and CRLs; for an operational certificate, that the store holds it
// (Unknown) and its revocation (Revoked, the caller's store lookups), its
// validity with the longest renewal grace of the profiles. It does not verify signatures (Verify did, at the
// handshake) and applies no profile rule (Evaluate does, per enrollment).
//
// The EST front end calls it on every request and periodically on every
// open session, so that a revocation, or a reload that removes or
// deny-lists a manufacturer, closes the sessions it concerns. The local
// operator always passes. It returns the first failing reason and false,
// or true.
func (e *Engine) Recheck(r Requester, now time.Time) (Reason, bool) {
	if r.Kind == KindOperator {
		return Reason{}, true
	}
	if len(r.Chain) == 0 || r.Chain[0] == nil {
		return Reason{Code: CodeInvalidRequest, Detail: "requester without certificate"}, false
	}
	leaf := r.Chain[0]
	if now.Before(leaf.NotBefore) {
		return Reason{Code: CodeCertNotYetValid, Detail: "notBefore " + leaf.NotBefore.UTC().Format(time.RFC3339)}, false
	}
	expired := now.After(leaf.NotAfter)
	switch r.Kind {
	case KindIDevID:
		a := e.anchors[r.Anchor]
		if a == nil {
			return Reason{Code: CodeAnchorUnknown, Detail: "anchor " + quote(r.Anchor)}, false
		}
		if expired && !a.tolerate {
			return Reason{Code: CodeCertExpired, Detail: "notAfter " + leaf.NotAfter.UTC().Format(time.RFC3339)}, false
		}
		for _, c := range r.Chain {
			if c == nil {
				return Reason{Code: CodeInvalidRequest, Detail: "nil certificate in chain"}, false
			}
		}
		if code, detail := a.admit(r.Chain, now, expired); code != 0 {
			return Reason{Code: code, Detail: detail}, false
		}
	case KindOperational:
		if r.Unknown {
			return Reason{Code: CodeCertUnknown, Detail: "serial " + leaf.SerialNumber.Text(16) + " is not in the store"}, false
		}
		if r.Revoked {
			return Reason{Code: CodeCertRevoked, Detail: "serial " + leaf.SerialNumber.Text(16) + " is revoked"}, false
		}
		if expired && now.Sub(leaf.NotAfter) > e.verifier.grace {
			return Reason{Code: CodeCertExpired, Detail: "notAfter " + leaf.NotAfter.UTC().Format(time.RFC3339)}, false
		}
	default:
		return Reason{Code: CodeInvalidRequest, Detail: "unknown requester kind"}, false
	}
	return Reason{}, true
}
