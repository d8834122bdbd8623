package ca

import (
	"context"
	"crypto/x509"
	"crypto/x509/pkix"
	"errors"
	"math/big"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/estca/estca/policy"
	"github.com/estca/estca/policy/pkitest"
	"github.com/estca/estca/store"
)

// TestManualApproval: a request under a manual profile waits (5.03 with the
// profile's Max-Age) until an operator decides; the device's identical
// retry then gets the certificate, issued exactly once, or 4.03.
func TestManualApproval(t *testing.T) {
	f := newFixture(t)
	idev := f.requester(t, f.demo.Valid)
	csr := f.csr(t, f.demo.Valid)
	req := Request{CSR: csr, Profile: "manual", Requester: idev}
	records := func() int {
		recs, _ := f.db.AuditRecords(store.AuditFilter{})
		return len(recs)
	}

	_, err := f.a.Enroll(context.Background(), req)
	var e *Error
	if !errors.As(err, &e) || e.Kind != KindPending || e.MaxAge != 2*time.Minute || !Audited(err) || e.Code != policy.CodePendingApproval {
		t.Fatalf("first request: %v", err)
	}
	rec := f.lastAudit(t)
	if rec.Event != store.EventPending || rec.Verdict != VerdictPending || rec.Profile != "manual" || !strings.Contains(rec.Reason, "pending-approval") {
		t.Fatalf("pending record %+v", rec)
	}
	pending, err := f.db.Requests(store.StatePending)
	if err != nil || len(pending) != 1 || pending[0].Identity != "idevid/demo/sn:DEMO-0001" || string(pending[0].CSR) != string(csr) {
		t.Fatalf("pending requests %+v, %v", pending, err)
	}
	// The device retries after Max-Age: still pending, no new record.
	n := records()
	_, err = f.a.Enroll(context.Background(), req)
	if KindOf(err) != KindPending || records() != n {
		t.Fatalf("retry: %v, %d new records", err, records()-n)
	}
	// A second request of the same device exceeds the pending cap (1).
	_, err = f.a.Enroll(context.Background(), Request{CSR: f.csr(t, f.demo.Valid), Profile: "manual", Requester: idev})
	if !errors.As(err, &e) || e.Kind != KindUnavailable || e.Code != policy.CodeTooManyPending || e.MaxAge != 2*time.Minute {
		t.Fatalf("second request: %v", err)
	}

	// Approved: the retry gets the certificate, once.
	if _, err := f.db.Decide(idev.Identity.Fingerprint, pending[0].CSRDigest, true, "ok", store.AuditRecord{}); err != nil {
		t.Fatal(err)
	}
	first := f.enroll(t, req)
	again := f.enroll(t, req)
	if first.Existing || !again.Existing || first.Serial != again.Serial || f.count(t) != 1 {
		t.Fatalf("approved retries: %+v %+v, %d certificates", first, again, f.count(t))
	}
	if c := first.Certificate; c.Subject.SerialNumber != "DEMO-0001" {
		t.Errorf("approved certificate subject %s", c.Subject)
	}

	// Denied: the retry gets 4.03, audited each time.
	other := f.requester(t, f.demo.Expired)
	denied := Request{CSR: f.csr(t, f.demo.Expired), Profile: "manual", Requester: other}
	if _, err := f.a.Enroll(context.Background(), denied); KindOf(err) != KindPending {
		t.Fatal(err)
	}
	q, err := f.db.FindPending(pendingDigest(t, f, other))
	if err != nil {
		t.Fatal(err)
	}
	if _, err := f.db.Decide(q.Requester.Fingerprint, q.CSRDigest, false, "unknown site", store.AuditRecord{}); err != nil {
		t.Fatal(err)
	}
	_, err = f.a.Enroll(context.Background(), denied)
	wantCode(t, err, KindForbidden, policy.CodeOperatorRejected)
	if f.count(t) != 1 {
		t.Fatalf("%d certificates", f.count(t))
	}
}

