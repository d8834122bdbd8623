package main

import (
	"context"
	"crypto/sha256"
	"encoding/hex"
	"encoding/json"
	"encoding/pem"
	"flag"
	"fmt"
	"maps"
	"os"
	"path/filepath"
	"reflect"
	"regexp"
	"slices"
	"strings"
	"testing"
	"time"
)

var snakeKey = regexp.MustCompile(`^[a-z][a-z0-9]*(_[a-z0-9]+)*$`)

// checkSnakeJSON parses out as JSON and fails the test on any object key,
// at any depth, that is not snake_case; it returns the parsed value.
func checkSnakeJSON(t *testing.T, what, out string) any {
	t.Helper()
	var v any
	if err := json.Unmarshal([]byte(out), &v); err != nil {
		t.Fatalf("%s: not JSON: %v\n%s", what, err, out)
	}
	for _, bad := range snakeViolations(v) {
		t.Errorf("%s: %s", what, bad)
	}
	return v
}

// wantObject checks that a parsed JSON value is an object with exactly
// the documented keys (every key always present, none undocumented) and
// returns it.
func wantObject(t *testing.T, what string, v any, keys ...string) map[string]any {
	t.Helper()
	m, ok := v.(map[string]any)
	if !ok {
		t.Fatalf("%s: %T, want an object", what, v)
	}
	got := slices.Sorted(maps.Keys(m))
	want := slices.Sorted(slices.Values(keys))
	if !slices.Equal(got, want) {
		t.Errorf("%s: keys %v, want %v", what, got, want)
	}
	return m
}

// snakeViolations walks a parsed JSON value and names every object key
// that is not snake_case, with its path.
func snakeViolations(v any) []string {
	var out []string
	var walk func(path string, v any)
	walk = func(path string, v any) {
		switch x := v.(type) {
		case map[string]any:
			for k, e := range x {
				if !snakeKey.MatchString(k) {
					out = append(out, fmt.Sprintf("key %q at %s is not snake_case", k, path))
				}
				walk(path+"."+k, e)
			}
		case []any:
			for i, e := range x {
				walk(fmt.Sprintf("%s[%d]", path, i), e)
			}
		}
	}
	walk("$", v)
	return out
}

// TestSnakeChecker: the checker catches what it must (a checker that
// cannot fail proves nothing).
func TestSnakeChecker(t *testing.T) {
	t.Parallel()
	for doc, want := range map[string]int{`{"Serial":1}`: 1, `[{"a":{"notAfter":2}}]`: 1, `{"a":[{"x":{"b-c":1}}]}`: 1,
		`{"_x":1}`: 1, `{"a__b":1,"C":2}`: 2, `{"not_after":[{"serial_2":"X"}]}`: 0} {
		var v any
		if err := json.Unmarshal([]byte(doc), &v); err != nil {
			t.Fatal(err)
		}
		if got := snakeViolations(v); len(got) != want {
			t.Errorf("%s: %d violations %v, want %d", doc, len(got), got, want)
		}
	}
}

// expectPlainFailure runs estca and wants exit 1, nothing on stdout and a
// message containing want on stderr, in plain words: no HTTP status of the
// admin socket, no store package prefix. It returns stderr.
func expectPlainFailure(t *testing.T, want string, args ...string) string {
	t.Helper()
	code, out, errs := estca(t, args...)
	if code != exitFailure || out != "" || !strings.Contains(errs, want) {
		t.Fatalf("estca %s: exit %d, want 1 and %q\nstdout: %s\nstderr: %s", strings.Join(args, " "), code, want, out, errs)
	}
	for _, bad := range []string{"Internal Server Error", "Unprocessable", "Conflict", "Service Unavailable", "400 Bad Request",
		"404 Not Found", "202 Accepted", "admin socket", "store:"} {
		if strings.Contains(errs, bad) {
			t.Fatalf("estca %s says %q:\n%s", strings.Join(args, " "), bad, errs)
		}
	}
	return errs
}

// lastLine is the last non-empty line of s.
func lastLine(s string) string {
	lines := strings.Split(strings.TrimRight(s, "\n"), "\n")
	return lines[len(lines)-1]
}

