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

// kgCSR is a /skg CSR asking for kr, with a throwaway key.
func kgCSR(t testing.TB, cn string, kr *cms.KeyRequest) []byte {
	t.Helper()
	der, err := cms.CreateCertificateRequest(nil, &x509.CertificateRequest{Subject: pkix.Name{CommonName: cn}}, pkitest.Key(t), kr)
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
			res, err := c.ServerKeygen(ctx, kgCSR(t, "block", kari), skc)
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
	if r := c.do(stMsg{code: codes.GET, path: "/.well-known/core", opts: message.Options{
		{ID: message.URIQuery, Value: []byte("rt=ace.est.sk*")}}}); r.Code != codes.Content ||
		string(r.Payload) != `</est/skg>;rt="ace.est.skg";ct=62,</est/skc>;rt="ace.est.skc";ct=62` {
		t.Fatalf("discovery: %v %q", r.Code, r.Payload)
	}
	plain := kgCSR(t, "plain", &cms.KeyRequest{})
	ct, acc62 := stUint(message.ContentFormat, 286), stUint(message.Accept, 62)
	for _, path := range []string{"/.well-known/est/skg", "/est/skg", "/est/device/skg", "/est/skc"} {
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
	unknownID := kgCSR(t, "x", &cms.KeyRequest{Delivery: cms.DeliverAsymmetric, KeyID: []byte("no such key")})
	unknownKEK := kgCSR(t, "x", &cms.KeyRequest{Delivery: cms.DeliverKEK, KeyID: []byte("no such kek")})
	for _, tc := range []struct {
		name   string
		msg    stMsg
		code   codes.Code
		diag   string
		record string // the audit reason, up to " (peer "
	}{
		{"wrong Content-Format", stMsg{code: codes.POST, path: "/est/skg", opts: message.Options{stUint(message.ContentFormat, 0), acc62}, payload: plain},
			codes.UnsupportedMediaType, "unsupported content-format", "POST skg 4.15: unsupported content-format"},
		{"wrong Accept", stMsg{code: codes.POST, path: "/est/skg", opts: message.Options{ct, stUint(message.Accept, 281)}, payload: plain},
			codes.NotAcceptable, "not acceptable", "POST skg 4.06: not acceptable"},
		{"GET", stMsg{code: codes.GET, path: "/est/skc"}, codes.MethodNotAllowed, "method not allowed", "GET skc 4.05: method not allowed"},
		{"empty", stMsg{code: codes.POST, path: "/est/skg", opts: message.Options{ct, acc62}}, codes.BadRequest, "empty request", "POST skg 4.00: empty request"},
		{"identifier matching no key", stMsg{code: codes.POST, path: "/est/skg", opts: message.Options{ct, acc62}, payload: unknownID},
			codes.BadRequest, "no recipient key matches the identifier", "no recipient key matches the identifier"},
		{"unknown KEK", stMsg{code: codes.POST, path: "/est/skc", opts: message.Options{ct}, payload: unknownKEK},
			codes.BadRequest, "unknown key-encryption key", "unknown key-encryption key"},
		{"malformed CSR", stMsg{code: codes.POST, path: "/est/skg", opts: message.Options{ct, acc62}, payload: []byte("no CSR")},
			codes.BadRequest, "malformed CSR", "malformed CSR"},
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
		if reason, _, _ := strings.Cut(recs[len(recs)-1].Reason, " (peer "); reason != tc.record || recs[len(recs)-1].Event != store.EventDenied {
			t.Errorf("%s: record %+v", tc.name, recs[len(recs)-1])
		}
		if tc.record == tc.diag && !slices.Contains(recs[len(recs)-1].Flags, ca.FlagServerKeygen) {
			t.Errorf("%s: flags %v", tc.name, recs[len(recs)-1].Flags)
		}
	}
	// Still serving.
	if r := c.do(stMsg{code: codes.POST, path: "/est/skg", opts: message.Options{ct, acc62, stBlock(message.Block2, 0, false, 6)}, payload: plain}); r.Code != codes.Changed {
		t.Fatalf("after the refusals: %v", r.Code)
	}
}
