package est

import (
	"crypto"
	"errors"
	"io"
	"os"
	"path/filepath"
	"strings"
	"sync/atomic"
	"testing"
	"time"

	"github.com/plgd-dev/go-coap/v3/message"
	"github.com/plgd-dev/go-coap/v3/message/codes"

	"github.com/estca/estca/ca"
	"github.com/estca/estca/policy/pkitest"
	"github.com/estca/estca/softhsm"
	"github.com/estca/estca/store"
)

// rcFaulty flips the last bit of the signatures of the real key it wraps
// while on (for ECDSA that is the low bit of s: valid DER, bad signature).
type rcFaulty struct {
	crypto.Signer
	on atomic.Bool
}

func (f *rcFaulty) Sign(r io.Reader, digest []byte, opts crypto.SignerOpts) ([]byte, error) {
	sig, err := f.Signer.Sign(r, digest, opts)
	if err == nil && f.on.Load() {
		sig[len(sig)-1] ^= 1
	}
	return sig, err
}

// rcVerifiedServerKey makes the server sign its handshakes through
// ca.VerifySigner, as cmd/estca does.
func rcVerifiedServerKey(rc *rcCA, key crypto.Signer) func(*Options) {
	return func(o *Options) { o.Certificate.PrivateKey = ca.VerifySigner(key, rc.h.Server.PublicKey, nil) }
}

// rcSen posts a fresh CSR of the demo device (its CN, a new key) to /sen on c.
func rcSen(t *testing.T, c *stConn) stReply {
	t.Helper()
	csr, _ := stCSR(t, "demo device DEMO-0001", 0)
	return c.do(stMsg{code: codes.POST, path: "/.well-known/est/sen",
		opts: message.Options{stUint(message.ContentFormat, 286)}, payload: csr})
}

// TestServerBadHSMSignature injects faults into the signatures of the real
// SoftHSM issuing and server keys: a bad certificate signature is answered
// 5.00 without a certificate, nothing is stored, the refusal is audited and
// logged; a bad handshake signature is never sent (the handshake is refused
// under its own reason, logged as an error); the server keeps serving once
// the faults stop.
func TestServerBadHSMSignature(t *testing.T) {
	issuing := &rcFaulty{}
	rc := rcAuthority(t, func(s crypto.Signer) crypto.Signer { issuing.Signer = s; return issuing })
	server := &rcFaulty{Signer: rc.server}
	e := rcServe(t, rc, rcVerifiedServerKey(rc, server))
	device := pkitest.KeyPair(t, e.demo.Valid.Cert, e.demo.Valid.Key)
	c, err := stDialName(t, e.addr, &device, e.roots, "localhost", 5*time.Second)
	if err != nil {
		t.Fatal(err)
	}
	issuing.on.Store(true)
	r := rcSen(t, c)
	if r.Code != codes.InternalServerError || string(r.Payload) != "internal error" {
		t.Fatalf("sen with a bad HSM signature: %v %q", r.Code, r.Payload)
	}
	if n, err := e.db.CountCertificates(); err != nil || n != 0 {
		t.Fatalf("%d certificates stored (%v)", n, err)
	}
	recs, err := e.db.AuditRecords(store.AuditFilter{})
	if err != nil || len(recs) == 0 || recs[len(recs)-1].Reason != "sen: invalid HSM signature" {
		t.Fatalf("refusal not audited: %v %+v", err, recs)
	}
	if !strings.Contains(e.logs.String(), "level=ERROR") {
		t.Errorf("bad signature not logged as an error:\n%s", e.logs)
	}
	issuing.on.Store(false)
	if r := rcSen(t, c); r.Code != codes.Changed {
		t.Fatalf("sen after the fault: %v %q", r.Code, r.Payload)
	}

	server.on.Store(true)
	if _, err := stDialName(t, e.addr, &device, e.roots, "localhost", 5*time.Second); err == nil {
		t.Fatal("handshake completed with a bad server signature")
	}
	stScrapeUntil(t, e.srv.Metrics(), `estca_est_handshake_failures_total{reason="hsm-bad-signature"} 1`)
	if !strings.Contains(e.logs.String(), "reason=hsm-bad-signature") {
		t.Errorf("bad handshake signature not logged:\n%s", e.logs)
	}
	server.on.Store(false)
	if _, err := stDialName(t, e.addr, &device, e.roots, "localhost", 5*time.Second); err != nil {
		t.Fatalf("handshake after the fault: %v", err)
	}
}

// TestServerHSMOutage moves the real SoftHSM token directory away under a
// running server: once the token probe notices it, an open session gets
// 5.03 with Max-Age at once, new
// handshakes are refused under reason hsm-unavailable (not "protocol"), and
// both work again once the directory is back, without a restart.
func TestServerHSMOutage(t *testing.T) {
	rc := rcAuthority(t)
	e := rcServe(t, rc, rcVerifiedServerKey(rc, rc.server))
	device := pkitest.KeyPair(t, e.demo.Valid.Cert, e.demo.Valid.Key)
	c, err := stDialName(t, e.addr, &device, e.roots, "localhost", 5*time.Second)
	if err != nil {
		t.Fatal(err)
	}
	if r := rcSen(t, c); r.Code != codes.Changed {
		t.Fatalf("sen before the outage: %v %q", r.Code, r.Payload)
	}
	tokens := filepath.Join(rc.st.Dir, softhsm.TokensDir)
	if err := os.Rename(tokens, tokens+".away"); err != nil {
		t.Fatal(err)
	}
	restored := false
	restore := func() {
		if !restored {
			restored = true
			if err := os.Rename(tokens+".away", tokens); err != nil {
				t.Fatal(err)
			}
		}
	}
	t.Cleanup(restore)
	// The keys sign with session copies that do not touch the token's
	// files: the outage is noticed by the token probe (estca serve runs
	// hsm.Token.Check every few seconds), as here.
	if err := rc.check(); !errors.Is(err, ca.ErrHSMUnavailable) {
		t.Fatalf("Check after the token directory vanished = %v, want the HSM unavailable", err)
	}
	for i := range 3 {
		r := rcSen(t, c)
		maxAge, ok := r.uintOpt(message.MaxAge)
		if r.Code != codes.ServiceUnavailable || !ok || time.Duration(maxAge)*time.Second != ca.HSMRetryAfter || string(r.Payload) != "hsm unavailable" {
			t.Fatalf("sen %d during the outage: %v Max-Age %d (%t) %q", i, r.Code, maxAge, ok, r.Payload)
		}
	}
	if _, err := stDialName(t, e.addr, &device, e.roots, "localhost", 5*time.Second); err == nil {
		t.Fatal("handshake completed while the HSM is down")
	}
	stScrapeUntil(t, e.srv.Metrics(), `estca_est_handshake_failures_total{reason="hsm-unavailable"} 1`)
	if strings.Contains(stScrape(t, e.srv.Metrics()), `reason="protocol"`) {
		t.Error("refused handshake counted as a protocol failure")
	}
	restore()
	back := time.Now()
	for {
		r := rcSen(t, c)
		if r.Code == codes.Changed {
			break
		}
		if r.Code != codes.ServiceUnavailable || time.Since(back) > time.Minute {
			t.Fatalf("sen after the token came back: %v %q", r.Code, r.Payload)
		}
		time.Sleep(100 * time.Millisecond)
	}
	t.Logf("serving again %v after the token came back", time.Since(back).Round(time.Millisecond))
	if _, err := stDialName(t, e.addr, &device, e.roots, "localhost", 5*time.Second); err != nil {
		t.Fatalf("handshake after the outage: %v", err)
	}
}
