package main

import (
	"context"
	"crypto"
	"crypto/rand"
	"crypto/sha256"
	"crypto/x509"
	"errors"
	"flag"
	"fmt"
	"net"
	"os"
	"strings"
	"time"

	"github.com/estca/estca/ca"
	"github.com/estca/estca/hsm"
	"github.com/estca/estca/store"
)

// Status values of a doctor finding.
const (
	findingOK   = "ok"
	findingWarn = "warn"
	findingFail = "fail"
)

// finding is one result of `estca doctor`.
type finding struct {
	// Check names the area: config, token, keys, certificates, store,
	// checkpoint, ports.
	Check   string `json:"check"`
	Status  string `json:"status"`
	Message string `json:"message"`
	// Fix says what to do; "" when the finding is ok.
	Fix string `json:"fix"`
}

// doctorReport is the outcome of `estca doctor` (--json prints it).
type doctorReport struct {
	Config string `json:"config"`
	// Healthy is false when any finding failed (exit 1).
	Healthy bool `json:"healthy"`
	// Serving is set when an estca serve answers on the admin socket.
	Serving  bool      `json:"serving"`
	Findings []finding `json:"findings"`
}

func (r *doctorReport) add(check, status, msg, fix string) {
	r.Findings = append(r.Findings, finding{Check: check, Status: status, Message: msg, Fix: fix})
}

func (r *doctorReport) ok(check, format string, a ...any) {
	r.add(check, findingOK, fmt.Sprintf(format, a...), "")
}

func doctorCommand() *command {
	var asJSON bool
	var warnWithin time.Duration
	return &command{
		name: "doctor", args: "[--json] [--warn-within DUR]",
		noArgs: true,
		summary: "Check the appliance; say what is wrong and how to fix it.\n\n" +
			"Checks the configuration, the HSM token\n" +
			"(module, token, PIN), the keys (issuing, server, audit: present, matching their certificates;\n" +
			"the server and audit keys also sign a test digest), certificate expiry (root, issuing CA, server: warn within --warn-within, fail when\n" +
			"expired), the policy (profiles, manufacturers and their certificate and CRL files, the kept CRL),\n" +
			"the store (opened read-only with the audit check, every page read; through the admin\n" +
			"socket while estca serve runs), the checkpoint, and the UDP, metrics and CRL ports (free, or held by\n" +
			"our own serve). Exit 0 when healthy (warnings allowed), 1 when anything failed.",
		flags: func(fs *flag.FlagSet) {
			fs.BoolVar(&asJSON, "json", false, "print the findings as a JSON object (fields: see README, JSON output)")
			fs.DurationVar(&warnWithin, "warn-within", 30*24*time.Hour, "warn about certificates that expire within `DUR`")
		},
		run: func(ctx context.Context, a *app, fs *flag.FlagSet, args []string) error {
			if warnWithin < 0 {
				return usageErrorf("--warn-within must not be negative")
			}
			rep := diagnose(a.configPath, warnWithin, time.Now())
			if asJSON {
				if err := printJSON(a, rep); err != nil {
					return err
				}
			} else {
				printReport(a, rep)
			}
			fails, _ := rep.counts()
			if fails > 0 {
				return fmt.Errorf("unhealthy: %d problem(s) found", fails)
			}
			return nil
		},
	}
}

func (r *doctorReport) counts() (fails, warns int) {
	for _, f := range r.Findings {
		switch f.Status {
		case findingFail:
			fails++
		case findingWarn:
			warns++
		}
	}
	return fails, warns
}

func printReport(a *app, r doctorReport) {
	fmt.Fprintf(a.stdout, "estca doctor: %s\n", r.Config)
	for _, f := range r.Findings {
		fmt.Fprintf(a.stdout, "%-5s %-13s %s\n", strings.ToUpper(f.Status), f.Check, f.Message)
		if f.Fix != "" {
			fmt.Fprintf(a.stdout, "      %-13s fix: %s\n", "", f.Fix)
		}
	}
	fails, warns := r.counts()
	if fails == 0 {
		fmt.Fprintf(a.stdout, "healthy (%d warning(s))\n", warns)
	} else {
		fmt.Fprintf(a.stdout, "unhealthy: %d problem(s), %d warning(s)\n", fails, warns)
	}
}

