package main

// Interop tests: a real `estca serve` process (the binary built from this
// package) on 127.0.0.1, driven by libcoap's coap-client-openssl and
// coap-client-gnutls, with every output checked by openssl and the store.

import (
	"bufio"
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/x509"
	"crypto/x509/pkix"
	"encoding/asn1"
	"encoding/json"
	"encoding/pem"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"
)

var (
	buildOnce sync.Once
	builtBin  string
	buildErr  error
)

// testVersion is the version stamped into the test binary (-X main.version).
const testVersion = "v0.0.0-test"

// estcaBinary builds the estca binary once per test run.
func estcaBinary(t *testing.T) string {
	t.Helper()
	buildOnce.Do(func() {
		dir, err := os.MkdirTemp("", "estca-bin")
		if err != nil {
			buildErr = err
			return
		}
		builtBin = filepath.Join(dir, "estca")
		out, err := exec.Command("go", "build", "-ldflags", "-X main.version="+testVersion, "-o", builtBin, ".").CombinedOutput()
		if err != nil {
			buildErr = fmt.Errorf("go build: %v\n%s", err, out)
		}
	})
	if buildErr != nil {
		t.Fatal(buildErr)
	}
	return builtBin
}

// server is a running `estca serve` process.
type server struct {
	addr   string
	crlURL string // http://.../crl when crl.listen is set
	cmd    *exec.Cmd
	log    *strings.Builder
	mu     *sync.Mutex
	killed bool
}

// kill ends the server with SIGKILL, as a crash would.
func (s *server) kill(t *testing.T) {
	t.Helper()
	s.killed = true
	if err := s.cmd.Process.Kill(); err != nil {
		t.Fatal(err)
	}
	s.cmd.Wait()
}

var (
	servingLine = regexp.MustCompile(`serving EST-coaps on udp (\S+)`)
	crlLine     = regexp.MustCompile(`serving the CRL on (\S+)`)
)

// startServer runs `estca serve` on an ephemeral loopback port and waits
// until it serves; it is stopped with SIGTERM at cleanup.
func startServer(t *testing.T, cfg string) *server {
	t.Helper()
	cmd := exec.Command(estcaBinary(t), "--config", cfg, "--log-level", "debug", "serve", "--listen", "127.0.0.1:0")
	stdout, err := cmd.StdoutPipe()
	if err != nil {
		t.Fatal(err)
	}
	s := &server{cmd: cmd, log: &strings.Builder{}, mu: &sync.Mutex{}}
	cmd.Stderr = &lockedWriter{s.mu, s.log}
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	addr := make(chan string, 1)
	go func() {
		sc := bufio.NewScanner(stdout)
		for sc.Scan() {
			if m := crlLine.FindStringSubmatch(sc.Text()); m != nil {
				s.mu.Lock()
				s.crlURL = m[1]
				s.mu.Unlock()
			}
			if m := servingLine.FindStringSubmatch(sc.Text()); m != nil {
				addr <- m[1]
			}
		}
		close(addr)
	}()
	select {
	case a, ok := <-addr:
		if !ok {
			cmd.Wait()
			t.Fatalf("estca serve exited before serving:\n%s", s.logs())
		}
		s.addr = a
	case <-time.After(30 * time.Second):
		cmd.Process.Kill()
		t.Fatalf("estca serve did not start:\n%s", s.logs())
	}
	t.Cleanup(func() {
		if s.killed {
			return
		}
		cmd.Process.Signal(syscall.SIGTERM)
		done := make(chan error, 1)
		go func() { done <- cmd.Wait() }()
		select {
		case err := <-done:
			if err != nil {
				t.Errorf("estca serve: %v\n%s", err, s.logs())
			}
		case <-time.After(20 * time.Second):
			cmd.Process.Kill()
			t.Errorf("estca serve did not stop on SIGTERM")
		}
	})
	return s
}

func (s *server) logs() string {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.log.String()
}