// TestUsageErrors: every wrong command line exits 2 with the error as the
// last line of stderr (after the usage), nothing on stdout; help that is
// asked for exits 0 on stdout.
func TestUsageErrors(t *testing.T) {
	cfg := filepath.Join(t.TempDir(), "none.yaml")
	cases := []struct {
		args []string
		last string // substring of the last stderr line
	}{
		{nil, "estca: a command is required"},
		{[]string{"frobnicate"}, `unknown command "frobnicate"`},
		{[]string{"--bogus", "certs", "list"}, "estca: unknown flag --bogus"},
		{[]string{"certs"}, "estca certs: a subcommand is required"},
		{[]string{"ca", "frob"}, `estca ca: unknown subcommand "frob"`},
		{[]string{"certs", "show"}, "estca certs show: one SERIAL is required"},
		{[]string{"certs", "show", "zz:yy"}, `estca certs show: serial "zz:yy"`},
		{[]string{"certs", "show", "0a", "0b"}, "one SERIAL is required, got 2 arguments"},
		{[]string{"certs", "list", "--bogus"}, "estca certs list: unknown flag --bogus"},
		{[]string{"certs", "list", "--limit", "x"}, `invalid value "x" for --limit`},
		{[]string{"certs", "list", "--revoked", "--expiring", "24h"}, "exclude each other"},
		{[]string{"certs", "list", "--after", "nothex"}, "--after: serial"},
		{[]string{"audit", "list", "--since", "yesterday"}, "--since"},
		{[]string{"audit", "list", "--serial", "0x"}, "--serial: serial"},
		{[]string{"revoke", "--reason", "bored", "0a"}, `--reason: ca: unknown revocation reason "bored"`},
		{[]string{"revoke", "--reason", "8", "0a"}, "--reason: ca: removeFromCRL (8) is not a reason to revoke a device certificate"},
		{[]string{"revoke", "--reason", "cACompromise", "0a"}, "--reason: ca: cACompromise (2) is not a reason"},
		{[]string{"revoke"}, "one SERIAL is required"},
		{[]string{"init"}, "estca init: --dir is required"},
		{[]string{"init", "--dir", "x", "--server-ip", "300.1.1.1"}, `--server-ip "300.1.1.1": not an IP address`},
		{[]string{"ca", "reissue-server", "--validity", "0s"}, "--validity must be positive"},
		{[]string{"doctor", "extra"}, `no arguments expected, got "extra"`},
		{[]string{"enroll", "--config", cfg, "sen"}, "estca enroll: unknown flag --config"},
		{[]string{"--log-level", "loud", "version"}, `--log-level "loud"`},
		{[]string{"version", "x"}, "no arguments expected"},
	}
	for _, tc := range cases {
		t.Run(strings.Join(tc.args, " "), func(t *testing.T) {
			args := tc.args
			if len(args) > 0 && args[0] != "--bogus" && args[0] != "--log-level" && args[0] != "enroll" && args[0] != "init" && args[0] != "version" {
				args = append([]string{"--config", cfg}, args...)
			}
			code, out, errs := estca(t, args...)
			if code != exitUsage || out != "" {
				t.Fatalf("exit %d, stdout %q, want 2 and nothing\nstderr: %s", code, out, errs)
			}
			if l := lastLine(errs); !strings.Contains(l, tc.last) {
				t.Fatalf("last line %q, want it to contain %q\nstderr:\n%s", l, tc.last, errs)
			}
			if !strings.Contains(errs, "usage: estca") {
				t.Fatalf("no usage before the error:\n%s", errs)
			}
		})
	}
}

