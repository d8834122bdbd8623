package main

import (
	"context"
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/tls"
	"crypto/x509"
	"errors"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/plgd-dev/go-coap/v3/message/codes"

	"github.com/estca/estca/est/client"
	"github.com/estca/estca/est/wire"
	"github.com/estca/estca/store/storetest"
)

// runBinary runs the estca binary with a hang detector (far above any
// honest run; not a speed assertion) and returns its exit code and output.
// A panic or a fatal signal fails the test.
func runBinary(t *testing.T, args ...string) (int, string) {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 60*time.Second)
	defer cancel()
	cmd := exec.CommandContext(ctx, estcaBinary(t), args...)
	cmd.Cancel = func() error { return cmd.Process.Signal(os.Interrupt) }
	cmd.WaitDelay = 5 * time.Second
	out, err := cmd.CombinedOutput()
	if ctx.Err() != nil {
		t.Fatalf("estca %s hung (interrupted after 60s):\n%s", strings.Join(args, " "), out)
	}
	var ee *exec.ExitError
	if errors.As(err, &ee) {
		if ws, ok := ee.Sys().(syscall.WaitStatus); ok && ws.Signaled() {
			t.Fatalf("estca %s died of %v:\n%s", strings.Join(args, " "), ws.Signal(), out)
		}
	} else if err != nil {
		t.Fatal(err)
	}
	if strings.Contains(string(out), "panic:") || strings.Contains(string(out), "goroutine ") {
		t.Fatalf("estca %s panicked:\n%s", strings.Join(args, " "), out)
	}
	return cmd.ProcessState.ExitCode(), string(out)
}

// deviceOptions are est client options for the demo device of an appliance
// (or the given client certificate) against a server at addr.
func deviceOptions(t *testing.T, dir, addr string, cert *tls.Certificate) client.Options {
	t.Helper()
	if cert == nil {
		dev, err := tls.LoadX509KeyPair(filepath.Join(dir, "demo", "device-valid.pem"), filepath.Join(dir, "demo", "device-valid.key"))
		if err != nil {
			t.Fatal(err)
		}
		cert = &dev
	}
	root, err := readCert(filepath.Join(dir, "ca", "root.pem"))
	if err != nil {
		t.Fatal(err)
	}
	roots := x509.NewCertPool()
	roots.AddCert(root)
	return client.Options{Server: addr, Certificate: *cert, Roots: roots, ServerName: "127.0.0.1",
		Timeout: 5 * time.Second, MaxRetries: -1}
}

// enrollDemo enrolls n fresh keys with the demo device over one session and
// returns the certificates and keys in order.
func enrollDemo(t *testing.T, ctx context.Context, dir, addr string, n int) ([]*x509.Certificate, []*ecdsa.PrivateKey) {
	t.Helper()
	c, err := client.Dial(ctx, deviceOptions(t, dir, addr, nil))
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	var certs []*x509.Certificate
	var keys []*ecdsa.PrivateKey
	for range n {
		cert, key, err := enrollNew(ctx, c)
		if err != nil {
			t.Fatal(err)
		}
		certs, keys = append(certs, cert), append(keys, key)
	}
	return certs, keys
}

// enrollNew enrolls a fresh key with an empty subject (the demo profile
// binds the certificate to the device's identity) and returns the
// certificate and key.
func enrollNew(ctx context.Context, c *client.Conn) (*x509.Certificate, *ecdsa.PrivateKey, error) {
	key, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		return nil, nil, err
	}
	csr, err := x509.CreateCertificateRequest(rand.Reader, &x509.CertificateRequest{}, key)
	if err != nil {
		return nil, nil, err
	}
	cert, _, err := c.Enroll(ctx, csr, wire.FormatPKIXCert)
	return cert, key, err
}

// storedSerials lists the serials in an appliance's store (server stopped).
func storedSerials(t *testing.T, cfg string) map[string]bool {
	t.Helper()
	have := map[string]bool{}
	for _, c := range listJSON(t, cfg) {
		have[c.Serial] = true
	}
	return have
}

