package policy

import (
	"testing"
	"time"

	"github.com/estca/estca/policy/pkitest"
)

// TestRecheck re-checks requesters of open sessions: verified under the
// lax configuration (before a reload), re-checked under the current one and
// at later times.
func TestRecheck(t *testing.T) {
	t.Parallel()
	w := getWorld(t)
	laxIDev := func(c *pkitest.Cert) Requester { return w.requester(t, w.lax, pkNow, c) }
	op := w.requester(t, w.e, pkNow, w.op)
	revoked := op
	revoked.Revoked = true
	unknown := op
	unknown.Unknown = true
	inGrace := w.requester(t, w.e, pkNow, w.opExpired)
	gone := w.idev(t, w.dev)
	gone.Anchor = "removed-by-reload"
	expiring := w.requester(t, w.e, pkNow.Add(-2*pkDay), w.devExpiring)
	tests := []struct {
		name string
		r    Requester
		at   time.Time
		want Code // 0: admitted
	}{
		{"idevid", w.idev(t, w.dev), pkNow, 0},
		{"idevid deny-listed after reload", laxIDev(w.devDenied), pkNow, CodeCertDenied},
		{"idevid fingerprint deny-listed after reload", laxIDev(w.devDeniedFP), pkNow, CodeCertDenied},
		{"idevid on CRL after reload", laxIDev(w.devRevoked), pkNow, CodeCertRevoked},
		{"anchor removed by reload", gone, pkNow, CodeAnchorUnknown},
		{"idevid expired during the session", expiring, pkNow, CodeCertExpired},
		{"tolerant anchor, expired", w.idev(t, w.boltExpired), pkNow, 0},
		{"tolerant anchor, CRL went stale", w.idev(t, w.boltExpired), pkNow.Add(30 * pkDay), CodeCRLStale},
		{"cog allow-listed", w.idev(t, w.cogListed), pkNow, 0},
		{"operational", op, pkNow, 0},
		{"operational revoked", revoked, pkNow, CodeCertRevoked},
		{"operational not in the store", unknown, pkNow, CodeCertUnknown},
		{"operational in grace", inGrace, pkNow, 0},
		{"operational past grace", inGrace, pkNow.Add(30 * pkDay), CodeCertExpired},
		{"operational expired during the session", op, pkNow.Add(400 * pkDay), CodeCertExpired},
		{"not yet valid (clock moved back)", op, pkNow.Add(-365 * pkDay), CodeCertNotYetValid},
		{"operator", Requester{Verified: Verified{Kind: KindOperator}}, pkNow, 0},
		{"no chain", Requester{Verified: Verified{Kind: KindIDevID}}, pkNow, CodeInvalidRequest},
		{"unknown kind", Requester{Verified: Verified{Kind: "martian", Chain: op.Chain}}, pkNow, CodeInvalidRequest},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			r, ok := w.e.Recheck(tc.r, tc.at)
			if ok != (tc.want == 0) || r.Code != tc.want {
				t.Fatalf("Recheck = %v %v, want %v", r, ok, tc.want)
			}
			if !ok && r.Class() == 0 {
				t.Fatalf("reason %v has no class", r)
			}
		})
	}
}