func pendingDigest(t *testing.T, f *fixture, who Requester) string {
	t.Helper()
	rs, err := f.db.Requests(store.StatePending)
	if err != nil {
		t.Fatal(err)
	}
	for _, r := range rs {
		if r.Requester.Fingerprint == who.Identity.Fingerprint {
			return r.CSRDigest
		}
	}
	t.Fatal("no pending request")
	return ""
}

// TestRateLimit: two certificates an hour per device; the third request
// waits for the oldest to leave the window (5.03 with that Max-Age); re-sent
// CSRs and other devices are not limited.
func TestRateLimit(t *testing.T) {
	f := newFixture(t)
	idev := f.requester(t, f.demo.Valid)
	enroll := func(csr []byte, who Requester) (*Result, error) {
		return f.a.Enroll(context.Background(), Request{CSR: csr, Profile: "rated", Requester: who})
	}
	first := f.csr(t, f.demo.Valid)
	if _, err := enroll(first, idev); err != nil {
		t.Fatal(err)
	}
	f.at(f.now.Add(10 * time.Minute))
	if _, err := enroll(f.csr(t, f.demo.Valid), idev); err != nil {
		t.Fatal(err)
	}
	f.at(f.now.Add(20 * time.Minute))
	_, err := enroll(f.csr(t, f.demo.Valid), idev)
	var e *Error
	if !errors.As(err, &e) || e.Kind != KindUnavailable || e.Code != policy.CodeRateLimited || e.MaxAge != 40*time.Minute || !Audited(err) {
		t.Fatalf("third request: %v (Max-Age %v)", err, e.MaxAge)
	}
	// The first CSR again is the same request: its certificate.
	if res, err := enroll(first, idev); err != nil || !res.Existing {
		t.Fatalf("re-sent CSR: %v, %v", res, err)
	}
	if _, err := enroll(f.csr(t, f.demo.Expired), f.requester(t, f.demo.Expired)); err != nil {
		t.Fatalf("another device: %v", err)
	}
	f.at(f.now.Add(61 * time.Minute))
	if _, err := enroll(f.csr(t, f.demo.Valid), idev); err != nil {
		t.Fatalf("after the window: %v", err)
	}
	if n := f.count(t); n != 4 {
		t.Fatalf("%d certificates, want 4", n)
	}
}

// TestRevokedMidSession: a requester authenticated before its revocation is
// refused on its next request (the re-check in Enroll), and its CSR gets
// nothing.
func TestRevokedMidSession(t *testing.T) {
	f := newFixture(t)
	idev := f.requester(t, f.demo.Valid)
	first := f.enroll(t, Request{CSR: f.csr(t, f.demo.Valid), Requester: idev})
	op, err := f.a.Authenticate([]*x509.Certificate{first.Certificate})
	if err != nil {
		t.Fatal(err)
	}
	renew := pkitest.RawCSR(t, pkitest.Key(t), first.Certificate.RawSubject, sanOf(first.Certificate))
	f.enroll(t, Request{CSR: renew, Requester: op, Operation: policy.OpSren})
	if _, err := f.a.Revoke(first.Serial, 1, "test"); err != nil {
		t.Fatal(err)
	}
	before := f.count(t)
	for _, csr := range [][]byte{renew, pkitest.RawCSR(t, pkitest.Key(t), first.Certificate.RawSubject, sanOf(first.Certificate))} {
		_, err = f.a.Enroll(context.Background(), Request{CSR: csr, Requester: op, Operation: policy.OpSren})
		wantCode(t, err, KindForbidden, policy.CodeCertRevoked)
	}
	// A malformed CSR on the revoked session says the requester is refused first.
	_, err = f.a.Enroll(context.Background(), Request{CSR: []byte("junk"), Requester: op})
	wantCode(t, err, KindForbidden, policy.CodeCertRevoked)
	if f.count(t) != before {
		t.Fatal("a revoked requester got a certificate")
	}
}

