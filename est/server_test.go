package est

import (
	"bytes"
	"context"
	"crypto/tls"
	"crypto/x509"
	"errors"
	"io"
	"net/http/httptest"
	"strings"
	"testing"
	"time"

	"github.com/plgd-dev/go-coap/v3/message"
	"github.com/plgd-dev/go-coap/v3/message/codes"

	"github.com/estca/estca/est/wire"
	"github.com/estca/estca/policy/pkitest"
)

func stCertsOnly(t *testing.T, b []byte) []*x509.Certificate {
	t.Helper()
	certs, err := wire.ParseCertsOnly(b)
	if err != nil {
		t.Fatalf("certs-only: %v", err)
	}
	return certs
}

func TestServerResources(t *testing.T) {
	t.Parallel()
	e := stStart(t, nil)
	c := e.dial(t)
	csr, key := stCSR(t, "device 0001", 0)
	pending, _ := stCSR(t, stCNPending, 0)
	boom, _ := stCSR(t, stCNBoom, 0)
	denied, _ := stCSR(t, stCNDenied, 0)
	ctCSR := stUint(message.ContentFormat, uint32(wire.FormatPKCS10))

	tests := []struct {
		name   string
		msg    stMsg
		code   codes.Code
		format int    // expected Content-Format, -1 none
		diag   string // expected diagnostic payload for errors
		check  func(t *testing.T, r stReply)
	}{
		{name: "crts default 281", msg: stMsg{code: codes.GET, path: "/.well-known/est/crts"}, code: codes.Content, format: 281,
			check: func(t *testing.T, r stReply) {
				certs := stCertsOnly(t, r.Payload)
				if len(certs) != 1 || !certs[0].Equal(e.ca.Cert) {
					t.Fatalf("crts: got %d certs", len(certs))
				}
			}},
		{name: "crts accept 281", msg: stMsg{code: codes.GET, path: "/est/crts", opts: message.Options{stUint(message.Accept, 281)}}, code: codes.Content, format: 281},
		{name: "crts accept 287", msg: stMsg{code: codes.GET, path: "/.well-known/est/crts", opts: message.Options{stUint(message.Accept, 287)}}, code: codes.Content, format: 287,
			check: func(t *testing.T, r stReply) {
				if !bytes.Equal(r.Payload, e.ca.Cert.Raw) {
					t.Fatal("287 payload is not the issuing CA certificate")
				}
			}},
		{name: "crts accept 62", msg: stMsg{code: codes.GET, path: "/.well-known/est/crts", opts: message.Options{stUint(message.Accept, 62)}}, code: codes.NotAcceptable, format: -1, diag: "not acceptable"},
		{name: "crts POST", msg: stMsg{code: codes.POST, path: "/.well-known/est/crts"}, code: codes.MethodNotAllowed, format: -1, diag: "method not allowed"},
		{name: "att", msg: stMsg{code: codes.GET, path: "/.well-known/est/att"}, code: codes.Content, format: 285,
			check: func(t *testing.T, r stReply) {
				if !bytes.Equal(r.Payload, stCSRAttrs) {
					t.Fatalf("att payload % x", r.Payload)
				}
			}},
		{name: "att accept 281", msg: stMsg{code: codes.GET, path: "/est/att", opts: message.Options{stUint(message.Accept, 281)}}, code: codes.NotAcceptable, format: -1},
		{name: "sen 281", msg: stMsg{code: codes.POST, path: "/.well-known/est/sen", opts: message.Options{ctCSR}, payload: csr}, code: codes.Changed, format: 281,
			check: func(t *testing.T, r stReply) {
				certs := stCertsOnly(t, r.Payload)
				if len(certs) != 1 || !key.PublicKey.Equal(certs[0].PublicKey) {
					t.Fatal("sen: certificate does not carry the CSR key")
				}
			}},
		{name: "sen accept 287", msg: stMsg{code: codes.POST, path: "/est/sen", opts: message.Options{ctCSR, stUint(message.Accept, 287)}, payload: csr}, code: codes.Changed, format: 287,
			check: func(t *testing.T, r stReply) {
				if _, err := x509.ParseCertificate(r.Payload); err != nil {
					t.Fatal(err)
				}
			}},
		{name: "sen accept 285", msg: stMsg{code: codes.POST, path: "/est/sen", opts: message.Options{ctCSR, stUint(message.Accept, 285)}, payload: csr}, code: codes.NotAcceptable, format: -1},
		{name: "sren label", msg: stMsg{code: codes.POST, path: "/est/iot/sren", opts: message.Options{ctCSR}, payload: csr}, code: codes.Changed, format: 281},
		{name: "sen no content-format", msg: stMsg{code: codes.POST, path: "/est/sen", payload: csr}, code: codes.UnsupportedMediaType, format: -1, diag: "unsupported content-format"},
		{name: "sen wrong content-format", msg: stMsg{code: codes.POST, path: "/est/sen", opts: message.Options{stUint(message.ContentFormat, 42)}, payload: csr}, code: codes.UnsupportedMediaType, format: -1},
		{name: "sen GET", msg: stMsg{code: codes.GET, path: "/est/sen"}, code: codes.MethodNotAllowed, format: -1},
		{name: "sen empty", msg: stMsg{code: codes.POST, path: "/est/sen", opts: message.Options{ctCSR}}, code: codes.BadRequest, format: -1, diag: "empty request"},
		{name: "sen garbage CSR", msg: stMsg{code: codes.POST, path: "/est/sen", opts: message.Options{ctCSR}, payload: []byte{0x30, 0x03, 1, 2, 3}}, code: codes.BadRequest, format: -1, diag: "malformed CSR"},
		{name: "sen pending", msg: stMsg{code: codes.POST, path: "/est/sen", opts: message.Options{ctCSR}, payload: pending}, code: codes.ServiceUnavailable, format: -1, diag: "pending approval",
			check: func(t *testing.T, r stReply) {
				if v, ok := r.uintOpt(message.MaxAge); !ok || v != 7 {
					t.Fatalf("Max-Age %d %v, want 7", v, ok)
				}
			}},
		{name: "sen internal", msg: stMsg{code: codes.POST, path: "/est/sen", opts: message.Options{ctCSR}, payload: boom}, code: codes.InternalServerError, format: -1, diag: "internal error"},
		{name: "sen forbidden", msg: stMsg{code: codes.POST, path: "/est/sen", opts: message.Options{ctCSR}, payload: denied}, code: codes.Forbidden, format: -1, diag: "not allowed"},
		{name: "unknown label", msg: stMsg{code: codes.GET, path: "/est/nope/crts"}, code: codes.NotFound, format: -1, diag: "unknown label"},
		{name: "known label", msg: stMsg{code: codes.GET, path: "/est/iot/crts"}, code: codes.Content, format: 281},
		{name: "unknown resource", msg: stMsg{code: codes.GET, path: "/.well-known/est/cacerts"}, code: codes.NotFound, format: -1},
		{name: "skg routed not implemented", msg: stMsg{code: codes.POST, path: "/.well-known/est/skg", opts: message.Options{ctCSR}, payload: csr}, code: codes.NotFound, format: -1, diag: "not implemented"},
		{name: "skc routed not implemented", msg: stMsg{code: codes.POST, path: "/est/iot/skc", opts: message.Options{ctCSR}, payload: csr}, code: codes.NotFound, format: -1, diag: "not implemented"},
		{name: "root path", msg: stMsg{code: codes.GET, path: ""}, code: codes.NotFound, format: -1},
		{name: "PUT", msg: stMsg{code: codes.PUT, path: "/est/crts"}, code: codes.MethodNotAllowed, format: -1},
		{name: "FETCH", msg: stMsg{code: 5, path: "/est/crts"}, code: codes.MethodNotAllowed, format: -1},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			r := c.do(tt.msg)
			if r.Code != tt.code {
				t.Fatalf("code %v (%q), want %v", r.Code, r.Payload, tt.code)
			}
			if r.Type != message.Acknowledgement {
				t.Errorf("type %v, want piggybacked ACK", r.Type)
			}
			f, has := r.uintOpt(message.ContentFormat)
			if tt.format == -1 && has || tt.format >= 0 && (!has || int(f) != tt.format) {
				t.Errorf("content-format %d (present %v), want %d", f, has, tt.format)
			}
			if tt.diag != "" && string(r.Payload) != tt.diag {
				t.Errorf("diagnostic %q, want %q", r.Payload, tt.diag)
			}
			if tt.check != nil {
				tt.check(t, r)
			}
		})
	}
	if _, profiles := e.auth.counts(); !strings.Contains(strings.Join(profiles, ","), "iot") {
		t.Errorf("label not passed as profile: %v", profiles)
	}
	if e.auth.renews != 1 {
		t.Errorf("renews %d, want 1 (/sren)", e.auth.renews)
	}
	logs := e.logs.String()
	if !strings.Contains(logs, `msg="internal error" req=`) || !strings.Contains(logs, "disk on fire") {
		t.Errorf("internal error detail not logged under its request id:\n%s", logs)
	}
	// Requests are counted and logged once the answer is sent.
	stScrapeUntil(t, e.srv.Metrics(),
		`estca_est_issuance_seconds_count{outcome="issued"} 3`,
		`estca_est_issuance_seconds_count{outcome="pending"} 1`,
		`estca_est_issuance_seconds_count{outcome="internal"} 1`,
		`estca_est_requests_total{code="4.04",resource="-"}`,
		`estca_est_requests_total{code="2.04",resource="iot/sren"} 1`,
		`estca_est_sessions_active 1`)
	logs = e.logs.String()
	if !strings.Contains(logs, "identity=") || !strings.Contains(logs, `subject="CN=device 0001"`) {
		t.Errorf("request log line lacks identity/subject:\n%s", logs)
	}
}

