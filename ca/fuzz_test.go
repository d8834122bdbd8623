package ca

import (
	"crypto/rand"
	"crypto/x509"
	"crypto/x509/pkix"
	"math/big"
	"testing"
	"time"

	"github.com/estca/estca/policy/pkitest"
)

// FuzzParseCertsOnly: certs-only responses are untrusted input for the EST
// client; the parser must not panic, and what it accepts must encode as a
// certs-only form again.
func FuzzParseCertsOnly(f *testing.F) {
	k := pkitest.Key(f)
	tmpl := &x509.Certificate{SerialNumber: big.NewInt(1), Subject: pkix.Name{CommonName: "f"},
		NotBefore: time.Unix(0, 0), NotAfter: time.Unix(1<<31, 0)}
	der, _ := x509.CreateCertificate(rand.Reader, tmpl, tmpl, k.Public(), k)
	c, _ := x509.ParseCertificate(der)
	p7, _ := CertsOnly(c, c)
	f.Add(p7)
	f.Add([]byte{0x30, 0x00})
	f.Fuzz(func(t *testing.T, b []byte) {
		certs, err := ParseCertsOnly(b)
		if err != nil || len(certs) == 0 {
			return
		}
		if _, err := CertsOnly(certs...); err != nil {
			t.Fatalf("re-encode: %v", err)
		}
	})
}
