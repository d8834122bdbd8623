package ca

import (
	"bytes"
	"context"
	"crypto/sha256"
	"crypto/x509"
	"crypto/x509/pkix"
	"encoding/hex"
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/estca/estca/policy"
	"github.com/estca/estca/policy/pkitest"
	"github.com/estca/estca/store"
)

func TestEnrollIssuesVerifiableCertificate(t *testing.T) {
	f := newFixture(t)
	req := f.requester(t, f.demo.Valid)
	if req.Kind != KindIDevID || req.Anchor != "demo" || req.ExpiredAccepted {
		t.Fatalf("requester = %+v", req)
	}
	key := pkitest.Key(t)
	leafSubject := pkitest.PEMCert(t, f.demo.Valid.Cert).RawSubject
	csr := pkitest.RawCSR(t, key, leafSubject, hmnExt(t, "DEMO-0001", "dev-1.example.com"))
	res := f.enroll(t, Request{CSR: csr, Requester: req})
	c := res.Certificate
	if res.Existing || res.Serial != c.SerialNumber.Text(16) {
		t.Fatalf("result: existing %v serial %s", res.Existing, res.Serial)
	}
	if len(res.Chain) != 2 || !res.Chain[0].Equal(f.h.Issuing) || !res.Chain[1].Equal(f.h.Root) {
		t.Fatal("chain is not issuing, root")
	}

	dir := t.TempDir()
	root := pkitest.WritePEM(t, dir, "root.pem", f.h.Root)
	issuing := pkitest.WritePEM(t, dir, "issuing.pem", f.h.Issuing)
	leaf := pkitest.WritePEM(t, dir, "leaf.pem", c)
	if out := pkitest.OpenSSL(t, "verify", "-CAfile", root, "-untrusted", issuing, "-purpose", "sslclient", leaf); !strings.Contains(out, "leaf.pem: OK") {
		t.Fatalf("openssl verify: %s", out)
	}
	text := pkitest.OpenSSL(t, "x509", "-in", leaf, "-noout", "-text")
	for _, want := range []string{"DNS:dev-1.example.com", "CA:FALSE", "TLS Web Client Authentication", "Digital Signature"} {
		if !strings.Contains(text, want) {
			t.Errorf("openssl x509 -text lacks %q:\n%s", want, text)
		}
	}

	// hardwareModuleName survives (Go's x509 would have dropped it).
	var san []byte
	for _, e := range c.Extensions {
		if e.Id.Equal(policy.OIDSubjectAltName) {
			san = e.Value
		}
	}
	h, err := policy.HardwareModuleNames(san)
	if err != nil || len(h) != 1 || !h[0].Type.Equal(DemoHardwareType) || string(h[0].SerialNum) != "DEMO-0001" {
		t.Fatalf("hardwareModuleName = %v, %v", h, err)
	}
	if !slices.Equal(c.DNSNames, []string{"dev-1.example.com"}) {
		t.Errorf("DNSNames = %v", c.DNSNames)
	}

	// Template details: the subject is the device's identity.
	parsed, _ := x509.ParseCertificateRequest(csr)
	if !bytes.Equal(c.RawSubject, leafSubject) || c.Subject.SerialNumber != "DEMO-0001" {
		t.Errorf("subject %s is not the identity's", c.Subject)
	}
	if c.KeyUsage != x509.KeyUsageDigitalSignature || !slices.Equal(c.ExtKeyUsage, []x509.ExtKeyUsage{x509.ExtKeyUsageClientAuth}) {
		t.Errorf("key usage %v %v", c.KeyUsage, c.ExtKeyUsage)
	}
	ski, _ := subjectKeyID(parsed.RawSubjectPublicKeyInfo)
	if !bytes.Equal(c.SubjectKeyId, ski) || len(ski) != 20 {
		t.Errorf("SKI %x, want RFC 7093 %x", c.SubjectKeyId, ski)
	}
	if !bytes.Equal(c.AuthorityKeyId, f.h.Issuing.SubjectKeyId) {
		t.Error("AKI is not the issuing SKI")
	}
	if c.IsCA || !c.BasicConstraintsValid {
		t.Error("basicConstraints not CA:false")
	}
	if !c.NotBefore.Equal(f.now.Add(-time.Minute)) || !c.NotAfter.Equal(f.now.Add(profDevice.Validity)) {
		t.Errorf("validity %v – %v", c.NotBefore, c.NotAfter)
	}
	if !samePublicKey(key.Public(), c.PublicKey) {
		t.Error("public key not the CSR's")
	}

	// Durable in the store with its audit record.
	sc, err := f.db.Certificate(res.Serial)
	if err != nil || !bytes.Equal(sc.DER, c.Raw) {
		t.Fatalf("store certificate: %v", err)
	}
	sum := sha256.Sum256(csr)
	if sc.CSRDigest != hex.EncodeToString(sum[:]) || sc.Requester != req.Identity.Fingerprint || sc.Profile != "device" ||
		sc.Identity != "idevid/demo/sn:DEMO-0001" {
		t.Errorf("stored metadata %+v", sc)
	}
	rec := f.lastAudit(t)
	if rec.Event != store.EventIssued || rec.Serial != res.Serial || rec.Verdict != VerdictAccepted ||
		rec.Requester.Fingerprint != req.Identity.Fingerprint || rec.Requester.Anchor != "demo" ||
		rec.Requester.Kind != "idevid" || rec.CSRDigest != sc.CSRDigest || len(rec.Flags) != 0 || rec.Reason != "sen" {
		t.Errorf("audit record %+v", rec)
	}
}

