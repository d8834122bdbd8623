package main

import (
	"context"
	"errors"
	"flag"
	"fmt"
	"net/url"
	"strconv"
	"strings"
	"time"

	"github.com/estca/estca/ca"
	"github.com/estca/estca/store"
)

func revokeCommand() *command {
	var reasonText string
	var unknown bool
	return &command{
		name: "revoke", args: "[--reason REASON] [--unknown-certificate] SERIAL",
		summary: "Revoke an issued certificate: in force at once, a new CRL is published.\n\n" +
			"A signed audit head covers the revocation at once. The certificate is refused at the next\n" +
			"handshake and on every request of its open sessions, which the running server closes at once. Through the running server's admin socket, or\n" +
			"offline (server stopped) with the HSM. REASON is an RFC 5280 CRLReason a device certificate\n" +
			"can have, by name or code. SERIAL in any common form (0A1B2C, 0a:1b:2c, serial=0A1B2C). Exit 1\n" +
			"with a plain message if there is no such certificate or it is already revoked.\n\n" +
			"--unknown-certificate revokes a serial the store does not hold: a certificate issued after the\n" +
			"backup a restore --accept-loss put back (such certificates are refused at the handshake\n" +
			"anyway); the CRL then lists it for relying parties. The audit record is flagged\n" +
			"unknown-certificate; a serial the store holds is refused.",
		flags: func(fs *flag.FlagSet) {
			fs.StringVar(&reasonText, "reason", "unspecified", "RFC 5280 CRLReason `REASON`, by name or code: "+leafReasonList())
			fs.BoolVar(&unknown, "unknown-certificate", false, "revoke a serial the store does not hold (issued after a restored backup), for the CRL")
		},
		run: func(ctx context.Context, a *app, fs *flag.FlagSet, args []string) error {
			reason, err := ca.ParseRevocationReason(reasonText)
			if err != nil {
				return asUsage(fmt.Errorf("--reason: %w", err))
			}
			serial, err := serialArg(args)
			if err != nil {
				return err
			}
			cfg, err := a.config()
			if err != nil {
				return err
			}
			var rev revocationView
			if serverRunning(cfg) {
				rev, err = newAdminClient(cfg.path(cfg.EST.AdminSocket)).Revoke(serial, reason, unknown)
			} else {
				rev, err = revokeOffline(cfg, serial, reason, unknown)
			}
			switch {
			case errors.Is(err, store.ErrNotFound):
				return fmt.Errorf("no certificate with serial %s (one issued after a backup restored with --accept-loss: add --unknown-certificate)", serial)
			case errors.Is(err, store.ErrCertificateKnown):
				return fmt.Errorf("certificate %s is in the store: revoke it without --unknown-certificate", serial)
			case errors.Is(err, store.ErrAlreadyRevoked):
				return alreadyRevoked(a, serial)
			case errors.Is(err, store.ErrHeadNotSigned):
				fmt.Fprintf(a.stdout, "revoked %s (%s); in force now\n", serial, ca.RevocationReasonName(reason))
				return fmt.Errorf("the audit head over the revocation could not be signed yet (the server signs it at its next interval): %w", err)
			case err != nil && rev.Time.IsZero():
				return err
			case err != nil:
				// In force, but the new CRL was not published or not kept.
				fmt.Fprintf(a.stdout, "revoked %s (%s) at %s\n", serial, rev.Reason, rev.Time.Format(time.RFC3339))
				return fmt.Errorf("the revocation is in force, the CRL not updated: %w", err)
			}
			fmt.Fprintf(a.stdout, "revoked %s (%s) at %s; CRL updated\n", serial, rev.Reason, rev.Time.Format(time.RFC3339))
			return nil
		},
	}
}

// leafReasonList names the CRLReasons a device certificate can be revoked
// for, with their codes: "unspecified (0), keyCompromise (1), ...".
func leafReasonList() string {
	var names []string
	for _, c := range ca.LeafRevocationReasons() {
		names = append(names, fmt.Sprintf("%s (%d)", ca.RevocationReasonName(c), c))
	}
	return strings.Join(names, ", ")
}

// revokeOffline revokes with the appliance stopped: the store (signed head
// over the revocation) and a new CRL, both with the HSM. It returns the
// revocation in force (zero when none is) and what went wrong.
func revokeOffline(cfg *Config, serial string, reason int, unknown bool) (revocationView, error) {
	x, err := openAuthority(cfg, authorityOptions{})
	if err != nil {
		return revocationView{}, err
	}
	defer x.Close()
	revoke := x.ca.Revoke
	if unknown {
		revoke = x.ca.RevokeUnknown
	}
	c, err := revoke(serial, reason, operatorName())
	if c != nil {
		err = errors.Join(err, writeCRL(cfg.path(cfg.CRL.Path), c.DER))
	}
	return revocationInForce(x.db, serial), err
}

// revocationInForce is the revocation of serial in db, zero when there is
// none.
func revocationInForce(db *store.DB, serial string) revocationView {
	rev, err := db.Revocation(serial)
	if err != nil {
		return revocationView{}
	}
	return *newRevocationView(rev)
}

// alreadyRevoked is the message for a second revocation of serial, with the
// reason and time of the first.
func alreadyRevoked(a *app, serial string) error {
	var v certView
	err := withRecords(a, false, func(r records) (err error) {
		v, err = r.Certificate(serial)
		return err
	})
	if err != nil || v.Revocation == nil {
		return fmt.Errorf("certificate %s is already revoked", serial)
	}
	return fmt.Errorf("certificate %s is already revoked (%s, %s)", serial, v.Revocation.Reason, v.Revocation.Time.Format(time.RFC3339))
}

// Revoke revokes through the running server (running.revoke): the
// revocation in force and what went wrong (errors match the store's
// sentinels, see adminErrors).
func (c *adminClient) Revoke(serial string, reason int, unknown bool) (revocationView, error) {
	var out revokeResponse
	q := url.Values{"serial": {serial}, "reason": {strconv.Itoa(reason)}}
	if unknown {
		q.Set("unknown_certificate", "1")
	}
	err := c.do("POST", "/v1/revoke", q, &out)
	if err == nil && out.Error != "" {
		err = errors.New(out.Error)
	}
	return out.Revocation, err
}

// revokeResponse answers POST /v1/revoke when the revocation is in force:
// the revocation, and Error when the CRL could not be published or kept.
type revokeResponse struct {
	Revocation revocationView `json:"revocation"`
	Error      string         `json:"error,omitempty"`
}
