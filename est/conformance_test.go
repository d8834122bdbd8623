package est

import (
	"bytes"
	"context"
	"crypto/x509"
	"encoding/pem"
	"net"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/plgd-dev/go-coap/v3/message"
	"github.com/plgd-dev/go-coap/v3/message/codes"
	"github.com/plgd-dev/go-coap/v3/udp/coder"

	"github.com/estca/estca/policy/pkitest"
)

// Tests of the protocol edges of issue 10: routing, block sizes, message
// hygiene, discovery filters, the 287 trust anchor, the DTLS MTU and the
// no_certificate alert.

func TestWellKnownLabelForm(t *testing.T) {
	t.Parallel()
	e := stStart(t, nil)
	c := e.dial(t)
	for _, tc := range []struct {
		path string
		code codes.Code
		diag string
	}{
		{"/.well-known/est/iot/crts", codes.Content, ""},
		{"/.well-known/est/iot/att", codes.Content, ""},
		{"/.well-known/est/nope/crts", codes.NotFound, "unknown label"},
		{"/.well-known/est/iot/cacerts", codes.NotFound, "not found"},
		{"/.well-known/est//crts", codes.NotFound, "not found"},
	} {
		r := c.do(stMsg{code: codes.GET, path: tc.path})
		if r.Code != tc.code || (tc.diag != "" && string(r.Payload) != tc.diag) {
			t.Errorf("%s: %v %q, want %v %q", tc.path, r.Code, r.Payload, tc.code, tc.diag)
		}
	}
	csr, _ := stCSR(t, "well-known label", 0)
	r := c.do(stMsg{code: codes.POST, path: "/.well-known/est/iot/sen", opts: message.Options{stUint(message.ContentFormat, 286)}, payload: csr})
	if r.Code != codes.Changed {
		t.Fatalf("sen under the well-known label: %v %q", r.Code, r.Payload)
	}
	if _, profiles := e.auth.counts(); len(profiles) != 1 || profiles[0] != "iot" {
		t.Fatalf("profiles passed to the authority: %v", profiles)
	}
}