type lockedWriter struct {
	mu *sync.Mutex
	sb *strings.Builder
}

func (w *lockedWriter) Write(p []byte) (int, error) {
	w.mu.Lock()
	defer w.mu.Unlock()
	return w.sb.Write(p)
}

// paddedProfile is a profile the interop tests add to the demo
// configuration: the demo binding, and requested extensions dropped rather
// than refused, so that a CSR padded by a private extension (paddedCSR)
// spans several blocks.
const paddedProfile = `  - name: padded
    validity: 24h
    subject: [{type: O}, {type: CN}, {type: serialNumber}]
    extensions: {unknown: drop}
`

// demoAppliance is an appliance made with --demo whose metrics listener is
// moved to an ephemeral port, with the profile "padded" added; tolerant
// sets the demo manufacturer's expiry tolerance.
func demoAppliance(t *testing.T, tolerant bool) (dir, cfg string) {
	t.Helper()
	requireTools(t, "softhsm2-util", "openssl", "coap-client-openssl", "coap-client-gnutls")
	dir, cfg = newAppliance(t, "--demo")
	b, err := os.ReadFile(cfg)
	if err != nil {
		t.Fatal(err)
	}
	s := strings.Replace(string(b), "metrics_listen: 127.0.0.1:9684", "metrics_listen: 127.0.0.1:0", 1)
	s = strings.Replace(s, "\n# IDevID trust anchors", paddedProfile+"\n# IDevID trust anchors", 1)
	s = strings.Replace(s, "profiles: [default]", "profiles: [default, padded]", 1)
	if tolerant {
		s = strings.Replace(s, "allow_expired: false", "allow_expired: true", 1)
	}
	if err := os.WriteFile(cfg, []byte(s), 0o600); err != nil {
		t.Fatal(err)
	}
	return dir, cfg
}

// identity is a client certificate and key on disk.
type identity struct{ cert, key string }

func demoDevice(dir, name string) identity {
	return identity{filepath.Join(dir, "demo", "device-"+name+".pem"), filepath.Join(dir, "demo", "device-"+name+".key")}
}

// coap runs a libcoap client and returns its combined output. coap-client
// exits 0 even when the handshake fails, so callers check the output.
func coap(t *testing.T, client string, id *identity, root string, args ...string) string {
	t.Helper()
	full := []string{"-B", "10"}
	if id != nil {
		full = append(full, "-c", id.cert, "-j", id.key)
	}
	if root != "" {
		full = append(full, "-R", root)
	}
	full = append(full, args...)
	out, _ := exec.Command(client, full...).CombinedOutput()
	return string(out)
}

// paddedCSR writes a DER CSR of more than 1 KiB (a private extension pads
// it, which the "padded" profile drops) so that block sizes up to 1024
// really use Block1; its subject is the device id's (a PEM certificate
// file), as the demo binding wants.
func paddedCSR(t *testing.T, path string, id identity) {
	t.Helper()
	key, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		t.Fatal(err)
	}
	leaf, err := readCert(id.cert)
	if err != nil {
		t.Fatal(err)
	}
	pad, _ := asn1.Marshal(strings.Repeat("p", 1200))
	der, err := x509.CreateCertificateRequest(rand.Reader, &x509.CertificateRequest{
		RawSubject:      leaf.RawSubject,
		ExtraExtensions: []pkix.Extension{{Id: asn1.ObjectIdentifier{1, 3, 6, 1, 4, 1, 55555, 1}, Value: pad}},
	}, key)
	if err != nil {
		t.Fatal(err)
	}
	if len(der) <= 1024 {
		t.Fatalf("CSR only %d bytes", len(der))
	}
	if err := os.WriteFile(path, der, 0o600); err != nil {
		t.Fatal(err)
	}
}

