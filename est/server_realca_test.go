package est

import (
	"context"
	"crypto"
	"crypto/rand"
	"crypto/sha256"
	"crypto/tls"
	"crypto/x509"
	"encoding/hex"
	"log/slog"
	"path/filepath"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/plgd-dev/go-coap/v3/message"
	"github.com/plgd-dev/go-coap/v3/message/codes"

	"github.com/estca/estca/ca"
	"github.com/estca/estca/policy"
	"github.com/estca/estca/policy/pkitest"
	"github.com/estca/estca/softhsm"
	"github.com/estca/estca/softhsm/softhsmtest"
	"github.com/estca/estca/store"
)

// rcEnv is a server running with the real ca.Authority: CA and DTLS server
// keys in a SoftHSM token, bbolt store in t.TempDir(), demo IDevIDs.
type rcEnv struct {
	srv   *Server
	db    *store.DB
	h     *ca.Hierarchy
	demo  *ca.DemoSet
	roots *x509.CertPool
	addr  string
	logs  *stLog
}

// rcCA is the real authority of the tests: CA and DTLS server keys in a
// fresh SoftHSM token, a bbolt store in t.TempDir(), the demo manufacturer as
// a strict IDevID anchor and one "device" profile.
type rcCA struct {
	a      *ca.Authority
	kg     *ca.Keygen // server-side key generation on the "device" profile
	h      *ca.Hierarchy
	server crypto.Signer // DTLS server key in the token
	db     *store.DB
	demo   *ca.DemoSet
	st     *softhsm.Token
	check  func() error // the token's Check (hsm.Token.Check)
}

// rcAuthority builds an rcCA; wrap, if given, wraps the issuing key (e.g. to
// inject faults). Not parallel: softhsmtest selects the token through the
// environment.
func rcAuthority(t testing.TB, wrap ...func(crypto.Signer) crypto.Signer) *rcCA {
	t.Helper()
	st, tok := softhsmtest.New(t)
	h, err := ca.Init(tok, ca.InitOptions{})
	if err != nil {
		t.Fatal(err)
	}
	signers, err := ca.LoadSigners(tok, ca.LabelIssuing, ca.LabelServer)
	if err != nil {
		t.Fatal(err)
	}
	db, err := store.Create(filepath.Join(t.TempDir(), "estca.db"), store.Options{})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = db.Close() })
	demo, err := ca.Demo(time.Now(), rand.Reader)
	if err != nil {
		t.Fatal(err)
	}
	issuing := signers[0]
	for _, w := range wrap {
		issuing = w(issuing)
	}
	a := rcNewAuthority(t, h, demo, issuing, db)
	signerCert, err := ca.IssueKeyPackageSigner(tok, "", signers[0], h.Issuing, ca.InitOptions{})
	if err != nil {
		t.Fatal(err)
	}
	signerKey, err := tok.FindKey(ca.LabelKeyPackage)
	if err != nil {
		t.Fatal(err)
	}
	kg, err := a.NewKeygen(ca.KeygenOptions{Token: tok, Signer: signerKey, SignerCertificate: signerCert})
	if err != nil {
		t.Fatal(err)
	}
	return &rcCA{a: a, kg: kg, h: h, server: signers[1], db: db, demo: demo, st: st, check: tok.Check}
}

// rcNewAuthority is the authority of rcAuthority over db, signing with
// issuing: the demo manufacturer as a strict IDevID anchor and the
// "device" and "held" profiles; its CRL is published.
func rcNewAuthority(t testing.TB, h *ca.Hierarchy, demo *ca.DemoSet, issuing crypto.Signer, db *store.DB) *ca.Authority {
	t.Helper()
	mfg := pkitest.PEMCert(t, demo.ManufacturerCA.Cert)
	// The device profile binds subject and hardwareModuleName to the
	// identity and lets the padding DNS names of pkitest.PaddedCSR through.
	a, err := ca.New(ca.Options{
		Signer: issuing, Certificate: h.Issuing, Root: h.Root,
		Policy: policy.Options{
			Profiles: []policy.Profile{{
				Name: "device", Validity: 24 * time.Hour,
				SAN: policy.SANPolicy{MaxNames: 64,
					DNS: policy.NamePolicy{Patterns: []string{`host-[0-9]{4}\.padding\.example\.com`}}},
				Operations: []policy.Operation{policy.OpSen, policy.OpSren, policy.OpSkg, policy.OpSkc},
			}, {
				// Server-side key generation held for an operator.
				Name: "held", Validity: 24 * time.Hour, Operations: []policy.Operation{policy.OpSkg},
				Approval: policy.ApprovalManual, PendingMaxAge: 90 * time.Second,
			}},
			Requesters: policy.Requesters{Anchors: []policy.Anchor{{Name: "demo", Roots: []*x509.Certificate{mfg}}}},
			Reserved:   []*x509.Certificate{h.Server},
		},
		Store: db,
	})
	if err != nil {
		t.Fatal(err)
	}
	if _, err := a.PublishCRL(); err != nil {
		t.Fatal(err)
	}
	return a
}

