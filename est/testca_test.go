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
	"testing"
	"time"

	"github.com/estca/estca/ca"
)

// testCA is the software ECDSA CA of the est tests. It makes the server and
// client certificates of both the server and the client tests, the fixtures
// they exchange and, inside stAuthority, really signs enrollments. It stands
// in for package ca (tested with SoftHSM in its own package and in the
// real-authority tests), never for the network.
type testCA struct {
	cert *x509.Certificate
	key  *ecdsa.PrivateKey
}

// tcUse is what a certificate from a testCA is for; it decides the EKUs,
// the SANs and the chain that tlsCert returns.
type tcUse int

const (
	// tcClientAuth is a device of the server tests and the certificate
	// stAuthority enrolls: clientAuth only, no SANs, chain [leaf].
	tcClientAuth tcUse = iota
	// tcServerAuth is the server of the server tests: serverAuth, DNS
	// localhost and IP 127.0.0.1, chain [leaf].
	tcServerAuth
	// tcPeer is a certificate of the client tests: serverAuth and
	// clientAuth, the IPs given, chain [leaf, ca].
	tcPeer
	// tcIntermediate is a CA certificate (CertSign, no EKU).
	tcIntermediate
)

// tcKey makes a P-256 key.
func tcKey(t testing.TB) *ecdsa.PrivateKey {
	t.Helper()
	k, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		t.Fatal(err)
	}
	return k
}

func tcSerial() (*big.Int, error) {
	return rand.Int(rand.Reader, new(big.Int).Lsh(big.NewInt(1), 64))
}

// tcNewCA makes a self-signed root CA whose SubjectKeyId is (the first 20
// bytes of) cn.
func tcNewCA(t testing.TB, cn string) *testCA {
	t.Helper()
	key := tcKey(t)
	serial, err := tcSerial()
	if err != nil {
		t.Fatal(err)
	}
	tmpl := &x509.Certificate{
		SerialNumber:          serial,
		Subject:               pkix.Name{CommonName: cn},
		NotBefore:             time.Now().Add(-time.Hour),
		NotAfter:              time.Now().Add(24 * time.Hour),
		KeyUsage:              x509.KeyUsageCertSign | x509.KeyUsageCRLSign | x509.KeyUsageDigitalSignature,
		BasicConstraintsValid: true,
		IsCA:                  true,
		SubjectKeyId:          []byte(cn)[:min(len(cn), 20)],
	}
	der, err := x509.CreateCertificate(rand.Reader, tmpl, tmpl, &key.PublicKey, key)
	if err != nil {
		t.Fatal(err)
	}
	cert, err := x509.ParseCertificate(der)
	if err != nil {
		t.Fatal(err)
	}
	return &testCA{cert: cert, key: key}
}

// sign issues a certificate for pub. It does not take a testing.TB so that
// handlers on other goroutines can call it; ips only count for tcPeer.
func (c *testCA) sign(cn string, pub any, use tcUse, ips ...net.IP) (*x509.Certificate, error) {
	serial, err := tcSerial()
	if err != nil {
		return nil, err
	}
	tmpl := &x509.Certificate{
		SerialNumber:          serial,
		Subject:               pkix.Name{CommonName: cn},
		NotBefore:             time.Now().Add(-time.Hour),
		NotAfter:              time.Now().Add(12 * time.Hour),
		KeyUsage:              x509.KeyUsageDigitalSignature,
		BasicConstraintsValid: true,
	}
	switch use {
	case tcClientAuth:
		tmpl.ExtKeyUsage = []x509.ExtKeyUsage{x509.ExtKeyUsageClientAuth}
	case tcServerAuth:
		tmpl.ExtKeyUsage = []x509.ExtKeyUsage{x509.ExtKeyUsageServerAuth}
		tmpl.DNSNames = []string{"localhost"}
		tmpl.IPAddresses = []net.IP{net.IPv4(127, 0, 0, 1)}
	case tcPeer:
		tmpl.ExtKeyUsage = []x509.ExtKeyUsage{x509.ExtKeyUsageServerAuth, x509.ExtKeyUsageClientAuth}
		tmpl.IPAddresses = ips
	case tcIntermediate:
		tmpl.KeyUsage |= x509.KeyUsageCertSign
		tmpl.IsCA = true
	}
	der, err := x509.CreateCertificate(rand.Reader, tmpl, c.cert, pub, c.key)
	if err != nil {
		return nil, err
	}
	return x509.ParseCertificate(der)
}

// issue is sign for the test's goroutine.
func (c *testCA) issue(t testing.TB, cn string, pub any, use tcUse, ips ...net.IP) *x509.Certificate {
	t.Helper()
	cert, err := c.sign(cn, pub, use, ips...)
	if err != nil {
		t.Fatal(err)
	}
	return cert
}

// tlsCert issues a certificate for use with a fresh key; the chain is
// [leaf, ca] for tcPeer and [leaf] otherwise.
func (c *testCA) tlsCert(t testing.TB, cn string, use tcUse, ips ...net.IP) tls.Certificate {
	t.Helper()
	key := tcKey(t)
	leaf := c.issue(t, cn, &key.PublicKey, use, ips...)
	chain := [][]byte{leaf.Raw}
	if use == tcPeer {
		chain = append(chain, c.cert.Raw)
	}
	return tls.Certificate{Certificate: chain, PrivateKey: key, Leaf: leaf}
}

// self is the CA's own self-signed certificate as a TLS identity.
func (c *testCA) self() tls.Certificate {
	return tls.Certificate{Certificate: [][]byte{c.cert.Raw}, PrivateKey: c.key, Leaf: c.cert}
}

// pool is a pool holding the CA certificate alone.
func (c *testCA) pool() *x509.CertPool { return tcPool(c.cert) }

func tcPool(certs ...*x509.Certificate) *x509.CertPool {
	p := x509.NewCertPool()
	for _, c := range certs {
		p.AddCert(c)
	}
	return p
}

// tcPEMCert parses the first PEM block of b as a certificate.
func tcPEMCert(t testing.TB, b []byte) *x509.Certificate {
	t.Helper()
	blk, _ := pem.Decode(b)
	if blk == nil {
		t.Fatal("no PEM block")
	}
	c, err := x509.ParseCertificate(blk.Bytes)
	if err != nil {
		t.Fatal(err)
	}
	return c
}

// tcKeyPair is p (a demo IDevID, say) as a TLS identity.
func tcKeyPair(t testing.TB, p ca.PEMPair) tls.Certificate {
	t.Helper()
	c, err := tls.X509KeyPair(p.Cert, p.Key)
	if err != nil {
		t.Fatal(err)
	}
	return c
}