// TestMessageHygieneDatagrams: format errors get RST (RFC 7252 §4.1-§4.3),
// an oversized request 4.13 with the session kept, NON requests NON
// responses and duplicates are ignored (§4.5, §5.2.3).
func TestMessageHygieneDatagrams(t *testing.T) {
	t.Parallel()
	e := stStart(t, nil)
	c := e.dial(t)
	rawRoundTrip := func(t *testing.T, b []byte, wait time.Duration) (message.Message, bool) {
		t.Helper()
		if _, err := c.c.Write(b); err != nil {
			t.Fatal(err)
		}
		buf := make([]byte, 4096)
		_ = c.c.SetReadDeadline(time.Now().Add(wait))
		n, err := c.c.Read(buf)
		if err != nil {
			return message.Message{}, false
		}
		m := message.Message{Options: make(message.Options, 0, 8)}
		if _, err := coder.DefaultCoder.Decode(buf[:n], &m); err != nil {
			t.Fatalf("undecodable answer % x: %v", buf[:n], err)
		}
		return m, true
	}
	for _, tc := range []struct {
		name string
		raw  []byte
		rst  bool
	}{
		{"empty CON with token", []byte{0x41, 0x00, 0x12, 0x34, 0xaa}, true},
		{"empty CON with payload", []byte{0x40, 0x00, 0x12, 0x35, 0xff, 0x01}, true},
		{"empty CON with option", []byte{0x40, 0x00, 0x12, 0x36, 0xb1, 'x'}, true},
		{"empty NON with token", []byte{0x51, 0x00, 0x12, 0x37, 0xaa}, true},
		{"reserved class 1", []byte{0x40, 0x21, 0x12, 0x38}, true},
		{"reserved class 6", []byte{0x40, 0xc1, 0x12, 0x39}, true},
		{"reserved class 7 with token", []byte{0x42, 0xe0, 0x12, 0x3a, 1, 2}, true},
		{"token length 9", []byte{0x49, 0x01, 0x12, 0x3b, 1, 2, 3, 4, 5, 6, 7, 8, 9}, true},
		{"CoAP ping", []byte{0x40, 0x00, 0x12, 0x3c}, true},
		{"ACK with token (ignored)", []byte{0x61, 0x00, 0x12, 0x3d, 0xaa}, false},
		{"version 2 (ignored)", []byte{0x80, 0x01, 0x12, 0x3e}, false},
	} {
		t.Run(tc.name, func(t *testing.T) {
			m, ok := rawRoundTrip(t, tc.raw, 300*time.Millisecond)
			if !tc.rst {
				if ok {
					t.Fatalf("answered %v %v", m.Type, m.Code)
				}
				return
			}
			mid := int32(tc.raw[2])<<8 | int32(tc.raw[3])
			if !ok || m.Type != message.Reset || m.Code != codes.Empty || m.MessageID != mid || len(m.Token) != 0 {
				t.Fatalf("want RST for %d, got %+v (%v)", mid, m, ok)
			}
		})
	}

	t.Run("oversized CON: 4.13, session kept", func(t *testing.T) {
		big := stMsg{code: codes.POST, path: "/est/sen", opts: message.Options{stUint(message.ContentFormat, 286)}, payload: bytes.Repeat([]byte{0x30}, 3000)}
		r := c.do(big)
		if r.Code != codes.RequestEntityTooLarge || r.Type != message.Acknowledgement {
			t.Fatalf("3000-byte request: %v %v", r.Type, r.Code)
		}
		if s1, ok := r.uintOpt(message.Size1); !ok || s1 != DefaultBlockMaxBody {
			t.Errorf("Size1 %d %v", s1, ok)
		}
		if b1, ok := r.block(t, message.Block1); !ok || b1.Size() != 1024 || b1.Num != 0 {
			t.Errorf("Block1 %v %v", b1, ok)
		}
		if r := c.do(stMsg{code: codes.GET, path: "/est/crts"}); r.Code != codes.Content {
			t.Fatalf("session after the oversized datagram: %v", r.Code)
		}
	})
	t.Run("oversized NON: NON 4.13", func(t *testing.T) {
		r, ok := c.roundTrip(stMsg{typ: message.NonConfirmable, code: codes.POST, path: "/est/sen", payload: make([]byte, 2000)}, 2*time.Second)
		if !ok || r.Type != message.NonConfirmable || r.Code != codes.RequestEntityTooLarge {
			t.Fatalf("NON 2000 bytes: %+v %v", r.Message, ok)
		}
	})
	t.Run("NON request: NON response, duplicate ignored", func(t *testing.T) {
		raw := stMsg{typ: message.NonConfirmable, code: codes.GET, path: "/est/crts"}.encode(777, []byte{7, 7, 7})
		m, ok := rawRoundTrip(t, raw, 2*time.Second)
		if !ok || m.Type != message.NonConfirmable || m.Code != codes.Content || !bytes.Equal(m.Token, []byte{7, 7, 7}) || m.MessageID == 777 {
			t.Fatalf("NON response %+v (%v)", m, ok)
		}
		if _, ok := rawRoundTrip(t, raw, 300*time.Millisecond); ok {
			t.Fatal("duplicate NON request answered")
		}
		// go-coap does not retransmit it (it was never CON).
		buf := make([]byte, 2048)
		_ = c.c.SetReadDeadline(time.Now().Add(2500 * time.Millisecond))
		if n, err := c.c.Read(buf); err == nil {
			t.Fatalf("unexpected datagram after the NON response: % x", buf[:n])
		}
	})
	if r := c.do(stMsg{code: codes.GET, path: "/est/crts"}); r.Code != codes.Content {
		t.Fatalf("session after the hygiene checks: %v", r.Code)
	}
}

