package main

// End-to-end tests of the policy (issue 8) with a real `estca serve`, the
// real device client (`estca enroll`, est/client, est/bench), libcoap's
// coap-client-openssl and OpenSSL.

import (
	"context"
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/sha256"
	"crypto/tls"
	"crypto/x509"
	"crypto/x509/pkix"
	"encoding/hex"
	"encoding/json"
	"errors"
	"io"
	"math/big"
	"net/http"
	"os"
	"path/filepath"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/plgd-dev/go-coap/v3/message/codes"

	"github.com/estca/estca/ca"
	"github.com/estca/estca/est/bench"
	"github.com/estca/estca/est/client"
	"github.com/estca/estca/est/wire"
	"github.com/estca/estca/policy"
	"github.com/estca/estca/policy/pkitest"
)

// editConfig rewrites an appliance's configuration with the replacements
// (old, new pairs), each of which must apply.
func editConfig(t *testing.T, cfg string, pairs ...string) {
	t.Helper()
	b, err := os.ReadFile(cfg)
	if err != nil {
		t.Fatal(err)
	}
	s := string(b)
	for i := 0; i+1 < len(pairs); i += 2 {
		if !strings.Contains(s, pairs[i]) {
			t.Fatalf("config has no %q", pairs[i])
		}
		s = strings.Replace(s, pairs[i], pairs[i+1], 1)
	}
	if err := os.WriteFile(cfg, []byte(s), 0o600); err != nil {
		t.Fatal(err)
	}
}

// writeDER writes b to a file in dir and returns its path.
func writeDER(t *testing.T, dir, name string, b []byte) string {
	t.Helper()
	p := filepath.Join(dir, name)
	if err := os.WriteFile(p, b, 0o600); err != nil {
		t.Fatal(err)
	}
	return p
}

// csrWith makes a DER CSR with a fresh key, the subject and extensions.
func csrWith(t *testing.T, subj pkix.Name, exts ...pkix.Extension) []byte {
	t.Helper()
	return pkitest.CSR(t, pkitest.Key(t), subj, exts...)
}

