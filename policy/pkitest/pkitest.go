package pkitest

import (
	"crypto"
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/tls"
	"crypto/x509"
	"crypto/x509/pkix"
	"encoding/hex"
	"encoding/pem"
	"fmt"
	"math/big"
	"net"
	"os"
	"os/exec"
	"path/filepath"
	"runtime"
	"strings"
	"testing"
	"time"
)

// Key makes a P-256 key.
func Key(t testing.TB) *ecdsa.PrivateKey {
	t.Helper()
	k, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		t.Fatal(err)
	}
	return k
}

// Spec describes a certificate to make; see the package documentation for
// the defaults of zero fields.
type Spec struct {
	// CN is the subject common name, the only attribute of the subject.
	CN string
	// Serial is the serial number; 0 means a random 64-bit number.
	Serial int64
	// NotBefore and NotAfter bound the validity.
	NotBefore, NotAfter time.Time
	// CA makes a CA certificate (basicConstraints cA, keyCertSign, cRLSign).
	CA bool
	// ExtKeyUsage lists the extended key usages; none means no extension.
	ExtKeyUsage []x509.ExtKeyUsage
	// DNSNames and IPAddresses are the subjectAltName entries.
	DNSNames    []string
	IPAddresses []net.IP
}

// ClientAuth is a device certificate: extended key usage clientAuth, no SANs.
func ClientAuth(cn string) Spec {
	return Spec{CN: cn, ExtKeyUsage: []x509.ExtKeyUsage{x509.ExtKeyUsageClientAuth}}
}

// ServerAuth is a server certificate on the loopback interface: extended key
// usage serverAuth, DNS name localhost and IP address 127.0.0.1.
func ServerAuth(cn string) Spec {
	return Spec{CN: cn, ExtKeyUsage: []x509.ExtKeyUsage{x509.ExtKeyUsageServerAuth},
		DNSNames: []string{"localhost"}, IPAddresses: []net.IP{net.IPv4(127, 0, 0, 1)}}
}

// SubCA is an intermediate CA certificate.
func SubCA(cn string) Spec { return Spec{CN: cn, CA: true} }

// template turns s into a certificate template.
func (s Spec) template() (*x509.Certificate, error) {
	serial := big.NewInt(s.Serial)
	if s.Serial == 0 {
		var err error
		if serial, err = rand.Int(rand.Reader, new(big.Int).Lsh(big.NewInt(1), 64)); err != nil {
			return nil, err
		}
	}
	nb, na := s.NotBefore, s.NotAfter
	if nb.IsZero() {
		nb = time.Now().Add(-time.Hour)
	}
	if na.IsZero() {
		na = time.Now().Add(24 * time.Hour)
	}
	tmpl := &x509.Certificate{
		SerialNumber:          serial,
		Subject:               pkix.Name{CommonName: s.CN},
		NotBefore:             nb,
		NotAfter:              na,
		KeyUsage:              x509.KeyUsageDigitalSignature,
		BasicConstraintsValid: true,
		IsCA:                  s.CA,
		ExtKeyUsage:           s.ExtKeyUsage,
		DNSNames:              s.DNSNames,
		IPAddresses:           s.IPAddresses,
	}
	if s.CA {
		tmpl.KeyUsage |= x509.KeyUsageCertSign | x509.KeyUsageCRLSign
	}
	return tmpl, nil
}

// Cert is a certificate with its private key: a CA that issues, or a leaf
// that serves as a DTLS identity.
type Cert struct {
	Cert *x509.Certificate
	Key  crypto.Signer
}

// NewCA makes a self-signed root CA with a fresh key.
func NewCA(t testing.TB, cn string) *Cert {
	t.Helper()
	return SelfSigned(t, Spec{CN: cn, CA: true})
}

// SelfSigned makes a self-signed certificate for s with a fresh key.
func SelfSigned(t testing.TB, s Spec) *Cert {
	t.Helper()
	key := Key(t)
	c, err := create(s, nil, key.Public(), key)
	if err != nil {
		t.Fatal(err)
	}
	return &Cert{Cert: c, Key: key}
}

