package est

import (
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/tls"
	"crypto/x509"
	"crypto/x509/pkix"
	"encoding/pem"
	"math/big"
	"net"
	"os"
	"os/exec"
	"path/filepath"
	"testing"
	"time"
)

// ctCA is a software ECDSA CA used by the client tests to make certificates
// (server, client, fixtures); it is not a stand-in for the network.
type ctCA struct {
	cert *x509.Certificate
	key  *ecdsa.PrivateKey
}

func ctKey(t testing.TB) *ecdsa.PrivateKey {
	t.Helper()
	k, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		t.Fatal(err)
	}
	return k
}

func ctSerial(t testing.TB) *big.Int {
	t.Helper()
	n, err := rand.Int(rand.Reader, new(big.Int).Lsh(big.NewInt(1), 64))
	if err != nil {
		t.Fatal(err)
	}
	return n
}

// ctNewCA makes a self-signed root CA.
func ctNewCA(t testing.TB, cn string) *ctCA {
	t.Helper()
	key := ctKey(t)
	tmpl := &x509.Certificate{
		SerialNumber:          ctSerial(t),
		Subject:               pkix.Name{CommonName: cn, Organization: []string{"estca client test"}},
		NotBefore:             time.Now().Add(-time.Hour),
		NotAfter:              time.Now().Add(24 * time.Hour),
		KeyUsage:              x509.KeyUsageCertSign | x509.KeyUsageCRLSign | x509.KeyUsageDigitalSignature,
		BasicConstraintsValid: true,
		IsCA:                  true,
	}
	der, err := x509.CreateCertificate(rand.Reader, tmpl, tmpl, &key.PublicKey, key)
	if err != nil {
		t.Fatal(err)
	}
	cert, err := x509.ParseCertificate(der)
	if err != nil {
		t.Fatal(err)
	}
	return &ctCA{cert: cert, key: key}
}

// issue signs a leaf (or an intermediate when isCA) for pub.
func (ca *ctCA) issue(t testing.TB, cn string, pub *ecdsa.PublicKey, isCA bool, ips []net.IP) *x509.Certificate {
	t.Helper()
	tmpl := &x509.Certificate{
		SerialNumber:          ctSerial(t),
		Subject:               pkix.Name{CommonName: cn},
		NotBefore:             time.Now().Add(-time.Hour),
		NotAfter:              time.Now().Add(12 * time.Hour),
		KeyUsage:              x509.KeyUsageDigitalSignature,
		ExtKeyUsage:           []x509.ExtKeyUsage{x509.ExtKeyUsageServerAuth, x509.ExtKeyUsageClientAuth},
		BasicConstraintsValid: true,
		IsCA:                  isCA,
		IPAddresses:           ips,
	}
	if isCA {
		tmpl.KeyUsage |= x509.KeyUsageCertSign
		tmpl.ExtKeyUsage = nil
	}
	der, err := x509.CreateCertificate(rand.Reader, tmpl, ca.cert, pub, ca.key)
	if err != nil {
		t.Fatal(err)
	}
	cert, err := x509.ParseCertificate(der)
	if err != nil {
		t.Fatal(err)
	}
	return cert
}

// tlsCert issues a leaf with a fresh key and returns it as a tls.Certificate
// with the issuing chain.
func (ca *ctCA) tlsCert(t testing.TB, cn string, ips []net.IP) tls.Certificate {
	t.Helper()
	key := ctKey(t)
	leaf := ca.issue(t, cn, &key.PublicKey, false, ips)
	return tls.Certificate{Certificate: [][]byte{leaf.Raw, ca.cert.Raw}, PrivateKey: key, Leaf: leaf}
}

func (ca *ctCA) pool() *x509.CertPool {
	p := x509.NewCertPool()
	p.AddCert(ca.cert)
	return p
}

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
