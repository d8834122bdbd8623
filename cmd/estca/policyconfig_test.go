package main

import (
	"crypto/ecdsa"
	"crypto/rand"
	"crypto/x509"
	"crypto/x509/pkix"
	"encoding/pem"
	"math/big"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/estca/estca/ca"
	"github.com/estca/estca/policy"
	"github.com/estca/estca/policy/pkitest"
)

// TestPolicyConfigProblems: every problem of the policy part at once, each
// named by its path.
func TestPolicyConfigProblems(t *testing.T) {
	t.Parallel()
	const head = "hsm: {module: /x.so, token: t}\n"
	cases := []struct {
		name, yaml string
		want       []string
	}{
		{"values", `
profiles:
  - name: p
    validity: 24h
    operations: [sen, fly]
    requesters: [robot]
    key_types: [ecdsa-p256, dsa]
    key_usage: {ecdsa: [flying], quantum: [x]}
    ext_key_usage: [teleport]
    key_reuse: sometimes
    subject: [{type: CN, from: nowhere}]
    san: {hardware_module_name: maybe}
    extensions: {unknown: keep}
    approval: later
    bogus: 1
manufacturers:
  - name: m
    deny_serials: [xyz]
    deny_fingerprints: [abc]
    profiles: [nosuch]
crl: {validity: 30s, refresh: 1h, distribution_point: "ftp://x"}
`, []string{
			`profiles[0].operations[1]: unknown operation "fly"`,
			`profiles[0].requesters[0]: unknown requester "robot"`,
			`profiles[0].key_types[1]: unknown key type "dsa"`,
			`profiles[0].key_usage.ecdsa[0]: unknown key usage "flying"`,
			`profiles[0].key_usage.quantum: unknown key algorithm`,
			`profiles[0].ext_key_usage[0]: unknown extended key usage "teleport"`,
			`profiles[0].key_reuse: "sometimes"`,
			`profiles[0].subject[0].from: "nowhere"`,
			`profiles[0].san.hardware_module_name: "maybe"`,
			`profiles[0].extensions.unknown: "keep"`,
			`profiles[0].approval: "later"`,
			"bogus",
			`manufacturers[0].roots: at least one`,
			`manufacturers[0].deny_serials[0]: serial "xyz": 'x' is not a hex digit`,
			`manufacturers[0].deny_fingerprints[0]: "abc"`,
			`manufacturers[0].profiles[0]: no profile "nosuch"`,
			"crl.validity: must be at least 1m",
			"crl.refresh: must be at least 1s and shorter than crl.validity",
			`crl.distribution_point: "ftp://x"`,
		}},
		{"combinations the engine refuses", `
profiles:
  - name: a
    validity: 24h
    key_types: [rsa-1024]
    key_usage: {rsa: [keyAgreement], ed25519: [keyEncipherment]}
    rate_limit: {count: 3}
    renewal_grace: 1h
    requesters: [idevid]
    san: {hardware_module_name: csr, dns: {patterns: ["(["]}}
  - name: b
    validity: 24h
    subject: [{type: CN, from: derived, value: "x-${nope}"}]
    renew_from: [zz]
`, []string{
			`profiles[0]: key type "rsa-1024" is too weak`,
			`profiles[0]: key usage keyAgreement is impossible for RSA keys`,
			`profiles[0]: key usage keyEncipherment is impossible for Ed25519 keys`,
			`profiles[0]: rate limit of 3 needs a window`,
			`profiles[0]: renewal grace without operational requesters`,
			`profiles[0]: hardware_module_name: csr`,
			`profiles[1]: subject[0] CN`,
			`profiles[1]: renew_from names unknown profile "zz"`,
		}},
		{"server-side key generation", `
profiles:
  - {name: a, operations: [sen, keygen]}
  - {name: c, operations: [skg], server_key_type: ed25519}
  - {name: d, operations: [skc], key_types: [ed25519]}
keys: {signer_key: estca-issuing, escrow: true}
`, []string{
			`profiles[0].operations[1]: unknown operation "keygen"`,
			`profiles[1].server_key_type: "ed25519" cannot be generated in the token`,
			`profiles[2].key_types[0]: "ed25519" cannot be generated in the token`,
			`keys.signer_key: "estca-issuing" is a CA key label`,
			"keys.escrow: unknown key",
		}},
		{"server key settings without skg or skc", `
profiles: [{name: b, escrow_keys: true, server_key_type: ecdsa-p384}]
`, []string{
			"profiles[0]: server_key_type, require_encrypted_keys and escrow_keys need skg or skc",
		}},
		{"keys of the first configuration", `
profiles: [{name: a, validity: 24h, allow_san: true, key_usage: [digitalSignature]}]
manufacturers: [{name: m, roots: [r.pem], tolerate_expiry: true, allow_expired: false}]
`, []string{
			"profiles[0].allow_san: removed",
			"profiles[0].key_usage: is now per key algorithm",
			"manufacturers[0].tolerate_expiry: contradicts allow_expired",
		}},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			_, err := parseConfig([]byte(head+tc.yaml), t.TempDir())
			if err == nil {
				t.Fatal("config accepted")
			}
			for _, w := range tc.want {
				if !strings.Contains(err.Error(), w) {
					t.Errorf("error does not say %q:\n%v", w, err)
				}
			}
		})
	}
	// The old key alone is accepted, with a warning.
	c, err := parseConfig([]byte(head+"manufacturers: [{name: m, roots: [r.pem], tolerate_expiry: true}]\n"), t.TempDir())
	if err != nil || len(c.warnings) != 1 || !strings.Contains(c.warnings[0], "manufacturers[0].tolerate_expiry: deprecated, now allow_expired") {
		t.Fatalf("tolerate_expiry: %v, warnings %v", err, c.warnings)
	}
}

