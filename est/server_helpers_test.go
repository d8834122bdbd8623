package est

import (
	"bytes"
	"context"
	"crypto/ecdsa"
	"crypto/sha256"
	"crypto/tls"
	"crypto/x509"
	"encoding/hex"
	"errors"
	"log/slog"
	"net"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/pion/dtls/v3"
	"github.com/plgd-dev/go-coap/v3/message"
	"github.com/plgd-dev/go-coap/v3/message/codes"
	"github.com/plgd-dev/go-coap/v3/udp/coder"

	"github.com/estca/estca/ca"
	"github.com/estca/estca/policy/pkitest"
	"github.com/estca/estca/store"
)

// stAuthority is the in-test authority: it authenticates client chains
// against its CA and really signs CSRs with it.
type stAuthority struct {
	ca *pkitest.Cert
	// chain, when set, is what CACertificates returns (issuing CA first).
	chain []*x509.Certificate

	mu         sync.Mutex
	authns     int // Authenticate calls
	enrolls    int
	profiles   []string
	renews     int
	rejections []ca.Rejection
	refused    map[string]bool // leaf serials Check refuses
}

// RecordRejection keeps the rejections for the tests to inspect.
func (a *stAuthority) RecordRejection(r ca.Rejection) error {
	a.mu.Lock()
	defer a.mu.Unlock()
	a.rejections = append(a.rejections, r)
	return nil
}

// rejected returns the rejections recorded so far.
func (a *stAuthority) rejected() []ca.Rejection {
	a.mu.Lock()
	defer a.mu.Unlock()
	return append([]ca.Rejection(nil), a.rejections...)
}

const (
	stCNPending = "pending device"
	stCNBoom    = "boom device"
	stCNDenied  = "denied device"
	// stCNAudited is denied by the authority with an error it audited itself.
	stCNAudited = "audited device"
)

func (a *stAuthority) Authenticate(chain []*x509.Certificate) (ca.Requester, error) {
	a.mu.Lock()
	a.authns++
	a.mu.Unlock()
	if _, err := chain[0].Verify(x509.VerifyOptions{Roots: a.ca.Pool(), KeyUsages: []x509.ExtKeyUsage{x509.ExtKeyUsageClientAuth}}); err != nil {
		return ca.Requester{}, &ca.Error{Kind: ca.KindUnauthenticated, Reason: "unknown client", Err: err}
	}
	sum := sha256.Sum256(chain[0].Raw)
	return ca.Requester{Kind: ca.KindOperational, Leaf: chain[0], Chain: chain, Identity: store.Identity{
		Fingerprint: hex.EncodeToString(sum[:]), Subject: chain[0].Subject.String(), Kind: string(ca.KindOperational),
	}}, nil
}

func (a *stAuthority) CACertificates(profile string) ([]*x509.Certificate, error) {
	if a.chain != nil {
		return a.chain, nil
	}
	return []*x509.Certificate{a.ca.Cert}, nil
}

// stCSRAttrs is a DER CsrAttrs with one OID (challengePassword).
var stCSRAttrs = []byte{0x30, 0x0b, 0x06, 0x09, 0x2a, 0x86, 0x48, 0x86, 0xf7, 0x0d, 0x01, 0x09, 0x07}

func (a *stAuthority) CSRAttributes(profile string, _ ca.Requester) ([]byte, error) {
	return stCSRAttrs, nil
}

// Check refuses requesters whose leaf serial is in the refused set.
func (a *stAuthority) Check(who ca.Requester) error {
	a.mu.Lock()
	defer a.mu.Unlock()
	if who.Leaf != nil && a.refused[who.Leaf.SerialNumber.String()] {
		return &ca.Error{Kind: ca.KindForbidden, Reason: "certificate revoked"}
	}
	return nil
}

// refuse makes Check refuse the requester with that leaf from now on.
func (a *stAuthority) refuse(leaf *x509.Certificate) {
	a.mu.Lock()
	defer a.mu.Unlock()
	if a.refused == nil {
		a.refused = map[string]bool{}
	}
	a.refused[leaf.SerialNumber.String()] = true
}

