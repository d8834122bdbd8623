package main

import (
	"context"
	"errors"
	"flag"
	"fmt"
	"net/url"
	"sort"
	"strconv"
	"strings"
	"text/tabwriter"
	"time"

	"github.com/estca/estca/store"
)

// certQuery selects certificates for `certs list`, in issuance order. The
// filters combine (all must hold).
type certQuery struct {
	// Limit caps the result; 0 means all.
	Limit int
	// After is a serial (store form): only certificates issued after it.
	After string
	// Revoked keeps revoked certificates only.
	Revoked bool
	// Expiring, when positive, keeps certificates that are neither revoked
	// nor expired and whose notAfter is within that long from now.
	Expiring time.Duration
	// Requester keeps certificates whose requester (the fingerprint of the
	// client certificate that asked, or operator:NAME) starts with it,
	// ignoring case.
	Requester string
}

// values encodes q for the admin socket.
func (q certQuery) values() url.Values {
	v := url.Values{}
	if q.Limit > 0 {
		v.Set("limit", strconv.Itoa(q.Limit))
	}
	if q.After != "" {
		v.Set("after", q.After)
	}
	if q.Revoked {
		v.Set("revoked", "true")
	}
	if q.Expiring > 0 {
		v.Set("expiring", q.Expiring.String())
	}
	if q.Requester != "" {
		v.Set("requester", q.Requester)
	}
	return v
}

// parseCertQuery decodes values; errors match store.ErrInvalid.
func parseCertQuery(v url.Values) (certQuery, error) {
	var q certQuery
	var err error
	bad := func(k string) error { return fmt.Errorf("%w: %s %q", store.ErrInvalid, k, v.Get(k)) }
	if s := v.Get("limit"); s != "" {
		if q.Limit, err = strconv.Atoi(s); err != nil || q.Limit < 0 {
			return q, bad("limit")
		}
	}
	if s := v.Get("after"); s != "" {
		if q.After, err = parseSerial(s); err != nil {
			return q, bad("after")
		}
	}
	if s := v.Get("revoked"); s != "" {
		if q.Revoked, err = strconv.ParseBool(s); err != nil {
			return q, bad("revoked")
		}
	}
	if s := v.Get("expiring"); s != "" {
		if q.Expiring, err = time.ParseDuration(s); err != nil || q.Expiring <= 0 {
			return q, bad("expiring")
		}
	}
	q.Requester = v.Get("requester")
	return q, nil
}

// match reports whether the certificate view passes q's filters.
func (q certQuery) match(v *certView, now time.Time) bool {
	if q.Revoked && v.Status != statusRevoked {
		return false
	}
	if q.Expiring > 0 && (v.Status != statusValid || v.NotAfter.After(now.Add(q.Expiring))) {
		return false
	}
	if q.Requester != "" && !strings.HasPrefix(strings.ToLower(v.Requester), strings.ToLower(q.Requester)) {
		return false
	}
	return true
}

// certPage is how many certificates listCerts reads from the store at a time.
const certPage = 1000

// listCerts answers q from db as of now, in issuance order. Revocations come
// from the revocation set in force (store.DB.Revocation).
func listCerts(db *store.DB, q certQuery, now time.Time) ([]certView, error) {
	out := []certView{}
	if q.Revoked {
		return listRevoked(db, q, now)
	}
	after := q.After
	for {
		cs, err := db.Certificates(store.CertFilter{Limit: certPage, After: after})
		if err != nil {
			return nil, err
		}
		for _, c := range cs {
			v := certViewIn(db, c, now)
			if q.match(&v, now) {
				out = append(out, v)
				if q.Limit > 0 && len(out) == q.Limit {
					return out, nil
				}
			}
		}
		if len(cs) < certPage {
			return out, nil
		}
		after = cs[len(cs)-1].Serial
	}
}

// listRevoked answers a query for revoked certificates from the revocation
// set, without reading every certificate.
func listRevoked(db *store.DB, q certQuery, now time.Time) ([]certView, error) {
	var afterSeq uint64
	if q.After != "" {
		c, err := db.Certificate(q.After)
		if err != nil {
			return nil, err
		}
		afterSeq = c.Seq
	}
	revs, err := db.Revocations()
	if err != nil {
		return nil, err
	}
	out := []certView{}
	for _, r := range revs {
		c, err := db.Certificate(r.Serial)
		if err != nil {
			return nil, fmt.Errorf("revoked certificate %s: %w", r.Serial, err)
		}
		if c.Seq <= afterSeq {
			continue
		}
		if v := newCertView(c, &r, now); q.match(&v, now) {
			out = append(out, v)
		}
	}
	sort.Slice(out, func(i, j int) bool { return out[i].Seq < out[j].Seq })
	if q.Limit > 0 && len(out) > q.Limit {
		out = out[:q.Limit]
	}
	return out, nil
}

func certViewIn(db *store.DB, c store.Certificate, now time.Time) certView {
	var rev *store.Revocation
	if r, err := db.Revocation(c.Serial); err == nil {
		rev = &r
	}
	return newCertView(c, rev, now)
}

// showCert returns the certificate with serial (store form) as of now.
func showCert(db *store.DB, serial string, now time.Time) (certView, error) {
	c, err := db.Certificate(serial)
	if err != nil {
		return certView{}, err
	}
	return certViewIn(db, c, now), nil
}