// diagnose runs every check; a check that needs what an earlier one found
// broken is left out (the earlier finding says why).
func diagnose(configPath string, warnWithin time.Duration, now time.Time) (r doctorReport) {
	r = doctorReport{Config: configPath, Findings: []finding{}}
	defer func() {
		fails, _ := r.counts()
		r.Healthy = fails == 0
	}()
	cfg, err := loadConfig(configPath)
	if err != nil {
		fix := "correct " + configPath + " (estca init writes a commented one; README: Configuration)"
		if _, serr := os.Stat(configPath); errors.Is(serr, os.ErrNotExist) {
			fix = "give the appliance's configuration with --config FILE, or create an appliance with estca init --dir DIR"
		}
		r.add("config", findingFail, err.Error(), fix)
		return r
	}
	r.ok("config", "%s is valid", configPath)
	for _, w := range cfg.warnings {
		r.add("config", findingWarn, w, "edit "+configPath+" as the warning says")
	}
	r.Serving = serverRunning(cfg)
	certs := doctorCertificates(&r, cfg, warnWithin, now)
	if tok := doctorToken(&r, cfg); tok != nil {
		doctorKeys(&r, cfg, tok, certs)
		tok.Close()
	}
	doctorPolicy(&r, cfg, configPath, certs)
	doctorStore(&r, cfg)
	doctorPorts(&r, cfg)
	return r
}

// doctorPolicy builds the policy as serve and a reload do (profiles,
// manufacturers with their certificate and CRL files) and reads the kept
// CRL, whose number the next CRL continues.
func doctorPolicy(r *doctorReport, cfg *Config, configPath string, h hierarchy) {
	if h.root != nil && h.issuing != nil {
		if _, err := cfg.policyOptions(h.root, h.issuing, h.server); err != nil {
			for _, p := range splitErrors(err) {
				r.add("policy", findingFail, p, "correct "+configPath+" or the file it names (README: Policy reference), then estca reload")
			}
		} else {
			r.ok("policy", "%d profiles, %d manufacturers: their certificate and CRL files read", len(cfg.Profiles), len(cfg.Manufacturers))
		}
	}
	if _, err := lastCRLNumber(cfg.path(cfg.CRL.Path)); err != nil {
		r.add("policy", findingFail, err.Error(), "move "+cfg.path(cfg.CRL.Path)+" away: estca serve publishes a new CRL at start")
	}
}

// hierarchy is what doctorCertificates read, for the key checks.
type hierarchy struct {
	root, issuing, server *x509.Certificate
	auditPub              crypto.PublicKey
}

func doctorCertificates(r *doctorReport, cfg *Config, warnWithin time.Duration, now time.Time) hierarchy {
	var h hierarchy
	read := func(name, path, fix string) *x509.Certificate {
		c, err := readCert(cfg.path(path))
		if err != nil {
			r.add("certificates", findingFail, fmt.Sprintf("%s certificate: %v", name, err), fix)
			return nil
		}
		return c
	}
	importFix := "restore the ca/ directory from a backup of the appliance"
	if cfg.CA.ExternalRoot {
		importFix = "an external-root appliance (ca.external_root): have " + cfg.path("ca/issuing.csr") + " signed by your root, then estca ca import"
	}
	h.root = read("root CA", cfg.CA.Root, importFix)
	h.issuing = read("issuing CA", cfg.CA.Issuing, importFix)
	h.server = read("server", cfg.CA.ServerCert, "estca ca reissue-server --new-key")
	reissue := "estca ca reissue-server (add --server-name/--server-ip as devices need), then restart estca serve"
	renewCA := "the issuing CA must be renewed: have your root sign a new issuing CA certificate for the key (estca ca import), or set up a new appliance"
	for _, x := range []struct {
		name string
		c    *x509.Certificate
		fix  string
	}{{"root CA", h.root, renewCA}, {"issuing CA", h.issuing, renewCA}, {"server", h.server, reissue}} {
		if x.c == nil {
			continue
		}
		left := x.c.NotAfter.Sub(now)
		switch {
		case now.Before(x.c.NotBefore):
			r.add("certificates", findingFail, fmt.Sprintf("%s certificate %s is not valid before %s (the clock, or a certificate from the future)",
				x.name, x.c.Subject, x.c.NotBefore.UTC().Format(time.RFC3339)), "check the system clock (timedatectl)")
		case left <= 0:
			r.add("certificates", findingFail, fmt.Sprintf("%s certificate %s expired %s (%s ago)",
				x.name, x.c.Subject, x.c.NotAfter.UTC().Format(time.RFC3339), days(-left)), x.fix)
		case left <= warnWithin:
			r.add("certificates", findingWarn, fmt.Sprintf("%s certificate %s expires %s (in %s)",
				x.name, x.c.Subject, x.c.NotAfter.UTC().Format(time.RFC3339), days(left)), x.fix)
		default:
			r.ok("certificates", "%s certificate %s valid until %s (%s)", x.name, x.c.Subject, x.c.NotAfter.UTC().Format(time.RFC3339), days(left))
		}
	}
	if h.issuing != nil && h.root != nil {
		if err := h.issuing.CheckSignatureFrom(h.root); err != nil {
			r.add("certificates", findingFail, "the issuing CA certificate is not signed by the root CA certificate: "+err.Error(), importFix)
		}
	}
	if h.server != nil && h.issuing != nil {
		if err := h.server.CheckSignatureFrom(h.issuing); err != nil {
			r.add("certificates", findingFail, "the server certificate is not signed by the issuing CA: "+err.Error(), reissue)
		}
	}
	pub, err := readAuditPublic(cfg)
	if err != nil {
		r.add("certificates", findingFail, err.Error(), "restore "+cfg.path(cfg.CA.AuditPublic)+" from a backup (it is the public half of the audit key in the token)")
	} else {
		h.auditPub = pub
	}
	return h
}