// admitAgain undoes refuse.
func (a *stAuthority) admitAgain(leaf *x509.Certificate) {
	a.mu.Lock()
	defer a.mu.Unlock()
	delete(a.refused, leaf.SerialNumber.String())
}

// stCRL is a DER CRL stand-in (the server does not parse it).
var stCRL = []byte{0x30, 0x03, 0x02, 0x01, 0x07}

func (a *stAuthority) CRL() (*ca.CRL, error) { return &ca.CRL{DER: stCRL}, nil }

func (a *stAuthority) HasProfile(label string) bool { return label == "iot" }

func (a *stAuthority) Enroll(_ context.Context, req ca.Request) (*ca.Result, error) {
	a.mu.Lock()
	a.enrolls++
	a.profiles = append(a.profiles, req.Profile)
	if req.Operation == ca.OpSren {
		a.renews++
	}
	a.mu.Unlock()
	csr, err := x509.ParseCertificateRequest(req.CSR)
	if err != nil {
		return nil, &ca.Error{Kind: ca.KindBadRequest, Reason: "malformed CSR", Err: err}
	}
	if err := csr.CheckSignature(); err != nil {
		return nil, &ca.Error{Kind: ca.KindBadRequest, Reason: "bad CSR signature", Err: err}
	}
	switch csr.Subject.CommonName {
	case stCNPending:
		return nil, &ca.Error{Kind: ca.KindPending, Reason: "pending approval", MaxAge: 7 * time.Second}
	case stCNBoom:
		return nil, errors.New("disk on fire at /var/lib/secret")
	case stCNDenied:
		return nil, &ca.Error{Kind: ca.KindForbidden, Reason: "not allowed"}
	case stCNAudited:
		return nil, &ca.Error{Kind: ca.KindBadRequest, Reason: "policy says no", Audited: true}
	}
	c, err := a.ca.Sign(pkitest.ClientAuth(csr.Subject.CommonName), csr.PublicKey)
	if err != nil {
		return nil, err
	}
	return &ca.Result{Certificate: c, Chain: []*x509.Certificate{a.ca.Cert}}, nil
}

func (a *stAuthority) counts() (enrolls int, profiles []string) {
	a.mu.Lock()
	defer a.mu.Unlock()
	return a.enrolls, append([]string(nil), a.profiles...)
}

// stCSR makes a DER CSR with a fresh key; pad adds DNS SANs to make it large.
func stCSR(t testing.TB, cn string, pad int) ([]byte, *ecdsa.PrivateKey) {
	t.Helper()
	k := pkitest.Key(t)
	return pkitest.PaddedCSR(t, k, cn, pad), k
}

// stEnv is a running server with its CA, authority and a client identity.
type stEnv struct {
	srv    *Server
	addr   string
	ca     *pkitest.Cert
	auth   *stAuthority
	client tls.Certificate
	roots  *x509.CertPool
	logs   *stLog
}

// stLog collects the server's log output.
type stLog struct {
	mu  sync.Mutex
	buf bytes.Buffer
}

func (l *stLog) Write(p []byte) (int, error) {
	l.mu.Lock()
	defer l.mu.Unlock()
	return l.buf.Write(p)
}

func (l *stLog) String() string {
	l.mu.Lock()
	defer l.mu.Unlock()
	return l.buf.String()
}

func stStartB(b *testing.B) *stEnv { return stStart(b, nil) }

func stStart(t testing.TB, mod func(*Options)) *stEnv {
	t.Helper()
	c := pkitest.NewCA(t, "estca server test CA")
	a := &stAuthority{ca: c}
	logs := &stLog{}
	o := Options{
		Addr:        "127.0.0.1:0",
		Certificate: c.Issue(t, pkitest.ServerAuth("estca test server")).TLS(),
		Authority:   a,
		Logger:      slog.New(slog.NewTextHandler(logs, &slog.HandlerOptions{Level: slog.LevelDebug})),
	}
	if mod != nil {
		mod(&o)
	}
	srv := stServe(t, o)
	return &stEnv{srv: srv, addr: srv.Addr().String(), ca: c, auth: a,
		client: c.Issue(t, pkitest.ClientAuth("device 0001")).TLS(), roots: c.Pool(), logs: logs}
}