func TestNotAfterCappedAtIssuer(t *testing.T) {
	f := newFixture(t)
	res := f.enroll(t, Request{CSR: f.csr(t, f.demo.Valid), Profile: "long", Requester: f.requester(t, f.demo.Valid)})
	if !res.Certificate.NotAfter.Equal(f.h.Issuing.NotAfter) {
		t.Fatalf("notAfter %v, issuing %v", res.Certificate.NotAfter, f.h.Issuing.NotAfter)
	}
}

func TestSerialsUniqueOver1000Issuances(t *testing.T) {
	f := newFixture(t)
	req := f.requester(t, f.demo.Valid)
	key := pkitest.Key(t)
	const n, workers = 1000, 16
	csrs := make([][]byte, n)
	for i := range csrs {
		// One key, one subject: the ECDSA signatures make every CSR distinct.
		csrs[i] = pkitest.RawCSR(t, key, req.Leaf.RawSubject)
	}
	serials := make([]string, n)
	var wg sync.WaitGroup
	errs := make(chan error, n)
	for w := range workers {
		wg.Go(func() {
			for i := w; i < n; i += workers {
				res, err := f.a.Enroll(context.Background(), Request{CSR: csrs[i], Requester: req})
				if err != nil {
					errs <- err
					return
				}
				s := res.Certificate.SerialNumber
				if s.Sign() <= 0 || s.BitLen() < 64 || s.BitLen() > 127 {
					errs <- fmt.Errorf("serial %s: bit length %d", s.Text(16), s.BitLen())
				}
				serials[i] = res.Serial
			}
		})
	}
	wg.Wait()
	close(errs)
	for err := range errs {
		t.Fatal(err)
	}
	seen := map[string]bool{}
	for _, s := range serials {
		if seen[s] {
			t.Fatalf("duplicate serial %s", s)
		}
		seen[s] = true
	}
	if got := f.count(t); got != n {
		t.Fatalf("store holds %d certificates, want %d", got, n)
	}
}

