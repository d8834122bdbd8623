package main

import (
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"math/big"
	"net/http"
	"reflect"
	"strconv"
	"strings"
	"sync"

	"github.com/estca/estca/ca"
	"github.com/estca/estca/est"
	"github.com/estca/estca/policy"
	"github.com/estca/estca/store"
)

// running is a serving appliance: what a reload, a revocation and the CRL
// schedule act on, from the admin socket, SIGHUP and timers alike.
type running struct {
	configPath string
	cfg        *Config // the configuration in force
	x          *authority
	srv        *est.Server // nil until the server exists
	log        *slog.Logger

	mu          sync.Mutex // serialises reloads and CRL file writes
	lastWritten *big.Int   // number of the CRL in crl.path
}

// splitErrors lists the problems of a (joined) error, one per line.
func splitErrors(err error) []string {
	var out []string
	for _, line := range strings.Split(err.Error(), "\n") {
		if line = strings.TrimSpace(line); line != "" {
			out = append(out, line)
		}
	}
	return out
}

// maxConfigReason bounds the problems written into one audit record.
const maxConfigReason = 4096

// reload re-reads the configuration file. A valid one atomically replaces
// the policy (profiles, manufacturers, their certificate and CRL files,
// reserved names) without touching open DTLS sessions; then sessions whose
// requester the new policy refuses are closed. An invalid one changes
// nothing: every problem is logged and returned. Both outcomes are audit
// records. Changes outside the policy take effect at the next restart, with
// a warning.
func (r *running) reload(source string) error {
	r.mu.Lock()
	defer r.mu.Unlock()
	cfg, err := loadConfig(r.configPath)
	var opts policy.Options
	if err == nil {
		opts, err = cfg.policyOptions(r.x.root, r.x.issuing, r.x.server)
	}
	if err == nil {
		err = r.x.ca.SetPolicy(opts)
	}
	if err != nil {
		problems := splitErrors(err)
		for _, p := range problems {
			r.log.Error("configuration reload refused; the policy in force stays", "source", source, "problem", p)
		}
		reason := fmt.Sprintf("reload (%s) refused, policy unchanged: %s", source, strings.Join(problems, "; "))
		if len(reason) > maxConfigReason {
			reason = reason[:maxConfigReason] + "..."
		}
		r.audit("reload refused", reason)
		return err
	}
	for _, w := range cfg.warnings {
		r.log.Warn("configuration", "warning", w)
	}
	for _, section := range restartSections(r.cfg, cfg) {
		r.log.Warn("configuration reloaded; this section changed and takes effect after a restart", "section", section)
	}
	policyCfg := *r.cfg
	policyCfg.Policy, policyCfg.Profiles, policyCfg.DefaultProfile, policyCfg.Manufacturers =
		cfg.Policy, cfg.Profiles, cfg.DefaultProfile, cfg.Manufacturers
	r.cfg = &policyCfg
	r.audit("reload accepted", fmt.Sprintf("reload (%s): %d profiles, %d manufacturers, default profile %s",
		source, len(cfg.Profiles), len(cfg.Manufacturers), cfg.DefaultProfile))
	closed := 0
	if r.srv != nil {
		closed = r.srv.RecheckSessions()
	}
	r.log.Info("configuration reloaded", "source", source, "profiles", len(cfg.Profiles),
		"manufacturers", len(cfg.Manufacturers), "sessions_closed", closed)
	return nil
}

// restartSections names the sections of next that differ from cur and that
// a reload does not apply.
func restartSections(cur, next *Config) []string {
	var out []string
	for _, s := range []struct {
		name string
		a, b any
	}{{"hsm", cur.HSM, next.HSM}, {"ca", cur.CA, next.CA}, {"store", cur.Store, next.Store},
		{"est", cur.EST, next.EST}, {"crl", cur.CRL, next.CRL}, {"keys", cur.Keys, next.Keys}} {
		if !reflect.DeepEqual(s.a, s.b) {
			out = append(out, s.name)
		}
	}
	return out
}

// audit appends a configuration record; a failure is logged.
func (r *running) audit(verdict, reason string) {
	if _, err := r.x.db.Append(store.AuditRecord{Event: store.EventConfig, Verdict: verdict, Reason: reason}); err != nil {
		r.log.Error("audit write failed", "event", "config", "err", err)
	}
}

// keepCRL writes a published CRL to crl.path unless a newer one is there.
func (r *running) keepCRL(c *ca.CRL, why string) error {
	r.mu.Lock()
	defer r.mu.Unlock()
	if r.lastWritten != nil && c.Number.Cmp(r.lastWritten) <= 0 {
		return nil
	}
	if err := writeCRL(r.cfg.path(r.cfg.CRL.Path), c.DER); err != nil {
		r.log.Error("CRL not written", "why", why, "err", err)
		return err
	}
	r.lastWritten = c.Number
	r.log.Info("CRL published", append([]any{"why", why}, crlLogValue(c)...)...)
	return nil
}