func certsListCommand() *command {
	var asJSON bool
	var q certQuery
	var after string
	return &command{
		name: "certs list", args: "[--json] [--revoked] [--expiring DUR] [--requester R] [--limit N] [--after SERIAL]",
		noArgs: true,
		summary: "List issued certificates with their status, in issuance order.\n\n" +
			"Status: valid, expired, or revoked with reason and time. Through the running server's admin\n" +
			"socket, or from the store file. The filters combine.",
		flags: func(fs *flag.FlagSet) {
			fs.BoolVar(&asJSON, "json", false, "print a JSON array of certificates (fields: see README, JSON output)")
			fs.BoolVar(&q.Revoked, "revoked", false, "only revoked certificates")
			fs.DurationVar(&q.Expiring, "expiring", 0, "only certificates, neither revoked nor expired, that expire within `DUR` (e.g. 720h)")
			fs.StringVar(&q.Requester, "requester", "", "only certificates of requester `R`: the fingerprint of its client certificate (a prefix will do) or operator:NAME")
			fs.IntVar(&q.Limit, "limit", 0, "at most `N` certificates (0: all)")
			fs.StringVar(&after, "after", "", "start after the certificate with this `SERIAL` (paging)")
		},
		run: func(ctx context.Context, a *app, fs *flag.FlagSet, args []string) error {
			if q.Limit < 0 || q.Expiring < 0 {
				return usageErrorf("--limit and --expiring must not be negative")
			}
			if q.Revoked && q.Expiring > 0 {
				return usageErrorf("--revoked and --expiring exclude each other (--expiring lists certificates still in use)")
			}
			if after != "" {
				s, err := parseSerial(after)
				if err != nil {
					return asUsage(fmt.Errorf("--after: %w", err))
				}
				q.After = s
			}
			return withRecords(a, false, func(r records) error {
				cs, err := r.Certificates(q)
				if errors.Is(err, store.ErrNotFound) && q.After != "" {
					return fmt.Errorf("--after %s: no certificate with that serial", q.After)
				}
				if err != nil {
					return err
				}
				if asJSON {
					return printJSON(a, cs)
				}
				tw := tabwriter.NewWriter(a.stdout, 0, 4, 2, ' ', 0)
				fmt.Fprintln(tw, "SERIAL\tISSUED\tNOT AFTER\tSTATUS\tPROFILE\tSUBJECT")
				for _, c := range cs {
					fmt.Fprintf(tw, "%s\t%s\t%s\t%s\t%s\t%s\n", c.Serial, c.IssuedAt.Format(time.RFC3339),
						c.NotAfter.Format(time.RFC3339), statusText(c), c.Profile, c.Subject)
				}
				return tw.Flush()
			})
		},
	}
}

// statusText is the status of c in a table: "revoked 2026-01-02T15:04:05Z
// keyCompromise" for a revoked certificate.
func statusText(c certView) string {
	if c.Revocation == nil {
		return c.Status
	}
	return fmt.Sprintf("%s %s %s", c.Status, c.Revocation.Time.Format(time.RFC3339), c.Revocation.Reason)
}

func certsShowCommand() *command {
	var asJSON bool
	return &command{
		name: "certs show", args: "[--json] SERIAL",
		summary: "Show one issued certificate: details, status and PEM.\n\n" +
			"A revoked certificate shows reason and time. SERIAL in any common form:\n" +
			"0A1B2C, 0a:1b:2c, 0x0a1b2c, serial=0A1B2C (openssl x509 -serial).",
		flags: func(fs *flag.FlagSet) {
			fs.BoolVar(&asJSON, "json", false, "print the certificate as a JSON object (fields: see README, JSON output)")
		},
		run: func(ctx context.Context, a *app, fs *flag.FlagSet, args []string) error {
			serial, err := serialArg(args)
			if err != nil {
				return err
			}
			return withRecords(a, false, func(r records) error {
				v, err := r.Certificate(serial)
				if errors.Is(err, store.ErrNotFound) {
					return fmt.Errorf("no certificate with serial %s", serial)
				}
				if err != nil {
					return err
				}
				if asJSON {
					return printJSON(a, v)
				}
				fmt.Fprintf(a.stdout, "serial      %s\nsubject     %s\nprofile     %s\nstatus      %s\n", v.Serial, v.Subject, v.Profile, v.Status)
				if rv := v.Revocation; rv != nil {
					fmt.Fprintf(a.stdout, "revoked at  %s\nreason      %s (%d)\n", rv.Time.Format(time.RFC3339), rv.Reason, rv.ReasonCode)
				}
				fmt.Fprintf(a.stdout, "not before  %s\nnot after   %s\nissued      %s (#%d)\nrequester   %s\nski         %s\ncsr sha256  %s\n",
					v.NotBefore.Format(time.RFC3339), v.NotAfter.Format(time.RFC3339), v.IssuedAt.Format(time.RFC3339Nano), v.Seq,
					dash(v.Requester), v.SKI, dash(v.CSRDigest))
				_, err = fmt.Fprint(a.stdout, v.PEM)
				return err
			})
		},
	}
}

// serialArg reads the one SERIAL argument of a command (usage error otherwise).
// A serial with spaces (an openssl -text copy) must be quoted: two
// arguments are never joined into one serial.
func serialArg(args []string) (string, error) {
	if len(args) != 1 {
		return "", usageErrorf("one SERIAL is required, got %d arguments", len(args))
	}
	s, err := parseSerial(args[0])
	return s, asUsage(err)
}