func TestDiscoveryFilters(t *testing.T) {
	t.Parallel()
	e := stStart(t, nil)
	c := e.dial(t)
	for _, tc := range []struct {
		query string
		want  []string // resources, nil: 4.04
	}{
		{"", []string{"crts", "sen", "sren", "att", "crl"}},
		{"ct=285", []string{"att"}},
		{"ct=287", []string{"crts", "sen", "sren"}},
		{"ct=281", []string{"crts", "sen", "sren", "crl"}},
		{"ct=28*", []string{"crts", "sen", "sren", "att", "crl"}},
		{"ct=40", nil},
		{"rt=ace.est.sen", []string{"sen"}},
		{"rt=ace.est*", []string{"crts", "sen", "sren", "att"}},
		{"href=/est/s*", []string{"sen", "sren"}},
		{"href=/est/crts", []string{"crts"}},
		{"rt=ace.est*&ct=285", []string{"att"}},
		// The CRL (policy2) is filtered like the EST resources.
		{"rt=" + RTCRL, []string{"crl"}},
		{"rt=estca*", []string{"crl"}},
		{"href=/est/crl", []string{"crl"}},
		{"href=/est/c*", []string{"crts", "crl"}},
		{"rt=estca.crl&ct=281", []string{"crl"}},
		{"rt=estca.crl&ct=287", nil},
		{"title=x", nil},
	} {
		var opts message.Options
		for _, q := range strings.Split(tc.query, "&") {
			if q != "" {
				opts = append(opts, message.Option{ID: message.URIQuery, Value: []byte(q)})
			}
		}
		r := c.do(stMsg{code: codes.GET, path: "/.well-known/core", opts: opts})
		if tc.want == nil {
			if r.Code != codes.NotFound {
				t.Errorf("?%s: %v %q, want 4.04", tc.query, r.Code, r.Payload)
			}
			continue
		}
		var got []string
		for _, l := range strings.Split(string(r.Payload), ",") {
			got = append(got, strings.TrimPrefix(l[:strings.Index(l, ">")], "</est/"))
		}
		if r.Code != codes.Content || strings.Join(got, " ") != strings.Join(tc.want, " ") {
			t.Errorf("?%s: %v %v, want %v", tc.query, r.Code, got, tc.want)
		}
	}
}

// stHierarchy is a server under a two-level PKI: root → issuing CA, which
// issues the server and client certificates; /crts returns [issuing, root]
// and the server sends its intermediate in the handshake.
func stHierarchy(t *testing.T, mod func(*Options)) (*stEnv, *pkitest.Cert) {
	t.Helper()
	root := pkitest.NewCA(t, "estca test root")
	issuing := root.Issue(t, pkitest.SubCA("estca test issuing CA"))
	a := &stAuthority{ca: issuing, chain: []*x509.Certificate{issuing.Cert, root.Cert}}
	logs := &stLog{}
	o := Options{Addr: "127.0.0.1:0", Authority: a,
		Certificate: issuing.Issue(t, pkitest.ServerAuth("estca test server")).TLS(issuing.Cert)}
	if mod != nil {
		mod(&o)
	}
	srv := stServe(t, o)
	return &stEnv{srv: srv, addr: srv.Addr().String(), ca: issuing, auth: a,
		client: issuing.Issue(t, pkitest.ClientAuth("device 0001")).TLS(issuing.Cert), roots: root.Pool(), logs: logs}, root
}

