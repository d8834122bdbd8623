package main

import (
	"context"
	"crypto/x509"
	"encoding/hex"
	"encoding/json"
	"encoding/pem"
	"errors"
	"flag"
	"fmt"
	"os"
	"path/filepath"
	"strings"
	"text/tabwriter"
	"time"

	"github.com/estca/estca/store"
)

func certsListCommand() *command {
	var asJSON bool
	var limit int
	var after string
	return &command{
		name: "certs list", args: "[--json] [--limit N] [--after SERIAL]",
		summary: "List issued certificates (through the running server's admin socket, or the store file).",
		flags: func(fs *flag.FlagSet) {
			fs.BoolVar(&asJSON, "json", false, "print JSON")
			fs.IntVar(&limit, "limit", 0, "at most `N` certificates (0: all)")
			fs.StringVar(&after, "after", "", "start after this `SERIAL` (paging)")
		},
		run: func(ctx context.Context, a *app, fs *flag.FlagSet, args []string) error {
			return withRecords(a, false, func(r records) error {
				cs, err := r.Certificates(store.CertFilter{Limit: limit, After: after})
				if err != nil {
					return err
				}
				if asJSON {
					return printJSON(a, certViews(cs))
				}
				tw := tabwriter.NewWriter(a.stdout, 0, 4, 2, ' ', 0)
				fmt.Fprintln(tw, "SERIAL\tSUBJECT\tPROFILE\tNOT AFTER\tISSUED")
				for _, c := range cs {
					fmt.Fprintf(tw, "%s\t%s\t%s\t%s\t%s\n", c.Serial, c.Subject, c.Profile,
						c.NotAfter.UTC().Format(time.RFC3339), c.IssuedAt.UTC().Format(time.RFC3339))
				}
				return tw.Flush()
			})
		},
	}
}

func certsShowCommand() *command {
	var asJSON bool
	return &command{
		name: "certs show", args: "[--json] SERIAL",
		summary: "Show one issued certificate (PEM and details).",
		flags:   func(fs *flag.FlagSet) { fs.BoolVar(&asJSON, "json", false, "print JSON") },
		run: func(ctx context.Context, a *app, fs *flag.FlagSet, args []string) error {
			if len(args) != 1 {
				fs.Usage()
				return &exitError{2, errors.New("one SERIAL is required")}
			}
			return withRecords(a, false, func(r records) error {
				c, err := r.Certificate(strings.ToLower(strings.TrimPrefix(args[0], "0x")))
				if errors.Is(err, store.ErrNotFound) {
					return fmt.Errorf("no certificate with serial %s", args[0])
				}
				if err != nil {
					return err
				}
				if asJSON {
					return printJSON(a, certViews([]store.Certificate{c})[0])
				}
				v := certViews([]store.Certificate{c})[0]
				fmt.Fprintf(a.stdout, "serial     %s\nsubject    %s\nprofile    %s\nnot before %s\nnot after  %s\nissued     %s\nrequester  %s\nski        %s\ncsr sha256 %s\n",
					v.Serial, v.Subject, v.Profile, v.NotBefore, v.NotAfter, v.IssuedAt, v.Requester, v.SKI, v.CSRDigest)
				return pem.Encode(a.stdout, &pem.Block{Type: "CERTIFICATE", Bytes: c.DER})
			})
		},
	}
}

type certView struct {
	Serial    string `json:"serial"`
	Subject   string `json:"subject"`
	Profile   string `json:"profile"`
	NotBefore string `json:"not_before"`
	NotAfter  string `json:"not_after"`
	IssuedAt  string `json:"issued_at"`
	Requester string `json:"requester"`
	SKI       string `json:"ski"`
	CSRDigest string `json:"csr_sha256"`
	PEM       string `json:"pem"`
}

func certViews(cs []store.Certificate) []certView {
	out := make([]certView, len(cs))
	for i, c := range cs {
		out[i] = certView{
			Serial: c.Serial, Subject: c.Subject, Profile: c.Profile,
			NotBefore: c.NotBefore.UTC().Format(time.RFC3339), NotAfter: c.NotAfter.UTC().Format(time.RFC3339),
			IssuedAt: c.IssuedAt.UTC().Format(time.RFC3339Nano), Requester: c.Requester,
			SKI: hex.EncodeToString(c.SKI), CSRDigest: c.CSRDigest,
			PEM: string(pem.EncodeToMemory(&pem.Block{Type: "CERTIFICATE", Bytes: c.DER})),
		}
	}
	return out
}