// TestDamagedStoreRefused: `serve` and the query commands refuse a missing,
// empty, foreign, truncated (25, 50, 75 %) or page-garbage store with one
// clear line, promptly, instead of hanging, panicking or dying of SIGBUS as
// they did; and none of them creates a store.
func TestDamagedStoreRefused(t *testing.T) {
	dir, cfg := newAppliance(t)
	noFixedPorts(t, cfg)
	fillStore(t, cfg, 300)
	live := filepath.Join(dir, "store", "estca.db")
	good, err := os.ReadFile(live)
	if err != nil {
		t.Fatal(err)
	}
	checkpoint, err := os.ReadFile(live + ".checkpoint")
	if err != nil {
		t.Fatal(err)
	}
	inUse := storetest.InUse(t, live)
	leaf := storetest.LeafPage(t, live)
	t.Logf("store of %d bytes, %d in use", len(good), inUse)
	cases := []struct {
		name   string
		damage func([]byte) []byte
		want   string
	}{
		{"missing", func([]byte) []byte { return nil }, "no store file"},
		{"empty", func([]byte) []byte { return []byte{} }, "empty store file"},
		{"foreign", func([]byte) []byte { return []byte("[section]\nkey=value\n") }, "not an estca store"},
		{"truncated to 25%", func(b []byte) []byte { return b[:len(b)/4] }, "truncated store file"},
		{"truncated to 50%", func(b []byte) []byte { return b[:len(b)/2] }, "truncated store file"},
		{"truncated to 75%", func(b []byte) []byte { return b[:len(b)*3/4] }, "truncated store file"},
		{"truncated to 75% of the bytes in use", func(b []byte) []byte { return b[:inUse*3/4/4096*4096] }, "truncated store file"},
		{"garbage in a data page", func(b []byte) []byte {
			// A leaf page in use: one picked by offset alone may be free
			// (harmless garbage, which serve rightly ignores).
			page := int(leaf) * 4096
			rand.Read(b[page : page+4096])
			return b
		}, "damaged store file"},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			b := tc.damage(append([]byte(nil), good...))
			os.Remove(live)
			if b != nil {
				if err := os.WriteFile(live, b, 0o600); err != nil {
					t.Fatal(err)
				}
			}
			if strings.HasPrefix(tc.name, "truncated") && int64(len(b)) >= inUse {
				// Only slack past the high-water mark was cut: the store is
				// whole, and must still work.
				t.Logf("%d of %d bytes kept: the cut is all slack", len(b), len(good))
				for _, args := range [][]string{{"certs", "list"}, {"audit", "verify"}, {"store", "check"}} {
					if code, out := runBinary(t, append([]string{"--config", cfg}, args...)...); code != 0 {
						t.Errorf("estca %s on a store cut in its slack: exit %d\n%s", strings.Join(args, " "), code, out)
					}
				}
				return
			}
			for _, args := range [][]string{
				{"serve", "--listen", "127.0.0.1:0"},
				{"certs", "list"},
				{"audit", "list"},
				{"audit", "verify"},
				{"store", "check"},
			} {
				code, out := runBinary(t, append([]string{"--config", cfg}, args...)...)
				if code == 0 || !strings.Contains(out, tc.want) {
					t.Errorf("estca %s: exit %d\n%s\nwant an error naming %q", strings.Join(args, " "), code, out, tc.want)
				}
				if lines := strings.Count(strings.TrimSpace(out), "\n") + 1; lines > 2 {
					t.Errorf("estca %s: %d lines of output, want one clear line:\n%s", strings.Join(args, " "), lines, out)
				}
			}
			if b == nil {
				if _, err := os.Stat(live); !errors.Is(err, os.ErrNotExist) {
					t.Error("a command created a store")
				}
			}
		})
	}
	if err := os.WriteFile(live, good, 0o600); err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(live+".checkpoint", checkpoint, 0o600); err != nil {
		t.Fatal(err)
	}
	mustEstca(t, "--config", cfg, "audit", "verify")
	if out := mustEstca(t, "--config", cfg, "store", "check"); !strings.Contains(out, "store check ok") || !strings.Contains(out, "bbolt check ok") {
		t.Fatalf("store check: %s", out)
	}
}