// Issue makes a certificate for s with a fresh key, signed by c.
func (c *Cert) Issue(t testing.TB, s Spec) *Cert {
	t.Helper()
	key := Key(t)
	cert, err := c.Sign(s, key.Public())
	if err != nil {
		t.Fatal(err)
	}
	return &Cert{Cert: cert, Key: key}
}

// Sign makes a certificate for s and pub, signed by c. It takes no
// testing.TB so that handlers on other goroutines can call it.
func (c *Cert) Sign(s Spec, pub crypto.PublicKey) (*x509.Certificate, error) {
	return create(s, c, pub, c.Key)
}

// create signs s for pub with signer, under parent (nil: self-signed).
func create(s Spec, parent *Cert, pub crypto.PublicKey, signer crypto.Signer) (*x509.Certificate, error) {
	tmpl, err := s.template()
	if err != nil {
		return nil, err
	}
	issuer := tmpl
	if parent != nil {
		issuer = parent.Cert
	}
	der, err := x509.CreateCertificate(rand.Reader, tmpl, issuer, pub, signer)
	if err != nil {
		return nil, fmt.Errorf("pkitest: %s: %w", s.CN, err)
	}
	return x509.ParseCertificate(der)
}

// TLS returns c as a TLS/DTLS identity whose chain is c's certificate
// followed by chain.
func (c *Cert) TLS(chain ...*x509.Certificate) tls.Certificate {
	raw := [][]byte{c.Cert.Raw}
	for _, x := range chain {
		raw = append(raw, x.Raw)
	}
	return tls.Certificate{Certificate: raw, PrivateKey: c.Key, Leaf: c.Cert}
}

// Pool returns a pool holding c's certificate alone.
func (c *Cert) Pool() *x509.CertPool { return Pool(c.Cert) }

// Pool returns a pool holding certs.
func Pool(certs ...*x509.Certificate) *x509.CertPool {
	p := x509.NewCertPool()
	for _, c := range certs {
		p.AddCert(c)
	}
	return p
}

// CSR makes a DER PKCS#10 request signed by key.
func CSR(t testing.TB, key crypto.Signer, subj pkix.Name, exts ...pkix.Extension) []byte {
	t.Helper()
	der, err := x509.CreateCertificateRequest(rand.Reader, &x509.CertificateRequest{Subject: subj, ExtraExtensions: exts}, key)
	if err != nil {
		t.Fatal(err)
	}
	return der
}

// RawCSR makes a DER PKCS#10 request with the DER subject raw (e.g. an
// IDevID's RawSubject, for profiles that bind the subject to the
// requester's identity), signed by key.
func RawCSR(t testing.TB, key crypto.Signer, raw []byte, exts ...pkix.Extension) []byte {
	t.Helper()
	der, err := x509.CreateCertificateRequest(rand.Reader, &x509.CertificateRequest{RawSubject: raw, ExtraExtensions: exts}, key)
	if err != nil {
		t.Fatal(err)
	}
	return der
}

// PaddedCSR makes a DER request with common name cn whose DNS names add at
// least pad bytes, so that it spans several blocks of a block-wise transfer
// (RFC 7959) and still passes a CA that allows DNS SANs.
func PaddedCSR(t testing.TB, key crypto.Signer, cn string, pad int) []byte {
	t.Helper()
	tmpl := &x509.CertificateRequest{Subject: pkix.Name{CommonName: cn}}
	for n := 0; n < pad; {
		name := fmt.Sprintf("host-%04d.padding.example.com", len(tmpl.DNSNames))
		tmpl.DNSNames = append(tmpl.DNSNames, name)
		n += len(name)
	}
	der, err := x509.CreateCertificateRequest(rand.Reader, tmpl, key)
	if err != nil {
		t.Fatal(err)
	}
	return der
}

// ParseCSR parses a DER request.
func ParseCSR(t testing.TB, der []byte) *x509.CertificateRequest {
	t.Helper()
	csr, err := x509.ParseCertificateRequest(der)
	if err != nil {
		t.Fatal(err)
	}
	return csr
}

