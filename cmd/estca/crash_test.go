package main

import (
	"context"
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/sha256"
	"crypto/x509"
	"encoding/hex"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/estca/estca/est/client"
	"github.com/estca/estca/est/wire"
)

// TestCrashKeepsDeliveredCertificates is the short form of the crash test
// (make test); crash_long_test.go runs 20 rounds (make test-long).
func TestCrashKeepsDeliveredCertificates(t *testing.T) {
	testCrashRounds(t, 3)
}

// testCrashRounds enrolls from several devices at once and kills `estca
// serve` with SIGKILL in the middle, rounds times on the same appliance.
// After every crash: every certificate a device received is in the store,
// no CSR has two certificates (the CSRs in flight at the crash are re-sent,
// as a device would after its timeout, and get the certificate issued for
// them or a new one, once), and `audit verify` (with the checkpoint) is
// green. The server restarts on the store each time.
func testCrashRounds(t *testing.T, rounds int) {
	dir, cfg := demoAppliance(t, false)
	delivered := map[string]bool{} // serials received by devices
	byCSR := map[string]string{}   // CSR digest → serial received
	var unanswered [][]byte        // CSRs sent when the server died
	for round := range rounds {
		srv := startServer(t, cfg)
		opts := deviceOptions(t, dir, srv.addr, nil)
		opts.Timeout = 2 * time.Second // how long a device waits for the dead server
		ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
		c, err := client.Dial(ctx, opts)
		if err != nil {
			t.Fatal(err)
		}
		// Devices whose request was cut by the last crash try again.
		for _, csr := range unanswered {
			cert, _, err := c.Enroll(ctx, csr, wire.FormatPKIXCert)
			if err != nil {
				t.Fatalf("round %d: re-sent CSR: %v\n%s", round, err, srv.logs())
			}
			d := csrDigest(csr)
			if prev, ok := byCSR[d]; ok && prev != cert.SerialNumber.Text(16) {
				t.Fatalf("round %d: a re-sent CSR got %s, it had %s", round, cert.SerialNumber.Text(16), prev)
			}
			byCSR[d] = cert.SerialNumber.Text(16)
			delivered[cert.SerialNumber.Text(16)] = true
		}
		c.Close()
		unanswered = nil

		var (
			mu     sync.Mutex
			wg     sync.WaitGroup
			enough = make(chan struct{})
			once   sync.Once
			got    int
		)
		target := 30 + round%4*10
		for w := range 4 {
			wg.Add(1)
			go func() {
				defer wg.Done()
				c, err := client.Dial(ctx, opts)
				if err != nil {
					t.Errorf("round %d worker %d: %v", round, w, err)
					return
				}
				defer c.Close()
				for i := 0; ; i++ {
					key, _ := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
					// An empty subject: the certificate gets the device's identity.
					csr, _ := x509.CreateCertificateRequest(rand.Reader, &x509.CertificateRequest{}, key)
					cert, _, err := c.Enroll(ctx, csr, wire.FormatPKIXCert)
					mu.Lock()
					if err != nil {
						unanswered = append(unanswered, csr) // the server is gone
						mu.Unlock()
						return
					}
					s := cert.SerialNumber.Text(16)
					delivered[s] = true
					byCSR[csrDigest(csr)] = s
					if got++; got >= target {
						once.Do(func() { close(enough) })
					}
					mu.Unlock()
				}
			}()
		}
		select {
		case <-enough:
		case <-ctx.Done():
			t.Fatalf("round %d: too few enrollments before the deadline:\n%s", round, srv.logs())
		}
		srv.kill(t)
		wg.Wait()
		cancel()

		// The admin socket file of the dead server is stale: the CLI must
		// notice and open the store itself.
		have := storedSerials(t, cfg)
		for s := range delivered {
			if !have[s] {
				t.Errorf("round %d: certificate %s was delivered but is not in the store after the crash", round, s)
			}
		}
		checkNoDuplicates(t, cfg)
		if v := mustEstca(t, "--config", cfg, "audit", "verify"); !strings.Contains(v, "audit chain ok") || !strings.Contains(v, "extends 1 checkpoint") {
			t.Fatalf("round %d: audit verify after the crash: %s", round, v)
		}
		t.Logf("round %d: %d certificates delivered so far, %d in the store, %d requests cut by the crash", round, len(delivered), len(have), len(unanswered))
	}
	// Restart: the stale socket is replaced and enrollment works again.
	srv := startServer(t, cfg)
	ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
	defer cancel()
	c, err := client.Dial(ctx, deviceOptions(t, dir, srv.addr, nil))
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	if _, _, err := enrollNew(ctx, c); err != nil {
		t.Fatalf("enroll after restart: %v\n%s", err, srv.logs())
	}
	if _, err := os.Stat(filepath.Join(dir, "run", "estca.sock")); err != nil {
		t.Fatalf("admin socket after restart: %v", err)
	}
}