// TestHelp: `estca help`, `estca COMMAND --help` and the groups answer on
// stdout with exit 0; every group lists its subcommands; every flag of every
// command is in its help, client-only commands do not offer --config, and
// no flag shows a stray placeholder (a boolean with a value, backquotes).
func TestHelp(t *testing.T) {
	code, out, _ := estca(t, "help")
	if code != 0 || !strings.Contains(out, "audit verify") || !strings.Contains(out, "Exit status") {
		t.Fatalf("help: %d\n%s", code, out)
	}
	for _, group := range []string{"ca", "certs", "audit", "requests", "store"} {
		for _, form := range [][]string{{group, "--help"}, {group, "-h"}, {"help", group}} {
			code, out, errs := estca(t, form...)
			if code != 0 || errs != "" {
				t.Fatalf("%v: exit %d\n%s", form, code, errs)
			}
			subs := groupCommands(group)
			if len(subs) < 2 {
				t.Fatalf("group %s has %d subcommands", group, len(subs))
			}
			for _, c := range subs {
				if !strings.Contains(out, c.name) {
					t.Errorf("%v does not list %q:\n%s", form, c.name, out)
				}
			}
		}
	}
	placeholder := regexp.MustCompile("^  (-{1,2}[a-z0-9-]+)( [A-Z][A-Z0-9.:/_-]*)?  ")
	for _, c := range commands() {
		code, out, errs := estca(t, append(strings.Fields(c.name), "--help")...)
		if code != 0 || errs != "" || !strings.HasPrefix(out, "usage: estca "+c.name) {
			t.Fatalf("%s --help: exit %d\n%s%s", c.name, code, out, errs)
		}
		fs := flag.NewFlagSet(c.name, flag.ContinueOnError)
		(&globals{}).register(fs, !c.noConfig)
		if c.flags != nil {
			c.flags(fs)
		}
		for _, h := range flagHelps(fs) {
			line := ""
			for _, l := range strings.Split(out, "\n") {
				if strings.HasPrefix(l, "  "+h.synopsis()+" ") {
					line = l
				}
			}
			if line == "" {
				t.Errorf("%s --help lacks %s:\n%s", c.name, h.synopsis(), out)
				continue
			}
			if strings.Contains(line, "`") {
				t.Errorf("%s --help: backquotes in %q", c.name, line)
			}
			m := placeholder.FindStringSubmatch(line)
			if m == nil {
				t.Errorf("%s --help: malformed flag line %q", c.name, line)
				continue
			}
			f := fs.Lookup(h.name)
			if isBoolFlag(f) && m[2] != "" {
				t.Errorf("%s --help: boolean %s shows a placeholder: %q", c.name, h.name, line)
			}
		}
		hasConfig := strings.Contains(out, "--config FILE")
		if hasConfig == c.noConfig {
			t.Errorf("%s --help: --config offered %v, command reads the configuration %v", c.name, hasConfig, !c.noConfig)
		}
		if !strings.Contains(out, "--log-level LEVEL") {
			t.Errorf("%s --help lacks --log-level", c.name)
		}
	}
	if code, out, _ := estca(t, "version"); code != 0 || !strings.HasPrefix(out, "estca ") {
		t.Fatalf("version: %d %q", code, out)
	}
	if code, out, _ := estca(t, "--version"); code != 0 || !strings.HasPrefix(out, "estca ") {
		t.Fatalf("--version: %d %q", code, out)
	}
}

// TestVersionLdflags: the version stamped at build time (make build passes
// git describe) is what estca version prints.
func TestVersionLdflags(t *testing.T) {
	code, out := runBinary(t, "version")
	if code != 0 || !strings.HasPrefix(out, "estca "+testVersion+" ") {
		t.Fatalf("version: %d %q", code, out)
	}
}

// TestParseSerial: every common way to write a serial, one canonical form;
// everything else refused.
func TestParseSerial(t *testing.T) {
	t.Parallel()
	good := map[string]string{
		"0a1b2c":                       "a1b2c",
		"0A1B2C":                       "a1b2c",
		"0x0A1B2C":                     "a1b2c",
		"0X0a1b2c":                     "a1b2c",
		"0a:1b:2c":                     "a1b2c",
		"0A-1B-2C":                     "a1b2c",
		"serial=0A1B2C":                "a1b2c",
		"Serial=0A1B2C\n":              "a1b2c",
		"  00:8a:1b:2c  ":              "8a1b2c",
		"0a:1b:\n        2c":           "a1b2c",
		"Serial Number: 4660 (0x1234)": "1234",
		"4660 (0x1234)":                "1234",
		"1234":                         "1234",
		strings.Repeat("ff", 20):       strings.Repeat("ff", 20),
	}
	for in, want := range good {
		if got, err := parseSerial(in); err != nil || got != want {
			t.Errorf("parseSerial(%q) = %q, %v; want %q", in, got, err, want)
		}
	}
	for _, in := range []string{"", "0x", "serial=", "00", "0:0", "-0a", "0g", "12 (0x13)", "0a;1b", strings.Repeat("ff", 21), "serial=0A1B2C extra"} {
		if got, err := parseSerial(in); err == nil {
			t.Errorf("parseSerial(%q) = %q, want an error", in, got)
		}
	}
}

// opensslSerials returns the serial of the PEM certificate as `openssl x509
// -serial` prints it (serial=0A1B...) and as `-text` prints it (0a:1b:...).
func opensslSerials(t *testing.T, pemFile string) (serialLine, textForm string) {
	t.Helper()
	serialLine = strings.TrimSpace(openssl(t, "x509", "-noout", "-serial", "-in", pemFile))
	text := openssl(t, "x509", "-noout", "-text", "-in", pemFile)
	lines := strings.Split(text, "\n")
	for i, l := range lines {
		if strings.Contains(l, "Serial Number:") && i+1 < len(lines) {
			textForm = strings.TrimSpace(lines[i+1])
		}
	}
	if !strings.HasPrefix(serialLine, "serial=") || !strings.Contains(textForm, ":") {
		t.Fatalf("openssl serial forms %q, %q", serialLine, textForm)
	}
	return serialLine, textForm
}

