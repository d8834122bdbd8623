package main

import (
	"errors"
	"os"
	"path/filepath"
	"strings"
	"testing"

	"github.com/estca/estca/hsm"
)

// TestConfigErrorsByPath: configuration errors name the key by its path,
// in words (never a Go type name), all at once; zero and negative
// durations are errors, not defaults; a removed key is a warning.
func TestConfigErrorsByPath(t *testing.T) {
	t.Parallel()
	base := "hsm: {module: /x.so, token: t}\n"
	cases := []struct {
		name, yaml string
		want       []string
	}{
		{"unknown key", base + "est:\n  listen: \":5684\"\n  bogus_key: 1\n", []string{"est.bogus_key: unknown key (line 4)"}},
		{"unknown top-level key", base + "bogus: 1\n", []string{"bogus: unknown key (line 2)"}},
		{"unknown key in a list", base + "profiles:\n  - name: a\n  - name: b\n    colour: red\n", []string{"profiles[1].colour: unknown key (line 5)"}},
		{"zero validity", base + "profiles: [{name: a, validity: 0s}]\n", []string{`profiles[0].validity: must be positive, not "0s"`}},
		{"zero validity without unit", base + "profiles: [{name: a, validity: 0}]\n", []string{`profiles[0].validity: must be positive, not "0"`}},
		{"negative validity", base + "profiles: [{name: a, validity: -24h}]\n", []string{`profiles[0].validity: must be positive, not "-24h"`}},
		{"zero lock timeout", base + "store: {lock_timeout: 0s}\n", []string{`store.lock_timeout: must be positive`}},
		{"bad duration", base + "store: {lock_timeout: soon}\n", []string{`store.lock_timeout: invalid duration "soon"`}},
		{"number expected", base + "est: {max_body: lots}\n", []string{`est.max_body: want a whole number, not "lots"`}},
		{"bool expected", base + "ca: {external_root: perhaps}\n", []string{`ca.external_root: want true or false, not "perhaps"`}},
		{"list expected", base + "est: {cipher_suites: TLS_ECDHE_ECDSA_WITH_AES_128_CCM_8}\n", []string{`est.cipher_suites: want a list`}},
		{"mapping expected", base + "store: /var/lib/estca\n", []string{`store: want a mapping of keys`}},
		{"zero CRL refresh", base + "crl: {refresh: 0s}\n", []string{`crl.refresh: must be positive, not "0s" (line 2)`}},
		{"negative rate window", base + "profiles: [{name: a, rate_limit: {count: 2, window: -1h}}]\n", []string{`profiles[0].rate_limit.window: must be positive, not "-1h"`}},
		{"unknown policy key", base + "policy: {reserved: [x]}\n", []string{"policy.reserved: unknown key (line 2)"}},
		{"unknown SAN key", base + "profiles: [{name: a, san: {dns: {allow: [a.test], max_count: 1}}}]\n", []string{"profiles[0].san.dns.max_count: unknown key"}},
		{"unknown manufacturer key", base + "manufacturers: [{name: m, roots: [r.pem], tolerate_expiration: true}]\n", []string{"manufacturers[0].tolerate_expiration: unknown key"}},
		{"zero cookie rotation", base + "est: {cookie_rotation: 0s}\n", []string{`est.cookie_rotation: must be positive, not "0s" (line 2)`}},
		{"negative handshake wait", base + "est: {handshake_max_wait: -1s}\n", []string{`est.handshake_max_wait: must be positive, not "-1s"`}},
		{"est limit not a number", base + "est: {max_sessions_per_identity: many}\n", []string{`est.max_sessions_per_identity: want a whole number, not "many"`}},
		{"everything at once", base + "est: {bogus_key: 1, max_body: lots, extended_master_secret: maybe}\nprofiles: [{name: a, validity: 0s}]\n",
			[]string{"est.bogus_key: unknown key", "est.max_body: want a whole number", "profiles[0].validity: must be positive", "extended_master_secret"}},
	}
	goNames := []string{"main.", "int", "!!", "yaml:", "field ", "type "}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			_, err := parseConfig([]byte(tc.yaml), t.TempDir())
			if err == nil {
				t.Fatal("config accepted")
			}
			msg := err.Error()
			for _, w := range tc.want {
				if !strings.Contains(msg, w) {
					t.Errorf("error lacks %q:\n%s", w, msg)
				}
			}
			for _, g := range goNames {
				if strings.Contains(strings.ReplaceAll(msg, "whole number", ""), g) {
					t.Errorf("error shows %q:\n%s", g, msg)
				}
			}
		})
	}

	// Left out or empty: the default. A removed key: a warning, no effect.
	c, err := parseConfig([]byte(base+"profiles: [{name: a, validity: }]\nstore:\n  max_batch_delay: 1ms\n"), t.TempDir())
	if err != nil {
		t.Fatal(err)
	}
	if c.Profiles[0].Validity.D() != 365*24*60*60*1e9 || len(c.warnings) != 1 ||
		!strings.Contains(c.warnings[0], "store.max_batch_delay (line 4) is ignored") {
		t.Fatalf("validity %v, warnings %q", c.Profiles[0].Validity.D(), c.warnings)
	}
}

