package main

import (
	"context"
	"crypto/x509"
	"encoding/pem"
	"errors"
	"flag"
	"fmt"
	"os"
	"time"

	"github.com/estca/estca/policy"
)

func policyCheckCommand() *command {
	var csrFile, requester, label, op, at string
	return &command{
		name: "policy check", args: "--csr FILE [--requester CERT] [--label L] [--op sen|sren|skg|skc] [--at TIME]",
		summary: "Decide a request offline with the configured policy, as the server would: prints the decision\n" +
			"(issue, pending, deny), the requester as authenticated, every reason (code, class, detail) and the\n" +
			"exact certificate template. CERT is the requester's chain, PEM, leaf first (an IDevID or an\n" +
			"operational certificate); without it the request is the local operator's (`estca issue`). Neither\n" +
			"the HSM nor the store is used: revocations, rate limits and pending requests are not looked up.\n" +
			"Exit 0 for issue or pending, 1 for deny.",
		flags: func(fs *flag.FlagSet) {
			fs.StringVar(&csrFile, "csr", "", "PKCS#10 CSR `FILE`, DER or PEM (required)")
			fs.StringVar(&requester, "requester", "", "requester certificate chain `CERT` (PEM, leaf first)")
			fs.StringVar(&label, "label", "", "profile path `L` (default: the default profile)")
			fs.StringVar(&op, "op", "sen", "EST operation: sen, sren, skg, skc")
			fs.StringVar(&at, "at", "", "decide at `TIME` (RFC 3339; default now)")
		},
		run: func(ctx context.Context, a *app, fs *flag.FlagSet, args []string) error {
			if csrFile == "" || len(args) != 0 {
				fs.Usage()
				return &exitError{2, errors.New("--csr is required")}
			}
			operation, ok := policy.ParseOperation(op)
			if !ok {
				return &exitError{2, fmt.Errorf("--op %q: want sen, sren, skg or skc", op)}
			}
			now := time.Now()
			if at != "" {
				t, err := time.Parse(time.RFC3339, at)
				if err != nil {
					return &exitError{2, fmt.Errorf("--at: %w", err)}
				}
				now = t
			}
			csr, err := os.ReadFile(csrFile)
			if err != nil {
				return &exitError{2, err}
			}
			if blk, _ := pem.Decode(csr); blk != nil {
				csr = blk.Bytes
			}
			var chain []*x509.Certificate
			if requester != "" {
				if chain, err = readCerts(requester); err != nil {
					return &exitError{2, fmt.Errorf("--requester: %w", err)}
				}
			}
			cfg, err := a.config()
			if err != nil {
				return err
			}
			root, issuing, server, err := caCertificates(cfg)
			if err != nil {
				return err
			}
			o, err := cfg.policyOptions(root, issuing, server)
			if err != nil {
				return fmt.Errorf("config: %w", err)
			}
			e, err := policy.New(o)
			if err != nil {
				return fmt.Errorf("config: %w", err)
			}
			rep := e.Check(policy.CheckInput{CSR: csr, Chain: chain, Label: label, Operation: operation, Time: now})
			fmt.Fprint(a.stdout, rep.String())
			if rep.Decision.Action == policy.ActionDeny {
				return &exitError{1, errors.New("the request would be denied")}
			}
			return nil
		},
	}
}
