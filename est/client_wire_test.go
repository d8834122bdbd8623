package est

import (
	"bytes"
	"context"
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/x509"
	"errors"
	"fmt"
	"runtime"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/pion/dtls/v3"
	coapdtls "github.com/plgd-dev/go-coap/v3/dtls"
	"github.com/plgd-dev/go-coap/v3/message"
	"github.com/plgd-dev/go-coap/v3/message/codes"
	"github.com/plgd-dev/go-coap/v3/message/pool"
	coapnet "github.com/plgd-dev/go-coap/v3/net"
	"github.com/plgd-dev/go-coap/v3/net/responsewriter"
	"github.com/plgd-dev/go-coap/v3/options"
	udpclient "github.com/plgd-dev/go-coap/v3/udp/client"

	"github.com/estca/estca/est/wire"
	"github.com/estca/estca/policy/pkitest"
)

// This file checks what the client puts on the wire (tokens, Block1/Block2,
// Request-Tag, 5.03 handling) against a small recording EST-coaps peer built
// on go-coap's real DTLS server over 127.0.0.1. It is a test peer, not the
// estca server: that one is exercised in client_e2e_test.go.

// ctCertsOnly is the recording peer's /crts answer, built like estca's own.
func ctCertsOnly(certs ...*x509.Certificate) []byte {
	der, _ := wire.CertsOnly(certs...) // nil for no certificates: a malformed answer
	return der
}

// ctWireMsg is one request as the peer saw it.
type ctWireMsg struct {
	code    codes.Code
	path    string
	token   string
	block1  *clBlockOpt
	block2  *clBlockOpt
	tag     string
	hasTag  bool
	size1   uint32
	payload int
	format  int // -1: no Content-Format
}

// ctPeer is the recording EST-coaps peer.
type ctPeer struct {
	ca       *pkitest.Cert
	chain    []*x509.Certificate // /crts answer
	busy     int                 // number of 5.03 answers before /sen succeeds
	maxBlock int                 // largest Block2 block the peer sends
	wrongKey bool                // issue for a fresh key instead of the CSR's

	mu      sync.Mutex
	msgs    []ctWireMsg
	bodies  map[string][]byte // Block1 reassembly by path+Request-Tag
	stored  map[string][]byte // Block2 responses by path+Request-Tag
	formats map[string]message.MediaType
	issued  int
	addr    string
}

// set changes the peer's behaviour under its lock: the handler goroutines
// read these fields, and the race detector cannot see the ordering that the
// network gives.
func (p *ctPeer) set(f func(p *ctPeer)) {
	p.mu.Lock()
	defer p.mu.Unlock()
	f(p)
}

func (p *ctPeer) record(r *pool.Message) ctWireMsg {
	m := ctWireMsg{code: r.Code(), token: string(r.Token())}
	m.path, _ = r.Path()
	if v, err := r.GetOptionUint32(message.Block1); err == nil {
		b, _ := clDecodeBlockOpt(v)
		m.block1 = &b
	}
	if v, err := r.GetOptionUint32(message.Block2); err == nil {
		b, _ := clDecodeBlockOpt(v)
		m.block2 = &b
	}
	if tag, err := r.GetOptionBytes(wire.OptionRequestTag); err == nil {
		m.tag, m.hasTag = string(tag), true
	}
	if v, err := r.GetOptionUint32(message.Size1); err == nil {
		m.size1 = v
	}
	body, _ := r.ReadBody()
	m.payload = len(body)
	m.format = -1
	if f, err := r.ContentFormat(); err == nil {
		m.format = int(f)
	}
	p.mu.Lock()
	p.msgs = append(p.msgs, m)
	p.mu.Unlock()
	return m
}

func (p *ctPeer) wire() []ctWireMsg {
	p.mu.Lock()
	defer p.mu.Unlock()
	return append([]ctWireMsg(nil), p.msgs...)
}

