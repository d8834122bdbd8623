package main

import (
	"context"
	"errors"
	"flag"
	"fmt"
	"strings"

	"github.com/estca/estca/ca"
	"github.com/estca/estca/store"
)

func revokeCommand() *command {
	var reasonText string
	return &command{
		name: "revoke", args: "[--reason R] SERIAL",
		summary: "Revoke an issued certificate: refused at the next handshake and on every request of its open\n" +
			"sessions, which the running server closes at once; a new CRL is published. R is an RFC 5280\n" +
			"CRLReason a device certificate can have, by name or number: unspecified (0), keyCompromise (1),\n" +
			"affiliationChanged (3), superseded (4), cessationOfOperation (5), privilegeWithdrawn (9).",
		flags: func(fs *flag.FlagSet) {
			fs.StringVar(&reasonText, "reason", "unspecified", "CRLReason `R` (name or number)")
		},
		run: func(ctx context.Context, a *app, fs *flag.FlagSet, args []string) error {
			if len(args) != 1 {
				fs.Usage()
				return &exitError{2, errors.New("one SERIAL is required")}
			}
			reason, err := ca.ParseRevocationReason(reasonText)
			if err != nil {
				return &exitError{2, fmt.Errorf("--reason: %w", err)}
			}
			serial := strings.ToLower(strings.TrimPrefix(args[0], "0x"))
			cfg, err := a.config()
			if err != nil {
				return err
			}
			if serverRunning(cfg) {
				err = newAdminClient(cfg.path(cfg.EST.AdminSocket)).Revoke(serial, reason)
			} else {
				err = revokeOffline(cfg, serial, reason)
			}
			if errors.Is(err, store.ErrNotFound) {
				return fmt.Errorf("no certificate with serial %s", args[0])
			}
			if err != nil {
				return err
			}
			fmt.Fprintf(a.stdout, "revoked %s (%s); CRL updated\n", serial, ca.RevocationReasonName(reason))
			return nil
		},
	}
}

// revokeOffline revokes with the appliance stopped: the store (signed head
// over the revocation) and a new CRL, both with the HSM.
func revokeOffline(cfg *Config, serial string, reason int) error {
	x, err := openAuthority(cfg, authorityOptions{})
	if err != nil {
		return err
	}
	defer x.Close()
	c, err := x.ca.Revoke(serial, reason, operatorName())
	if c != nil {
		err = errors.Join(err, writeCRL(cfg.path(cfg.CRL.Path), c.DER))
	}
	return err
}