// days renders a duration in days (hours below two days).
func days(d time.Duration) string {
	if d < 48*time.Hour {
		return d.Round(time.Minute).String()
	}
	return fmt.Sprintf("%d days", int(d.Hours()/24))
}

func doctorToken(r *doctorReport, cfg *Config) *hsm.Token {
	tok, err := openToken(cfg, nil)
	if err == nil {
		where := cfg.HSM.URI
		if where == "" {
			where = fmt.Sprintf("token %q, module %s", cfg.HSM.Token, cfg.path(cfg.HSM.Module))
		}
		r.ok("token", "%s: logged in (PIN accepted)", where)
		return tok
	}
	fix := "check hsm.* in the configuration"
	switch {
	case errors.Is(err, hsm.ErrModule):
		fix = "hsm.module must name the PKCS#11 library (SoftHSM: install the Debian package softhsm2)"
	case errors.Is(err, hsm.ErrTokenNotFound):
		fix = "hsm.token (or hsm.uri) must name a token the module has: list them with softhsm2-util --show-slots or your HSM's tool"
	case errors.Is(err, hsm.ErrNoPIN):
		fix = "put the user PIN in the file hsm.pin_file names (mode 0600), or in $" + pinEnv
	case errors.Is(err, hsm.ErrPIN):
		fix = "the PIN was rejected: correct hsm.pin_file or $" + pinEnv + " (repeated wrong PINs can lock the token)"
	case strings.Contains(err.Error(), "token directory"):
		fix = "the embedded SoftHSM token directory is missing: restore " + cfg.path("hsm/tokens") + " from a backup of the whole appliance directory"
	}
	r.add("token", findingFail, err.Error(), fix)
	return nil
}

// doctorKeys checks that each key is in the token and matches its
// certificate (or the published audit key); the server and audit keys also
// sign a test digest. The issuing CA key signs certificates only: it is
// not made to sign anything else.
func doctorKeys(r *doctorReport, cfg *Config, tok *hsm.Token, h hierarchy) {
	check := func(name, label string, pub crypto.PublicKey, against, fix string, sign bool) {
		k, err := tok.FindKey(label)
		if err != nil {
			r.add("keys", findingFail, fmt.Sprintf("%s key %q: %v", name, label, err), fix)
			return
		}
		if pub == nil {
			return // its certificate is missing: said above
		}
		if pk, ok := k.Public().(interface{ Equal(crypto.PublicKey) bool }); !ok || !pk.Equal(pub) {
			r.add("keys", findingFail, fmt.Sprintf("%s key %q does not match %s", name, label, against), fix)
			return
		}
		if !sign {
			r.ok("keys", "%s key %q present, matches %s", name, label, against)
			return
		}
		digest := sha256.Sum256([]byte("estca doctor"))
		if _, err := ca.VerifySigner(k, pub, nil).Sign(rand.Reader, digest[:], crypto.SHA256); err != nil {
			r.add("keys", findingFail, fmt.Sprintf("%s key %q does not sign: %v", name, label, err), "check the HSM")
			return
		}
		r.ok("keys", "%s key %q present, signs, matches %s", name, label, against)
	}
	pubOf := func(c *x509.Certificate) crypto.PublicKey {
		if c == nil {
			return nil
		}
		return c.PublicKey
	}
	check("issuing", cfg.CA.IssuingKey, pubOf(h.issuing), "the issuing CA certificate", "ca.issuing_key must name the issuing CA's key in the token, and ca.issuing its certificate", false)
	check("server", cfg.CA.ServerKey, pubOf(h.server), "the server certificate", "estca ca reissue-server --new-key (server stopped) makes a new key and certificate", true)
	check("audit", cfg.CA.AuditKey, h.auditPub, "the published audit public key", "ca.audit_key must name the audit key in the token, and ca.audit_public its public key", true)
}

