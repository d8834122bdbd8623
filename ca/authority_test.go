package ca

import (
	"bytes"
	"crypto"
	"crypto/rand"
	"crypto/x509"
	"crypto/x509/pkix"
	"encoding/asn1"
	"strings"
	"testing"
	"time"

	"github.com/estca/estca/policy"
	"github.com/estca/estca/policy/pkitest"
	"github.com/estca/estca/store"
)

func TestNewReportsAllProblems(t *testing.T) {
	t.Parallel()
	_, err := New(Options{Profiles: []Profile{
		{Name: "a", Validity: time.Hour, KeyTypes: []string{"dsa"}, CSRAttrs: []string{"1.x"}},
		{Name: "a"},
		{Validity: time.Hour},
	}, DefaultProfile: "zzz"})
	if err == nil {
		t.Fatal("New accepted empty options")
	}
	for _, want := range []string{"no issuing signer", "no issuing certificate", "no root certificate", "no store",
		`unknown key type "dsa"`, `bad OID "1.x"`, `profile "a" is defined twice`, `validity must be positive`,
		"profile 2 has no name", `default profile "zzz" is not defined`} {
		if !strings.Contains(err.Error(), want) {
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

	// The DTLS server certificate is issued by us but is a server cert; an
	// operational device certificate authenticates until revoked.
	res := f.enroll(t, Request{CSR: pkitest.CSR(t, pkitest.Key(t), pkix.Name{CommonName: "op"}), Requester: r})
	op, err := f.a.Authenticate([]*x509.Certificate{res.Certificate, f.h.Issuing})
	if err != nil || op.Kind != KindOperational || op.Anchor != "" {
		t.Fatalf("operational: %+v, %v", op, err)
	}
	if err := f.db.Revoke(res.Serial, 1, f.now, store.AuditRecord{}); err != nil {
		t.Fatal(err)
	}
	_, err = f.a.Authenticate([]*x509.Certificate{res.Certificate})
	wantKind(t, err, KindForbidden, "certificate revoked")
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
			o.Requesters = policy.Requesters{Anchors: []policy.Anchor{tc.anchor}}
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
	if !f.a.HasProfile("device") || f.a.HasProfile("nope") || f.a.HasProfile("") {
		t.Error("HasProfile")
	}

	att, err := f.a.CSRAttributes("")
	if err != nil {
		t.Fatal(err)
	}
	var oids []asn1.ObjectIdentifier
	if rest, err := asn1.Unmarshal(att, &oids); err != nil || len(rest) != 0 || len(oids) != 2 ||
		oids[0].String() != "1.2.840.10045.2.1" || oids[1].String() != "1.2.840.10045.4.3.2" {
		t.Fatalf("CsrAttrs %x: %v %v", att, oids, err)
	}
	att, err = f.a.CSRAttributes("plain")
	if err != nil || !bytes.Equal(att, []byte{0x30, 0x00}) {
		t.Fatalf("empty CsrAttrs = %x, %v", att, err)
	}
	_, err = f.a.CSRAttributes("nope")
	wantKind(t, err, KindNotFound, "")
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

func TestEncodeCSRAttrs(t *testing.T) {
	t.Parallel()
	if _, err := encodeCSRAttrs([]string{"1.2.3", "1", "3.1", "1.40.1"}); err == nil {
		t.Fatal("bad OIDs accepted")
	}
	if b, err := encodeCSRAttrs([]string{"2.999.1"}); err != nil || len(b) == 0 {
		t.Fatalf("2.999.1: %v", err)
	}
}
