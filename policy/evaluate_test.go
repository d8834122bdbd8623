package policy

import (
	"bytes"
	"crypto"
	"crypto/x509"
	"crypto/x509/pkix"
	"encoding/asn1"
	"strings"
	"testing"
	"time"

	"github.com/estca/estca/policy/pkitest"
	"golang.org/x/crypto/cryptobyte"
	cbasn1 "golang.org/x/crypto/cryptobyte/asn1"
)

// evalCase is one Evaluate scenario: a requester and a CSR, built from the
// world, against a profile.
type evalCase struct {
	name     string
	profile  string
	op       Operation // 0: OpSen
	at       time.Time // 0: pkNow
	counters Counters
	// encrypted is Request.EncryptedKey.
	encrypted bool
	req       func(t testing.TB, w *world) (Requester, *x509.CertificateRequest)
	want      Action
	codes     []Code // the first is the first reason; all must be present
	check     func(t *testing.T, w *world, d *Decision, cert *x509.Certificate)
}

// csrFor builds a parsed CSR.
func csrFor(t testing.TB, key crypto.Signer, subject []byte, exts ...pkix.Extension) *x509.CertificateRequest {
	t.Helper()
	return pkitest.Request{Key: key, Subject: subject, Extensions: exts}.Parsed(t)
}

func idevReq(c func(w *world) *pkitest.Cert, subject func(w *world) []byte, exts ...func(t testing.TB) pkix.Extension) func(testing.TB, *world) (Requester, *x509.CertificateRequest) {
	return func(t testing.TB, w *world) (Requester, *x509.CertificateRequest) {
		var xs []pkix.Extension
		for _, e := range exts {
			xs = append(xs, e(t))
		}
		return w.idev(t, c(w)), csrFor(t, pkitest.NewKey(t, "p256"), subject(w), xs...)
	}
}

// The demo device asking with a given subject and requested extensions.
func demo(subject []byte, exts ...func(t testing.TB) pkix.Extension) func(testing.TB, *world) (Requester, *x509.CertificateRequest) {
	return idevReq(func(w *world) *pkitest.Cert { return w.dev }, func(*world) []byte { return subject }, exts...)
}

func sanX(names ...pkitest.GeneralName) func(t testing.TB) pkix.Extension {
	return func(t testing.TB) pkix.Extension { return pkitest.SANExt(pkitest.SAN(t, names...)) }
}

func extX(x pkix.Extension) func(testing.TB) pkix.Extension {
	return func(testing.TB) pkix.Extension { return x }
}

func kuX(ku x509.KeyUsage) func(t testing.TB) pkix.Extension {
	return func(t testing.TB) pkix.Extension { return pkitest.KeyUsageExt(t, ku) }
}

// keyed is the demo device with a CSR of a given key, signature algorithm
// and version.
func keyed(kind string, alg x509.SignatureAlgorithm, version int, subject []byte, exts ...func(t testing.TB) pkix.Extension) func(testing.TB, *world) (Requester, *x509.CertificateRequest) {
	return func(t testing.TB, w *world) (Requester, *x509.CertificateRequest) {
		var xs []pkix.Extension
		for _, e := range exts {
			xs = append(xs, e(t))
		}
		return w.idev(t, w.dev), pkitest.Request{Key: pkKey(t, kind), Subject: subject, Extensions: xs, Algorithm: alg, Version: version}.Parsed(t)
	}
}

// renewal is the operational certificate op asking with subject and SAN
// (nil SAN: none), with the key of its certificate or a new one.
func renewal(op func(w *world) *pkitest.Cert, sameKey bool, subject func(w *world) []byte, san func(t testing.TB, w *world) []byte) func(testing.TB, *world) (Requester, *x509.CertificateRequest) {
	return func(t testing.TB, w *world) (Requester, *x509.CertificateRequest) {
		c := op(w)
		r := w.requester(t, w.e, pkNow, c)
		key := pkitest.NewKey(t, "p256")
		if sameKey {
			key = w.opKey
		}
		var xs []pkix.Extension
		if v := san(t, w); v != nil {
			xs = append(xs, pkitest.SANExt(v))
		}
		return r, csrFor(t, key, subject(w), xs...)
	}
}

func opSubject(w *world) []byte { return w.op.Cert.RawSubject }
func opSAN(_ testing.TB, w *world) []byte {
	v, _ := extValue(w.op.Cert.Extensions, OIDSubjectAltName)
	return v
}
func noSAN(testing.TB, *world) []byte { return nil }
func theOp(w *world) *pkitest.Cert    { return w.op }

// manual builds a requester that Verify would refuse now, as a session
// opened before (a notBefore in the future cannot happen that way, but
// Evaluate must not rely on Verify having run at request time).
func manualIDevID(anchorName string, c func(w *world) *pkitest.Cert, subject []byte) func(testing.TB, *world) (Requester, *x509.CertificateRequest) {
	return func(t testing.TB, w *world) (Requester, *x509.CertificateRequest) {
		leaf := c(w)
		chain := []*x509.Certificate{leaf.Cert, w.acmeSub.Cert, w.acme.Cert}
		if anchorName == "cog" {
			chain = []*x509.Certificate{leaf.Cert, w.cog.Cert}
		}
		r := Requester{Verified: Verified{Kind: KindIDevID, Anchor: anchorName, Chain: chain}}
		return r, csrFor(t, pkitest.NewKey(t, "p256"), subject)
	}
}

// lax is a requester verified under the configuration before a reload that
// added deny-lists and CRLs.
func lax(c func(w *world) *pkitest.Cert, subject []byte) func(testing.TB, *world) (Requester, *x509.CertificateRequest) {
	return func(t testing.TB, w *world) (Requester, *x509.CertificateRequest) {
		return w.requester(t, w.lax, pkNow, c(w)), csrFor(t, pkitest.NewKey(t, "p256"), subject)
	}
}

func wantSubject(s string) func(*testing.T, *world, *Decision, *x509.Certificate) {
	return func(t *testing.T, _ *world, d *Decision, _ *x509.Certificate) {
		t.Helper()
		if got := describeName(d.Template.Subject); got != s {
			t.Errorf("subject = %s, want %s", got, s)
		}
	}
}

func wantSAN(s string) func(*testing.T, *world, *Decision, *x509.Certificate) {
	return func(t *testing.T, _ *world, d *Decision, _ *x509.Certificate) {
		t.Helper()
		got := "(none)"
		if d.Template.SubjectAltName != nil {
			got = describeSAN(d.Template.SubjectAltName)
		}
		if got != s {
			t.Errorf("SAN = %s, want %s", got, s)
		}
	}
}

func all(fs ...func(*testing.T, *world, *Decision, *x509.Certificate)) func(*testing.T, *world, *Decision, *x509.Certificate) {
	return func(t *testing.T, w *world, d *Decision, c *x509.Certificate) {
		for _, f := range fs {
			f(t, w, d, c)
		}
	}
}

const (
	demoSubject = `O="Acme Devices", CN="device DEMO-0001", serialNumber="DEMO-0001"`
	demoHMN     = `hardwareModuleName 1.3.6.1.4.1.32473.1.1 serial "DEMO-0001" (44454d4f2d30303031)`
)