// TestPolicyOptionsFiles: certificate and CRL files are read when the policy
// is built (start, reload, policy check), and their problems are named by
// path, all at once.
func TestPolicyOptionsFiles(t *testing.T) {
	t.Parallel()
	dir := t.TempDir()
	other := pkitest.NewCA(t, "other")
	mfg := pkitest.NewCA(t, "mfg")
	write := func(name string, b []byte) {
		if err := os.WriteFile(filepath.Join(dir, name), b, 0o600); err != nil {
			t.Fatal(err)
		}
	}
	write("mfg.pem", pkitest.PEM(mfg.Cert))
	write("foreign.crl", crlOf(t, other, time.Now().Add(time.Hour)))
	write("junk.crl", []byte("not a CRL"))
	c, err := parseConfig([]byte(`hsm: {module: /x.so, token: t}
manufacturers:
  - {name: a, roots: [missing.pem]}
  - {name: b, roots: [mfg.pem], crls: [junk.crl, foreign.crl, nothere.crl]}
`), dir)
	if err != nil {
		t.Fatal(err)
	}
	ca := pkitest.NewCA(t, "estca")
	_, err = c.policyOptions(ca.Cert, ca.Cert, nil)
	for _, want := range []string{"manufacturers[0].roots[0]:", "manufacturers[1].crls[0]:", "manufacturers[1].crls[2]:"} {
		if err == nil || !strings.Contains(err.Error(), want) {
			t.Errorf("error does not name %q:\n%v", want, err)
		}
	}
	// With the files right, the one CRL of another issuer is refused by the
	// engine, named by its manufacturer.
	c.Manufacturers = c.Manufacturers[1:]
	c.Manufacturers[0].CRLs = []string{"foreign.crl"}
	if _, err := c.policyOptions(ca.Cert, ca.Cert, nil); err == nil || !strings.Contains(err.Error(), "manufacturers[0]: CRL 0") {
		t.Errorf("foreign CRL: %v", err)
	}
	write("mfg.crl", crlOf(t, mfg, time.Now().Add(time.Hour)))
	c.Manufacturers[0].CRLs = []string{"mfg.crl"}
	if _, err := c.policyOptions(ca.Cert, ca.Cert, nil); err != nil {
		t.Fatal(err)
	}
	// Serials are read as the CLI reads them (parseSerial: the forms
	// openssl prints) and handed down in the store's form.
	c.Manufacturers[0].DenySerials = []string{"serial=7A310C44", "00:8A:1B", "0x0c"}
	c.Manufacturers[0].AllowSerials = []string{"4660 (0x1234)"}
	o, err := c.policyOptions(ca.Cert, ca.Cert, nil)
	if err != nil {
		t.Fatal(err)
	}
	if a := o.Requesters.Anchors[0]; strings.Join(a.DenySerials, " ") != "7a310c44 8a1b c" || strings.Join(a.AllowSerials, " ") != "1234" {
		t.Fatalf("serials handed down: %q %q", a.DenySerials, a.AllowSerials)
	}
}