func sanOf(c *x509.Certificate) pkix.Extension {
	for _, x := range c.Extensions {
		if x.Id.Equal(policy.OIDSubjectAltName) {
			return x
		}
	}
	return pkix.Extension{}
}

// TestRenewalGrace: an expired operational certificate authenticates and
// renews within the profile's grace (flagged), and not after it.
func TestRenewalGrace(t *testing.T) {
	f := newFixture(t)
	first := f.enroll(t, Request{CSR: f.csr(t, f.demo.Valid), Requester: f.requester(t, f.demo.Valid)})
	c := first.Certificate
	f.at(c.NotAfter.Add(10 * 24 * time.Hour))
	op, err := f.a.Authenticate([]*x509.Certificate{c})
	if err != nil || !op.InGrace {
		t.Fatalf("in grace: %+v, %v", op, err)
	}
	res := f.enroll(t, Request{CSR: pkitest.RawCSR(t, pkitest.Key(t), c.RawSubject, sanOf(c)), Requester: op, Operation: policy.OpSren})
	if rec := f.lastAudit(t); !slices.Contains(rec.Flags, "renewal-grace") || rec.Serial != res.Serial {
		t.Fatalf("renewal in grace audit record %+v", rec)
	}
	// The grace of "plain" is zero: no renewal into it once expired.
	_, err = f.a.Enroll(context.Background(), Request{CSR: pkitest.RawCSR(t, pkitest.Key(t), c.RawSubject, sanOf(c)),
		Profile: "plain", Requester: op, Operation: policy.OpSren})
	if !errors.As(err, new(*Error)) || KindOf(err) != KindForbidden {
		t.Fatalf("renewal into a profile without grace: %v", err)
	}
	f.at(c.NotAfter.Add(31 * 24 * time.Hour))
	_, err = f.a.Authenticate([]*x509.Certificate{c})
	wantKind(t, err, KindUnauthenticated, "certificate expired")
	wantCode(t, f.a.Check(op), KindForbidden, policy.CodeCertExpired)
}

// TestOperatorIssue: the local operator (`estca issue`) takes its names
// from the CSR on an operator profile, syntax-checked, and may not use
// device profiles' bound names it has no identity for.
func TestOperatorIssue(t *testing.T) {
	f := newFixture(t)
	res := f.enroll(t, Request{CSR: pkitest.CSR(t, pkitest.Key(t), pkix.Name{CommonName: "bench-1"}, hmnExt(t, "B-1", "bench-1.example.net")),
		Profile: "ops", Requester: operator()})
	if res.Certificate.Subject.CommonName != "bench-1" || !slices.Equal(res.Certificate.DNSNames, []string{"bench-1.example.net"}) {
		t.Fatalf("operator certificate %s %v", res.Certificate.Subject, res.Certificate.DNSNames)
	}
	if c, err := f.db.Certificate(res.Serial); err != nil || c.Identity != policy.KindOperator {
		t.Fatalf("stored %+v, %v", c, err)
	}
}

