package main

import (
	"context"
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/x509"
	"crypto/x509/pkix"
	"encoding/json"
	"fmt"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/estca/estca/est"
)

// TestCrashKeepsDeliveredCertificates enrolls from several devices at once,
// kills `estca serve` with SIGKILL in the middle, and checks that every
// certificate a device received is in the store after the crash, that the
// audit chain verifies, and that the appliance serves again after a restart.
func TestCrashKeepsDeliveredCertificates(t *testing.T) {
	dir, cfg := demoAppliance(t, false)
	srv := startServer(t, cfg)
	opts := demoClientOptions(t, dir, srv.addr)

	ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
	defer cancel()
	var (
		mu       sync.Mutex
		received []string
		wg       sync.WaitGroup
	)
	enough := make(chan struct{})
	var once sync.Once
	for w := range 4 {
		wg.Add(1)
		go func() {
			defer wg.Done()
			c, err := est.Dial(ctx, opts)
			if err != nil {
				t.Errorf("worker %d: %v", w, err)
				return
			}
			defer c.Close()
			for i := 0; ; i++ {
				key, _ := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
				csr, _ := x509.CreateCertificateRequest(rand.Reader, &x509.CertificateRequest{
					Subject: pkix.Name{CommonName: fmt.Sprintf("crash-%d-%d", w, i)}}, key)
				cert, _, err := c.Enroll(ctx, csr, est.FormatPKIXCert)
				if err != nil {
					return // the server is gone
				}
				mu.Lock()
				received = append(received, cert.SerialNumber.Text(16))
				if len(received) >= 60 {
					once.Do(func() { close(enough) })
				}
				mu.Unlock()
			}
		}()
	}
	select {
	case <-enough:
	case <-ctx.Done():
		t.Fatalf("too few enrollments before the deadline:\n%s", srv.logs())
	}
	srv.kill(t)
	wg.Wait()

	mu.Lock()
	got := append([]string(nil), received...)
	mu.Unlock()
	// The admin socket file of the dead server is stale: the CLI must notice
	// and open the store itself.
	var stored []certView
	if err := json.Unmarshal([]byte(mustEstca(t, "--config", cfg, "certs", "list", "--json")), &stored); err != nil {
		t.Fatal(err)
	}
	have := map[string]bool{}
	for _, c := range stored {
		have[c.Serial] = true
	}
	for _, s := range got {
		if !have[s] {
			t.Errorf("certificate %s was delivered but is not in the store after the crash", s)
		}
	}
	t.Logf("%d certificates delivered before the crash, %d in the store", len(got), len(stored))
	if v := mustEstca(t, "--config", cfg, "audit", "verify"); !strings.Contains(v, "audit chain ok") {
		t.Fatalf("audit verify after the crash: %s", v)
	}

	// Restart: the stale socket is replaced and enrollment works again.
	srv2 := startServer(t, cfg)
	opts.Server = srv2.addr
	c, err := est.Dial(ctx, opts)
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	key, _ := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	csr, _ := x509.CreateCertificateRequest(rand.Reader, &x509.CertificateRequest{Subject: pkix.Name{CommonName: "after-restart"}}, key)
	if _, _, err := c.Enroll(ctx, csr, est.FormatPKIXCert); err != nil {
		t.Fatalf("enroll after restart: %v\n%s", err, srv2.logs())
	}
	if _, err := os.Stat(filepath.Join(dir, "run", "estca.sock")); err != nil {
		t.Fatalf("admin socket after restart: %v", err)
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
