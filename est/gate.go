package est

import (
	"bytes"
	"errors"
	"net"
	"net/netip"
	"slices"
	"sync"
	"time"

	"github.com/pion/dtls/v3"
	"github.com/pion/transport/v5/deadline"
)

// The gate is the server's UDP front: it owns the socket, answers the first
// ClientHello of every peer with a stateless HelloVerifyRequest (RFC 6347
// §4.2.1, cookieJar), and creates a pion connection only for a peer that
// returned a valid cookie and passed admission (admitter). Before that, a
// datagram costs a parse and an HMAC and leaves nothing behind: spoofed
// source addresses never hold a session slot, a handshake slot, a rate
// token or memory. See pioncookie.go for how the verified ClientHello is
// handed to pion.
//
// After admission the gate routes datagrams to the peer's vconn by source
// address, or by connection ID (RFC 9146) for records of type tls12_cid.
// pion writes through the vconn, where the gate drops pion's own
// HelloVerifyRequest, learns the connection ID from the ServerHello, and
// replaces a fatal no_certificate alert by handshake_failure
// (rewriteNoCertificate).

// maxDatagram bounds a datagram the gate reads; anything longer is cut and
// then fails to parse. pion itself reads at most 8192 bytes per datagram.
const maxDatagram = 8192

// gateReadBuffer is the socket receive buffer asked for (the kernel caps it
// at net.core.rmem_max): room for a burst of ClientHellos from many devices
// at once while the gate is busy.
const gateReadBuffer = 4 << 20

// peerQueue bounds the datagrams queued for one pion connection: a client
// flight is a handful of records, and pion reads as they come.
const peerQueue = 16

type gate struct {
	srv    *Server
	pc     *net.UDPConn
	jar    *cookieJar
	adm    *admitter
	cidLen int // 0: connection IDs off
	opts   []dtls.ServerOption
	accept chan *vconn

	mu     sync.Mutex
	peers  map[netip.AddrPort]*vconn
	cids   map[string]*vconn
	closed bool
	done   chan struct{}
}

func newGate(s *Server, pc *net.UDPConn, opts []dtls.ServerOption) *gate {
	g := &gate{
		srv:  s,
		pc:   pc,
		jar:  newCookieJar(s.o.CookieRotation, s.now),
		adm:  s.admit,
		opts: opts,
		// Admission bounds the handshakes in progress, so the queue of
		// admitted handshakes never holds more.
		accept: make(chan *vconn, s.o.MaxHandshakes),
		peers:  map[netip.AddrPort]*vconn{},
		cids:   map[string]*vconn{},
		done:   make(chan struct{}),
	}
	if s.o.ConnectionID {
		g.cidLen = connectionIDLength
	}
	_ = pc.SetReadBuffer(gateReadBuffer) // best effort
	return g
}

// run reads the socket until it is closed.
func (g *gate) run() {
	defer close(g.done)
	buf := make([]byte, maxDatagram)
	for {
		n, ap, err := g.pc.ReadFromUDPAddrPort(buf)
		if err != nil {
			if errors.Is(err, net.ErrClosed) {
				return
			}
			continue
		}
		g.route(buf[:n], netip.AddrPortFrom(ap.Addr().Unmap(), ap.Port()))
	}
}

// close stops the gate: no new peers; the socket is closed once every vconn
// is closed (closeSocket).
func (g *gate) close() {
	g.mu.Lock()
	g.closed = true
	g.mu.Unlock()
}

func (g *gate) closeSocket() error { return g.pc.Close() }

func (g *gate) lookup(ap netip.AddrPort) *vconn {
	g.mu.Lock()
	defer g.mu.Unlock()
	return g.peers[ap]
}

// route handles one datagram from ap.
func (g *gate) route(d []byte, ap netip.AddrPort) {
	if g.cidLen > 0 && len(d) >= recordHeaderLen-2+g.cidLen && d[0] == contentCID {
		g.mu.Lock()
		v := g.cids[string(d[11:11+g.cidLen])]
		g.mu.Unlock()
		if v != nil {
			v.deliver(d, ap)
		}
		return
	}
	v := g.lookup(ap)
	if v != nil && (len(d) == 0 || d[0] != contentHandshake) {
		v.deliver(d, ap)
		return
	}
	h, err := parseHello(d)
	if err != nil {
		if v != nil {
			v.deliver(d, ap) // the rest of a handshake in progress
		}
		return // not a ClientHello from an unknown peer: dropped, no state
	}
	if len(h.msg.Cookie) == 0 || !g.jar.valid(ap, h.params, h.msg.Cookie) {
		if v != nil && len(h.msg.Cookie) > 0 && v.sameHello(h) {
			v.deliver(d, ap) // retransmitted second ClientHello
			return
		}
		g.helloVerify(h, ap)
		return
	}
	if v != nil {
		if v.sameHello(h) {
			v.deliver(d, ap) // retransmitted second ClientHello
			return
		}
		// A new handshake from the address of an existing association
		// (the device restarted): only a peer that receives at this
		// address could return the cookie, so the old one is replaced.
		_ = v.Close()
	}
	g.admitPeer(h, d, ap)
}