func TestIdenticalCSRIssuedOnce(t *testing.T) {
	f := newFixture(t)
	req := f.requester(t, f.demo.Valid)
	// An empty subject: the certificate gets each requester's identity.
	csr := pkitest.CSR(t, pkitest.Key(t), pkix.Name{})
	first := f.enroll(t, Request{CSR: csr, Requester: req})
	second := f.enroll(t, Request{CSR: csr, Requester: req})
	if first.Existing || !second.Existing || first.Serial != second.Serial || !first.Certificate.Equal(second.Certificate) {
		t.Fatalf("first %s existing=%v, second %s existing=%v", first.Serial, first.Existing, second.Serial, second.Existing)
	}
	if n := f.count(t); n != 1 {
		t.Fatalf("store holds %d certificates", n)
	}
	// Another requester sending the same CSR is a different request.
	other := f.requester(t, f.demo.Expired)
	third := f.enroll(t, Request{CSR: csr, Requester: other})
	if third.Existing || third.Serial == first.Serial || third.Certificate.Subject.SerialNumber != "DEMO-0002" {
		t.Fatal("same CSR from another requester was deduplicated, or not bound to it")
	}
	// A fresh authority over the same store still finds it.
	a2, err := New(f.opts)
	if err != nil {
		t.Fatal(err)
	}
	again, err := a2.Enroll(context.Background(), Request{CSR: csr, Requester: req})
	if err != nil || !again.Existing || again.Serial != first.Serial {
		t.Fatalf("after restart: %+v, %v", again, err)
	}
	if n := f.count(t); n != 2 {
		t.Fatalf("store holds %d certificates, want 2", n)
	}
}

func TestConcurrentIdenticalCSRIssuedOnce(t *testing.T) {
	f := newFixture(t)
	req := f.requester(t, f.demo.Valid)
	for round := range 3 {
		csr := f.csr(t, f.demo.Valid)
		const n = 16
		results := make([]*Result, n)
		errs := make([]error, n)
		start := make(chan struct{})
		var wg sync.WaitGroup
		for i := range n {
			wg.Go(func() {
				<-start
				results[i], errs[i] = f.a.Enroll(context.Background(), Request{CSR: csr, Requester: req})
			})
		}
		close(start)
		wg.Wait()
		fresh := 0
		for i := range n {
			if errs[i] != nil {
				t.Fatalf("Enroll %d: %v", i, errs[i])
			}
			if results[i].Serial != results[0].Serial {
				t.Fatalf("two serials for one CSR: %s, %s", results[i].Serial, results[0].Serial)
			}
			if !results[i].Existing {
				fresh++
			}
		}
		if fresh != 1 {
			t.Fatalf("%d results claim a fresh issuance, want 1", fresh)
		}
		if got := f.count(t); got != round+1 {
			t.Fatalf("store holds %d certificates, want %d", got, round+1)
		}
	}
}