// TestSetPolicy: a reload replaces profiles and anchors for requests of
// sessions opened before; an invalid one keeps the policy in force.
func TestSetPolicy(t *testing.T) {
	f := newFixture(t)
	idev := f.requester(t, f.demo.Valid)
	// A second manufacturer, unknown at first.
	other := pkitest.NewCA(t, "Other Manufacturer")
	if _, err := f.a.Authenticate([]*x509.Certificate{other.Issue(t, pkitest.ClientAuth("other-1")).Cert}); KindOf(err) != KindUnauthenticated {
		t.Fatalf("unknown manufacturer: %v", err)
	}
	o := f.opts.Policy
	o.Requesters.Anchors = append([]policy.Anchor{{Name: "other", Roots: []*x509.Certificate{other.Cert}}}, o.Requesters.Anchors...)
	o.Profiles = append(slices.Clone(o.Profiles), policy.Profile{Name: "new", Validity: time.Hour})
	if err := f.a.SetPolicy(o); err != nil {
		t.Fatal(err)
	}
	dev := other.Issue(t, pkitest.ClientAuth("other-1"))
	who, err := f.a.Authenticate([]*x509.Certificate{dev.Cert})
	if err != nil || who.Anchor != "other" {
		t.Fatalf("after reload: %+v, %v", who, err)
	}
	f.enroll(t, Request{CSR: pkitest.RawCSR(t, pkitest.Key(t), dev.Cert.RawSubject), Profile: "new", Requester: who})

	// An invalid policy changes nothing.
	bad := o
	bad.Profiles = append(slices.Clone(o.Profiles), policy.Profile{Name: "broken"})
	if err := f.a.SetPolicy(bad); err == nil {
		t.Fatal("invalid policy accepted")
	}
	if !f.a.HasProfile("new") || f.a.HasProfile("broken") {
		t.Fatal("the invalid policy replaced the one in force")
	}
	// Removing the demo manufacturer: its open sessions fail the re-check
	// and their requests are refused.
	o.Requesters.Anchors = o.Requesters.Anchors[:1]
	if err := f.a.SetPolicy(o); err != nil {
		t.Fatal(err)
	}
	wantCode(t, f.a.Check(idev), KindForbidden, policy.CodeAnchorUnknown)
	_, err = f.a.Enroll(context.Background(), Request{CSR: f.csr(t, f.demo.Valid), Requester: idev})
	wantCode(t, err, KindForbidden, policy.CodeAnchorUnknown)
}

// TestCRL: revocations with their reasons in a CRL signed by the issuing
// key (RFC 5280 §5: cRLNumber, authorityKeyIdentifier, nextUpdate, reason
// codes) that OpenSSL verifies; numbers only grow, also across restarts;
// reasons a leaf cannot have are refused.
func TestCRL(t *testing.T) {
	f := newFixture(t)
	if _, err := f.a.CRL(); KindOf(err) != KindUnavailable {
		t.Fatalf("CRL before the first: %v", err)
	}
	idev := f.requester(t, f.demo.Valid)
	a := f.enroll(t, Request{CSR: f.csr(t, f.demo.Valid), Requester: idev})
	b := f.enroll(t, Request{CSR: f.csr(t, f.demo.Valid), Requester: idev})
	for _, code := range []int{2, 6, 7, 8, 10, 11, -1} {
		if _, err := f.a.Revoke(a.Serial, code, "test"); KindOf(err) != KindBadRequest {
			t.Errorf("reason %d: %v", code, err)
		}
	}
	if _, err := f.a.Revoke("abcdef", 1, "test"); !errors.Is(err, store.ErrNotFound) {
		t.Fatalf("unknown serial: %v", err)
	}
	c1, err := f.a.Revoke(a.Serial, 1, "test")
	if err != nil {
		t.Fatal(err)
	}
	if _, err := f.a.Revoke(a.Serial, 1, "test"); !errors.Is(err, store.ErrAlreadyRevoked) {
		t.Fatalf("second revocation: %v", err)
	}
	if rec := f.lastAudit(t); rec.Event != store.EventHead {
		recs, _ := f.db.AuditRecords(store.AuditFilter{Serial: a.Serial})
		if last := recs[len(recs)-1]; last.Event != store.EventRevoked || !strings.Contains(last.Reason, "keyCompromise") {
			t.Fatalf("revocation record %+v", last)
		}
	}
	f.at(f.now.Add(time.Second))
	c2, err := f.a.Revoke(b.Serial, 0, "test")
	if err != nil {
		t.Fatal(err)
	}
	if c2.Number.Cmp(c1.Number) <= 0 || c2.Revoked != 2 {
		t.Fatalf("CRL numbers %v then %v, %d entries", c1.Number, c2.Number, c2.Revoked)
	}
	cur, err := f.a.CRL()
	if err != nil || cur != c2 {
		t.Fatalf("CRL = %v, %v", cur, err)
	}
	crl, err := x509.ParseRevocationList(c2.DER)
	if err != nil {
		t.Fatal(err)
	}
	if err := crl.CheckSignatureFrom(f.h.Issuing); err != nil {
		t.Fatal(err)
	}
	if string(crl.AuthorityKeyId) != string(f.h.Issuing.SubjectKeyId) || crl.Number.Cmp(c2.Number) != 0 ||
		!crl.NextUpdate.Equal(crl.ThisUpdate.Add(DefaultCRLValidity)) || len(crl.RevokedCertificateEntries) != 2 {
		t.Fatalf("CRL %+v", crl)
	}
	reasons := map[string]int{}
	for _, e := range crl.RevokedCertificateEntries {
		reasons[e.SerialNumber.Text(16)] = e.ReasonCode
	}
	if reasons[a.Serial] != 1 || reasons[b.Serial] != 0 {
		t.Fatalf("entries %v", reasons)
	}
	dir := t.TempDir()
	crlFile := filepath.Join(dir, "crl.der")
	writeFile(t, crlFile, c2.DER)
	chain := pkitest.WritePEM(t, dir, "chain.pem", f.h.Issuing, f.h.Root)
	out := pkitest.OpenSSL(t, "crl", "-inform", "DER", "-in", crlFile, "-CAfile", chain, "-noout", "-text", "-verify")
	for _, want := range []string{"verify OK", "Key Compromise", "CRL Number", "Next Update", strings.ToUpper(a.Serial[:8])} {
		if !strings.Contains(strings.ToUpper(out), strings.ToUpper(want)) {
			t.Errorf("openssl crl lacks %q:\n%s", want, out)
		}
	}

	// A new authority (a restart) continues after the number it is given,
	// even with its clock set back.
	o := f.opts
	o.CRL.LastNumber = new(big.Int).Add(c2.Number, big.NewInt(1000))
	back := f.now.Add(-24 * time.Hour)
	o.Now = func() time.Time { return back }
	a2, err := New(o)
	if err != nil {
		t.Fatal(err)
	}
	c3, err := a2.PublishCRL()
	if err != nil || c3.Number.Cmp(o.CRL.LastNumber) <= 0 {
		t.Fatalf("after restart: %v, %v", c3, err)
	}
}

