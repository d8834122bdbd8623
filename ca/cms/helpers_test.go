package cms

import (
	"bytes"
	"crypto"
	"crypto/sha1"
	"crypto/x509"
	"crypto/x509/pkix"
	"encoding/pem"
	"flag"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/estca/estca/policy/pkitest"
)

// The test PKI lives in testdata (committed, so that the fuzz corpora built
// from it keep reaching deep code): a P-256 root, a P-256 issuing CA, three
// key-package signers and three recipients issued by it. Regenerate with
//
//	go test ./ca/cms/ -run 'TestWriteFixtures|TestWriteFuzzCorpus' -update-fixtures
//
// (the corpus depends on the keys: regenerate both together).
var updateFixtures = flag.Bool("update-fixtures", false, "rewrite the test PKI and fuzz seed corpus in testdata")

type keyCert struct {
	key      crypto.Signer
	cert     *x509.Certificate
	keyFile  string
	certFile string
}

type testPKI struct {
	root, issuing keyCert
	signers       map[string]keyCert // p256, p384, rsa
	recipients    map[string]keyCert // rsa, p256, p384
	deviceRSA     crypto.Signer      // an RSA-2048 "generated" key, to spare keygen time
	roots         *x509.CertPool
}

var fixtureNames = struct{ signers, recipients []string }{
	signers:    []string{"p256", "p384", "rsa"},
	recipients: []string{"rsa", "p256", "p384"},
}

var loadPKI = sync.OnceValues(func() (*testPKI, error) {
	p := &testPKI{signers: map[string]keyCert{}, recipients: map[string]keyCert{}}
	var err error
	load := func(name string) keyCert {
		if err != nil {
			return keyCert{}
		}
		var kc keyCert
		kc, err = readKeyCert(name)
		return kc
	}
	p.root, p.issuing = load("root"), load("issuing")
	for _, n := range fixtureNames.signers {
		p.signers[n] = load("signer-" + n)
	}
	for _, n := range fixtureNames.recipients {
		p.recipients[n] = load("recip-" + n)
	}
	if err != nil {
		return nil, err
	}
	if p.deviceRSA, err = readKey(filepath.Join("testdata", "device-rsa.key")); err != nil {
		return nil, err
	}
	p.roots = x509.NewCertPool()
	p.roots.AddCert(p.root.cert)
	return p, nil
})

func pki(t testing.TB) *testPKI {
	t.Helper()
	p, err := loadPKI()
	if err != nil {
		t.Fatalf("test PKI (regenerate with -update-fixtures): %v", err)
	}
	return p
}

func readKeyCert(name string) (keyCert, error) {
	kc := keyCert{keyFile: filepath.Join("testdata", name+".key"), certFile: filepath.Join("testdata", name+".pem")}
	var err error
	if kc.key, err = readKey(kc.keyFile); err != nil {
		return kc, err
	}
	b, err := os.ReadFile(kc.certFile)
	if err != nil {
		return kc, err
	}
	blk, _ := pem.Decode(b)
	if blk == nil {
		return kc, os.ErrInvalid
	}
	kc.cert, err = x509.ParseCertificate(blk.Bytes)
	return kc, err
}

func readKey(path string) (crypto.Signer, error) {
	b, err := os.ReadFile(path)
	if err != nil {
		return nil, err
	}
	blk, _ := pem.Decode(b)
	if blk == nil {
		return nil, os.ErrInvalid
	}
	k, err := x509.ParsePKCS8PrivateKey(blk.Bytes)
	if err != nil {
		return nil, err
	}
	return k.(crypto.Signer), nil
}

func ski(pub crypto.PublicKey) []byte {
	der, err := x509.MarshalPKIXPublicKey(pub)
	if err != nil {
		panic(err)
	}
	// RFC 7093 would hash the subjectPublicKey; any stable identifier does here.
	s := sha1.Sum(der)
	return s[:]
}

// issue signs tmpl for pub with parentKey under parent (nil: self-signed),
// with the fixtures' defaults: a 2025–2125 validity and a SHA-1 subject key
// identifier.
func issue(t testing.TB, tmpl *x509.Certificate, pub crypto.PublicKey, parent *x509.Certificate, parentKey crypto.Signer) *x509.Certificate {
	t.Helper()
	if tmpl.NotBefore.IsZero() {
		tmpl.NotBefore = time.Date(2025, 1, 1, 0, 0, 0, 0, time.UTC)
		tmpl.NotAfter = time.Date(2125, 1, 1, 0, 0, 0, 0, time.UTC)
	}
	tmpl.SubjectKeyId = ski(pub)
	if parent == nil {
		parent = tmpl
	}
	return pkitest.SignTemplate(t, tmpl, pub, parent, parentKey)
}

// device makes a "server-generated" key of kind with its certificate from
// the issuing CA, as the server would return them.
type device struct {
	key   crypto.Signer
	pkcs8 []byte
	cert  *x509.Certificate
}