// stServe runs a server with o on its listener until the test ends, then
// shuts it down and checks that Serve returned ErrServerClosed.
func stServe(t testing.TB, o Options) *Server {
	t.Helper()
	srv, err := NewServer(o)
	if err != nil {
		t.Fatal(err)
	}
	if err := srv.Listen(); err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan error, 1)
	go func() { done <- srv.Serve(ctx) }()
	t.Cleanup(func() {
		sctx, scancel := context.WithTimeout(context.Background(), 5*time.Second)
		defer scancel()
		if err := srv.Shutdown(sctx); err != nil {
			t.Errorf("shutdown: %v", err)
		}
		cancel()
		if err := <-done; !errors.Is(err, ErrServerClosed) {
			t.Errorf("serve returned %v", err)
		}
	})
	return srv
}

// stConn is a raw CoAP-over-DTLS client: it sends exactly the bytes a test
// builds, so that malformed and unusual messages reach the server.
type stConn struct {
	t   testing.TB
	c   *dtls.Conn
	mid uint16
	tok uint32
}

func stDialErr(t testing.TB, addr string, cert *tls.Certificate, roots *x509.CertPool) (*stConn, error) {
	t.Helper()
	return stDialTimeout(t, addr, cert, roots, 5*time.Second)
}

func stDialTimeout(t testing.TB, addr string, cert *tls.Certificate, roots *x509.CertPool, timeout time.Duration) (*stConn, error) {
	t.Helper()
	return stDialName(t, addr, cert, roots, "localhost", timeout)
}

func stDialName(t testing.TB, addr string, cert *tls.Certificate, roots *x509.CertPool, serverName string, timeout time.Duration) (*stConn, error) {
	t.Helper()
	raddr, err := net.ResolveUDPAddr("udp", addr)
	if err != nil {
		return nil, err
	}
	pc, err := net.ListenUDP("udp", &net.UDPAddr{IP: net.IPv4(127, 0, 0, 1)})
	if err != nil {
		return nil, err
	}
	opts := []dtls.ClientOption{
		dtls.WithCipherSuites(dtls.TLS_ECDHE_ECDSA_WITH_AES_128_CCM_8),
		dtls.WithRootCAs(roots),
		dtls.WithServerName(serverName),
	}
	if cert != nil {
		opts = append(opts, dtls.WithCertificates(*cert))
	}
	c, err := dtls.ClientWithOptions(pc, raddr, opts...)
	if err != nil {
		_ = pc.Close()
		return nil, err
	}
	ctx, cancel := context.WithTimeout(context.Background(), timeout)
	defer cancel()
	if err := c.HandshakeContext(ctx); err != nil {
		_ = c.Close()
		return nil, err
	}
	sc := &stConn{t: t, c: c, mid: 100}
	t.Cleanup(func() { _ = c.Close() })
	return sc, nil
}

func (e *stEnv) dial(t testing.TB) *stConn {
	t.Helper()
	c, err := stDialErr(t, e.addr, &e.client, e.roots)
	if err != nil {
		t.Fatalf("dial: %v", err)
	}
	return c
}

// stMsg builds a request message.
type stMsg struct {
	typ     message.Type
	code    codes.Code
	path    string
	opts    message.Options // extra options, any order
	payload []byte
	raw     []byte // when set, sent as is
}

func stOpt(id message.OptionID, v ...byte) message.Option { return message.Option{ID: id, Value: v} }

func stUint(id message.OptionID, v uint32) message.Option {
	var b []byte
	for ; v > 0; v >>= 8 {
		b = append([]byte{byte(v)}, b...)
	}
	return message.Option{ID: id, Value: b}
}