// TestEnrollRejections: the attacks of issue 8, refused by the policy
// engine with the reason's class and code, and audited.
func TestEnrollRejections(t *testing.T) {
	f := newFixture(t)
	idev := f.requester(t, f.demo.Valid)
	key := pkitest.Key(t)
	good := f.csr(t, f.demo.Valid)
	badSig := bytes.Clone(good)
	badSig[len(badSig)-5] ^= 0xff // inside the ECDSA signature
	p224 := pkitest.NewKey(t, "p224")
	longCN := strings.Repeat("A", 4000) + "\x00\x1b[2J"
	tests := []struct {
		name  string
		req   Request
		kind  ErrorKind
		code  policy.Code
		audit bool
	}{
		{"bad signature", Request{CSR: badSig, Requester: idev}, KindBadRequest, policy.CodeCSRSignatureInvalid, true},
		{"not DER", Request{CSR: []byte("hello"), Requester: idev}, KindBadRequest, policy.CodeCSRMalformed, true},
		{"truncated", Request{CSR: good[:len(good)-10], Requester: idev}, KindBadRequest, policy.CodeCSRMalformed, true},
		{"CN=admin", Request{CSR: pkitest.CSR(t, key, pkix.Name{CommonName: "admin"}), Requester: idev}, KindForbidden, policy.CodeSubjectNotBound, true},
		{"foreign serialNumber", Request{CSR: pkitest.CSR(t, key, pkix.Name{SerialNumber: "DEMO-0002"}), Requester: idev}, KindForbidden, policy.CodeSubjectNotBound, true},
		{"foreign hardwareModuleName", Request{CSR: f.csr(t, f.demo.Valid, hmnExt(t, "DEMO-0002")), Requester: idev}, KindForbidden, policy.CodeHardwareNameNotBound, true},
		{"DNS name on a profile without", Request{CSR: f.csr(t, f.demo.Valid, hmnExt(t, "DEMO-0001", "dev-1.example.com")), Profile: "plain", Requester: idev}, KindBadRequest, policy.CodeSANTypeNotAllowed, true},
		{"DNS name outside the pattern", Request{CSR: f.csr(t, f.demo.Valid, hmnExt(t, "DEMO-0001", "evil.example.org")), Requester: idev}, KindBadRequest, policy.CodeSANNotAllowed, true},
		{"server's name", Request{CSR: pkitest.CSR(t, key, pkix.Name{CommonName: "est"}, hmnExt(t, "X", "est.example")), Profile: "ops", Requester: operator()}, KindForbidden, policy.CodeNameReserved, true},
		{"P-224 key", Request{CSR: pkitest.RawCSR(t, p224, idev.Leaf.RawSubject), Requester: idev}, KindBadRequest, policy.CodeKeyWeak, true},
		{"4000-byte CN with NUL and escapes", Request{CSR: pkitest.CSR(t, key, pkix.Name{CommonName: longCN}), Profile: "ops", Requester: operator()}, KindBadRequest, policy.CodeSubjectCharacters, true},
		{"renew with IDevID", Request{CSR: good, Requester: idev, Operation: policy.OpSren}, KindForbidden, policy.CodeRenewalNeedsOperational, true},
		{"operator profile", Request{CSR: good, Profile: "ops", Requester: idev}, KindForbidden, policy.CodeRequesterNotAllowed, true},
		{"unknown profile", Request{CSR: good, Profile: "nope", Requester: idev}, KindNotFound, policy.CodeProfileUnknown, true},
		{"unauthenticated", Request{CSR: good}, KindUnauthenticated, 0, false},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			before, _ := f.db.AuditRecords(store.AuditFilter{})
			_, err := f.a.Enroll(context.Background(), tc.req)
			if tc.code != 0 {
				wantCode(t, err, tc.kind, tc.code)
			} else {
				wantKind(t, err, tc.kind, "")
			}
			after, _ := f.db.AuditRecords(store.AuditFilter{})
			if !tc.audit {
				if len(after) != len(before) || Audited(err) {
					t.Fatal("audited a request that never reached a decision")
				}
				return
			}
			rec := after[len(after)-1]
			if len(after) != len(before)+1 || rec.Event != store.EventDenied || !strings.Contains(rec.Reason, tc.code.String()) ||
				rec.Verdict != VerdictRejected || rec.Requester.Fingerprint != tc.req.Requester.Identity.Fingerprint || !Audited(err) {
				t.Fatalf("denial not audited: %+v", rec)
			}
			if strings.ContainsAny(rec.Reason, "\x00\x1b") || len(rec.Reason) > 1024 {
				t.Fatalf("audit reason carries raw request bytes: %q", rec.Reason)
			}
		})
	}
	if n := f.count(t); n != 0 {
		t.Fatalf("rejections issued %d certificates", n)
	}
}

