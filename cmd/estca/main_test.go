package main

import (
	"bytes"
	"context"
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/x509"
	"crypto/x509/pkix"
	"encoding/json"
	"errors"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/estca/estca/policy/pkitest"
)

// estca runs one command line in-process and returns its exit code and outputs.
func estca(t *testing.T, args ...string) (int, string, string) {
	t.Helper()
	var out, errb bytes.Buffer
	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Minute)
	defer cancel()
	code := run(ctx, args, &out, &errb)
	return code, out.String(), errb.String()
}

// mustEstca runs a command that must succeed.
func mustEstca(t *testing.T, args ...string) string {
	t.Helper()
	code, out, errs := estca(t, args...)
	if code != 0 {
		t.Fatalf("estca %s: exit %d\nstdout: %s\nstderr: %s", strings.Join(args, " "), code, out, errs)
	}
	return out
}

func requireTools(t *testing.T, tools ...string) {
	t.Helper()
	for _, tool := range tools {
		pkitest.RequireTool(t, tool)
	}
}

// newAppliance initialises an appliance in a temporary directory and returns
// its config path.
func newAppliance(t *testing.T, extra ...string) (dir, cfg string) {
	t.Helper()
	requireTools(t, "softhsm2-util", "openssl")
	dir = filepath.Join(t.TempDir(), "x")
	mustEstca(t, append([]string{"init", "--dir", dir, "--server-name", "estca.test"}, extra...)...)
	return dir, filepath.Join(dir, "estca.yaml")
}

func writeCSR(t *testing.T, path, cn string) {
	t.Helper()
	key, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		t.Fatal(err)
	}
	// The local operator's CSR names the certificate itself (no identity
	// to bind it to); default profiles allow no DNS names.
	der, err := x509.CreateCertificateRequest(rand.Reader, &x509.CertificateRequest{
		Subject: pkix.Name{CommonName: cn, Organization: []string{"estca test"}, SerialNumber: cn},
	}, key)
	if err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(path, der, 0o600); err != nil {
		t.Fatal(err)
	}
}

func openssl(t *testing.T, args ...string) string {
	t.Helper()
	out, err := exec.Command("openssl", args...).CombinedOutput()
	if err != nil {
		t.Fatalf("openssl %s: %v\n%s", strings.Join(args, " "), err, out)
	}
	return string(out)
}

// TestInitIssueVerify is the acceptance path of the CA core: init, issue from
// a CSR file, openssl verifies the chain, the audit chain verifies.
func TestInitIssueVerify(t *testing.T) {
	dir, cfg := newAppliance(t)
	csr := filepath.Join(t.TempDir(), "c.der")
	writeCSR(t, csr, "device-0001")

	out := mustEstca(t, "--config", cfg, "issue", "--csr", csr, "--profile", "default")
	leaf := filepath.Join(t.TempDir(), "leaf.pem")
	if err := os.WriteFile(leaf, []byte(out), 0o600); err != nil {
		t.Fatal(err)
	}
	got := openssl(t, "verify", "-CAfile", filepath.Join(dir, "ca", "root.pem"),
		"-untrusted", filepath.Join(dir, "ca", "issuing.pem"), leaf)
	if !strings.Contains(got, ": OK") {
		t.Fatalf("openssl verify: %s", got)
	}
	text := openssl(t, "x509", "-in", leaf, "-noout", "-subject")
	if !strings.Contains(text, "CN = device-0001") || !strings.Contains(text, "serialNumber = device-0001") {
		t.Fatalf("subject not carried over:\n%s", text)
	}

	// The same CSR again gives the same certificate, not a second one.
	again := mustEstca(t, "--config", cfg, "issue", "--csr", csr)
	if again != out {
		t.Fatal("re-sent CSR got a different certificate")
	}
	list := mustEstca(t, "--config", cfg, "certs", "list", "--json")
	var certs []certView
	if err := json.Unmarshal([]byte(list), &certs); err != nil {
		t.Fatalf("certs list --json: %v\n%s", err, list)
	}
	if len(certs) != 1 {
		t.Fatalf("store holds %d certificates, want 1", len(certs))
	}
	show := mustEstca(t, "--config", cfg, "certs", "show", certs[0].Serial)
	if !strings.Contains(show, "BEGIN CERTIFICATE") {
		t.Fatalf("certs show: %s", show)
	}

	if v := mustEstca(t, "--config", cfg, "audit", "verify"); !strings.Contains(v, "audit chain ok") {
		t.Fatalf("audit verify: %s", v)
	}
	audit := mustEstca(t, "--config", cfg, "audit", "list", "--serial", certs[0].Serial)
	if !strings.Contains(audit, "issued") {
		t.Fatalf("audit list has no issued record for %s:\n%s", certs[0].Serial, audit)
	}
	bk := filepath.Join(t.TempDir(), "backup.db")
	if b := mustEstca(t, "--config", cfg, "backup", bk); !strings.Contains(b, "verified") {
		t.Fatalf("backup: %s", b)
	}
}