// TestPolicyE2EBindingAndCRL: the demo device gets a certificate bound to
// DEMO-0001 (through `estca enroll`, following /att), is refused CN=admin,
// a foreign serialNumber and DNS names (coap-client-openssl, with the
// diagnostic); `estca policy check` explains the refusal offline; a
// revocation while serving is in the CRL that OpenSSL verifies, fetched
// over HTTP, over CoAP and with `estca crl`.
func TestPolicyE2EBindingAndCRL(t *testing.T) {
	dir, cfg := demoAppliance(t, false)
	editConfig(t, cfg, `listen: ""                 # e.g.`, `listen: "127.0.0.1:0"      # e.g.`,
		`distribution_point: ""`, `distribution_point: "http://crl.estca.test/crl"`)
	srv := startServer(t, cfg)
	root := filepath.Join(dir, "ca", "root.pem")
	issuing := filepath.Join(dir, "ca", "issuing.pem")
	dev := demoDevice(dir, "valid")
	base := "coaps://" + srv.addr
	tmp := t.TempDir()

	// The real client, following /att. A world-readable key file left from
	// an earlier run must not keep its mode when the new key is written.
	prefix := filepath.Join(tmp, "op")
	if err := os.WriteFile(prefix+".key", []byte("stale"), 0o644); err != nil {
		t.Fatal(err)
	}
	code, out, errs := estca(t, "--config", cfg, "--log-level", "debug", "enroll", "--server", base, "--cert", dev.cert, "--key", dev.key,
		"--trust", root, "--server-name", "127.0.0.1", "--out", prefix, "sen")
	if code != 0 || !strings.Contains(errs, "CSR built from the server's CSR attributes") {
		t.Fatalf("estca enroll sen: exit %d\n%s\n%s", code, out, errs)
	}
	op, err := readCert(prefix + ".pem")
	if err != nil {
		t.Fatal(err)
	}
	if fi, err := os.Stat(prefix + ".key"); err != nil || fi.Mode().Perm() != 0o600 {
		t.Fatalf("key file %v, %v: want mode 0600", fi.Mode(), err)
	}
	if _, err := tls.LoadX509KeyPair(prefix+".pem", prefix+".key"); err != nil {
		t.Fatalf("written key is not the certificate's: %v", err)
	}
	if op.Subject.SerialNumber != "DEMO-0001" || op.Subject.CommonName != "demo device DEMO-0001" ||
		len(op.DNSNames) != 0 || len(op.CRLDistributionPoints) != 1 || op.CRLDistributionPoints[0] != "http://crl.estca.test/crl" {
		t.Fatalf("certificate %s, DNS %v, CRL DP %v", op.Subject, op.DNSNames, op.CRLDistributionPoints)
	}
	if h, err := policy.HardwareModuleNames(sanOf(op)[0].Value); err != nil || len(h) != 1 || string(h[0].SerialNum) != "DEMO-0001" {
		t.Fatalf("hardwareModuleName %v, %v", h, err)
	}
	if v := openssl(t, "verify", "-CAfile", root, "-untrusted", issuing, "-purpose", "sslclient", prefix+".pem"); !strings.Contains(v, ": OK") {
		t.Fatal(v)
	}

	// Attacks with the demo device's own, valid IDevID.
	hmn, err := hmnSAN("DEMO-0001", "evil.example.com")
	if err != nil {
		t.Fatal(err)
	}
	attacks := []struct {
		name, code, diag string
		csr              []byte
	}{
		{"CN=admin", "4.03", "subject does not match your identity", csrWith(t, pkix.Name{CommonName: "admin"})},
		{"foreign serialNumber", "4.03", "subject does not match your identity", csrWith(t, pkix.Name{SerialNumber: "DEMO-0002"})},
		{"DNS name", "4.00", "SAN type not allowed", csrWith(t, pkix.Name{}, hmn)},
	}
	before := len(listJSON(t, cfg))
	for _, a := range attacks {
		csr := writeDER(t, tmp, "attack.csr", a.csr)
		out := coap(t, "coap-client-openssl", &dev, root, "-m", "post", "-t", "286", "-f", csr, base+"/.well-known/est/sen")
		if !hasCode(out, a.code) || !strings.Contains(out, a.diag) {
			t.Errorf("%s: want %s %q, got:\n%s", a.name, a.code, a.diag, out)
		}
	}
	if n := len(listJSON(t, cfg)); n != before {
		t.Fatalf("the attacks got %d certificates", n-before)
	}
	if audit := mustEstca(t, "--config", cfg, "audit", "list"); !strings.Contains(audit, "subject-not-bound (forbidden)") ||
		!strings.Contains(audit, "san-type-not-allowed (bad-request)") {
		t.Errorf("denials not audited with their reason codes:\n%s", audit)
	}
	// Offline, the same answer with the whole explanation.
	adminCSR := writeDER(t, tmp, "admin.csr", csrWith(t, pkix.Name{CommonName: "admin"}))
	code, out, _ = estca(t, "--config", cfg, "policy", "check", "--csr", adminCSR, "--requester", dev.cert)
	if code != 1 || !strings.Contains(out, "decision:  deny") || !strings.Contains(out, "subject-not-bound") || !strings.Contains(out, `"admin"`) {
		t.Fatalf("policy check: exit %d\n%s", code, out)
	}
	goodCSR := writeDER(t, tmp, "good.csr", deviceCSR(t, dev))
	code, out, _ = estca(t, "--config", cfg, "policy", "check", "--csr", goodCSR, "--requester", dev.cert)
	if code != 0 || !strings.Contains(out, "decision:  issue") || !strings.Contains(out, `serialNumber="DEMO-0001"`) {
		t.Fatalf("policy check: exit %d\n%s", code, out)
	}

	// Revocation while serving, with a reason a leaf can have.
	serial := op.SerialNumber.Text(16)
	if code, _, errs := estca(t, "--config", cfg, "revoke", "--reason", "cACompromise", serial); code != 2 || !strings.Contains(errs, "cACompromise") {
		t.Fatalf("revoke cACompromise: exit %d %s", code, errs)
	}
	mustEstca(t, "--config", cfg, "revoke", "--reason", "keyCompromise", serial)
	chain := filepath.Join(tmp, "chain.pem")
	b, _ := os.ReadFile(issuing)
	r, _ := os.ReadFile(root)
	if err := os.WriteFile(chain, append(b, r...), 0o600); err != nil {
		t.Fatal(err)
	}
	checkCRL := func(how, file string, pemIn bool) {
		t.Helper()
		args := []string{"crl", "-in", file, "-CAfile", chain, "-verify", "-noout", "-text"}
		if !pemIn {
			args = append(args, "-inform", "DER")
		}
		out := openssl(t, args...)
		if !strings.Contains(out, "verify OK") || !strings.Contains(strings.ToUpper(out), strings.ToUpper(serial)) ||
			!strings.Contains(out, "Key Compromise") || !strings.Contains(out, "X509v3 CRL Number") {
			t.Errorf("%s: CRL does not list %s as a key compromise:\n%s", how, serial, out)
		}
	}
	// Over HTTP (crl.listen), as relying parties fetch it.
	resp, err := http.Get(srv.crlURL)
	if err != nil {
		t.Fatal(err)
	}
	body, _ := io.ReadAll(resp.Body)
	resp.Body.Close()
	if resp.StatusCode != 200 || resp.Header.Get("Content-Type") != "application/pkix-crl" {
		t.Fatalf("GET %s: %s %q", srv.crlURL, resp.Status, resp.Header.Get("Content-Type"))
	}
	checkCRL("HTTP", writeDER(t, tmp, "http.crl", body), false)
	// Over CoAP, as devices fetch it (certs-only SignedData holding the CRL).
	p7 := filepath.Join(tmp, "crl.p7")
	out = coap(t, "coap-client-openssl", &dev, root, "-m", "get", "-A", "281", "-o", p7, base+"/est/crl")
	crlPEM := openssl(t, "pkcs7", "-inform", "DER", "-in", p7, "-print_certs")
	if !strings.Contains(crlPEM, "BEGIN X509 CRL") {
		t.Fatalf("CoAP CRL: %s\n%s", crlPEM, out)
	}
	checkCRL("CoAP", writeDER(t, tmp, "coap.crl.pem", []byte(crlPEM)), true)
	// `estca crl` through the admin socket.
	mustEstca(t, "--config", cfg, "crl", "--out", filepath.Join(tmp, "cli.crl"))
	checkCRL("estca crl", filepath.Join(tmp, "cli.crl"), false)
	// And the revoked certificate no longer completes a handshake.
	opID := identity{prefix + ".pem", prefix + ".key"}
	if out := coap(t, "coap-client-openssl", &opID, root, "-m", "get", base+"/est/crts"); !strings.Contains(out, "alert") {
		t.Fatalf("revoked certificate served:\n%s", out)
	}
}

