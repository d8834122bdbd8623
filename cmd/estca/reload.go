package main

import (
	"context"
	"errors"
	"flag"
	"fmt"
	"net/http"
	"os"
	"path/filepath"

	"gopkg.in/yaml.v3"
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
			sock := ""
			if err != nil {
				// The running server reads the file itself: it names the
				// problems as it sees them, and audits the attempt.
				sock = adminSocketOf(a.configPath)
			} else {
				sock = cfg.path(cfg.EST.AdminSocket)
			}
			if socketAnswers(sock) {
				var out map[string]bool
				if err := newAdminClient(sock).do(http.MethodPost, "/v1/reload", nil, &out); err != nil {
					return &exitError{1, err}
				}
				fmt.Fprintln(a.stdout, "configuration reloaded")
				return nil
			}
			if err != nil {
				return &exitError{1, err}
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

// adminSocketOf reads only est.admin_socket from a configuration file that
// does not pass the strict decoding, to reach the server that runs with it.
func adminSocketOf(path string) string {
	var c struct {
		EST struct {
			AdminSocket string `yaml:"admin_socket"`
		} `yaml:"est"`
	}
	b, _ := os.ReadFile(path)
	_ = yaml.Unmarshal(b, &c)
	sock := c.EST.AdminSocket
	if sock == "" {
		sock = defaultAdminSocket
	}
	if !filepath.IsAbs(sock) {
		sock = filepath.Join(filepath.Dir(path), sock)
	}
	return sock
}
