package main

import (
	"context"
	"crypto"
	"crypto/x509"
	"encoding/json"
	"net"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/estca/estca/est/client"
)

// ephemeralPorts moves an appliance's UDP and metrics listeners to port 0.
func ephemeralPorts(t *testing.T, cfg string) {
	t.Helper()
	editConfig(t, cfg, `listen: ":5684"`, `listen: "127.0.0.1:0"`)
	editConfig(t, cfg, "metrics_listen: 127.0.0.1:9684", "metrics_listen: 127.0.0.1:0")
}

// doctor runs estca doctor --json and returns the exit code and the report.
func doctor(t *testing.T, cfg string) (int, doctorReport) {
	t.Helper()
	code, out, errs := estca(t, "--config", cfg, "doctor", "--json")
	checkSnakeJSON(t, "doctor --json", out)
	var r doctorReport
	if err := json.Unmarshal([]byte(out), &r); err != nil {
		t.Fatalf("doctor --json: %v\n%s\n%s", err, out, errs)
	}
	if (code == 0) != r.Healthy {
		t.Fatalf("doctor exit %d, healthy %v", code, r.Healthy)
	}
	return code, r
}

// diagnosis returns the first finding of check with status, or fails.
func diagnosis(t *testing.T, r doctorReport, check, status, text string) finding {
	t.Helper()
	for _, f := range r.Findings {
		if f.Check == check && f.Status == status && strings.Contains(f.Message, text) {
			if status != findingOK && f.Fix == "" {
				t.Errorf("finding without a fix: %+v", f)
			}
			return f
		}
	}
	t.Fatalf("no %s %s finding mentioning %q in %+v", status, check, text, r.Findings)
	return finding{}
}

// broken runs doctor on cfg, which must fail on check alone (exit 1), and
// returns the failed finding mentioning text.
func broken(t *testing.T, cfg, check, text string) finding {
	t.Helper()
	code, r := doctor(t, cfg)
	if code != 1 {
		t.Fatalf("exit %d: %+v", code, r.Findings)
	}
	f := diagnosis(t, r, check, findingFail, text)
	onlyFailure(t, r, check)
	return f
}

// onlyFailure checks that the report failed on check alone.
func onlyFailure(t *testing.T, r doctorReport, check string) {
	t.Helper()
	for _, f := range r.Findings {
		if f.Status == findingFail && f.Check != check {
			t.Errorf("unexpected failure %+v (only %s is broken)", f, check)
		}
	}
}