func auditListCommand() *command {
	var asJSON bool
	var since, serial, requester string
	var limit int
	return &command{
		name: "audit list", args: "[--json] [--since T] [--serial S] [--requester R] [--limit N]",
		summary: "List audit records (every decision, issuance, revocation and start/stop).",
		flags: func(fs *flag.FlagSet) {
			fs.BoolVar(&asJSON, "json", false, "print JSON")
			fs.StringVar(&since, "since", "", "only records at or after `T` (RFC 3339 time, or a duration like 1h meaning that long ago)")
			fs.StringVar(&serial, "serial", "", "only records about certificate `S`")
			fs.StringVar(&requester, "requester", "", "only records of requester `R` (fingerprint, or part of its subject)")
			fs.IntVar(&limit, "limit", 0, "at most `N` records (0: all)")
		},
		run: func(ctx context.Context, a *app, fs *flag.FlagSet, args []string) error {
			f := store.AuditFilter{Serial: strings.ToLower(serial), Requester: requester, Limit: limit}
			if since != "" {
				t, err := parseSince(since, time.Now())
				if err != nil {
					return &exitError{2, err}
				}
				f.Since = t
			}
			return withRecords(a, false, func(r records) error {
				recs, err := r.AuditRecords(f)
				if err != nil {
					return err
				}
				if asJSON {
					if recs == nil {
						recs = []store.AuditRecord{}
					}
					return printJSON(a, recs)
				}
				tw := tabwriter.NewWriter(a.stdout, 0, 4, 2, ' ', 0)
				fmt.Fprintln(tw, "SEQ\tTIME\tEVENT\tREQUESTER\tSERIAL\tPROFILE\tVERDICT\tREASON\tFLAGS")
				for _, r := range recs {
					who := r.Requester.Subject
					if who == "" {
						who = "-"
					}
					fmt.Fprintf(tw, "%d\t%s\t%s\t%s\t%s\t%s\t%s\t%s\t%s\n", r.Seq, r.Time.UTC().Format(time.RFC3339),
						r.Event, who, dash(r.Serial), dash(r.Profile), dash(r.Verdict), dash(r.Reason), dash(strings.Join(r.Flags, ",")))
				}
				return tw.Flush()
			})
		},
	}
}

func dash(s string) string {
	if s == "" {
		return "-"
	}
	return s
}

func parseSince(s string, now time.Time) (time.Time, error) {
	if t, err := time.Parse(time.RFC3339, s); err == nil {
		return t, nil
	}
	if d, err := time.ParseDuration(s); err == nil && d >= 0 {
		return now.Add(-d), nil
	}
	return time.Time{}, fmt.Errorf("--since %q: want an RFC 3339 time (2026-01-02T15:04:05Z) or a duration (90m)", s)
}

func auditVerifyCommand() *command {
	return &command{
		name: "audit verify", args: "",
		summary: "Verify the whole audit hash chain and its HSM-signed heads.\n" +
			"Exit 0 when everything verifies; exit 1 naming the first bad record otherwise.",
		run: func(ctx context.Context, a *app, fs *flag.FlagSet, args []string) error {
			return withRecords(a, false, func(r records) error {
				rep, err := r.Verify()
				var ve *store.VerifyError
				if errors.As(err, &ve) {
					return &exitError{1, fmt.Errorf("audit chain broken at record %d: %s", ve.Seq, ve.Reason)}
				}
				if err != nil {
					return err
				}
				if rep.Records == 0 || rep.Heads == 0 {
					// estca init writes a record and signs the head: a log
					// without either was emptied or is not this appliance's.
					return &exitError{1, fmt.Errorf("audit log has %d records and %d signed heads: an initialised appliance always has both", rep.Records, rep.Heads)}
				}
				fmt.Fprintf(a.stdout, "audit chain ok: %d records, %d signed heads, last record %d\n", rep.Records, rep.Heads, rep.LastSeq)
				return nil
			})
		},
	}
}