// TestBackupNeverHurtsTheStore reproduces the reported loss: `estca backup`
// onto the live store path while `serve` runs used to rename the copy over
// it, and the certificates delivered afterwards went to the unlinked file.
// Now every way of naming the live store is refused, and all certificates
// delivered before and after are in the store. A store file replaced by
// other means is noticed by the server, which then answers 5.03.
func TestBackupNeverHurtsTheStore(t *testing.T) {
	dir, cfg := demoAppliance(t, false)
	srv := startServer(t, cfg)
	ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
	defer cancel()
	c, err := client.Dial(ctx, deviceOptions(t, dir, srv.addr, nil))
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	var delivered []string
	enroll := func(n int) {
		for range n {
			cert, _, err := enrollNew(ctx, c)
			if err != nil {
				t.Fatalf("enroll: %v\n%s", err, srv.logs())
			}
			delivered = append(delivered, cert.SerialNumber.Text(16))
		}
	}
	enroll(3)
	live := filepath.Join(dir, "store", "estca.db")
	link := filepath.Join(t.TempDir(), "link.db")
	os.Symlink(live, link)
	for _, target := range []string{live, link, filepath.Join(dir, "store", "..", "store", "estca.db"), filepath.Join(dir, "store"),
		filepath.Join(dir, "store", "estca.db.checkpoint")} {
		code, out, errs := estca(t, "--config", cfg, "backup", target)
		if code == 0 || !strings.Contains(errs, "refusing") {
			t.Fatalf("backup onto %s: exit %d\n%s%s", target, code, out, errs)
		}
	}
	backup := filepath.Join(t.TempDir(), "backup.db")
	if out := mustEstca(t, "--config", cfg, "backup", backup); !strings.Contains(out, "certificates verified") {
		t.Fatalf("backup: %s", out)
	}
	enroll(3)

	// The file replaced under the running server (what the old backup did):
	// the server notices, logs it once, and answers 5.03 with Max-Age.
	aside := live + ".moved"
	if err := os.Rename(live, aside); err != nil {
		t.Fatal(err)
	}
	b, _ := os.ReadFile(backup)
	if err := os.WriteFile(live, b, 0o600); err != nil {
		t.Fatal(err)
	}
	_, _, err = enrollNew(ctx, c)
	var re *client.ResponseError
	if !errors.As(err, &re) || re.Code != codes.ServiceUnavailable || re.MaxAge != 30*time.Second {
		t.Fatalf("enroll after the store file was replaced: %v\n%s", err, srv.logs())
	}
	waitLog(t, srv, "store file replaced")
	if n := strings.Count(srv.logs(), "store file replaced"); n != 1 {
		t.Errorf("%d log lines about the replaced file, want 1", n)
	}
	if err := srv.stop(t); err == nil || !strings.Contains(srv.logs(), "replaced") {
		t.Errorf("serve stopped cleanly on a replaced store: %v\n%s", err, srv.logs())
	}
	os.Rename(aside, live) // the file the server kept writing to
	have := storedSerials(t, cfg)
	for _, s := range delivered {
		if !have[s] {
			t.Errorf("certificate %s was delivered but is not in the store", s)
		}
	}
	mustEstca(t, "--config", cfg, "audit", "verify")
}

// waitLog waits until the server has logged text.
func waitLog(t *testing.T, srv *server, text string) {
	t.Helper()
	for deadline := time.Now().Add(30 * time.Second); time.Now().Before(deadline); time.Sleep(50 * time.Millisecond) {
		if strings.Contains(srv.logs(), text) {
			return
		}
	}
	t.Fatalf("the server did not log %q:\n%s", text, srv.logs())
}

