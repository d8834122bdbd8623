package ca

import (
	"bytes"
	"context"
	"crypto"
	"crypto/ecdsa"
	"crypto/ed25519"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/rsa"
	"crypto/x509"
	"crypto/x509/pkix"
	"math/big"
	"path/filepath"
	"testing"
	"time"

	"github.com/estca/estca/policy"
	"github.com/estca/estca/policy/pkitest"
	"github.com/estca/estca/store"
)

// TestIssuancePathsMatchCreateCertificate checks that the fast ECDSA path
// encodes exactly the TBSCertificate that x509.CreateCertificate builds from
// the same template, and that the generic path (RSA, Ed25519 issuing keys)
// issues verifiable certificates. Software issuing keys keep this test free of
// the token; the HSM path is covered by the other tests.
func TestIssuancePathsMatchCreateCertificate(t *testing.T) {
	t.Parallel()
	p384, _ := ecdsa.GenerateKey(elliptic.P384(), rand.Reader)
	_, ed, _ := ed25519.GenerateKey(rand.Reader)
	rsaKey, err := rsa.GenerateKey(rand.Reader, 2048)
	if err != nil {
		t.Fatal(err)
	}
	now := time.Date(2026, 6, 1, 8, 30, 15, 123456789, time.UTC)
	for _, tc := range []struct {
		name string
		key  crypto.Signer
		fast bool
	}{
		{"ecdsa-p256", pkitest.Key(t), true},
		{"ecdsa-p384", p384, true},
		{"ed25519", ed, false},
		{"rsa-2048", rsaKey, false},
	} {
		t.Run(tc.name, func(t *testing.T) {
			t.Parallel()
			root := &x509.Certificate{SerialNumber: big.NewInt(7), Subject: pkix.Name{CommonName: "sw root " + tc.name},
				NotBefore: now.Add(-time.Hour), NotAfter: time.Date(2070, 1, 1, 0, 0, 0, 0, time.UTC),
				IsCA: true, BasicConstraintsValid: true, KeyUsage: x509.KeyUsageCertSign, SubjectKeyId: []byte{9, 9, 9}}
			der, err := x509.CreateCertificate(rand.Reader, root, root, tc.key.Public(), tc.key)
			if err != nil {
				t.Fatal(err)
			}
			ca, _ := x509.ParseCertificate(der)
			db, err := store.Create(filepath.Join(t.TempDir(), "s.db"), store.Options{})
			if err != nil {
				t.Fatal(err)
			}
			defer db.Close()
			a, err := New(Options{Signer: tc.key, Certificate: ca, Root: ca, Store: db, Now: func() time.Time { return now },
				Profiles: []Profile{
					{Name: "dev", Validity: 24 * time.Hour, AllowSAN: true, KeyUsage: x509.KeyUsageDigitalSignature | x509.KeyUsageKeyAgreement | x509.KeyUsageDecipherOnly,
						ExtKeyUsage: []x509.ExtKeyUsage{x509.ExtKeyUsageClientAuth, x509.ExtKeyUsageServerAuth}},
					{Name: "bare", Validity: 40 * 365 * 24 * time.Hour}, // notAfter past 2049: GeneralizedTime
				}})
			if err != nil {
				t.Fatal(err)
			}
			if (a.fast != nil) != tc.fast {
				t.Fatalf("fast path = %v", a.fast != nil)
			}
			id := Requester{Identity: store.Identity{Fingerprint: "f"}, Leaf: ca}
			key := pkitest.Key(t)
			for _, prof := range []string{"dev", "bare"} {
				var exts []pkix.Extension
				if prof == "dev" {
					exts = append(exts, hmnExt(t, "SN-1", "a.example"))
				}
				csrDER := pkitest.CSR(t, key, pkix.Name{CommonName: "d", Organization: []string{"O"}}, exts...)
				res, err := a.Enroll(context.Background(), Request{CSR: csrDER, Profile: prof, Requester: id})
				if err != nil {
					t.Fatal(err)
				}
				c := res.Certificate
				roots := x509.NewCertPool()
				roots.AddCert(ca)
				if _, err := c.Verify(x509.VerifyOptions{Roots: roots, CurrentTime: now, KeyUsages: []x509.ExtKeyUsage{x509.ExtKeyUsageAny}}); err != nil {
					t.Fatalf("%s: Verify: %v", prof, err)
				}
				if !c.NotBefore.Equal(now.Add(-time.Minute).Truncate(time.Second)) {
					t.Errorf("notBefore %v", c.NotBefore)
				}
				csr, _ := x509.ParseCertificateRequest(csrDER)
				var san []byte
				for _, e := range csr.Extensions {
					if e.Id.Equal(policy.OIDSubjectAltName) {
						san = e.Value
					}
				}
				goDER, err := x509.CreateCertificate(rand.Reader, a.template(a.profiles[prof], c.SerialNumber, csr, c.NotBefore, c.NotAfter, c.SubjectKeyId, san),
					ca, csr.PublicKey, tc.key)
				if err != nil {
					t.Fatal(err)
				}
				goCert, _ := x509.ParseCertificate(goDER)
				if !bytes.Equal(goCert.RawTBSCertificate, c.RawTBSCertificate) {
					t.Fatalf("%s: TBSCertificate differs from crypto/x509's:\nours %x\ngo   %x", prof, c.RawTBSCertificate, goCert.RawTBSCertificate)
				}
			}
		})
	}
}

func TestKeyUsageBits(t *testing.T) {
	t.Parallel()
	if reverseBits(0x01) != 0x80 || reverseBits(0xa0) != 0x05 {
		t.Fatal("reverseBits")
	}
	if bitLength([]byte{0x80}) != 1 || bitLength([]byte{0x80, 0x80}) != 9 || bitLength([]byte{0, 0}) != 0 {
		t.Fatal("bitLength")
	}
	if _, err := profileExtensions(Profile{ExtKeyUsage: []x509.ExtKeyUsage{999}}); err == nil {
		t.Fatal("unknown EKU accepted")
	}
}
