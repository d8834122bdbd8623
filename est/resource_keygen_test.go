package est

import (
	"context"
	"crypto/x509"
	"crypto/x509/pkix"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/plgd-dev/go-coap/v3/message"
	"github.com/plgd-dev/go-coap/v3/message/codes"

	"github.com/estca/estca/ca"
	"github.com/estca/estca/ca/cms"
	"github.com/estca/estca/est/client"
	"github.com/estca/estca/est/wire"
	"github.com/estca/estca/policy/pkitest"
	"github.com/estca/estca/store"
)

// kgCSR is a /skg CSR asking for kr, with a throwaway key and an empty
// subject (the device profile binds the certificate to the requester's
// identity), or the subject CN cn.
func kgCSR(t testing.TB, cn string, kr *cms.KeyRequest) []byte {
	t.Helper()
	tmpl := &x509.CertificateRequest{RawSubject: []byte{0x30, 0}}
	if cn != "" {
		tmpl = &x509.CertificateRequest{Subject: pkix.Name{CommonName: cn}}
	}
	der, err := cms.CreateCertificateRequest(nil, tmpl, pkitest.Key(t), kr)
	if err != nil {
		t.Fatal(err)
	}
	return der
}

// TestKeygenResource serves /skg and /skc with the real authority: the
// multipart answer (key part first, 284 or 280, then 281 or 287) over
// block-wise transfers of several sizes, under every root, discovery, and
// the refusals with their CoAP codes and audit records.
func TestKeygenResource(t *testing.T) {
	e := rcStart(t)
	ctx, cancel := context.WithTimeout(context.Background(), 60*time.Second)
	defer cancel()
	device := pkitest.KeyPair(t, e.demo.Valid.Cert, e.demo.Valid.Key)
	id, err := client.KeyIdentifier(device.Leaf)
	if err != nil {
		t.Fatal(err)
	}
	kari := &cms.KeyRequest{Delivery: cms.DeliverAsymmetric, KeyID: id}
	dk := &cms.DecryptKey{PrivateKey: device.PrivateKey, Certificate: device.Leaf}

	for _, bs := range []int{16, 64, 1024} {
		o := client.Options{Server: "coaps://" + e.addr, Certificate: device, Roots: e.roots, Timeout: 20 * time.Second, BlockSize: bs}
		c, err := client.Dial(ctx, o)
		if err != nil {
			t.Fatal(err)
		}
		for _, skc := range []bool{false, true} {
			res, err := c.ServerKeygen(ctx, kgCSR(t, "", kari), skc)
			if err != nil {
				t.Fatalf("block size %d skc %t: %v", bs, skc, err)
			}
			parts, err := wire.ParseMultipart(res.Raw)
			if err != nil || len(parts) != 2 || parts[0].Format != wire.FormatServerGeneratedKey {
				t.Fatalf("parts %+v, %v", parts, err)
			}
			if _, err := client.OpenServerKey(res, dk, cms.VerifyOptions{Roots: e.roots}); err != nil {
				t.Fatalf("block size %d: %v", bs, err)
			}
		}
		_ = c.Close()
	}

	c, err := stDialName(t, e.addr, &device, e.roots, "localhost", 5*time.Second)
	if err != nil {
		t.Fatal(err)
	}
	for _, q := range []string{"rt=ace.est.sk*", "ct=62", "ct=6*", "href=/est/sk*"} {
		if r := c.do(stMsg{code: codes.GET, path: "/.well-known/core", opts: message.Options{
			{ID: message.URIQuery, Value: []byte(q)}}}); r.Code != codes.Content ||
			string(r.Payload) != `</est/skg>;rt="ace.est.skg";ct=62,</est/skc>;rt="ace.est.skc";ct=62` {
			t.Fatalf("discovery ?%s: %v %q", q, r.Code, r.Payload)
		}
	}
	if r := c.do(stMsg{code: codes.GET, path: "/.well-known/core"}); r.Code != codes.Content ||
		!strings.Contains(string(r.Payload), `</est/att>;rt="ace.est.att";ct=285,</est/skg>;rt="ace.est.skg";ct=62,</est/skc>;rt="ace.est.skc";ct=62,</est/crl>`) {
		t.Fatalf("discovery: %v %q", r.Code, r.Payload)
	}
	plain := kgCSR(t, "", &cms.KeyRequest{})
	ct, acc62 := stUint(message.ContentFormat, 286), stUint(message.Accept, 62)
	for _, path := range []string{"/.well-known/est/skg", "/.well-known/est/device/skg", "/est/skg", "/est/device/skg", "/est/skc",
		"/.well-known/est/device/skc"} {
		r := c.do(stMsg{code: codes.POST, path: path, opts: message.Options{ct, acc62, stBlock(message.Block2, 0, false, 6)}, payload: plain})
		if r.Code != codes.Changed {
			t.Fatalf("%s: %v %q", path, r.Code, r.Payload)
		}
		if f, _ := r.uintOpt(message.ContentFormat); f != 62 {
			t.Fatalf("%s: Content-Format %d", path, f)
		}
	}

	records := func() []store.AuditRecord {
		recs, err := e.db.AuditRecords(store.AuditFilter{})
		if err != nil {
			t.Fatal(err)
		}
		return recs
	}
	unknownID := kgCSR(t, "", &cms.KeyRequest{Delivery: cms.DeliverAsymmetric, KeyID: []byte("no such key")})
	unknownKEK := kgCSR(t, "", &cms.KeyRequest{Delivery: cms.DeliverKEK, KeyID: []byte("no such kek")})
	for _, tc := range []struct {
		name   string
		msg    stMsg
		code   codes.Code
		diag   string
		record string // the audit reason's start
	}{
		{"wrong Content-Format", stMsg{code: codes.POST, path: "/est/skg", opts: message.Options{stUint(message.ContentFormat, 0), acc62}, payload: plain},
			codes.UnsupportedMediaType, "unsupported content-format", "POST skg 4.15: unsupported content-format"},
		{"wrong Accept", stMsg{code: codes.POST, path: "/est/skg", opts: message.Options{ct, stUint(message.Accept, 281)}, payload: plain},
			codes.NotAcceptable, "not acceptable", "POST skg 4.06: not acceptable"},
		{"GET", stMsg{code: codes.GET, path: "/est/skc"}, codes.MethodNotAllowed, "method not allowed", "GET skc 4.05: method not allowed"},
		{"empty", stMsg{code: codes.POST, path: "/est/skg", opts: message.Options{ct, acc62}}, codes.BadRequest, "empty request", "POST skg 4.00: empty request"},
		{"identifier matching no key", stMsg{code: codes.POST, path: "/est/skg", opts: message.Options{ct, acc62}, payload: unknownID},
			codes.BadRequest, "no recipient key matches the identifier", "skg: no recipient key matches the identifier"},
		{"unknown KEK", stMsg{code: codes.POST, path: "/est/skc", opts: message.Options{ct}, payload: unknownKEK},
			codes.BadRequest, "unknown key-encryption key", "skc: unknown key-encryption key"},
		{"malformed CSR", stMsg{code: codes.POST, path: "/est/skg", opts: message.Options{ct, acc62}, payload: []byte("no CSR")},
			codes.BadRequest, "malformed CSR", "skg: csr-malformed (bad-request)"},
		{"subject not the device's", stMsg{code: codes.POST, path: "/.well-known/est/device/skg", opts: message.Options{ct, acc62},
			payload: kgCSR(t, "admin", &cms.KeyRequest{})}, codes.Forbidden, "subject does not match your identity",
			"skg: subject-not-bound (forbidden)"},
		{"skc not offered by the profile", stMsg{code: codes.POST, path: "/est/held/skc", opts: message.Options{ct, acc62}, payload: plain},
			codes.Forbidden, "operation not allowed for this profile", "skc: operation-not-allowed (forbidden)"},
	} {
		before := len(records())
		r := c.do(tc.msg)
		if r.Code != tc.code || string(r.Payload) != tc.diag {
			t.Fatalf("%s: %v %q", tc.name, r.Code, r.Payload)
		}
		recs := records()
		if len(recs) != before+1 {
			t.Fatalf("%s: %d records, want 1", tc.name, len(recs)-before)
		}
		last := recs[len(recs)-1]
		if !strings.HasPrefix(last.Reason, tc.record) || last.Event != store.EventDenied {
			t.Errorf("%s: record %+v", tc.name, last)
		}
		// Refusals of the authority (not of the CoAP layer) are flagged.
		if strings.HasPrefix(tc.record, "sk") && !slices.Contains(last.Flags, ca.FlagServerKeygen) {
			t.Errorf("%s: flags %v", tc.name, last.Flags)
		}
	}
	// Still serving.
	if r := c.do(stMsg{code: codes.POST, path: "/est/skg", opts: message.Options{ct, acc62, stBlock(message.Block2, 0, false, 6)}, payload: plain}); r.Code != codes.Changed {
		t.Fatalf("after the refusals: %v", r.Code)
	}
}
