package policy

import (
	"bytes"
	"crypto/x509"
	"crypto/x509/pkix"
	"testing"

	"github.com/estca/estca/policy/pkitest"
)

// FuzzEvaluate feeds arbitrary CSR bytes and requester chains through the
// engine: ParseCSR, Verify, Evaluate (also on chains Verify refused, as if
// a caller passed them, and on CSRs whose signature was not checked),
// CSRAttrs and Check. It must never panic, and what it issues must be
// well-formed and bound to the requester.
func FuzzEvaluate(f *testing.F) {
	w := getWorld(f)
	chainDER := func(cs ...*pkitest.Cert) []byte {
		var b []byte
		for _, c := range cs {
			b = append(b, c.Cert.Raw...)
		}
		return b
	}
	dev := chainDER(w.dev, w.acmeSub)
	op := chainDER(w.op)
	opSAN, _ := extValue(w.op.Cert.Extensions, OIDSubjectAltName)
	csrs := [][]byte{
		pkitest.Request{Key: pkKey(f, "p256"), Subject: pkDevSubject("DEMO-0001")}.DER(f),
		pkitest.Request{Key: pkKey(f, "p256"), Subject: pkitest.Name(pkitest.CN("admin"))}.DER(f),
		pkitest.Request{Key: pkKey(f, "p256"), Subject: pkitest.Name(pkitest.SerialNumber("DEMO-0001")),
			Extensions: []pkix.Extension{pkitest.SANExt(pkHMNSAN(f, "DEMO-0001", pkitest.DNS("dev-1.example.net"), pkitest.IP("192.0.2.3")))}}.DER(f),
		pkitest.Request{Key: pkKey(f, "p256"), Subject: w.op.Cert.RawSubject, Extensions: []pkix.Extension{pkitest.SANExt(opSAN)}}.DER(f),
		pkitest.Request{Key: pkKey(f, "p256"), Subject: pkitest.Name(pkitest.CN("dev-DEMO-0001")), Extensions: []pkix.Extension{
			pkitest.KeyUsageExt(f, x509.KeyUsageDigitalSignature), pkitest.BasicConstraintsExt(false), pkitest.Ext(oidVendorExt, false, []byte{5, 0})}}.DER(f),
		pkitest.Request{Key: pkKey(f, "p256"), Subject: pkDevSubject("DEMO-0001"), Version: 1, Algorithm: x509.ECDSAWithSHA1}.DER(f),
	}
	for i, c := range csrs {
		f.Add(c, dev, uint8(OpSen), uint8(i))
		f.Add(c, op, uint8(OpSren), uint8(i+1))
		f.Add(c, []byte{}, uint8(OpSkg), uint8(i+2))
	}
	profiles := w.e.Profiles()
	f.Fuzz(func(t *testing.T, csrDER, chain []byte, opByte, sel uint8) {
		op := Operation(opByte%4 + 1)
		label := profiles[int(sel)%len(profiles)]
		certs, err := x509.ParseCertificates(chain)
		if err != nil {
			certs = nil
		}
		var requesters []Requester
		if len(certs) == 0 {
			requesters = append(requesters, Requester{Verified: Verified{Kind: KindOperator}})
		} else {
			if v, err := w.e.Verify(certs, pkNow); err == nil {
				requesters = append(requesters, Requester{Verified: v})
			}
			// As if the caller skipped Verify: Evaluate must still not panic
			// and must still bind to whatever the leaf says.
			requesters = append(requesters,
				Requester{Verified: Verified{Kind: KindIDevID, Anchor: "acme", Chain: certs}},
				Requester{Verified: Verified{Kind: KindOperational, Chain: certs}, IssuedProfile: label})
		}
		var parsed []*x509.CertificateRequest
		if csr, err := ParseCSR(csrDER, op); err == nil {
			parsed = append(parsed, csr)
		}
		if csr, err := x509.ParseCertificateRequest(csrDER); err == nil {
			parsed = append(parsed, csr)
		}
		for _, r := range requesters {
			if _, err := w.e.CSRAttrs(label, r); err != nil {
				t.Fatalf("CSRAttrs: %v", err)
			}
			for _, csr := range parsed {
				d := w.e.Evaluate(Request{Requester: r, CSR: csr, Operation: op, Profile: label, Time: pkNow,
					Counters: Counters{Issued: int(sel % 3), Pending: int(sel % 2)}, EncryptedKey: sel&8 != 0})
				checkFuzzDecision(t, r, &d)
			}
		}
		rep := w.e.Check(CheckInput{CSR: csrDER, Chain: certs, Label: label, Operation: op, Time: pkNow})
		_ = rep.String()
	})
}

func checkFuzzDecision(t *testing.T, r Requester, d *Decision) {
	t.Helper()
	if d.Action == ActionDeny {
		if len(d.Reasons) == 0 || d.Template != nil {
			t.Fatalf("deny without reasons or with a template")
		}
		return
	}
	tm := d.Template
	if tm == nil {
		t.Fatalf("%s without template", d.Action)
	}
	var buf [maxNameAttrs]nameAttr
	attrs, code, detail := parseName(tm.Subject, buf[:0])
	if code != 0 {
		t.Fatalf("issued subject does not parse: %s %s", code, detail)
	}
	if tm.SubjectAltName != nil {
		var ebuf [16]sanEntry
		if _, code, detail := parseSAN(tm.SubjectAltName, ebuf[:0]); code != 0 {
			t.Fatalf("issued SAN does not parse: %s %s", code, detail)
		}
	}
	if len(attrs) == 0 && tm.SubjectAltName == nil {
		t.Fatal("issued a certificate without any name")
	}
	for i := range attrs {
		if attrs[i].typ == nil {
			t.Fatalf("issued an unknown subject attribute")
		}
		checkValue(attrs[i].typ, attrs[i].tag, attrs[i].val, func(c Code, d string) {
			t.Fatalf("issued subject value refused by the rules: %s %s", c, d)
		})
	}
	if r.Kind == KindOperator {
		return
	}
	leafSN := identityValue(r.Chain[0], attrSerialNumber)
	for i := range attrs {
		if attrs[i].typ == attrSerialNumber && !bytes.Equal(attrs[i].val, leafSN) {
			t.Fatalf("issued serialNumber %q to a requester with %q", attrs[i].val, leafSN)
		}
	}
}

// identityValue returns the value of attribute t in leaf's subject.
func identityValue(leaf *x509.Certificate, t *attrType) []byte {
	var buf [maxNameAttrs]nameAttr
	id := identity{}
	if attrs, code, _ := parseName(leaf.RawSubject, buf[:0]); code == 0 {
		id.attrs = attrs
	}
	if a := id.attr(t); a != nil {
		return a.val
	}
	return nil
}