func TestRevocationReasons(t *testing.T) {
	t.Parallel()
	for _, tc := range []struct {
		in   string
		code int
		ok   bool
	}{
		{"keyCompromise", 1, true}, {"KEYCOMPROMISE", 1, true}, {"1", 1, true}, {"0", 0, true},
		{"superseded", 4, true}, {"cessationOfOperation", 5, true}, {"affiliationChanged", 3, true},
		{"privilegeWithdrawn", 9, true}, {"unspecified", 0, true},
		{"cACompromise", 2, false}, {"2", 2, false}, {"certificateHold", 6, false}, {"removeFromCRL", 8, false},
		{"aACompromise", 10, false}, {"7", 7, false}, {"bogus", -1, false}, {"", -1, false},
	} {
		code, err := ParseRevocationReason(tc.in)
		if code != tc.code || (err == nil) != tc.ok {
			t.Errorf("ParseRevocationReason(%q) = %d, %v", tc.in, code, err)
		}
	}
	if RevocationReasonName(1) != "keyCompromise" || RevocationReasonName(77) != "reason(77)" {
		t.Error("RevocationReasonName")
	}
	// The list is a copy: an importer that changes it changes nothing here.
	leaf := LeafRevocationReasons()
	if !slices.Equal(leaf, []int{0, 1, 3, 4, 5, 9}) {
		t.Fatalf("LeafRevocationReasons = %v", leaf)
	}
	leaf[0] = 2 // cACompromise
	if CheckRevocationReason(2) == nil || CheckRevocationReason(0) != nil || LeafRevocationReasons()[0] != 0 {
		t.Error("changing the returned list changed what is accepted")
	}
}

func writeFile(t testing.TB, path string, b []byte) {
	t.Helper()
	if err := os.WriteFile(path, b, 0o600); err != nil {
		t.Fatal(err)
	}
}
