package est

import (
	"bytes"
	"context"
	"crypto/tls"
	"crypto/x509"
	"crypto/x509/pkix"
	"errors"
	"net"
	"strings"
	"testing"
	"time"

	"github.com/plgd-dev/go-coap/v3/message"
	"github.com/plgd-dev/go-coap/v3/message/codes"

	"github.com/estca/estca/est/client"
	"github.com/estca/estca/est/wire"
	"github.com/estca/estca/policy"
	"github.com/estca/estca/policy/pkitest"
)

// TestServerRecheckRefusesRequest: a requester the authority no longer
// admits (revoked since its handshake) gets 4.03 on its next request,
// audited, and its session is closed after the answer.
func TestServerRecheckRefusesRequest(t *testing.T) {
	t.Parallel()
	e := stStart(t, func(o *Options) { o.RecheckInterval = time.Hour })
	c := e.dial(t)
	if r := c.do(stMsg{code: codes.GET, path: "/est/crts"}); r.Code != codes.Content {
		t.Fatalf("crts: %v", r.Code)
	}
	leaf, _ := x509.ParseCertificate(e.client.Certificate[0])
	e.auth.refuse(leaf)
	r := c.do(stMsg{code: codes.GET, path: "/est/crts"})
	if r.Code != codes.Forbidden || string(r.Payload) != "certificate revoked" {
		t.Fatalf("request after revocation: %v %q", r.Code, r.Payload)
	}
	if rs := e.auth.rejected(); len(rs) != 1 || rs[0].Code != "4.03" || rs[0].Reason != "certificate revoked" {
		t.Fatalf("refusal not audited: %+v", rs)
	}
	stScrapeUntil(t, e.srv.Metrics(), `estca_est_sessions_closed_total{reason="certificate revoked"} 1`, `estca_est_sessions_active 0`)
	if !stGone(c) {
		t.Fatal("closed session still served")
	}
	if !strings.Contains(e.logs.String(), `msg="session closed"`) {
		t.Errorf("closing not logged:\n%s", e.logs)
	}
}

// stGone reports whether c's session is closed: a request gets no answer
// (the write or the read fails, or nothing comes).
func stGone(c *stConn) bool {
	c.mid++
	if _, err := c.c.Write(stMsg{code: codes.GET, path: "/est/crts"}.encode(c.mid, []byte{1})); err != nil {
		return true
	}
	_ = c.c.SetReadDeadline(time.Now().Add(300 * time.Millisecond))
	_, err := c.c.Read(make([]byte, 2048))
	return err != nil
}

// TestServerRecheckSessionsCloses: RecheckSessions (and the periodic
// re-check) closes the open sessions of refused requesters, and only those.
func TestServerRecheckSessionsCloses(t *testing.T) {
	t.Parallel()
	for _, periodic := range []bool{false, true} {
		e := stStart(t, func(o *Options) {
			o.RecheckInterval = time.Hour
			if periodic {
				o.RecheckInterval = 20 * time.Millisecond
			}
		})
		other := e.ca.Issue(t, pkitest.ClientAuth("device 0002")).TLS()
		c := e.dial(t)
		c2, err := stDialErr(t, e.addr, &other, e.roots)
		if err != nil {
			t.Fatal(err)
		}
		for _, cc := range []*stConn{c, c2} {
			if r := cc.do(stMsg{code: codes.GET, path: "/est/crts"}); r.Code != codes.Content {
				t.Fatalf("crts: %v", r.Code)
			}
		}
		leaf, _ := x509.ParseCertificate(e.client.Certificate[0])
		e.auth.refuse(leaf)
		if !periodic {
			if n := e.srv.RecheckSessions(); n != 1 {
				t.Fatalf("RecheckSessions closed %d sessions, want 1", n)
			}
		}
		stScrapeUntil(t, e.srv.Metrics(), `estca_est_sessions_closed_total{reason="certificate revoked"} 1`, `estca_est_sessions_active 1`)
		if !stGone(c) {
			t.Fatal("closed session still served")
		}
		if r := c2.do(stMsg{code: codes.GET, path: "/est/crts"}); r.Code != codes.Content {
			t.Fatalf("the other session: %v", r.Code)
		}
	}
}