func csrDigest(csr []byte) string {
	d := sha256.Sum256(csr)
	return hex.EncodeToString(d[:])
}

// checkNoDuplicates fails when two stored certificates answer the same
// requester and CSR.
func checkNoDuplicates(t *testing.T, cfg string) {
	t.Helper()
	seen := map[string]string{}
	for _, c := range listJSON(t, cfg) {
		k := c.Requester + "/" + c.CSRDigest
		if prev, ok := seen[k]; ok {
			t.Errorf("certificates %s and %s answer the same CSR %s", prev, c.Serial, c.CSRDigest)
		}
		seen[k] = c.Serial
	}
}

// TestExternalRoot initialises with --external-root, has openssl play the
// external root, imports the signed issuing CA and issues through it.
func TestExternalRoot(t *testing.T) {
	dir, cfg := newAppliance(t, "--external-root")
	tmp := t.TempDir()
	rootKey, rootPEM := filepath.Join(tmp, "root.key"), filepath.Join(tmp, "root.pem")
	openssl(t, "req", "-x509", "-newkey", "ec", "-pkeyopt", "ec_paramgen_curve:P-256", "-nodes", "-days", "3650",
		"-subj", "/CN=external root", "-keyout", rootKey, "-out", rootPEM,
		"-addext", "basicConstraints=critical,CA:true", "-addext", "keyUsage=critical,keyCertSign,cRLSign")
	ext := filepath.Join(tmp, "ext.cnf")
	os.WriteFile(ext, []byte("basicConstraints=critical,CA:true,pathlen:0\nkeyUsage=critical,keyCertSign,cRLSign\nsubjectKeyIdentifier=hash\nauthorityKeyIdentifier=keyid\n"), 0o600)
	issuing := filepath.Join(tmp, "issuing.pem")
	openssl(t, "x509", "-req", "-in", filepath.Join(dir, "ca", "issuing.csr"), "-CA", rootPEM, "-CAkey", rootKey,
		"-CAcreateserial", "-days", "1825", "-extfile", ext, "-out", issuing)

	// Before the import, commands and doctor say what to do (ca.external_root).
	csr0 := filepath.Join(tmp, "c0.der")
	writeCSR(t, csr0, "too-early")
	if code, _, errs := estca(t, "--config", cfg, "issue", "--csr", csr0); code != 1 || !strings.Contains(errs, "then run estca ca import") {
		t.Fatalf("issue before the import: exit %d %s", code, errs)
	}
	ephemeralPorts(t, cfg)
	if code, r := doctor(t, cfg); code != 1 {
		t.Fatalf("doctor before the import: exit %d", code)
	} else if f := diagnosis(t, r, "certificates", findingFail, "issuing CA certificate"); !strings.Contains(f.Fix, "estca ca import") {
		t.Fatalf("doctor fix %q", f.Fix)
	}

	// A certificate signed for another key is refused.
	other := filepath.Join(tmp, "other.pem")
	openssl(t, "req", "-x509", "-newkey", "ec", "-pkeyopt", "ec_paramgen_curve:P-256", "-nodes", "-days", "1",
		"-subj", "/CN=other", "-keyout", filepath.Join(tmp, "other.key"), "-out", other)
	if code, _, errs := estca(t, "--config", cfg, "ca", "import", "--cert", other, "--root", rootPEM); code == 0 {
		t.Fatal("ca import accepted a certificate for another key")
	} else if errs == "" {
		t.Fatal("ca import failed without a message")
	}

	mustEstca(t, "--config", cfg, "ca", "import", "--cert", issuing, "--root", rootPEM, "--server-name", "estca.test")
	csr := filepath.Join(tmp, "c.der")
	writeCSR(t, csr, "device-ext")
	leaf := filepath.Join(tmp, "leaf.pem")
	mustEstca(t, "--config", cfg, "issue", "--csr", csr, "--out", leaf)
	if v := openssl(t, "verify", "-CAfile", rootPEM, "-untrusted", issuing, leaf); !strings.Contains(v, ": OK") {
		t.Fatalf("openssl verify: %s", v)
	}
	if v := openssl(t, "verify", "-CAfile", rootPEM, "-untrusted", issuing, filepath.Join(dir, "ca", "server.pem")); !strings.Contains(v, ": OK") {
		t.Fatalf("server certificate: %s", v)
	}
	if show := mustEstca(t, "--config", cfg, "ca", "show"); !strings.Contains(show, "external root") {
		t.Fatalf("ca show: %s", show)
	}
}
