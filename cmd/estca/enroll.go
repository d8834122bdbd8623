package main

import (
	"context"
	"crypto"
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/tls"
	"crypto/x509"
	"crypto/x509/pkix"
	"encoding/asn1"
	"errors"
	"flag"
	"fmt"
	"os"
	"slices"
	"strings"
	"time"

	"github.com/plgd-dev/go-coap/v3/message"
	"github.com/plgd-dev/go-coap/v3/message/codes"

	"github.com/estca/estca/est/bench"
	"github.com/estca/estca/est/client"
	"github.com/estca/estca/est/wire"
)

// clientFlags are the connection flags shared by enroll and bench.
type clientFlags struct {
	server, label, certFile, keyFile, trust, serverName string
	blockSize                                           int
	timeout                                             time.Duration
}

func (f *clientFlags) register(fs *flag.FlagSet) {
	fs.StringVar(&f.server, "server", "coaps://127.0.0.1:5684", "EST-coaps server `URL` (coaps://HOST:PORT)")
	fs.StringVar(&f.label, "label", "", "profile path `LABEL` (/est/LABEL/...; default /.well-known/est)")
	fs.StringVar(&f.certFile, "cert", "", "client certificate `PEM` (IDevID or operational; chain may follow)")
	fs.StringVar(&f.keyFile, "key", "", "client private key `PEM`")
	fs.StringVar(&f.trust, "trust", "", "explicit trust anchors `PEM` for the server (RFC 7030 §4.1.1)")
	fs.StringVar(&f.serverName, "server-name", "", "`NAME` to check in the server certificate (default: the URL's host)")
	fs.IntVar(&f.blockSize, "block-size", 1024, "block size `N` for block-wise transfers: 16..1024, a power of two")
	fs.DurationVar(&f.timeout, "timeout", 30*time.Second, "bound `DUR` on the handshake and each operation")
}

func (f *clientFlags) options() (client.Options, error) {
	var errs []error
	if f.certFile == "" || f.keyFile == "" {
		errs = append(errs, errors.New("--cert and --key are required: every EST-coaps function needs a client certificate"))
	}
	if f.trust == "" {
		errs = append(errs, errors.New("--trust is required: the server is validated against explicit trust anchors"))
	}
	if f.blockSize < 16 || f.blockSize > 1024 || f.blockSize&(f.blockSize-1) != 0 {
		errs = append(errs, fmt.Errorf("--block-size %d: want a power of two in 16..1024", f.blockSize))
	}
	if len(errs) > 0 {
		return client.Options{}, asUsage(errors.Join(errs...))
	}
	cert, err := tls.LoadX509KeyPair(f.certFile, f.keyFile)
	if err != nil {
		return client.Options{}, fmt.Errorf("client certificate: %w", err)
	}
	roots, err := readCerts(f.trust)
	if err != nil {
		return client.Options{}, fmt.Errorf("trust anchors: %w", err)
	}
	pool := x509.NewCertPool()
	for _, c := range roots {
		pool.AddCert(c)
	}
	return client.Options{
		Server: f.server, Label: f.label, Certificate: cert, Roots: pool,
		ServerName: f.serverName, BlockSize: f.blockSize, Timeout: f.timeout,
	}, nil
}

