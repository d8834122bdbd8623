package main

import (
	"context"
	"crypto"
	"errors"
	"flag"
	"fmt"
	"net/url"
	"os/user"
	"strconv"
	"strings"
	"text/tabwriter"
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
		noArgs: true,
		summary: "List the enrollment requests waiting for an operator (profiles with approval: manual).\n\n" +
			"Each with the ID that `estca requests approve|deny` take. Through the running server's admin\n" +
			"socket, or from the store file.",
		flags: func(fs *flag.FlagSet) {
			fs.BoolVar(&asJSON, "json", false, "print a JSON array of requests (fields: see README, JSON output)")
			fs.BoolVar(&all, "all", false, "list every request the store keeps (pending, approved, denied, issued)")
		},
		run: func(ctx context.Context, a *app, fs *flag.FlagSet, args []string) error {
			state := store.StatePending
			if all {
				state = ""
			}
			return withRecords(a, false, func(r records) error {
				views, err := r.Requests(state)
				if err != nil {
					return err
				}
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
			})
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
		summary: summary + "\n\nID is the one `estca requests list` shows (or a longer prefix of the CSR's SHA-256). Through\n" +
			"the running server's admin socket, or offline with the HSM (it signs the audit head over the\n" +
			"decision). Exit 1 with a plain message when there is no such pending request.",
		flags: func(fs *flag.FlagSet) {
			fs.StringVar(&reason, "reason", "", "why, in `TEXT` kept in the audit record")
		},
		run: func(ctx context.Context, a *app, fs *flag.FlagSet, args []string) error {
			if len(args) != 1 {
				return usageErrorf("one ID is required, got %d arguments", len(args))
			}
			if !approve && reason == "" {
				return usageErrorf("--reason is required: say why the request is denied")
			}
			id := strings.ToLower(args[0])
			if len(id) < store.MinRequestID || strings.Trim(id, "0123456789abcdef") != "" {
				return usageErrorf("ID %q: want the ID `estca requests list` shows (at least %d hex digits)", args[0], store.MinRequestID)
			}
			cfg, err := a.config()
			if err != nil {
				return err
			}
			who := operatorName()
			var q requestView
			if serverRunning(cfg) {
				q, err = newAdminClient(cfg.path(cfg.EST.AdminSocket)).decide(id, approve, reason, who)
			} else {
				err = withAuditToken(a, func(cfg *Config, signer crypto.Signer, pub crypto.PublicKey) error {
					db, err := openStore(cfg, signer, pub)
					if err != nil {
						return err
					}
					defer db.Close()
					decided, err := decideRequest(db, id, approve, reason, who)
					if err != nil {
						return err
					}
					q = newRequestView(decided)
					_, err = db.SignHead()
					return err
				})
			}
			switch {
			case errors.Is(err, store.ErrNotFound):
				return fmt.Errorf("no pending request %s (see `estca requests list`; a decided request stays decided)", id)
			case errors.Is(err, store.ErrAmbiguous):
				return fmt.Errorf("%s names several pending requests: give more digits of the ID", id)
			}
			if err != nil {
				return err
			}
			fmt.Fprintf(a.stdout, "request %s %s (profile %s, requester %s)\n", q.ID, q.State, q.Profile, q.Requester)
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

// Requests lists the requests in state ("": all) through the running server.
func (c *adminClient) Requests(state store.RequestState) ([]requestView, error) {
	var out []requestView
	q := url.Values{}
	if state != "" {
		q.Set("state", string(state))
	}
	return out, c.do("GET", "/v1/requests", q, &out)
}

func (c *adminClient) decide(id string, approve bool, reason, who string) (requestView, error) {
	d := "deny"
	if approve {
		d = "approve"
	}
	var out requestView
	return out, c.doBody("POST", "/v1/requests/"+url.PathEscape(id)+"/"+d, decisionRequest{Reason: reason, Operator: who}, &out)
}