func (p *ctPeer) handle(w *responsewriter.ResponseWriter[*udpclient.Conn], r *pool.Message) {
	m := p.record(r)
	var body []byte
	if r.Body() != nil {
		_, _ = r.Body().Seek(0, 0)
		body, _ = r.ReadBody()
	}
	key := m.path + "|" + m.tag
	p.mu.Lock()
	defer p.mu.Unlock()
	// Block2 follow-up: serve from the stored response.
	if m.block2 != nil && m.block2.num > 0 {
		resp, ok := p.stored[key]
		if !ok {
			_ = w.SetResponse(codes.RequestEntityIncomplete, message.TextPlain, bytes.NewReader([]byte("no transfer")))
			return
		}
		p.respondBlock(w, codes.Content, p.formats[key], resp, *m.block2, r.Code())
		return
	}
	if m.block1 != nil {
		acc := p.bodies[key]
		if int(m.block1.num)*m.block1.size() != len(acc) {
			_ = w.SetResponse(codes.RequestEntityIncomplete, message.TextPlain, bytes.NewReader([]byte("out of order")))
			return
		}
		acc = append(acc, body...)
		if m.block1.more {
			p.bodies[key] = acc
			_ = w.SetResponse(codes.Continue, message.TextPlain, nil)
			w.Message().SetOptionUint32(message.Block1, m.block1.value())
			return
		}
		delete(p.bodies, key)
		body = acc
	}
	var code codes.Code
	var format message.MediaType
	var resp []byte
	switch {
	case m.path == "/.well-known/core":
		code, format = codes.Content, message.AppLinkFormat
		resp = []byte(`</.well-known/est/crts>;rt="ace.est.crts";ct="281 287",</.well-known/est/sen>;rt="ace.est.sen";ct="281 287"`)
	case m.path == wire.WellKnownRoot+"/crts":
		code, format, resp = codes.Content, wire.FormatCertsOnly, ctCertsOnly(p.chain...)
	case m.path == wire.WellKnownRoot+"/sen":
		if p.busy > 0 {
			p.busy--
			_ = w.SetResponse(codes.ServiceUnavailable, message.TextPlain, bytes.NewReader([]byte("pending approval")))
			w.Message().SetOptionUint32(message.MaxAge, 7)
			return
		}
		csr, err := x509.ParseCertificateRequest(body)
		if err != nil {
			_ = w.SetResponse(codes.BadRequest, message.TextPlain, bytes.NewReader([]byte("bad CSR")))
			return
		}
		p.issued++
		pub := csr.PublicKey
		if p.wrongKey {
			k, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
			if err != nil {
				_ = w.SetResponse(codes.InternalServerError, message.TextPlain, nil)
				return
			}
			pub = k.Public()
		}
		cert, err := p.ca.Sign(pkitest.ClientAuth(csr.Subject.CommonName), pub)
		if err != nil {
			_ = w.SetResponse(codes.InternalServerError, message.TextPlain, nil)
			return
		}
		code, format, resp = codes.Changed, wire.FormatCertsOnly, ctCertsOnly(cert, p.ca.Cert)
		if a, err := r.Accept(); err == nil && a == wire.FormatPKIXCert {
			format, resp = wire.FormatPKIXCert, cert.Raw
		}
	default:
		_ = w.SetResponse(codes.NotFound, message.TextPlain, bytes.NewReader([]byte("no such resource")))
		return
	}
	want := clBlockOpt{szx: 6}
	if m.block2 != nil {
		want = *m.block2
	}
	if want.size() > p.maxBlock {
		want.szx, _ = clBlockSZX(p.maxBlock)
	}
	if len(resp) > want.size() {
		p.stored[key], p.formats[key] = resp, format
	}
	p.respondBlock(w, code, format, resp, want, r.Code())
}

// respondBlock answers block b of resp (the whole of resp when it fits).
func (p *ctPeer) respondBlock(w *responsewriter.ResponseWriter[*udpclient.Conn], code codes.Code, format message.MediaType,
	resp []byte, b clBlockOpt, method codes.Code) {
	if method == codes.POST && code == codes.Content {
		code = codes.Changed
	}
	if len(resp) <= b.size() && b.num == 0 {
		_ = w.SetResponse(code, format, bytes.NewReader(resp))
		return
	}
	off := int(b.num) * b.size()
	end := min(off+b.size(), len(resp))
	b.more = end < len(resp)
	_ = w.SetResponse(code, format, bytes.NewReader(resp[off:end]))
	w.Message().SetOptionUint32(message.Block2, b.value())
}

