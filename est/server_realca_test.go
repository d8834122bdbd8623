package est

import (
	"context"
	"crypto/rand"
	"crypto/tls"
	"crypto/x509"
	"encoding/pem"
	"errors"
	"log/slog"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/plgd-dev/go-coap/v3/message"
	"github.com/plgd-dev/go-coap/v3/message/codes"

	"github.com/estca/estca/ca"
	"github.com/estca/estca/policy"
	"github.com/estca/estca/softhsm/softhsmtest"
	"github.com/estca/estca/store"
)

func stPEMPair(t *testing.T, p ca.PEMPair) tls.Certificate {
	t.Helper()
	c, err := tls.X509KeyPair(p.Cert, p.Key)
	if err != nil {
		t.Fatal(err)
	}
	return c
}

// TestServerRealAuthority runs the server with the real ca.Authority: CA and
// DTLS server keys in a SoftHSM token, bbolt store in t.TempDir(), demo
// IDevIDs. Not parallel: softhsmtest selects the token through the
// environment.
func TestServerRealAuthority(t *testing.T) {
	_, tok := softhsmtest.New(t)
	h, err := ca.Init(tok, ca.InitOptions{})
	if err != nil {
		t.Fatal(err)
	}
	signers, err := ca.LoadSigners(tok, ca.LabelIssuing, ca.LabelServer)
	if err != nil {
		t.Fatal(err)
	}
	db, err := store.Open(filepath.Join(t.TempDir(), "estca.db"), store.Options{})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = db.Close() })
	demo, err := ca.Demo(time.Now(), rand.Reader)
	if err != nil {
		t.Fatal(err)
	}
	blk, _ := pem.Decode(demo.ManufacturerCA.Cert)
	mfg, err := x509.ParseCertificate(blk.Bytes)
	if err != nil {
		t.Fatal(err)
	}
	a, err := ca.New(ca.Options{
		Signer: signers[0], Certificate: h.Issuing, Root: h.Root,
		Profiles: []ca.Profile{{
			Name: "device", Validity: 24 * time.Hour, AllowSAN: true, MaxSANs: 64,
			KeyUsage:    x509.KeyUsageDigitalSignature,
			ExtKeyUsage: []x509.ExtKeyUsage{x509.ExtKeyUsageClientAuth},
		}},
		Store:      db,
		Requesters: policy.Requesters{Anchors: []policy.Anchor{{Name: "demo", Roots: []*x509.Certificate{mfg}}}},
	})
	if err != nil {
		t.Fatal(err)
	}
	logs := &stLog{}
	srv, err := NewServer(Options{
		Addr:        "127.0.0.1:0",
		Certificate: tls.Certificate{Certificate: [][]byte{h.Server.Raw, h.Issuing.Raw}, PrivateKey: signers[1], Leaf: h.Server},
		Authority:   a,
		Logger:      slog.New(slog.NewTextHandler(logs, nil)),
	})
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
		cancel()
		if err := <-done; !errors.Is(err, ErrServerClosed) {
			t.Errorf("serve: %v", err)
		}
	})
	roots := x509.NewCertPool()
	roots.AddCert(h.Root)
	addr := srv.Addr().String()

	for name, p := range map[string]ca.PEMPair{"expired IDevID": demo.Expired, "unknown manufacturer": demo.Unknown} {
		cert := stPEMPair(t, p)
		if c, err := stDialName(t, addr, &cert, roots, "localhost", 3*time.Second); err == nil {
			if _, ok := c.roundTrip(stMsg{code: codes.GET, path: "/.well-known/est/crts"}, 300*time.Millisecond); ok {
				t.Fatalf("%s: served", name)
			}
		}
	}
	if m := stScrape(t, srv.Metrics()); !strings.Contains(m, `estca_est_handshake_failures_total{reason="unauthenticated"} 2`) {
		t.Errorf("handshake failures not counted:\n%s", m)
	}

	device := stPEMPair(t, demo.Valid)
	c, err := stDialName(t, addr, &device, roots, "localhost", 5*time.Second)
	if err != nil {
		t.Fatalf("valid IDevID: %v", err)
	}
	if r := c.do(stMsg{code: codes.GET, path: "/.well-known/est/crts", opts: message.Options{stUint(message.Accept, 287)}}); r.Code != codes.Content ||
		string(r.Payload) != string(h.Issuing.Raw) {
		t.Fatalf("crts 287: %v", r.Code)
	}
	if r := c.do(stMsg{code: codes.GET, path: "/est/att"}); r.Code != codes.Content {
		t.Fatalf("att: %v %q", r.Code, r.Payload)
	}
	csr, key := stCSR(t, "demo device DEMO-0001", 1500)
	var serials []string
	for i := 0; i < 2; i++ {
		first := stPostBlocks(t, c, "/.well-known/est/sen", csr, 6, 6, []byte{byte(i)})
		if first.Code != codes.Changed {
			t.Fatalf("sen %d: %v %q", i, first.Code, first.Payload)
		}
		certs := stCertsOnly(t, stFetchBlock2(t, c, codes.POST, "/.well-known/est/sen", first, []byte{byte(i)}))
		if !key.PublicKey.Equal(certs[0].PublicKey) {
			t.Fatal("certificate does not carry the CSR key")
		}
		if _, err := certs[0].Verify(x509.VerifyOptions{Roots: roots, Intermediates: stPool(h.Issuing),
			KeyUsages: []x509.ExtKeyUsage{x509.ExtKeyUsageClientAuth}}); err != nil {
			t.Fatal(err)
		}
		serials = append(serials, certs[0].SerialNumber.String())
	}
	if serials[0] != serials[1] {
		t.Errorf("identical CSR issued twice: %v", serials)
	}
	if r := c.do(stMsg{code: codes.GET, path: "/est/nolabel/crts"}); r.Code != codes.NotFound {
		t.Fatalf("unknown label: %v", r.Code)
	}
	if !strings.Contains(logs.String(), "DEMO-0001") {
		t.Errorf("request log lacks the IDevID subject:\n%s", logs)
	}
}

func stPool(certs ...*x509.Certificate) *x509.CertPool {
	p := x509.NewCertPool()
	for _, c := range certs {
		p.AddCert(c)
	}
	return p
}
