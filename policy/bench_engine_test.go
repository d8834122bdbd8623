package policy

import (
	"crypto/x509"
	"crypto/x509/pkix"
	"testing"

	"github.com/estca/estca/policy/pkitest"
)

// BenchmarkEvaluate measures one decision, as package ca makes it per
// enrollment (the CSR already parsed and its signature checked).
func BenchmarkEvaluate(b *testing.B) {
	w := getWorld(b)
	idev := w.idev(b, w.dev)
	op := w.requester(b, w.e, pkNow, w.op)
	opSAN, _ := extValue(w.op.Cert.Extensions, OIDSubjectAltName)
	cases := []struct {
		name    string
		r       Requester
		csr     *x509.CertificateRequest
		profile string
		op      Operation
		want    Action
	}{
		{"idevid-sen-default", idev, csrFor(b, pkKey(b, "p256"), pkDevSubject("DEMO-0001")), "", OpSen, ActionIssue},
		{"idevid-sen-strict-san", idev, csrFor(b, pkKey(b, "p256"), pkitest.Name(pkitest.SerialNumber("DEMO-0001"), pkitest.CN("dev-0001")),
			pkitest.SANExt(pkitest.SAN(b, pkitest.DNS("dev-0001.example.net"), pkitest.IP("192.0.2.20"), pkitest.URI("urn:dev:demo-0001")))), "strict", OpSen, ActionIssue},
		{"idevid-sen-derived", idev, csrFor(b, pkKey(b, "p256"), pkitest.Name()), "derived", OpSen, ActionIssue},
		{"operational-sren", op, csrFor(b, pkKey(b, "p256"), w.op.Cert.RawSubject, pkix.Extension{Id: OIDSubjectAltName, Value: opSAN}),
			"", OpSren, ActionIssue},
		{"idevid-manual-pending", idev, csrFor(b, pkKey(b, "p256"), pkDevSubject("DEMO-0001")), "manual", OpSen, ActionPending},
		{"idevid-deny-cn-admin", idev, csrFor(b, pkKey(b, "p256"), pkitest.Name(pkitest.CN("admin"))), "", OpSen, ActionDeny},
	}
	for _, c := range cases {
		b.Run(c.name, func(b *testing.B) {
			req := Request{Requester: c.r, CSR: c.csr, Operation: c.op, Profile: c.profile, Time: pkNow}
			if d := w.e.Evaluate(req); d.Action != c.want {
				b.Fatalf("%s: %v", d.Action, d.Reasons)
			}
			b.ReportAllocs()
			for b.Loop() {
				w.e.Evaluate(req)
			}
		})
	}
}

// BenchmarkEngineVerify measures the handshake check with the new anchor
// rules (sub-CA, CRL and deny-lists on the IDevID path).
func BenchmarkEngineVerify(b *testing.B) {
	w := getWorld(b)
	cases := []struct {
		name  string
		chain []*x509.Certificate
	}{
		{"idevid-subca-crl", []*x509.Certificate{w.dev.Cert, w.acmeSub.Cert}},
		{"idevid-expired-tolerant", []*x509.Certificate{w.boltExpired.Cert}},
		{"operational", []*x509.Certificate{w.op.Cert}},
	}
	for _, c := range cases {
		b.Run(c.name, func(b *testing.B) {
			if _, err := w.e.Verify(c.chain, pkNow); err != nil {
				b.Fatal(err)
			}
			b.ReportAllocs()
			for b.Loop() {
				if _, err := w.e.Verify(c.chain, pkNow); err != nil {
					b.Fatal(err)
				}
			}
		})
	}
}

// BenchmarkCSRAttrs measures a /att answer.
func BenchmarkCSRAttrs(b *testing.B) {
	w := getWorld(b)
	r := w.idev(b, w.dev)
	b.ReportAllocs()
	for b.Loop() {
		if _, err := w.e.CSRAttrs("derived", r); err != nil {
			b.Fatal(err)
		}
	}
}

// BenchmarkParseCSR measures parsing and the proof-of-possession check
// that the caller runs before Evaluate (for comparison: it dominates).
func BenchmarkParseCSR(b *testing.B) {
	der := pkitest.Request{Key: pkKey(b, "p256"), Subject: pkDevSubject("DEMO-0001")}.DER(b)
	b.ReportAllocs()
	for b.Loop() {
		if _, err := ParseCSR(der, OpSen); err != nil {
			b.Fatal(err)
		}
	}
}

// BenchmarkParseAndEvaluate is the whole decision package ca makes per
// enrollment: ParseCSR (DER parse, version and algorithm checks, the CSR
// signature) and Evaluate, for the demo device on the default profile.
// Compare with BenchmarkIssue in package ca (a durable issuance, through
// this decision).
func BenchmarkParseAndEvaluate(b *testing.B) {
	w := getWorld(b)
	r := w.idev(b, w.dev)
	der := pkitest.RawCSR(b, pkKey(b, "p256"), pkDevSubject("DEMO-0001"))
	b.ReportAllocs()
	for b.Loop() {
		csr, err := ParseCSR(der, OpSen)
		if err != nil {
			b.Fatal(err)
		}
		if d := w.e.Evaluate(Request{Requester: r, CSR: csr, Operation: OpSen, Time: pkNow}); d.Action != ActionIssue {
			b.Fatal(d.Reasons)
		}
	}
}
