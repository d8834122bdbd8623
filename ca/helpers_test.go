package ca

import (
	"context"
	"crypto/rand"
	"crypto/x509"
	"crypto/x509/pkix"
	"errors"
	"path/filepath"
	"sync/atomic"
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
	now  time.Time // the fixture's start time
	opts Options
	// clock is what the authority's Now returns (Unix nanoseconds); set
	// it with at.
	clock *atomic.Int64
}

// at moves the authority's clock to t.
func (f *fixture) at(t time.Time) { f.clock.Store(t.UnixNano()) }

// The fixture's profiles: "device" (the default) binds the subject and
// hardwareModuleName to the requester's identity and lets devices add DNS
// names under example.com; "plain" is the bare default binding; "long"
// outlives the issuing CA; "manual" waits for an operator; "rated" allows
// two certificates an hour per device; "ops" is the local operator's.
var (
	profDevice = policy.Profile{
		Name: "device", Validity: 365 * 24 * time.Hour, RenewalGrace: 30 * 24 * time.Hour,
		SAN:      policy.SANPolicy{DNS: policy.NamePolicy{Patterns: []string{`[a-z0-9-]+\.example\.com`}}},
		CSRAttrs: []string{"1.2.840.10045.2.1", "1.2.840.10045.4.3.2"},
	}
	profPlain  = policy.Profile{Name: "plain", Validity: 30 * 24 * time.Hour}
	profLong   = policy.Profile{Name: "long", Validity: 100 * 365 * 24 * time.Hour}
	profManual = policy.Profile{Name: "manual", Validity: 24 * time.Hour, Approval: policy.ApprovalManual,
		PendingMaxAge: 2 * time.Minute}
	profRated = policy.Profile{Name: "rated", Validity: 24 * time.Hour,
		RateLimit: policy.RateLimit{Count: 2, Window: time.Hour}}
	profOps = policy.Profile{Name: "ops", Validity: 24 * time.Hour, Requesters: []string{policy.KindOperator},
		Subject: []policy.SubjectAttr{{Type: "CN", From: policy.SourceCSR}, {Type: "O", From: policy.SourceCSR, Optional: true}},
		SAN: policy.SANPolicy{HardwareModuleName: policy.HardwareNameCSR,
			DNS: policy.NamePolicy{Patterns: []string{`.*`}}}}
)

// newFixture builds a real SoftHSM hierarchy, a real bbolt store and an
// authority with the demo manufacturer as a tolerant trust anchor.
func newFixture(t testing.TB) *fixture {
	t.Helper()
	_, tok := softhsmtest.New(t)
	now := time.Now().UTC().Truncate(time.Second)
	cur := &atomic.Int64{}
	cur.Store(now.UnixNano())
	clock := func() time.Time { return time.Unix(0, cur.Load()).UTC() }
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
		Policy: policy.Options{
			Profiles:       []policy.Profile{profDevice, profPlain, profLong, profManual, profRated, profOps},
			DefaultProfile: "device",
			Requesters: policy.Requesters{Anchors: []policy.Anchor{{
				Name: "demo", Roots: []*x509.Certificate{pkitest.PEMCert(t, demo.ManufacturerCA.Cert)}, TolerateExpiry: true,
			}}},
			Reserved: []*x509.Certificate{h.Server},
		},
		Store: db,
		Now:   clock,
	}
	a, err := New(opts)
	if err != nil {
		t.Fatal(err)
	}
	return &fixture{a: a, db: db, h: h, tok: tok, demo: demo, now: now, opts: opts, clock: cur}
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

// csr makes a CSR for the identity of the demo device p (its IDevID's
// subject) with a fresh key.
func (f *fixture) csr(t testing.TB, p PEMPair, exts ...pkix.Extension) []byte {
	t.Helper()
	return pkitest.RawCSR(t, pkitest.Key(t), pkitest.PEMCert(t, p.Cert).RawSubject, exts...)
}

// operator is the local operator as `estca issue` makes it.
func operator() Requester {
	return Requester{Kind: KindOperator, Identity: store.Identity{Fingerprint: "operator:test", Subject: "operator:test", Kind: "operator"}}
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

// wantCode checks that err is an *Error of kind with the policy code.
func wantCode(t testing.TB, err error, kind ErrorKind, code policy.Code) {
	t.Helper()
	var e *Error
	if !errors.As(err, &e) || e.Kind != kind || e.Code != code {
		t.Fatalf("error %v: want %v %v", err, kind, code)
	}
	if e.Reason != code.Text() {
		t.Fatalf("error %v: reason %q, want %q", err, e.Reason, code.Text())
	}
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