func enrollCommand() *command {
	var cf clientFlags
	var kf keygenFlags
	var csrFile, out, subject, accept string
	return &command{
		name: "enroll", args: "--server coaps://HOST:PORT --cert C --key K --trust TA.pem [flags] OP", noConfig: true,
		summary: "EST-coaps device client (RFC 9148): discover, crts, sen, sren, att, skg, skc.\n\n" +
			"OP is one of:\n" +
			"  discover  list the server's EST resources (/.well-known/core?rt=ace.est*)\n" +
			"  crts      fetch the CA certificates and update the trust anchors (RFC 9148 §9.1)\n" +
			"  sen       simple enrollment; sren re-enrollment with the current operational certificate\n" +
			"  att       CSR attributes; skg, skc server-side key generation\n" +
			"Without --csr a fresh P-256 key is generated here and written to PREFIX.key; with skg/skc\n" +
			"the server generates it and it is written, decrypted and checked, to PREFIX.key (0600).",
		flags: func(fs *flag.FlagSet) {
			cf.register(fs)
			fs.StringVar(&csrFile, "csr", "", "PKCS#10 CSR `FILE` (DER or PEM) instead of a locally generated key")
			fs.StringVar(&out, "out", "estca-enroll", "output `PREFIX` for PEM files (PREFIX.pem, PREFIX.key, PREFIX-cacerts.pem, ...)")
			fs.StringVar(&subject, "subject", "", "common `NAME` for a generated CSR (default: the client certificate's subject)")
			fs.StringVar(&accept, "accept", "281", "certificate `FORMAT` to ask for: 281 (PKCS#7 certs-only) or 287 (DER)")
			kf.register(fs)
		},
		run: func(ctx context.Context, a *app, fs *flag.FlagSet, args []string) error {
			if len(args) != 1 {
				return usageErrorf("exactly one OP is required")
			}
			op := args[0]
			switch op {
			case "discover", "crts", "sen", "sren", "att", "skg", "skc":
			default:
				return usageErrorf("unknown OP %q", op)
			}
			acc := wire.FormatCertsOnly
			switch accept {
			case "281":
			case "287":
				acc = wire.FormatPKIXCert
			default:
				return usageErrorf("--accept %s: want 281 or 287", accept)
			}
			opts, err := cf.options()
			if err != nil {
				return err
			}
			opts.Logger = a.log
			c, err := client.Dial(ctx, opts)
			if err != nil {
				return err
			}
			defer c.Close()
			if op == "skg" || op == "skc" {
				return runServerKeygen(ctx, a, c, opts, op == "skc", &kf, csrFile, out, subject)
			}
			return runEnroll(ctx, a, c, opts, op, acc, csrFile, out, subject)
		},
	}
}

func runEnroll(ctx context.Context, a *app, c *client.Conn, opts client.Options, op string,
	accept message.MediaType, csrFile, out, subject string) error {
	switch op {
	case "discover":
		links, _, err := c.Discover(ctx)
		if err != nil {
			return err
		}
		for _, l := range links {
			cts := make([]string, len(l.ContentFormats))
			for i, f := range l.ContentFormats {
				cts[i] = fmt.Sprint(int(f))
			}
			fmt.Fprintf(a.stdout, "%s\trt=%s\tct=%s\n", l.Target, strings.Join(l.ResourceTypes, " "), strings.Join(cts, " "))
		}
		return nil
	case "crts":
		certs, _, err := c.CACerts(ctx, accept)
		if err != nil {
			return err
		}
		if err := writeCerts(out+"-cacerts.pem", certs...); err != nil {
			return err
		}
		fmt.Fprintf(a.stdout, "wrote %d CA certificates to %s-cacerts.pem\n", len(certs), out)
		anchors, err := c.UpdateTrust(ctx)
		if err != nil {
			return fmt.Errorf("trust-anchor update refused, keeping the old anchors: %w", err)
		}
		if err := writeCerts(out+"-trust.pem", anchors...); err != nil {
			return err
		}
		fmt.Fprintf(a.stdout, "server re-validated against the new trust anchors; wrote %s-trust.pem\n", out)
		return nil
	case "att":
		attrs, err := c.CSRAttrs(ctx)
		if err != nil {
			return err
		}
		if err := os.WriteFile(out+"-csrattrs.der", attrs, 0o644); err != nil {
			return err
		}
		fmt.Fprintf(a.stdout, "wrote %d bytes of CSR attributes to %s-csrattrs.der\n", len(attrs), out)
		return nil
	}

	var csr []byte
	var err error
	if csrFile != "" {
		if csr, err = readCSRFile(csrFile); err != nil {
			return err
		}
	} else {
		leaf := opts.Certificate.Leaf
		if leaf == nil {
			if leaf, err = x509.ParseCertificate(opts.Certificate.Certificate[0]); err != nil {
				return err
			}
		}
		var key crypto.Signer
		if (op == "sen" || op == "sren") && subject == "" {
			// Follow the server's CSR attributes (RFC 9908 template): the
			// subject, SAN and key type its profile wants.
			if key, csr, err = csrFromAttrs(ctx, a, c, leaf); err != nil {
				return err
			}
		}
		if csr == nil {
			if key, err = ecdsa.GenerateKey(elliptic.P256(), rand.Reader); err != nil {
				return err
			}
			if csr, err = newCSR(key, leaf, subject, op == "sren"); err != nil {
				return err
			}
		}
		if op == "sen" || op == "sren" {
			der, err := x509.MarshalPKCS8PrivateKey(key)
			if err != nil {
				return err
			}
			err = writeSecretPEM(out+".key", "PRIVATE KEY", der)
			clear(der)
			if err != nil {
				return err
			}
		}
	}
	switch op {
	case "sen", "sren":
		enroll := c.Enroll
		if op == "sren" {
			enroll = c.Reenroll
		}
		cert, _, err := enroll(ctx, csr, accept)
		if err != nil {
			return err
		}
		if err := writeCerts(out+".pem", cert); err != nil {
			return err
		}
		fmt.Fprintf(a.stdout, "enrolled: serial %x, subject %s, valid until %s; wrote %s.pem\n",
			cert.SerialNumber, cert.Subject, cert.NotAfter.UTC().Format(time.RFC3339), out)
		return nil
	}
	return fmt.Errorf("unknown OP %q", op)
}