// TestCrts287TrustAnchor: the 287 answer of /crts is the root, and a client
// that takes it as its only trust anchor completes the next handshake: pion,
// OpenSSL (s_client, and libcoap's OpenSSL build) and libcoap's GnuTLS
// build. With the issuing CA as its only anchor (what 287 returned before)
// OpenSSL fails.
func TestCrts287TrustAnchor(t *testing.T) {
	t.Parallel()
	e, root := stHierarchy(t, nil)
	c := e.dial(t)
	r := c.do(stMsg{code: codes.GET, path: "/.well-known/est/crts", opts: message.Options{stUint(message.Accept, 287)}})
	if r.Code != codes.Content {
		t.Fatalf("crts 287: %v", r.Code)
	}
	anchor, err := x509.ParseCertificate(r.Payload)
	if err != nil || !anchor.Equal(root.Cert) {
		t.Fatalf("287 answer is not the root: %v", err)
	}
	// pion, with only the answer as trust store.
	c2, err := stDialErr(t, e.addr, &e.client, pkitest.Pool(anchor))
	if err != nil {
		t.Fatalf("pion with the 287 anchor: %v", err)
	}
	if r := c2.do(stMsg{code: codes.GET, path: "/est/crts"}); r.Code != codes.Content {
		t.Fatalf("after the handshake: %v", r.Code)
	}

	dir := t.TempDir()
	anchorPEM := filepath.Join(dir, "anchor.pem")
	stWritePEM(t, anchorPEM, "CERTIFICATE", r.Payload)
	issuingPEM := filepath.Join(dir, "issuing.pem")
	stWritePEM(t, issuingPEM, "CERTIFICATE", e.ca.Cert.Raw)
	certPEM, keyPEM := stClientFiles(t, dir, e)
	port := strconv.Itoa(e.srv.Addr().(*net.UDPAddr).Port)

	t.Run("openssl s_client", func(t *testing.T) {
		pkitest.RequireTool(t, "openssl")
		sclient := func(ca string) string {
			ctx, cancel := context.WithTimeout(context.Background(), 20*time.Second)
			defer cancel()
			cmd := exec.CommandContext(ctx, "openssl", "s_client", "-dtls1_2", "-connect", "127.0.0.1:"+port,
				"-cipher", "ECDHE-ECDSA-AES128-CCM8", "-cert", certPEM, "-key", keyPEM, "-CAfile", ca, "-verify_return_error")
			cmd.Stdin = strings.NewReader("")
			out, _ := cmd.CombinedOutput()
			return string(out)
		}
		if out := sclient(anchorPEM); !strings.Contains(out, "Cipher is ECDHE-ECDSA-AES128-CCM8") || strings.Contains(out, "Verification error") {
			t.Fatalf("OpenSSL with the 287 anchor:\n%s", out)
		}
		// What 287 answered before (the issuing CA) fails as OpenSSL's only anchor.
		if out := sclient(issuingPEM); !strings.Contains(out, "Verification error: unable to get issuer certificate") {
			t.Fatalf("OpenSSL with the issuing CA as anchor (the test would not show the fix):\n%s", out)
		}
	})
	for _, bin := range []string{"coap-client-openssl", "coap-client-gnutls"} {
		t.Run(bin, func(t *testing.T) {
			path := stLibcoap(t, bin)
			out := filepath.Join(t.TempDir(), "crts.der")
			ctx, cancel := context.WithTimeout(context.Background(), 20*time.Second)
			defer cancel()
			log, _ := exec.CommandContext(ctx, path, "-c", certPEM, "-j", keyPEM, "-R", anchorPEM, "-B", "10",
				"-m", "get", "-o", out, "coaps://127.0.0.1:"+port+"/.well-known/est/crts").CombinedOutput()
			b, err := os.ReadFile(out)
			if err != nil || len(stCertsOnly(t, b)) != 2 {
				t.Fatalf("%s with the 287 anchor: %v\n%s", bin, err, log)
			}
		})
	}
}

// stClientFiles writes the client certificate (with its chain) and key as
// PEM files for the external clients.
func stClientFiles(t *testing.T, dir string, e *stEnv) (certPEM, keyPEM string) {
	t.Helper()
	certPEM, keyPEM = filepath.Join(dir, "client.pem"), filepath.Join(dir, "client.key")
	var chain []byte
	for _, der := range e.client.Certificate {
		chain = append(chain, pem.EncodeToMemory(&pem.Block{Type: "CERTIFICATE", Bytes: der})...)
	}
	if err := os.WriteFile(certPEM, chain, 0o600); err != nil {
		t.Fatal(err)
	}
	kder, err := x509.MarshalPKCS8PrivateKey(e.client.PrivateKey)
	if err != nil {
		t.Fatal(err)
	}
	stWritePEM(t, keyPEM, "PRIVATE KEY", kder)
	return certPEM, keyPEM
}

// stRelay is a UDP relay between one client and the server that records
// what the server sends, to look at datagram sizes and alerts on the wire.
type stRelay struct {
	addr string

	mu   sync.Mutex
	sent [][]byte // server → client datagrams
}