// publishCRL makes a new CRL (schedule, start) and keeps it.
func (r *running) publishCRL(why string) error {
	c, err := r.x.ca.PublishCRL()
	if err != nil {
		r.log.Error("CRL not published", "why", why, "err", err)
		return err
	}
	return r.keepCRL(c, why)
}

// revoke revokes a certificate (ca.Authority.Revoke: in force at once,
// audited, a new CRL), keeps the new CRL and closes the DTLS sessions of
// the revoked certificate before it returns.
func (r *running) revoke(serial string, reason int, unknown bool, who string) error {
	revoke := r.x.ca.Revoke
	if unknown {
		revoke = r.x.ca.RevokeUnknown
	}
	c, err := revoke(serial, reason, who)
	if c != nil {
		if werr := r.keepCRL(c, "revocation of "+serial); werr != nil {
			err = errors.Join(err, werr)
		}
	}
	if err != nil && c == nil {
		return err
	}
	closed := 0
	if r.srv != nil {
		closed = r.srv.RecheckSessions()
	}
	r.log.Info("certificate revoked", "serial", serial, "reason", ca.RevocationReasonName(reason), "by", who,
		"sessions_closed", closed)
	return err
}

// errConfigRefused is a reload refused for an invalid configuration; the
// policy in force stays.
var errConfigRefused = errors.New("configuration refused, the policy in force stays")

// registerPolicyAdmin adds the admin socket routes of the policy, approvals,
// revocation and CRLs to mux (the store's routes are adminHandler's). They
// answer with adminReply and adminFail like every route.
func registerPolicyAdmin(mux *http.ServeMux, r *running) {
	mux.HandleFunc("POST /v1/reload", func(w http.ResponseWriter, _ *http.Request) {
		if err := r.reload("admin socket"); err != nil {
			adminFail(w, fmt.Errorf("%w:\n%s", errConfigRefused, strings.Join(splitErrors(err), "\n")))
			return
		}
		adminReply(w, struct{}{})
	})
	mux.HandleFunc("POST /v1/revoke", func(w http.ResponseWriter, req *http.Request) {
		serial := req.URL.Query().Get("serial")
		reason, err := strconv.Atoi(req.URL.Query().Get("reason"))
		if err == nil {
			err = ca.CheckRevocationReason(reason)
		}
		if err != nil {
			adminFail(w, fmt.Errorf("%w: reason %q: %v", store.ErrInvalid, req.URL.Query().Get("reason"), err))
			return
		}
		err = r.revoke(serial, reason, req.URL.Query().Get("unknown_certificate") == "1", "operator:admin-socket")
		rev := revocationInForce(r.x.db, serial)
		if err != nil && (rev.Time.IsZero() || errors.Is(err, store.ErrAlreadyRevoked) || errors.Is(err, store.ErrHeadNotSigned)) {
			adminFail(w, err)
			return
		}
		resp := revokeResponse{Revocation: rev}
		if err != nil {
			resp.Error = err.Error() // in force; the CRL not published or not kept
		}
		adminReply(w, resp)
	})
	mux.HandleFunc("GET /v1/crl", func(w http.ResponseWriter, req *http.Request) {
		c, err := r.x.ca.CRL()
		if err != nil {
			adminFail(w, err)
			return
		}
		w.Header().Set("Content-Type", "application/pkix-crl")
		_, _ = w.Write(c.DER)
	})
	mux.HandleFunc("GET /v1/requests", func(w http.ResponseWriter, req *http.Request) {
		rs, err := r.x.db.Requests(store.RequestState(req.URL.Query().Get("state")))
		if err != nil {
			adminFail(w, err)
			return
		}
		adminReply(w, requestViews(rs))
	})
	mux.HandleFunc("POST /v1/requests/{id}/{decision}", func(w http.ResponseWriter, req *http.Request) {
		var d decisionRequest
		if err := json.NewDecoder(io.LimitReader(req.Body, 64<<10)).Decode(&d); err != nil {
			adminFail(w, fmt.Errorf("%w: bad request: %v", store.ErrInvalid, err))
			return
		}
		approve := req.PathValue("decision") == "approve"
		if !approve && req.PathValue("decision") != "deny" {
			adminFail(w, fmt.Errorf("%w: decision %q", store.ErrInvalid, req.PathValue("decision")))
			return
		}
		q, err := decideRequest(r.x.db, req.PathValue("id"), approve, d.Reason, d.Operator+" (admin socket)")
		if err != nil {
			adminFail(w, err)
			return
		}
		r.log.Info("request decided", "id", q.ID(), "state", q.State, "by", d.Operator)
		adminReply(w, newRequestView(q))
	})
}

// decisionRequest is the body of POST /v1/requests/{id}/approve|deny.
type decisionRequest struct {
	Reason   string `json:"reason"`
	Operator string `json:"operator"`
}
