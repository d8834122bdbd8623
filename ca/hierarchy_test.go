package ca

import (
	"crypto/x509"
	"crypto/x509/pkix"
	"errors"
	"math/big"
	"net"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/estca/estca/hsm"
	"github.com/estca/estca/policy/pkitest"
	"github.com/estca/estca/softhsm/softhsmtest"
)

func TestInitHierarchy(t *testing.T) {
	_, tok := softhsmtest.New(t)
	now := time.Now().UTC().Truncate(time.Second)
	h, err := Init(tok, InitOptions{KeyType: hsm.ECDSAP384, RootName: "Test Root", IssuingName: "Test Issuing",
		Organization: "Acme", ServerDNSNames: []string{"est.example"}, Now: func() time.Time { return now }})
	if err != nil {
		t.Fatal(err)
	}
	if !h.Root.IsCA || h.Root.CheckSignatureFrom(h.Root) != nil || h.Root.Subject.CommonName != "Test Root" ||
		h.Root.SignatureAlgorithm != x509.ECDSAWithSHA384 {
		t.Errorf("root: CA %v, sigalg %v", h.Root.IsCA, h.Root.SignatureAlgorithm)
	}
	if d := h.Root.NotAfter.Sub(now); d != DefaultRootValidity {
		t.Errorf("root validity %v", d)
	}
	if !h.Issuing.IsCA || h.Issuing.MaxPathLen != 0 || !h.Issuing.MaxPathLenZero ||
		h.Issuing.CheckSignatureFrom(h.Root) != nil || h.Issuing.Subject.Organization[0] != "Acme" {
		t.Errorf("issuing: pathlen %d", h.Issuing.MaxPathLen)
	}
	if d := h.Issuing.NotAfter.Sub(now); d != DefaultIssuingValidity {
		t.Errorf("issuing validity %v", d)
	}
	s := h.Server
	if s.IsCA || !slices.Equal(s.DNSNames, []string{"est.example", "localhost"}) || len(s.IPAddresses) != 1 ||
		!s.IPAddresses[0].Equal(net.IPv4(127, 0, 0, 1)) || !slices.Equal(s.ExtKeyUsage, []x509.ExtKeyUsage{x509.ExtKeyUsageServerAuth}) ||
		s.PublicKeyAlgorithm != x509.ECDSA {
		t.Errorf("server certificate: %v %v %v", s.DNSNames, s.IPAddresses, s.ExtKeyUsage)
	}
	if d := s.NotAfter.Sub(now); d != DefaultServerValidity {
		t.Errorf("server validity %v", d)
	}
	dir := t.TempDir()
	root := pkitest.WritePEM(t, dir, "root.pem", h.Root)
	iss := pkitest.WritePEM(t, dir, "issuing.pem", h.Issuing)
	srv := pkitest.WritePEM(t, dir, "server.pem", h.Server)
	if out := pkitest.OpenSSL(t, "verify", "-CAfile", root, "-untrusted", iss, "-purpose", "sslserver", srv); !strings.Contains(out, "OK") {
		t.Fatalf("openssl verify server: %s", out)
	}
	signers, err := LoadSigners(tok, LabelRoot, LabelIssuing, LabelServer, LabelAudit)
	if err != nil {
		t.Fatal(err)
	}
	for i, c := range []*x509.Certificate{h.Root, h.Issuing, h.Server} {
		if !samePublicKey(signers[i].Public(), c.PublicKey) {
			t.Errorf("key %d does not match its certificate", i)
		}
	}
	// Never overwrite an existing CA.
	if _, err := Init(tok, InitOptions{}); !errors.Is(err, hsm.ErrKeyExists) {
		t.Fatalf("second Init = %v, want ErrKeyExists", err)
	}
	if _, err := LoadSigners(tok, LabelIssuing, "nope", "nada"); !errors.Is(err, hsm.ErrKeyNotFound) ||
		!strings.Contains(err.Error(), "nope") || !strings.Contains(err.Error(), "nada") {
		t.Fatalf("LoadSigners missing = %v", err)
	}
}

func TestExternalRoot(t *testing.T) {
	_, tok := softhsmtest.New(t)
	now := time.Now().UTC().Truncate(time.Second)
	o := InitOptions{ExternalRoot: true, IssuingName: "Ext Issuing", Now: func() time.Time { return now }}
	h, err := Init(tok, o)
	if err != nil {
		t.Fatal(err)
	}
	if h.Root != nil || h.Issuing != nil || len(h.IssuingCSR) == 0 {
		t.Fatalf("external-root Init returned %+v", h)
	}
	if _, err := tok.FindKey(LabelRoot); !errors.Is(err, hsm.ErrKeyNotFound) {
		t.Fatalf("root key generated in external mode: %v", err)
	}
	csr, err := x509.ParseCertificateRequest(h.IssuingCSR)
	if err != nil || csr.CheckSignature() != nil || csr.Subject.CommonName != "Ext Issuing" {
		t.Fatalf("issuing CSR: %v", err)
	}
	// The external root, in software here.
	extKey := pkitest.Key(t)
	extTmpl := &x509.Certificate{SerialNumber: big.NewInt(1), Subject: pkix.Name{CommonName: "External Root"},
		NotBefore: now.Add(-time.Hour), NotAfter: now.Add(30 * 365 * 24 * time.Hour), IsCA: true,
		BasicConstraintsValid: true, KeyUsage: x509.KeyUsageCertSign}
	ext := pkitest.SignTemplate(t, extTmpl, extKey.Public(), extTmpl, extKey)
	sign := func(pub any) *x509.Certificate {
		return pkitest.SignTemplate(t, &x509.Certificate{SerialNumber: big.NewInt(2),
			RawSubject: csr.RawSubject, NotBefore: now.Add(-time.Hour), NotAfter: now.Add(5 * 365 * 24 * time.Hour),
			IsCA: true, BasicConstraintsValid: true, MaxPathLenZero: true, KeyUsage: x509.KeyUsageCertSign | x509.KeyUsageCRLSign,
			SubjectKeyId: []byte{1, 2, 3, 4}}, pub, ext, extKey)
	}
	if _, err := ImportIssuing(tok, sign(pkitest.Key(t).Public()), ext, o); !errors.Is(err, ErrKeyMismatch) {
		t.Fatalf("ImportIssuing foreign key = %v", err)
	}
	issuing := sign(csr.PublicKey)
	if _, err := ImportIssuing(tok, issuing, issuing, o); err == nil {
		t.Fatal("ImportIssuing accepted a certificate not signed by the given root")
	}
	h, err = ImportIssuing(tok, issuing, ext, o)
	if err != nil {
		t.Fatal(err)
	}
	if h.Server == nil || h.Server.CheckSignatureFrom(issuing) != nil {
		t.Fatal("server certificate not issued by the imported CA")
	}
}
