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

	"github.com/estca/estca/ca/cms"
	"github.com/estca/estca/policy"
)

func policyCheckCommand() *command {
	var csrFile, requester, label, op, at string
	return &command{
		name: "policy check", args: "--csr FILE [--requester CERT] [--label L] [--op OP] [--at TIME]",
		noArgs: true,
		summary: "Decide a request offline with the configured policy, as the server would.\n\n" +
			"Prints the decision (issue, pending, deny), the requester as authenticated, every reason\n" +
			"(code, class, detail) and the exact certificate template. CERT is the requester's chain,\n" +
			"PEM, leaf first (an IDevID or an operational certificate); without it the request is the\n" +
			"local operator's (`estca issue`). Neither the HSM nor the store is used: revocations, rate\n" +
			"limits and pending requests are not looked up.\n" +
			"Exit 0 for issue or pending, 1 for deny.",
		flags: func(fs *flag.FlagSet) {
			fs.StringVar(&csrFile, "csr", "", "PKCS#10 CSR `FILE`, DER or PEM (required)")
			fs.StringVar(&requester, "requester", "", "requester certificate chain `CERT` (PEM, leaf first)")
			fs.StringVar(&label, "label", "", "profile path `L` (default: the default profile)")
			fs.StringVar(&op, "op", "sen", "EST operation `OP`: sen, sren, skg, skc")
			fs.StringVar(&at, "at", "", "decide at `TIME` (RFC 3339; default now)")
		},
		run: func(ctx context.Context, a *app, fs *flag.FlagSet, args []string) error {
			if csrFile == "" {
				return usageErrorf("--csr is required")
			}
			operation, ok := policy.ParseOperation(op)
			if !ok {
				return usageErrorf("--op %q: want sen, sren, skg or skc", op)
			}
			now := time.Now()
			if at != "" {
				t, err := time.Parse(time.RFC3339, at)
				if err != nil {
					return usageErrorf("--at %q: want an RFC 3339 time, e.g. 2026-01-02T15:04:05Z", at)
				}
				now = t
			}
			csr, err := os.ReadFile(csrFile)
			if err != nil {
				return err
			}
			if blk, _ := pem.Decode(csr); blk != nil {
				csr = blk.Bytes
			}
			var chain []*x509.Certificate
			if requester != "" {
				if chain, err = readCerts(requester); err != nil {
					return fmt.Errorf("--requester: %w", err)
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
			in := policy.CheckInput{CSR: csr, Chain: chain, Label: label, Operation: operation, Time: now}
			if _, perr := x509.ParseCertificateRequest(csr); perr == nil && (operation == policy.OpSkg || operation == policy.OpSkc) {
				// Whether the CSR asks for the generated key encrypted (its
				// attributes, as the server reads them: malformed ones
				// refuse the request, csr-malformed).
				kr, err := cms.ParseKeyRequest(csr)
				if err != nil {
					return &exitError{1, fmt.Errorf("the request would be denied (csr-malformed): key request attributes: %w", err)}
				}
				in.EncryptedKey = kr.Delivery != cms.DeliverPlain
			}
			rep := e.Check(in)
			fmt.Fprint(a.stdout, rep.String())
			if rep.Decision.Action == policy.ActionDeny {
				return &exitError{1, errors.New("the request would be denied")}
			}
			return nil
		},
	}
}
