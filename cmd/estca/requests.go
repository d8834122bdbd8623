package main

import (
	"context"
	"crypto"
	"crypto/x509"
	"errors"
	"flag"
	"fmt"
	"net/url"
	"os/user"
	"strconv"
	"text/tabwriter"
	"time"
	"unicode"

	"github.com/estca/estca/store"
)

// Manual approval (profiles with approval: manual): a device's request is
// kept pending and answered 5.03 with Max-Age; an operator approves or denies
// it here, through the running server's admin socket or, server stopped, in
// the store (the HSM signs the audit head over the decision). The device's
// next identical retry then gets its certificate (issued once) or 4.03.

func requestsListCommand() *command {
	var asJSON, all bool
	return &command{
		name: "requests list", args: "[--all] [--json]",
		summary: "List the enrollment requests waiting for an operator (profiles with approval: manual),\n" +
			"with the ID that `estca requests approve|deny` take.",
		flags: func(fs *flag.FlagSet) {
			fs.BoolVar(&asJSON, "json", false, "print JSON")
			fs.BoolVar(&all, "all", false, "list every request the store keeps (pending, approved, denied, issued)")
		},
		run: func(ctx context.Context, a *app, fs *flag.FlagSet, args []string) error {
			if len(args) != 0 {
				fs.Usage()
				return &exitError{2, errors.New("no arguments expected")}
			}
			state := store.StatePending
			if all {
				state = ""
			}
			cfg, err := a.config()
			if err != nil {
				return err
			}
			var rs []store.Request
			if serverRunning(cfg) {
				rs, err = newAdminClient(cfg.path(cfg.EST.AdminSocket)).requests(state)
			} else {
				var db *store.DB
				if db, err = openStore(cfg, nil, nil); err != nil {
					return err
				}
				rs, err = db.Requests(state)
				db.Close()
			}
			if err != nil {
				return err
			}
			views := requestViews(rs)
			if asJSON {
				return printJSON(a, views)
			}
			tw := tabwriter.NewWriter(a.stdout, 0, 4, 2, ' ', 0)
			fmt.Fprintln(tw, "ID\tSTATE\tPROFILE\tREQUESTER\tCSR SUBJECT\tCREATED\tREASON")
			for _, v := range views {
				fmt.Fprintf(tw, "%s\t%s\t%s\t%s\t%s\t%s\t%s\n", v.ID, v.State, dash(v.Profile), dash(v.Requester),
					dash(v.CSRSubject), v.Created, dash(v.Reason))
			}
			return tw.Flush()
		},
	}
}

func requestsDecideCommand(approve bool) *command {
	var reason string
	name, summary := "requests deny", "Deny a pending request (--reason is required); the device's next retry gets 4.03."
	if approve {
		name, summary = "requests approve", "Approve a pending request; the device's next identical retry gets its certificate."
	}
	return &command{
		name: name, args: "[--reason TEXT] ID",
		summary: summary + "\nID is the one `estca requests list` shows (or a longer prefix of the CSR's SHA-256).",
		flags: func(fs *flag.FlagSet) {
			fs.StringVar(&reason, "reason", "", "why (kept in the audit record)")
		},
		run: func(ctx context.Context, a *app, fs *flag.FlagSet, args []string) error {
			if len(args) != 1 || (!approve && reason == "") {
				fs.Usage()
				return &exitError{2, errors.New("one ID is required, and deny needs --reason")}
			}
			cfg, err := a.config()
			if err != nil {
				return err
			}
			who := operatorName()
			var q store.Request
			if serverRunning(cfg) {
				q, err = newAdminClient(cfg.path(cfg.EST.AdminSocket)).decide(args[0], approve, reason, who)
			} else {
				err = withAuditToken(a, func(cfg *Config, signer crypto.Signer, pub crypto.PublicKey) error {
					db, err := openStore(cfg, signer, pub)
					if err != nil {
						return err
					}
					defer db.Close()
					if q, err = decideRequest(db, args[0], approve, reason, who); err != nil {
						return err
					}
					_, err = db.SignHead()
					return err
				})
			}
			if errors.Is(err, store.ErrNotFound) {
				return &exitError{1, fmt.Errorf("no pending request %s (see `estca requests list`)", args[0])}
			}
			if err != nil {
				return err
			}
			fmt.Fprintf(a.stdout, "request %s %s (profile %s, requester %s)\n", q.ID(), q.State, q.Profile, printable(q.Requester.Subject))
			return nil
		},
	}
}

