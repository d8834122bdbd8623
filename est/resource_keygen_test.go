package est

import (
	"bytes"
	"context"
	"crypto"
	"crypto/sha256"
	"crypto/x509"
	"crypto/x509/pkix"
	"encoding/hex"
	"fmt"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/plgd-dev/go-coap/v3/message"
	"github.com/plgd-dev/go-coap/v3/message/codes"
	"github.com/plgd-dev/go-coap/v3/udp/coder"

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
			if _, err := client.OpenServerKey(res, dk, cms.VerifyOptions{Roots: e.roots, Intermediates: []*x509.Certificate{e.h.Issuing}}); err != nil {
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

// TestKeygenTransport: /skg under the CoAP layer's rules, with the
// smallest response cache the configuration allows (one entry of 1280
// bytes). The Block2 size of the whole answer is the one the first request
// asked for; a retransmission (same Message ID) of the first request and
// of the last block is answered again, byte for byte, without running the
// request again (no second key or certificate); a NON request gets NON
// answers; a profile with manual approval answers 5.03 with its Max-Age
// and generates no key before the approval.
func TestKeygenTransport(t *testing.T) {
	e := rcServe(t, rcAuthority(t), func(o *Options) { o.ResponseCache = ResponseCacheLimits{Entries: 1, Bytes: 4096} })
	device := pkitest.KeyPair(t, e.demo.Valid.Cert, e.demo.Valid.Key)
	c, err := stDialName(t, e.addr, &device, e.roots, "localhost", 5*time.Second)
	if err != nil {
		t.Fatal(err)
	}
	ct, acc62 := stUint(message.ContentFormat, 286), stUint(message.Accept, 62)
	issued := func() int {
		n, err := e.db.CountCertificates()
		if err != nil {
			t.Fatal(err)
		}
		return n
	}
	// retransmit sends m again with the Message ID and token of the last
	// exchange and checks that the answer is r again. Like a client, it
	// retransmits until answered: go-coap drops a duplicate that arrives
	// before it has finished with the original (its answer is on its way).
	retransmit := func(what string, m stMsg, r stReply) {
		t.Helper()
		before := issued()
		raw := m.encode(c.mid, []byte{byte(c.tok >> 8), byte(c.tok), 0xe5})
		buf := make([]byte, 4096)
		var n int
		for try := 0; ; try++ {
			if _, err := c.c.Write(raw); err != nil {
				t.Fatal(err)
			}
			_ = c.c.SetReadDeadline(time.Now().Add(time.Second))
			if n, err = c.c.Read(buf); err == nil {
				break
			}
			if try == 4 {
				t.Fatalf("%s: retransmission: %v; log:\n%s", what, err, e.logs)
			}
		}
		again := message.Message{Options: make(message.Options, 0, 8)}
		if _, err := coder.DefaultCoder.Decode(buf[:n], &again); err != nil {
			t.Fatal(err)
		}
		if again.MessageID != r.MessageID || again.Code != r.Code || !bytes.Equal(again.Payload, r.Payload) {
			t.Fatalf("%s: retransmission answered %v %d bytes, want the first answer %v %d bytes", what, again.Code,
				len(again.Payload), r.Code, len(r.Payload))
		}
		if issued() != before {
			t.Fatalf("%s: the retransmission issued a certificate", what)
		}
	}

	// A plain P-256 key fits one 1024-byte block (about 650 bytes).
	m := stMsg{code: codes.POST, path: "/est/device/skg", opts: message.Options{ct, acc62}, payload: kgCSR(t, "", &cms.KeyRequest{})}
	r := c.do(m)
	if _, ok := r.block(t, message.Block2); r.Code != codes.Changed || ok {
		t.Fatalf("one-block answer: %v", r.Code)
	}
	retransmit("one-block answer", m, r)

	// The key encrypted to the device's IDevID (KARI), with the signer's
	// certificate in the SignedData: an answer of about 1.6 KiB, two
	// blocks of 1024 bytes.
	id, err := client.KeyIdentifier(device.Leaf)
	if err != nil {
		t.Fatal(err)
	}
	kari := &cms.KeyRequest{Delivery: cms.DeliverAsymmetric, KeyID: id}
	for _, szx := range []uint8{2, 6} { // 64 and 1024 bytes
		m := stMsg{code: codes.POST, path: "/.well-known/est/device/skg", opts: message.Options{ct, acc62,
			stBlock(message.Block2, 0, false, szx)}, payload: kgCSR(t, "", kari)}
		first := c.do(m)
		b2, ok := first.block(t, message.Block2)
		if first.Code != codes.Changed || !ok || b2.SZX != szx || !b2.More || len(first.Payload) != 16<<szx {
			t.Fatalf("szx %d: first reply %v %v (%d bytes)", szx, first.Code, b2, len(first.Payload))
		}
		retransmit(fmt.Sprintf("szx %d block 0", szx), m, first)
		body := bytes.Clone(first.Payload)
		for b2.More {
			next := b2.Num + 1
			m := stMsg{code: codes.POST, path: "/.well-known/est/device/skg", opts: message.Options{stBlock(message.Block2, next, false, szx)}}
			r := c.do(m)
			nb, _ := r.block(t, message.Block2)
			if r.Code != codes.Changed || nb.Num != next || nb.SZX != szx {
				t.Fatalf("szx %d block %d: %v %v", szx, next, r.Code, nb)
			}
			if !nb.More {
				retransmit(fmt.Sprintf("szx %d last block", szx), m, r)
			}
			body = append(body, r.Payload...)
			b2 = nb
		}
		parts, err := wire.ParseMultipart(body)
		if err != nil || len(parts) != 2 || parts[0].Format != wire.FormatServerGeneratedKey || parts[1].Format != wire.FormatCertsOnly {
			t.Fatalf("szx %d: parts %+v, %v", szx, parts, err)
		}
		certs, err := wire.ParseCertsOnly(parts[1].Data)
		if err != nil {
			t.Fatal(err)
		}
		if _, err := client.OpenServerKey(&client.KeygenResult{Raw: body, KeyFormat: parts[0].Format, Key: parts[0].Data,
			CertFormat: parts[1].Format, Certificates: certs}, &cms.DecryptKey{PrivateKey: device.PrivateKey, Certificate: device.Leaf},
			cms.VerifyOptions{Roots: e.roots, Intermediates: []*x509.Certificate{e.h.Issuing}}); err != nil {
			t.Fatalf("szx %d: %v", szx, err)
		}
	}

	// A plain key in 64-byte blocks: delivered intact, and once the last
	// block is out the block layer holds nothing of it (its stored
	// response was zeroed and dropped: TestSensitiveResponseCleared).
	t.Run("plain key block-wise", func(t *testing.T) {
		before := e.srv.blocks.Stats() // the KARI responses above are kept until they expire
		m := stMsg{code: codes.POST, path: "/est/device/skg", opts: message.Options{ct, acc62, stBlock(message.Block2, 0, false, 2)},
			payload: kgCSR(t, "", &cms.KeyRequest{})}
		first := c.do(m)
		if b2, ok := first.block(t, message.Block2); first.Code != codes.Changed || !ok || !b2.More {
			t.Fatalf("first block: %v %v", first.Code, b2)
		}
		if st := e.srv.blocks.Stats(); st.Responses != before.Responses+1 {
			t.Fatalf("during the transfer: %+v, before %+v", st, before)
		}
		body := stFetchBlock2(t, c, codes.POST, "/est/device/skg", first, nil)
		parts, err := wire.ParseMultipart(body)
		if err != nil || len(parts) != 2 || parts[0].Format != wire.FormatPKCS8 {
			t.Fatalf("parts %+v, %v", parts, err)
		}
		key, err := x509.ParsePKCS8PrivateKey(parts[0].Data)
		if err != nil {
			t.Fatalf("the key delivered block-wise: %v", err)
		}
		certs, err := wire.ParseCertsOnly(parts[1].Data)
		if err != nil || !key.(crypto.Signer).Public().(interface{ Equal(crypto.PublicKey) bool }).Equal(certs[0].PublicKey) {
			t.Fatalf("key does not match its certificate (%v)", err)
		}
		if st := e.srv.blocks.Stats(); st != before {
			t.Fatalf("after the last block: %+v, before %+v", st, before)
		}
	})

	t.Run("NON request, NON answers", func(t *testing.T) {
		r, ok := c.roundTrip(stMsg{typ: message.NonConfirmable, code: codes.POST, path: "/est/device/skc",
			opts: message.Options{ct, acc62, stBlock(message.Block2, 0, false, 6)}, payload: kgCSR(t, "", &cms.KeyRequest{})}, 5*time.Second)
		if !ok || r.Type != message.NonConfirmable || r.Code != codes.Changed {
			t.Fatalf("NON skc: %+v (%v)", r.Message, ok)
		}
		if f, _ := r.uintOpt(message.ContentFormat); f != 62 {
			t.Fatalf("NON skc: Content-Format %d", f)
		}
	})

	t.Run("manual approval", func(t *testing.T) {
		before := issued()
		csr := kgCSR(t, "", &cms.KeyRequest{})
		for range 2 {
			r := c.do(stMsg{code: codes.POST, path: "/est/held/skg", opts: message.Options{ct, acc62}, payload: csr})
			if age, _ := r.uintOpt(message.MaxAge); r.Code != codes.ServiceUnavailable || age != 90 {
				t.Fatalf("held skg: %v Max-Age %d %q", r.Code, age, r.Payload)
			}
		}
		if issued() != before {
			t.Fatal("a held request was issued")
		}
		sum := sha256.Sum256(csr)
		q, err := e.db.FindPending(hex.EncodeToString(sum[:]))
		if err != nil || q.Profile != "held" {
			t.Fatalf("pending %+v, %v", q, err)
		}
		if _, err := e.db.Decide(q.Requester.Fingerprint, q.CSRDigest, true, "ok", store.AuditRecord{Verdict: "approved"}); err != nil {
			t.Fatal(err)
		}
		r := c.do(stMsg{code: codes.POST, path: "/est/held/skg", opts: message.Options{ct, acc62, stBlock(message.Block2, 0, false, 6)}, payload: csr})
		if r.Code != codes.Changed {
			t.Fatalf("approved skg: %v %q", r.Code, r.Payload)
		}
		body := stFetchBlock2(t, c, codes.POST, "/est/held/skg", r, nil)
		if parts, err := wire.ParseMultipart(body); err != nil || len(parts) != 2 {
			t.Fatalf("approved skg: %+v, %v", parts, err)
		}
		// Delivered once: the identical retry is refused.
		r = c.do(stMsg{code: codes.POST, path: "/est/held/skg", opts: message.Options{ct, acc62}, payload: csr})
		if r.Code != codes.Forbidden {
			t.Fatalf("retry of a delivered request: %v %q", r.Code, r.Payload)
		}
		if issued() != before+1 {
			t.Fatalf("%d certificates for one approved request", issued()-before)
		}
	})
}
