package est

import (
	"crypto/ecdsa"
	"crypto/rand"
	"crypto/x509"
	"crypto/x509/pkix"
	"encoding/pem"
	"math/big"
	"os"
	"os/exec"
	"path/filepath"
	"testing"
)

// ctCSR makes a DER CSR for key; pad adds an extension of pad bytes so that
// the CSR exceeds a block size.
func ctCSR(t testing.TB, key *ecdsa.PrivateKey, cn string, pad int) []byte {
	t.Helper()
	tmpl := &x509.CertificateRequest{Subject: pkix.Name{CommonName: cn}}
	if pad > 0 {
		tmpl.DNSNames = []string{}
		for n := 0; n < pad; n += 60 {
			tmpl.DNSNames = append(tmpl.DNSNames, "pad-"+big.NewInt(int64(n)).String()+"-abcdefghijklmnopqrstuvwxyz0123456789.example.invalid")
		}
	}
	der, err := x509.CreateCertificateRequest(rand.Reader, tmpl, key)
	if err != nil {
		t.Fatal(err)
	}
	return der
}

// ctOpenSSLCertsOnly builds a certs-only PKCS#7 from certs with the real
// openssl binary (`openssl crl2pkcs7 -nocrl -certfile x.pem -outform DER`).
func ctOpenSSLCertsOnly(t testing.TB, certs ...*x509.Certificate) []byte {
	t.Helper()
	bin, err := exec.LookPath("openssl")
	if err != nil {
		if os.Getenv("CI") == "true" {
			t.Fatal("openssl not installed")
		}
		t.Skip("openssl not installed")
	}
	dir := t.TempDir()
	in := filepath.Join(dir, "x.pem")
	var pemBytes []byte
	for _, c := range certs {
		pemBytes = append(pemBytes, pem.EncodeToMemory(&pem.Block{Type: "CERTIFICATE", Bytes: c.Raw})...)
	}
	if err := os.WriteFile(in, pemBytes, 0o600); err != nil {
		t.Fatal(err)
	}
	out, err := exec.Command(bin, "crl2pkcs7", "-nocrl", "-certfile", in, "-outform", "DER").Output()
	if err != nil {
		t.Fatalf("openssl crl2pkcs7: %v", err)
	}
	return out
}