func TestConfigStrict(t *testing.T) {
	t.Parallel()
	cases := []struct {
		name, yaml string
		want       []string
	}{
		{"unknown key", "hsm: {module: /x.so, token: t}\nbogus: 1\n", []string{"bogus"}},
		{"all problems at once", "hsm: {}\nest: {extended_master_secret: maybe, max_body: 10}\nprofiles: [{name: a, validity: 1m, key_usage: {ecdsa: [flying]}}]\ndefault_profile: b\n",
			[]string{"hsm.module", "hsm.token", "extended_master_secret", "max_body", "validity", "flying", "default_profile"}},
		{"bad duration", "hsm: {module: /x.so, token: t}\nstore: {lock_timeout: soon}\n", []string{"invalid duration"}},
		{"est limits", "hsm: {module: /x.so, token: t}\nest: {dtls_mtu: 100, max_message_size: 9000, max_sessions_per_identity: -1, blockwise_per_identity: -2, response_cache_bytes: 100, handshake_max_wait: 10s, cookie_rotation: 10ms, audit_interval: 1ms}\n",
			[]string{"dtls_mtu", "max_message_size", "max_sessions_per_identity", "blockwise_per_identity", "response_cache_bytes", "handshake_max_wait", "cookie_rotation", "audit_interval"}},
		{"decode and validation problems together", "hsm: {module: /x.so, token: t, uri: \"pkcs11:token=t?pin-value=1234\"}\nstore: {lock_timeout: soon}\nest:\n  max_sessions: -5\n  max_body: lots\nprofiles: [{name: a, key_usage: {ecdsa: [flying]}}]\nbogus: 1\n",
			[]string{"invalid duration", "lots", "max_sessions", "flying", "bogus", "pin-value"}},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			_, err := parseConfig([]byte(tc.yaml), t.TempDir())
			if err == nil {
				t.Fatal("config accepted")
			}
			for _, w := range tc.want {
				if !strings.Contains(err.Error(), w) {
					t.Errorf("error does not mention %q: %v", w, err)
				}
			}
		})
	}
	if _, err := parseConfig([]byte(renderConfig(configValues{Module: "/x.so", Token: "t", KeyType: "ecdsa-p256", Demo: true})), t.TempDir()); err != nil {
		t.Fatalf("generated config rejected: %v", err)
	}
	ok := "hsm: {module: /x.so, token: t}\nest: {dtls_mtu: 600, max_message_size: 1152, max_sessions_per_prefix: 64, max_sessions_per_identity: 2, max_handshakes: 100, max_handshakes_per_prefix: 8, handshake_burst: 5, handshake_max_wait: 200ms, cookie_rotation: 1m, blockwise_per_session: 2, blockwise_per_identity: 4, blockwise_total: 512, response_cache_entries: 2, response_cache_bytes: 2048, audit_interval: 30s}\n"
	if c, err := parseConfig([]byte(ok), t.TempDir()); err != nil || c.EST.DTLSMTU != 600 || c.EST.BlockTransfersIdentity != 4 || c.EST.AuditInterval.D() != 30*time.Second {
		t.Fatalf("est limits: %v %+v", err, c)
	}
}

// TestHSMErrors: a wrong PIN, a missing token and a missing module each give
// one clear error before anything else happens.
func TestHSMErrors(t *testing.T) {
	dir, cfg := newAppliance(t)
	csr := filepath.Join(t.TempDir(), "c.der")
	writeCSR(t, csr, "hsm-errors")
	orig, err := os.ReadFile(cfg)
	if err != nil {
		t.Fatal(err)
	}
	variant := func(name, from, to string) string {
		p := filepath.Join(dir, name+".yaml")
		body := strings.Replace(string(orig), from, to, 1)
		if body == string(orig) {
			t.Fatalf("%q not in the config", from)
		}
		if err := os.WriteFile(p, []byte(body), 0o600); err != nil {
			t.Fatal(err)
		}
		return p
	}
	cases := []struct {
		name, cfg, env, want string
	}{
		{"wrong PIN", cfg, "not-the-pin", "pin rejected"},
		{"missing token", variant("notoken", "token: estca", "token: nosuchtoken"), "", "token"},
		{"missing module", variant("nomodule", "module: /", "module: /nonexistent/"), "", "module"},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			if tc.env != "" {
				t.Setenv("ESTCA_HSM_PIN", tc.env)
			}
			code, _, errs := estca(t, "--config", tc.cfg, "issue", "--csr", csr)
			if code != 1 || !strings.Contains(errs, tc.want) || strings.Count(strings.TrimSpace(errs), "\n") > 0 {
				t.Fatalf("exit %d, want one line mentioning %q:\n%s", code, tc.want, errs)
			}
			if tc.env != "" && strings.Contains(errs, tc.env) {
				t.Fatal("the PIN appears in the error")
			}
		})
	}
}

