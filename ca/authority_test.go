package ca

import (
	"bytes"
	"context"
	"crypto"
	"crypto/rand"
	"crypto/x509"
	"encoding/asn1"
	"errors"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/estca/estca/policy"
	"github.com/estca/estca/policy/pkitest"
	"github.com/estca/estca/store"
)

func TestNewReportsAllProblems(t *testing.T) {
	_, err := New(Options{CRL: CRLOptions{DistributionPoint: "ftp://x", Validity: time.Second}})
	if err == nil {
		t.Fatal("New accepted empty options")
	}
	for _, want := range []string{"no issuing signer", "no issuing certificate", "no root certificate", "no store",
		"CRL distribution point", "CRL validity"} {
		if !strings.Contains(err.Error(), want) {
			t.Errorf("New error lacks %q:\n%v", want, err)
		}
	}
	// Policy problems are reported with the others, all at once.
	f := newFixture(t)
	o := f.opts
	o.Store = nil
	o.Policy.Profiles = []policy.Profile{
		{Name: "a", Validity: time.Hour, KeyTypes: []string{"dsa"}, CSRAttrs: []string{"1.x"}},
		{Name: "a", Validity: time.Hour},
		{Validity: time.Hour},
	}
	o.Policy.DefaultProfile = "zzz"
	_, err = New(o)
	for _, want := range []string{"no store", `"dsa"`, `"1.x"`, `profile "a" is defined twice`, "profile 2 has no name", `default profile "zzz"`} {
		if err == nil || !strings.Contains(err.Error(), want) {
			t.Errorf("New error lacks %q:\n%v", want, err)
		}
	}
}

func TestNewRejectsMismatchedSigner(t *testing.T) {
	f := newFixture(t)
	o := f.opts
	o.Signer = pkitest.Key(t)
	if _, err := New(o); err == nil || !strings.Contains(err.Error(), "does not match") {
		t.Fatalf("New with foreign signer: %v", err)
	}
	o = f.opts
	o.Root = f.h.Server
	if _, err := New(o); err == nil || !strings.Contains(err.Error(), "not signed by the root") {
		t.Fatalf("New with wrong root: %v", err)
	}
}

func TestAuthenticate(t *testing.T) {
	f := newFixture(t)
	valid := pkitest.PEMCert(t, f.demo.Valid.Cert)
	r, err := f.a.Authenticate([]*x509.Certificate{valid})
	if err != nil {
		t.Fatal(err)
	}
	if r.Kind != KindIDevID || r.Identity.Kind != "idevid" || r.Identity.Anchor != "demo" || r.Leaf != valid ||
		r.Identity.IDevIDSerial != valid.Subject.SerialNumber || r.Identity.IDevIDSerial == "" || r.Identity.Subject != valid.Subject.String() ||
		len(r.Identity.Fingerprint) != 64 || len(r.Chain) != 2 {
		t.Fatalf("requester %+v", r)
	}
	_, err = f.a.Authenticate([]*x509.Certificate{pkitest.PEMCert(t, f.demo.Unknown.Cert)})
	wantKind(t, err, KindUnauthenticated, "unknown certificate issuer")
	_, err = f.a.Authenticate(nil)
	wantKind(t, err, KindUnauthenticated, "no client certificate")

	// The DTLS server certificate is issued by us but is a server cert.
	_, err = f.a.Authenticate([]*x509.Certificate{f.h.Server})
	wantKind(t, err, KindUnauthenticated, "")
	// An operational device certificate authenticates, with the profile
	// it was issued under, until revoked.
	res := f.enroll(t, Request{CSR: f.csr(t, f.demo.Valid), Profile: "plain", Requester: r})
	op, err := f.a.Authenticate([]*x509.Certificate{res.Certificate, f.h.Issuing})
	if err != nil || op.Kind != KindOperational || op.Anchor != "" || op.IssuedProfile != "plain" {
		t.Fatalf("operational: %+v, %v", op, err)
	}
	if err := f.a.Check(op); err != nil {
		t.Fatalf("Check before revocation: %v", err)
	}
	if err := f.db.Revoke(res.Serial, 1, f.now, store.AuditRecord{}); err != nil {
		t.Fatal(err)
	}
	_, err = f.a.Authenticate([]*x509.Certificate{res.Certificate})
	wantCode(t, err, KindForbidden, policy.CodeCertRevoked)
	// The session authenticated before the revocation is refused from now on.
	wantCode(t, f.a.Check(op), KindForbidden, policy.CodeCertRevoked)
	if err := f.a.Check(r); err != nil {
		t.Fatalf("Check of the IDevID: %v", err)
	}
}

