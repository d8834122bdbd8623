package esttest

import (
	"bytes"
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/tls"
	"crypto/x509"
	"sync"
	"testing"

	"github.com/pion/dtls/v3"
	coapdtls "github.com/plgd-dev/go-coap/v3/dtls"
	"github.com/plgd-dev/go-coap/v3/message"
	"github.com/plgd-dev/go-coap/v3/message/codes"
	"github.com/plgd-dev/go-coap/v3/message/pool"
	coapnet "github.com/plgd-dev/go-coap/v3/net"
	"github.com/plgd-dev/go-coap/v3/net/responsewriter"
	"github.com/plgd-dev/go-coap/v3/options"
	udpclient "github.com/plgd-dev/go-coap/v3/udp/client"

	"github.com/estca/estca/est/block"
	"github.com/estca/estca/est/wire"
	"github.com/estca/estca/policy/pkitest"
)

// Request is one CoAP request as the Peer saw it.
type Request struct {
	Code  codes.Code
	Path  string
	Token string
	// Block1 and Block2 are the block options, nil when absent.
	Block1, Block2 *block.Option
	// Tag is the Request-Tag (RFC 9175); HasTag tells an empty tag from none.
	Tag    string
	HasTag bool
	// Size1 is the Size1 option, 0 when absent.
	Size1 uint32
	// Payload is the payload length.
	Payload int
	// Format is the Content-Format, -1 when absent.
	Format int
}

// Peer is the recording EST-coaps peer; see the package documentation for
// what it answers.
type Peer struct {
	ca       *pkitest.Cert
	maxBlock int
	url      string

	mu       sync.Mutex
	chain    []*x509.Certificate // /crts answer
	busy     int                 // 5.03 answers left before /sen succeeds
	wrongKey bool                // issue for a fresh key instead of the CSR's
	reqs     []Request
	bodies   map[string][]byte // Block1 reassembly by path+Request-Tag
	stored   map[string][]byte // Block2 responses by path+Request-Tag
	formats  map[string]message.MediaType
}

