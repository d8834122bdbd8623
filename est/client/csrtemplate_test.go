package client

import (
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/x509"
	"crypto/x509/pkix"
	"encoding/asn1"
	"math/big"
	"testing"
	"time"

	"golang.org/x/crypto/cryptobyte"
	cbasn1 "golang.org/x/crypto/cryptobyte/asn1"
)

// csrAttrs builds a CsrAttrs with a certificationRequestInfoTemplate of the
// given subject template RDNs (type, value; "" for a value left to the
// client), key template and extensionRequest SAN, as RFC 9908 shapes it.
func csrAttrs(t testing.TB, rdns [][2]string, curve asn1.ObjectIdentifier, san []byte) []byte {
	t.Helper()
	oids := map[string]asn1.ObjectIdentifier{"CN": {2, 5, 4, 3}, "serialNumber": {2, 5, 4, 5}, "O": {2, 5, 4, 10}}
	var b cryptobyte.Builder
	b.AddASN1(cbasn1.SEQUENCE, func(b *cryptobyte.Builder) {
		b.AddASN1ObjectIdentifier(asn1.ObjectIdentifier{1, 2, 840, 10045, 4, 3, 2}) // a bare hint
		b.AddASN1(cbasn1.SEQUENCE, func(b *cryptobyte.Builder) {
			b.AddASN1ObjectIdentifier(oidCertReqInfoTemplate)
			b.AddASN1(cbasn1.SET, func(b *cryptobyte.Builder) {
				b.AddASN1(cbasn1.SEQUENCE, func(b *cryptobyte.Builder) {
					b.AddASN1Int64(0)
					b.AddASN1(cbasn1.SEQUENCE, func(b *cryptobyte.Builder) {
						for _, r := range rdns {
							b.AddASN1(cbasn1.SET, func(b *cryptobyte.Builder) {
								b.AddASN1(cbasn1.SEQUENCE, func(b *cryptobyte.Builder) {
									b.AddASN1ObjectIdentifier(oids[r[0]])
									if r[1] != "" {
										b.AddASN1(cbasn1.PrintableString, func(b *cryptobyte.Builder) { b.AddBytes([]byte(r[1])) })
									}
								})
							})
						}
					})
					if curve != nil {
						b.AddASN1(cbasn1.Tag(0).ContextSpecific().Constructed(), func(b *cryptobyte.Builder) {
							b.AddASN1(cbasn1.SEQUENCE, func(b *cryptobyte.Builder) {
								b.AddASN1ObjectIdentifier(oidECPublicKey)
								b.AddASN1ObjectIdentifier(curve)
							})
						})
					}
					b.AddASN1(cbasn1.Tag(1).ContextSpecific().Constructed(), func(b *cryptobyte.Builder) {
						if san == nil {
							return
						}
						b.AddASN1(cbasn1.SEQUENCE, func(b *cryptobyte.Builder) {
							b.AddASN1ObjectIdentifier(oidExtensionRequest)
							b.AddASN1(cbasn1.SET, func(b *cryptobyte.Builder) {
								b.AddASN1(cbasn1.SEQUENCE, func(b *cryptobyte.Builder) {
									b.AddASN1(cbasn1.SEQUENCE, func(b *cryptobyte.Builder) {
										b.AddASN1ObjectIdentifier(asn1.ObjectIdentifier{2, 5, 29, 17})
										b.AddASN1OctetString(san)
									})
								})
							})
						})
					})
				})
			})
		})
	})
	return b.BytesOrPanic()
}

func tcLeaf(t testing.TB) *x509.Certificate {
	t.Helper()
	key, _ := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	tmpl := &x509.Certificate{SerialNumber: big.NewInt(1), NotBefore: time.Now(), NotAfter: time.Now().Add(time.Hour),
		Subject: pkix.Name{CommonName: "device 7", SerialNumber: "DEV-7", Organization: []string{"Acme"}}}
	der, err := x509.CreateCertificate(rand.Reader, tmpl, tmpl, key.Public(), key)
	if err != nil {
		t.Fatal(err)
	}
	c, _ := x509.ParseCertificate(der)
	return c
}