// TestUnknownOperationalCertificate: an operational certificate of this CA
// that the store does not hold (issued after the backup a loss-accepting
// restore put back) is refused at the handshake and on every request, and
// cannot renew: its profile is unknown, so the renewal-profile rule could
// not apply.
func TestUnknownOperationalCertificate(t *testing.T) {
	f := newFixture(t)
	res := f.enroll(t, Request{CSR: f.csr(t, f.demo.Valid), Profile: "plain", Requester: f.requester(t, f.demo.Valid)})
	// The same CA over a store that never held it.
	db, err := store.Create(filepath.Join(t.TempDir(), "restored.db"), store.Options{})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { db.Close() })
	o := f.opts
	o.Store = db
	b, err := New(o)
	if err != nil {
		t.Fatal(err)
	}
	chain := []*x509.Certificate{res.Certificate, f.h.Issuing}
	_, err = b.Authenticate(chain)
	wantCode(t, err, KindForbidden, policy.CodeCertUnknown)
	if !errors.Is(err, ErrUnknownCertificate) {
		t.Fatalf("Authenticate: %v does not match ErrUnknownCertificate", err)
	}
	// A requester not made by Authenticate is looked up per request.
	who := Requester{Kind: KindOperational, Leaf: res.Certificate, Chain: chain,
		Identity: store.Identity{Fingerprint: "op", Subject: res.Certificate.Subject.String(), Kind: "operational"}}
	wantCode(t, b.Check(who), KindForbidden, policy.CodeCertUnknown)
	_, err = b.Enroll(context.Background(), Request{CSR: pkitest.RawCSR(t, pkitest.Key(t), res.Certificate.RawSubject),
		Profile: "long", Requester: who, Operation: policy.OpSren})
	wantCode(t, err, KindForbidden, policy.CodeCertUnknown)
	if n, _ := db.Certificates(store.CertFilter{}); len(n) != 0 {
		t.Fatalf("%d certificates issued to an unknown certificate", len(n))
	}
	// The authority that holds it still serves it.
	if _, err := f.a.Authenticate(chain); err != nil {
		t.Fatal(err)
	}
	if err := f.a.Check(who); err != nil {
		t.Fatalf("Check of a stored certificate: %v", err)
	}
}

func TestAuthenticateDenyListAndExpiry(t *testing.T) {
	f := newFixture(t)
	expired := pkitest.PEMCert(t, f.demo.Expired.Cert)
	mfg := pkitest.PEMCert(t, f.demo.ManufacturerCA.Cert)
	for _, tc := range []struct {
		name   string
		anchor policy.Anchor
		kind   ErrorKind
		reason string
	}{
		{"tolerant", policy.Anchor{Name: "m", Roots: []*x509.Certificate{mfg}, TolerateExpiry: true}, -1, ""},
		{"strict", policy.Anchor{Name: "m", Roots: []*x509.Certificate{mfg}}, KindUnauthenticated, "certificate expired"},
		{"deny-listed", policy.Anchor{Name: "m", Roots: []*x509.Certificate{mfg}, TolerateExpiry: true,
			DenySerials: []string{expired.SerialNumber.Text(16)}}, KindForbidden, "certificate serial is deny-listed"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			o := f.opts
			o.Policy.Requesters = policy.Requesters{Anchors: []policy.Anchor{tc.anchor}}
			a, err := New(o)
			if err != nil {
				t.Fatal(err)
			}
			r, err := a.Authenticate([]*x509.Certificate{expired})
			if tc.kind < 0 {
				if err != nil || !r.ExpiredAccepted {
					t.Fatalf("tolerant anchor: %+v, %v", r, err)
				}
				return
			}
			wantKind(t, err, tc.kind, tc.reason)
		})
	}
}

