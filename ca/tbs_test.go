package ca

import (
	"bytes"
	"context"
	"crypto"
	"crypto/rand"
	"crypto/x509"
	"crypto/x509/pkix"
	"encoding/asn1"
	"math/big"
	"path/filepath"
	"slices"
	"testing"
	"time"

	"github.com/estca/estca/policy"
	"github.com/estca/estca/policy/pkitest"
	"github.com/estca/estca/store"
)

// TestIssuancePathsMatchCreateCertificate checks that the fast ECDSA path
// encodes exactly the TBSCertificate that x509.CreateCertificate builds from
// the same certificate (subject from the template, critical SAN of an empty
// subject, CRL distribution point, copied extensions, UTCTime and
// GeneralizedTime), and that both paths (RSA, Ed25519 issuing keys go
// through crypto/x509) issue verifiable certificates through Enroll.
// Software issuing keys keep this test free of the token; the HSM path is
// covered by the other tests.
func TestIssuancePathsMatchCreateCertificate(t *testing.T) {
	t.Parallel()
	p384, ed, rsaKey := pkitest.NewKey(t, "p384"), pkitest.NewKey(t, "ed25519"), pkitest.NewKey(t, "rsa2048")
	now := time.Date(2026, 6, 1, 8, 30, 15, 123456789, time.UTC)
	vendor := pkix.Extension{Id: asn1.ObjectIdentifier{1, 3, 6, 1, 4, 1, 32473, 7, 1}, Value: []byte{0x0c, 0x01, 'v'}}
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
			ca := pkitest.SignTemplate(t, root, tc.key.Public(), root, tc.key)
			db, err := store.Create(filepath.Join(t.TempDir(), "s.db"), store.Options{})
			if err != nil {
				t.Fatal(err)
			}
			defer db.Close()
			a, err := New(Options{Signer: tc.key, Certificate: ca, Root: ca, Store: db, Now: func() time.Time { return now },
				CRL: CRLOptions{DistributionPoint: "http://crl.example.net/estca.crl"},
				Policy: policy.Options{Profiles: []policy.Profile{
					{Name: "dev", Validity: 24 * time.Hour, Requesters: []string{policy.KindOperator},
						Subject:     []policy.SubjectAttr{{Type: "CN", From: policy.SourceCSR, Optional: true}, {Type: "O", From: policy.SourceCSR, Optional: true}},
						SAN:         policy.SANPolicy{HardwareModuleName: policy.HardwareNameCSR, DNS: policy.NamePolicy{Patterns: []string{`.*`}}},
						KeyUsage:    policy.KeyUsages{ECDSA: x509.KeyUsageDigitalSignature | x509.KeyUsageKeyAgreement},
						Extensions:  policy.ExtensionPolicy{Copy: []string{vendor.Id.String()}},
						ExtKeyUsage: []x509.ExtKeyUsage{x509.ExtKeyUsageClientAuth, x509.ExtKeyUsageServerAuth}},
					{Name: "bare", Validity: 40 * 365 * 24 * time.Hour, Requesters: []string{policy.KindOperator},
						Subject: []policy.SubjectAttr{{Type: "CN", From: policy.SourceCSR}}}, // notAfter past 2049: GeneralizedTime
				}}})
			if err != nil {
				t.Fatal(err)
			}
			if (a.fast != nil) != tc.fast {
				t.Fatalf("fast path = %v", a.fast != nil)
			}
			roots := x509.NewCertPool()
			roots.AddCert(ca)
			key := pkitest.Key(t)
			for _, c := range []struct {
				prof string
				subj pkix.Name
				exts []pkix.Extension
			}{
				{"dev", pkix.Name{CommonName: "d", Organization: []string{"O"}}, []pkix.Extension{hmnExt(t, "SN-1", "a.example"), vendor}},
				{"dev", pkix.Name{}, []pkix.Extension{hmnExt(t, "SN-2", "c.example")}}, // empty subject: critical SAN (with a DNS name, which crypto/x509 understands)
				{"bare", pkix.Name{CommonName: "b"}, nil},
			} {
				csrDER := pkitest.CSR(t, key, c.subj, c.exts...)
				res, err := a.Enroll(context.Background(), Request{CSR: csrDER, Profile: c.prof, Requester: operator()})
				if err != nil {
					t.Fatal(err)
				}
				cert := res.Certificate
				if _, err := cert.Verify(x509.VerifyOptions{Roots: roots, CurrentTime: now, KeyUsages: []x509.ExtKeyUsage{x509.ExtKeyUsageAny}}); err != nil {
					t.Fatalf("%s: Verify: %v", c.prof, err)
				}
				if !cert.NotBefore.Equal(now.Add(-time.Minute).Truncate(time.Second)) {
					t.Errorf("notBefore %v", cert.NotBefore)
				}
				if !slices.Equal(cert.CRLDistributionPoints, []string{"http://crl.example.net/estca.crl"}) {
					t.Errorf("CRL distribution points %v", cert.CRLDistributionPoints)
				}
				if c.subj.CommonName == "" && (len(cert.Extensions) == 0 || !slices.ContainsFunc(cert.Extensions, func(x pkix.Extension) bool {
					return x.Id.Equal(policy.OIDSubjectAltName) && x.Critical
				})) {
					t.Errorf("empty subject without a critical SAN")
				}
			}
			if !tc.fast {
				return
			}
			// The fast encoder against crypto/x509 for the same certificate.
			csr := pkitest.ParseCSR(t, pkitest.CSR(t, key, pkix.Name{}, hmnExt(t, "SN-3", "b.example"), vendor))
			d := a.Policy().Evaluate(policy.Request{Requester: policy.Requester{Verified: policy.Verified{Kind: policy.KindOperator}},
				CSR: csr, Operation: policy.OpSen, Profile: "dev", Time: now})
			if d.Action != policy.ActionIssue {
				t.Fatalf("decision %v %v", d.Action, d.Reasons)
			}
			for _, notAfter := range []time.Time{now.Add(time.Hour), time.Date(2060, 1, 1, 0, 0, 0, 0, time.UTC)} {
				builtin, err := builtinExtensions(d.Template.KeyUsage, d.Template.ExtKeyUsage)
				if err != nil {
					t.Fatal(err)
				}
				s := &certSpec{serial: big.NewInt(0x1234567), subject: d.Template.Subject, spki: csr.RawSubjectPublicKeyInfo,
					pub: csr.PublicKey, notBefore: now.Add(-time.Minute), notAfter: notAfter, ku: d.Template.KeyUsage,
					eku: d.Template.ExtKeyUsage, builtin: builtin, ski: []byte{1, 2, 3},
					extra: append([]pkix.Extension{{Id: policy.OIDSubjectAltName, Critical: true, Value: d.Template.SubjectAltName},
						{Id: oidExtCRLDistributionPoints, Value: a.crlDP}}, d.Template.Extensions...)}
				ours, err := a.fast.certificate(a, s)
				if err != nil {
					t.Fatal(err)
				}
				goDER, err := x509.CreateCertificate(rand.Reader, s.template(), ca, csr.PublicKey, tc.key)
				if err != nil {
					t.Fatal(err)
				}
				oc, err := x509.ParseCertificate(ours)
				if err != nil {
					t.Fatal(err)
				}
				gc, _ := x509.ParseCertificate(goDER)
				if !bytes.Equal(gc.RawTBSCertificate, oc.RawTBSCertificate) {
					t.Fatalf("TBSCertificate differs from crypto/x509's:\nours %x\ngo   %x", oc.RawTBSCertificate, gc.RawTBSCertificate)
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
	if _, err := builtinExtensions(0, []x509.ExtKeyUsage{999}); err == nil {
		t.Fatal("unknown EKU accepted")
	}
}