func newDevice(t testing.TB, p *testPKI, kind string) device {
	t.Helper()
	var k crypto.Signer
	if kind == "rsa" {
		k = p.deviceRSA
	} else {
		k = pkitest.NewKey(t, kind)
	}
	der, err := x509.MarshalPKCS8PrivateKey(k)
	if err != nil {
		t.Fatal(err)
	}
	c := issue(t, &x509.Certificate{Subject: pkix.Name{CommonName: "device " + kind},
		KeyUsage: x509.KeyUsageDigitalSignature}, k.Public(), p.issuing.cert, p.issuing.key)
	return device{key: k, pkcs8: der, cert: c}
}

func (p *testPKI) signer(t testing.TB, name string, bySKI bool) *Signer {
	t.Helper()
	kc := p.signers[name]
	s, err := NewSigner(kc.key, kc.cert, SignerOptions{Chain: []*x509.Certificate{p.issuing.cert}, SubjectKeyID: bySKI})
	if err != nil {
		t.Fatal(err)
	}
	return s
}

func (p *testPKI) verifyOptions() VerifyOptions {
	return VerifyOptions{Roots: p.roots}
}

// TestWriteFixtures regenerates the committed test PKI; it only runs with
// -update-fixtures.
func TestWriteFixtures(t *testing.T) {
	if !*updateFixtures {
		t.Skip("fixture generator: runs with -update-fixtures only")
	}
	write := func(name string, k crypto.Signer, c *x509.Certificate) {
		if k != nil {
			der, err := x509.MarshalPKCS8PrivateKey(k)
			if err != nil {
				t.Fatal(err)
			}
			writePEM(t, filepath.Join("testdata", name+".key"), "PRIVATE KEY", der)
		}
		if c != nil {
			writePEM(t, filepath.Join("testdata", name+".pem"), "CERTIFICATE", c.Raw)
		}
	}
	rootKey := pkitest.NewKey(t, "p256")
	root := issue(t, &x509.Certificate{Subject: pkix.Name{CommonName: "estca cms test root"}, IsCA: true,
		BasicConstraintsValid: true, KeyUsage: x509.KeyUsageCertSign | x509.KeyUsageCRLSign}, rootKey.Public(), nil, rootKey)
	write("root", rootKey, root)
	issKey := pkitest.NewKey(t, "p256")
	iss := issue(t, &x509.Certificate{Subject: pkix.Name{CommonName: "estca cms test issuing CA"}, IsCA: true,
		BasicConstraintsValid: true, MaxPathLenZero: true, KeyUsage: x509.KeyUsageCertSign | x509.KeyUsageCRLSign},
		issKey.Public(), root, rootKey)
	write("issuing", issKey, iss)
	for _, n := range fixtureNames.signers {
		k := pkitest.NewKey(t, n)
		c := issue(t, &x509.Certificate{Subject: pkix.Name{CommonName: "estca key-package signer " + n},
			KeyUsage: x509.KeyUsageDigitalSignature}, k.Public(), iss, issKey)
		write("signer-"+n, k, c)
	}
	for _, n := range fixtureNames.recipients {
		k := pkitest.NewKey(t, n)
		ku := x509.KeyUsageKeyAgreement
		if n == "rsa" {
			ku = x509.KeyUsageKeyEncipherment
		}
		c := issue(t, &x509.Certificate{Subject: pkix.Name{CommonName: "device recipient " + n},
			KeyUsage: ku | x509.KeyUsageDigitalSignature}, k.Public(), iss, issKey)
		write("recip-"+n, k, c)
	}
	write("device-rsa", pkitest.NewKey(t, "rsa"), nil)
}

func writePEM(t testing.TB, path, typ string, der []byte) {
	t.Helper()
	if err := os.WriteFile(path, pem.EncodeToMemory(&pem.Block{Type: typ, Bytes: der}), 0o644); err != nil {
		t.Fatal(err)
	}
}

// openssl runs the openssl binary, skipping the test when it is missing,
// and fails the test when it exits non-zero. It returns stdout.
func openssl(t testing.TB, args ...string) []byte {
	t.Helper()
	out, err := runOpenSSL(t, nil, args...)
	if err != nil {
		t.Fatalf("openssl %s: %v", strings.Join(args, " "), err)
	}
	return out
}

// runOpenSSL runs openssl with stdin, returning stdout or an error that
// carries stderr.
func runOpenSSL(t testing.TB, stdin []byte, args ...string) ([]byte, error) {
	t.Helper()
	cmd := exec.Command(pkitest.RequireTool(t, "openssl"), args...)
	if stdin != nil {
		cmd.Stdin = bytes.NewReader(stdin)
	}
	var stdout, stderr bytes.Buffer
	cmd.Stdout, cmd.Stderr = &stdout, &stderr
	if err := cmd.Run(); err != nil {
		return stdout.Bytes(), &opensslError{err: err, stderr: stderr.String()}
	}
	return stdout.Bytes(), nil
}

type opensslError struct {
	err    error
	stderr string
}

func (e *opensslError) Error() string { return e.err.Error() + ": " + strings.TrimSpace(e.stderr) }

func writeFile(t testing.TB, dir, name string, b []byte) string {
	t.Helper()
	p := filepath.Join(dir, name)
	if err := os.WriteFile(p, b, 0o600); err != nil {
		t.Fatal(err)
	}
	return p
}