// csrFromAttrs builds the CSR the server's CSR attributes ask for (GET
// /att: its RFC 9908 template) with a new key of the type they name; it
// returns nil when the server offers no template (the caller then builds
// the CSR from the client certificate).
func csrFromAttrs(ctx context.Context, a *app, c *client.Conn, leaf *x509.Certificate) (crypto.Signer, []byte, error) {
	attrs, err := c.CSRAttrs(ctx)
	var re *client.ResponseError
	if errors.As(err, &re) && re.Code == codes.NotFound {
		return nil, nil, nil
	}
	if err != nil {
		return nil, nil, err
	}
	t, err := client.ParseCSRTemplate(attrs, leaf)
	if err != nil || t == nil {
		return nil, nil, err
	}
	key, err := t.NewKey()
	if err != nil {
		return nil, nil, err
	}
	csr, err := t.Request(key, leaf)
	if err != nil {
		return nil, nil, err
	}
	a.log.Debug("CSR built from the server's CSR attributes", "key", t.Key, "extensions", len(t.Extensions))
	return key, csr, nil
}

// newCSR makes a CSR for key. For re-enrollment the subject and the
// subjectAltName extension are the current certificate's, byte for byte
// (RFC 7030 §4.2.2); otherwise the subject is cn, or the client certificate's.
func newCSR(key crypto.Signer, leaf *x509.Certificate, cn string, renew bool) ([]byte, error) {
	return x509.CreateCertificateRequest(rand.Reader, csrTemplate(leaf, cn, renew), key)
}

// csrTemplate is the CSR content of newCSR: for a renewal the subject and
// subjectAltName extension of leaf, byte for byte; otherwise the subject
// CN cn, or leaf's subject.
func csrTemplate(leaf *x509.Certificate, cn string, renew bool) *x509.CertificateRequest {
	tmpl := &x509.CertificateRequest{RawSubject: leaf.RawSubject}
	if renew {
		for _, e := range leaf.Extensions {
			if e.Id.Equal(asn1.ObjectIdentifier{2, 5, 29, 17}) {
				tmpl.ExtraExtensions = append(tmpl.ExtraExtensions, e)
			}
		}
	} else if cn != "" {
		tmpl = &x509.CertificateRequest{Subject: pkix.Name{CommonName: cn}}
	}
	return tmpl
}