func TestRenew(t *testing.T) {
	f := newFixture(t)
	idev := f.requester(t, f.demo.Valid)
	key := pkitest.Key(t)
	san := hmnExt(t, "DEMO-0001", "dev-1.example.com")
	first := f.enroll(t, Request{CSR: f.csr(t, f.demo.Valid, san), Requester: idev})
	curSAN := pkix.Extension{Id: policy.OIDSubjectAltName}
	for _, x := range first.Certificate.Extensions {
		if x.Id.Equal(policy.OIDSubjectAltName) {
			curSAN.Value = x.Value
		}
	}
	subject := first.Certificate.RawSubject

	op, err := f.a.Authenticate([]*x509.Certificate{first.Certificate})
	if err != nil || op.Kind != KindOperational || op.Identity.Kind != "operational" || op.Identity.IDevIDSerial != "" {
		t.Fatalf("Authenticate operational: %+v, %v", op, err)
	}
	// Rekey with identical subject and SAN.
	renewed := f.enroll(t, Request{CSR: pkitest.RawCSR(t, key, subject, curSAN), Requester: op, Operation: policy.OpSren})
	if renewed.Serial == first.Serial || !bytes.Equal(renewed.Certificate.RawSubject, subject) {
		t.Fatal("renewal did not issue a new certificate with the same subject")
	}
	if rec := f.lastAudit(t); !slices.Contains(rec.Flags, "rekey") || rec.Reason != "sren" {
		t.Errorf("renewal audit record %+v", rec)
	}
	// The same key again: renew, flagged so.
	op2, err := f.a.Authenticate([]*x509.Certificate{renewed.Certificate})
	if err != nil {
		t.Fatal(err)
	}
	f.enroll(t, Request{CSR: pkitest.RawCSR(t, key, subject, curSAN), Requester: op2, Operation: policy.OpSren})
	if rec := f.lastAudit(t); !slices.Contains(rec.Flags, "renew") || !slices.Contains(rec.Flags, "key-reused") {
		t.Errorf("renew audit flags %v", rec.Flags)
	}
	// Another subject or SAN: refused (RFC 7030 §4.2.2), and the identity
	// binding says so first.
	_, err = f.a.Enroll(context.Background(), Request{
		CSR: pkitest.CSR(t, key, pkix.Name{CommonName: "dev-2"}, curSAN), Requester: op, Operation: policy.OpSren})
	wantCode(t, err, KindForbidden, policy.CodeSubjectNotBound)
	if rec := f.lastAudit(t); !strings.Contains(rec.Reason, "renewal-name-changed") {
		t.Errorf("audit reason %q", rec.Reason)
	}
	_, err = f.a.Enroll(context.Background(), Request{
		CSR: pkitest.RawCSR(t, key, subject, hmnExt(t, "DEMO-0001")), Requester: op, Operation: policy.OpSren})
	wantCode(t, err, KindBadRequest, policy.CodeRenewalNameChanged)
	// /sen with an operational certificate is a renewal of its identity
	// too: not a free enrollment.
	_, err = f.a.Enroll(context.Background(), Request{CSR: pkitest.CSR(t, key, pkix.Name{CommonName: "dev-9"}), Requester: op})
	wantCode(t, err, KindForbidden, policy.CodeSubjectNotBound)
	f.enroll(t, Request{CSR: pkitest.RawCSR(t, pkitest.Key(t), subject, curSAN), Requester: op})
	// An IDevID re-sending a CSR it enrolled with to /sren is refused.
	csr := f.csr(t, f.demo.Valid)
	f.enroll(t, Request{CSR: csr, Requester: idev})
	_, err = f.a.Enroll(context.Background(), Request{CSR: csr, Requester: idev, Operation: policy.OpSren})
	wantCode(t, err, KindForbidden, policy.CodeRenewalNeedsOperational)
}

func TestExpiredIDevIDFlagged(t *testing.T) {
	f := newFixture(t)
	req := f.requester(t, f.demo.Expired)
	if !req.ExpiredAccepted || req.Identity.IDevIDSerial == "" {
		t.Fatalf("requester %+v", req)
	}
	f.enroll(t, Request{CSR: f.csr(t, f.demo.Expired), Requester: req})
	if rec := f.lastAudit(t); !slices.Contains(rec.Flags, FlagExpiredIDevID) {
		t.Fatalf("audit flags %v", rec.Flags)
	}
}