// serverCert is the DTLS server certificate with its chain and HSM key.
func (c *rcCA) serverCert() tls.Certificate {
	return tls.Certificate{Certificate: [][]byte{c.h.Server.Raw, c.h.Issuing.Raw}, PrivateKey: c.server, Leaf: c.h.Server}
}

// rcStart starts the server with the real authority. Not parallel:
// softhsmtest selects the token through the environment.
func rcStart(t *testing.T) *rcEnv {
	t.Helper()
	return rcServe(t, rcAuthority(t), nil)
}

// rcServe starts the server with rc; mod, if not nil, adjusts the options.
func rcServe(t *testing.T, rc *rcCA, mod func(*Options)) *rcEnv {
	t.Helper()
	h, db, demo, a := rc.h, rc.db, rc.demo, rc.a
	logs := &stLog{}
	o := Options{
		Addr:        "127.0.0.1:0",
		Certificate: rc.serverCert(),
		Authority:   a,
		Keygen:      rc.kg,
		Logger:      slog.New(slog.NewTextHandler(logs, nil)),
	}
	if mod != nil {
		mod(&o)
	}
	srv := stServe(t, o)
	return &rcEnv{srv: srv, db: db, h: h, demo: demo, roots: pkitest.Pool(h.Root), addr: srv.Addr().String(), logs: logs}
}