// TestOperatorCLI drives the query commands against a real appliance, once
// through a running server's admin socket and once from the store file:
// revoked certificates say so in certs list and certs show (reason, time),
// a second revocation is one plain line and exit 1, serials are taken as
// openssl prints them, the filters work, and every --json output is
// snake_case.
func TestOperatorCLI(t *testing.T) {
	dir, cfg := demoAppliance(t, false)
	srv := startServer(t, cfg)
	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Minute)
	defer cancel()
	certs, _ := enrollDemo(t, ctx, dir, srv.addr, 4)
	var serials, pems []string
	for _, cert := range certs {
		serials = append(serials, cert.SerialNumber.Text(16))
		p := filepath.Join(t.TempDir(), "c.pem")
		os.WriteFile(p, pem.EncodeToMemory(&pem.Block{Type: "CERTIFICATE", Bytes: cert.Raw}), 0o600)
		pems = append(pems, p)
	}
	dev, err := os.ReadFile(filepath.Join(dir, "demo", "device-valid.pem"))
	if err != nil {
		t.Fatal(err)
	}
	blk, _ := pem.Decode(dev)
	devFP := sha256.Sum256(blk.Bytes)
	requester := hex.EncodeToString(devFP[:])

	// check revokes one certificate; revoked lists every revoked serial
	// then (in issuance order), the new one last.
	check := func(t *testing.T, revoked []string, reason string) {
		revoke, revokedBefore := revoked[len(revoked)-1], revoked[0]
		serialLine, _ := opensslSerials(t, pems[indexOf(serials, revoke)])
		code, out, errs := estca(t, "--config", cfg, "revoke", "--reason", reason, serialLine)
		if code != 0 || !strings.Contains(out, "revoked "+revoke) {
			t.Fatalf("revoke %s: exit %d\n%s%s", serialLine, code, out, errs)
		}
		for _, s := range []string{revoke, revokedBefore} {
			errs := expectPlainFailure(t, "certificate "+s+" is already revoked (", "--config", cfg, "revoke", "0x"+strings.ToUpper(s))
			if strings.Count(strings.TrimSpace(errs), "\n") != 0 {
				t.Fatalf("second revocation of %s: more than one line:\n%s", s, errs)
			}
		}
		expectPlainFailure(t, "no certificate with serial a0b0c0d", "--config", cfg, "revoke", "0a0b0c0d")

		// certs show with the -text colon form says revoked, reason, time.
		_, textForm := opensslSerials(t, pems[indexOf(serials, revoke)])
		show := mustEstca(t, "--config", cfg, "certs", "show", textForm)
		if !strings.Contains(show, "status      revoked") || !strings.Contains(show, "reason      "+reason) ||
			!strings.Contains(show, "revoked at  ") || !strings.Contains(show, "BEGIN CERTIFICATE") {
			t.Fatalf("certs show %s:\n%s", textForm, show)
		}
		v := checkSnakeJSON(t, "certs show --json", mustEstca(t, "--config", cfg, "certs", "show", "--json", textForm)).(map[string]any)
		rv, _ := v["revocation"].(map[string]any)
		if v["status"] != "revoked" || rv == nil || rv["reason"] != reason || rv["time"] == "" {
			t.Fatalf("certs show --json: %v", v)
		}
		other := serials[3]
		v = checkSnakeJSON(t, "certs show --json", mustEstca(t, "--config", cfg, "certs", "show", "--json", other)).(map[string]any)
		if v["status"] != "valid" || v["revocation"] != nil {
			t.Fatalf("valid certificate: %v", v)
		}

		// certs list: issuance order, status column, filters.
		list := mustEstca(t, "--config", cfg, "certs", "list")
		if !regexp.MustCompile(revoke + `\s.*\srevoked \S+ ` + reason + `\s`).MatchString(list) {
			t.Fatalf("certs list does not show %s revoked (%s):\n%s", revoke, reason, list)
		}
		all := listJSON(t, cfg)
		if len(all) != 4 {
			t.Fatalf("%d certificates listed", len(all))
		}
		for i, cv := range all {
			if cv.Serial != serials[i] || (i > 0 && (cv.Seq <= all[i-1].Seq || cv.IssuedAt.Before(all[i-1].IssuedAt))) {
				t.Fatalf("certs list not in issuance order: %d: %s seq %d", i, cv.Serial, cv.Seq)
			}
		}
		got := listJSON(t, cfg, "--revoked")
		if len(got) != len(revoked) {
			t.Fatalf("--revoked: %d certificates, want %v", len(got), revoked)
		}
		for i, cv := range got {
			if cv.Serial != revoked[i] || cv.Revocation == nil || cv.Status != statusRevoked {
				t.Fatalf("--revoked: %+v, want %v", got, revoked)
			}
		}
		if got := listJSON(t, cfg, "--revoked", "--limit", "1", "--after", serials[0]); len(revoked) > 1 && (len(got) != 1 || got[0].Serial != serials[1]) {
			t.Fatalf("--revoked --after: %+v", got)
		}
		if got := listJSON(t, cfg, "--expiring", "24h"); len(got) != 0 {
			t.Fatalf("--expiring 24h: %+v", got)
		}
		if got := listJSON(t, cfg, "--expiring", "9000h"); len(got) != 4-len(revoked) || got[0].Serial != serials[len(revoked)] {
			t.Fatalf("--expiring 9000h (the valid ones): %+v", got)
		}
		if got := listJSON(t, cfg, "--requester", strings.ToUpper(requester[:12])); len(got) != 4 {
			t.Fatalf("--requester prefix: %d", len(got))
		}
		if got := listJSON(t, cfg, "--requester", "ffffffff"); len(got) != 0 {
			t.Fatalf("--requester other: %d", len(got))
		}
		if got := listJSON(t, cfg, "--limit", "2", "--after", serials[0]); len(got) != 2 || got[0].Serial != serials[1] {
			t.Fatalf("--limit --after: %+v", got)
		}

		// audit list --json: snake_case, the revocation record.
		recs := checkSnakeJSON(t, "audit list --json", mustEstca(t, "--config", cfg, "audit", "list", "--json", "--serial", serialLine)).([]any)
		found := false
		for _, r := range recs {
			m := r.(map[string]any)
			if m["event"] == "revoked" {
				rv := m["revocation"].(map[string]any)
				found = rv["reason"] == reason && m["serial"] == revoke
			}
		}
		if !found {
			t.Fatalf("no revoked record for %s in %v", revoke, recs)
		}
		head := checkSnakeJSON(t, "audit list --json", mustEstca(t, "--config", cfg, "audit", "list", "--json")).([]any)
		heads := 0
		for _, r := range head {
			if h, ok := r.(map[string]any)["head"].(map[string]any); ok && h["signature"] != "" {
				heads++
			}
		}
		if heads == 0 {
			t.Fatal("audit list --json shows no signed head")
		}
	}
	t.Run("through the admin socket", func(t *testing.T) { check(t, serials[:1], "keyCompromise") })
	if err := srv.stop(t); err != nil {
		t.Fatalf("serve: %v\n%s", err, srv.logs())
	}
	t.Run("from the store file", func(t *testing.T) { check(t, serials[:2], "superseded") })
}