// hmnSAN is a subjectAltName extension with the demo hardwareModuleName
// and DNS names.
func hmnSAN(serial string, dns ...string) (pkix.Extension, error) {
	v, err := ca.HardwareModuleNameSAN(ca.DemoHardwareType, []byte(serial), dns...)
	return pkix.Extension{Id: policy.OIDSubjectAltName, Value: v}, err
}

// TestPolicyE2ERevocationMidSession: a long-running sen-reuse client
// renewing with an operational certificate; `estca revoke` while it runs:
// by the time the command returns, the server has closed the certificate's
// sessions and issues nothing more to it.
func TestPolicyE2ERevocationMidSession(t *testing.T) {
	dir, cfg := demoAppliance(t, false)
	srv := startServer(t, cfg)
	root := filepath.Join(dir, "ca", "root.pem")
	dev := demoDevice(dir, "valid")
	tmp := t.TempDir()
	prefix := filepath.Join(tmp, "op")
	mustEstca(t, "--config", cfg, "enroll", "--server", "coaps://"+srv.addr, "--cert", dev.cert, "--key", dev.key,
		"--trust", root, "--server-name", "127.0.0.1", "--out", prefix, "sen")
	op, err := tls.LoadX509KeyPair(prefix+".pem", prefix+".key")
	if err != nil {
		t.Fatal(err)
	}
	leaf, _ := x509.ParseCertificate(op.Certificate[0])
	fp := fingerprint(leaf)

	// Hang guards, not speed limits: under -race on a loaded machine the
	// CSRs alone take tens of seconds to prepare, and the sessions must
	// still be up when the revocation comes.
	ctx, cancel := context.WithTimeout(context.Background(), 3*time.Minute)
	defer cancel()
	type result struct {
		rep *bench.Report
		err error
	}
	done := make(chan result, 1)
	go func() {
		rep, err := bench.Run(ctx, bench.Options{Client: deviceOptions(t, dir, srv.addr, &op), Mode: bench.ModeEnrollReuse,
			Workers: 2, Duration: 15 * time.Second, CSRs: 30000})
		done <- result{rep, err}
	}()
	// Let it renew a few times over its sessions.
	issuedBy := func() (n int, last time.Time) {
		for _, c := range listJSON(t, cfg) {
			if c.Requester == fp {
				n++
				if c.IssuedAt.After(last) {
					last = c.IssuedAt
				}
			}
		}
		return n, last
	}
	for deadline := time.Now().Add(2 * time.Minute); ; time.Sleep(100 * time.Millisecond) {
		if n, _ := issuedBy(); n >= 10 {
			break
		}
		if time.Now().After(deadline) {
			t.Fatalf("the sen-reuse client got no certificates:\n%s", srv.logs())
		}
	}
	mustEstca(t, "--config", cfg, "revoke", "--reason", "keyCompromise", leaf.SerialNumber.Text(16))
	revoked := time.Now()
	// The sessions were closed inside the revocation, before it returned:
	// the server logged the closing before it answered the command. Its log
	// reaches the test through a pipe, which may lag behind under load: wait
	// for the line, then compare the time it carries.
	waitLog(t, srv, `reason="certificate revoked"`)
	waitLog(t, srv, `msg="session closed"`)
	closedAt := logTime(t, srv.logs(), `msg="session closed"`)
	if closedAt.After(revoked) {
		t.Fatalf("the session was closed at %v, after the revocation returned at %v", closedAt, revoked)
	}
	res := <-done
	if res.err != nil {
		t.Fatal(res.err)
	}
	n, last := issuedBy()
	if !last.Before(revoked) {
		t.Fatalf("a certificate was issued to the revoked certificate at %v, after the revocation returned at %v", last, revoked)
	}
	var out strings.Builder
	_ = res.rep.Format(&out)
	t.Logf("%d renewals before the revocation; bench after it:\n%s", n, out.String())
	if res.rep.ErrorCount() == 0 {
		t.Fatal("the client saw no refusal after the revocation")
	}
	if audit := mustEstca(t, "--config", cfg, "audit", "list", "--serial", leaf.SerialNumber.Text(16)); !strings.Contains(audit, "revoked") {
		t.Fatalf("revocation not audited:\n%s", audit)
	}
}