// operatorName names the operator in audit records.
func operatorName() string {
	if u, err := user.Current(); err == nil {
		return "operator:" + u.Username
	}
	return "operator"
}

// decideRequest approves or denies the pending request id (an audit
// record) and returns it as decided.
func decideRequest(db *store.DB, id string, approve bool, reason, who string) (store.Request, error) {
	q, err := db.FindPending(id)
	if err != nil {
		return store.Request{}, err
	}
	verdict := "denied"
	if approve {
		verdict = "approved"
	}
	text := verdict + " by " + who
	if reason != "" {
		text += ": " + reason
	}
	if _, err := db.Decide(q.Requester.Fingerprint, q.CSRDigest, approve, reason,
		store.AuditRecord{Verdict: verdict, Reason: text}); err != nil {
		return store.Request{}, err
	}
	return db.Request(q.Requester.Fingerprint, q.CSRDigest)
}

// requestView is a request as the CLI shows it.
type requestView struct {
	ID         string `json:"id"`
	State      string `json:"state"`
	Profile    string `json:"profile"`
	Requester  string `json:"requester"`
	Anchor     string `json:"anchor,omitempty"`
	Identity   string `json:"identity,omitempty"`
	CSRSubject string `json:"csr_subject,omitempty"`
	CSRDigest  string `json:"csr_sha256"`
	Serial     string `json:"serial,omitempty"`
	Reason     string `json:"reason,omitempty"`
	Created    string `json:"created"`
	Decided    string `json:"decided,omitempty"`
}

func requestViews(rs []store.Request) []requestView {
	out := make([]requestView, 0, len(rs))
	for _, r := range rs {
		v := requestView{ID: r.ID(), State: string(r.State), Profile: r.Profile, Requester: printable(r.Requester.Subject),
			Anchor: r.Requester.Anchor, Identity: printable(r.Identity), CSRDigest: r.CSRDigest, Serial: r.Serial,
			Reason: printable(r.Reason), Created: r.Created.UTC().Format(time.RFC3339)}
		if !r.Decided.IsZero() {
			v.Decided = r.Decided.UTC().Format(time.RFC3339)
		}
		if csr, err := x509.ParseCertificateRequest(r.CSR); err == nil {
			v.CSRSubject = printable(csr.Subject.String())
		}
		out = append(out, v)
	}
	return out
}

// printable bounds text that came from a device and escapes what is not
// printable, so that it cannot mess with a terminal.
func printable(s string) string {
	const max = 256
	if len(s) > max {
		s = s[:max] + "..."
	}
	for _, r := range s {
		if !unicode.IsPrint(r) {
			q := strconv.QuoteToASCII(s)
			return q[1 : len(q)-1]
		}
	}
	return s
}

func (c *adminClient) requests(state store.RequestState) ([]store.Request, error) {
	var out []store.Request
	q := url.Values{}
	if state != "" {
		q.Set("state", string(state))
	}
	return out, c.do("GET", "/v1/requests", q, &out)
}

func (c *adminClient) decide(id string, approve bool, reason, who string) (store.Request, error) {
	d := "deny"
	if approve {
		d = "approve"
	}
	var out store.Request
	return out, c.doBody("POST", "/v1/requests/"+url.PathEscape(id)+"/"+d, decisionRequest{Reason: reason, Operator: who}, &out)
}
