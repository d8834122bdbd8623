package est

import (
	"context"
	"crypto/tls"
	"crypto/x509"
	"errors"
	"log/slog"
	"strings"
	"sync/atomic"
	"testing"
	"time"

	"github.com/plgd-dev/go-coap/v3/message"
	"github.com/plgd-dev/go-coap/v3/message/codes"

	"github.com/estca/estca/ca"
	"github.com/estca/estca/ca/cms"
	"github.com/estca/estca/est/bench"
	"github.com/estca/estca/est/client"
	"github.com/estca/estca/est/wire"
	"github.com/estca/estca/policy/pkitest"
)

// ctRealServer is estca's EST-coaps server on 127.0.0.1:0 in front of a real
// ca.Authority (SoftHSM token, bbolt store in t.TempDir()).
type ctRealServer struct {
	addr     string
	root     *x509.Certificate
	issuing  *x509.Certificate
	roots    *x509.CertPool
	device   tls.Certificate // demo IDevID accepted by the "demo" anchor
	unknown  tls.Certificate // demo IDevID of an unknown manufacturer
	expired  tls.Certificate // expired demo IDevID; the anchor does not tolerate expiry
	pending  *ctPendingAuthority
	srvChain [][]byte
}

// ctStartRealServer needs SoftHSM: softhsmtest skips (or fails on CI) without it.
// It uses t.Setenv, so its test cannot be parallel.
func ctStartRealServer(t *testing.T) *ctRealServer {
	t.Helper()
	rc := rcAuthority(t)
	h, demo := rc.h, rc.demo
	pending := &ctPendingAuthority{Authority: rc.a}
	cert := rc.serverCert()
	chain := cert.Certificate
	srv := stServe(t, Options{
		Addr:        "127.0.0.1:0",
		Certificate: cert,
		Authority:   pending,
		Keygen:      rc.kg,
	})
	return &ctRealServer{
		addr: srv.Addr().String(), root: h.Root, issuing: h.Issuing, roots: pkitest.Pool(h.Root),
		device: pkitest.KeyPair(t, demo.Valid.Cert, demo.Valid.Key), unknown: pkitest.KeyPair(t, demo.Unknown.Cert, demo.Unknown.Key), srvChain: chain,
		expired: pkitest.KeyPair(t, demo.Expired.Cert, demo.Expired.Key), pending: pending,
	}
}

// dialT dials o for the test and closes the session at its end.
func dialT(t *testing.T, o client.Options) *client.Conn {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	c, err := client.Dial(ctx, o)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = c.Close() })
	return c
}

func (s *ctRealServer) options() client.Options {
	return client.Options{Server: "coaps://" + s.addr, Certificate: s.device, Roots: s.roots, Timeout: 10 * time.Second}
}