// TestParseCSRTemplate: a client follows the server's template: values
// given, values it fills from its certificate, the key type, the SAN.
func TestParseCSRTemplate(t *testing.T) {
	t.Parallel()
	leaf := tcLeaf(t)
	san := []byte{0x30, 0x0b, 0x82, 0x09, 'a', '.', 'e', 'x', 'a', 'm', 'p', 'l', 'e'}
	der := csrAttrs(t, [][2]string{{"CN", "meter-DEV-7"}, {"serialNumber", ""}}, oidP384, san)
	tm, err := ParseCSRTemplate(der, leaf)
	if err != nil {
		t.Fatal(err)
	}
	if tm.Key != "ecdsa-p384" || len(tm.Extensions) != 1 || !tm.Extensions[0].Id.Equal(asn1.ObjectIdentifier{2, 5, 29, 17}) {
		t.Fatalf("template %+v", tm)
	}
	key, err := tm.NewKey()
	if err != nil {
		t.Fatal(err)
	}
	csrDER, err := tm.Request(key, leaf)
	if err != nil {
		t.Fatal(err)
	}
	csr, err := x509.ParseCertificateRequest(csrDER)
	if err != nil || csr.CheckSignature() != nil {
		t.Fatalf("CSR: %v", err)
	}
	if csr.Subject.CommonName != "meter-DEV-7" || csr.Subject.SerialNumber != "DEV-7" || csr.Subject.Organization != nil ||
		len(csr.DNSNames) != 1 || csr.DNSNames[0] != "a.example" {
		t.Fatalf("CSR subject %s, DNS %v", csr.Subject, csr.DNSNames)
	}
	if _, ok := csr.PublicKey.(*ecdsa.PublicKey); !ok || csr.PublicKey.(*ecdsa.PublicKey).Curve != elliptic.P384() {
		t.Fatal("not a P-384 key")
	}

	// A value the client cannot fill; a CsrAttrs without template; junk.
	if _, err := ParseCSRTemplate(csrAttrs(t, [][2]string{{"O", ""}}, nil, nil), &x509.Certificate{RawSubject: []byte{0x30, 0}}); err == nil {
		t.Error("a value the client has not was filled")
	}
	if tm, err := ParseCSRTemplate([]byte{0x30, 0x00}, leaf); tm != nil || err != nil {
		t.Errorf("empty CsrAttrs: %v, %v", tm, err)
	}
	for _, junk := range [][]byte{nil, {0x31, 0x00}, {0x30, 0x03, 0x30, 0x01, 0x00}} {
		if _, err := ParseCSRTemplate(junk, leaf); err == nil {
			t.Errorf("junk %x accepted", junk)
		}
	}
}

// FuzzParseCSRTemplate: the server's CSR attributes are untrusted input;
// nothing makes the client panic, and a subject it accepts is one Name.
func FuzzParseCSRTemplate(f *testing.F) {
	leaf := tcLeaf(f)
	f.Add(csrAttrs(f, [][2]string{{"CN", "x"}, {"serialNumber", ""}}, oidP256, []byte{0x30, 0x00}))
	f.Add(csrAttrs(f, nil, oidP521, nil))
	f.Add([]byte{0x30, 0x00})
	f.Fuzz(func(t *testing.T, der []byte) {
		tm, err := ParseCSRTemplate(der, leaf)
		if err != nil || tm == nil || tm.Subject == nil {
			return
		}
		var name pkix.RDNSequence
		if rest, err := asn1.Unmarshal(tm.Subject, &name); err != nil || len(rest) != 0 {
			t.Fatalf("accepted a subject that is not one Name: %x", tm.Subject)
		}
	})
}
