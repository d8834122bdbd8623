package policy

import (
	"bytes"
	"crypto"
	"crypto/x509"
	"crypto/x509/pkix"
	"encoding/asn1"
	"math/big"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"

	"github.com/estca/estca/policy/pkitest"
	"golang.org/x/crypto/cryptobyte"
	cbasn1 "golang.org/x/crypto/cryptobyte/asn1"
)

// attTemplate is what a client reads from an RFC 9908 template.
type attTemplate struct {
	subject []attRDN // nil: no requirement
	keyAlg  asn1.ObjectIdentifier
	curve   asn1.ObjectIdentifier
	rsaBits int
	exts    []pkix.Extension // extensionRequest: use as given
	fillSAN bool             // extensionReqTemplate: SAN to fill in
}

type attRDN struct {
	oid asn1.ObjectIdentifier
	raw []byte // the whole SingleAttributeTemplate
	has bool   // the value is given
}

// parseAtt is a strict client-side reader of CsrAttrs (RFC 7030 §4.5.2) that
// follows the RFC 9908 template and ignores the rest, as RFC 9908 §4 tells
// clients that understand both.
func parseAtt(t *testing.T, der []byte) attTemplate {
	t.Helper()
	s := cryptobyte.String(der)
	var items cryptobyte.String
	if !s.ReadASN1(&items, cbasn1.SEQUENCE) || !s.Empty() {
		t.Fatal("CsrAttrs is not a SEQUENCE")
	}
	var tmpl attTemplate
	found := false
	for !items.Empty() {
		if items.PeekASN1Tag(cbasn1.OBJECT_IDENTIFIER) {
			var oid asn1.ObjectIdentifier
			if !items.ReadASN1ObjectIdentifier(&oid) {
				t.Fatal("bad OID")
			}
			continue
		}
		var attr, values cryptobyte.String
		var typ asn1.ObjectIdentifier
		if !items.ReadASN1(&attr, cbasn1.SEQUENCE) || !attr.ReadASN1ObjectIdentifier(&typ) ||
			!attr.ReadASN1(&values, cbasn1.SET) || !attr.Empty() {
			t.Fatal("bad Attribute")
		}
		if !typ.Equal(OIDCertificationRequestInfoTemplate) {
			continue
		}
		if found {
			t.Fatal("two templates")
		}
		found = true
		var cri, attrs cryptobyte.String
		var version int64
		if !values.ReadASN1(&cri, cbasn1.SEQUENCE) || !values.Empty() || !cri.ReadASN1Integer(&version) || version != 0 {
			t.Fatal("bad CertificationRequestInfoTemplate")
		}
		if cri.PeekASN1Tag(cbasn1.SEQUENCE) {
			var name cryptobyte.String
			cri.ReadASN1(&name, cbasn1.SEQUENCE)
			tmpl.subject = []attRDN{}
			for !name.Empty() {
				var set, sat cryptobyte.String
				if !name.ReadASN1(&set, cbasn1.SET) || !set.ReadASN1Element(&sat, cbasn1.SEQUENCE) || !set.Empty() {
					t.Fatal("bad RDN template")
				}
				r := attRDN{raw: sat}
				var body cryptobyte.String
				sat.ReadASN1(&body, cbasn1.SEQUENCE)
				if !body.ReadASN1ObjectIdentifier(&r.oid) {
					t.Fatal("bad SingleAttributeTemplate")
				}
				r.has = !body.Empty()
				tmpl.subject = append(tmpl.subject, r)
			}
		}
		if cri.PeekASN1Tag(cbasn1.Tag(0).ContextSpecific().Constructed()) {
			var spki, alg cryptobyte.String
			cri.ReadASN1(&spki, cbasn1.Tag(0).ContextSpecific().Constructed())
			if !spki.ReadASN1(&alg, cbasn1.SEQUENCE) || !alg.ReadASN1ObjectIdentifier(&tmpl.keyAlg) {
				t.Fatal("bad SubjectPublicKeyInfoTemplate")
			}
			if alg.PeekASN1Tag(cbasn1.OBJECT_IDENTIFIER) {
				alg.ReadASN1ObjectIdentifier(&tmpl.curve)
			}
			if !spki.Empty() {
				var bits asn1.BitString
				var key struct {
					N *big.Int
					E int
				}
				if !spki.ReadASN1BitString(&bits) {
					t.Fatal("bad dummy key")
				}
				if _, err := asn1.Unmarshal(bits.Bytes, &key); err != nil {
					t.Fatal(err)
				}
				tmpl.rsaBits = key.N.BitLen()
			}
		}
		if !cri.ReadASN1(&attrs, cbasn1.Tag(1).ContextSpecific().Constructed()) || !cri.Empty() {
			t.Fatal("template attributes [1] missing")
		}
		for !attrs.Empty() {
			var a, vals, exts cryptobyte.String
			var aoid asn1.ObjectIdentifier
			if !attrs.ReadASN1(&a, cbasn1.SEQUENCE) || !a.ReadASN1ObjectIdentifier(&aoid) || !a.ReadASN1(&vals, cbasn1.SET) ||
				!vals.ReadASN1(&exts, cbasn1.SEQUENCE) || !vals.Empty() {
				t.Fatal("bad template attribute")
			}
			for !exts.Empty() {
				var ext cryptobyte.String
				var id asn1.ObjectIdentifier
				exts.ReadASN1(&ext, cbasn1.SEQUENCE)
				ext.ReadASN1ObjectIdentifier(&id)
				var v []byte
				if !ext.Empty() && !ext.ReadASN1Bytes(&v, cbasn1.OCTET_STRING) {
					t.Fatal("bad extension template")
				}
				switch {
				case aoid.Equal(OIDExtensionRequest):
					tmpl.exts = append(tmpl.exts, pkix.Extension{Id: id, Value: v})
				case aoid.Equal(OIDExtensionReqTemplate) && v == nil && id.Equal(OIDSubjectAltName):
					tmpl.fillSAN = true
				default:
					t.Fatalf("unexpected template attribute %v", aoid)
				}
			}
		}
	}
	if !found {
		t.Fatal("no RFC 9908 template")
	}
	return tmpl
}