func certCount(t *testing.T, cfg string) int {
	t.Helper()
	var cs []certView
	if err := json.Unmarshal([]byte(mustEstca(t, "--config", cfg, "certs", "list", "--json")), &cs); err != nil {
		t.Fatal(err)
	}
	return len(cs)
}

func derToPEM(t *testing.T, der, pemPath string) {
	t.Helper()
	b, err := os.ReadFile(der)
	if err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(pemPath, pem.EncodeToMemory(&pem.Block{Type: "CERTIFICATE", Bytes: b}), 0o600); err != nil {
		t.Fatal(err)
	}
}

// TestInteropLibcoap enrolls with both libcoap builds against a real server.
func TestInteropLibcoap(t *testing.T) {
	dir, cfg := demoAppliance(t, false)
	srv := startServer(t, cfg)
	root := filepath.Join(dir, "ca", "root.pem")
	issuing := filepath.Join(dir, "ca", "issuing.pem")
	dev := demoDevice(dir, "valid")
	base := "coaps://" + srv.addr
	tmp := t.TempDir()

	for _, client := range []string{"coap-client-openssl", "coap-client-gnutls"} {
		t.Run(client, func(t *testing.T) {
			out := coap(t, client, &dev, root, "-m", "get", base+"/.well-known/core?rt=ace.est*")
			for _, want := range []string{`</est/crts>;rt="ace.est.crts";ct="281 287"`, `rt="ace.est.sen"`, `rt="ace.est.sren"`, `rt="ace.est.att";ct=285`,
				`</est/skg>;rt="ace.est.skg";ct=62`, `</est/skc>;rt="ace.est.skc";ct=62`} {
				if !strings.Contains(out, want) {
					t.Errorf("discovery lacks %s:\n%s", want, out)
				}
			}

			p7 := filepath.Join(tmp, client+"-crts.p7")
			coap(t, client, &dev, root, "-m", "get", "-A", "281", "-o", p7, base+"/.well-known/est/crts")
			certs := openssl(t, "pkcs7", "-inform", "DER", "-in", p7, "-print_certs", "-noout")
			if !strings.Contains(certs, "issuing CA") || !strings.Contains(certs, "root CA") {
				t.Errorf("crts 281 does not hold the hierarchy:\n%s", certs)
			}
			one := filepath.Join(tmp, client+"-crts.der")
			coap(t, client, &dev, root, "-m", "get", "-A", "287", "-o", one, base+"/.well-known/est/crts")
			// 287 is the root: the explicit trust anchor (est/resource.go).
			if s := openssl(t, "x509", "-inform", "DER", "-in", one, "-noout", "-subject"); !strings.Contains(s, "root CA") {
				t.Errorf("crts 287: %s", s)
			}

			for _, bs := range []string{"64", "256", "1024"} {
				before := certCount(t, cfg)
				csr := filepath.Join(tmp, client+"-"+bs+".csr")
				paddedCSR(t, csr, dev)
				p7 := filepath.Join(tmp, client+"-"+bs+".p7")
				out := coap(t, client, &dev, root, "-m", "post", "-t", "286", "-b", bs, "-f", csr, "-o", p7, base+"/est/padded/sen")
				leaf := filepath.Join(tmp, client+"-"+bs+".pem")
				pemOut, err := exec.Command("openssl", "pkcs7", "-inform", "DER", "-in", p7, "-print_certs").CombinedOutput()
				if err != nil {
					t.Fatalf("sen -b %s: no PKCS#7 back: %v\n%s\n%s", bs, err, out, pemOut)
				}
				os.WriteFile(leaf, pemOut, 0o600)
				if v := openssl(t, "verify", "-CAfile", root, "-untrusted", issuing, leaf); !strings.Contains(v, ": OK") {
					t.Errorf("sen -b %s: %s", bs, v)
				}
				if got := certCount(t, cfg); got != before+1 {
					t.Errorf("sen -b %s issued %d certificates, want 1", bs, got-before)
				}
			}

			// Re-enrollment with the operational certificate just issued
			// (an empty subject: the certificate gets the device's identity).
			key, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
			if err != nil {
				t.Fatal(err)
			}
			csr := filepath.Join(tmp, client+"-op.csr")
			der, _ := x509.CreateCertificateRequest(rand.Reader, &x509.CertificateRequest{}, key)
			os.WriteFile(csr, der, 0o600)
			opDER := filepath.Join(tmp, client+"-op.der")
			coap(t, client, &dev, root, "-m", "post", "-t", "286", "-A", "287", "-f", csr, "-o", opDER, base+"/.well-known/est/sen")
			op := identity{filepath.Join(tmp, client+"-op.pem"), filepath.Join(tmp, client+"-op.key")}
			derToPEM(t, opDER, op.cert)
			kder, _ := x509.MarshalPKCS8PrivateKey(key)
			os.WriteFile(op.key, pem.EncodeToMemory(&pem.Block{Type: "PRIVATE KEY", Bytes: kder}), 0o600)

			// RFC 7030 §4.2.2: the renewal CSR repeats the subject and SAN.
			opCert, err := readCert(op.cert)
			if err != nil {
				t.Fatalf("no operational certificate: %v", err)
			}
			key2, _ := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
			der2, _ := x509.CreateCertificateRequest(rand.Reader, &x509.CertificateRequest{
				RawSubject: opCert.RawSubject, ExtraExtensions: sanOf(opCert)}, key2)
			csr2 := filepath.Join(tmp, client+"-re.csr")
			os.WriteFile(csr2, der2, 0o600)
			reDER := filepath.Join(tmp, client+"-re.der")
			out = coap(t, client, &op, root, "-m", "post", "-t", "286", "-A", "287", "-f", csr2, "-o", reDER, base+"/.well-known/est/sren")
			if s, err := exec.Command("openssl", "x509", "-inform", "DER", "-in", reDER, "-noout", "-subject").CombinedOutput(); err != nil || !strings.Contains(string(s), "serialNumber = DEMO-0001") {
				t.Errorf("sren: %v %s\n%s", err, s, out)
			}
			// sren with an IDevID is refused.
			if out := coap(t, client, &dev, root, "-m", "post", "-t", "286", "-f", csr2, base+"/.well-known/est/sren"); !hasCode(out, "4.03") {
				t.Errorf("sren with an IDevID: want 4.03, got:\n%s", out)
			}

			att := filepath.Join(tmp, client+"-att.der")
			out = coap(t, client, &dev, root, "-m", "get", "-A", "285", "-o", att, base+"/.well-known/est/att")
			if b, err := os.ReadFile(att); err != nil || len(b) < 2 || b[0] != 0x30 {
				t.Errorf("att: %v %x\n%s", err, b, out)
			}
		})
	}
	if v := mustEstca(t, "--config", cfg, "audit", "verify"); !strings.Contains(v, "audit chain ok") {
		t.Fatalf("audit verify while serving: %s", v)
	}
	// The store is held by the server: a second writer gets a clear error
	// within the lock timeout instead of hanging.
	csr := filepath.Join(tmp, "locked.csr")
	writeCSR(t, csr, "locked")
	start := time.Now()
	code, _, errs := estca(t, "--config", cfg, "issue", "--csr", csr)
	if code == 0 || !strings.Contains(errs, "locked by another process") || !strings.Contains(errs, "estca serve") {
		t.Fatalf("issue while serving: exit %d: %s", code, errs)
	}
	t.Logf("issue while serving refused after %v: %s", time.Since(start).Round(time.Millisecond), strings.TrimSpace(errs))
}