// TestPolicyE2EManualApproval: a manual profile answers 5.03 with its
// Max-Age; the operator approves from the CLI while the server runs; the
// device's identical retry gets the certificate, issued once; a denied
// request gets 4.03.
func TestPolicyE2EManualApproval(t *testing.T) {
	dir, cfg := demoAppliance(t, false)
	editConfig(t, cfg, "    approval: auto ", "    approval: manual\n    pending_max_age: 7s\n   ")
	srv := startServer(t, cfg)
	root := filepath.Join(dir, "ca", "root.pem")
	dev := demoDevice(dir, "valid")
	base := "coaps://" + srv.addr
	tmp := t.TempDir()
	csr := writeDER(t, tmp, "dev.csr", deviceCSR(t, dev))
	post := func(file string) string {
		return coap(t, "coap-client-openssl", &dev, root, "-m", "post", "-t", "286", "-A", "287", "-f", file,
			"-o", filepath.Join(tmp, "out.der"), base+"/.well-known/est/sen")
	}
	if out := post(csr); !hasCode(out, "5.03") || !strings.Contains(out, "waiting for approval") {
		t.Fatalf("first request: want 5.03 waiting for approval:\n%s", out)
	}
	// The Max-Age, as the device client sees it.
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	c, err := client.Dial(ctx, deviceOptions(t, dir, srv.addr, nil))
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	raw, _ := os.ReadFile(csr)
	_, _, err = c.Enroll(ctx, raw, wire.FormatPKIXCert)
	var re *client.ResponseError
	if !errors.As(err, &re) || re.Code != codes.ServiceUnavailable || re.MaxAge != 7*time.Second {
		t.Fatalf("retry before a decision: %v", err)
	}
	out := mustEstca(t, "--config", cfg, "requests", "list", "--json")
	// The real output, as documented: an array of snake_case objects with
	// exactly these keys.
	items, ok := checkSnakeJSON(t, "requests list --json", out).([]any)
	if !ok || len(items) != 1 {
		t.Fatalf("requests list --json: %s", out)
	}
	wantObject(t, "requests list --json", items[0], "id", "state", "profile", "requester", "anchor", "identity",
		"csr_subject", "csr_sha256", "serial", "reason", "created", "decided")
	var pending []requestView
	if err := json.Unmarshal([]byte(out), &pending); err != nil || len(pending) != 1 ||
		pending[0].CSRSubject == "" || pending[0].State != "pending" {
		t.Fatalf("requests list: %+v, %v", pending, err)
	}
	if n := len(listJSON(t, cfg)); n != 0 {
		t.Fatalf("%d certificates before the approval", n)
	}
	if out := mustEstca(t, "--config", cfg, "requests", "approve", pending[0].ID, "--reason", "known device"); !strings.Contains(out, "approved") {
		t.Fatal(out)
	}
	var issued []byte
	for range 2 {
		os.Remove(filepath.Join(tmp, "out.der"))
		out := post(csr)
		der, _ := os.ReadFile(filepath.Join(tmp, "out.der"))
		if c, err := x509.ParseCertificate(der); err != nil || c.Subject.SerialNumber != "DEMO-0001" {
			t.Fatalf("retry after the approval: no certificate (%v):\n%s", err, out)
		}
		if issued != nil && string(der) != string(issued) {
			t.Fatal("a second retry got another certificate")
		}
		issued = der
	}
	if cs := listJSON(t, cfg); len(cs) != 1 {
		t.Fatalf("%d certificates in the store, want exactly 1", len(cs))
	}

	// Denied: the retry gets 4.03.
	csr2 := writeDER(t, tmp, "dev2.csr", deviceCSR(t, dev))
	if out := post(csr2); !hasCode(out, "5.03") {
		t.Fatalf("second request:\n%s", out)
	}
	if err := json.Unmarshal([]byte(mustEstca(t, "--config", cfg, "requests", "list", "--json")), &pending); err != nil || len(pending) != 1 {
		t.Fatalf("requests list: %+v, %v", pending, err)
	}
	if code, _, _ := estca(t, "--config", cfg, "requests", "deny", pending[0].ID); code != 2 {
		t.Fatal("deny without --reason accepted")
	}
	mustEstca(t, "--config", cfg, "requests", "deny", pending[0].ID, "--reason", "not ours")
	// Decided requests stay decided, unknown ones are unknown: plain messages
	// through the admin socket, exit 1.
	expectPlainFailure(t, "no pending request "+pending[0].ID, "--config", cfg, "requests", "deny", pending[0].ID, "--reason", "again")
	expectPlainFailure(t, "no pending request "+pending[0].ID, "--config", cfg, "requests", "approve", pending[0].ID)
	expectPlainFailure(t, "no pending request 0123456789ab", "--config", cfg, "requests", "approve", "0123456789AB")
	if code, _, errs := estca(t, "--config", cfg, "requests", "approve", "0g12"); code != exitUsage || !strings.Contains(lastLine(errs), `ID "0g12"`) {
		t.Fatalf("approve a malformed ID: exit %d\n%s", code, errs)
	}
	if out := post(csr2); !hasCode(out, "4.03") || !strings.Contains(out, "request denied by operator") {
		t.Fatalf("retry after the denial:\n%s", out)
	}
	if cs := listJSON(t, cfg); len(cs) != 1 {
		t.Fatalf("%d certificates in the store, want 1", len(cs))
	}
	audit := mustEstca(t, "--config", cfg, "audit", "list")
	for _, want := range []string{"pending", "approved", "approved by operator:", "denied by operator:", "operator-rejected"} {
		if !strings.Contains(audit, want) {
			t.Errorf("audit trail lacks %q:\n%s", want, audit)
		}
	}
}