func TestCACertificatesAndCSRAttributes(t *testing.T) {
	f := newFixture(t)
	for _, p := range []string{"", "device", "plain"} {
		certs, err := f.a.CACertificates(p)
		if err != nil || len(certs) != 2 || !certs[0].Equal(f.h.Issuing) || !certs[1].Equal(f.h.Root) {
			t.Fatalf("CACertificates(%q) = %d certs, %v", p, len(certs), err)
		}
	}
	_, err := f.a.CACertificates("nope")
	wantKind(t, err, KindNotFound, "")
	if !f.a.HasProfile("device") || f.a.HasProfile("nope") || !f.a.HasProfile("") {
		t.Error("HasProfile")
	}

	// /att tells the device its bound values (RFC 9908 template), then the
	// profile's extra OIDs.
	idev := f.requester(t, f.demo.Valid)
	att, err := f.a.CSRAttributes("", idev)
	if err != nil {
		t.Fatal(err)
	}
	var attrs []asn1.RawValue
	if rest, err := asn1.Unmarshal(att, &attrs); err != nil || len(rest) != 0 {
		t.Fatalf("CsrAttrs %x: %v", att, err)
	}
	for _, want := range [][]byte{mustOID(t, policy.OIDCertificationRequestInfoTemplate), mustOID(t, asn1.ObjectIdentifier{1, 2, 840, 10045, 4, 3, 2}),
		[]byte("DEMO-0001")} {
		if !bytes.Contains(att, want) {
			t.Errorf("CsrAttrs lacks %x", want)
		}
	}
	// Without DNS names the SAN is determined: the identity's
	// hardwareModuleName, in an extensionRequest.
	plain, err := f.a.CSRAttributes("plain", idev)
	if err != nil || bytes.Equal(plain, att) || !bytes.Contains(plain, mustOID(t, policy.OIDHardwareModuleName)) ||
		!bytes.Contains(plain, mustOID(t, policy.OIDExtensionRequest)) {
		t.Fatalf("plain CsrAttrs = %x, %v", plain, err)
	}
	_, err = f.a.CSRAttributes("nope", idev)
	wantKind(t, err, KindNotFound, "")
}

func mustOID(t testing.TB, oid asn1.ObjectIdentifier) []byte {
	t.Helper()
	b, err := asn1.Marshal(oid)
	if err != nil {
		t.Fatal(err)
	}
	return b
}

func TestDemo(t *testing.T) {
	t.Parallel()
	now := time.Date(2026, 5, 1, 0, 0, 0, 0, time.UTC)
	d, err := Demo(now, rand.Reader)
	if err != nil {
		t.Fatal(err)
	}
	roots := x509.NewCertPool()
	roots.AddCert(pkitest.PEMCert(t, d.ManufacturerCA.Cert))
	for _, tc := range []struct {
		name string
		p    PEMPair
		ok   bool
	}{{"valid", d.Valid, true}, {"expired", d.Expired, false}, {"unknown", d.Unknown, false}} {
		c := pkitest.PEMCert(t, tc.p.Cert)
		_, err := c.Verify(x509.VerifyOptions{Roots: roots, CurrentTime: now, KeyUsages: []x509.ExtKeyUsage{x509.ExtKeyUsageAny}})
		if (err == nil) != tc.ok {
			t.Errorf("%s: Verify = %v", tc.name, err)
		}
		if c.Subject.SerialNumber == "" {
			t.Errorf("%s: no serialNumber in subject", tc.name)
		}
		var san []byte
		for _, e := range c.Extensions {
			if e.Id.Equal(policy.OIDSubjectAltName) {
				san = e.Value
			}
		}
		if h, err := policy.HardwareModuleNames(san); err != nil || len(h) != 1 || string(h[0].SerialNum) != c.Subject.SerialNumber {
			t.Errorf("%s: hardwareModuleName %v, %v", tc.name, h, err)
		}
		key, err := x509.ParsePKCS8PrivateKey(pkitest.PEMBlock(t, tc.p.Key))
		if err != nil || !samePublicKey(key.(crypto.Signer).Public(), c.PublicKey) {
			t.Errorf("%s: key does not match: %v", tc.name, err)
		}
	}
	if e := pkitest.PEMCert(t, d.Expired.Cert); !e.NotAfter.Before(now) {
		t.Error("expired device is not expired")
	}
}