func doctorStore(r *doctorReport, cfg *Config) {
	path := cfg.path(cfg.Store.Path)
	cpPath := cfg.path(cfg.Store.Checkpoint)
	if _, err := store.ReadCheckpoint(cpPath); err != nil {
		fix := "put back the checkpoint you keep off the box, or after estca audit verify: estca audit checkpoint --reset --reason TEXT (server stopped)"
		r.add("checkpoint", findingFail, err.Error(), fix)
	} else {
		r.ok("checkpoint", "%s present", cpPath)
	}
	if r.Serving {
		rep, err := newAdminClient(cfg.path(cfg.EST.AdminSocket)).Check()
		if err != nil {
			r.add("store", findingFail, "through estca serve's admin socket: "+err.Error(), "stop estca serve and restore a backup (estca restore FILE)")
			return
		}
		r.ok("store", "%s: checked through estca serve (%d pages, %d bytes)", path, rep.Pages, rep.FileSize)
		return
	}
	pub, err := readAuditPublic(cfg)
	if err != nil {
		pub = nil // said under certificates; open without the audit check
	}
	o := storeOptions(cfg, nil, pub)
	o.CheckPages = -1
	db, err := store.Open(path, o)
	if err != nil {
		fix := "restore a backup (estca restore FILE)"
		switch {
		case errors.Is(err, store.ErrLocked):
			r.add("store", findingFail, fmt.Sprintf("%s is locked by another process, and no estca serve answers on %s", path, cfg.path(cfg.EST.AdminSocket)),
				"find the process holding it (fuser -v "+path+") and stop it: another estca command still running, or a server whose admin socket is gone")
			return
		case errors.Is(err, store.ErrVersion):
			fix = "stop estca serve, then estca store migrate"
		case errors.Is(err, store.ErrCheckpoint):
			fix = "compare with the checkpoint you keep off the box (estca audit verify --checkpoint FILE); restore a backup, or acknowledge with estca audit checkpoint --reset --reason TEXT"
		case isAuditFailure(err):
			fix = "estca audit verify names the damage; restore a backup (estca restore FILE)"
		}
		r.add("store", findingFail, err.Error(), fix)
		return
	}
	defer db.Close()
	rep, err := db.Check()
	if err != nil {
		r.add("store", findingFail, err.Error(), "restore a backup (estca restore FILE)")
		return
	}
	n, _ := db.CountCertificates()
	r.ok("store", "%s opens, audit chain extends the checkpoint, %d pages read (%d bytes, %d certificates)", path, rep.Pages, rep.FileSize, n)
}

func doctorPorts(r *doctorReport, cfg *Config) {
	if r.Serving {
		r.ok("ports", "UDP %s, metrics %s and CRL %s are estca serve's (it answers on its admin socket)", cfg.EST.Listen,
			dash(cfg.EST.MetricsListen), dash(cfg.CRL.Listen))
		return
	}
	if c, err := net.ListenPacket("udp", cfg.EST.Listen); err != nil {
		r.add("ports", findingFail, fmt.Sprintf("UDP %s (est.listen) cannot be bound: %v", cfg.EST.Listen, err),
			"another process holds it (ss -ulpn | grep "+portOf(cfg.EST.Listen)+"): stop it, or change est.listen")
	} else {
		c.Close()
		r.ok("ports", "UDP %s (est.listen) is free", cfg.EST.Listen)
	}
	for _, p := range []struct{ key, addr string }{{"est.metrics_listen", cfg.EST.MetricsListen}, {"crl.listen", cfg.CRL.Listen}} {
		if p.addr == "" {
			continue
		}
		if l, err := net.Listen("tcp", p.addr); err != nil {
			r.add("ports", findingFail, fmt.Sprintf("TCP %s (%s) cannot be bound: %v", p.addr, p.key, err),
				"another process holds it (ss -tlpn | grep "+portOf(p.addr)+"): stop it, or change "+p.key)
		} else {
			l.Close()
			r.ok("ports", "TCP %s (%s) is free", p.addr, p.key)
		}
	}
	if _, err := os.Stat(cfg.path(cfg.EST.AdminSocket)); err == nil {
		r.ok("ports", "%s is a stale admin socket (nobody answers); estca serve replaces it", cfg.path(cfg.EST.AdminSocket))
	}
}

func portOf(addr string) string {
	if _, p, err := net.SplitHostPort(addr); err == nil {
		return ":" + p
	}
	return addr
}