var (
	oidServerAuth = asn1.ObjectIdentifier{1, 3, 6, 1, 5, 5, 7, 3, 1}
	oidVendorExt  = asn1.ObjectIdentifier{1, 3, 6, 1, 4, 1, 32473, 7, 1}
	oidUnknownExt = asn1.ObjectIdentifier{1, 2, 3, 4}
)

func ekuExt(oids ...asn1.ObjectIdentifier) pkix.Extension {
	v, _ := asn1.Marshal(oids)
	return pkitest.Ext(oidExtKeyUsage, false, v)
}

// utf8OtherName is an otherName whose value is a UTF8String.
func utf8OtherName(oid asn1.ObjectIdentifier, v string) pkitest.GeneralName {
	var b cryptobyte.Builder
	b.AddASN1(cbasn1.UTF8String, func(b *cryptobyte.Builder) { b.AddBytes([]byte(v)) })
	return pkitest.OtherName(oid, b.BytesOrPanic())
}

func evalCases() []evalCase {
	dev := pkDevSubject("DEMO-0001")
	sn := func(s string) []byte { return pkitest.Name(pkitest.SerialNumber(s)) }
	longCN := strings.Repeat("A", 4000) + "\x00\x1b["
	return []evalCase{
		// Identity binding, accepted.
		{name: "demo binding: CSR repeats the IDevID subject", req: demo(dev), want: ActionIssue,
			check: all(wantSubject(demoSubject), wantSAN(demoHMN))},
		{name: "binding: empty CSR subject gets the identity's", req: demo(pkitest.Name()), want: ActionIssue,
			check: all(wantSubject(demoSubject), wantSAN(demoHMN))},
		{name: "binding: serialNumber-only CSR (RFC 9148 shape)", req: demo(sn("DEMO-0001")), want: ActionIssue,
			check: wantSubject(demoSubject)},
		{name: "CN optional: serialNumber-only certificate", profile: "cnless", req: demo(sn("DEMO-0001")), want: ActionIssue,
			check: all(wantSubject(`serialNumber="DEMO-0001"`), wantSAN("(none)"))},
		{name: "binding by hardwareModuleName: CSR repeats it", req: demo(dev, sanX(pkitest.HardwareModuleName(pkHWType, "DEMO-0001"))),
			want: ActionIssue, check: wantSAN(demoHMN)},
		// Identity binding, attacks.
		{name: "attack: CN=admin", req: demo(pkitest.Name(pkitest.CN("admin"))), want: ActionDeny, codes: []Code{CodeSubjectNotBound}},
		{name: "attack: another device's serialNumber", req: demo(sn("DEMO-0002")), want: ActionDeny, codes: []Code{CodeSubjectNotBound}},
		{name: "attack: another device's subject", req: demo(pkDevSubject("DEMO-0002")), want: ActionDeny, codes: []Code{CodeSubjectNotBound}},
		{name: "attack: another device's hardware serial SAN", req: demo(dev, sanX(pkitest.HardwareModuleName(pkHWType, "DEMO-0002"))),
			want: ActionDeny, codes: []Code{CodeHardwareNameNotBound}},
		{name: "attack: same hardware serial, other hwType", req: demo(dev, sanX(pkitest.HardwareModuleName(asn1.ObjectIdentifier{1, 2, 3}, "DEMO-0001"))),
			want: ActionDeny, codes: []Code{CodeHardwareNameNotBound}},
		{name: "attack: the server's DNS name, none allowed", req: demo(dev, sanX(pkitest.DNS("est.example.net"))),
			want: ActionDeny, codes: []Code{CodeSANTypeNotAllowed}},
		{name: "attack: the server's DNS name under a matching pattern", profile: "strict",
			req: demo(sn("DEMO-0001"), sanX(pkitest.DNS("est.example.net"))), want: ActionDeny, codes: []Code{CodeNameReserved}},
		{name: "attack: the server's IP address", profile: "strict",
			req: demo(sn("DEMO-0001"), sanX(pkitest.IP("192.0.2.10"))), want: ActionDeny, codes: []Code{CodeNameReserved}},
		{name: "attack: the server's IP as IPv4-mapped IPv6", profile: "strict",
			req:  demo(sn("DEMO-0001"), sanX(pkitest.Tagged(7, []byte{0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0xff, 0xff, 192, 0, 2, 10}))),
			want: ActionDeny, codes: []Code{CodeNameReserved}},
		{name: "attack: a reserved name from the configuration", profile: "strict",
			req: demo(sn("DEMO-0001"), sanX(pkitest.DNS("CA.example.net"))), want: ActionDeny, codes: []Code{CodeNameReserved}},
		{name: "attack: the server's name in a URI", profile: "strict",
			req: demo(sn("DEMO-0001"), sanX(pkitest.URI("urn:dev:x"), pkitest.URI("https://est.example.net/"))), want: ActionDeny,
			codes: []Code{CodeNameReserved}},
		{name: "attack: the issuing CA's name as CN", req: demo(pkitest.Name(pkitest.CN("estca issuing"))), want: ActionDeny,
			codes: []Code{CodeNameReserved}},
		{name: "attack: the root CA's name as CN, free-form CN profile", profile: "fixed",
			req: demo(pkitest.Name(pkitest.CN("estca root"))), want: ActionDeny, codes: []Code{CodeNameReserved}},
		{name: "attack: the server's name as CN", profile: "fixed",
			req: demo(pkitest.Name(pkitest.CN("est.example.net"))), want: ActionDeny, codes: []Code{CodeNameReserved}},
		{name: "attack: /sen with an operational certificate and a new subject", req: renewal(theOp, false,
			func(*world) []byte { return pkitest.Name(pkitest.CN("admin")) }, opSAN), want: ActionDeny,
			codes: []Code{CodeSubjectNotBound, CodeRenewalNameChanged}},
		{name: "attack: 4,003-character CN with NUL and terminal escape", req: demo(pkitest.Name(pkitest.CN(longCN))), want: ActionDeny,
			codes: []Code{CodeSubjectCharacters, CodeSubjectTooLong}},
		{name: "attack: escape byte in a CN the pattern allows", profile: "fixed", req: demo(pkitest.Name(pkitest.CN("dev\x1b[2J"))),
			want: ActionDeny, codes: []Code{CodeSubjectCharacters}},
		{name: "attack: bidi override in a CN the pattern allows", profile: "fixed", req: demo(pkitest.Name(pkitest.CN("dev\u202egnp.exe"))),
			want: ActionDeny, codes: []Code{CodeSubjectCharacters}},
		{name: "attack: SHA-1 ECDSA CSR", req: keyed("p256", x509.ECDSAWithSHA1, 0, dev), want: ActionDeny,
			codes: []Code{CodeCSRSignatureWeak}},
		{name: "attack: SHA-1 RSA CSR", profile: "rsa", req: keyed("rsa2048", x509.SHA1WithRSA, 0, dev), want: ActionDeny,
			codes: []Code{CodeCSRSignatureWeak}},
		{name: "attack: MD5 RSA CSR", profile: "rsa", req: keyed("rsa2048", x509.MD5WithRSA, 0, dev), want: ActionDeny,
			codes: []Code{CodeCSRSignatureWeak}},
		{name: "attack: CSR version field 1", req: keyed("p256", x509.ECDSAWithSHA256, 1, dev), want: ActionDeny,
			codes: []Code{CodeCSRVersion}},
		{name: "attack: CSR version field 2", req: keyed("p256", x509.ECDSAWithSHA256, 2, dev), want: ActionDeny,
			codes: []Code{CodeCSRVersion}},
		{name: "CSR version field 0 is PKCS#10 v1", req: keyed("p256", x509.ECDSAWithSHA256, 0, dev), want: ActionIssue},
		{name: "attack: RSA leaf asking for keyAgreement", profile: "rsa",
			req:  keyed("rsa2048", 0, 0, dev, kuX(x509.KeyUsageDigitalSignature|x509.KeyUsageKeyAgreement)),
			want: ActionDeny, codes: []Code{CodeKeyUsageInvalid}},
		{name: "attack: Ed25519 leaf asking for keyAgreement", profile: "ed",
			req:  keyed("ed25519", 0, 0, dev, kuX(x509.KeyUsageDigitalSignature|x509.KeyUsageKeyAgreement)),
			want: ActionDeny, codes: []Code{CodeKeyUsageInvalid}},
		{name: "attack: ECDSA leaf asking for keyEncipherment",
			req: keyed("p256", 0, 0, dev, kuX(x509.KeyUsageKeyEncipherment)), want: ActionDeny, codes: []Code{CodeKeyUsageInvalid}},
		{name: "attack: keyCertSign requested", req: keyed("p256", 0, 0, dev, kuX(x509.KeyUsageCertSign)),
			want: ActionDeny, codes: []Code{CodeKeyUsageInvalid}},
		{name: "forbidden reasons come first", req: keyed("p256", x509.ECDSAWithSHA1, 0, pkitest.Name(pkitest.CN("admin"))),
			want: ActionDeny, codes: []Code{CodeSubjectNotBound, CodeCSRSignatureWeak}},

		// Key usage derived per algorithm.
		{name: "RSA leaf gets digitalSignature and keyEncipherment", profile: "rsa", req: keyed("rsa2048", 0, 0, dev),
			want: ActionIssue, check: func(t *testing.T, _ *world, d *Decision, c *x509.Certificate) {
				if c.KeyUsage != x509.KeyUsageDigitalSignature|x509.KeyUsageKeyEncipherment {
					t.Errorf("key usage %s", keyUsageString(c.KeyUsage))
				}
			}},
		{name: "ECDSA leaf gets digitalSignature and keyAgreement", profile: "rsa", req: keyed("p256", 0, 0, dev),
			want: ActionIssue, check: func(t *testing.T, _ *world, d *Decision, c *x509.Certificate) {
				if c.KeyUsage != x509.KeyUsageDigitalSignature|x509.KeyUsageKeyAgreement {
					t.Errorf("key usage %s", keyUsageString(c.KeyUsage))
				}
			}},
		{name: "Ed25519 leaf gets digitalSignature only", profile: "ed", req: keyed("ed25519", 0, 0, dev),
			want: ActionIssue, check: func(t *testing.T, _ *world, d *Decision, c *x509.Certificate) {
				if c.KeyUsage != x509.KeyUsageDigitalSignature {
					t.Errorf("key usage %s", keyUsageString(c.KeyUsage))
				}
			}},
		{name: "requested usage within the key's is fine, the profile's is issued",
			req: keyed("p256", 0, 0, dev, kuX(x509.KeyUsageDigitalSignature|x509.KeyUsageKeyAgreement)), want: ActionIssue,
			check: func(t *testing.T, _ *world, d *Decision, c *x509.Certificate) {
				if c.KeyUsage != x509.KeyUsageDigitalSignature {
					t.Errorf("key usage %s", keyUsageString(c.KeyUsage))
				}
			}},

		// Keys.
		{name: "RSA-1024", profile: "rsa", req: keyed("rsa1024", 0, 0, dev), want: ActionDeny, codes: []Code{CodeKeyWeak}},
		{name: "P-224", req: keyed("p224", 0, 0, dev), want: ActionDeny, codes: []Code{CodeKeyWeak}},
		{name: "P-384 by default", req: keyed("p384", 0, 0, dev), want: ActionIssue},
		{name: "RSA-2048 not in the default profile", req: keyed("rsa2048", 0, 0, dev), want: ActionDeny,
			codes: []Code{CodeKeyTypeNotAllowed}},
		{name: "Ed25519 not in the default profile", req: keyed("ed25519", 0, 0, dev), want: ActionDeny,
			codes: []Code{CodeKeyTypeNotAllowed}},

		// Subject validity.
		{name: "TeletexString CN", req: demo(pkitest.Name(pkitest.ATV(attrCN.oid, cbasn1.T61String, "device DEMO-0001"))),
			want: ActionDeny, codes: []Code{CodeSubjectEncoding}},
		{name: "BMPString CN", req: demo(pkitest.Name(pkitest.ATV(attrCN.oid, cbasn1.Tag(30), "\x00a\x00b"))),
			want: ActionDeny, codes: []Code{CodeSubjectEncoding}},
		{name: "UTF8String serialNumber (PrintableString required)",
			req: demo(pkitest.Name(pkitest.ATV(attrSerialNumber.oid, cbasn1.UTF8String, "DEMO-0001"))), want: ActionDeny,
			codes: []Code{CodeSubjectEncoding}},
		{name: "empty RDN", req: demo(pkitest.Name(pkitest.SerialNumber("DEMO-0001"), nil)), want: ActionDeny, codes: []Code{CodeSubjectEmptyRDN}},
		{name: "multi-valued RDN", req: demo(pkitest.RDN(pkitest.CN("device DEMO-0001"), pkitest.SerialNumber("DEMO-0001"))), want: ActionDeny,
			codes: []Code{CodeSubjectMultiValuedRDN}},
		{name: "duplicate CN", req: demo(pkitest.Name(pkitest.CN("device DEMO-0001"), pkitest.CN("device DEMO-0001"))), want: ActionDeny,
			codes: []Code{CodeSubjectDuplicate}},
		{name: "emailAddress in the subject", req: demo(pkitest.Name(pkitest.ATV(asn1.ObjectIdentifier{1, 2, 840, 113549, 1, 9, 1},
			cbasn1.IA5String, "a@b.example"))), want: ActionDeny, codes: []Code{CodeSubjectAttrNotAllowed}},
		{name: "attribute the profile does not list", profile: "cnless", req: demo(pkitest.Name(pkitest.SerialNumber("DEMO-0001"), pkAttr("OU", "x"))),
			want: ActionDeny, codes: []Code{CodeSubjectAttrNotAllowed}},
		{name: "three-letter country", profile: "fixed", req: demo(pkitest.Name(pkAttr("C", "USA"))), want: ActionDeny,
			codes: []Code{CodeSubjectTooLong}},
		{name: "one-letter country", profile: "fixed", req: demo(pkitest.Name(pkAttr("C", "U"))), want: ActionDeny,
			codes: []Code{CodeSubjectValueNotAllowed}},
		{name: "empty CN value", req: demo(pkitest.Name(pkitest.CN(""))), want: ActionDeny, codes: []Code{CodeSubjectCharacters}},
		{name: "65-character CN", profile: "fixed", req: demo(pkitest.Name(pkitest.CN(strings.Repeat("a", 65)))), want: ActionDeny,
			codes: []Code{CodeSubjectTooLong}},
		{name: "free CN left out", profile: "fixed", req: demo(pkitest.Name()), want: ActionIssue,
			check: wantSubject(`O="Acme Devices", serialNumber="DEMO-0001"`)},
		{name: "free CN within its pattern", profile: "fixed", req: demo(pkitest.Name(pkAttr("C", "DE"), pkitest.CN("boiler-7"))),
			want: ActionIssue, check: wantSubject(`C="DE", O="Acme Devices", CN="boiler-7", serialNumber="DEMO-0001"`)},
		{name: "free CN outside its pattern", profile: "fixed", req: demo(pkitest.Name(pkitest.CN("Admin!"))), want: ActionDeny,
			codes: []Code{CodeSubjectValueNotAllowed}},
		{name: "fixed O differs", profile: "fixed", req: demo(pkitest.Name(pkitest.O("Evil Corp"))), want: ActionDeny,
			codes: []Code{CodeSubjectValueNotAllowed}},
		{name: "derived CN and DNS name", profile: "derived", req: demo(pkitest.Name(pkitest.CN("dev-DEMO-0001"))), want: ActionIssue,
			check: all(wantSubject(`CN="dev-DEMO-0001", serialNumber="DEMO-0001"`),
				wantSAN(demoHMN+`, dNSName "DEMO-0001.dev.example.com"`))},
		{name: "derived DNS name repeated by the CSR", profile: "derived",
			req: demo(pkitest.Name(), sanX(pkitest.DNS("demo-0001.dev.example.com"))), want: ActionIssue,
			check: wantSAN(demoHMN + `, dNSName "DEMO-0001.dev.example.com"`)},
		{name: "derived profile: another DNS name", profile: "derived",
			req: demo(pkitest.Name(), sanX(pkitest.DNS("x.dev.example.com"))), want: ActionDeny, codes: []Code{CodeSANNotAllowed}},
		{name: "derived CN of another device", profile: "derived", req: demo(pkitest.Name(pkitest.CN("dev-DEMO-0002"))), want: ActionDeny,
			codes: []Code{CodeSubjectNotBound}},
		{name: "identity without the bound serialNumber", profile: "cnless",
			req:  idevReq(func(w *world) *pkitest.Cert { return w.devNoSN }, func(*world) []byte { return pkitest.Name() }),
			want: ActionDeny, codes: []Code{CodeIdentityIncomplete}},
		{name: "identity without serialNumber, CSR claims one",
			req:  idevReq(func(w *world) *pkitest.Cert { return w.devNoSN }, func(*world) []byte { return sn("DEMO-0001") }),
			want: ActionDeny, codes: []Code{CodeSubjectNotBound}},
		{name: "identity value breaking RFC 5280 (UTF8String serialNumber)",
			req:  idevReq(func(w *world) *pkitest.Cert { return w.devUTF8SN }, func(*world) []byte { return pkitest.Name() }),
			want: ActionDeny, codes: []Code{CodeIdentityValueInvalid}},
		{name: "the same identity, re-encoded by a derived value", profile: "sn-derived",
			req:  idevReq(func(w *world) *pkitest.Cert { return w.devUTF8SN }, func(*world) []byte { return pkitest.Name() }),
			want: ActionIssue, check: func(t *testing.T, _ *world, d *Decision, c *x509.Certificate) {
				var buf [maxNameAttrs]nameAttr
				attrs, _, _ := parseName(d.Template.Subject, buf[:0])
				if len(attrs) != 1 || attrs[0].tag != cbasn1.PrintableString || string(attrs[0].val) != "DEMO-0008" {
					t.Errorf("subject %s", describeName(d.Template.Subject))
				}
			}},
		{name: "no name at all", req: func(t testing.TB, w *world) (Requester, *x509.CertificateRequest) {
			return Requester{Verified: Verified{Kind: KindOperator}}, csrFor(t, pkKey(t, "p256"), pkitest.Name())
		}, want: ActionDeny, codes: []Code{CodeNoName}},

		// SAN rules.
		{name: "SAN type: directoryName", profile: "strict", req: demo(sn("DEMO-0001"), sanX(pkitest.DirName("x"))),
			want: ActionDeny, codes: []Code{CodeSANTypeNotAllowed}},
		{name: "SAN type: registeredID", profile: "strict", req: demo(sn("DEMO-0001"), sanX(pkitest.Tagged(8, []byte{0x2a, 0x03}))),
			want: ActionDeny, codes: []Code{CodeSANTypeNotAllowed}},
		{name: "SAN type: foreign otherName", profile: "strict",
			req:  demo(sn("DEMO-0001"), sanX(utf8OtherName(asn1.ObjectIdentifier{1, 3, 6, 1, 4, 1, 311, 20, 2, 3}, "admin@corp"))),
			want: ActionDeny, codes: []Code{CodeSANTypeNotAllowed}},
		{name: "SAN type: email not allowed", profile: "strict", req: demo(sn("DEMO-0001"), sanX(pkitest.Email("a@example.net"))),
			want: ActionDeny, codes: []Code{CodeSANTypeNotAllowed}},
		{name: "SAN type: IP not allowed by default", req: demo(dev, sanX(pkitest.IP("192.0.2.20"))),
			want: ActionDeny, codes: []Code{CodeSANTypeNotAllowed}},
		{name: "SAN: hardwareModuleName forbidden", profile: "cnless",
			req: demo(sn("DEMO-0001"), sanX(pkitest.HardwareModuleName(pkHWType, "DEMO-0001"))), want: ActionDeny, codes: []Code{CodeSANTypeNotAllowed}},
		{name: "DNS name within the pattern", profile: "strict", req: demo(sn("DEMO-0001"), sanX(pkitest.DNS("dev-0001.example.net"))),
			want: ActionIssue, check: wantSAN(demoHMN + `, dNSName "dev-0001.example.net"`)},
		{name: "DNS name outside the pattern", profile: "strict", req: demo(sn("DEMO-0001"), sanX(pkitest.DNS("dev.evil.example"))),
			want: ActionDeny, codes: []Code{CodeSANNotAllowed}},
		{name: "wildcard DNS name", profile: "strict", req: demo(sn("DEMO-0001"), sanX(pkitest.DNS("*.example.net"))),
			want: ActionDeny, codes: []Code{CodeSANInvalid}},
		{name: "more DNS names than the type allows", profile: "strict",
			req:  demo(sn("DEMO-0001"), sanX(pkitest.DNS("a.example.net"), pkitest.DNS("b.example.net"), pkitest.DNS("c.example.net"))),
			want: ActionDeny, codes: []Code{CodeSANTooMany}},
		{name: "more SAN entries than the profile allows", profile: "strict",
			req: demo(sn("DEMO-0001"), sanX(pkitest.IP("192.0.2.1"), pkitest.IP("192.0.2.2"), pkitest.IP("192.0.2.3"), pkitest.IP("192.0.2.4"),
				pkitest.IP("192.0.2.5"), pkitest.IP("192.0.2.6"), pkitest.IP("192.0.2.7"), pkitest.IP("192.0.2.8"), pkitest.IP("192.0.2.9"))),
			want: ActionDeny, codes: []Code{CodeSANTooMany}},
		{name: "duplicate DNS name", profile: "strict",
			req: demo(sn("DEMO-0001"), sanX(pkitest.DNS("a.example.net"), pkitest.DNS("a.example.net"))), want: ActionDeny,
			codes: []Code{CodeSANDuplicate}},
		{name: "IPv4 address within the allowed prefix", profile: "strict", req: demo(sn("DEMO-0001"), sanX(pkitest.IP("192.0.2.20"))),
			want: ActionIssue, check: wantSAN(demoHMN + `, IP 192.0.2.20`)},
		{name: "IPv6 address within the allowed prefix", profile: "strict", req: demo(sn("DEMO-0001"), sanX(pkitest.IP("2001:db8::7"))),
			want: ActionIssue},
		{name: "IP address outside the allowed prefixes", profile: "strict", req: demo(sn("DEMO-0001"), sanX(pkitest.IP("198.51.100.1"))),
			want: ActionDeny, codes: []Code{CodeSANNotAllowed}},
		{name: "URI within the pattern", profile: "strict", req: demo(sn("DEMO-0001"), sanX(pkitest.URI("urn:dev:demo-0001"))),
			want: ActionIssue},
		{name: "URI outside the pattern", profile: "strict", req: demo(sn("DEMO-0001"), sanX(pkitest.URI("https://evil.example/x"))),
			want: ActionDeny, codes: []Code{CodeSANNotAllowed}},
		{name: "empty SAN", profile: "strict", req: demo(sn("DEMO-0001"), sanX()), want: ActionDeny, codes: []Code{CodeSANMalformed}},
		{name: "strict: CN within its pattern", profile: "strict", req: demo(pkitest.Name(pkitest.SerialNumber("DEMO-0001"), pkitest.CN("dev-0001"))),
			want: ActionIssue, check: wantSubject(`serialNumber="DEMO-0001", CN="dev-0001"`)},

		// Requested extensions.
		{name: "basicConstraints cA=TRUE", req: demo(dev, extX(pkitest.BasicConstraintsExt(true))), want: ActionDeny, codes: []Code{CodeCARequested}},
		{name: "basicConstraints cA=FALSE", req: demo(dev, extX(pkitest.BasicConstraintsExt(false))), want: ActionIssue},
		{name: "unknown extension rejected", req: demo(dev, extX(pkitest.Ext(oidUnknownExt, false, []byte{5, 0}))),
			want: ActionDeny, codes: []Code{CodeExtensionNotAllowed}},
		{name: "unknown extension dropped", profile: "drop", req: demo(dev, extX(pkitest.Ext(oidUnknownExt, false, []byte{5, 0}))),
			want: ActionIssue, check: func(t *testing.T, _ *world, d *Decision, c *x509.Certificate) {
				if len(d.Template.Dropped) != 1 || !d.Template.Dropped[0].Equal(oidUnknownExt) {
					t.Errorf("dropped %v", d.Template.Dropped)
				}
				for _, x := range c.Extensions {
					if x.Id.Equal(oidUnknownExt) {
						t.Error("dropped extension in the certificate")
					}
				}
			}},
		{name: "critical unknown extension is never dropped", profile: "drop",
			req: demo(dev, extX(pkitest.Ext(oidUnknownExt, true, []byte{5, 0}))), want: ActionDeny, codes: []Code{CodeExtensionNotAllowed}},
		{name: "allowed extension copied", profile: "drop", req: demo(dev, extX(pkitest.Ext(oidVendorExt, false, []byte{4, 1, 7}))),
			want: ActionIssue, check: func(t *testing.T, _ *world, d *Decision, c *x509.Certificate) {
				found := false
				for _, x := range c.Extensions {
					found = found || x.Id.Equal(oidVendorExt) && bytes.Equal(x.Value, []byte{4, 1, 7})
				}
				if !found {
					t.Error("copied extension missing from the certificate")
				}
			}},
		{name: "malformed keyUsage", req: demo(dev, extX(pkitest.Ext(oidKeyUsage, true, []byte{5, 0}))), want: ActionDeny,
			codes: []Code{CodeExtensionMalformed}},
		{name: "malformed extKeyUsage", req: demo(dev, extX(pkitest.Ext(oidExtKeyUsage, false, []byte{4, 0}))), want: ActionDeny,
			codes: []Code{CodeExtensionMalformed}},
		{name: "serverAuth requested, the profile's clientAuth issued", req: demo(dev, extX(ekuExt(oidServerAuth))),
			want: ActionIssue, check: func(t *testing.T, _ *world, d *Decision, c *x509.Certificate) {
				if len(c.ExtKeyUsage) != 1 || c.ExtKeyUsage[0] != x509.ExtKeyUsageClientAuth {
					t.Errorf("ext key usage %v", c.ExtKeyUsage)
				}
			}},

		// IDevID requesters.
		{name: "IDevID expired during an open session, strict anchor", at: pkNow,
			req: func(t testing.TB, w *world) (Requester, *x509.CertificateRequest) {
				return w.requester(t, w.e, pkNow.Add(-2*pkDay), w.devExpiring), csrFor(t, pkKey(t, "p256"), pkitest.Name())
			}, want: ActionDeny, codes: []Code{CodeCertExpired}},
		{name: "expired IDevID, tolerant anchor with a fresh CRL",
			req:  idevReq(func(w *world) *pkitest.Cert { return w.boltExpired }, func(*world) []byte { return pkitest.Name() }),
			want: ActionIssue, check: func(t *testing.T, _ *world, d *Decision, c *x509.Certificate) {
				if !d.ExpiredAccepted || c.Subject.SerialNumber != "BOLT-0001" {
					t.Errorf("expired accepted %v, serial %q", d.ExpiredAccepted, c.Subject.SerialNumber)
				}
			}},
		{name: "expired IDevID on the tolerant anchor's CRL", req: lax(func(w *world) *pkitest.Cert { return w.boltExpiredRev }, pkitest.Name()),
			want: ActionDeny, codes: []Code{CodeCertRevoked}},
		{name: "expired IDevID, tolerant anchor with a stale CRL", req: lax(func(w *world) *pkitest.Cert { return w.duskExpired }, pkitest.Name()),
			want: ActionDeny, codes: []Code{CodeCRLStale}},
		{name: "valid IDevID, anchor with a stale CRL",
			req: idevReq(func(w *world) *pkitest.Cert { return w.duskOK }, func(*world) []byte { return pkitest.Name() }), want: ActionIssue},
		{name: "IDevID notBefore in the future", req: manualIDevID("acme", func(w *world) *pkitest.Cert { return w.devFuture }, pkitest.Name()),
			want: ActionDeny, codes: []Code{CodeCertNotYetValid}},
		{name: "IDevID deny-listed by serial after a reload", req: lax(func(w *world) *pkitest.Cert { return w.devDenied }, pkitest.Name()),
			want: ActionDeny, codes: []Code{CodeCertDenied}},
		{name: "IDevID deny-listed by fingerprint after a reload", req: lax(func(w *world) *pkitest.Cert { return w.devDeniedFP }, pkitest.Name()),
			want: ActionDeny, codes: []Code{CodeCertDenied}},
		{name: "IDevID on the manufacturer CRL after a reload", req: lax(func(w *world) *pkitest.Cert { return w.devRevoked }, pkitest.Name()),
			want: ActionDeny, codes: []Code{CodeCertRevoked}},
		{name: "IDevID on the allow-list",
			req: idevReq(func(w *world) *pkitest.Cert { return w.cogListed }, func(*world) []byte { return pkitest.Name() }), want: ActionIssue},
		{name: "IDevID not on the allow-list", req: manualIDevID("cog", func(w *world) *pkitest.Cert { return w.cogUnlisted }, pkitest.Name()),
			want: ActionDeny, codes: []Code{CodeCertNotAllowed}},
		{name: "anchor removed by a reload", req: manualIDevID("gone", func(w *world) *pkitest.Cert { return w.dev }, pkitest.Name()),
			want: ActionDeny, codes: []Code{CodeAnchorUnknown}},
		{name: "manufacturer not allowed for the profile", profile: "strict",
			req:  idevReq(func(w *world) *pkitest.Cert { return w.boltOK }, func(*world) []byte { return sn("BOLT-0003") }),
			want: ActionDeny, codes: []Code{CodeAnchorNotAllowed}},
		{name: "manufacturer allowed for its profile", profile: "bolt-only",
			req: idevReq(func(w *world) *pkitest.Cert { return w.boltOK }, func(*world) []byte { return pkitest.Name() }), want: ActionIssue},
		{name: "IDevID on an operator-only profile", profile: "ops-only", req: demo(pkitest.Name(pkitest.CN("x"))), want: ActionDeny,
			codes: []Code{CodeRequesterNotAllowed}},

		// The local operator.
		{name: "operator: the CSR's subject", req: func(t testing.TB, w *world) (Requester, *x509.CertificateRequest) {
			return Requester{Verified: Verified{Kind: KindOperator}}, csrFor(t, pkKey(t, "p256"), pkitest.Name(pkitest.CN("printer-7")))
		}, want: ActionIssue, check: wantSubject(`CN="printer-7"`)},
		{name: "operator: any hardwareModuleName on an operator profile", profile: "ops-only",
			req: func(t testing.TB, w *world) (Requester, *x509.CertificateRequest) {
				return Requester{Verified: Verified{Kind: KindOperator}}, csrFor(t, pkKey(t, "p256"), pkitest.Name(pkitest.CN("bench")),
					pkitest.SANExt(pkHMNSAN(t, "ANY-1")))
			}, want: ActionIssue},
		{name: "operator: reserved names still refused", req: func(t testing.TB, w *world) (Requester, *x509.CertificateRequest) {
			return Requester{Verified: Verified{Kind: KindOperator}}, csrFor(t, pkKey(t, "p256"), pkitest.Name(pkitest.CN("est.example.net")))
		}, want: ActionDeny, codes: []Code{CodeNameReserved}},

		// Operational requesters: renewal.
		{name: "sren, same key: renew", op: OpSren, req: renewal(theOp, true, opSubject, opSAN), want: ActionIssue,
			check: func(t *testing.T, w *world, d *Decision, c *x509.Certificate) {
				if d.Renewal != RenewalRenew || !d.KeyReused || !bytes.Equal(c.RawSubject, w.op.Cert.RawSubject) {
					t.Errorf("renewal %v reused %v", d.Renewal, d.KeyReused)
				}
			}},
		{name: "sren, new key: rekey", op: OpSren, req: renewal(theOp, false, opSubject, opSAN), want: ActionIssue,
			check: func(t *testing.T, w *world, d *Decision, c *x509.Certificate) {
				if d.Renewal != RenewalRekey || d.KeyReused {
					t.Errorf("renewal %v reused %v", d.Renewal, d.KeyReused)
				}
			}},
		{name: "sen with an operational certificate is a renewal", req: renewal(theOp, false, opSubject, opSAN), want: ActionIssue,
			check: func(t *testing.T, w *world, d *Decision, c *x509.Certificate) {
				if d.Renewal != RenewalRekey {
					t.Errorf("renewal %v", d.Renewal)
				}
			}},
		{name: "sren with a changed subject", op: OpSren,
			req: renewal(theOp, false, func(*world) []byte { return pkDevSubject("DEMO-0002") }, opSAN), want: ActionDeny,
			codes: []Code{CodeSubjectNotBound, CodeRenewalNameChanged}},
		{name: "sren with reordered subject", op: OpSren,
			req: renewal(theOp, false, func(*world) []byte {
				return pkitest.Name(pkitest.SerialNumber("DEMO-0001"), pkitest.CN("device DEMO-0001"), pkitest.O("Acme Devices"))
			}, opSAN), want: ActionDeny, codes: []Code{CodeRenewalNameChanged}},
		{name: "sren with a changed SAN", op: OpSren,
			req:  renewal(theOp, false, opSubject, func(t testing.TB, _ *world) []byte { return pkHMNSAN(t, "DEMO-0002") }),
			want: ActionDeny, codes: []Code{CodeHardwareNameNotBound, CodeRenewalNameChanged}},
		{name: "sren without the SAN", op: OpSren, req: renewal(theOp, false, opSubject, noSAN), want: ActionDeny,
			codes: []Code{CodeRenewalNameChanged}},
		{name: "sren of a legacy certificate without SAN", op: OpSren,
			req:  renewal(func(w *world) *pkitest.Cert { return w.opNoSAN }, false, func(w *world) []byte { return w.opNoSAN.Cert.RawSubject }, noSAN),
			want: ActionIssue, check: all(wantSubject(`CN="legacy"`), wantSAN("(none)"))},
		{name: "sren with an IDevID", op: OpSren, req: demo(dev), want: ActionDeny, codes: []Code{CodeRenewalNeedsOperational}},
		{name: "revoked operational certificate on an open session", op: OpSren,
			req: func(t testing.TB, w *world) (Requester, *x509.CertificateRequest) {
				r, c := renewal(theOp, false, opSubject, opSAN)(t, w)
				r.Revoked = true
				return r, c
			}, want: ActionDeny, codes: []Code{CodeCertRevoked}},
		{name: "operational certificate not in the store (restored backup)", op: OpSren,
			req: func(t testing.TB, w *world) (Requester, *x509.CertificateRequest) {
				r, c := renewal(theOp, false, opSubject, opSAN)(t, w)
				r.Unknown, r.IssuedProfile = true, ""
				return r, c
			}, want: ActionDeny, codes: []Code{CodeCertUnknown}},
		{name: "expired operational certificate within the grace period", op: OpSren,
			req: renewal(func(w *world) *pkitest.Cert { return w.opExpired }, false, opSubject, opSAN), want: ActionIssue,
			check: func(t *testing.T, _ *world, d *Decision, _ *x509.Certificate) {
				if !d.InGrace {
					t.Error("InGrace not set")
				}
			}},
		{name: "expired operational certificate beyond the grace period", op: OpSren,
			req: func(t testing.TB, w *world) (Requester, *x509.CertificateRequest) {
				r := w.requester(t, w.e, pkNow.Add(-70*pkDay), w.opLongExpired)
				return r, csrFor(t, pkKey(t, "p256"), opSubject(w), pkitest.SANExt(opSAN(t, w)))
			}, want: ActionDeny, codes: []Code{CodeCertExpired}},
		{name: "expired operational certificate, profile without grace", op: OpSren, profile: "nokeyreuse",
			req: renewal(func(w *world) *pkitest.Cert { return w.opExpired }, false, opSubject, opSAN), want: ActionDeny,
			codes: []Code{CodeCertExpired}},
		{name: "operational certificate on an IDevID-only profile", op: OpSren, profile: "idevid-only",
			req: renewal(theOp, false, opSubject, opSAN), want: ActionDeny, codes: []Code{CodeRequesterNotAllowed}},
		{name: "renewal into another profile", op: OpSren, profile: "nokeyreuse",
			req: func(t testing.TB, w *world) (Requester, *x509.CertificateRequest) {
				r, c := renewal(theOp, false, opSubject, opSAN)(t, w)
				r.IssuedProfile = "default"
				return r, c
			}, want: ActionDeny, codes: []Code{CodeRenewalProfileChanged}},
		{name: "renewal into a profile that accepts it", op: OpSren, profile: "renew-here",
			req: func(t testing.TB, w *world) (Requester, *x509.CertificateRequest) {
				r, c := renewal(theOp, false, opSubject, opSAN)(t, w)
				r.IssuedProfile = "default"
				return r, c
			}, want: ActionIssue},
		{name: "key reuse forbidden on renewal", op: OpSren, profile: "nokeyreuse",
			req: renewal(theOp, true, opSubject, opSAN), want: ActionDeny, codes: []Code{CodeKeyReuse}},
		{name: "key reuse forbidden: the IDevID key", profile: "nokeyreuse",
			req: func(t testing.TB, w *world) (Requester, *x509.CertificateRequest) {
				return w.idev(t, w.dev), csrFor(t, w.devKey, pkitest.Name())
			}, want: ActionDeny, codes: []Code{CodeKeyReuse}},
		{name: "key reuse allowed by default, flagged",
			req: func(t testing.TB, w *world) (Requester, *x509.CertificateRequest) {
				return w.idev(t, w.dev), csrFor(t, w.devKey, pkitest.Name())
			}, want: ActionIssue, check: func(t *testing.T, _ *world, d *Decision, _ *x509.Certificate) {
				if !d.KeyReused || d.Renewal != RenewalNone {
					t.Errorf("reused %v renewal %v", d.KeyReused, d.Renewal)
				}
			}},

		// Approval and rate limits.
		{name: "manual approval: pending", profile: "manual", req: demo(dev), want: ActionPending,
			codes: []Code{CodePendingApproval}, check: func(t *testing.T, _ *world, d *Decision, _ *x509.Certificate) {
				if d.RetryAfter != DefaultPendingMaxAge || d.Template == nil || d.Class() != ClassRetry {
					t.Errorf("retry %v template %v", d.RetryAfter, d.Template != nil)
				}
			}},
		{name: "manual approval: a retry stays pending", profile: "manual", req: demo(dev),
			counters: Counters{ThisPending: true, Pending: 2}, want: ActionPending, codes: []Code{CodePendingApproval}},
		{name: "manual approval: too many pending", profile: "manual", req: demo(dev), counters: Counters{Pending: 2},
			want: ActionDeny, codes: []Code{CodeTooManyPending}},
		{name: "manual approval: approved", profile: "manual", req: demo(dev), counters: Counters{Operator: OperatorApproved},
			want: ActionIssue},
		{name: "manual approval: rejected", profile: "manual", req: demo(dev), counters: Counters{Operator: OperatorRejected},
			want: ActionDeny, codes: []Code{CodeOperatorRejected}},
		{name: "approval does not excuse a bad CSR", profile: "manual", req: demo(pkitest.Name(pkitest.CN("admin"))),
			counters: Counters{Operator: OperatorApproved}, want: ActionDeny, codes: []Code{CodeSubjectNotBound}},
		{name: "rate limit reached", profile: "rated", req: demo(dev),
			counters: Counters{Issued: 2, OldestIssued: pkNow.Add(-20 * time.Minute)}, want: ActionDeny,
			codes: []Code{CodeRateLimited}, check: func(t *testing.T, _ *world, d *Decision, _ *x509.Certificate) {
				if d.RetryAfter != 40*time.Minute || d.Class() != ClassRetry {
					t.Errorf("retry after %v, class %v", d.RetryAfter, d.Class())
				}
			}},
		{name: "rate limit reached, oldest unknown", profile: "rated", req: demo(dev), counters: Counters{Issued: 3},
			want: ActionDeny, codes: []Code{CodeRateLimited}, check: func(t *testing.T, _ *world, d *Decision, _ *x509.Certificate) {
				if d.RetryAfter != time.Hour {
					t.Errorf("retry after %v", d.RetryAfter)
				}
			}},
		{name: "rate limit not reached", profile: "rated", req: demo(dev), counters: Counters{Issued: 1}, want: ActionIssue},
		{name: "rate limit: an operator approval overrides", profile: "rated", req: demo(dev),
			counters: Counters{Issued: 9, Operator: OperatorApproved}, want: ActionIssue},
		{name: "rate limit: a bad CSR is refused for what it is", profile: "rated", req: demo(pkitest.Name(pkitest.CN("admin"))),
			counters: Counters{Issued: 9}, want: ActionDeny, codes: []Code{CodeSubjectNotBound}},

		// Operations and server-side key generation.
		{name: "skg not offered by the profile", op: OpSkg, req: demo(dev), want: ActionDeny, codes: []Code{CodeOperationNotAllowed}},
		{name: "skg ignores the CSR's key and signature", op: OpSkg, profile: "keygen",
			req: keyed("p224", x509.ECDSAWithSHA1, 0, dev), want: ActionIssue,
			check: func(t *testing.T, _ *world, d *Decision, _ *x509.Certificate) {
				if d.Template.PublicKey != nil || d.Template.ServerKeyType != "ecdsa-p384" {
					t.Errorf("key %v server key %q", d.Template.PublicKey, d.Template.ServerKeyType)
				}
			}},
		{name: "skg still wants CSR version 0", op: OpSkg, profile: "keygen",
			req: keyed("p256", x509.ECDSAWithSHA256, 1, dev), want: ActionDeny, codes: []Code{CodeCSRVersion}},
		{name: "requester chain with a nil certificate", req: func(t testing.TB, w *world) (Requester, *x509.CertificateRequest) {
			r := w.idev(t, w.dev)
			r.Chain = append([]*x509.Certificate{r.Chain[0], nil}, r.Chain[1:]...)
			return r, csrFor(t, pkKey(t, "p256"), pkitest.Name())
		}, want: ActionDeny, codes: []Code{CodeInvalidRequest}},
		{name: "skc still binds the subject", op: OpSkc, profile: "keygen", req: demo(pkitest.Name(pkitest.CN("admin"))),
			want: ActionDeny, codes: []Code{CodeSubjectNotBound}},
		{name: "skg renewal by an operational certificate is a rekey", op: OpSkg, profile: "keygen",
			req: renewal(theOp, true, opSubject, opSAN), want: ActionIssue,
			check: func(t *testing.T, _ *world, d *Decision, _ *x509.Certificate) {
				if d.Renewal != RenewalRekey || d.KeyReused {
					t.Errorf("renewal %v reused %v", d.Renewal, d.KeyReused)
				}
			}},
		{name: "skg of a plain key where encryption is required", op: OpSkg, profile: "keygen-sealed", req: demo(dev),
			want: ActionDeny, codes: []Code{CodeKeyEncryptionRequired}, check: func(t *testing.T, _ *world, d *Decision, _ *x509.Certificate) {
				if d.Class() != ClassBadRequest {
					t.Errorf("class %v", d.Class())
				}
			}},
		{name: "skc of a plain key where encryption is required, with another finding", op: OpSkc, profile: "keygen-sealed",
			req: demo(pkitest.Name(pkitest.CN("admin"))), want: ActionDeny, codes: []Code{CodeSubjectNotBound, CodeKeyEncryptionRequired}},
		{name: "skg of an encrypted key where encryption is required, escrowed", op: OpSkg, profile: "keygen-sealed",
			encrypted: true, req: demo(dev), want: ActionIssue, check: func(t *testing.T, _ *world, d *Decision, _ *x509.Certificate) {
				if !d.Template.EscrowKey || d.Template.ServerKeyType != "ecdsa-p256" {
					t.Errorf("escrow %v server key %q", d.Template.EscrowKey, d.Template.ServerKeyType)
				}
			}},
		{name: "sen on a profile requiring encrypted server keys is not concerned", profile: "keygen-sealed", req: demo(dev),
			want: ActionIssue, check: func(t *testing.T, _ *world, d *Decision, _ *x509.Certificate) {
				if d.Template.EscrowKey || d.Template.ServerKeyType != "" {
					t.Errorf("escrow %v server key %q for sen", d.Template.EscrowKey, d.Template.ServerKeyType)
				}
			}},
		{name: "skg without escrow", op: OpSkg, profile: "keygen", req: demo(dev), want: ActionIssue,
			check: func(t *testing.T, _ *world, d *Decision, _ *x509.Certificate) {
				if d.Template.EscrowKey {
					t.Error("escrowed")
				}
			}},
		{name: "manual approval holds skg too", op: OpSkg, profile: "keygen-manual", req: demo(dev), want: ActionPending,
			codes: []Code{CodePendingApproval}},
		{name: "unknown profile", profile: "nope", req: demo(dev), want: ActionDeny, codes: []Code{CodeProfileUnknown}},
		{name: "request without time", at: time.Time{}.Add(1), req: demo(dev), want: ActionDeny, codes: []Code{CodeInvalidRequest}},
	}
}