func revokeCommand() *command {
	var reason int
	return &command{
		name: "revoke", args: "[--reason N] SERIAL",
		summary: "Revoke an issued certificate (RFC 5280 reason code); the device can no longer authenticate with it.",
		flags: func(fs *flag.FlagSet) {
			fs.IntVar(&reason, "reason", 0, "RFC 5280 CRLReason `N` (0 unspecified, 1 keyCompromise, 4 superseded, 5 cessationOfOperation)")
		},
		run: func(ctx context.Context, a *app, fs *flag.FlagSet, args []string) error {
			if len(args) != 1 {
				fs.Usage()
				return &exitError{2, errors.New("one SERIAL is required")}
			}
			if reason < 0 || reason > 10 || reason == 7 {
				return &exitError{2, fmt.Errorf("--reason %d is not an RFC 5280 CRLReason", reason)}
			}
			serial := strings.ToLower(strings.TrimPrefix(args[0], "0x"))
			return withRecords(a, true, func(r records) error {
				if err := r.Revoke(serial, reason); err != nil {
					if errors.Is(err, store.ErrNotFound) {
						return fmt.Errorf("no certificate with serial %s", args[0])
					}
					return err
				}
				fmt.Fprintf(a.stdout, "revoked %s\n", serial)
				return nil
			})
		},
	}
}

func backupCommand() *command {
	return &command{
		name: "backup", args: "FILE",
		summary: "Write a consistent copy of the store to FILE, online (through the running server) or offline.\n" +
			"The copy is checked (opened, audit chain verified) before it replaces FILE.",
		run: func(ctx context.Context, a *app, fs *flag.FlagSet, args []string) error {
			if len(args) != 1 {
				fs.Usage()
				return &exitError{2, errors.New("one FILE is required")}
			}
			cfg, err := a.config()
			if err != nil {
				return err
			}
			pub, err := readAuditPublic(cfg)
			if err != nil {
				return err
			}
			dst, err := filepath.Abs(args[0])
			if err != nil {
				return err
			}
			tmp := dst + ".partial"
			f, err := os.OpenFile(tmp, os.O_CREATE|os.O_TRUNC|os.O_WRONLY, 0o600)
			if err != nil {
				return err
			}
			defer os.Remove(tmp)
			var n int64
			err = withRecords(a, false, func(r records) error {
				n, err = r.Backup(f)
				return err
			})
			if err == nil {
				err = f.Sync()
			}
			if cerr := f.Close(); err == nil {
				err = cerr
			}
			if err != nil {
				return err
			}
			db, err := store.Open(tmp, store.Options{ReadOnly: true, LockTimeout: time.Second})
			if err != nil {
				return fmt.Errorf("backup copy does not open: %w", err)
			}
			rep, verr := db.Verify(pub)
			db.Close()
			if verr != nil {
				return fmt.Errorf("backup copy does not verify: %w", verr)
			}
			if err := os.Rename(tmp, dst); err != nil {
				return err
			}
			if d, err := os.Open(filepath.Dir(dst)); err == nil {
				d.Sync()
				d.Close()
			}
			fmt.Fprintf(a.stdout, "backup %s: %d bytes, %d audit records verified\n", dst, n, rep.Records)
			return nil
		},
	}
}

// withRecords runs f on the store, through the running server's admin socket
// or directly (read-only unless write is set).
func withRecords(a *app, write bool, f func(records) error) error {
	cfg, err := a.config()
	if err != nil {
		return err
	}
	r, err := openRecords(cfg, write)
	if err != nil {
		return err
	}
	defer r.Close()
	return f(r)
}

func printJSON(a *app, v any) error {
	enc := json.NewEncoder(a.stdout)
	enc.SetIndent("", "  ")
	return enc.Encode(v)
}

func caShowCommand() *command {
	return &command{
		name: "ca show", args: "",
		summary: "Show the CA hierarchy: root, issuing CA and DTLS server certificate.",
		run: func(ctx context.Context, a *app, fs *flag.FlagSet, args []string) error {
			cfg, err := a.config()
			if err != nil {
				return err
			}
			for _, x := range []struct{ name, path string }{
				{"root", cfg.CA.Root}, {"issuing", cfg.CA.Issuing}, {"server", cfg.CA.ServerCert},
			} {
				c, err := readCert(cfg.path(x.path))
				if err != nil {
					fmt.Fprintf(a.stdout, "%-8s (missing: %v)\n", x.name, err)
					continue
				}
				describe(a, x.name, c)
			}
			return nil
		},
	}
}

func describe(a *app, name string, c *x509.Certificate) {
	fmt.Fprintf(a.stdout, "%s:\n  subject    %s\n  issuer     %s\n  serial     %x\n  not before %s\n  not after  %s\n  key        %s\n  ski        %x\n",
		name, c.Subject, c.Issuer, c.SerialNumber, c.NotBefore.UTC().Format(time.RFC3339),
		c.NotAfter.UTC().Format(time.RFC3339), c.PublicKeyAlgorithm, c.SubjectKeyId)
}
