package main

import (
	"context"
	"errors"
	"flag"
	"fmt"
	"os"

	"github.com/estca/estca/ca"
	"github.com/estca/estca/hsm"
)

func caImportCommand() *command {
	var certFile, rootFile, serverName string
	return &command{
		name: "ca import", args: "--cert ISSUING.pem --root ROOT.pem",
		summary: "Complete an external-root appliance (`estca init --external-root`): check that the\n" +
			"externally signed issuing CA certificate matches the issuing key in the token and chains\n" +
			"to ROOT, then install both and issue the DTLS server certificate.",
		flags: func(fs *flag.FlagSet) {
			fs.StringVar(&certFile, "cert", "", "issuing CA certificate `PEM` signed by the external root (required)")
			fs.StringVar(&rootFile, "root", "", "external root certificate `PEM` (required)")
			fs.StringVar(&serverName, "server-name", "", "DNS name of the EST server certificate (default: this host's name)")
		},
		run: func(ctx context.Context, a *app, fs *flag.FlagSet, args []string) error {
			if certFile == "" || rootFile == "" || len(args) > 0 {
				fs.Usage()
				return &exitError{2, errors.New("--cert and --root are required")}
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
			if serverName == "" {
				serverName, _ = os.Hostname()
			}
			kt, err := hsm.ParseKeyType(cfg.CA.KeyType)
			if err != nil {
				return err
			}
			tok, err := openToken(cfg, nil)
			if err != nil {
				return err
			}
			defer tok.Close()
			h, err := ca.ImportIssuing(tok, issuing, root, ca.InitOptions{KeyType: kt, ServerDNSNames: []string{serverName}})
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