// ctStartPeer runs the recording peer on 127.0.0.1:0, requiring a client
// certificate from clientCA.
func ctStartPeer(t *testing.T, serverCA, clientCA *pkitest.Cert, maxBlock int) *ctPeer {
	t.Helper()
	p := &ctPeer{ca: serverCA, chain: []*x509.Certificate{serverCA.Cert}, maxBlock: maxBlock,
		bodies: map[string][]byte{}, stored: map[string][]byte{}, formats: map[string]message.MediaType{}}
	cert := serverCA.Issue(t, pkitest.ServerAuth("est.test")).TLS(serverCA.Cert)
	l, err := coapnet.NewDTLSListener("udp", "127.0.0.1:0", coapnet.NewDTLSServerOptions(
		dtls.WithCertificates(cert),
		dtls.WithCipherSuites(dtls.TLS_ECDHE_ECDSA_WITH_AES_128_CCM_8),
		dtls.WithClientAuth(dtls.RequireAndVerifyClientCert),
		dtls.WithClientCAs(clientCA.Pool()),
	))
	if err != nil {
		t.Fatal(err)
	}
	p.addr = l.Addr().String()
	s := coapdtls.NewServer(options.WithHandlerFunc(p.handle), options.WithBlockwise(false, 0, 0),
		options.WithErrors(func(error) {}))
	done := make(chan struct{})
	go func() { defer close(done); _ = s.Serve(l) }()
	t.Cleanup(func() { s.Stop(); <-done })
	return p
}

type ctEnv struct {
	peer     *ctPeer
	serverCA *pkitest.Cert
	clientCA *pkitest.Cert
	opts     ClientOptions
}

func ctNewEnv(t *testing.T, maxBlock int) *ctEnv {
	t.Helper()
	serverCA, clientCA := pkitest.NewCA(t, "server CA"), pkitest.NewCA(t, "device CA")
	p := ctStartPeer(t, serverCA, clientCA, maxBlock)
	return &ctEnv{peer: p, serverCA: serverCA, clientCA: clientCA, opts: ClientOptions{
		Server:      "coaps://" + p.addr,
		Certificate: clientCA.Issue(t, pkitest.ClientAuth("device-1")).TLS(clientCA.Cert),
		Roots:       serverCA.Pool(),
		Timeout:     5 * time.Second,
	}}
}

func ctDial(t *testing.T, o ClientOptions) *Client {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	c, err := Dial(ctx, o)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = c.Close() })
	return c
}

func TestClientWireBlock1(t *testing.T) {
	t.Parallel()
	env := ctNewEnv(t, 1024)
	o := env.opts
	o.BlockSize = 64
	c := ctDial(t, o)
	key := pkitest.Key(t)
	csr := pkitest.PaddedCSR(t, key, "device-1", 1200)
	if len(csr) <= 1024 {
		t.Fatalf("CSR of %d bytes is too small for the test", len(csr))
	}
	cert, raw, err := c.Enroll(context.Background(), csr, 0)
	if err != nil {
		t.Fatal(err)
	}
	if !bytes.Equal(cert.RawSubjectPublicKeyInfo, pkitest.ParseCSR(t, csr).RawSubjectPublicKeyInfo) || len(raw) == 0 {
		t.Fatal("certificate does not carry the CSR key")
	}
	var blocks []ctWireMsg
	for _, m := range env.peer.wire() {
		if m.code == codes.POST && m.block1 != nil {
			blocks = append(blocks, m)
		}
	}
	want := (len(csr) + 63) / 64
	if len(blocks) != want {
		t.Fatalf("%d Block1 blocks, want %d", len(blocks), want)
	}
	tokens := map[string]bool{}
	for i, b := range blocks {
		tokens[b.token] = true
		if int(b.block1.num) != i || b.block1.szx != 2 || b.block1.more != (i < want-1) {
			t.Errorf("block %d: %+v", i, *b.block1)
		}
		if !b.hasTag || b.tag != blocks[0].tag {
			t.Errorf("block %d: Request-Tag %x, want %x", i, b.tag, blocks[0].tag)
		}
		if (i == 0) != (b.size1 == uint32(len(csr))) {
			t.Errorf("block %d: Size1 %d", i, b.size1)
		}
	}
	if len(tokens) != want {
		t.Errorf("%d distinct tokens for %d blocks, want one per block", len(tokens), want)
	}
}