// TestRevokedStaysRefused revokes an operational certificate, then damages
// copies of the store the ways that could revive it (revocation removed or
// changed, the tail cut, a certificate added): `serve` refuses the store,
// naming the damage, or serves and still refuses the revoked certificate
// at the DTLS handshake; `audit verify` exits 1 each time.
func TestRevokedStaysRefused(t *testing.T) {
	dir, cfg := demoAppliance(t, false)
	srv := startServer(t, cfg)
	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Minute)
	defer cancel()
	certs, keys := enrollDemo(t, ctx, dir, srv.addr, 8)
	cert, key := certs[7], keys[7]
	issuing, _ := readCert(filepath.Join(dir, "ca", "issuing.pem"))
	op := &tls.Certificate{Certificate: [][]byte{cert.Raw, issuing.Raw}, PrivateKey: key}
	if c, err := client.Dial(ctx, deviceOptions(t, dir, srv.addr, op)); err != nil {
		t.Fatalf("operational certificate before revocation: %v", err)
	} else {
		c.Close()
	}
	serial := cert.SerialNumber.Text(16)
	mustEstca(t, "--config", cfg, "revoke", "--reason", "1", serial)
	if c, err := client.Dial(ctx, deviceOptions(t, dir, srv.addr, op)); err == nil {
		c.Close()
		t.Fatal("revoked certificate accepted")
	}
	if err := srv.stop(t); err != nil {
		t.Fatalf("serve: %v\n%s", err, srv.logs())
	}

	refusals := map[storetest.Tamper]string{
		storetest.RemoveRevocation: "revocation set differs from the audit chain",
		storetest.ChangeRevocation: "revocation set differs from the audit chain",
		storetest.TruncateTail1:    "behind its checkpoint",
	}
	for _, k := range []storetest.Tamper{storetest.RemoveRevocation, storetest.ChangeRevocation, storetest.TruncateTail1} {
		t.Run(k.String(), func(t *testing.T) {
			tcfg, want := tamperedConfig(t, dir, cfg, k)
			if code, _, errs := estca(t, "--config", tcfg, "audit", "verify"); code != 1 || !strings.Contains(errs, want.Reason) {
				t.Fatalf("audit verify: exit %d, want 1 naming %q:\n%s", code, want.Reason, errs)
			}
			if code, out := runBinary(t, "--config", tcfg, "serve", "--listen", "127.0.0.1:0"); code != 1 || !strings.Contains(out, refusals[k]) {
				t.Fatalf("serve on the damaged store: exit %d, want 1 naming %q:\n%s", code, refusals[k], out)
			}
		})
	}
	// A certificate added to the bucket does not stop the server (audit
	// verify names it); the revocation stays in force.
	tcfg, want := tamperedConfig(t, dir, cfg, storetest.AddCertificate)
	if code, _, errs := estca(t, "--config", tcfg, "audit", "verify"); code != 1 || !strings.Contains(errs, want.Reason) {
		t.Fatalf("audit verify: exit %d, want 1 naming %q:\n%s", code, want.Reason, errs)
	}
	s2 := startServer(t, tcfg)
	if c, err := client.Dial(ctx, deviceOptions(t, dir, s2.addr, op)); err == nil {
		c.Close()
		t.Fatalf("revoked certificate accepted by a server on a store with an added certificate:\n%s", s2.logs())
	}
}

// stop ends the server with SIGTERM and returns how it exited.
func (s *server) stop(t *testing.T) error {
	t.Helper()
	s.killed = true // nothing left for the cleanup
	s.cmd.Process.Signal(syscall.SIGTERM)
	done := make(chan error, 1)
	go func() { done <- s.cmd.Wait() }()
	select {
	case err := <-done:
		return err
	case <-time.After(20 * time.Second):
		s.cmd.Process.Kill()
		t.Fatalf("estca serve did not stop on SIGTERM:\n%s", s.logs())
		return nil
	}
}

// noFixedPorts moves the metrics listener of an appliance to an ephemeral port.
func noFixedPorts(t *testing.T, cfg string) {
	t.Helper()
	b, err := os.ReadFile(cfg)
	if err != nil {
		t.Fatal(err)
	}
	s := strings.Replace(string(b), "metrics_listen: 127.0.0.1:9684", "metrics_listen: 127.0.0.1:0", 1)
	if err := os.WriteFile(cfg, []byte(s), 0o600); err != nil {
		t.Fatal(err)
	}
}