func TestEnrollCancelled(t *testing.T) {
	f := newFixture(t)
	ctx, cancel := context.WithCancel(context.Background())
	cancel()
	_, err := f.a.Enroll(ctx, Request{CSR: f.csr(t, f.demo.Valid), Requester: f.requester(t, f.demo.Valid)})
	wantKind(t, err, KindUnavailable, "")
	if !errors.Is(err, context.Canceled) {
		t.Fatalf("error %v does not wrap context.Canceled", err)
	}
}

// TestResendAfterRevocationOrProfileChange: a re-sent CSR only gets its
// earlier certificate while that certificate can still serve.
func TestResendAfterRevocationOrProfileChange(t *testing.T) {
	f := newFixture(t)
	req := f.requester(t, f.demo.Valid)
	csr := f.csr(t, f.demo.Valid)
	first := f.enroll(t, Request{CSR: csr, Requester: req})

	_, err := f.a.Enroll(context.Background(), Request{CSR: csr, Profile: "plain", Requester: req})
	wantKind(t, err, KindBadRequest, "CSR already enrolled under another profile")

	if err := f.db.Revoke(first.Serial, 1, f.now, store.AuditRecord{Event: store.EventRevoked, Serial: first.Serial}); err != nil {
		t.Fatal(err)
	}
	_, err = f.a.Enroll(context.Background(), Request{CSR: csr, Requester: req})
	wantKind(t, err, KindForbidden, "CSR already used for a revoked certificate")
	if rec := f.lastAudit(t); rec.Event != store.EventDenied {
		t.Fatalf("refusal not audited: %+v", rec)
	}
	if n := f.count(t); n != 1 {
		t.Fatalf("store holds %d certificates, want 1", n)
	}
}

// TestExpiredIssuingCARefuses: an expired issuing CA issues nothing (its
// certificates would end before they start).
func TestExpiredIssuingCARefuses(t *testing.T) {
	f := newFixture(t)
	opts := f.opts
	late := f.h.Issuing.NotAfter.Add(time.Minute)
	opts.Now = func() time.Time { return late }
	a, err := New(opts)
	if err != nil {
		t.Fatal(err)
	}
	_, err = a.Enroll(context.Background(), Request{CSR: f.csr(t, f.demo.Valid), Requester: f.requester(t, f.demo.Valid)})
	wantKind(t, err, KindUnavailable, "issuing CA expired")
	if n := f.count(t); n != 0 {
		t.Fatalf("store holds %d certificates, want 0", n)
	}
}

// TestStoreUnavailable: when the store cannot write (here: its file was
// replaced under it, which makes every write fail with
// store.ErrUnavailable), Enroll and RecordRejection answer KindUnavailable
// with the Max-Age of StoreRetry, never KindInternal.
func TestStoreUnavailable(t *testing.T) {
	f := newFixture(t)
	req := f.requester(t, f.demo.Valid)
	other := filepath.Join(t.TempDir(), "other.db")
	if err := f.db.BackupFile(other); err != nil {
		t.Fatal(err)
	}
	if err := os.Rename(other, f.db.Path()); err != nil {
		t.Fatal(err)
	}
	csr := f.csr(t, f.demo.Valid)
	_, err := f.a.Enroll(context.Background(), Request{CSR: csr, Requester: req})
	var e *Error
	if !errors.As(err, &e) || e.Kind != KindUnavailable || e.MaxAge != DefaultStoreRetry || !errors.Is(err, store.ErrUnavailable) {
		t.Fatalf("Enroll with an unavailable store: %v", err)
	}
	bad := f.csr(t, f.demo.Valid)
	bad[len(bad)-1] ^= 1 // a denial needs an audit record too
	if _, err := f.a.Enroll(context.Background(), Request{CSR: bad, Requester: req}); KindOf(err) != KindUnavailable || Audited(err) {
		t.Fatalf("denial with an unavailable store: %v", err)
	}
	if err := f.a.RecordRejection(Rejection{Requester: &req, Method: "POST", Resource: "sen", Code: "4.15", Reason: "x"}); KindOf(err) != KindUnavailable {
		t.Fatalf("RecordRejection with an unavailable store: %v", err)
	}
}