// Start runs a Peer on 127.0.0.1:0 until the test ends. serverCA issues the
// peer's DTLS certificate (chain [leaf, serverCA], IP SAN 127.0.0.1) and the
// enrolled certificates; clients must present a certificate from clientCA.
// maxBlock is the largest Block2 block the peer sends (16..1024).
func Start(t testing.TB, serverCA, clientCA *pkitest.Cert, maxBlock int) *Peer {
	t.Helper()
	if _, err := block.SZXFor(maxBlock); err != nil {
		t.Fatal(err)
	}
	p := &Peer{ca: serverCA, chain: []*x509.Certificate{serverCA.Cert}, maxBlock: maxBlock,
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
	p.url = "coaps://" + l.Addr().String()
	s := coapdtls.NewServer(options.WithHandlerFunc(p.handle), options.WithBlockwise(false, 0, 0),
		options.WithErrors(func(error) {}))
	done := make(chan struct{})
	go func() { defer close(done); _ = s.Serve(l) }()
	t.Cleanup(func() { s.Stop(); <-done })
	return p
}

// URL is the peer's address as "coaps://127.0.0.1:port".
func (p *Peer) URL() string { return p.url }

// Requests returns the requests received so far, in order.
func (p *Peer) Requests() []Request {
	p.mu.Lock()
	defer p.mu.Unlock()
	return append([]Request(nil), p.reqs...)
}

// Chain returns the certificates /crts answers.
func (p *Peer) Chain() []*x509.Certificate {
	p.mu.Lock()
	defer p.mu.Unlock()
	return append([]*x509.Certificate(nil), p.chain...)
}

// SetChain sets the certificates /crts answers; none makes the answer an
// empty (malformed) payload.
func (p *Peer) SetChain(certs ...*x509.Certificate) {
	p.mu.Lock()
	defer p.mu.Unlock()
	p.chain = certs
}

// SetBusy makes the next n enrollments answer 5.03 "pending approval" with
// Max-Age 7.
func (p *Peer) SetBusy(n int) {
	p.mu.Lock()
	defer p.mu.Unlock()
	p.busy = n
}

// SetWrongKey makes enrollments return a certificate for a fresh key instead
// of the CSR's.
func (p *Peer) SetWrongKey(on bool) {
	p.mu.Lock()
	defer p.mu.Unlock()
	p.wrongKey = on
}

func (p *Peer) record(r *pool.Message) Request {
	m := Request{Code: r.Code(), Token: string(r.Token())}
	m.Path, _ = r.Path()
	for _, o := range []struct {
		id  message.OptionID
		dst **block.Option
	}{{message.Block1, &m.Block1}, {message.Block2, &m.Block2}} {
		if v, err := r.GetOptionUint32(o.id); err == nil {
			b, _ := block.FromValue(v)
			*o.dst = &b
		}
	}
	if tag, err := r.GetOptionBytes(wire.OptionRequestTag); err == nil {
		m.Tag, m.HasTag = string(tag), true
	}
	if v, err := r.GetOptionUint32(message.Size1); err == nil {
		m.Size1 = v
	}
	body, _ := r.ReadBody()
	m.Payload = len(body)
	m.Format = -1
	if f, err := r.ContentFormat(); err == nil {
		m.Format = int(f)
	}
	p.mu.Lock()
	p.reqs = append(p.reqs, m)
	p.mu.Unlock()
	return m
}

func diag(s string) *bytes.Reader { return bytes.NewReader([]byte(s)) }

func (p *Peer) handle(w *responsewriter.ResponseWriter[*udpclient.Conn], r *pool.Message) {
	m := p.record(r)
	var body []byte
	if r.Body() != nil {
		_, _ = r.Body().Seek(0, 0)
		body, _ = r.ReadBody()
	}
	key := m.Path + "|" + m.Tag
	p.mu.Lock()
	defer p.mu.Unlock()
	// Block2 follow-up: serve from the stored response.
	if m.Block2 != nil && m.Block2.Num > 0 {
		resp, ok := p.stored[key]
		if !ok {
			_ = w.SetResponse(codes.RequestEntityIncomplete, message.TextPlain, diag("no transfer"))
			return
		}
		p.respondBlock(w, codes.Content, p.formats[key], resp, *m.Block2, r.Code())
		return
	}
	if m.Block1 != nil {
		acc := p.bodies[key]
		if m.Block1.Offset() != len(acc) {
			_ = w.SetResponse(codes.RequestEntityIncomplete, message.TextPlain, diag("out of order"))
			return
		}
		acc = append(acc, body...)
		if m.Block1.More {
			p.bodies[key] = acc
			_ = w.SetResponse(codes.Continue, message.TextPlain, nil)
			w.Message().SetOptionUint32(message.Block1, m.Block1.Value())
			return
		}
		delete(p.bodies, key)
		body = acc
	}
	var code codes.Code
	var format message.MediaType
	var resp []byte
	switch m.Path {
	case "/.well-known/core":
		code, format = codes.Content, message.AppLinkFormat
		resp = []byte(`</.well-known/est/crts>;rt="ace.est.crts";ct="281 287",</.well-known/est/sen>;rt="ace.est.sen";ct="281 287"`)
	case wire.WellKnownRoot + "/" + wire.ResourceCrts:
		code, format = codes.Content, wire.FormatCertsOnly
		resp, _ = wire.CertsOnly(p.chain...) // nil for no certificates: a malformed answer
	case wire.WellKnownRoot + "/" + wire.ResourceSen:
		if p.busy > 0 {
			p.busy--
			_ = w.SetResponse(codes.ServiceUnavailable, message.TextPlain, diag("pending approval"))
			w.Message().SetOptionUint32(message.MaxAge, 7)
			return
		}
		cert, err := p.issue(body)
		if err != nil {
			_ = w.SetResponse(codes.BadRequest, message.TextPlain, diag("bad CSR"))
			return
		}
		code, format = codes.Changed, wire.FormatCertsOnly
		resp, _ = wire.CertsOnly(cert, p.ca.Cert)
		if a, err := r.Accept(); err == nil && a == wire.FormatPKIXCert {
			format, resp = wire.FormatPKIXCert, cert.Raw
		}
	default:
		_ = w.SetResponse(codes.NotFound, message.TextPlain, diag("no such resource"))
		return
	}
	want := block.Option{SZX: block.MaxSZX}
	if m.Block2 != nil {
		want = *m.Block2
	}
	if want.Size() > p.maxBlock {
		want.SZX, _ = block.SZXFor(p.maxBlock)
	}
	if len(resp) > want.Size() {
		p.stored[key], p.formats[key] = resp, format
	}
	p.respondBlock(w, code, format, resp, want, r.Code())
}

// issue signs a certificate for the CSR's key (or a fresh key, see
// SetWrongKey) and subject common name.
func (p *Peer) issue(der []byte) (*x509.Certificate, error) {
	csr, err := x509.ParseCertificateRequest(der)
	if err != nil {
		return nil, err
	}
	pub := csr.PublicKey
	if p.wrongKey {
		k, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
		if err != nil {
			return nil, err
		}
		pub = k.Public()
	}
	return p.ca.Sign(pkitest.ClientAuth(csr.Subject.CommonName), pub)
}

// respondBlock answers block b of resp (the whole of resp when it fits).
func (p *Peer) respondBlock(w *responsewriter.ResponseWriter[*udpclient.Conn], code codes.Code, format message.MediaType,
	resp []byte, b block.Option, method codes.Code) {
	if method == codes.POST && code == codes.Content {
		code = codes.Changed
	}
	if len(resp) <= b.Size() && b.Num == 0 {
		_ = w.SetResponse(code, format, bytes.NewReader(resp))
		return
	}
	off := b.Offset()
	end := min(off+b.Size(), len(resp))
	b.More = end < len(resp)
	_ = w.SetResponse(code, format, bytes.NewReader(resp[off:end]))
	w.Message().SetOptionUint32(message.Block2, b.Value())
}

// Env is a running Peer with its CAs and a device identity it accepts.
type Env struct {
	Peer               *Peer
	ServerCA, ClientCA *pkitest.Cert
	// Device is a client certificate from ClientCA, chain [leaf, ClientCA].
	Device tls.Certificate
	// Roots holds ServerCA: the trust anchor for the peer.
	Roots *x509.CertPool
}

// NewEnv starts a Peer with fresh CAs; see Start for maxBlock.
func NewEnv(t testing.TB, maxBlock int) *Env {
	t.Helper()
	serverCA, clientCA := pkitest.NewCA(t, "server CA"), pkitest.NewCA(t, "device CA")
	return &Env{
		Peer:     Start(t, serverCA, clientCA, maxBlock),
		ServerCA: serverCA, ClientCA: clientCA,
		Device: clientCA.Issue(t, pkitest.ClientAuth("device-1")).TLS(clientCA.Cert),
		Roots:  serverCA.Pool(),
	}
}