// TestServerRecheckThroughTheGate: the re-check works on the gate's
// peers, the one registry of the server (issue 8 on issue 10's front). A
// refused requester's NON request gets a NON 4.03, then its session is
// closed and its per-identity session slot given back (with a limit of one
// session per identity, the device gets in again once it is admitted
// again); a peer still in its handshake is left alone (it has no
// requester yet).
func TestServerRecheckThroughTheGate(t *testing.T) {
	t.Parallel()
	e := stStart(t, func(o *Options) {
		o.RecheckInterval = time.Hour
		o.MaxSessionsPerIdentity = 1
	})
	c := e.dial(t)
	if r := c.do(stMsg{code: codes.GET, path: "/est/crts"}); r.Code != codes.Content {
		t.Fatalf("crts: %v", r.Code)
	}
	if c2, err := stDialErr(t, e.addr, &e.client, e.roots); err == nil {
		_ = c2.c.Close()
		t.Fatal("a second session of the identity was admitted (limit 1)")
	}

	// A peer in the middle of its handshake: admitted after the cookie,
	// no requester yet.
	hello := stClientHello(t)
	pc, err := net.ListenUDP("udp", &net.UDPAddr{IP: net.IPv4(127, 0, 0, 1)})
	if err != nil {
		t.Fatal(err)
	}
	defer pc.Close()
	buf := make([]byte, 2048)
	if _, err := pc.WriteTo(hello, e.srv.Addr()); err != nil {
		t.Fatal(err)
	}
	_ = pc.SetReadDeadline(time.Now().Add(5 * time.Second))
	n, _, err := pc.ReadFrom(buf)
	if err != nil {
		t.Fatal(err)
	}
	r, _, ok := nextRecord(buf[:n])
	if !ok || !isHelloVerifyRequest(buf[:n]) {
		t.Fatalf("no HelloVerifyRequest: % x", buf[:n])
	}
	cookie := r.body[handshakeHeaderLen+3:]
	if _, err := pc.WriteTo(stWithCookie(t, hello, cookie), e.srv.Addr()); err != nil {
		t.Fatal(err)
	}
	// The ServerHello flight: admitted.
	if n, _, err = pc.ReadFrom(buf); err != nil || n == 0 || buf[0] != contentHandshake || isHelloVerifyRequest(buf[:n]) {
		t.Fatalf("no ServerHello: %v % x", err, buf[:n])
	}
	peers := func() (established, handshaking int) {
		for _, v := range e.srv.gate.all() {
			if v.session() != nil {
				established++
			} else {
				handshaking++
			}
		}
		return
	}
	if est, hs := peers(); est != 1 || hs != 1 {
		t.Fatalf("gate: %d established, %d handshaking; want 1 and 1", est, hs)
	}

	leaf, _ := x509.ParseCertificate(e.client.Certificate[0])
	e.auth.refuse(leaf)
	nr, ok := c.roundTrip(stMsg{typ: message.NonConfirmable, code: codes.GET, path: "/est/crts"}, 5*time.Second)
	if !ok || nr.Type != message.NonConfirmable || nr.Code != codes.Forbidden || string(nr.Payload) != "certificate revoked" {
		t.Fatalf("NON request after the revocation: %v %v %q (answered %v)", nr.Type, nr.Code, nr.Payload, ok)
	}
	stScrapeUntil(t, e.srv.Metrics(), `estca_est_sessions_closed_total{reason="certificate revoked"} 1`, `estca_est_sessions_active 1`)
	if !stGone(c) {
		t.Fatal("the refused session is still served")
	}
	if n := e.srv.RecheckSessions(); n != 0 {
		t.Fatalf("RecheckSessions closed %d more sessions; the handshaking peer has no requester", n)
	}
	if est, hs := peers(); est != 0 || hs != 1 {
		t.Fatalf("gate after the close: %d established, %d handshaking; want 0 and 1", est, hs)
	}

	e.auth.admitAgain(leaf)
	c3, err := stDialErr(t, e.addr, &e.client, e.roots)
	if err != nil {
		t.Fatalf("the identity's slot was not given back: %v", err)
	}
	if r := c3.do(stMsg{code: codes.GET, path: "/est/crts"}); r.Code != codes.Content {
		t.Fatalf("crts after re-admission: %v", r.Code)
	}
}

// TestServerCRLResource: GET /est/crl answers the authority's CRL in a
// certs-only SignedData (281); other Accepts and methods are refused.
func TestServerCRLResource(t *testing.T) {
	t.Parallel()
	e := stStart(t, nil)
	c := e.dial(t)
	for _, accept := range []int{-1, 281} {
		m := stMsg{code: codes.GET, path: CRLPath}
		if accept >= 0 {
			m.opts = message.Options{stUint(message.Accept, uint32(accept))}
		}
		r := c.do(m)
		if f, _ := r.uintOpt(message.ContentFormat); r.Code != codes.Content || f != 281 {
			t.Fatalf("crl accept %d: %v format %d", accept, r.Code, f)
		}
		want, _ := wire.CRLsOnly(stCRL)
		if !bytes.Equal(r.Payload, want) {
			t.Fatalf("crl payload %x", r.Payload)
		}
	}
	if r := c.do(stMsg{code: codes.GET, path: CRLPath, opts: message.Options{stUint(message.Accept, 287)}}); r.Code != codes.NotAcceptable {
		t.Fatalf("crl accept 287: %v", r.Code)
	}
	if r := c.do(stMsg{code: codes.POST, path: CRLPath}); r.Code != codes.MethodNotAllowed {
		t.Fatalf("crl POST: %v", r.Code)
	}
	for _, p := range []string{"/.well-known/est/crl", "/est/iot/crl"} {
		if r := c.do(stMsg{code: codes.GET, path: p}); r.Code != codes.NotFound {
			t.Fatalf("%s: %v", p, r.Code)
		}
	}
}

