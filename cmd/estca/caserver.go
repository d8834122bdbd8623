package main

import (
	"context"
	"crypto"
	"crypto/x509"
	"errors"
	"flag"
	"fmt"
	"net"
	"os"
	"path/filepath"
	"strings"
	"time"

	"github.com/estca/estca/ca"
	"github.com/estca/estca/hsm"
)

// serverNames are the --server-name and --server-ip flags of init, ca import
// and ca reissue-server: the names and addresses devices use to reach the
// EST server, carried by its DTLS certificate.
type serverNames struct {
	names, ips stringList
}

func serverNameFlags(fs *flag.FlagSet, s *serverNames) {
	fs.Var(&s.names, "server-name", "DNS `NAME` devices use for the EST server, carried by its certificate; repeatable, the first is the subject (default: this host's name; localhost is always included)")
	fs.Var(&s.ips, "server-ip", "`IP` address devices use for the EST server, carried by its certificate; repeatable (127.0.0.1 is always included)")
}

// given reports whether any name or address was given.
func (s *serverNames) given() bool { return len(s.names) > 0 || len(s.ips) > 0 }

// options checks the flags and returns them as ca.InitOptions fields; with
// no --server-name the host's name is used.
func (s *serverNames) options() (ca.InitOptions, error) {
	var o ca.InitOptions
	var errs []error
	for _, n := range s.names {
		if n == "" || strings.ContainsAny(n, " /:@") || net.ParseIP(n) != nil {
			errs = append(errs, fmt.Errorf("--server-name %q: want a DNS name (addresses go in --server-ip)", n))
		}
		o.ServerDNSNames = append(o.ServerDNSNames, strings.ToLower(n))
	}
	for _, a := range s.ips {
		ip := net.ParseIP(a)
		if ip == nil {
			errs = append(errs, fmt.Errorf("--server-ip %q: not an IP address", a))
			continue
		}
		if v4 := ip.To4(); v4 != nil {
			ip = v4
		}
		o.ServerIPs = append(o.ServerIPs, ip)
	}
	if len(o.ServerDNSNames) == 0 {
		if h, err := os.Hostname(); err == nil && h != "" {
			o.ServerDNSNames = []string{strings.ToLower(h)}
		}
	}
	return o, errors.Join(errs...)
}

func caReissueServerCommand() *command {
	var names serverNames
	var newKey bool
	var validity time.Duration
	return &command{
		name: "ca reissue-server", args: "[--server-name NAME]... [--server-ip IP]... [--new-key] [--validity DUR]",
		noArgs: true,
		summary: "Renew the DTLS server certificate (names, addresses, optionally a new key).\n\n" +
			"Signed by the issuing CA (which is not touched), for the server key in the token\n" +
			"(--new-key: a new key replaces it; the server must be stopped). Names\n" +
			"and addresses default to those of the current certificate. A running server keeps its\n" +
			"certificate until it is restarted. The reissue is recorded in the audit trail.",
		flags: func(fs *flag.FlagSet) {
			serverNameFlags(fs, &names)
			fs.BoolVar(&newKey, "new-key", false, "generate a new server key in the token (the old one is deleted); estca serve must be stopped")
			fs.DurationVar(&validity, "validity", ca.DefaultServerValidity, "validity `DUR` of the new certificate (never beyond the issuing CA's)")
		},
		run: func(ctx context.Context, a *app, fs *flag.FlagSet, args []string) error {
			if validity <= 0 {
				return usageErrorf("--validity must be positive")
			}
			o, err := names.options()
			if err != nil {
				return asUsage(err)
			}
			cfg, err := a.config()
			if err != nil {
				return err
			}
			return reissueServer(a, cfg, names.given(), o, newKey, validity)
		},
	}
}

