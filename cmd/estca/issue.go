package main

import (
	"context"
	"encoding/pem"
	"flag"
	"fmt"
	"os"

	"github.com/estca/estca/ca"
	"github.com/estca/estca/store"
)

func issueCommand() *command {
	var csrPath, profile, out string
	return &command{
		name: "issue", args: "--csr FILE [--profile P] [--out FILE]",
		summary: "Issue a certificate from a PKCS#10 CSR file (DER or PEM) as the local operator.\n\n" +
			"Profile and CSR rules apply; the issuance is stored and audited like any other.\n" +
			"Needs the store: stop `estca serve` first.",
		flags: func(fs *flag.FlagSet) {
			fs.StringVar(&csrPath, "csr", "", "PKCS#10 CSR `FILE`, DER or PEM (required)")
			fs.StringVar(&profile, "profile", "", "certificate profile `P` (default: the configured default profile)")
			fs.StringVar(&out, "out", "", "write the certificate PEM to `FILE` instead of stdout")
		},
		run: func(ctx context.Context, a *app, fs *flag.FlagSet, args []string) error {
			if csrPath == "" || len(args) > 0 {
				return usageErrorf("--csr is required")
			}
			csr, err := os.ReadFile(csrPath)
			if err != nil {
				return err
			}
			if blk, _ := pem.Decode(csr); blk != nil {
				csr = blk.Bytes
			}
			cfg, err := a.config()
			if err != nil {
				return err
			}
			if profile != "" && !hasProfile(cfg, profile) {
				return fmt.Errorf("unknown profile %q", profile)
			}
			x, err := openAuthority(cfg, authorityOptions{})
			if err != nil {
				return err
			}
			defer x.Close()
			name := operatorName()
			res, err := x.ca.Enroll(ctx, ca.Request{
				CSR:     csr,
				Profile: profile,
				Requester: ca.Requester{
					Kind:     ca.KindOperator,
					Identity: store.Identity{Fingerprint: name, Subject: name, Kind: string(ca.KindOperator)},
				},
			})
			if err != nil {
				return err
			}
			if _, err := x.db.SignHead(); err != nil {
				return err
			}
			b := pem.EncodeToMemory(&pem.Block{Type: "CERTIFICATE", Bytes: res.Certificate.Raw})
			if res.Existing {
				fmt.Fprintf(a.stderr, "estca issue: this CSR was issued before; returning serial %s again\n", res.Serial)
			}
			if out != "" {
				return os.WriteFile(out, b, 0o644)
			}
			_, err = a.stdout.Write(b)
			return err
		},
	}
}

func hasProfile(c *Config, name string) bool {
	for _, p := range c.Profiles {
		if p.Name == name {
			return true
		}
	}
	return false
}