// TestRealAuthorityRevocationBites: with the real authority, a revoked
// operational certificate's open session gets 4.03 on its next enrollment,
// is closed by RecheckSessions, and cannot handshake again; /att follows
// the policy and the client's CSR built from the requester's identity is
// accepted; the CRL served over CoAP lists the revoked serial. Not
// parallel: SoftHSM is selected through the environment.
func TestRealAuthorityRevocationBites(t *testing.T) {
	rc := rcAuthority(t)
	e := rcServe(t, rc, func(o *Options) { o.RecheckInterval = time.Hour })
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	device := pkitest.KeyPair(t, e.demo.Valid.Cert, e.demo.Valid.Key)
	opts := client.Options{Server: "coaps://" + e.addr, Certificate: device, Roots: e.roots, ServerName: "localhost", Timeout: 5 * time.Second}
	dc, err := client.Dial(ctx, opts)
	if err != nil {
		t.Fatal(err)
	}
	defer dc.Close()
	key := pkitest.Key(t)
	op, _, err := dc.Enroll(ctx, pkitest.RawCSR(t, key, device.Leaf.RawSubject), wire.FormatPKIXCert)
	if err != nil {
		t.Fatal(err)
	}
	// A foreign identity is refused with the engine's diagnostic.
	_, _, err = dc.Enroll(ctx, pkitest.CSR(t, key, pkix.Name{CommonName: "admin"}), wire.FormatPKIXCert)
	var re *client.ResponseError
	if !errors.As(err, &re) || re.Code != codes.Forbidden || !strings.Contains(re.Diagnostic, policy.CodeSubjectNotBound.Text()) {
		t.Fatalf("CN=admin: %v", err)
	}

	opts.Certificate = tls.Certificate{Certificate: [][]byte{op.Raw}, PrivateKey: key, Leaf: op}
	oc, err := client.Dial(ctx, opts)
	if err != nil {
		t.Fatal(err)
	}
	defer oc.Close()
	renew := func() error {
		var san []pkix.Extension
		for _, x := range op.Extensions {
			if x.Id.Equal(policy.OIDSubjectAltName) {
				san = append(san, x)
			}
		}
		_, _, err := oc.Reenroll(ctx, pkitest.RawCSR(t, pkitest.Key(t), op.RawSubject, san...), wire.FormatPKIXCert)
		return err
	}
	if err := renew(); err != nil {
		t.Fatal(err)
	}
	if _, err := rc.a.Revoke(op.SerialNumber.Text(16), 1, "test"); err != nil {
		t.Fatal(err)
	}
	before, _ := e.db.CountCertificates()
	err = renew()
	if !errors.As(err, &re) || re.Code != codes.Forbidden || re.Diagnostic != "certificate revoked" {
		t.Fatalf("renewal after revocation: %v", err)
	}
	if n := e.srv.RecheckSessions(); n != 0 {
		// The refused request closed it already.
		t.Logf("RecheckSessions closed %d", n)
	}
	stScrapeUntil(t, e.srv.Metrics(), `estca_est_sessions_closed_total{reason="certificate revoked"} 1`)
	if after, _ := e.db.CountCertificates(); after != before {
		t.Fatalf("%d certificates issued after the revocation", after-before)
	}
	if c, err := client.Dial(ctx, opts); err == nil {
		c.Close()
		t.Fatal("a revoked certificate completed a handshake")
	}

	// The CRL over CoAP lists it.
	crl, err := rc.a.CRL()
	if err != nil {
		t.Fatal(err)
	}
	parsed, err := x509.ParseRevocationList(crl.DER)
	if err != nil || len(parsed.RevokedCertificateEntries) != 1 || parsed.RevokedCertificateEntries[0].SerialNumber.Cmp(op.SerialNumber) != 0 {
		t.Fatalf("CRL %+v, %v", parsed, err)
	}
	sc, err := stDialName(t, e.addr, &device, e.roots, "localhost", 5*time.Second)
	if err != nil {
		t.Fatal(err)
	}
	r := sc.do(stMsg{code: codes.GET, path: CRLPath})
	if want, _ := wire.CRLsOnly(crl.DER); r.Code != codes.Content || !bytes.Equal(r.Payload, want) {
		t.Fatalf("CRL served over CoAP: %v", r.Code)
	}
}