// TestConfigRemovedKeyLogged: a command on an appliance whose estca.yaml
// still has a removed key works and says, once, that the key is ignored.
// TestConfigSignWithTokenObjects: hsm.sign_with_token_objects is off by
// default and decoded when set.
func TestConfigSignWithTokenObjects(t *testing.T) {
	t.Parallel()
	for _, c := range []struct {
		yaml string
		want bool
	}{
		{"hsm: {module: /x.so, token: t}\n", false},
		{"hsm: {module: /x.so, token: t, sign_with_token_objects: true}\n", true},
	} {
		cfg, err := parseConfig([]byte(c.yaml), t.TempDir())
		if err != nil {
			t.Fatalf("%q: %v", c.yaml, err)
		}
		if cfg.HSM.SignWithTokenObjects != c.want {
			t.Errorf("%q: SignWithTokenObjects = %v, want %v", c.yaml, cfg.HSM.SignWithTokenObjects, c.want)
		}
	}
}

func TestConfigRemovedKeyLogged(t *testing.T) {
	dir, cfg := newAppliance(t)
	editConfig(t, cfg, "store:\n", "store:\n  max_batch_delay: 1ms\n")
	code, out, errs := estca(t, "--config", cfg, "certs", "list")
	if code != 0 || !strings.Contains(out, "SERIAL") || strings.Count(errs, "store.max_batch_delay") != 1 || !strings.Contains(errs, "level=WARN") {
		t.Fatalf("exit %d\nstdout: %s\nstderr: %s", code, out, errs)
	}
	_ = dir
}

// TestReadPIN: cmd/estca is where the HSM PIN is read (hsm reads none):
// $ESTCA_HSM_PIN wins, else hsm.pin_file relative to the appliance, one
// trailing LF or CRLF trimmed; missing, empty and unset sources are
// hsm.ErrNoPIN errors that do not carry the PIN.
func TestReadPIN(t *testing.T) {
	dir := t.TempDir()
	write := func(name, body string) string {
		if err := os.WriteFile(filepath.Join(dir, name), []byte(body), 0o600); err != nil {
			t.Fatal(err)
		}
		return name
	}
	for _, tc := range []struct {
		name, file, env, want string
	}{
		{"file", write("lf.pin", "1234\n"), "", "1234"},
		{"file with CRLF", write("crlf.pin", "1234\r\n"), "", "1234"},
		{"file without newline", write("bare.pin", "1234"), "", "1234"},
		{"only one newline trimmed", write("two.pin", "1234\n\n"), "", "1234\n"},
		{"env wins over the file", write("wrong.pin", "wrong\n"), "5678", "5678"},
		{"env without a file", "", "5678", "5678"},
		{"empty file", write("empty.pin", "\n"), "", ""},
		{"missing file", "missing.pin", "", ""},
		{"no source", "", "", ""},
	} {
		t.Run(tc.name, func(t *testing.T) {
			t.Setenv(pinEnv, tc.env)
			c := &Config{dir: dir}
			c.HSM.PINFile = tc.file
			pin, err := readPIN(c)
			if tc.want == "" {
				if !errors.Is(err, hsm.ErrNoPIN) {
					t.Fatalf("readPIN = %q, %v; want hsm.ErrNoPIN", pin, err)
				}
				return
			}
			if err != nil || string(pin) != tc.want {
				t.Fatalf("readPIN = %q, %v; want %q", pin, err, tc.want)
			}
		})
	}
}