func TestServerDiscovery(t *testing.T) {
	t.Parallel()
	e := stStart(t, nil)
	c := e.dial(t)
	est := `</est/crts>;rt="ace.est.crts";ct="281 287",</est/sen>;rt="ace.est.sen";ct="281 287",` +
		`</est/sren>;rt="ace.est.sren";ct="281 287",</est/att>;rt="ace.est.att";ct=285`
	crl := `</est/crl>;rt="estca.crl";ct=281`
	all := est + "," + crl
	tests := []struct {
		query []string
		code  codes.Code
		body  string
	}{
		{nil, codes.Content, all},
		{[]string{"rt=ace.est*"}, codes.Content, est},
		{[]string{"rt=estca.crl"}, codes.Content, crl},
		{[]string{"rt=ace.est.s*"}, codes.Content, `</est/sen>;rt="ace.est.sen";ct="281 287",</est/sren>;rt="ace.est.sren";ct="281 287"`},
		{[]string{"rt=ace.est.crts"}, codes.Content, `</est/crts>;rt="ace.est.crts";ct="281 287"`},
		{[]string{"rt=ace.est.skg"}, codes.NotFound, "no matching link"},
		{[]string{"rt=core.rd*"}, codes.NotFound, "no matching link"},
		{[]string{"href=/est/att"}, codes.Content, `</est/att>;rt="ace.est.att";ct=285`},
		{[]string{"rt=ace.est*", "if=sensor"}, codes.NotFound, "no matching link"},
	}
	for _, tt := range tests {
		var opts message.Options
		for _, q := range tt.query {
			opts = append(opts, message.Option{ID: message.URIQuery, Value: []byte(q)})
		}
		r := c.do(stMsg{code: codes.GET, path: "/.well-known/core", opts: opts})
		if r.Code != tt.code || string(r.Payload) != tt.body {
			t.Errorf("%v: %v %q, want %v %q", tt.query, r.Code, r.Payload, tt.code, tt.body)
		}
		if f, ok := r.uintOpt(message.ContentFormat); tt.code == codes.Content && (!ok || f != 40) {
			t.Errorf("%v: content-format %d %v, want 40", tt.query, f, ok)
		}
	}
	if r := c.do(stMsg{code: codes.GET, path: "/.well-known/core", opts: message.Options{stUint(message.Accept, 50)}}); r.Code != codes.NotAcceptable {
		t.Errorf("discovery with Accept 50: %v", r.Code)
	}
	// The link format parser of the client package reads what the server writes.
	links, err := wire.ParseLinks([]byte(all))
	if err != nil || len(links) != 5 {
		t.Fatalf("wire.ParseLinks: %v %d", err, len(links))
	}
}

