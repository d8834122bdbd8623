package main

import (
	"context"
	"crypto"
	"crypto/x509"
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

func auditListCommand() *command {
	var asJSON bool
	var since, serial, requester string
	var limit int
	return &command{
		name: "audit list", args: "[--json] [--since T] [--serial SERIAL] [--requester R] [--limit N]",
		noArgs: true,
		summary: "List the audit records, oldest first.\n\n" +
			"Every decision, issuance, revocation, signed head, start and stop is a record.",
		flags: func(fs *flag.FlagSet) {
			fs.BoolVar(&asJSON, "json", false, "print a JSON array of records (fields: see README, JSON output)")
			fs.StringVar(&since, "since", "", "only records at or after `T` (RFC 3339 time, or a duration like 1h meaning that long ago)")
			fs.StringVar(&serial, "serial", "", "only records about the certificate with this `SERIAL` (any common form)")
			fs.StringVar(&requester, "requester", "", "only records of requester `R` (fingerprint, or part of its subject)")
			fs.IntVar(&limit, "limit", 0, "at most `N` records (0: all)")
		},
		run: func(ctx context.Context, a *app, fs *flag.FlagSet, args []string) error {
			if limit < 0 {
				return usageErrorf("--limit must not be negative")
			}
			f := store.AuditFilter{Requester: requester, Limit: limit}
			if serial != "" {
				s, err := parseSerial(serial)
				if err != nil {
					return asUsage(fmt.Errorf("--serial: %w", err))
				}
				f.Serial = s
			}
			if since != "" {
				t, err := parseSince(since, time.Now())
				if err != nil {
					return asUsage(err)
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
						recs = []auditView{}
					}
					return printJSON(a, recs)
				}
				tw := tabwriter.NewWriter(a.stdout, 0, 4, 2, ' ', 0)
				fmt.Fprintln(tw, "SEQ\tTIME\tEVENT\tREQUESTER\tSERIAL\tPROFILE\tVERDICT\tREASON\tFLAGS")
				for _, r := range recs {
					who := ""
					if r.Requester != nil {
						who = r.Requester.Subject
					}
					fmt.Fprintf(tw, "%d\t%s\t%s\t%s\t%s\t%s\t%s\t%s\t%s\n", r.Seq, r.Time.Format(time.RFC3339),
						r.Event, dash(who), dash(r.Serial), dash(r.Profile), dash(r.Verdict), dash(r.Reason), dash(strings.Join(r.Flags, ",")))
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
	var extra stringList
	return &command{
		name: "audit verify", args: "[--checkpoint FILE]...",
		summary: "Verify the whole audit trail and that the store extends the checkpoint(s).\n\n" +
			"Checks the hash chain, every HSM-signed head and the head chain,\n" +
			"every certificate and revocation against its record (both ways), and that the store\n" +
			"extends the appliance's checkpoint (store.checkpoint) and every --checkpoint FILE you kept.\n" +
			"Exit 0 when everything verifies; exit 1 naming what is wrong otherwise.",
		flags: func(fs *flag.FlagSet) {
			fs.Var(&extra, "checkpoint", "also check against this kept checkpoint `FILE` (what estca audit checkpoint printed, or its journal line); repeatable")
		},
		run: func(ctx context.Context, a *app, fs *flag.FlagSet, args []string) error {
			cfg, err := a.config()
			if err != nil {
				return err
			}
			var cps []store.Checkpoint
			local := cfg.path(cfg.Store.Checkpoint)
			switch cp, err := store.ReadCheckpoint(local); {
			case err == nil:
				cps = append(cps, cp)
			case errors.Is(err, os.ErrNotExist) && len(extra) > 0:
				fmt.Fprintf(a.stderr, "estca audit verify: warning: the appliance checkpoint %s is missing; checking against --checkpoint only\n", local)
			case errors.Is(err, os.ErrNotExist):
				return &exitError{1, fmt.Errorf("the appliance checkpoint %s is missing: without it a store cut back to an earlier state cannot be told; give the one you keep with --checkpoint FILE", local)}
			default:
				return &exitError{1, err}
			}
			for _, f := range extra {
				cp, err := store.ReadCheckpoint(f)
				if err != nil {
					return asUsage(err)
				}
				cps = append(cps, cp)
			}
			return withRecords(a, false, func(r records) error {
				rep, err := r.Verify(cps)
				if isAuditFailure(err) {
					return &exitError{1, fmt.Errorf("audit trail does not verify: %w", err)}
				}
				if err != nil {
					return err
				}
				fmt.Fprintf(a.stdout, "audit chain ok: %d records, %d signed heads (newest: head %d over record %d), %d certificates, %d revocations; extends %d checkpoint(s)\n",
					rep.Records, rep.Heads, rep.Newest.Counter, rep.Newest.Seq, rep.Certificates, rep.Revocations, rep.Checkpoints)
				for _, s := range rep.Superseded {
					fmt.Fprintf(a.stdout, "note: checkpoint head %d (record %d) was superseded by the %s acknowledged in record %d\n",
						s.Checkpoint.Counter, s.Checkpoint.Seq, s.Event, s.AckSeq)
				}
				if rep.Unsigned > 0 {
					fmt.Fprintf(a.stdout, "note: %d record(s) after record %d are hash-chained but not signed yet\n", rep.Unsigned, rep.Newest.Seq)
				}
				return nil
			})
		},
	}
}

func auditCheckpointCommand() *command {
	var reset bool
	var reason string
	return &command{
		name: "audit checkpoint", args: "[--reset --reason TEXT]",
		summary: "Print the current checkpoint to keep off the box (--reset: acknowledge a lost one).\n\n" +
			"The checkpoint is the newest signed audit head;\n" +
			"`estca audit verify --checkpoint FILE` later proves the store was not cut back behind it.\n" +
			"--reset (appliance stopped, needs the HSM): after a full verify, accept the store as it is when its\n" +
			"checkpoint file is lost, behind or forked: recorded in the audit trail and signed, then a new checkpoint.",
		flags: func(fs *flag.FlagSet) {
			fs.BoolVar(&reset, "reset", false, "acknowledge the store as it is and write a new checkpoint")
			fs.StringVar(&reason, "reason", "", "why, in words (`TEXT` kept in the audit record; required with --reset)")
		},
		run: func(ctx context.Context, a *app, fs *flag.FlagSet, args []string) error {
			if len(args) > 0 || (reset && reason == "") {
				return usageErrorf("--reset needs --reason")
			}
			cfg, err := a.config()
			if err != nil {
				return err
			}
			if reset {
				return resetCheckpoint(a, cfg, reason)
			}
			return withRecords(a, false, func(r records) error {
				h, err := r.NewestHead()
				if err != nil {
					return err
				}
				_, err = a.stdout.Write(store.FormatCheckpoint(h))
				return err
			})
		},
	}
}

// resetCheckpoint verifies the whole store (without the checkpoint), then
// records the operator's acknowledgement of the old checkpoint (if any) and
// signs a head, which writes a new checkpoint.
func resetCheckpoint(a *app, cfg *Config, reason string) error {
	tok, signer, pub, err := openAuditToken(cfg)
	if err != nil {
		return err
	}
	defer tok.Close()
	o := storeOptions(cfg, signer, pub)
	o.SkipCheckpoint = true
	db, err := store.Open(cfg.path(cfg.Store.Path), o)
	if err != nil {
		return explainStore(cfg, err)
	}
	defer db.Close()
	var old *store.Checkpoint
	if cp, err := store.ReadCheckpoint(cfg.path(cfg.Store.Checkpoint)); err == nil {
		old = &cp
	}
	if _, err := db.Verify(pub); err != nil {
		return &exitError{1, fmt.Errorf("the store does not verify; not acknowledging it: %w", err)}
	}
	h, err := db.AcknowledgeCheckpoint(old, reason)
	if err != nil {
		return err
	}
	fmt.Fprintf(a.stdout, "checkpoint reset: head %d over record %d written to %s; keep a copy off the box:\n", h.Counter, h.Seq, cfg.path(cfg.Store.Checkpoint))
	_, err = a.stdout.Write(store.FormatCheckpoint(h))
	return err
}

func backupCommand() *command {
	return &command{
		name: "backup", args: "FILE",
		summary: "Write a consistent, verified copy of the store to FILE (online or offline).\n\n" +
			"Online (through the running server) or offline.\n" +
			"FILE must not be, or resolve to, the live store or its checkpoint. The copy is checked (opened,\n" +
			"audit trail verified) before it replaces FILE.",
		run: func(ctx context.Context, a *app, fs *flag.FlagSet, args []string) error {
			if len(args) != 1 {
				return usageErrorf("one FILE is required")
			}
			cfg, err := a.config()
			if err != nil {
				return err
			}
			dst, err := filepath.Abs(args[0])
			if err != nil {
				return err
			}
			if err := store.CheckBackupTarget(dst, cfg.path(cfg.Store.Path), cfg.path(cfg.Store.Checkpoint), a.configPath); err != nil {
				return asUsage(err)
			}
			pub, err := readAuditPublic(cfg)
			if err != nil {
				return err
			}
			f, err := os.CreateTemp(filepath.Dir(dst), "."+filepath.Base(dst)+".partial-*")
			if err != nil {
				return err
			}
			tmp := f.Name()
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
			db, err := store.Open(tmp, store.Options{ReadOnly: true, LockTimeout: time.Second, CheckPages: -1})
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
			fmt.Fprintf(a.stdout, "backup %s: %d bytes, %d audit records, %d certificates verified (newest signed head %d)\n",
				dst, n, rep.Records, rep.Certificates, rep.Newest.Counter)
			return nil
		},
	}
}

func restoreCommand() *command {
	var acceptLoss bool
	var checkpoint, reason string
	return &command{
		name: "restore", args: "[--checkpoint FILE] [--accept-loss --reason TEXT] FILE",
		summary: "Put a verified backup back into a stopped appliance.\n\n" +
			"Replaces the store of a STOPPED appliance with the backup FILE (needs the HSM). The backup is\n" +
			"verified completely and against the checkpoint (store.checkpoint, or --checkpoint FILE); a backup\n" +
			"older than the checkpoint is refused unless --accept-loss: what was issued after it is then lost,\n" +
			"and the acknowledgement is an audit record. The old store file is kept as STORE.replaced-TIME.",
		flags: func(fs *flag.FlagSet) {
			fs.BoolVar(&acceptLoss, "accept-loss", false, "restore a backup that is behind (or forked from) the checkpoint, or without one")
			fs.StringVar(&checkpoint, "checkpoint", "", "check the backup against this kept checkpoint `FILE` instead of store.checkpoint")
			fs.StringVar(&reason, "reason", "", "why, in words (`TEXT` kept in the restore record; required with --accept-loss)")
		},
		run: func(ctx context.Context, a *app, fs *flag.FlagSet, args []string) error {
			if len(args) != 1 || (acceptLoss && reason == "") {
				return usageErrorf("one FILE is required, and --accept-loss needs --reason")
			}
			return withAuditToken(a, func(cfg *Config, signer crypto.Signer, pub crypto.PublicKey) error {
				return restore(a, cfg, signer, pub, args[0], checkpoint, reason, acceptLoss)
			})
		},
	}
}

// restore runs `estca restore` with the audit key.
func restore(a *app, cfg *Config, signer crypto.Signer, pub crypto.PublicKey, file, checkpoint, reason string, acceptLoss bool) error {
	o := store.RestoreOptions{AuditKey: pub, Signer: signer, Checkpoint: cfg.path(cfg.Store.Checkpoint),
		AcceptLoss: acceptLoss, Reason: reason, LockTimeout: cfg.Store.LockTimeout.D()}
	if checkpoint != "" {
		cp, err := store.ReadCheckpoint(checkpoint)
		if err != nil {
			return asUsage(err)
		}
		o.Reference = &cp
	}
	rep, err := store.Restore(file, cfg.path(cfg.Store.Path), o)
	if err != nil {
		if errors.Is(err, store.ErrCheckpoint) && !acceptLoss {
			return &exitError{1, fmt.Errorf("%w; to restore it anyway, losing what followed, add --accept-loss --reason TEXT", err)}
		}
		return explainStore(cfg, err)
	}
	fmt.Fprintf(a.stdout, "restored %s: %d records, %d certificates verified\n", file, rep.Verified.Records, rep.Verified.Certificates)
	if rep.Superseded != nil {
		fmt.Fprintf(a.stdout, "accepted loss: %v\n", rep.Superseded)
	}
	if rep.Aside != "" {
		fmt.Fprintf(a.stdout, "the previous store file is kept as %s\n", rep.Aside)
	}
	fmt.Fprintf(a.stdout, "new checkpoint (head %d over record %d) written to %s; keep a copy off the box\n",
		rep.Head.Counter, rep.Head.Seq, cfg.path(cfg.Store.Checkpoint))
	return nil
}

func storeMigrateCommand() *command {
	return &command{
		name: "store migrate", args: "",
		summary: "Convert a format 1 or 2 store to format 3 (appliance stopped).\n\n" +
			"Format 1 is estca before the chained audit heads, format 2 before the scale work (two indexes\n" +
			"fewer). The HSM is needed: the old chain is verified with the audit key first; the original is\n" +
			"kept as STORE.v1 or STORE.v2; a migration record commits to its final signed head; a new checkpoint is written.",
		run: func(ctx context.Context, a *app, fs *flag.FlagSet, args []string) error {
			if len(args) > 0 {
				return usageErrorf("no arguments")
			}
			return withAuditToken(a, func(cfg *Config, signer crypto.Signer, pub crypto.PublicKey) error {
				return migrate(a, cfg, signer, pub)
			})
		},
	}
}

// migrate runs `estca store migrate` with the audit key.
func migrate(a *app, cfg *Config, signer crypto.Signer, pub crypto.PublicKey) error {
	rep, err := store.Migrate(cfg.path(cfg.Store.Path), store.MigrateOptions{AuditKey: pub, Signer: signer,
		Checkpoint: cfg.path(cfg.Store.Checkpoint), LockTimeout: cfg.Store.LockTimeout.D()})
	if err != nil {
		return &exitError{1, explainStore(cfg, err)}
	}
	fmt.Fprintf(a.stdout, "migrated %d records (%d signed heads, verified up to record %d; %d unsigned after it), %d certificates, %d revocations, %d requests\n",
		rep.Records, rep.Heads, rep.V1Seq, rep.V1Unsigned, rep.Certificates, rep.Revocations, rep.Requests)
	fmt.Fprintf(a.stdout, "format %d file kept as %s; new checkpoint (head %d) in %s: keep a copy off the box\n",
		rep.From, rep.Kept, rep.Head.Counter, cfg.path(cfg.Store.Checkpoint))
	return nil
}

func storeCheckCommand() *command {
	return &command{
		name: "store check", args: "",
		summary: "Read every page of the store and check its structure.\n\n" +
			"Online through the running server, or offline, where bbolt's own consistency check runs too.\n" +
			"Exit 1 naming the damage.",
		run: func(ctx context.Context, a *app, fs *flag.FlagSet, args []string) error {
			cfg, err := a.config()
			if err != nil {
				return err
			}
			var rep store.CheckReport
			if serverRunning(cfg) {
				rep, err = newAdminClient(cfg.path(cfg.EST.AdminSocket)).Check()
			} else {
				o := storeOptions(cfg, nil, nil)
				o.CheckPages = -1
				var db *store.DB
				if db, err = store.Open(cfg.path(cfg.Store.Path), o); err != nil {
					return &exitError{1, explainStore(cfg, err)}
				}
				rep, err = db.Check()
				db.Close()
			}
			if err != nil {
				return &exitError{1, err}
			}
			fmt.Fprintf(a.stdout, "store check ok: %d pages (%d branch, %d leaf, %d overflow) in %d buckets; %d pages below the high-water mark, file %d bytes",
				rep.Pages, rep.Branches, rep.Leaves, rep.Overflow, rep.Buckets, rep.HighWater, rep.FileSize)
			if rep.Bolt {
				fmt.Fprint(a.stdout, "; bbolt check ok")
			}
			fmt.Fprintln(a.stdout)
			return nil
		},
	}
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
