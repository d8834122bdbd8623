package est

import (
	"context"
	"encoding/binary"
	"net"
	"testing"
	"time"

	"github.com/pion/dtls/v3"
	"github.com/plgd-dev/go-coap/v3/message/codes"
)

// stCutConn is a client socket that never sends the end of the client's
// second flight: ChangeCipherSpec and every record of epoch 1 (Finished)
// are taken out of each datagram, so the server sees Certificate,
// ClientKeyExchange and CertificateVerify (and authenticates the chain in
// VerifyPeerCertificate) but never the Finished. keep leaves the socket
// open on Close (a device that restarts on the same address).
type stCutConn struct {
	net.PacketConn
	keep bool
}

func (c *stCutConn) WriteTo(b []byte, addr net.Addr) (int, error) {
	var out []byte
	for rest := b; len(rest) >= recordHeaderLen; {
		n := recordHeaderLen + int(binary.BigEndian.Uint16(rest[11:13]))
		if n > len(rest) {
			break
		}
		if epoch := binary.BigEndian.Uint16(rest[3:5]); rest[0] != 20 && epoch == 0 {
			out = append(out, rest[:n]...)
		}
		rest = rest[n:]
	}
	if len(out) > 0 {
		if _, err := c.PacketConn.WriteTo(out, addr); err != nil {
			return 0, err
		}
	}
	return len(b), nil
}

func (c *stCutConn) Close() error {
	if c.keep {
		return nil
	}
	return c.PacketConn.Close()
}

func (a *stAuthority) authnCount() int {
	a.mu.Lock()
	defer a.mu.Unlock()
	return a.authns
}

// stInterrupted runs one handshake over pc that stops after the client's
// CertificateVerify: it returns once the server has authenticated the chain
// (or fails the test when it never does).
func stInterrupted(t *testing.T, e *stEnv, pc net.PacketConn, keep bool) {
	t.Helper()
	raddr, err := net.ResolveUDPAddr("udp", e.addr)
	if err != nil {
		t.Fatal(err)
	}
	before := e.auth.authnCount()
	c, err := dtls.ClientWithOptions(&stCutConn{PacketConn: pc, keep: keep}, raddr,
		dtls.WithCipherSuites(dtls.TLS_ECDHE_ECDSA_WITH_AES_128_CCM_8),
		dtls.WithRootCAs(e.roots), dtls.WithServerName("localhost"), dtls.WithCertificates(e.client))
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan error, 1)
	go func() { done <- c.HandshakeContext(ctx) }()
	for deadline := time.Now().Add(5 * time.Second); e.auth.authnCount() == before; time.Sleep(5 * time.Millisecond) {
		if time.Now().After(deadline) {
			t.Fatal("the server never authenticated the interrupted handshake's chain")
		}
	}
	cancel()
	if err := <-done; err == nil {
		t.Fatal("handshake completed without the client's Finished")
	}
	_ = c.Close()
}

// TestInterruptedHandshakesFreeIdentity: handshakes of one identity that
// fail after the server authenticated the chain (no Finished: lost, timed
// out, or the device restarted on the same address) give their session
// slot back; more of them than MaxSessionsPerIdentity do not lock the
// device out.
func TestInterruptedHandshakesFreeIdentity(t *testing.T) {
	t.Parallel()
	t.Run("timeout", func(t *testing.T) {
		t.Parallel()
		e := stStart(t, func(o *Options) { o.HandshakeTimeout = time.Second })
		for range DefaultMaxSessionsPerIdentity + 1 {
			pc, err := net.ListenUDP("udp", &net.UDPAddr{IP: net.IPv4(127, 0, 0, 1)})
			if err != nil {
				t.Fatal(err)
			}
			stInterrupted(t, e, pc, false)
		}
		stScrapeUntil(t, e.srv.Metrics(), `estca_est_sessions_active 0`)
		c := e.dial(t)
		if r := c.do(stMsg{code: codes.GET, path: "/est/crts"}); r.Code != codes.Content {
			t.Fatalf("crts: %v", r.Code)
		}
	})
	t.Run("restart", func(t *testing.T) {
		t.Parallel()
		e := stStart(t, nil) // default handshake timeout: only the restarts end them
		pc, err := net.ListenUDP("udp", &net.UDPAddr{IP: net.IPv4(127, 0, 0, 1)})
		if err != nil {
			t.Fatal(err)
		}
		defer pc.Close()
		for range DefaultMaxSessionsPerIdentity + 1 {
			stInterrupted(t, e, pc, true)
		}
		c := e.dial(t)
		if r := c.do(stMsg{code: codes.GET, path: "/est/crts"}); r.Code != codes.Content {
			t.Fatalf("crts: %v", r.Code)
		}
	})
}