// helloVerify answers a ClientHello without a valid cookie. Nothing is kept.
func (g *gate) helloVerify(h *hello, ap netip.AddrPort) {
	g.srv.metrics.helloVerify()
	_, _ = g.pc.WriteToUDPAddrPort(helloVerifyRequest(h.rec.seq, g.jar.make(ap, h.params)), ap)
}

// refuse ends a cookie-verified handshake at once with a fatal
// internal_error alert: the server cannot take it now (RFC 5246 §7.2.2:
// "unrelated to the peer or the correctness of the protocol").
func (g *gate) refuse(h *hello, ap netip.AddrPort, reason string) {
	g.srv.metrics.handshakeFailure(reason)
	g.srv.noteHandshake(reason, ap.String(), "")
	_, _ = g.pc.WriteToUDPAddrPort(fatalAlert(h.rec.seq, alertInternalError), ap)
}

// admitPeer admits a cookie-verified ClientHello (or refuses it) and starts
// its pion connection, now or when its rate token is due.
func (g *gate) admitPeer(h *hello, d []byte, ap netip.AddrPort) {
	g.mu.Lock()
	closed := g.closed
	g.mu.Unlock()
	if closed {
		return
	}
	ch0, err := h.withoutCookie()
	if err != nil {
		return
	}
	wait, reason := g.adm.admit(ap.Addr())
	if reason != "" {
		g.refuse(h, ap, reason)
		return
	}
	g.srv.metrics.sessionDelta(1)
	v := &vconn{
		g:      g,
		ap:     ap,
		random: h.msg.Random.MarshalFixed(),
		ch0:    ch0,
		ch1:    h.forPion(d),
		cookie: bytes.Clone(h.msg.Cookie),
		in:     make(chan packet, peerQueue),
		closed: make(chan struct{}),
		rd:     deadline.New(),
	}
	g.mu.Lock()
	g.peers[ap] = v
	g.mu.Unlock()
	if wait > 0 {
		v.mu.Lock()
		v.timer = time.AfterFunc(wait, func() { g.start(v) })
		v.mu.Unlock()
		return
	}
	g.start(v)
}

// start creates the pion connection of an admitted peer and hands it to
// the serve loop.
func (g *gate) start(v *vconn) {
	g.mu.Lock()
	closed := g.closed
	g.mu.Unlock()
	if closed || v.isClosed() {
		_ = v.Close()
		return
	}
	opts := append(slices.Clip(g.opts), dtls.WithVerifyPeerCertificate(g.srv.authn.verifier(v)))
	c, err := dtls.ServerWithOptions(v, net.UDPAddrFromAddrPort(v.ap), opts...)
	if err != nil {
		g.srv.log.Error("dtls server connection", "peer", v.ap.String(), "error", err)
		_ = v.Close()
		return
	}
	v.mu.Lock()
	v.conn = c
	ch0 := v.ch0
	v.ch0 = nil
	v.mu.Unlock()
	v.push(packet{data: ch0, from: v.ap})
	select {
	case g.accept <- v:
	default:
		// Cannot happen (the queue holds MaxHandshakes); refuse like a
		// full server rather than block the gate.
		g.srv.metrics.handshakeFailure(ReasonTooManyHandshakes)
		g.srv.noteHandshake(ReasonTooManyHandshakes, v.ap.String(), "")
		_ = c.Close()
		_ = v.Close()
	}
}

// forget removes v from the routing tables.
func (g *gate) forget(v *vconn) {
	g.mu.Lock()
	defer g.mu.Unlock()
	if g.peers[v.ap] == v {
		delete(g.peers, v.ap)
	}
	if v.cid != "" && g.cids[v.cid] == v {
		delete(g.cids, v.cid)
	}
}

// learnCID routes records carrying cid to v.
func (g *gate) learnCID(v *vconn, cid []byte) {
	g.mu.Lock()
	defer g.mu.Unlock()
	if v.cid != "" || len(cid) != g.cidLen {
		return
	}
	v.cid = string(cid)
	g.cids[v.cid] = v
}

// peers returns the open vconns (for shutdown).
func (g *gate) all() []*vconn {
	g.mu.Lock()
	defer g.mu.Unlock()
	out := make([]*vconn, 0, len(g.peers))
	for _, v := range g.peers {
		out = append(out, v)
	}
	return out
}