func stStartRelay(t *testing.T, server string) *stRelay {
	t.Helper()
	front, err := net.ListenUDP("udp", &net.UDPAddr{IP: net.IPv4(127, 0, 0, 1)})
	if err != nil {
		t.Fatal(err)
	}
	sa, _ := net.ResolveUDPAddr("udp", server)
	back, err := net.DialUDP("udp", nil, sa)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = front.Close(); _ = back.Close() })
	r := &stRelay{addr: front.LocalAddr().String()}
	var client net.Addr
	var cmu sync.Mutex
	go func() {
		buf := make([]byte, 65536)
		for {
			n, from, err := front.ReadFrom(buf)
			if err != nil {
				return
			}
			cmu.Lock()
			client = from
			cmu.Unlock()
			_, _ = back.Write(buf[:n])
		}
	}()
	go func() {
		buf := make([]byte, 65536)
		for {
			n, err := back.Read(buf)
			if err != nil {
				return
			}
			r.mu.Lock()
			r.sent = append(r.sent, bytes.Clone(buf[:n]))
			r.mu.Unlock()
			cmu.Lock()
			to := client
			cmu.Unlock()
			if to != nil {
				_, _ = front.WriteTo(buf[:n], to)
			}
		}
	}()
	return r
}

func (r *stRelay) datagrams() [][]byte {
	r.mu.Lock()
	defer r.mu.Unlock()
	return append([][]byte(nil), r.sent...)
}

// TestDTLSMTU: with est.dtls_mtu the server's handshake flights are
// fragmented so that no datagram is larger than the MTU; the same
// handshake without it sends a Certificate flight larger than that.
func TestDTLSMTU(t *testing.T) {
	t.Parallel()
	for _, mtu := range []int{0, 320} {
		t.Run(strconv.Itoa(mtu), func(t *testing.T) {
			t.Parallel()
			e, _ := stHierarchy(t, func(o *Options) { o.MTU = mtu })
			relay := stStartRelay(t, e.addr)
			c, err := stDialErr(t, relay.addr, &e.client, e.roots)
			if err != nil {
				t.Fatal(err)
			}
			if r := c.do(stMsg{code: codes.GET, path: "/est/crts"}); r.Code != codes.Content {
				t.Fatalf("crts: %v", r.Code)
			}
			largest, handshake := 0, 0
			for _, d := range relay.datagrams() {
				if len(d) > 0 && d[0] == contentHandshake {
					handshake++
					largest = max(largest, len(d))
				}
			}
			t.Logf("MTU %d: %d handshake datagrams, largest %d bytes", mtu, handshake, largest)
			if mtu == 0 && largest <= 320 {
				t.Fatalf("default MTU: largest flight datagram %d bytes, the 320 case would prove nothing", largest)
			}
			if mtu > 0 && largest > mtu {
				t.Fatalf("datagram of %d bytes above the MTU %d", largest, mtu)
			}
		})
	}
}

// TestNoCertificateAlert: a client without a certificate gets the fatal
// alert handshake_failure (40), never no_certificate (41), which TLS 1.2
// says MUST NOT be sent (RFC 5246 §7.4.6, §7.2.2); pion sends 41 and the
// gate rewrites it (rewriteNoCertificate).
func TestNoCertificateAlert(t *testing.T) {
	t.Parallel()
	e := stStart(t, nil)
	relay := stStartRelay(t, e.addr)
	_, err := stDialTimeout(t, relay.addr, nil, e.roots, 5*time.Second)
	if err == nil {
		t.Fatal("client without certificate admitted")
	}
	if !strings.Contains(err.Error(), "HandshakeFailure") {
		t.Errorf("client saw %v, want a handshake_failure alert", err)
	}
	var alerts [][]byte
	for _, d := range relay.datagrams() {
		for rest := d; len(rest) > 0; {
			r, next, ok := nextRecord(rest)
			if !ok {
				break
			}
			if r.typ == contentAlert && r.epoch == 0 {
				alerts = append(alerts, r.body)
			}
			rest = next
		}
	}
	if len(alerts) == 0 || !bytes.Equal(alerts[0], []byte{alertFatal, alertHandshakeFail}) {
		t.Fatalf("alerts on the wire: % x", alerts)
	}
	// libcoap's OpenSSL build reports the alert it got.
	path := pkitest.RequireTool(t, "coap-client-openssl")
	dir := t.TempDir()
	caPEM := filepath.Join(dir, "ca.pem")
	stWritePEM(t, caPEM, "CERTIFICATE", e.ca.Cert.Raw)
	ctx, cancel := context.WithTimeout(context.Background(), 20*time.Second)
	defer cancel()
	out, _ := exec.CommandContext(ctx, path, "-R", caPEM, "-B", "3", "-m", "get", "coaps://"+e.addr+"/est/crts").CombinedOutput()
	if strings.Contains(string(out), "no certificate") || !strings.Contains(string(out), "handshake failure") {
		t.Errorf("coap-client-openssl output:\n%s", out)
	}
}

