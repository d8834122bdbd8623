package client

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"runtime"
	"strings"
	"testing"
	"time"

	"github.com/plgd-dev/go-coap/v3/message/codes"

	"github.com/estca/estca/est/esttest"
	"github.com/estca/estca/est/wire"
	"github.com/estca/estca/policy/pkitest"
)

// This file checks what the client puts on the wire (tokens, Block1/Block2,
// Request-Tag, 5.03 handling) against esttest's recording EST-coaps peer,
// go-coap's real DTLS server over 127.0.0.1. It is a test peer, not the estca
// server: that one is exercised in est's client_e2e_test.go.

// peerOptions are client options for env's peer and device.
func peerOptions(env *esttest.Env) Options {
	return Options{Server: env.Peer.URL(), Certificate: env.Device, Roots: env.Roots, Timeout: 5 * time.Second}
}

func dialT(t *testing.T, o Options) *Conn {
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
	env := esttest.NewEnv(t, 1024)
	o := peerOptions(env)
	o.BlockSize = 64
	c := dialT(t, o)
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
	var blocks []esttest.Request
	for _, m := range env.Peer.Requests() {
		if m.Code == codes.POST && m.Block1 != nil {
			blocks = append(blocks, m)
		}
	}
	want := (len(csr) + 63) / 64
	if len(blocks) != want {
		t.Fatalf("%d Block1 blocks, want %d", len(blocks), want)
	}
	tokens := map[string]bool{}
	for i, b := range blocks {
		tokens[b.Token] = true
		if int(b.Block1.Num) != i || b.Block1.SZX != 2 || b.Block1.More != (i < want-1) {
			t.Errorf("block %d: %+v", i, *b.Block1)
		}
		if !b.HasTag || b.Tag != blocks[0].Tag {
			t.Errorf("block %d: Request-Tag %x, want %x", i, b.Tag, blocks[0].Tag)
		}
		if (i == 0) != (b.Size1 == uint32(len(csr))) {
			t.Errorf("block %d: Size1 %d", i, b.Size1)
		}
	}
	if len(tokens) != want {
		t.Errorf("%d distinct tokens for %d blocks, want one per block", len(tokens), want)
	}
}

func TestClientWireBlock2(t *testing.T) {
	t.Parallel()
	env := esttest.NewEnv(t, 1024)
	// A long chain makes /crts larger than one block.
	for range 4 {
		inter := env.ServerCA.Issue(t, pkitest.SubCA(strings.Repeat("intermediate ", 8))).Cert
		env.Peer.SetChain(append(env.Peer.Chain(), inter)...)
	}
	for _, size := range []int{16, 64, 1024} {
		t.Run(fmt.Sprint(size), func(t *testing.T) {
			o := peerOptions(env)
			o.BlockSize = size
			c := dialT(t, o)
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
	for _, m := range env.Peer.Requests() {
		if m.Path == wire.WellKnownRoot+"/crts" && m.Block2 != nil && m.Block2.Num == 0 && m.Block2.SZX == 0 {
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
	env := esttest.NewEnv(t, 64)
	o := peerOptions(env)
	o.BlockSize = 128
	c := dialT(t, o)
	key := pkitest.Key(t)
	csr := pkitest.PaddedCSR(t, key, "device-1", 600)
	if _, _, err := c.Enroll(context.Background(), csr, wire.FormatCertsOnly); err != nil {
		t.Fatal(err)
	}
	var tag string
	var follow int
	for _, m := range env.Peer.Requests() {
		if m.Block1 != nil && tag == "" {
			tag = m.Tag
		}
		if m.Code == codes.POST && m.Block2 != nil && m.Block2.Num > 0 {
			follow++
			if m.Tag != tag || m.Payload != 0 || m.Block2.SZX != 2 || m.Block1 != nil || m.Format != int(wire.FormatPKCS10) {
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
	env := esttest.NewEnv(t, 1024)
	env.Peer.SetBusy(2)
	c := dialT(t, peerOptions(env))
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
	for _, m := range env.Peer.Requests() {
		if m.Path == wire.WellKnownRoot+"/sen" {
			sens++
			if m.Payload != len(csr) {
				t.Errorf("resend with %d bytes, want %d", m.Payload, len(csr))
			}
		}
	}
	if sens != 3 {
		t.Errorf("%d requests, want 3", sens)
	}
	env.Peer.SetBusy(10)
	_, _, err := c.Enroll(context.Background(), csr, 0)
	var re *ResponseError
	if !errors.Is(err, ErrRetriesExhausted) || !errors.As(err, &re) || re.MaxAge != 7*time.Second || re.Diagnostic != "pending approval" {
		t.Fatalf("err = %v", err)
	}
}

func TestClientWireErrorsAndDiscovery(t *testing.T) {
	t.Parallel()
	env := esttest.NewEnv(t, 1024)
	o := peerOptions(env)
	o.Label = "nolabel"
	c := dialT(t, o)
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
	env := esttest.NewEnv(t, 1024)
	stranger := pkitest.NewCA(t, "stranger")
	for _, tc := range []struct {
		name   string
		mutate func(*Options)
		reason string
	}{
		{"client cert from an unknown CA", func(o *Options) { o.Certificate = stranger.Issue(t, pkitest.ClientAuth("x")).TLS(stranger.Cert) },
			"rejected the client certificate"},
		{"untrusted server", func(o *Options) { o.Roots = stranger.Pool() },
			"does not chain to the configured trust anchors"},
		{"wrong server name", func(o *Options) { o.ServerName = "other.test" },
			"does not match the server name"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			o := peerOptions(env)
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
	env := esttest.NewEnv(t, 1024)
	c := dialT(t, peerOptions(env)) // warm up: first dial starts shared machinery
	_ = c.Close()
	time.Sleep(100 * time.Millisecond)
	before := runtime.NumGoroutine()
	for range 20 {
		ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
		c, err := Dial(ctx, peerOptions(env))
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
	env := esttest.NewEnv(t, 1024)
	c := dialT(t, peerOptions(env))
	old := c.Roots()

	// /crts names a root that did not sign the server certificate: refused.
	other := pkitest.NewCA(t, "rogue root")
	env.Peer.SetChain(other.Cert)
	if _, err := c.UpdateTrust(context.Background()); !errors.Is(err, ErrTrustUpdate) {
		t.Fatalf("err = %v, want ErrTrustUpdate", err)
	}
	if c.Roots() != old {
		t.Fatal("trust anchors changed after a failed update")
	}

	// /crts with no self-signed certificate: refused.
	inter := env.ServerCA.Issue(t, pkitest.SubCA("intermediate")).Cert
	env.Peer.SetChain(inter)
	if _, err := c.UpdateTrust(context.Background()); !errors.Is(err, ErrTrustUpdate) {
		t.Fatalf("err = %v, want ErrTrustUpdate", err)
	}

	// The real root, an intermediate and a second root: accepted; the anchors
	// are the self-signed certificates.
	env.Peer.SetChain(inter, env.ServerCA.Cert, other.Cert)
	anchors, err := c.UpdateTrust(context.Background())
	if err != nil {
		t.Fatal(err)
	}
	if len(anchors) != 2 || !anchors[0].Equal(env.ServerCA.Cert) || !anchors[1].Equal(other.Cert) {
		t.Fatalf("anchors %d", len(anchors))
	}
	if c.Roots() == old {
		t.Fatal("trust anchors not replaced")
	}
}
