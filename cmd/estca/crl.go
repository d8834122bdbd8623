package main

import (
	"bytes"
	"context"
	"crypto/x509"
	"encoding/pem"
	"errors"
	"flag"
	"fmt"
	"io"
	"math/big"
	"net/http"
	"os"
	"path/filepath"
	"strconv"
	"time"

	"github.com/estca/estca/ca"
)

func crlCommand() *command {
	var out string
	return &command{
		name: "crl", args: "[--out FILE]",
		noArgs: true,
		summary: "Print the CA's certificate revocation list (PEM), or write it to FILE (DER).\n\n" +
			"Through the running server's admin socket: its current CRL. Offline (server stopped): a new\n" +
			"CRL signed in the HSM, also written to crl.path.",
		flags: func(fs *flag.FlagSet) {
			fs.StringVar(&out, "out", "", "write the CRL to `FILE` in DER (default: PEM to stdout)")
		},
		run: func(ctx context.Context, a *app, fs *flag.FlagSet, args []string) error {
			cfg, err := a.config()
			if err != nil {
				return err
			}
			var der []byte
			if serverRunning(cfg) {
				if der, err = newAdminClient(cfg.path(cfg.EST.AdminSocket)).crl(); err != nil {
					return err
				}
			} else {
				x, err := openAuthority(cfg, authorityOptions{})
				if err != nil {
					return err
				}
				defer x.Close()
				c, err := x.ca.PublishCRL()
				if err != nil {
					return err
				}
				if err := writeCRL(cfg.path(cfg.CRL.Path), c.DER); err != nil {
					return err
				}
				der = c.DER
			}
			if out != "" {
				return os.WriteFile(out, der, 0o644)
			}
			return pem.Encode(a.stdout, &pem.Block{Type: "X509 CRL", Bytes: der})
		},
	}
}

// lastCRLNumber reads the cRLNumber of the CRL kept at path (nil when there
// is none yet), so that the next CRL continues after it.
func lastCRLNumber(path string) (*big.Int, error) {
	b, err := os.ReadFile(path)
	if errors.Is(err, os.ErrNotExist) {
		return nil, nil
	}
	if err != nil {
		return nil, fmt.Errorf("crl.path: %w", err)
	}
	crl, err := x509.ParseRevocationList(b)
	if err != nil {
		return nil, fmt.Errorf("crl.path %s: %w (move it away: a new CRL is made at start)", path, err)
	}
	return crl.Number, nil
}

// writeCRL replaces the CRL file atomically (temporary file, fsync, rename).
func writeCRL(path string, der []byte) error {
	if err := os.MkdirAll(filepath.Dir(path), 0o755); err != nil {
		return err
	}
	f, err := os.CreateTemp(filepath.Dir(path), "."+filepath.Base(path)+".*")
	if err != nil {
		return err
	}
	tmp := f.Name()
	defer os.Remove(tmp)
	_, err = f.Write(der)
	if err == nil {
		err = f.Sync()
	}
	if cerr := f.Close(); err == nil {
		err = cerr
	}
	if err == nil {
		err = os.Chmod(tmp, 0o644)
	}
	if err == nil {
		err = os.Rename(tmp, path)
	}
	if err != nil {
		return fmt.Errorf("crl.path: %w", err)
	}
	return nil
}

// crlHandler serves the authority's newest CRL in DER (RFC 5280 §4.2.1.13:
// the target of an HTTP distribution point, application/pkix-crl of RFC
// 2585), cacheable until its nextUpdate.
func crlHandler(x *ca.Authority) http.Handler {
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		if r.Method != http.MethodGet && r.Method != http.MethodHead {
			w.Header().Set("Allow", "GET, HEAD")
			http.Error(w, "method not allowed", http.StatusMethodNotAllowed)
			return
		}
		c, err := x.CRL()
		if err != nil {
			w.Header().Set("Retry-After", "10")
			http.Error(w, "no CRL yet", http.StatusServiceUnavailable)
			return
		}
		h := w.Header()
		h.Set("Content-Type", "application/pkix-crl")
		h.Set("Content-Length", strconv.Itoa(len(c.DER)))
		h.Set("Last-Modified", c.ThisUpdate.UTC().Format(http.TimeFormat))
		h.Set("Expires", c.NextUpdate.UTC().Format(http.TimeFormat))
		h.Set("ETag", `"`+c.Number.Text(16)+`"`)
		if r.Method == http.MethodHead {
			return
		}
		_, _ = w.Write(c.DER)
	})
}

// crl fetches the running server's newest CRL.
func (c *adminClient) crl() ([]byte, error) {
	var b bytes.Buffer
	if err := c.do("GET", "/v1/crl", nil, io.Writer(&b)); err != nil {
		return nil, err
	}
	if _, err := x509.ParseRevocationList(b.Bytes()); err != nil {
		return nil, fmt.Errorf("admin socket: CRL: %w", err)
	}
	return b.Bytes(), nil
}

// crlLogValue describes a published CRL for the log.
func crlLogValue(c *ca.CRL) []any {
	return []any{"number", c.Number.Text(10), "revoked", c.Revoked, "next_update", c.NextUpdate.Format(time.RFC3339)}
}