// TestDoctor: a healthy appliance exits 0 with every check ok; each broken
// part exits 1 with its own diagnosis and a fix: a corrupt config, a missing
// token, an expired server certificate (and a warning before it expires), a
// manufacturer certificate file or the kept CRL gone bad (policy), a
// store locked by another process that is not estca serve, a port taken.
// While serve runs the store and ports are its own, and all is healthy.
func TestDoctor(t *testing.T) {
	dir, cfg := newAppliance(t, "--demo")
	ephemeralPorts(t, cfg)
	code, r := doctor(t, cfg)
	if code != 0 {
		t.Fatalf("healthy appliance: exit %d: %+v", code, r.Findings)
	}
	for _, check := range []string{"config", "token", "keys", "certificates", "policy", "store", "checkpoint", "ports"} {
		diagnosis(t, r, check, findingOK, "")
	}
	diagnosis(t, r, "keys", findingOK, `server key "estca-server" present, signs, matches`)
	if c, out, _ := estca(t, "--config", cfg, "doctor"); c != 0 || !strings.Contains(out, "healthy (0 warning(s))") || !strings.Contains(out, "OK    token") {
		t.Fatalf("doctor text: %d\n%s", c, out)
	}

	t.Run("corrupt config", func(t *testing.T) {
		bad := filepath.Join(dir, "corrupt.yaml")
		os.WriteFile(bad, []byte("hsm: [module\nca: {"), 0o600)
		code, r := doctor(t, bad)
		if code != 1 {
			t.Fatalf("exit %d", code)
		}
		diagnosis(t, r, "config", findingFail, "config:")
		if len(r.Findings) != 1 {
			t.Fatalf("checks ran on a config that does not parse: %+v", r.Findings)
		}
		// A config that parses but is wrong names the key.
		body, _ := os.ReadFile(cfg)
		os.WriteFile(bad, append(body, []byte("\nbogus_key: 1\n")...), 0o600)
		_, r = doctor(t, bad)
		diagnosis(t, r, "config", findingFail, "bogus_key: unknown key")
	})

	t.Run("token missing", func(t *testing.T) {
		tokens := filepath.Join(dir, "hsm", "tokens")
		if err := os.Rename(tokens, tokens+".away"); err != nil {
			t.Fatal(err)
		}
		defer os.Rename(tokens+".away", tokens)
		if f := broken(t, cfg, "token", "token directory"); !strings.Contains(f.Fix, "hsm/tokens") {
			t.Errorf("fix %q", f.Fix)
		}
	})

	t.Run("wrong PIN", func(t *testing.T) {
		t.Setenv("ESTCA_HSM_PIN", "not-the-pin")
		broken(t, cfg, "token", "pin rejected")
	})

	t.Run("server certificate expiring, then expired", func(t *testing.T) {
		mustEstca(t, "--config", cfg, "ca", "reissue-server", "--validity", "240h")
		code, r := doctor(t, cfg)
		if code != 0 {
			t.Fatalf("a certificate that expires in 10 days: exit %d %+v", code, r.Findings)
		}
		diagnosis(t, r, "certificates", findingWarn, "server certificate CN=estca.test expires")

		mustEstca(t, "--config", cfg, "ca", "reissue-server", "--validity", "1s")
		srv, err := readCert(filepath.Join(dir, "ca", "server.pem"))
		if err != nil {
			t.Fatal(err)
		}
		time.Sleep(time.Until(srv.NotAfter) + 1100*time.Millisecond)
		if f := broken(t, cfg, "certificates", "server certificate CN=estca.test expired"); !strings.Contains(f.Fix, "estca ca reissue-server") {
			t.Errorf("fix %q", f.Fix)
		}
		mustEstca(t, "--config", cfg, "ca", "reissue-server")
		if code, r := doctor(t, cfg); code != 0 {
			t.Fatalf("after reissue: %+v", r.Findings)
		}
	})

	t.Run("store locked by another process", func(t *testing.T) {
		requireTools(t, "flock")
		holder := exec.Command("flock", "--exclusive", "--no-fork", filepath.Join(dir, "store", "estca.db"), "sleep", "120")
		if err := holder.Start(); err != nil {
			t.Fatal(err)
		}
		defer func() { holder.Process.Kill(); holder.Wait() }() // --no-fork: the lock dies with it
		// flock takes the lock before it runs sleep: wait for it.
		for deadline := time.Now().Add(10 * time.Second); lockFree(dir); time.Sleep(20 * time.Millisecond) {
			if time.Now().After(deadline) {
				t.Fatal("flock did not take the lock")
			}
		}
		if f := broken(t, cfg, "store", "is locked by another process, and no estca serve answers"); !strings.Contains(f.Fix, "fuser") {
			t.Errorf("fix %q", f.Fix)
		}
	})

	t.Run("policy files", func(t *testing.T) {
		mfg := filepath.Join(dir, "demo", "manufacturer-ca.pem")
		if err := os.Rename(mfg, mfg+".away"); err != nil {
			t.Fatal(err)
		}
		f := broken(t, cfg, "policy", "manufacturers[0].roots[0]")
		os.Rename(mfg+".away", mfg)
		if !strings.Contains(f.Fix, "estca reload") {
			t.Errorf("fix %q", f.Fix)
		}
		crl := filepath.Join(dir, "ca", "crl.der")
		if err := os.WriteFile(crl, []byte("not a CRL"), 0o644); err != nil {
			t.Fatal(err)
		}
		defer os.Remove(crl)
		if f := broken(t, cfg, "policy", "crl.path"); !strings.Contains(f.Fix, "move "+crl+" away") {
			t.Errorf("fix %q", f.Fix)
		}
	})

	t.Run("port taken", func(t *testing.T) {
		pc, err := net.ListenPacket("udp", "127.0.0.1:0")
		if err != nil {
			t.Fatal(err)
		}
		defer pc.Close()
		busy := filepath.Join(dir, "busy.yaml")
		body, _ := os.ReadFile(cfg)
		os.WriteFile(busy, []byte(strings.Replace(string(body), `listen: "127.0.0.1:0"`, `listen: "`+pc.LocalAddr().String()+`"`, 1)), 0o600)
		broken(t, busy, "ports", "UDP "+pc.LocalAddr().String()+" (est.listen) cannot be bound")
	})

	t.Run("while serving", func(t *testing.T) {
		srv := startServer(t, cfg)
		code, r := doctor(t, cfg)
		if code != 0 || !r.Serving {
			t.Fatalf("exit %d, serving %v: %+v\n%s", code, r.Serving, r.Findings, srv.logs())
		}
		diagnosis(t, r, "store", findingOK, "checked through estca serve")
		diagnosis(t, r, "ports", findingOK, "estca serve's")
	})
}