// TestServerHandshakeRejects checks that no application data is served to
// clients without an acceptable certificate, that each failure is counted
// by reason, and that the server keeps serving.
func TestServerHandshakeRejects(t *testing.T) {
	t.Parallel()
	e := stStart(t, nil)
	selfCert := pkitest.NewCA(t, "self-signed device").TLS()
	otherCert := pkitest.NewCA(t, "other manufacturer").Issue(t, pkitest.ClientAuth("device of other CA")).TLS()
	cases := []struct {
		name   string
		cert   *tls.Certificate
		reason string
	}{
		{"no client certificate", nil, ReasonNoCertificate},
		{"self-signed", &selfCert, ReasonUnauthenticated},
		{"unknown CA", &otherCert, ReasonUnauthenticated},
	}
	for _, tc := range cases {
		c, err := stDialErr(t, e.addr, tc.cert, e.roots)
		if err == nil {
			// The handshake must not complete; if pion reports success on
			// the client side, no request may be answered.
			if _, ok := c.roundTrip(stMsg{code: codes.GET, path: "/.well-known/est/crts"}, 300*time.Millisecond); ok {
				t.Fatalf("%s: served application data", tc.name)
			}
		}
		// The server keeps serving a good client.
		if r := e.dial(t).do(stMsg{code: codes.GET, path: "/.well-known/est/crts"}); r.Code != codes.Content {
			t.Fatalf("after %s: %v", tc.name, r.Code)
		}
	}
	stScrapeUntil(t, e.srv.Metrics(),
		`estca_est_handshake_failures_total{reason="no-certificate"} 1`,
		`estca_est_handshake_failures_total{reason="unauthenticated"} 2`,
		`estca_est_requests_total{code="2.05",resource="crts"} 3`)
}