func benchCommand() *command {
	var cf clientFlags
	var kf keygenFlags
	var mode string
	var workers, csrs, serverPID, rounds int
	var dur time.Duration
	var withBaseline bool
	var vs string
	return &command{
		name: "bench", args: "--server coaps://HOST:PORT --cert C --key K --trust TA.pem [--mode sen|sen-reuse|crts|skg|skc] [-c N] [-d DUR] [--server-pid PID [--baseline | --vs MODE] [--rounds N]]", noConfig: true,
		noArgs: true,
		summary: "EST-coaps load generator (sen, sen-reuse, crts, skg, skc); reports ops/s and latencies.\n\n" +
			"sen opens a new DTLS session per enrollment, sen-reuse enrolls many times over one session\n" +
			"per worker, crts fetches CA certificates, skg and skc ask for server-side key generation over\n" +
			"one session per worker (--kek-id/--kek-file or --recipient-key for an encrypted key; every key\n" +
			"is decrypted and checked after the run).\n" +
			"CSRs are prepared before the timed loop; every issued certificate is verified against\n" +
			"its CSR and the CA chain. Reports ops/s, p50/p90/p99 and errors by code. Exit 1 on any error.\n\n" +
			"With --server-pid (the server's process on this machine) it also reports the server's CPU time\n" +
			"per operation (user and system, from /proc) and its context switches. --baseline compares\n" +
			"the server with the baseline, the same est server code with an authority that does no CA\n" +
			"work (est/baseline: it checks the client chain and the CSR's signature and answers a fixed\n" +
			"certificate), started here as a child process pinned to the server's CPUs: --rounds rounds\n" +
			"of -d each per server, interleaved, one set of CSRs, and the ratio of the server's CPU per\n" +
			"operation to the baseline's, the figure to quote (medians of the per-round ratios). --vs MODE\n" +
			"compares two operations on the same server instead: --rounds rounds of --mode and of MODE,\n" +
			"interleaved, and the ratio of their rates and CPU per operation (skg --vs sen-reuse: what a\n" +
			"server-generated key costs against an enrollment). Pin the server and this command to\n" +
			"different CPUs (taskset).",
		flags: func(fs *flag.FlagSet) {
			cf.register(fs)
			fs.StringVar(&mode, "mode", "sen", "`MODE`: sen (a new DTLS session per enrollment), sen-reuse (one session per worker), crts, skg or skc (server-side key generation over one session per worker)")
			kf.register(fs)
			fs.IntVar(&workers, "c", 8, "concurrent workers `N`")
			fs.DurationVar(&dur, "d", 10*time.Second, "duration `DUR` of the timed loop (of each round with --baseline)")
			fs.IntVar(&csrs, "csrs", 0, "distinct CSRs to prepare (0: enough for the duration)")
			fs.IntVar(&serverPID, "server-pid", 0, "`PID` of the server process on this machine: report its CPU time per operation")
			fs.BoolVar(&withBaseline, "baseline", false, "compare with the baseline server (no CA work) in interleaved rounds; needs --server-pid")
			fs.StringVar(&vs, "vs", "", "compare --mode with `MODE` on the same server in interleaved rounds; needs --server-pid")
			fs.IntVar(&rounds, "rounds", bench.DefaultRounds, "rounds `N` per server (--baseline) or per mode (--vs)")
		},
		run: func(ctx context.Context, a *app, fs *flag.FlagSet, args []string) error {
			if withBaseline && serverPID == 0 {
				return usageErrorf("--baseline needs --server-pid: the comparison is of CPU time per operation")
			}
			if !slices.Contains(bench.Modes, mode) {
				return usageErrorf("--mode %q: want one of %s", mode, strings.Join(bench.Modes, ", "))
			}
			if vs != "" {
				switch {
				case withBaseline:
					return usageErrorf("--vs and --baseline: one comparison at a time")
				case serverPID == 0:
					return usageErrorf("--vs needs --server-pid: the comparison is of CPU time per operation")
				case vs == mode:
					return usageErrorf("--vs %s: the same mode as --mode", vs)
				case !slices.Contains(bench.Modes, vs):
					return usageErrorf("--vs %q: want one of %s", vs, strings.Join(bench.Modes, ", "))
				}
			}
			if rounds <= 0 {
				return usageErrorf("--rounds %d: want at least 1", rounds)
			}
			opts, err := cf.options()
			if err != nil {
				return err
			}
			bo := bench.Options{Client: opts, Mode: mode, Workers: workers, Duration: dur, CSRs: csrs, ServerPID: serverPID}
			if bo.KeyRequest, bo.DecryptKey, err = kf.benchRequest(opts); err != nil {
				return err
			}
			if withBaseline {
				return benchBaseline(ctx, a, bo, rounds)
			}
			if vs != "" {
				return benchModes(ctx, a, bo, vs, rounds)
			}
			rep, err := bench.Run(ctx, bo)
			if err != nil {
				return err
			}
			if err := rep.Format(a.stdout); err != nil {
				return err
			}
			if n := rep.ErrorCount(); n > 0 {
				return &exitError{1, fmt.Errorf("%d operations failed", n)}
			}
			return nil
		},
	}
}