func TestClientWireBlock2(t *testing.T) {
	t.Parallel()
	env := ctNewEnv(t, 1024)
	// A long chain makes /crts larger than one block.
	for range 4 {
		inter := env.serverCA.Issue(t, pkitest.SubCA(strings.Repeat("intermediate ", 8))).Cert
		env.peer.set(func(p *ctPeer) {
			p.chain = append(p.chain, inter)
		})
	}
	for _, size := range []int{16, 64, 1024} {
		t.Run(fmt.Sprint(size), func(t *testing.T) {
			o := env.opts
			o.BlockSize = size
			c := ctDial(t, o)
			certs, raw, err := c.CACerts(context.Background(), wire.FormatCertsOnly)
			if err != nil {
				t.Fatal(err)
			}
			if len(certs) != 5 || len(raw) <= 1024 {
				t.Fatalf("%d certs in %d bytes", len(certs), len(raw))
			}
		})
	}
	// The 16-byte client asked for Block2 SZX 0 from the first GET on.
	var sawSmall bool
	for _, m := range env.peer.wire() {
		if m.path == wire.WellKnownRoot+"/crts" && m.block2 != nil && m.block2.num == 0 && m.block2.szx == 0 {
			sawSmall = true
		}
	}
	if !sawSmall {
		t.Error("no early Block2 negotiation seen")
	}
}

func TestClientWirePOSTBlock2FollowUps(t *testing.T) {
	t.Parallel()
	// The peer answers in 64-byte blocks; the client fetches the rest of the
	// POST response with Block2 follow-ups carrying the Request-Tag.
	env := ctNewEnv(t, 64)
	o := env.opts
	o.BlockSize = 128
	c := ctDial(t, o)
	key := pkitest.Key(t)
	csr := pkitest.PaddedCSR(t, key, "device-1", 600)
	if _, _, err := c.Enroll(context.Background(), csr, wire.FormatCertsOnly); err != nil {
		t.Fatal(err)
	}
	var tag string
	var follow int
	for _, m := range env.peer.wire() {
		if m.block1 != nil && tag == "" {
			tag = m.tag
		}
		if m.code == codes.POST && m.block2 != nil && m.block2.num > 0 {
			follow++
			if m.tag != tag || m.payload != 0 || m.block2.szx != 2 || m.block1 != nil || m.format != int(wire.FormatPKCS10) {
				t.Errorf("follow-up %+v, want Request-Tag %x, Content-Format 286, no payload, no Block1, SZX 2", m, tag)
			}
		}
	}
	if follow == 0 {
		t.Error("no Block2 follow-ups")
	}
}

func TestClientWireRetry(t *testing.T) {
	t.Parallel()
	env := ctNewEnv(t, 1024)
	env.peer.set(func(p *ctPeer) { p.busy = 2 })
	c := ctDial(t, env.opts)
	var sleeps []time.Duration
	c.policy.sleep = func(_ context.Context, d time.Duration) error { sleeps = append(sleeps, d); return nil }
	csr := pkitest.PaddedCSR(t, pkitest.Key(t), "device-1", 0)
	if _, _, err := c.Enroll(context.Background(), csr, wire.FormatPKIXCert); err != nil {
		t.Fatal(err)
	}
	if len(sleeps) != 2 || sleeps[0] != 7*time.Second {
		t.Fatalf("sleeps %v, want two of 7s", sleeps)
	}
	// The resends are identical requests.
	var sens int
	for _, m := range env.peer.wire() {
		if m.path == wire.WellKnownRoot+"/sen" {
			sens++
			if m.payload != len(csr) {
				t.Errorf("resend with %d bytes, want %d", m.payload, len(csr))
			}
		}
	}
	if sens != 3 {
		t.Errorf("%d requests, want 3", sens)
	}
	env.peer.set(func(p *ctPeer) { p.busy = 10 })
	_, _, err := c.Enroll(context.Background(), csr, 0)
	var re *ResponseError
	if !errors.Is(err, ErrRetriesExhausted) || !errors.As(err, &re) || re.MaxAge != 7*time.Second || re.Diagnostic != "pending approval" {
		t.Fatalf("err = %v", err)
	}
}

func TestClientWireErrorsAndDiscovery(t *testing.T) {
	t.Parallel()
	env := ctNewEnv(t, 1024)
	o := env.opts
	o.Label = "nolabel"
	c := ctDial(t, o)
	_, _, err := c.CACerts(context.Background(), 0)
	var re *ResponseError
	if !errors.As(err, &re) || re.Code != codes.NotFound || re.Diagnostic != "no such resource" {
		t.Fatalf("err = %v, want 4.04 with diagnostic", err)
	}
	links, _, err := c.Discover(context.Background())
	if err != nil || len(links) != 2 || !links[1].HasResourceType("ace.est.sen") {
		t.Fatalf("links %+v, %v", links, err)
	}
	if _, _, err := c.CACerts(context.Background(), wire.FormatMultipartCore); err == nil {
		t.Error("Accept 62 on crts accepted by the client")
	}
}