// stScrapeUntil waits up to 5 s for the metrics to hold every wanted line:
// a client may see the handshake alert before the server has counted it.
func stScrapeUntil(t *testing.T, m *Metrics, wants ...string) {
	t.Helper()
	for deadline := time.Now().Add(5 * time.Second); ; time.Sleep(10 * time.Millisecond) {
		body := stScrape(t, m)
		missing := ""
		for _, w := range wants {
			if !strings.Contains(body, w) {
				missing = w
				break
			}
		}
		if missing == "" {
			return
		}
		if time.Now().After(deadline) {
			t.Fatalf("metrics lack %s:\n%s", missing, body)
		}
	}
}

func stScrape(t *testing.T, m *Metrics) string {
	t.Helper()
	rec := httptest.NewRecorder()
	m.Handler().ServeHTTP(rec, httptest.NewRequest("GET", "/metrics", nil))
	b, _ := io.ReadAll(rec.Body)
	return string(b)
}

func TestServerLimits(t *testing.T) {
	t.Parallel()
	e := stStart(t, func(o *Options) {
		o.HandshakeRate = 0.001
		o.HandshakeBurst = 2
	})
	e.dial(t)
	e.dial(t)
	if c, err := stDialTimeout(t, e.addr, &e.client, e.roots, time.Second); err == nil {
		c.c.Close()
		t.Fatal("third handshake from the same address within the burst was admitted")
	}
	if !strings.Contains(stScrape(t, e.srv.Metrics()), `reason="rate-limited"`) {
		t.Error("rate-limited handshake not counted")
	}

	e2 := stStart(t, func(o *Options) { o.MaxSessions = 1 })
	c := e2.dial(t)
	if _, err := stDialTimeout(t, e2.addr, &e2.client, e2.roots, time.Second); err == nil {
		t.Fatal("second session admitted with MaxSessions 1")
	}
	if r := c.do(stMsg{code: codes.GET, path: "/est/crts"}); r.Code != codes.Content {
		t.Fatalf("established session: %v", r.Code)
	}
}