func (m stMsg) encode(mid uint16, token []byte) []byte {
	if m.raw != nil {
		return m.raw
	}
	var opts message.Options
	for _, seg := range strings.Split(strings.TrimPrefix(m.path, "/"), "/") {
		if m.path != "" {
			opts = append(opts, message.Option{ID: message.URIPath, Value: []byte(seg)})
		}
	}
	opts = append(opts, m.opts...)
	// Options must be sorted by number (stable: repeated options keep order).
	for i := 1; i < len(opts); i++ {
		for j := i; j > 0 && opts[j].ID < opts[j-1].ID; j-- {
			opts[j], opts[j-1] = opts[j-1], opts[j]
		}
	}
	typ := m.typ
	if typ == 0 && m.code != 0 {
		typ = message.Confirmable
	}
	msg := message.Message{Type: typ, Code: m.code, MessageID: int32(mid), Token: token, Options: opts, Payload: m.payload}
	buf := make([]byte, 1<<16)
	n, err := coder.DefaultCoder.Encode(msg, buf)
	if err != nil {
		panic(err)
	}
	return buf[:n]
}

// stReply is a decoded response.
type stReply struct {
	message.Message
}

func (r stReply) uintOpt(id message.OptionID) (uint32, bool) {
	for _, o := range r.Options {
		if o.ID == id {
			return decodeUint(o.Value), true
		}
	}
	return 0, false
}

// do sends m and returns the response, or ok=false after wait without one.
func (c *stConn) roundTrip(m stMsg, wait time.Duration) (stReply, bool) {
	c.t.Helper()
	c.send(m)
	return c.await(m, wait)
}

// send sends m with the next message ID and token.
func (c *stConn) send(m stMsg) {
	c.t.Helper()
	c.mid++
	c.tok++
	c.resend(m)
}

// resend sends m again with the current message ID and token: a CoAP
// retransmission (RFC 7252 §4.2).
func (c *stConn) resend(m stMsg) {
	c.t.Helper()
	token := []byte{byte(c.tok >> 8), byte(c.tok), 0xe5}
	if _, err := c.c.Write(m.encode(c.mid, token)); err != nil {
		c.t.Fatalf("write: %v", err)
	}
}

// await reads the response to the message last sent, or ok=false after
// wait without one.
func (c *stConn) await(m stMsg, wait time.Duration) (stReply, bool) {
	c.t.Helper()
	buf := make([]byte, 4096)
	deadline := time.Now().Add(wait)
	for {
		_ = c.c.SetReadDeadline(deadline)
		n, err := c.c.Read(buf)
		if err != nil {
			var ne net.Error
			if errors.As(err, &ne) && ne.Timeout() {
				return stReply{}, false
			}
			c.t.Fatalf("read: %v", err)
		}
		r := message.Message{Options: make(message.Options, 0, 32)}
		if _, err := coder.DefaultCoder.Decode(buf[:n], &r); err != nil {
			c.t.Fatalf("undecodable response % x: %v", buf[:n], err)
		}
		if int32(c.mid) != r.MessageID && m.typ != message.NonConfirmable {
			continue // stale retransmission
		}
		r.Payload = bytes.Clone(r.Payload)
		return stReply{r}, true
	}
}

// do sends m and returns its response. A confirmable request unanswered
// for 5 s is retransmitted, as a device does (RFC 7252 §4.2; same message
// ID and token, so the server answers it once), up to 3 times: a loaded
// machine or a flood on the same socket can drop a datagram on loopback.
// Without any answer the test fails.
func (c *stConn) do(m stMsg) stReply {
	c.t.Helper()
	c.send(m)
	for attempt := 0; ; attempt++ {
		if r, ok := c.await(m, 5*time.Second); ok {
			return r
		}
		if m.typ == message.NonConfirmable || attempt == 3 {
			c.t.Fatalf("%v %s: no response (%d transmissions)", m.code, m.path, attempt+1)
		}
		c.resend(m)
	}
}