// follow makes the CSR a client would make from the template: the given
// values, fill-ins for the rest, the key type asked for, the extensions.
func (a attTemplate) follow(t *testing.T, fill map[string]string, sanFill []pkitest.GeneralName) *x509.CertificateRequest {
	t.Helper()
	var atvs [][]byte
	for _, r := range a.subject {
		if r.has {
			atvs = append(atvs, r.raw)
			continue
		}
		typ := lookupAttrType(r.oid.String())
		v, ok := fill[typ.name]
		if !ok {
			t.Fatalf("template asks for %s, the test has no value", typ.name)
		}
		atvs = append(atvs, pkitest.ATV(typ.oid, valueTag(typ), v))
	}
	var key crypto.Signer
	switch {
	case a.keyAlg.Equal(oidECPublicKey) && a.curve.Equal(oidP256):
		key = pkitest.NewKey(t, "p256")
	case a.keyAlg.Equal(oidECPublicKey) && a.curve.Equal(oidP384):
		key = pkitest.NewKey(t, "p384")
	case a.keyAlg.Equal(oidRSAEncryption):
		if a.rsaBits != 2048 {
			t.Fatalf("dummy RSA key of %d bits", a.rsaBits)
		}
		key = pkKey(t, "rsa2048")
	case a.keyAlg.Equal(oidEd25519):
		key = pkitest.NewKey(t, "ed25519")
	default:
		t.Fatalf("template key %v %v", a.keyAlg, a.curve)
	}
	exts := a.exts
	if a.fillSAN && len(sanFill) > 0 {
		exts = append(exts, pkitest.SANExt(pkitest.SAN(t, sanFill...)))
	}
	return pkitest.Request{Key: key, Subject: pkitest.Name(atvs...), Extensions: exts}.Parsed(t)
}