func TestEvaluate(t *testing.T) {
	t.Parallel()
	w := getWorld(t)
	cases := evalCases()
	if len(cases) < 80 {
		t.Fatalf("only %d cases", len(cases))
	}
	seen := map[string]bool{}
	for _, tc := range cases {
		if seen[tc.name] {
			t.Fatalf("duplicate case %q", tc.name)
		}
		seen[tc.name] = true
		t.Run(tc.name, func(t *testing.T) {
			t.Parallel()
			r, csr := tc.req(t, w)
			op := tc.op
			if op == 0 {
				op = OpSen
			}
			at := tc.at
			switch {
			case at.IsZero():
				at = pkNow
			case at.Equal(time.Time{}.Add(1)):
				at = time.Time{}
			}
			d := w.e.Evaluate(Request{Requester: r, CSR: csr, Operation: op, Profile: tc.profile, Time: at, Counters: tc.counters,
				EncryptedKey: tc.encrypted})
			if d.Action != tc.want {
				t.Fatalf("action %s, want %s; reasons %v", d.Action, tc.want, d.Reasons)
			}
			for i, c := range tc.codes {
				if !d.Has(c) {
					t.Errorf("reason %s missing from %v", c, d.Reasons)
				} else if i == 0 && d.Reasons[0].Code != c {
					t.Errorf("first reason %s, want %s (%v)", d.Reasons[0].Code, c, d.Reasons)
				}
			}
			checkDecisionShape(t, w, r, &d)
			var cert *x509.Certificate
			if d.Template != nil {
				cert = w.issue(t, d.Template)
				checkBound(t, r, cert)
			}
			if tc.check != nil {
				tc.check(t, w, &d, cert)
			}
		})
	}
}