// PEM encodes certs as concatenated CERTIFICATE blocks.
func PEM(certs ...*x509.Certificate) []byte {
	var b []byte
	for _, c := range certs {
		b = append(b, pem.EncodeToMemory(&pem.Block{Type: "CERTIFICATE", Bytes: c.Raw})...)
	}
	return b
}

// WritePEM writes certs as PEM to dir/name and returns the path.
func WritePEM(t testing.TB, dir, name string, certs ...*x509.Certificate) string {
	t.Helper()
	p := filepath.Join(dir, name)
	if err := os.WriteFile(p, PEM(certs...), 0o600); err != nil {
		t.Fatal(err)
	}
	return p
}

// PEMBlock returns the bytes of the first PEM block of b.
func PEMBlock(t testing.TB, b []byte) []byte {
	t.Helper()
	blk, _ := pem.Decode(b)
	if blk == nil {
		t.Fatal("pkitest: no PEM block")
	}
	return blk.Bytes
}

// PEMCert parses the first PEM block of b as a certificate.
func PEMCert(t testing.TB, b []byte) *x509.Certificate {
	t.Helper()
	c, err := x509.ParseCertificate(PEMBlock(t, b))
	if err != nil {
		t.Fatal(err)
	}
	return c
}

// KeyPair parses a PEM certificate (chain) and key as a TLS identity.
func KeyPair(t testing.TB, certPEM, keyPEM []byte) tls.Certificate {
	t.Helper()
	c, err := tls.X509KeyPair(certPEM, keyPEM)
	if err != nil {
		t.Fatal(err)
	}
	return c
}

// CI reports whether the tests run under CI: the environment variable CI is
// set to anything but "", "0" or "false". There, a missing external tool
// is a failure, not a skip.
func CI() bool {
	ci := os.Getenv("CI")
	return ci != "" && ci != "0" && !strings.EqualFold(ci, "false")
}

// RequireTool returns the path of the external program name (openssl,
// coap-client-openssl, ...). Without it the test is skipped with the
// reason, or fails under CI (see CI): scripts/deps.sh installs them.
func RequireTool(t testing.TB, name string) string {
	t.Helper()
	p, err := exec.LookPath(name)
	if err != nil {
		if CI() {
			t.Fatalf("pkitest: %s is required under CI=%s (run scripts/deps.sh): %v", name, os.Getenv("CI"), err)
		}
		t.Skipf("%s not installed: %v", name, err)
	}
	return p
}

// OpenSSL runs the openssl binary with args and returns its combined output;
// a non-zero exit fails the test. Without openssl the test is skipped, or
// fails under CI (RequireTool).
func OpenSSL(t testing.TB, args ...string) string {
	t.Helper()
	bin := RequireTool(t, "openssl")
	out, err := exec.Command(bin, args...).CombinedOutput()
	if err != nil {
		t.Fatalf("openssl %v: %v\n%s", args, err, out)
	}
	return string(out)
}

// Fixture returns the contents of testdata/name at the root of the module
// (for example "rfc9148/a1-crts-response.hex"). A name ending in ".hex" is
// hexadecimal text, decoded after dropping white space and '#' comments.
func Fixture(t testing.TB, name string) []byte {
	t.Helper()
	_, self, _, ok := runtime.Caller(0)
	if !ok {
		t.Fatal("pkitest: no source location for the testdata directory")
	}
	b, err := os.ReadFile(filepath.Join(filepath.Dir(self), "..", "..", "testdata", filepath.FromSlash(name)))
	if err != nil {
		t.Fatal(err)
	}
	if !strings.HasSuffix(name, ".hex") {
		return b
	}
	var digits strings.Builder
	for line := range strings.Lines(string(b)) {
		line, _, _ = strings.Cut(line, "#")
		digits.WriteString(strings.Join(strings.Fields(line), ""))
	}
	out, err := hex.DecodeString(digits.String())
	if err != nil {
		t.Fatalf("pkitest: %s: %v", name, err)
	}
	return out
}
