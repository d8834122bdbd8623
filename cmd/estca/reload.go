package main

import (
	"context"
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
		noArgs: true,
		summary: "Make the running server re-read its configuration, as SIGHUP does.\n\n" +
			"A valid configuration replaces the policy, profiles and manufacturers (their certificate and\n" +
			"CRL files re-read) without dropping DTLS sessions; sessions the new policy refuses are closed.\n" +
			"An invalid one is refused with every problem, and the policy in force stays. Both are\n" +
			"audited. Other sections take effect at the next start (a warning names them). Without a\n" +
			"running server, only checks the configuration. Exit 1 when it is refused.",
		run: func(ctx context.Context, a *app, fs *flag.FlagSet, args []string) error {
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
				var out struct{}
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