func indexOf(ss []string, s string) int {
	for i, x := range ss {
		if x == s {
			return i
		}
	}
	panic(s)
}

// listJSON runs certs list --json with extra flags; the output must be
// snake_case and decode into certView.
func listJSON(t *testing.T, cfg string, extra ...string) []certView {
	t.Helper()
	out := mustEstca(t, append([]string{"--config", cfg, "certs", "list", "--json"}, extra...)...)
	checkSnakeJSON(t, "certs list --json", out)
	var cs []certView
	if err := json.Unmarshal([]byte(out), &cs); err != nil {
		t.Fatal(err)
	}
	if cs == nil {
		t.Fatalf("certs list --json printed null, not []")
	}
	return cs
}

// TestJSONViewsSnakeCase: every field of every view printed with --json
// has a snake_case name (the outputs above are checked too; this catches a
// field no test output happens to contain).
func TestJSONViewsSnakeCase(t *testing.T) {
	t.Parallel()
	for _, v := range jsonViews() {
		for _, name := range jsonFields(v) {
			if !snakeKey.MatchString(name) {
				t.Errorf("%T: JSON field %q is not snake_case", v, name)
			}
		}
	}
}

// jsonFields returns the JSON names of the fields of a view.
func jsonFields(v any) []string {
	var out []string
	t := reflect.TypeOf(v)
	for i := range t.NumField() {
		name, _, _ := strings.Cut(t.Field(i).Tag.Get("json"), ",")
		if name == "" {
			name = t.Field(i).Name
		}
		out = append(out, name)
	}
	return out
}