// TestInteropRejections checks that refused clients never get application
// data, that bad requests get the right codes, and that the server keeps
// serving throughout.
func TestInteropRejections(t *testing.T) {
	dir, cfg := demoAppliance(t, false)
	srv := startServer(t, cfg)
	root := filepath.Join(dir, "ca", "root.pem")
	dev := demoDevice(dir, "valid")
	base := "coaps://" + srv.addr
	tmp := t.TempDir()
	const client = "coap-client-openssl"

	// A self-signed client certificate.
	self := identity{filepath.Join(tmp, "self.pem"), filepath.Join(tmp, "self.key")}
	openssl(t, "req", "-x509", "-newkey", "ec", "-pkeyopt", "ec_paramgen_curve:P-256", "-nodes", "-days", "1",
		"-subj", "/CN=self", "-keyout", self.key, "-out", self.cert)

	// An operational certificate that gets revoked.
	csr := filepath.Join(tmp, "rev.csr")
	key, _ := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	der, _ := x509.CreateCertificateRequest(rand.Reader, &x509.CertificateRequest{}, key)
	os.WriteFile(csr, der, 0o600)
	revDER := filepath.Join(tmp, "rev.der")
	coap(t, client, &dev, root, "-m", "post", "-t", "286", "-A", "287", "-f", csr, "-o", revDER, base+"/.well-known/est/sen")
	rev := identity{filepath.Join(tmp, "rev.pem"), filepath.Join(tmp, "rev.key")}
	derToPEM(t, revDER, rev.cert)
	kder, _ := x509.MarshalPKCS8PrivateKey(key)
	os.WriteFile(rev.key, pem.EncodeToMemory(&pem.Block{Type: "PRIVATE KEY", Bytes: kder}), 0o600)
	revCert, err := readCert(rev.cert)
	if err != nil {
		t.Fatal(err)
	}
	if out := coap(t, client, &rev, root, "-m", "get", "-A", "287", base+"/.well-known/est/crts"); strings.Contains(out, "alert") {
		t.Fatalf("operational certificate refused before revocation:\n%s", out)
	}
	mustEstca(t, "--config", cfg, "revoke", "--reason", "1", revCert.SerialNumber.Text(16))

	crts := filepath.Join(tmp, "crts.der")
	refused := []struct {
		name string
		id   *identity
	}{
		{"no client certificate", nil},
		{"self-signed", &self},
		{"unknown manufacturer", ptr(demoDevice(dir, "unknown"))},
		{"expired IDevID, strict anchor", ptr(demoDevice(dir, "expired"))},
		{"revoked", &rev},
	}
	for _, tc := range refused {
		t.Run(tc.name, func(t *testing.T) {
			os.Remove(crts)
			out := coap(t, client, tc.id, root, "-m", "get", "-A", "287", "-o", crts, base+"/.well-known/est/crts")
			if b, err := os.ReadFile(crts); err == nil && len(b) > 0 {
				t.Fatalf("refused client got %d bytes of application data:\n%s", len(b), out)
			}
			// The handshake itself is refused with an alert (do not look for
			// "2.05" here: libcoap's timestamps contain it).
			if !strings.Contains(out, "alert") {
				t.Fatalf("handshake not refused with an alert:\n%s", out)
			}
		})
	}

	bad := filepath.Join(tmp, "bad.csr")
	os.WriteFile(bad, []byte("this is not a CSR"), 0o600)
	big := filepath.Join(tmp, "big.csr")
	os.WriteFile(big, make([]byte, 70<<10), 0o600)
	good := filepath.Join(tmp, "good.csr")
	paddedCSR(t, good, dev)
	codes := []struct {
		name string
		args []string
		want string
	}{
		{"malformed CSR", []string{"-m", "post", "-t", "286", "-f", bad, base + "/.well-known/est/sen"}, "4.00"},
		{"wrong Content-Format", []string{"-m", "post", "-t", "0", "-f", good, base + "/.well-known/est/sen"}, "4.15"},
		{"Accept 62 on crts", []string{"-m", "get", "-A", "62", base + "/.well-known/est/crts"}, "4.06"},
		{"70 KiB body", []string{"-m", "post", "-t", "286", "-b", "1024", "-f", big, base + "/.well-known/est/sen"}, "4.13"},
		{"unknown label", []string{"-m", "get", base + "/est/nosuchprofile/crts"}, "4.04"},
		{"unknown critical option", []string{"-m", "get", "-O", "65001,x", base + "/.well-known/est/crts"}, "4.02"},
	}
	for _, tc := range codes {
		t.Run(tc.name, func(t *testing.T) {
			if out := coap(t, client, &dev, root, tc.args...); !hasCode(out, tc.want) {
				t.Errorf("want %s, got:\n%s", tc.want, out)
			}
		})
	}

	// Still serving, and the denials are in the audit trail.
	os.Remove(crts)
	coap(t, client, &dev, root, "-m", "get", "-A", "287", "-o", crts, base+"/.well-known/est/crts")
	if b, err := os.ReadFile(crts); err != nil || len(b) == 0 {
		t.Fatalf("server stopped serving: %v\n%s", err, srv.logs())
	}
	if audit := mustEstca(t, "--config", cfg, "audit", "list"); !strings.Contains(audit, "denied") || !strings.Contains(audit, "revoked") {
		t.Errorf("audit trail lacks the denial or the revocation:\n%s", audit)
	}
}