// crlOf makes a PEM CRL of issuer.
func crlOf(t *testing.T, issuer *pkitest.Cert, next time.Time, revoked ...*big.Int) []byte {
	t.Helper()
	tmpl := &x509.RevocationList{Number: big.NewInt(1), ThisUpdate: time.Now().Add(-time.Hour), NextUpdate: next}
	for _, s := range revoked {
		tmpl.RevokedCertificateEntries = append(tmpl.RevokedCertificateEntries, x509.RevocationListEntry{SerialNumber: s, RevocationTime: time.Now()})
	}
	der, err := x509.CreateRevocationList(rand.Reader, tmpl, issuer.Cert, issuer.Key)
	if err != nil {
		t.Fatal(err)
	}
	return pem.EncodeToMemory(&pem.Block{Type: "X509 CRL", Bytes: der})
}

// TestReadmePolicyExample decodes the complete example of README.md's
// policy reference with the real decoder, with the manufacturer files it
// names, and checks that it does what the text says: a meter gets
// meter-<serial> and <serial>.meters.example.net, CN=admin is refused, a
// deny-listed meter does not authenticate, an expired gateway does.
func TestReadmePolicyExample(t *testing.T) {
	t.Parallel()
	readme, err := os.ReadFile("../../README.md")
	if err != nil {
		t.Fatal(err)
	}
	s := string(readme)
	i := strings.Index(s, "### A complete example")
	if i < 0 {
		t.Fatal("README.md has no complete example")
	}
	start := strings.Index(s[i:], "```yaml\n")
	end := strings.Index(s[i+start+8:], "```\n")
	if start < 0 || end < 0 {
		t.Fatal("no yaml block in the example")
	}
	example := s[i+start+8 : i+start+8+end]

	dir := t.TempDir()
	if err := os.Mkdir(filepath.Join(dir, "mfg"), 0o700); err != nil {
		t.Fatal(err)
	}
	write := func(name string, b []byte) {
		if err := os.WriteFile(filepath.Join(dir, "mfg", name), b, 0o600); err != nil {
			t.Fatal(err)
		}
	}
	far := time.Date(9999, 12, 31, 23, 59, 59, 0, time.UTC)
	longAgo := time.Now().Add(-20 * 365 * 24 * time.Hour)
	meterRoot := caCert(t, nil, "Example Meters Root", longAgo, far)
	meterSub := caCert(t, meterRoot, "Example Meters Sub", longAgo, far)
	acmeRoot := caCert(t, nil, "Acme Gateways Root", longAgo, far)
	write("example-meters-root.pem", pkitest.PEM(meterRoot.Cert))
	write("example-meters-sub.pem", pkitest.PEM(meterSub.Cert))
	write("example-meters-sub.crl", crlOf(t, meterSub, time.Now().Add(7*24*time.Hour)))
	write("acme-root.pem", pkitest.PEM(acmeRoot.Cert))
	write("acme-root.crl", crlOf(t, acmeRoot, time.Now().Add(7*24*time.Hour)))

	c, err := parseConfig([]byte("hsm: {module: /x.so, token: t}\n"+example), dir)
	if err != nil {
		t.Fatalf("the README example does not decode:\n%v", err)
	}
	estca := pkitest.NewCA(t, "estca root")
	server := estca.Issue(t, pkitest.Spec{CN: "est.example.net", DNSNames: []string{"est.example.net"}})
	o, err := c.policyOptions(estca.Cert, estca.Cert, server.Cert)
	if err != nil {
		t.Fatalf("the README example does not build:\n%v", err)
	}
	e, err := policy.New(o)
	if err != nil {
		t.Fatal(err)
	}

	meterKey := pkitest.Key(t)
	meter := idevid(t, meterSub, "EXM-123456", meterKey, time.Now().Add(-time.Hour), far, 0x1234)
	denied := idevid(t, meterSub, "EXM-666", pkitest.Key(t), time.Now().Add(-time.Hour), far, 0x7a310c44)
	gateway := idevid(t, acmeRoot, "GW-0042", pkitest.Key(t), time.Now().Add(-11*365*24*time.Hour), time.Now().Add(-24*time.Hour), 0x42)
	now := time.Now()

	rep := e.Check(policy.CheckInput{CSR: pkitest.CSR(t, pkitest.Key(t), pkix.Name{}), Chain: []*x509.Certificate{meter, meterSub.Cert},
		Label: "meter", Time: now})
	if rep.Decision.Action != policy.ActionIssue || !strings.Contains(rep.String(), `CN="meter-EXM-123456"`) ||
		!strings.Contains(rep.String(), `"EXM-123456.meters.example.net"`) {
		t.Fatalf("meter:\n%s", rep.String())
	}
	rep = e.Check(policy.CheckInput{CSR: pkitest.CSR(t, pkitest.Key(t), pkix.Name{CommonName: "admin"}),
		Chain: []*x509.Certificate{meter, meterSub.Cert}, Label: "meter", Time: now})
	if rep.Decision.Action != policy.ActionDeny {
		t.Fatalf("CN=admin:\n%s", rep.String())
	}
	if _, err := e.Verify([]*x509.Certificate{denied, meterSub.Cert}, now); err == nil {
		t.Fatal("the deny-listed meter authenticated")
	}
	v, err := e.Verify([]*x509.Certificate{gateway}, now)
	if err != nil || !v.ExpiredAccepted {
		t.Fatalf("expired gateway: %+v, %v", v, err)
	}
	rep = e.Check(policy.CheckInput{CSR: pkitest.RawCSR(t, pkitest.Key(t), gateway.RawSubject), Chain: []*x509.Certificate{gateway},
		Label: "gateway", Time: now})
	if rep.Decision.Action != policy.ActionPending {
		t.Fatalf("gateway (manual approval):\n%s", rep.String())
	}
}