func TestServerShutdownAndOptions(t *testing.T) {
	t.Parallel()
	if _, err := NewServer(Options{}); err == nil || !strings.Contains(err.Error(), "no authority") ||
		!strings.Contains(err.Error(), "no server certificate") {
		t.Fatalf("NewServer({}): %v", err)
	}
	e := stStart(t, func(o *Options) { o.ConnectionID = true; o.IdleTimeout = 200 * time.Millisecond })
	c := e.dial(t)
	if r := c.do(stMsg{code: codes.GET, path: "/est/crts"}); r.Code != codes.Content {
		t.Fatalf("with connection IDs: %v", r.Code)
	}
	// Idle sessions are closed and release their slot.
	deadline := time.Now().Add(3 * time.Second)
	for n, _ := e.srv.admit.counts(); n != 0 && time.Now().Before(deadline); n, _ = e.srv.admit.counts() {
		time.Sleep(20 * time.Millisecond)
	}
	if n, _ := e.srv.admit.counts(); n != 0 {
		t.Fatalf("%d sessions still open after the idle timeout", n)
	}
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel()
	if err := e.srv.Shutdown(ctx); err != nil {
		t.Fatal(err)
	}
	if err := e.srv.Listen(); !errors.Is(err, ErrServerClosed) {
		t.Fatalf("Listen after Shutdown: %v", err)
	}
}

// BenchmarkServerCrts measures one GET /crts round trip on an established
// DTLS session (server and client on this machine).
func BenchmarkServerCrts(b *testing.B) {
	e := stStartB(b)
	c := e.dial(b)
	m := stMsg{code: codes.GET, path: "/.well-known/est/crts"}
	b.ResetTimer()
	for i := 0; i < b.N; i++ {
		if r := c.do(m); r.Code != codes.Content {
			b.Fatal(r.Code)
		}
	}
}

// BenchmarkServerSen measures one enrollment (in-test software CA) on an
// established session.
func BenchmarkServerSen(b *testing.B) {
	e := stStartB(b)
	c := e.dial(b)
	csr, _ := stCSR(b, "bench device", 0)
	m := stMsg{code: codes.POST, path: "/est/sen", opts: message.Options{stUint(message.ContentFormat, 286)}, payload: csr}
	b.ResetTimer()
	for i := 0; i < b.N; i++ {
		if r := c.do(m); r.Code != codes.Changed {
			b.Fatal(r.Code)
		}
	}
}

func BenchmarkParseRequest(b *testing.B) {
	opts := message.Options{
		{ID: message.URIPath, Value: []byte("est")}, {ID: message.URIPath, Value: []byte("sen")},
		stUint(message.ContentFormat, 286), stUint(message.Accept, 287), stUint(message.Block1, 0x1a),
		stOpt(wire.OptionRequestTag, 1, 2),
	}
	b.ReportAllocs()
	for i := 0; i < b.N; i++ {
		if _, err := parseRequest(message.Confirmable, codes.POST, opts, nil); err != nil {
			b.Fatal(err)
		}
	}
}