// TestDiskFullAnswers503 makes a serving appliance's store unwritable, two
// ways: on a small file system filled up (ENOSPC; needs root) and with a
// file-size limit put on the running server (EFBIG, prlimit(2); runs as any
// user): devices get 5.03 with the configured Max-Age (not 5.00), the
// outage is logged once (not per request), and enrollment comes back by
// itself when space is back, with nothing lost.
func TestDiskFullAnswers503(t *testing.T) {
	t.Run("tmpfs", func(t *testing.T) {
		dir, cfg := demoAppliance(t, false)
		fs := storetest.SmallFS(t, 2<<20)
		for _, f := range []string{"estca.db", "estca.db.checkpoint"} {
			b, err := os.ReadFile(filepath.Join(dir, "store", f))
			if err != nil {
				t.Fatal(err)
			}
			if err := os.WriteFile(filepath.Join(fs, f), b, 0o600); err != nil {
				t.Fatal(err)
			}
		}
		editConfig(t, cfg, "path: store/estca.db\n", "path: "+filepath.Join(fs, "estca.db")+"\n",
			"checkpoint: store/estca.db.checkpoint", "checkpoint: "+filepath.Join(fs, "estca.db.checkpoint"))
		diskFullServe(t, dir, cfg, func(*server) func() {
			filler := storetest.Fill(t, fs)
			return func() {
				if err := os.Remove(filler); err != nil {
					t.Fatal(err)
				}
			}
		})
	})
	t.Run("file size limit", func(t *testing.T) {
		dir, cfg := demoAppliance(t, false)
		diskFullServe(t, dir, cfg, func(srv *server) func() {
			fi, err := os.Stat(filepath.Join(dir, "store", "estca.db"))
			if err != nil {
				t.Fatal(err)
			}
			return storetest.LimitFileSize(t, srv.cmd.Process.Pid, int(fi.Size()))
		})
	})
}

// diskFullServe serves the appliance, enrolls, makes the store's writes
// fail with full (which returns the function that gives the space back),
// and checks the answers, the log, the recovery and that nothing was lost.
func diskFullServe(t *testing.T, dir, cfg string, full func(*server) (free func())) {
	editConfig(t, cfg, "retry_after: 30s", "retry_after: 7s")
	srv := startServer(t, cfg)
	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Minute)
	defer cancel()
	c, err := client.Dial(ctx, deviceOptions(t, dir, srv.addr, nil))
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	var delivered []string
	for range 2 {
		cert, _, err := enrollNew(ctx, c)
		if err != nil {
			t.Fatal(err)
		}
		delivered = append(delivered, cert.SerialNumber.Text(16))
	}
	free := full(srv)
	// bbolt may still have free pages inside its file: enroll until the
	// first write needs new space.
	refused := 0
	for i := 0; refused < 6; i++ {
		cert, _, err := enrollNew(ctx, c)
		if err == nil && refused == 0 && i < 500 {
			delivered = append(delivered, cert.SerialNumber.Text(16))
			continue
		}
		var re *client.ResponseError
		if !errors.As(err, &re) || re.Code != codes.ServiceUnavailable || re.MaxAge != 7*time.Second {
			t.Fatalf("enroll %d on a full disk: %v\n%s", i, err, srv.logs())
		}
		refused++
	}
	waitLog(t, srv, "store writes failing")
	logs := srv.logs()
	if n := strings.Count(logs, "level=ERROR"); n != 1 {
		t.Errorf("%d ERROR lines for %d refused enrollments, want 1:\n%s", n, refused, logs)
	}
	if strings.Contains(logs, "internal error") {
		t.Errorf("internal errors logged:\n%s", logs)
	}
	free()
	var cert *x509.Certificate
	for deadline := time.Now().Add(time.Minute); ; time.Sleep(200 * time.Millisecond) {
		if cert, _, err = enrollNew(ctx, c); err == nil {
			break
		}
		if time.Now().After(deadline) {
			t.Fatalf("enrollment did not come back after space was freed: %v\n%s", err, srv.logs())
		}
	}
	delivered = append(delivered, cert.SerialNumber.Text(16))
	waitLog(t, srv, "store writes recovered")
	if err := srv.stop(t); err != nil {
		t.Fatalf("serve: %v\n%s", err, srv.logs())
	}
	have := storedSerials(t, cfg)
	for _, s := range delivered {
		if !have[s] {
			t.Errorf("certificate %s was delivered but is not in the store", s)
		}
	}
	mustEstca(t, "--config", cfg, "audit", "verify")
}