// caCert makes a CA certificate under parent (self-signed when nil).
func caCert(t *testing.T, parent *pkitest.Cert, cn string, notBefore, notAfter time.Time) *pkitest.Cert {
	t.Helper()
	key := pkitest.Key(t)
	tmpl := &x509.Certificate{SerialNumber: big.NewInt(99), Subject: pkix.Name{CommonName: cn},
		NotBefore: notBefore, NotAfter: notAfter, IsCA: true, BasicConstraintsValid: true,
		KeyUsage: x509.KeyUsageCertSign | x509.KeyUsageCRLSign}
	issuer, signer := tmpl, any(key)
	if parent != nil {
		issuer, signer = parent.Cert, parent.Key
	}
	der, err := x509.CreateCertificate(rand.Reader, tmpl, issuer, key.Public(), signer)
	if err != nil {
		t.Fatal(err)
	}
	c, _ := x509.ParseCertificate(der)
	return &pkitest.Cert{Cert: c, Key: key}
}

// idevid makes an IEEE 802.1AR-style device certificate: subject
// serialNumber and CN, hardwareModuleName in the SAN.
func idevid(t *testing.T, issuer *pkitest.Cert, serial string, key *ecdsa.PrivateKey, nb, na time.Time, certSerial int64) *x509.Certificate {
	t.Helper()
	san, err := ca.HardwareModuleNameSAN(ca.DemoHardwareType, []byte(serial))
	if err != nil {
		t.Fatal(err)
	}
	der, err := x509.CreateCertificate(rand.Reader, &x509.Certificate{SerialNumber: big.NewInt(certSerial),
		Subject: pkix.Name{CommonName: "device " + serial, SerialNumber: serial}, NotBefore: nb, NotAfter: na,
		KeyUsage: x509.KeyUsageDigitalSignature, ExtraExtensions: []pkix.Extension{{Id: policy.OIDSubjectAltName, Value: san}},
	}, issuer.Cert, key.Public(), issuer.Key)
	if err != nil {
		t.Fatal(err)
	}
	c, _ := x509.ParseCertificate(der)
	return c
}