// TestClientAgainstServer runs the client against estca's own server. Not
// parallel: the SoftHSM token is selected through the environment.
func TestClientAgainstServer(t *testing.T) {
	s := ctStartRealServer(t)
	ctx, cancel := context.WithTimeout(context.Background(), 50*time.Second)
	defer cancel()

	t.Run("handshake rejected", func(t *testing.T) {
		self := pkitest.NewCA(t, "self-signed device")
		for name, cert := range map[string]tls.Certificate{
			"unknown manufacturer": s.unknown,
			"expired IDevID":       s.expired,
			"self-signed":          self.TLS(),
		} {
			o := s.options()
			o.Certificate = cert
			o.Timeout = 5 * time.Second
			c, err := client.Dial(ctx, o)
			if err == nil {
				_ = c.Close()
				t.Fatalf("%s: handshake succeeded", name)
			}
			var he *client.HandshakeError
			if !errors.As(err, &he) || !strings.Contains(he.Reason, "rejected the client certificate") {
				t.Errorf("%s: err = %v, want a client.HandshakeError saying the client certificate was rejected", name, err)
			}
		}
	})

	t.Run("untrusted server", func(t *testing.T) {
		o := s.options()
		o.Roots = pkitest.NewCA(t, "other").Pool()
		if _, err := client.Dial(ctx, o); !errors.Is(err, client.ErrHandshake) || !strings.Contains(err.Error(), "trust anchors") {
			t.Fatalf("err = %v", err)
		}
	})

	c := dialT(t, s.options())

	t.Run("crts", func(t *testing.T) {
		certs, raw, err := c.CACerts(ctx, wire.FormatCertsOnly)
		if err != nil {
			t.Fatal(err)
		}
		if len(raw) == 0 || len(certs) == 0 || !certs[0].Equal(s.issuing) {
			t.Fatalf("281: %d certs, first %v", len(certs), certs[0].Subject)
		}
		certs, _, err = c.CACerts(ctx, 0)
		if err != nil || !certs[0].Equal(s.issuing) {
			t.Fatalf("no Accept: %v", err)
		}
		certs, raw, err = c.CACerts(ctx, wire.FormatPKIXCert)
		if err != nil {
			t.Fatal(err)
		}
		if len(certs) != 1 || !certs[0].Equal(s.root) || string(raw) != string(s.root.Raw) {
			t.Fatal("287: want the root CA certificate (the explicit trust anchor)")
		}
	})

	t.Run("discovery", func(t *testing.T) {
		links, _, err := c.Discover(ctx)
		if err != nil {
			t.Fatal(err)
		}
		for _, rt := range []string{"ace.est.crts", "ace.est.sen", "ace.est.sren"} {
			found := false
			for _, l := range links {
				found = found || l.HasResourceType(rt)
			}
			if !found {
				t.Errorf("discovery lacks %s: %+v", rt, links)
			}
		}
	})

	t.Run("att", func(t *testing.T) {
		if _, err := c.CSRAttrs(ctx); err != nil {
			t.Fatal(err)
		}
	})

	t.Run("sen block-wise", func(t *testing.T) {
		o := s.options()
		o.BlockSize = 64
		small := dialT(t, o)
		key := pkitest.Key(t)
		csr := pkitest.PaddedCSR(t, key, s.device.Leaf.Subject.CommonName, 1200)
		if len(csr) <= 1024 {
			t.Fatalf("CSR of %d bytes", len(csr))
		}
		for _, accept := range []message.MediaType{0, wire.FormatPKIXCert, wire.FormatCertsOnly} {
			cert, _, err := small.Enroll(ctx, csr, accept)
			if err != nil {
				t.Fatalf("accept %d: %v", accept, err)
			}
			if _, err := cert.Verify(x509.VerifyOptions{Roots: s.roots, Intermediates: pkitest.Pool(s.issuing),
				KeyUsages: []x509.ExtKeyUsage{x509.ExtKeyUsageClientAuth}}); err != nil {
				t.Fatalf("issued certificate does not verify: %v", err)
			}
		}
	})

	t.Run("sen delayed 5.03", func(t *testing.T) {
		// The client waits min(Max-Age, MaxWait) before each resend and
		// logs the server's Max-Age at debug level.
		o := s.options()
		o.MaxWait = time.Millisecond
		var logs stLog
		o.Logger = slog.New(slog.NewTextHandler(&logs, &slog.HandlerOptions{Level: slog.LevelDebug}))
		dc := dialT(t, o)
		s.pending.hold.Store(2)
		csr := pkitest.PaddedCSR(t, pkitest.Key(t), s.device.Leaf.Subject.CommonName, 0)
		if _, _, err := dc.Enroll(ctx, csr, wire.FormatPKIXCert); err != nil {
			t.Fatal(err)
		}
		if n := strings.Count(logs.String(), "max_age=3s wait=1ms"); n != 2 {
			t.Fatalf("%d resends after a Max-Age of 3s, want 2:\n%s", n, logs.String())
		}
		s.pending.hold.Store(100)
		_, _, err := dc.Enroll(ctx, csr, wire.FormatPKIXCert)
		var re *client.ResponseError
		if !errors.Is(err, client.ErrRetriesExhausted) || !errors.As(err, &re) || re.MaxAge != 3*time.Second {
			t.Fatalf("err = %v, want client.ErrRetriesExhausted with Max-Age 3s", err)
		}
		s.pending.hold.Store(0)
	})

	t.Run("server keygen", func(t *testing.T) {
		// The CSR's key is ignored (RFC 9148 §4.8): the key comes from the
		// server, plain (284) or encrypted to the device's own IDevID key
		// (280, KeyAgreeRecipientInfo), with the certificate as 281 (skg)
		// or 287 (skc).
		devLeaf := s.device.Leaf
		if devLeaf == nil {
			var err error
			if devLeaf, err = x509.ParseCertificate(s.device.Certificate[0]); err != nil {
				t.Fatal(err)
			}
		}
		id, err := client.KeyIdentifier(devLeaf) // the demo IDevIDs have no SKI extension
		if err != nil {
			t.Fatal(err)
		}
		for _, tc := range []struct {
			name string
			skc  bool
			kr   *cms.KeyRequest
			dk   *cms.DecryptKey
		}{
			{"skg plain", false, &cms.KeyRequest{}, nil},
			{"skc plain", true, &cms.KeyRequest{}, nil},
			{"skg kari", false, &cms.KeyRequest{Delivery: cms.DeliverAsymmetric, KeyID: id},
				&cms.DecryptKey{PrivateKey: s.device.PrivateKey, Certificate: devLeaf}},
		} {
			csr, err := cms.CreateCertificateRequest(nil, &x509.CertificateRequest{Subject: devLeaf.Subject}, pkitest.Key(t), tc.kr)
			if err != nil {
				t.Fatal(err)
			}
			// A server without key generation answers 4.04: that fails here.
			res, err := c.ServerKeygen(ctx, csr, tc.skc)
			if err != nil {
				t.Fatalf("%s: %v", tc.name, err)
			}
			wantCert := wire.FormatCertsOnly
			if tc.skc {
				wantCert = wire.FormatPKIXCert
			}
			if res.CertFormat != wantCert || (res.KeyFormat == wire.FormatServerGeneratedKey) != (tc.dk != nil) {
				t.Fatalf("%s: formats key %d cert %d", tc.name, res.KeyFormat, res.CertFormat)
			}
			k, err := client.OpenServerKey(res, tc.dk, cms.VerifyOptions{Roots: s.roots, Intermediates: []*x509.Certificate{s.issuing}})
			if err != nil {
				t.Fatalf("%s: %v", tc.name, err)
			}
			k.Zero()
			res.Zero()
			// The key the server delivered authenticates a new session.
			o := s.options()
			o.Certificate = tls.Certificate{Certificate: [][]byte{k.Certificate.Raw, s.issuing.Raw}, PrivateKey: k.PrivateKey, Leaf: k.Certificate}
			if _, _, err := dialT(t, o).CACerts(ctx, 0); err != nil {
				t.Fatalf("%s: session with the generated key: %v", tc.name, err)
			}
		}
	})

	t.Run("unknown label", func(t *testing.T) {
		o := s.options()
		o.Label = "no-such-profile"
		lc := dialT(t, o)
		_, _, err := lc.CACerts(ctx, 0)
		var re *client.ResponseError
		if !errors.As(err, &re) || re.Code != codes.NotFound {
			t.Fatalf("err = %v, want 4.04", err)
		}
	})

	t.Run("trust update", func(t *testing.T) {
		anchors, err := c.UpdateTrust(ctx)
		if err != nil {
			t.Fatal(err)
		}
		if len(anchors) != 1 || !anchors[0].Equal(s.root) {
			t.Fatalf("anchors %v", anchors)
		}
	})

	devLeaf, err := x509.ParseCertificate(s.device.Certificate[0])
	if err != nil {
		t.Fatal(err)
	}
	devID, _ := client.KeyIdentifier(devLeaf)
	for _, mode := range []string{bench.ModeEnroll, bench.ModeEnrollReuse, bench.ModeCACerts, bench.ModeKeygen, bench.ModeKeygenSingle} {
		t.Run("bench "+mode, func(t *testing.T) {
			o := bench.Options{Client: s.options(), Mode: mode, Workers: 2, Duration: time.Second}
			if mode == bench.ModeKeygen {
				o.KeyRequest = &cms.KeyRequest{Delivery: cms.DeliverAsymmetric, KeyID: devID}
				o.DecryptKey = &cms.DecryptKey{PrivateKey: s.device.PrivateKey, Certificate: devLeaf}
			}
			rep, err := bench.Run(ctx, o)
			if err != nil {
				t.Fatal(err)
			}
			var out strings.Builder
			_ = rep.Format(&out)
			t.Log("\n" + out.String())
			if rep.ErrorCount() != 0 || rep.Ops == 0 || (mode != bench.ModeCACerts && rep.Verified != rep.Ops) {
				t.Fatalf("report %+v", rep)
			}
		})
	}
}

// ctPendingAuthority answers KindPending (5.03, Max-Age 3 s) to the next
// hold enrollments, then passes them to the real authority: the manual
// approval path of RFC 9148 §4.7 without an approval store.
type ctPendingAuthority struct {
	Authority
	hold atomic.Int32
}

func (p *ctPendingAuthority) Enroll(ctx context.Context, req ca.Request) (*ca.Result, error) {
	if p.hold.Add(-1) >= 0 {
		return nil, &ca.Error{Kind: ca.KindPending, Reason: "pending approval", MaxAge: 3 * time.Second}
	}
	p.hold.Store(0)
	return p.Authority.Enroll(ctx, req)
}
