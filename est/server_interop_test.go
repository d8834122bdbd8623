package est

import (
	"context"
	"crypto/x509"
	"encoding/pem"
	"net"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/estca/estca/policy/pkitest"
)

// stLibcoap returns the path of a libcoap coap-client build, skipping the
// test when it is missing (failing on CI, where it must be installed).
func stLibcoap(t *testing.T, name string) string {
	t.Helper()
	return pkitest.RequireTool(t, name)
}

func stWritePEM(t *testing.T, path, typ string, der []byte) {
	t.Helper()
	if err := os.WriteFile(path, pem.EncodeToMemory(&pem.Block{Type: typ, Bytes: der}), 0o600); err != nil {
		t.Fatal(err)
	}
}

// TestServerLibcoap drives the server with the real libcoap 4.3.1 clients
// (OpenSSL and GnuTLS builds). coap-client exits 0 even when the handshake
// fails, so the tests look at what it wrote.
func TestServerLibcoap(t *testing.T) {
	t.Parallel()
	e := stStart(t, nil)
	dir := t.TempDir()
	caPEM := filepath.Join(dir, "ca.pem")
	stWritePEM(t, caPEM, "CERTIFICATE", e.ca.Cert.Raw)
	certPEM, keyPEM := filepath.Join(dir, "client.pem"), filepath.Join(dir, "client.key")
	stWritePEM(t, certPEM, "CERTIFICATE", e.client.Leaf.Raw)
	kder, err := x509.MarshalPKCS8PrivateKey(e.client.PrivateKey)
	if err != nil {
		t.Fatal(err)
	}
	stWritePEM(t, keyPEM, "PRIVATE KEY", kder)
	port := strconv.Itoa(e.srv.Addr().(*net.UDPAddr).Port)
	base := "coaps://127.0.0.1:" + port

	run := func(t *testing.T, bin string, args ...string) string {
		t.Helper()
		ctx, cancel := context.WithTimeout(context.Background(), 20*time.Second)
		defer cancel()
		out, err := exec.CommandContext(ctx, bin, args...).CombinedOutput()
		if ctx.Err() != nil {
			t.Fatalf("%s timed out: %s", bin, out)
		}
		_ = err // exits 0 on most failures; callers check the output file
		return string(out)
	}
	auth := []string{"-c", certPEM, "-j", keyPEM, "-R", caPEM, "-B", "10"}

	for _, bin := range []string{"coap-client-openssl", "coap-client-gnutls"} {
		t.Run(bin, func(t *testing.T) {
			path := stLibcoap(t, bin)
			t.Run("crts", func(t *testing.T) {
				out := filepath.Join(t.TempDir(), "crts.der")
				log := run(t, path, append(auth, "-m", "get", "-A", "281", "-o", out, base+"/.well-known/est/crts")...)
				b, err := os.ReadFile(out)
				if err != nil {
					t.Fatalf("no output: %v\n%s", err, log)
				}
				if certs := stCertsOnly(t, b); !certs[0].Equal(e.ca.Cert) {
					t.Fatal("crts payload differs")
				}
			})
			t.Run("crts in 16-byte blocks", func(t *testing.T) {
				out := filepath.Join(t.TempDir(), "crts.der")
				before := strings.Count(e.logs.String(), "resource=crts code=2.05")
				log := run(t, path, append(auth, "-m", "get", "-b", "16", "-o", out, base+"/est/crts")...)
				b, err := os.ReadFile(out)
				if err != nil {
					t.Fatalf("no output: %v\n%s", err, log)
				}
				if certs := stCertsOnly(t, b); !certs[0].Equal(e.ca.Cert) {
					t.Fatal("crts payload differs")
				}
				if n := strings.Count(e.logs.String(), "resource=crts code=2.05") - before; n != (len(b)+15)/16 {
					t.Fatalf("%d blocks for %d bytes", n, len(b))
				}
			})
			t.Run("discovery", func(t *testing.T) {
				out := filepath.Join(t.TempDir(), "core")
				log := run(t, path, append(auth, "-m", "get", "-o", out, base+"/.well-known/core?rt=ace.est.sen")...)
				b, _ := os.ReadFile(out)
				if string(b) != `</est/sen>;rt="ace.est.sen";ct="281 287"` {
					t.Fatalf("discovery %q\n%s", b, log)
				}
			})
			t.Run("sen block-wise", func(t *testing.T) {
				csr, key := stCSR(t, "libcoap device "+bin, 2500)
				in := filepath.Join(t.TempDir(), "csr.der")
				if err := os.WriteFile(in, csr, 0o600); err != nil {
					t.Fatal(err)
				}
				out := filepath.Join(t.TempDir(), "cert.der")
				before, _ := e.auth.counts()
				log := run(t, path, append(auth, "-m", "post", "-t", "286", "-A", "287", "-b", "64", "-f", in, "-o", out,
					base+"/est/iot/sen")...)
				b, err := os.ReadFile(out)
				if err != nil {
					t.Fatalf("no output: %v\n%s", err, log)
				}
				cert, err := x509.ParseCertificate(b)
				if err != nil || !key.PublicKey.Equal(cert.PublicKey) {
					t.Fatalf("issued certificate: %v\n%s", err, log)
				}
				if after, _ := e.auth.counts(); after != before+1 {
					t.Fatalf("Enroll ran %d times", after-before)
				}
				// 2.5 KiB in 64-byte blocks: dozens of 2.31 Continue.
				if n := strings.Count(e.logs.String(), "resource=iot/sen code=2.31"); n < 30 {
					t.Fatalf("only %d Block1 continues logged", n)
				}
			})
			t.Run("not acceptable", func(t *testing.T) {
				log := run(t, path, append(auth, "-m", "get", "-A", "62", base+"/.well-known/est/crts")...)
				if !strings.Contains(log, "4.06") {
					t.Fatalf("want 4.06:\n%s", log)
				}
			})
			t.Run("no client certificate", func(t *testing.T) {
				out := filepath.Join(t.TempDir(), "crts.der")
				log := run(t, path, "-m", "get", "-R", caPEM, "-B", "3", "-o", out, base+"/.well-known/est/crts")
				if b, err := os.ReadFile(out); err == nil && len(b) > 0 {
					t.Fatalf("served without client certificate:\n%s", log)
				}
			})
		})
	}
}
