package main

import (
	"context"
	"errors"
	"flag"
	"fmt"
	"net/http"
)

func reloadCommand() *command {
	return &command{
		name: "reload", args: "",
		summary: "Make the running server re-read its configuration (as SIGHUP does): a valid one replaces the\n" +
			"policy, profiles and manufacturers (their certificate and CRL files re-read) without dropping\n" +
			"DTLS sessions; an invalid one is refused with every problem, the policy in force stays. Both are\n" +
			"audited. Without a running server, only checks the configuration. Exit 1 when it is refused.",
		run: func(ctx context.Context, a *app, fs *flag.FlagSet, args []string) error {
			if len(args) != 0 {
				fs.Usage()
				return &exitError{2, errors.New("no arguments expected")}
			}
			cfg, err := a.config()
			if err != nil {
				return &exitError{1, err}
			}
			if serverRunning(cfg) {
				var out map[string]bool
				if err := newAdminClient(cfg.path(cfg.EST.AdminSocket)).do(http.MethodPost, "/v1/reload", nil, &out); err != nil {
					return &exitError{1, err}
				}
				fmt.Fprintln(a.stdout, "configuration reloaded")
				return nil
			}
			root, issuing, server, err := caCertificates(cfg)
			if err != nil {
				return &exitError{1, err}
			}
			if _, err := cfg.policyOptions(root, issuing, server); err != nil {
				return &exitError{1, fmt.Errorf("config: %w", err)}
			}
			for _, w := range cfg.warnings {
				fmt.Fprintf(a.stderr, "estca reload: warning: %s\n", w)
			}
			fmt.Fprintln(a.stdout, "no estca serve is running; the configuration is valid")
			return nil
		},
	}
}