// TestPolicyE2EReload: SIGHUP with a new manufacturer lets its device enroll
// while an existing session keeps working; a profile that derives names from
// the identity is followed by the client through /att; a bad reload (SIGHUP
// or `estca reload`) is refused with every problem, and the server keeps
// serving with the policy in force. Both outcomes are audited.
func TestPolicyE2EReload(t *testing.T) {
	dir, cfg := demoAppliance(t, false)
	srv := startServer(t, cfg)
	root := filepath.Join(dir, "ca", "root.pem")
	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Minute)
	defer cancel()
	// An existing session of the demo device.
	c, err := client.Dial(ctx, deviceOptions(t, dir, srv.addr, nil))
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	enroll := func(c *client.Conn, leaf *x509.Certificate) (*x509.Certificate, error) {
		key, _ := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
		der, _ := x509.CreateCertificateRequest(rand.Reader, &x509.CertificateRequest{RawSubject: leaf.RawSubject}, key)
		cert, _, err := c.Enroll(ctx, der, wire.FormatPKIXCert)
		return cert, err
	}
	demoLeaf, _ := readCert(demoDevice(dir, "valid").cert)
	if _, err := enroll(c, demoLeaf); err != nil {
		t.Fatal(err)
	}

	// A second manufacturer and one of its devices.
	mfg := pkitest.NewCA(t, "Acme IDevID CA")
	mfgPEM := filepath.Join(dir, "acme-ca.pem")
	if err := os.WriteFile(mfgPEM, pkitest.PEM(mfg.Cert), 0o600); err != nil {
		t.Fatal(err)
	}
	devKey := pkitest.Key(t)
	devDER, err := x509.CreateCertificate(rand.Reader, &x509.Certificate{SerialNumber: big.NewInt(7),
		Subject:   pkix.Name{Organization: []string{"Acme"}, CommonName: "acme 7", SerialNumber: "ACME-7"},
		NotBefore: time.Now().Add(-time.Hour), NotAfter: time.Now().Add(24 * time.Hour),
		KeyUsage: x509.KeyUsageDigitalSignature, ExtKeyUsage: []x509.ExtKeyUsage{x509.ExtKeyUsageClientAuth},
	}, mfg.Cert, devKey.Public(), mfg.Key)
	if err != nil {
		t.Fatal(err)
	}
	devCert, _ := x509.ParseCertificate(devDER)
	acme := tls.Certificate{Certificate: [][]byte{devCert.Raw}, PrivateKey: devKey, Leaf: devCert}
	if _, err := client.Dial(ctx, deviceOptions(t, dir, srv.addr, &acme)); err == nil {
		t.Fatal("a device of an unknown manufacturer completed a handshake")
	}
	editConfig(t, cfg, "    profiles: [default, padded]\n", "    profiles: [default, padded, meter]\n"+
		"  - name: acme\n    roots: [acme-ca.pem]\n",
		paddedProfile, paddedProfile+`  - name: meter
    validity: 24h
    subject:
      - {type: CN, from: derived, value: "meter-${serialNumber}"}
      - {type: serialNumber, from: identity}
    san:
      dns: {derived: ["${serialNumber}.meters.test"]}
`)
	if err := srv.cmd.Process.Signal(syscall.SIGHUP); err != nil {
		t.Fatal(err)
	}
	waitLog(t, srv, `msg="configuration reloaded" source=SIGHUP`)
	ac, err := client.Dial(ctx, deviceOptions(t, dir, srv.addr, &acme))
	if err != nil {
		t.Fatalf("the new manufacturer's device after the reload: %v\n%s", err, srv.logs())
	}
	if cert, err := enroll(ac, devCert); err != nil || cert.Subject.SerialNumber != "ACME-7" {
		t.Fatalf("the new manufacturer's device: %v, %v", cert, err)
	}
	ac.Close()
	// The session opened before the reload still works.
	if _, err := enroll(c, demoLeaf); err != nil {
		t.Fatalf("the session opened before the reload: %v", err)
	}
	if strings.Contains(srv.logs(), `msg="session closed"`) {
		t.Fatalf("the reload closed a session:\n%s", srv.logs())
	}
	// The new profile derives its names; `estca enroll` follows /att.
	dev := demoDevice(dir, "valid")
	prefix := filepath.Join(t.TempDir(), "meter")
	mustEstca(t, "--config", cfg, "enroll", "--server", "coaps://"+srv.addr, "--label", "meter", "--cert", dev.cert,
		"--key", dev.key, "--trust", root, "--server-name", "127.0.0.1", "--out", prefix, "sen")
	meter, err := readCert(prefix + ".pem")
	if err != nil || meter.Subject.CommonName != "meter-DEMO-0001" || len(meter.DNSNames) != 1 || meter.DNSNames[0] != "DEMO-0001.meters.test" {
		t.Fatalf("meter certificate %v %v, %v", meter.Subject, meter.DNSNames, err)
	}

	// A bad configuration: refused, every problem named, old policy kept.
	good, _ := os.ReadFile(cfg)
	editConfig(t, cfg, "      ecdsa: [digitalSignature, keyAgreement]", "      ecdsa: [digitalSignature, keyAgreement]\n      rsa: [keyAgreement]",
		"    roots: [acme-ca.pem]", "    roots: [acme-ca.pem]\n    profiles: [nosuch]")
	errs := expectPlainFailure(t, "configuration refused, the policy in force stays", "--config", cfg, "reload")
	if !strings.Contains(errs, "profiles[0]: key usage keyAgreement is impossible for RSA keys") ||
		!strings.Contains(errs, `manufacturers[1].profiles[0]: no profile "nosuch"`) {
		t.Fatalf("estca reload of a bad configuration:\n%s", errs)
	}
	if err := srv.cmd.Process.Signal(syscall.SIGHUP); err != nil {
		t.Fatal(err)
	}
	waitLog(t, srv, "source=SIGHUP problem=")
	if _, err := enroll(c, demoLeaf); err != nil {
		t.Fatalf("serving after a bad reload: %v", err)
	}
	ac, err = client.Dial(ctx, deviceOptions(t, dir, srv.addr, &acme))
	if err != nil {
		t.Fatalf("the policy in force was lost: %v", err)
	}
	ac.Close()
	if err := os.WriteFile(cfg, good, 0o600); err != nil {
		t.Fatal(err)
	}
	if out := mustEstca(t, "--config", cfg, "reload"); !strings.Contains(out, "reloaded") {
		t.Fatal(out)
	}

	// The manufacturer's CRL, re-read at a reload, revokes its device: the
	// device's open session is closed and it no longer gets in.
	ac, err = client.Dial(ctx, deviceOptions(t, dir, srv.addr, &acme))
	if err != nil {
		t.Fatal(err)
	}
	defer ac.Close()
	if _, err := enroll(ac, devCert); err != nil {
		t.Fatal(err)
	}
	crlDER, err := x509.CreateRevocationList(rand.Reader, &x509.RevocationList{Number: big.NewInt(1),
		ThisUpdate: time.Now().Add(-time.Minute), NextUpdate: time.Now().Add(24 * time.Hour),
		RevokedCertificateEntries: []x509.RevocationListEntry{{SerialNumber: devCert.SerialNumber, RevocationTime: time.Now()}}},
		mfg.Cert, mfg.Key)
	if err != nil {
		t.Fatal(err)
	}
	writeDER(t, dir, "acme.crl", crlDER)
	editConfig(t, cfg, "    roots: [acme-ca.pem]\n", "    roots: [acme-ca.pem]\n    crls: [acme.crl]\n")
	mustEstca(t, "--config", cfg, "reload")
	waitLog(t, srv, `reason="certificate revoked"`)
	if _, err := enroll(ac, devCert); err == nil {
		t.Fatal("a device on its manufacturer's CRL still enrolled on its open session")
	}
	if c, err := client.Dial(ctx, deviceOptions(t, dir, srv.addr, &acme)); err == nil {
		c.Close()
		t.Fatal("a device on its manufacturer's CRL completed a handshake")
	}
	if _, err := enroll(c, demoLeaf); err != nil {
		t.Fatalf("the demo device's session after the CRL reload: %v", err)
	}
	audit := mustEstca(t, "--config", cfg, "audit", "list")
	for _, want := range []string{"reload accepted", "reload refused", "reload (admin socket) refused", "reload (SIGHUP)"} {
		if !strings.Contains(audit, want) {
			t.Errorf("audit trail lacks %q:\n%s", want, audit)
		}
	}
}