func ptr[T any](v T) *T { return &v }

// hasCode reports whether coap-client printed the response code (it prints
// "4.03 diagnostic" on a line of its own; its log timestamps can contain
// the same digits, so a substring test is not enough).
func hasCode(out, code string) bool {
	return regexp.MustCompile(`(?m)^` + regexp.QuoteMeta(code) + `( |$)`).MatchString(out)
}

// TestInteropExpiredTolerant accepts the demo's expired IDevID under a
// tolerant anchor and flags it in the audit trail.
func TestInteropExpiredTolerant(t *testing.T) {
	dir, cfg := demoAppliance(t, true)
	srv := startServer(t, cfg)
	root := filepath.Join(dir, "ca", "root.pem")
	dev := demoDevice(dir, "expired")
	csr := filepath.Join(t.TempDir(), "c.csr")
	if err := os.WriteFile(csr, deviceCSR(t, dev), 0o600); err != nil {
		t.Fatal(err)
	}
	out := filepath.Join(t.TempDir(), "c.der")
	log := coap(t, "coap-client-gnutls", &dev, root, "-m", "post", "-t", "286", "-A", "287", "-f", csr, "-o", out,
		"coaps://"+srv.addr+"/.well-known/est/sen")
	if s, err := exec.Command("openssl", "x509", "-inform", "DER", "-in", out, "-noout", "-subject").CombinedOutput(); err != nil {
		t.Fatalf("expired IDevID under a tolerant anchor was not enrolled: %v %s\n%s\n%s", err, s, log, srv.logs())
	}
	if audit := mustEstca(t, "--config", cfg, "audit", "list"); !strings.Contains(audit, "expired-idevid-accepted") {
		t.Fatalf("audit record not flagged:\n%s", audit)
	}
}

// sanOf returns c's subjectAltName extension (none if it has none).
func sanOf(c *x509.Certificate) []pkix.Extension {
	for _, x := range c.Extensions {
		if x.Id.Equal(asn1.ObjectIdentifier{2, 5, 29, 17}) {
			return []pkix.Extension{x}
		}
	}
	return nil
}

// deviceCSR returns a DER CSR with a fresh key and the subject of the
// device id's certificate: what a device bound to its identity asks for.
func deviceCSR(t *testing.T, id identity) []byte {
	t.Helper()
	leaf, err := readCert(id.cert)
	if err != nil {
		t.Fatal(err)
	}
	key, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		t.Fatal(err)
	}
	der, err := x509.CreateCertificateRequest(rand.Reader, &x509.CertificateRequest{RawSubject: leaf.RawSubject}, key)
	if err != nil {
		t.Fatal(err)
	}
	return der
}