// checkDecisionShape checks what holds for every decision.
func checkDecisionShape(t *testing.T, w *world, r Requester, d *Decision) {
	t.Helper()
	switch d.Action {
	case ActionIssue:
		if len(d.Reasons) != 0 || d.Template == nil {
			t.Errorf("issue with reasons %v, template %v", d.Reasons, d.Template != nil)
		}
	case ActionPending:
		if d.Template == nil || d.RetryAfter <= 0 {
			t.Error("pending without template or Max-Age")
		}
	case ActionDeny:
		if len(d.Reasons) == 0 || d.Template != nil {
			t.Errorf("deny with reasons %v, template %v", d.Reasons, d.Template != nil)
		}
		if d.Class() == ClassRetry && d.RetryAfter < time.Second {
			t.Errorf("retry class without Max-Age")
		}
	}
	for i, rs := range d.Reasons {
		if rs.Text() == "" || strings.Contains(rs.Text(), "\x1b") || rs.Class() == 0 {
			t.Errorf("reason %v without client text or class", rs)
		}
		if strings.ContainsAny(rs.Detail, "\x00\x1b") || len(rs.Detail) > 200 {
			t.Errorf("reason detail carries raw request data: %q", rs.Detail)
		}
		if i > 0 && classRank(d.Reasons[i-1].Class()) > classRank(rs.Class()) {
			t.Errorf("reasons out of order: %v", d.Reasons)
		}
	}
	if r.Kind != "" && d.Identity != IdentityOf(r) && d.Reasons[0].Code != CodeProfileUnknown && d.Reasons[0].Code != CodeInvalidRequest {
		t.Errorf("identity %q, want %q", d.Identity, IdentityOf(r))
	}
}

// checkBound checks that an issued certificate names no other device than
// the requester: its serialNumber and hardwareModuleNames, if any, are the
// requester's.
func checkBound(t *testing.T, r Requester, cert *x509.Certificate) {
	t.Helper()
	if r.Kind == KindOperator {
		return
	}
	leaf := r.Chain[0]
	if sn := cert.Subject.SerialNumber; sn != "" && sn != leaf.Subject.SerialNumber {
		t.Errorf("issued serialNumber %q to %q", sn, leaf.Subject.SerialNumber)
	}
	v, ok := extValue(cert.Extensions, OIDSubjectAltName)
	if !ok {
		return
	}
	got, err := HardwareModuleNames(v)
	if err != nil {
		t.Fatalf("issued SAN: %v", err)
	}
	var own []HardwareModuleName
	if lv, ok := extValue(leaf.Extensions, OIDSubjectAltName); ok {
		own, _ = HardwareModuleNames(lv)
	}
	for _, h := range got {
		id := identity{hmns: own}
		if !id.hasHMN(h) {
			t.Errorf("issued hardwareModuleName %s not the requester's", h)
		}
	}
}