// lockFree reports whether the store file's lock can be taken exclusively now.
func lockFree(dir string) bool {
	return exec.Command("flock", "--nonblock", "--exclusive", filepath.Join(dir, "store", "estca.db"), "true").Run() == nil
}

// TestReissueServer: init puts the names and addresses devices use in the
// server certificate; ca reissue-server renews it for the key in the token
// (issuing CA untouched, audited), a running server keeps its certificate
// until restarted and then presents the new one; --new-key is refused while
// serving and replaces the key when stopped.
func TestReissueServer(t *testing.T) {
	requireTools(t, "softhsm2-util", "openssl")
	dir := filepath.Join(t.TempDir(), "x")
	mustEstca(t, "init", "--dir", dir, "--demo", "--server-name", "est.test", "--server-name", "est.plant.test",
		"--server-ip", "192.0.2.10", "--server-ip", "2001:db8::10")
	cfg := filepath.Join(dir, "estca.yaml")
	ephemeralPorts(t, cfg)
	serverPEM := filepath.Join(dir, "ca", "server.pem")
	first, err := readCert(serverPEM)
	if err != nil {
		t.Fatal(err)
	}
	if strings.Join(first.DNSNames, " ") != "est.test est.plant.test localhost" || len(first.IPAddresses) != 3 ||
		!first.IPAddresses[1].Equal(net.ParseIP("192.0.2.10")) || !first.IPAddresses[2].Equal(net.ParseIP("2001:db8::10")) {
		t.Fatalf("init: names %v, addresses %v", first.DNSNames, first.IPAddresses)
	}
	issuingBefore, _ := os.ReadFile(filepath.Join(dir, "ca", "issuing.pem"))

	// Stopped: new names, same key, issuing CA untouched, audited.
	out := mustEstca(t, "--config", cfg, "ca", "reissue-server", "--server-name", "ca.plant.test", "--server-ip", "10.9.8.7")
	second, err := readCert(serverPEM)
	if err != nil {
		t.Fatal(err)
	}
	if !strings.Contains(out, "server certificate reissued: serial "+second.SerialNumber.Text(16)) ||
		strings.Join(second.DNSNames, " ") != "ca.plant.test localhost" || len(second.IPAddresses) != 2 ||
		!second.IPAddresses[1].Equal(net.ParseIP("10.9.8.7")) {
		t.Fatalf("reissued: %s names %v addresses %v", out, second.DNSNames, second.IPAddresses)
	}
	if !samePub(first, second) {
		t.Fatal("reissue without --new-key changed the key")
	}
	if issuingAfter, _ := os.ReadFile(filepath.Join(dir, "ca", "issuing.pem")); string(issuingAfter) != string(issuingBefore) {
		t.Fatal("the issuing CA certificate changed")
	}
	if v := openssl(t, "verify", "-CAfile", filepath.Join(dir, "ca", "root.pem"), "-untrusted", filepath.Join(dir, "ca", "issuing.pem"),
		"-purpose", "sslserver", "-verify_ip", "10.9.8.7", serverPEM); !strings.Contains(v, ": OK") {
		t.Fatalf("openssl verify: %s", v)
	}
	// Without flags, the names and addresses are kept.
	mustEstca(t, "--config", cfg, "ca", "reissue-server")
	kept, _ := readCert(serverPEM)
	if strings.Join(kept.DNSNames, " ") != "ca.plant.test localhost" || len(kept.IPAddresses) != 2 {
		t.Fatalf("plain reissue: names %v addresses %v", kept.DNSNames, kept.IPAddresses)
	}
	if a := mustEstca(t, "--config", cfg, "audit", "list"); strings.Count(a, "reissue-server") != 2 {
		t.Fatalf("reissues not audited:\n%s", a)
	}

	// A device that checks the name gets through.
	srv := startServer(t, cfg)
	dial := func(name string) (*x509.Certificate, error) {
		ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
		defer cancel()
		o := deviceOptions(t, dir, srv.addr, nil)
		o.ServerName = name
		c, err := client.Dial(ctx, o)
		if err != nil {
			return nil, err
		}
		defer c.Close()
		st, _ := c.ConnectionState()
		if len(st.PeerCertificates) == 0 {
			t.Fatal("no peer certificate")
		}
		return x509.ParseCertificate(st.PeerCertificates[0])
	}
	if c, err := dial("ca.plant.test"); err != nil || c.SerialNumber.Cmp(kept.SerialNumber) != 0 {
		t.Fatalf("dial ca.plant.test: %v", err)
	}
	if _, err := dial("est.test"); err == nil {
		t.Fatal("a name the certificate no longer carries was accepted")
	}

	// Serving: --new-key refused; a reissue is written and audited, the
	// server keeps presenting the old certificate until restarted.
	if code, _, errs := estca(t, "--config", cfg, "ca", "reissue-server", "--new-key"); code != 1 || !strings.Contains(errs, "stop it first") {
		t.Fatalf("--new-key while serving: exit %d %s", code, errs)
	}
	out = mustEstca(t, "--config", cfg, "ca", "reissue-server", "--server-name", "other.test")
	if !strings.Contains(out, "restart it to use this one") {
		t.Fatalf("reissue while serving: %s", out)
	}
	if _, err := dial("other.test"); err == nil {
		t.Fatal("the running server switched certificates without a restart")
	}
	if a := mustEstca(t, "--config", cfg, "audit", "list"); strings.Count(a, "reissue-server") != 3 {
		t.Fatalf("reissue through the admin socket not audited:\n%s", a)
	}
	if err := srv.stop(t); err != nil {
		t.Fatal(err)
	}
	srv = startServer(t, cfg)
	if _, err := dial("other.test"); err != nil {
		t.Fatalf("after restart: %v\n%s", err, srv.logs())
	}
	if err := srv.stop(t); err != nil {
		t.Fatal(err)
	}

	// Stopped: --new-key replaces the key; the server signs with it.
	mustEstca(t, "--config", cfg, "ca", "reissue-server", "--new-key")
	fresh, _ := readCert(serverPEM)
	if samePub(kept, fresh) {
		t.Fatal("--new-key kept the key")
	}
	srv = startServer(t, cfg)
	if c, err := dial("other.test"); err != nil || !samePub(c, fresh) {
		t.Fatalf("after --new-key: %v\n%s", err, srv.logs())
	}
	if code, r := doctor(t, cfg); code != 0 {
		t.Fatalf("doctor after --new-key: %+v", r.Findings)
	}
}

func samePub(a, b *x509.Certificate) bool {
	k, ok := a.PublicKey.(interface{ Equal(crypto.PublicKey) bool })
	return ok && k.Equal(b.PublicKey)
}