// benchBaseline runs `estca bench --baseline`: the baseline server as a
// child on the CPUs the server may use, then bench.Compare.
func benchBaseline(ctx context.Context, a *app, bo bench.Options, rounds int) error {
	if bench.ModeKeygen == bo.Mode || bench.ModeKeygenSingle == bo.Mode {
		return usageErrorf("--baseline compares sen, sen-reuse and crts: the baseline generates no keys")
	}
	cpus, err := bench.Affinity(bo.ServerPID)
	if err != nil {
		return err
	}
	warnSharedCPUs(a, cpus)
	like := bo.Client.Certificate.Leaf
	if like == nil {
		if like, err = x509.ParseCertificate(bo.Client.Certificate.Certificate[0]); err != nil {
			return fmt.Errorf("client certificate: %w", err)
		}
	}
	b, err := startBaseline(ctx, like, cpus)
	if err != nil {
		return err
	}
	defer b.stop()
	base := bo.Client
	base.Server, base.ServerName, base.Label = "coaps://"+b.addr, "localhost", ""
	base.Certificate = b.pki.Client
	base.Roots = x509.NewCertPool()
	base.Roots.AddCert(b.pki.CA)
	fmt.Fprintf(a.stdout, "server pid %d on cpus %v; baseline pid %d (%s) on the same cpus\n", bo.ServerPID, cpus, b.pid(), b.addr)
	cmp, err := bench.Compare(ctx, bench.CompareOptions{
		Options: bo,
		Targets: []bench.Target{
			{Name: "estca", Client: bo.Client, ServerPID: bo.ServerPID},
			{Name: "baseline", Client: base, ServerPID: b.pid(), FixedAnswer: true},
		},
		Rounds: rounds,
	})
	return reportComparison(a, cmp, err)
}

// benchModes runs `estca bench --vs`: bo.Mode and vs against the same
// server in interleaved rounds (bench.Compare with a target per mode).
func benchModes(ctx context.Context, a *app, bo bench.Options, vs string, rounds int) error {
	if cpus, err := bench.Affinity(bo.ServerPID); err == nil {
		warnSharedCPUs(a, cpus)
	}
	cmp, err := bench.Compare(ctx, bench.CompareOptions{
		Options: bo,
		Targets: []bench.Target{
			{Name: bo.Mode, Client: bo.Client, ServerPID: bo.ServerPID, Mode: bo.Mode},
			{Name: vs, Client: bo.Client, ServerPID: bo.ServerPID, Mode: vs},
		},
		Rounds: rounds,
	})
	return reportComparison(a, cmp, err)
}

// warnSharedCPUs warns when this process may run on the server's CPUs.
func warnSharedCPUs(a *app, serverCPUs []int) {
	if own, err := bench.Affinity(0); err == nil && overlap(own, serverCPUs) {
		a.log.Warn("the load generator may run on the server's CPUs: pin them apart (taskset) for figures worth quoting",
			"server_cpus", serverCPUs, "bench_cpus", own)
	}
}

// reportComparison prints a comparison (bench.Compare's outcome cmp, err)
// and fails (exit 1) if a target had failed operations.
func reportComparison(a *app, cmp *bench.Comparison, err error) error {
	if err != nil {
		return err
	}
	if err := cmp.Format(a.stdout); err != nil {
		return err
	}
	for t, name := range cmp.Names {
		if s := cmp.Stat(t); s.Errors > 0 {
			return &exitError{1, fmt.Errorf("%s: %d operations failed", name, s.Errors)}
		}
	}
	return nil
}

// overlap reports whether two CPU lists share a CPU.
func overlap(a, b []int) bool {
	for _, x := range a {
		if slices.Contains(b, x) {
			return true
		}
	}
	return false
}