// TestCopiedAppliance copies a whole appliance with cp -a, as an operator
// moving or restoring one would, moves the original away, and shows that the
// copy issues with its own token; without its own token the copy fails
// rather than use the original's. The SO PIN is not kept unless asked for;
// an appliance from before (absolute token path, so.pin on disk) still works.
func TestCopiedAppliance(t *testing.T) {
	dir, _ := newAppliance(t)
	if _, err := os.Stat(filepath.Join(dir, "hsm", "so.pin")); !errors.Is(err, os.ErrNotExist) {
		t.Fatalf("init kept the SO PIN: %v", err)
	}
	copyDir := filepath.Join(t.TempDir(), "copy")
	if out, err := exec.Command("cp", "-a", dir, copyDir).CombinedOutput(); err != nil {
		t.Fatalf("cp -a: %v\n%s", err, out)
	}
	if err := os.Rename(dir, dir+".away"); err != nil {
		t.Fatal(err)
	}
	copyCfg := filepath.Join(copyDir, "estca.yaml")
	csr := filepath.Join(t.TempDir(), "c.der")
	writeCSR(t, csr, "copied")
	leaf := filepath.Join(t.TempDir(), "leaf.pem")
	mustEstca(t, "--config", copyCfg, "issue", "--csr", csr, "--out", leaf)
	if v := openssl(t, "verify", "-CAfile", filepath.Join(copyDir, "ca", "root.pem"),
		"-untrusted", filepath.Join(copyDir, "ca", "issuing.pem"), leaf); !strings.Contains(v, ": OK") {
		t.Fatalf("openssl verify: %s", v)
	}
	eff, err := os.ReadFile(filepath.Join(copyDir, "hsm", "softhsm2.effective.conf"))
	if err != nil || !strings.Contains(string(eff), "directories.tokendir = "+filepath.Join(copyDir, "hsm", "tokens")+"\n") {
		t.Fatalf("effective SoftHSM configuration of the copy (%v):\n%s", err, eff)
	}

	// Original back, the copy's own token gone: the copy must fail.
	if err := os.Rename(dir+".away", dir); err != nil {
		t.Fatal(err)
	}
	if err := os.Rename(filepath.Join(copyDir, "hsm", "tokens"), filepath.Join(copyDir, "hsm", "tokens.away")); err != nil {
		t.Fatal(err)
	}
	writeCSR(t, csr, "copy-without-token")
	if code, _, errs := estca(t, "--config", copyCfg, "issue", "--csr", csr); code != 1 || !strings.Contains(errs, "token directory "+filepath.Join(copyDir, "hsm", "tokens")+" of") {
		t.Fatalf("copy without its token: exit %d, %s", code, errs)
	}

	// An appliance from before: absolute token directory, SO PIN on disk.
	conf := filepath.Join(dir, "hsm", "softhsm2.conf")
	b, err := os.ReadFile(conf)
	if err != nil {
		t.Fatal(err)
	}
	legacy := strings.Replace(string(b), "directories.tokendir = tokens\n", "directories.tokendir = "+filepath.Join(dir, "hsm", "tokens")+"\n", 1)
	if legacy == string(b) {
		t.Fatalf("no relative token directory in:\n%s", b)
	}
	if err := os.WriteFile(conf, []byte(legacy), 0o600); err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(filepath.Join(dir, "hsm", "so.pin"), []byte("legacy-so-pin\n"), 0o600); err != nil {
		t.Fatal(err)
	}
	writeCSR(t, csr, "legacy")
	mustEstca(t, "--config", filepath.Join(dir, "estca.yaml"), "issue", "--csr", csr)

	kept, _ := newAppliance(t, "--keep-so-pin")
	if fi, err := os.Stat(filepath.Join(kept, "hsm", "so.pin")); err != nil || fi.Mode().Perm() != 0o600 {
		t.Fatalf("--keep-so-pin: %v", err)
	}
}