// reissueServer renews the server certificate (see caReissueServerCommand).
func reissueServer(a *app, cfg *Config, given bool, o ca.InitOptions, newKey bool, validity time.Duration) error {
	issuing, err := readCert(cfg.path(cfg.CA.Issuing))
	if err != nil {
		return fmt.Errorf("issuing CA certificate: %w", err)
	}
	current, err := readCert(cfg.path(cfg.CA.ServerCert))
	if err != nil && !newKey {
		return fmt.Errorf("server certificate: %w (to start afresh: --new-key)", err)
	}
	if !given && current != nil {
		o.ServerDNSNames, o.ServerIPs = current.DNSNames, nil
		for _, ip := range current.IPAddresses {
			if !ip.IsLoopback() {
				o.ServerIPs = append(o.ServerIPs, ip)
			}
		}
	}
	running := serverRunning(cfg)
	if newKey && running {
		return errors.New("estca serve is running and signs its handshakes with the current server key: stop it first, or reissue without --new-key")
	}
	tok, err := openToken(cfg, nil)
	if err != nil {
		return err
	}
	defer tok.Close()
	issuingKey, err := tok.FindKey(cfg.CA.IssuingKey)
	if err != nil {
		return fmt.Errorf("issuing key %q: %w", cfg.CA.IssuingKey, err)
	}
	key, err := serverKey(tok, cfg.CA.ServerKey, current, newKey)
	if err != nil {
		return err
	}
	o.ServerValidity = validity
	cert, err := ca.ServerCertificate(key.Public(), issuing, ca.VerifySigner(issuingKey, issuing.PublicKey, nil), o)
	if err != nil {
		return err
	}
	if err := writeCertsAtomic(cfg.path(cfg.CA.ServerCert), cert, issuing); err != nil {
		return err
	}
	var ips []string
	for _, ip := range cert.IPAddresses {
		ips = append(ips, ip.String())
	}
	fmt.Fprintf(a.stdout, "server certificate reissued: serial %s, names %s, addresses %s, valid until %s%s\n  written to %s\n",
		cert.SerialNumber.Text(16), strings.Join(cert.DNSNames, " "), strings.Join(ips, " "),
		cert.NotAfter.UTC().Format(time.RFC3339), map[bool]string{true: ", new key"}[newKey], cfg.path(cfg.CA.ServerCert))
	if running {
		fmt.Fprintf(a.stdout, "  estca serve is running with the previous certificate: restart it to use this one (systemctl restart estca)\n")
	}
	note := fmt.Sprintf("DTLS server certificate reissued: serial %s, names %s, addresses %s, not after %s, new key %t",
		cert.SerialNumber.Text(16), strings.Join(cert.DNSNames, " "), strings.Join(ips, " "), cert.NotAfter.UTC().Format(time.RFC3339), newKey)
	if running {
		return newAdminClient(cfg.path(cfg.EST.AdminSocket)).Note("reissue-server", note)
	}
	signer, pub, err := auditSigner(cfg, tok, nil)
	if err != nil {
		return err
	}
	db, err := openStore(cfg, signer, pub)
	if err != nil {
		return fmt.Errorf("the certificate is written, but its audit record is not: %w", err)
	}
	defer db.Close()
	return noteIn(db, "reissue-server", note, "operator:cli")
}

// serverKey returns the server key for the new certificate: the token's
// (which must match the current certificate), or with newKey a new one
// under the same label, the old one deleted first (labels are unique).
func serverKey(tok *hsm.Token, label string, current *x509.Certificate, newKey bool) (crypto.Signer, error) {
	if newKey {
		if err := tok.DeleteKey(label); err != nil && !errors.Is(err, hsm.ErrKeyNotFound) {
			return nil, fmt.Errorf("deleting the old server key %q: %w", label, err)
		}
		k, err := tok.GenerateKey(label, hsm.ECDSAP256)
		if err != nil {
			return nil, fmt.Errorf("server key %q: %w", label, err)
		}
		return k, nil
	}
	k, err := tok.FindKey(label)
	if err != nil {
		return nil, fmt.Errorf("server key %q: %w (a lost key: reissue with --new-key)", label, err)
	}
	if pk, ok := k.Public().(interface{ Equal(crypto.PublicKey) bool }); !ok || !pk.Equal(current.PublicKey) {
		return nil, fmt.Errorf("server key %q does not match the server certificate %s: reissue with --new-key", label, current.Subject)
	}
	return k, nil
}

// writeCertsAtomic writes the PEM certificates to a temporary file next to
// path, syncs it and renames it over path.
func writeCertsAtomic(path string, certs ...*x509.Certificate) error {
	tmp, err := os.CreateTemp(filepath.Dir(path), "."+filepath.Base(path)+".new-*")
	if err != nil {
		return err
	}
	defer os.Remove(tmp.Name())
	tmp.Close()
	if err := writeCerts(tmp.Name(), certs...); err != nil {
		return err
	}
	f, err := os.Open(tmp.Name())
	if err != nil {
		return err
	}
	err = f.Sync()
	f.Close()
	if err != nil {
		return err
	}
	if err := os.Chmod(tmp.Name(), 0o644); err != nil {
		return err
	}
	return os.Rename(tmp.Name(), path)
}
