package ca

import (
	"context"
	"crypto/rand"
	"crypto/x509"
	"crypto/x509/pkix"
	"path/filepath"
	"testing"
	"time"

	"github.com/estca/estca/hsm"
	"github.com/estca/estca/policy"
	"github.com/estca/estca/policy/pkitest"
	"github.com/estca/estca/softhsm/softhsmtest"
	"github.com/estca/estca/store"
)

type fixture struct {
	a    *Authority
	db   *store.DB
	h    *Hierarchy
	tok  *hsm.Token
	demo *DemoSet
	now  time.Time
	opts Options
}

var (
	profDevice = Profile{
		Name: "device", Validity: 365 * 24 * time.Hour, AllowSAN: true,
		KeyUsage:    x509.KeyUsageDigitalSignature,
		ExtKeyUsage: []x509.ExtKeyUsage{x509.ExtKeyUsageClientAuth},
		CSRAttrs:    []string{"1.2.840.10045.2.1", "1.2.840.10045.4.3.2"},
	}
	profPlain = Profile{Name: "plain", Validity: 30 * 24 * time.Hour}
	profLong  = Profile{Name: "long", Validity: 100 * 365 * 24 * time.Hour, AllowSAN: true}
)

// newFixture builds a real SoftHSM hierarchy, a real bbolt store and an
// authority with the demo manufacturer as a tolerant trust anchor.
func newFixture(t testing.TB) *fixture {
	t.Helper()
	_, tok := softhsmtest.New(t)
	now := time.Now().UTC().Truncate(time.Second)
	clock := func() time.Time { return now }
	h, err := Init(tok, InitOptions{Now: clock, ServerDNSNames: []string{"est.example"}})
	if err != nil {
		t.Fatal(err)
	}
	signers, err := LoadSigners(tok, LabelIssuing)
	if err != nil {
		t.Fatal(err)
	}
	db, err := store.Create(filepath.Join(t.TempDir(), "estca.db"), store.Options{})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { db.Close() })
	demo, err := Demo(now, rand.Reader)
	if err != nil {
		t.Fatal(err)
	}
	opts := Options{
		Signer: signers[0], Certificate: h.Issuing, Root: h.Root,
		Profiles:       []Profile{profDevice, profPlain, profLong},
		DefaultProfile: "device",
		Store:          db,
		Requesters: policy.Requesters{Anchors: []policy.Anchor{{
			Name: "demo", Roots: []*x509.Certificate{pkitest.PEMCert(t, demo.ManufacturerCA.Cert)}, TolerateExpiry: true,
		}}},
		Now: clock,
	}
	a, err := New(opts)
	if err != nil {
		t.Fatal(err)
	}
	return &fixture{a: a, db: db, h: h, tok: tok, demo: demo, now: now, opts: opts}
}

// requester authenticates a demo device through the real Authenticate path.
func (f *fixture) requester(t testing.TB, p PEMPair) Requester {
	t.Helper()
	r, err := f.a.Authenticate([]*x509.Certificate{pkitest.PEMCert(t, p.Cert)})
	if err != nil {
		t.Fatalf("Authenticate: %v", err)
	}
	return r
}

func hmnExt(t testing.TB, serial string, dns ...string) pkix.Extension {
	t.Helper()
	v, err := HardwareModuleNameSAN(DemoHardwareType, []byte(serial), dns...)
	if err != nil {
		t.Fatal(err)
	}
	return pkix.Extension{Id: policy.OIDSubjectAltName, Value: v}
}

func (f *fixture) enroll(t testing.TB, req Request) *Result {
	t.Helper()
	res, err := f.a.Enroll(context.Background(), req)
	if err != nil {
		t.Fatalf("Enroll: %v", err)
	}
	return res
}

func wantKind(t testing.TB, err error, kind ErrorKind, reason string) {
	t.Helper()
	if err == nil {
		t.Fatalf("got no error, want %v %q", kind, reason)
	}
	if KindOf(err) != kind {
		t.Fatalf("kind of %v = %v, want %v", err, KindOf(err), kind)
	}
	if reason != "" {
		e, _ := err.(*Error)
		if e == nil || e.Reason != reason {
			t.Fatalf("error %v: want reason %q", err, reason)
		}
	}
}

func (f *fixture) count(t testing.TB) int {
	t.Helper()
	n, err := f.db.CountCertificates()
	if err != nil {
		t.Fatal(err)
	}
	return n
}

func (f *fixture) lastAudit(t testing.TB) store.AuditRecord {
	t.Helper()
	recs, err := f.db.AuditRecords(store.AuditFilter{})
	if err != nil || len(recs) == 0 {
		t.Fatalf("AuditRecords: %d, %v", len(recs), err)
	}
	return recs[len(recs)-1]
}