// TestRewriteNoCertificate: only a plaintext fatal no_certificate alert
// record changes; encrypted records and other alerts stay byte for byte.
func TestRewriteNoCertificate(t *testing.T) {
	t.Parallel()
	seq := [6]byte{0, 0, 0, 0, 0, 3}
	nc := fatalAlert(seq, alertNoCertificate)
	hs := helloVerifyRequest(seq, make([]byte, cookieLength))
	enc := append([]byte(nil), nc...)
	enc[4] = 1 // epoch 1: encrypted, never touched
	warn := append([]byte(nil), nc...)
	warn[13] = 1 // warning level
	for _, tc := range []struct {
		name string
		in   []byte
		want []byte
	}{
		{"fatal no_certificate", nc, fatalAlert(seq, alertHandshakeFail)},
		{"after a handshake record", append(append([]byte(nil), hs...), nc...), append(append([]byte(nil), hs...), fatalAlert(seq, alertHandshakeFail)...)},
		{"epoch 1", enc, enc},
		{"warning", warn, warn},
		{"other alert", fatalAlert(seq, alertInternalError), fatalAlert(seq, alertInternalError)},
		{"truncated", nc[:10], nc[:10]},
	} {
		in := append([]byte(nil), tc.in...)
		got, _ := rewriteNoCertificate(in)
		if !bytes.Equal(got, tc.want) || !bytes.Equal(in, tc.in) {
			t.Errorf("%s: % x → % x, want % x (input changed: %v)", tc.name, tc.in, got, tc.want, !bytes.Equal(in, tc.in))
		}
	}
}

// TestLibcoapBlock16POST: libcoap with -b 16 puts Block2 SZX 0 in the first
// Block1 request of a POST (RFC 9148 Appendix B.2) and gets the response in
// 16-byte blocks.
func TestLibcoapBlock16POST(t *testing.T) {
	t.Parallel()
	e := stStart(t, nil)
	dir := t.TempDir()
	caPEM := filepath.Join(dir, "ca.pem")
	stWritePEM(t, caPEM, "CERTIFICATE", e.ca.Cert.Raw)
	certPEM, keyPEM := stClientFiles(t, dir, e)
	for _, bin := range []string{"coap-client-openssl", "coap-client-gnutls"} {
		t.Run(bin, func(t *testing.T) {
			path := stLibcoap(t, bin)
			csr, key := stCSR(t, "b16 "+bin, 100)
			in := filepath.Join(t.TempDir(), "csr.der")
			if err := os.WriteFile(in, csr, 0o600); err != nil {
				t.Fatal(err)
			}
			out := filepath.Join(t.TempDir(), "cert.der")
			resource := "iot/sren"
			if bin == "coap-client-openssl" {
				resource = "iot/sen"
			}
			before := strings.Count(e.logs.String(), "resource="+resource+" code=2.04")
			ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
			defer cancel()
			log, _ := exec.CommandContext(ctx, path, "-c", certPEM, "-j", keyPEM, "-R", caPEM, "-B", "20",
				"-m", "post", "-t", "286", "-A", "287", "-b", "16", "-f", in, "-o", out,
				"coaps://"+e.addr+"/.well-known/est/"+resource).CombinedOutput()
			b, err := os.ReadFile(out)
			if err != nil {
				t.Fatalf("no output: %v\n%s", err, log)
			}
			cert, err := x509.ParseCertificate(b)
			if err != nil || !key.PublicKey.Equal(cert.PublicKey) {
				t.Fatalf("certificate: %v\n%s", err, log)
			}
			if n := strings.Count(e.logs.String(), "resource="+resource+" code=2.04") - before; n != (len(b)+15)/16 {
				t.Fatalf("%d response blocks for %d bytes, want 16-byte blocks", n, len(b))
			}
		})
	}
}