// TestRestoreCommand: `estca restore` puts a verified backup back into a
// stopped appliance. A backup older than the checkpoint is refused unless
// the loss is accepted (then recorded and signed); the old store is kept;
// the restored appliance verifies and serves, and the checkpoint kept off
// the box from before the restore is reported as superseded.
func TestRestoreCommand(t *testing.T) {
	dir, cfg := demoAppliance(t, false)
	issue := func(cn string) {
		csr := filepath.Join(t.TempDir(), "c.der")
		writeCSR(t, csr, cn)
		mustEstca(t, "--config", cfg, "issue", "--csr", csr)
	}
	issue("before-backup")
	backup := filepath.Join(t.TempDir(), "backup.db")
	mustEstca(t, "--config", cfg, "backup", backup)
	issue("after-backup")
	kept := filepath.Join(t.TempDir(), "kept.checkpoint")
	os.WriteFile(kept, []byte(mustEstca(t, "--config", cfg, "audit", "checkpoint")), 0o600)

	srv := startServer(t, cfg)
	if code, _, errs := estca(t, "--config", cfg, "restore", backup); code == 0 || !strings.Contains(errs, "running") {
		t.Fatalf("restore while serving: exit %d\n%s", code, errs)
	}
	if err := srv.stop(t); err != nil {
		t.Fatal(err)
	}
	// The journal line of the newest head, as kept off the box, is a checkpoint.
	var journal string
	for _, l := range strings.Split(srv.logs(), "\n") {
		if strings.Contains(l, "audit checkpoint") {
			journal = l
		}
	}
	jf := filepath.Join(t.TempDir(), "journal.line")
	os.WriteFile(jf, []byte(journal), 0o600)
	if v := mustEstca(t, "--config", cfg, "audit", "verify", "--checkpoint", jf); !strings.Contains(v, "extends 2 checkpoint") {
		t.Fatalf("audit verify against the journal line %q: %s", journal, v)
	}
	if code, _, errs := estca(t, "--config", cfg, "restore", backup); code != 1 || !strings.Contains(errs, "behind") || !strings.Contains(errs, "--accept-loss") {
		t.Fatalf("restore of an older backup: exit %d\n%s", code, errs)
	}
	out := mustEstca(t, "--config", cfg, "restore", "--accept-loss", "--reason", "test: disk replaced", backup)
	if !strings.Contains(out, "kept as") || !strings.Contains(out, "accepted loss") {
		t.Fatalf("restore: %s", out)
	}
	entries, _ := filepath.Glob(filepath.Join(dir, "store", "estca.db.replaced-*"))
	if len(entries) != 1 {
		t.Fatalf("old store kept as %v", entries)
	}
	v := mustEstca(t, "--config", cfg, "audit", "verify", "--checkpoint", kept)
	if !strings.Contains(v, "superseded by the restored") {
		t.Fatalf("audit verify against the pre-restore checkpoint: %s", v)
	}
	if have := listJSON(t, cfg); len(have) != 1 || !strings.Contains(have[0].Subject, "before-backup") {
		t.Fatalf("restored certificates: %+v", have)
	}
	if list := mustEstca(t, "--config", cfg, "audit", "list"); !strings.Contains(list, "restored") || !strings.Contains(list, "disk replaced") {
		t.Fatalf("no restore record:\n%s", list)
	}
	srv = startServer(t, cfg)
	if err := srv.stop(t); err != nil {
		t.Fatalf("serve after restore: %v\n%s", err, srv.logs())
	}
}