// TestCSRAttrsFollowed checks the promise of /att: a client that follows
// the template gets its certificate.
func TestCSRAttrsFollowed(t *testing.T) {
	t.Parallel()
	w := getWorld(t)
	op := func(w *world) Requester { return w.requester(t, w.e, pkNow, w.op) }
	dev := func(w *world) Requester { return w.idev(t, w.dev) }
	operator := func(*world) Requester { return Requester{Verified: Verified{Kind: KindOperator}} }
	tests := []struct {
		profile string
		op      Operation
		who     func(*world) Requester
		fill    map[string]string
		san     []pkitest.GeneralName
		want    Action
		subject string
	}{
		{"default", OpSen, dev, nil, nil, ActionIssue, demoSubject},
		{"derived", OpSen, dev, nil, nil, ActionIssue, `CN="dev-DEMO-0001", serialNumber="DEMO-0001"`},
		{"cnless", OpSen, dev, nil, nil, ActionIssue, `serialNumber="DEMO-0001"`},
		{"strict", OpSen, dev, nil, []pkitest.GeneralName{pkitest.DNS("dev-0001.example.net")}, ActionIssue, `serialNumber="DEMO-0001"`},
		{"fixed", OpSen, dev, nil, nil, ActionIssue, `O="Acme Devices", serialNumber="DEMO-0001"`},
		{"rsa", OpSen, dev, nil, nil, ActionIssue, demoSubject},
		{"ed", OpSen, dev, nil, nil, ActionIssue, demoSubject},
		{"manual", OpSen, dev, nil, nil, ActionPending, demoSubject},
		{"default", OpSren, op, nil, nil, ActionIssue, demoSubject},
		{"ops-only", OpSen, operator, map[string]string{"CN": "bench-1"}, nil, ActionIssue, `CN="bench-1"`},
		{"default", OpSen, operator, nil, nil, ActionDeny, ""}, // the operator must name the certificate itself
	}
	for _, tc := range tests {
		t.Run(tc.profile+"/"+tc.op.String(), func(t *testing.T) {
			r := tc.who(w)
			der, err := w.e.CSRAttrs(tc.profile, r)
			if err != nil {
				t.Fatal(err)
			}
			att := parseAtt(t, der)
			csr := att.follow(t, tc.fill, tc.san)
			d := w.e.Evaluate(Request{Requester: r, CSR: csr, Operation: tc.op, Profile: tc.profile, Time: pkNow})
			if d.Action != tc.want {
				t.Fatalf("following /att: %s %v", d.Action, d.Reasons)
			}
			if d.Template != nil {
				if got := describeName(d.Template.Subject); got != tc.subject {
					t.Errorf("subject %s, want %s", got, tc.subject)
				}
			}
		})
	}
	if _, err := w.e.CSRAttrs("nope", Requester{}); err == nil {
		t.Error("CSRAttrs of an unknown profile")
	}
}

// TestCSRAttrsShape checks the DER of /att against RFC 9908's structure and
// with OpenSSL, and that it carries the RFC 7030 hints for older clients.
func TestCSRAttrsShape(t *testing.T) {
	t.Parallel()
	w := getWorld(t)
	der, err := w.e.CSRAttrs("derived", w.idev(t, w.dev))
	if err != nil {
		t.Fatal(err)
	}
	att := parseAtt(t, der)
	if len(att.subject) != 2 || !att.subject[0].has || !att.subject[1].has {
		t.Errorf("subject template %+v", att.subject)
	}
	if len(att.exts) != 1 || !att.exts[0].Id.Equal(OIDSubjectAltName) {
		t.Fatalf("extension request %+v", att.exts)
	}
	if got := describeSAN(att.exts[0].Value); got != demoHMN+`, dNSName "DEMO-0001.dev.example.com"` {
		t.Errorf("SAN %s", got)
	}
	for _, want := range [][]byte{oidContent(oidECDSASHA256), oidContent(oidECPublicKey), oidContent(OIDExtensionRequest)} {
		if !bytes.Contains(der, want) {
			t.Errorf("legacy hint %x missing", want)
		}
	}
	// A CN the client must fill in appears as a type without value.
	der, err = w.e.CSRAttrs("ops-only", Requester{Verified: Verified{Kind: KindOperator}})
	if err != nil {
		t.Fatal(err)
	}
	if att := parseAtt(t, der); len(att.subject) != 1 || att.subject[0].has {
		t.Errorf("operator template %+v", att.subject)
	}
	pkitest.RequireTool(t, "openssl") // the OpenSSL parse of /att
	f := filepath.Join(t.TempDir(), "att.der")
	if err := os.WriteFile(f, der, 0o600); err != nil {
		t.Fatal(err)
	}
	out, err := exec.Command("openssl", "asn1parse", "-inform", "DER", "-in", f).CombinedOutput()
	if err != nil {
		t.Fatalf("openssl asn1parse: %v\n%s", err, out)
	}
	if !strings.Contains(string(out), "1.2.840.113549.1.9.16.2.61") || !strings.Contains(string(out), "commonName") {
		t.Errorf("openssl asn1parse:\n%s", out)
	}
}
