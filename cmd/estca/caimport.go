package main

import (
	"context"
	"flag"
	"fmt"

	"github.com/estca/estca/ca"
	"github.com/estca/estca/hsm"
)

func caImportCommand() *command {
	var certFile, rootFile string
	var names serverNames
	return &command{
		name: "ca import", args: "--cert ISSUING.pem --root ROOT.pem [--server-name NAME]... [--server-ip IP]...",
		noArgs: true,
		summary: "Complete an external-root appliance with its externally signed issuing CA.\n\n" +
			"After `estca init --external-root`: checks that the certificate matches the issuing key in\n" +
			"the token and chains to ROOT, then installs both and issues the DTLS server certificate.",
		flags: func(fs *flag.FlagSet) {
			fs.StringVar(&certFile, "cert", "", "issuing CA certificate `PEM` signed by the external root (required)")
			fs.StringVar(&rootFile, "root", "", "external root certificate `PEM` (required)")
			serverNameFlags(fs, &names)
		},
		run: func(ctx context.Context, a *app, fs *flag.FlagSet, args []string) error {
			if certFile == "" || rootFile == "" {
				return usageErrorf("--cert and --root are required")
			}
			o, err := names.options()
			if err != nil {
				return asUsage(err)
			}
			cfg, err := a.config()
			if err != nil {
				return err
			}
			issuing, err := readCert(certFile)
			if err != nil {
				return err
			}
			root, err := readCert(rootFile)
			if err != nil {
				return err
			}
			if o.KeyType, err = hsm.ParseKeyType(cfg.CA.KeyType); err != nil {
				return err
			}
			tok, err := openToken(cfg, nil)
			if err != nil {
				return err
			}
			defer tok.Close()
			h, err := ca.ImportIssuing(tok, issuing, root, o)
			if err != nil {
				return err
			}
			if err := writeCerts(cfg.path(cfg.CA.Root), h.Root); err != nil {
				return err
			}
			if err := writeCerts(cfg.path(cfg.CA.Issuing), h.Issuing); err != nil {
				return err
			}
			if err := writeCerts(cfg.path(cfg.CA.ServerCert), h.Server, h.Issuing); err != nil {
				return err
			}
			if _, err := issueKeySigner(cfg, tok, nil, "ca import"); err != nil {
				return err
			}
			fmt.Fprintf(a.stdout, "imported issuing CA %s (root %s); server and key-package signer certificates issued\n", h.Issuing.Subject, h.Root.Subject)
			return nil
		},
	}
}