// logTime returns the time of the first log line containing text.
func logTime(t *testing.T, logs, text string) time.Time {
	t.Helper()
	for _, line := range strings.Split(logs, "\n") {
		if !strings.Contains(line, text) {
			continue
		}
		f, _, _ := strings.Cut(strings.TrimPrefix(line, "time="), " ")
		at, err := time.Parse(time.RFC3339Nano, f)
		if err != nil {
			t.Fatalf("log line %q: %v", line, err)
		}
		return at
	}
	t.Fatalf("no log line with %q:\n%s", text, logs)
	return time.Time{}
}

// fingerprint is the requester fingerprint the store records.
func fingerprint(c *x509.Certificate) string {
	sum := sha256.Sum256(c.Raw)
	return hex.EncodeToString(sum[:])
}

// TestPolicyE2EApprovalOffline: a pending request survives a restart; the
// operator decides it with the server stopped (in the store, the HSM signs
// the head over the decision); after the restart the device's retry gets
// its certificate, and the audit trail verifies.
func TestPolicyE2EApprovalOffline(t *testing.T) {
	dir, cfg := demoAppliance(t, false)
	editConfig(t, cfg, "    approval: auto ", "    approval: manual\n   ")
	srv := startServer(t, cfg)
	root := filepath.Join(dir, "ca", "root.pem")
	dev := demoDevice(dir, "valid")
	tmp := t.TempDir()
	csr := writeDER(t, tmp, "dev.csr", deviceCSR(t, dev))
	out := filepath.Join(tmp, "out.der")
	post := func(addr string) string {
		return coap(t, "coap-client-openssl", &dev, root, "-m", "post", "-t", "286", "-A", "287", "-f", csr, "-o", out,
			"coaps://"+addr+"/.well-known/est/sen")
	}
	if o := post(srv.addr); !hasCode(o, "5.03") {
		t.Fatalf("first request:\n%s", o)
	}
	if err := srv.stop(t); err != nil {
		t.Fatal(err)
	}
	var pending []requestView
	if err := json.Unmarshal([]byte(mustEstca(t, "--config", cfg, "requests", "list", "--json")), &pending); err != nil || len(pending) != 1 {
		t.Fatalf("requests list offline: %+v, %v", pending, err)
	}
	if o := mustEstca(t, "--config", cfg, "requests", "approve", pending[0].ID[:10]); !strings.Contains(o, "approved") {
		t.Fatal(o)
	}
	// The same plain messages as through the admin socket.
	expectPlainFailure(t, "no pending request "+pending[0].ID[:10], "--config", cfg, "requests", "approve", pending[0].ID[:10])
	expectPlainFailure(t, "no pending request 0123456789ab", "--config", cfg, "requests", "deny", "0123456789ab", "--reason", "x")
	if o := mustEstca(t, "--config", cfg, "audit", "verify"); !strings.Contains(o, "audit chain ok") {
		t.Fatalf("audit verify after the offline decision: %s", o)
	}
	srv = startServer(t, cfg)
	os.Remove(out)
	post(srv.addr)
	der, _ := os.ReadFile(out)
	if c, err := x509.ParseCertificate(der); err != nil || c.Subject.SerialNumber != "DEMO-0001" {
		t.Fatalf("retry after the offline approval: %v\n%s", err, srv.logs())
	}
}