func TestClientHandshakeErrors(t *testing.T) {
	t.Parallel()
	env := ctNewEnv(t, 1024)
	stranger := pkitest.NewCA(t, "stranger")
	for _, tc := range []struct {
		name   string
		mutate func(*ClientOptions)
		reason string
	}{
		{"client cert from an unknown CA", func(o *ClientOptions) { o.Certificate = stranger.Issue(t, pkitest.ClientAuth("x")).TLS(stranger.Cert) },
			"rejected the client certificate"},
		{"untrusted server", func(o *ClientOptions) { o.Roots = stranger.Pool() },
			"does not chain to the configured trust anchors"},
		{"wrong server name", func(o *ClientOptions) { o.ServerName = "other.test" },
			"does not match the server name"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			o := env.opts
			o.Timeout = 3 * time.Second
			tc.mutate(&o)
			ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
			defer cancel()
			c, err := Dial(ctx, o)
			if err == nil {
				_ = c.Close()
				t.Fatal("handshake succeeded")
			}
			var he *HandshakeError
			if !errors.Is(err, ErrHandshake) || !errors.As(err, &he) {
				t.Fatalf("err = %v, want a HandshakeError", err)
			}
			if !strings.Contains(he.Reason, tc.reason) {
				t.Errorf("reason %q, want %q (err %v)", he.Reason, tc.reason, err)
			}
		})
	}
}

// TestClientCloseReleases checks that Close ends the session's goroutines, so
// that the "sen" bench mode (a session per enrollment) does not pile them up.
// Not parallel: it counts goroutines.
func TestClientCloseReleases(t *testing.T) {
	env := ctNewEnv(t, 1024)
	c := ctDial(t, env.opts) // warm up: first dial starts shared machinery
	_ = c.Close()
	time.Sleep(100 * time.Millisecond)
	before := runtime.NumGoroutine()
	for range 20 {
		ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
		c, err := Dial(ctx, env.opts)
		cancel()
		if err != nil {
			t.Fatal(err)
		}
		if _, _, err := c.CACerts(context.Background(), 0); err != nil {
			t.Fatal(err)
		}
		if err := c.Close(); err != nil {
			t.Fatal(err)
		}
	}
	deadline := time.Now().Add(3 * time.Second)
	for runtime.NumGoroutine() > before+4 && time.Now().Before(deadline) {
		time.Sleep(50 * time.Millisecond)
	}
	if n := runtime.NumGoroutine(); n > before+4 {
		t.Fatalf("%d goroutines after 20 closed sessions, %d before", n, before)
	}
}

func TestClientUpdateTrust(t *testing.T) {
	t.Parallel()
	env := ctNewEnv(t, 1024)
	c := ctDial(t, env.opts)
	old := c.Roots()

	// /crts names a root that did not sign the server certificate: refused.
	other := pkitest.NewCA(t, "rogue root")
	env.peer.set(func(p *ctPeer) { p.chain = []*x509.Certificate{other.Cert} })
	if _, err := c.UpdateTrust(context.Background()); !errors.Is(err, ErrTrustUpdate) {
		t.Fatalf("err = %v, want ErrTrustUpdate", err)
	}
	if c.Roots() != old {
		t.Fatal("trust anchors changed after a failed update")
	}

	// /crts with no self-signed certificate: refused.
	inter := env.serverCA.Issue(t, pkitest.SubCA("intermediate")).Cert
	env.peer.set(func(p *ctPeer) { p.chain = []*x509.Certificate{inter} })
	if _, err := c.UpdateTrust(context.Background()); !errors.Is(err, ErrTrustUpdate) {
		t.Fatalf("err = %v, want ErrTrustUpdate", err)
	}

	// The real root, an intermediate and a second root: accepted; the anchors
	// are the self-signed certificates.
	env.peer.set(func(p *ctPeer) { p.chain = []*x509.Certificate{inter, env.serverCA.Cert, other.Cert} })
	anchors, err := c.UpdateTrust(context.Background())
	if err != nil {
		t.Fatal(err)
	}
	if len(anchors) != 2 || !anchors[0].Equal(env.serverCA.Cert) || !anchors[1].Equal(other.Cert) {
		t.Fatalf("anchors %d", len(anchors))
	}
	if c.Roots() == old {
		t.Fatal("trust anchors not replaced")
	}
}
