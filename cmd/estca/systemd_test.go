package main

import (
	"bufio"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"syscall"
	"testing"
)

// TestSystemdUnit installs the unit the way `make install-systemd` does
// (into a temporary PREFIX, without touching the system) and has
// systemd-analyze verify it: exit 0 and not one warning. It also checks
// the hardening and restart directives the README promises, and that
// verify does complain about a broken copy (so its silence means something).
func TestSystemdUnit(t *testing.T) {
	requireTools(t, "systemd-analyze")
	bin := estcaBinary(t)
	root := t.TempDir()
	prefix := filepath.Join(root, "usr", "local")
	unitDir := filepath.Join(root, "etc", "systemd", "system")
	cmd := exec.Command("../../scripts/install-systemd.sh")
	cmd.Env = append(os.Environ(), "PREFIX="+prefix, "UNITDIR="+unitDir, "BIN="+bin, "SYSTEM=no")
	if out, err := cmd.CombinedOutput(); err != nil {
		t.Fatalf("install-systemd.sh: %v\n%s", err, out)
	}
	unit := filepath.Join(unitDir, "estca.service")
	if out, err := exec.Command("systemd-analyze", "verify", unit).CombinedOutput(); err != nil || len(out) > 0 {
		t.Fatalf("systemd-analyze verify %s: %v\n%s", unit, err, out)
	}

	directives := map[string][]string{}
	f, err := os.Open(unit)
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	sc := bufio.NewScanner(f)
	for sc.Scan() {
		line := strings.TrimSpace(sc.Text())
		if k, v, ok := strings.Cut(line, "="); ok && !strings.HasPrefix(line, "#") {
			directives[k] = append(directives[k], v)
		}
	}
	for k, want := range map[string]string{
		"ExecStart":       filepath.Join(prefix, "bin", "estca") + " --config /var/lib/estca/estca.yaml serve",
		"ExecReload":      "/bin/kill -HUP $MAINPID",
		"Restart":         "on-failure",
		"User":            "estca",
		"StateDirectory":  "estca",
		"ProtectSystem":   "strict",
		"NoNewPrivileges": "yes",
		"PrivateTmp":      "yes",
		"ProtectHome":     "yes",
		"ReadWritePaths":  "-/var/lib/softhsm/tokens",
	} {
		if got := directives[k]; len(got) != 1 || got[0] != want {
			t.Errorf("%s=%v, want %q", k, got, want)
		}
	}
	if b, err := os.Stat(filepath.Join(prefix, "bin", "estca")); err != nil || b.Mode().Perm() != 0o755 {
		t.Errorf("installed binary: %v", err)
	}

	body, _ := os.ReadFile(unit)
	broken := filepath.Join(t.TempDir(), "estca.service")
	os.WriteFile(broken, []byte(strings.Replace(string(body), "ProtectSystem=strict", "ProtectSystm=strict", 1)), 0o644)
	if out, _ := exec.Command("systemd-analyze", "verify", broken).CombinedOutput(); !strings.Contains(string(out), "ProtectSystm") {
		t.Fatalf("systemd-analyze verify did not flag an unknown key:\n%s", out)
	}
}

// TestServeSurvivesSIGHUP: the unit's ExecReload sends SIGHUP; estca serve
// reloads its configuration and keeps serving (it must never end it).
func TestServeSurvivesSIGHUP(t *testing.T) {
	_, cfg := demoAppliance(t, false)
	srv := startServer(t, cfg)
	if err := srv.cmd.Process.Signal(syscall.SIGHUP); err != nil {
		t.Fatal(err)
	}
	waitLog(t, srv, `msg="configuration reloaded" source=SIGHUP`)
	if code, out := runBinary(t, "--config", cfg, "certs", "list"); code != 0 || !strings.Contains(out, "SERIAL") {
		t.Fatalf("certs list through the server after SIGHUP: exit %d\n%s\n%s", code, out, srv.logs())
	}
	if err := srv.stop(t); err != nil {
		t.Fatalf("serve after SIGHUP: %v\n%s", err, srv.logs())
	}
}