// TestServerRealAuthority runs the server with the real ca.Authority.
func TestServerRealAuthority(t *testing.T) {
	e := rcStart(t)
	srv, h, demo, roots, addr, logs := e.srv, e.h, e.demo, e.roots, e.addr, e.logs

	for name, p := range map[string]ca.PEMPair{"expired IDevID": demo.Expired, "unknown manufacturer": demo.Unknown} {
		cert := pkitest.KeyPair(t, p.Cert, p.Key)
		if c, err := stDialName(t, addr, &cert, roots, "localhost", 3*time.Second); err == nil {
			if _, ok := c.roundTrip(stMsg{code: codes.GET, path: "/.well-known/est/crts"}, 300*time.Millisecond); ok {
				t.Fatalf("%s: served", name)
			}
		}
	}
	stScrapeUntil(t, srv.Metrics(), `estca_est_handshake_failures_total{reason="unauthenticated"} 2`)

	device := pkitest.KeyPair(t, demo.Valid.Cert, demo.Valid.Key)
	c, err := stDialName(t, addr, &device, roots, "localhost", 5*time.Second)
	if err != nil {
		t.Fatalf("valid IDevID: %v", err)
	}
	if r := c.do(stMsg{code: codes.GET, path: "/.well-known/est/crts", opts: message.Options{stUint(message.Accept, 287)}}); r.Code != codes.Content ||
		string(r.Payload) != string(h.Root.Raw) { // the root: the explicit trust anchor
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
		if _, err := certs[0].Verify(x509.VerifyOptions{Roots: roots, Intermediates: pkitest.Pool(h.Issuing),
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

// TestRealAuthorityAuditsRefusals: every refusal leaves exactly one denied
// record in the real store, with the CoAP code; a malformed CSR (audited by
// ca.Enroll) is not audited twice; successful requests leave none; refused
// handshakes appear aggregated after Shutdown.
func TestRealAuthorityAuditsRefusals(t *testing.T) {
	e := rcStart(t)
	records := func() []store.AuditRecord {
		t.Helper()
		recs, err := e.db.AuditRecords(store.AuditFilter{})
		if err != nil {
			t.Fatal(err)
		}
		return recs
	}
	for _, p := range []ca.PEMPair{e.demo.Unknown, e.demo.Unknown, e.demo.Expired} {
		cert := pkitest.KeyPair(t, p.Cert, p.Key)
		if c, err := stDialName(t, e.addr, &cert, e.roots, "localhost", 3*time.Second); err == nil {
			if _, ok := c.roundTrip(stMsg{code: codes.GET, path: "/.well-known/est/crts"}, 300*time.Millisecond); ok {
				t.Fatal("refused client served")
			}
		}
	}
	device := pkitest.KeyPair(t, e.demo.Valid.Cert, e.demo.Valid.Key)
	c, err := stDialName(t, e.addr, &device, e.roots, "localhost", 5*time.Second)
	if err != nil {
		t.Fatalf("valid IDevID: %v", err)
	}
	sum := sha256.Sum256(device.Leaf.Raw)
	fp := hex.EncodeToString(sum[:])
	base := len(records())
	if r := c.do(stMsg{code: codes.GET, path: "/.well-known/est/crts"}); r.Code != codes.Content {
		t.Fatalf("crts: %v", r.Code)
	}
	if n := len(records()); n != base {
		t.Fatalf("successful request audited (%d records)", n-base)
	}
	csr, _ := stCSR(t, "demo device DEMO-0001", 0)
	adminCSR, _ := stCSR(t, "admin", 0)
	sen := "/.well-known/est/sen"
	tests := []struct {
		name   string
		msg    stMsg
		code   codes.Code
		reason string // the whole audit reason up to the peer
		flags  []string
	}{
		{"wrong Content-Format", stMsg{code: codes.POST, path: sen, opts: message.Options{stUint(message.ContentFormat, 0)}, payload: csr},
			codes.UnsupportedMediaType, "POST sen 4.15: unsupported content-format", []string{ca.FlagFrontEnd}},
		{"too large", stMsg{code: codes.POST, path: sen, opts: message.Options{stUint(message.ContentFormat, 286),
			stBlock(message.Block1, 0, true, 2), stUint(message.Size1, 70<<10)}, payload: make([]byte, 64)},
			codes.RequestEntityTooLarge, "POST sen 4.13: request entity too large", []string{ca.FlagFrontEnd}},
		{"unknown label", stMsg{code: codes.GET, path: "/est/nolabel/crts"},
			codes.NotFound, "GET /est/nolabel/crts 4.04: unknown label", []string{ca.FlagFrontEnd}},
		{"unknown critical option", stMsg{code: codes.GET, path: "/est/crts", opts: message.Options{stOpt(65001, 'x')}},
			codes.BadOption, "GET crts 4.02: bad option", []string{ca.FlagFrontEnd}},
		{"malformed CSR", stMsg{code: codes.POST, path: sen, opts: message.Options{stUint(message.ContentFormat, 286)}, payload: []byte("this is not a CSR")},
			codes.BadRequest, "sen: csr-malformed (bad-request)", nil},
		{"CN=admin", stMsg{code: codes.POST, path: sen, opts: message.Options{stUint(message.ContentFormat, 286)}, payload: adminCSR},
			codes.Forbidden, "sen: subject-not-bound (forbidden)", nil},
	}
	for _, tc := range tests {
		before := len(records())
		r := c.do(tc.msg)
		if r.Code != tc.code {
			t.Fatalf("%s: %v %q", tc.name, r.Code, r.Payload)
		}
		recs := records()
		if len(recs) != before+1 {
			t.Fatalf("%s: %d records written, want 1", tc.name, len(recs)-before)
		}
		rec := recs[len(recs)-1]
		reason, _, _ := strings.Cut(rec.Reason, " (peer ")
		if tc.flags == nil {
			// The engine's reasons: code (class): detail.
			reason, _, _ = strings.Cut(rec.Reason, ": ")
			reason += ": " + strings.SplitN(rec.Reason, ": ", 3)[1]
		}
		if rec.Event != store.EventDenied || rec.Verdict != ca.VerdictRejected || reason != tc.reason ||
			rec.Requester.Fingerprint != fp || !slices.Equal(rec.Flags, tc.flags) {
			t.Errorf("%s: record %+v", tc.name, rec)
		}
		if tc.flags != nil && !strings.Contains(rec.Reason, "(peer 127.0.0.1:") {
			t.Errorf("%s: no peer in %q", tc.name, rec.Reason)
		}
	}

	before := len(records())
	if err := e.srv.Shutdown(context.Background()); err != nil {
		t.Fatal(err)
	}
	var hs []string
	for _, rec := range records()[before:] {
		if rec.Event != store.EventDenied || !slices.Equal(rec.Flags, []string{ca.FlagHandshake}) || rec.Requester.Fingerprint != "" {
			t.Errorf("unexpected record at shutdown: %+v", rec)
		}
		hs = append(hs, rec.Reason)
	}
	if len(hs) != 2 ||
		!strings.HasPrefix(hs[0], "dtls handshake rejected: unauthenticated: certificate expired x1 (last 127.0.0.1:") ||
		!strings.HasPrefix(hs[1], "dtls handshake rejected: unauthenticated: unknown certificate issuer x2 (last 127.0.0.1:") ||
		!strings.Contains(hs[1], "CN=demo device OTHER-0001") {
		t.Fatalf("handshake records:\n%s", strings.Join(hs, "\n"))
	}
}
