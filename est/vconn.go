package est

import (
	"bytes"
	"net"
	"net/netip"
	"sync"
	"sync/atomic"
	"time"

	"github.com/pion/dtls/v3"
	"github.com/pion/transport/v5/deadline"

	"github.com/estca/estca/ca"
)

// connectionIDLength is the length of the connection IDs the server issues
// (RFC 9146); the gate routes tls12_cid records by it.
const connectionIDLength = 8

type packet struct {
	data []byte
	from netip.AddrPort
}

// vconn is the net.PacketConn of one admitted peer, given to pion: reads
// come from the gate's routing, writes go to the gate's socket. It also
// carries the peer's accounting: Close releases its session and (if still
// open) handshake slot exactly once, and the identity's session slot a
// handshake reserved that no session took.
type vconn struct {
	g      *gate
	ap     netip.AddrPort
	random [32]byte // ClientHello random of the admitted handshake
	ch0    []byte   // first ClientHello given to pion (no cookie, message_seq 0)
	ch1    []byte   // the peer's second ClientHello, given after pion's HelloVerifyRequest
	cookie []byte
	in     chan packet
	closed chan struct{}
	rd     *deadline.Deadline

	mu    sync.Mutex
	conn  *dtls.Conn
	timer *time.Timer
	hvr   bool   // pion's HelloVerifyRequest seen (and dropped)
	cid   string // guarded by g.mu

	// sess is the peer's session once its handshake completed (nil
	// before): the gate's peer table is also the registry of established
	// sessions that Server.RecheckSessions walks.
	sess atomic.Pointer[session]

	// The requester authenticated by the handshake's VerifyPeerCertificate,
	// holding a session slot of its identity until the session takes it
	// (takeAuth) or v closes (a handshake that failed after the callback).
	authMu   sync.Mutex
	authWho  ca.Requester
	authHeld bool
	authDone bool // v closed: nothing more is held

	closeOnce sync.Once
	hsOnce    sync.Once
}

// holdAuth keeps who (and its session slot) until the session takes it;
// false when v is already closed (the caller releases the slot).
func (v *vconn) holdAuth(who ca.Requester) bool {
	v.authMu.Lock()
	defer v.authMu.Unlock()
	if v.authDone {
		return false
	}
	if v.authHeld { // one VerifyPeerCertificate per handshake; never twice
		v.g.srv.authn.release(&v.authWho)
	}
	v.authWho, v.authHeld = who, true
	return true
}

// takeAuth hands the held requester and its slot over to the session.
func (v *vconn) takeAuth() (ca.Requester, bool) {
	v.authMu.Lock()
	defer v.authMu.Unlock()
	who, ok := v.authWho, v.authHeld
	v.authWho, v.authHeld = ca.Requester{}, false
	return who, ok
}

// dropAuth gives back a slot still held (v closes).
func (v *vconn) dropAuth() {
	v.authMu.Lock()
	defer v.authMu.Unlock()
	v.authDone = true
	if v.authHeld {
		v.g.srv.authn.release(&v.authWho)
		v.authWho, v.authHeld = ca.Requester{}, false
	}
}

// established records the session whose handshake completed on v.
func (v *vconn) established(c *session) { v.sess.Store(c) }

// session returns the established session of v, nil while it handshakes.
func (v *vconn) session() *session { return v.sess.Load() }

// dtlsConn returns the pion connection, nil before start.
func (v *vconn) dtlsConn() *dtls.Conn {
	v.mu.Lock()
	defer v.mu.Unlock()
	return v.conn
}

func (v *vconn) sameHello(h *hello) bool {
	r := h.msg.Random.MarshalFixed()
	return bytes.Equal(r[:], v.random[:])
}

func (v *vconn) isClosed() bool {
	select {
	case <-v.closed:
		return true
	default:
		return false
	}
}

// push queues a datagram for pion; when the queue is full it is dropped,
// like a datagram lost on the way.
func (v *vconn) push(p packet) {
	select {
	case v.in <- p:
	default:
	}
}

// deliver queues a datagram from the network, once pion exists.
func (v *vconn) deliver(d []byte, from netip.AddrPort) {
	v.mu.Lock()
	started := v.conn != nil
	v.mu.Unlock()
	if !started || v.isClosed() {
		return
	}
	v.push(packet{data: bytes.Clone(d), from: from})
}

// handshakeEnded releases the handshake slot counted at admission, once.
func (v *vconn) handshakeEnded() {
	v.hsOnce.Do(func() { v.g.adm.handshakeDone(v.ap.Addr()) })
}

// ReadFrom implements net.PacketConn for pion.
func (v *vconn) ReadFrom(b []byte) (int, net.Addr, error) {
	select {
	case p := <-v.in:
		return copy(b, p.data), net.UDPAddrFromAddrPort(p.from), nil
	case <-v.closed:
		return 0, nil, net.ErrClosed
	case <-v.rd.Done():
		return 0, nil, errReadTimeout
	}
}

// WriteTo implements net.PacketConn for pion; see the gate.
func (v *vconn) WriteTo(b []byte, addr net.Addr) (int, error) {
	if v.isClosed() {
		return 0, net.ErrClosed
	}
	if isHelloVerifyRequest(b) {
		// pion's own cookie exchange (pioncookie.go): never sent. The first
		// one means pion waits for the second ClientHello.
		v.mu.Lock()
		first, c, ch1, cookie := !v.hvr, v.conn, v.ch1, v.cookie
		v.hvr = true
		v.ch1, v.cookie = nil, nil
		v.mu.Unlock()
		if first && c != nil {
			setPionCookie(c, cookie)
			v.push(packet{data: ch1, from: v.ap})
		}
		return len(b), nil
	}
	if v.g.cidLen > 0 {
		if cid, ok := serverHelloCID(b); ok {
			v.g.learnCID(v, cid)
		}
	}
	out, _ := rewriteNoCertificate(b)
	ap := v.ap
	if ua, ok := addr.(*net.UDPAddr); ok {
		ap = ua.AddrPort()
	}
	if _, err := v.g.pc.WriteToUDPAddrPort(out, ap); err != nil {
		return 0, err
	}
	return len(b), nil
}

// Close releases the peer's slots once. pion's Conn.Close calls it.
func (v *vconn) Close() error {
	v.closeOnce.Do(func() {
		close(v.closed)
		v.mu.Lock()
		if v.timer != nil {
			v.timer.Stop()
		}
		v.mu.Unlock()
		v.g.forget(v)
		v.handshakeEnded()
		v.dropAuth()
		v.g.adm.release(v.ap.Addr())
		v.g.srv.metrics.sessionDelta(-1)
	})
	return nil
}

// LocalAddr implements net.PacketConn.
func (v *vconn) LocalAddr() net.Addr { return v.g.pc.LocalAddr() }

// SetDeadline sets the read deadline (writes never block).
func (v *vconn) SetDeadline(t time.Time) error { return v.SetReadDeadline(t) }

// SetReadDeadline implements net.PacketConn.
func (v *vconn) SetReadDeadline(t time.Time) error {
	v.rd.Set(t)
	return nil
}

// SetWriteDeadline implements net.PacketConn; writes never block.
func (v *vconn) SetWriteDeadline(time.Time) error { return nil }

type timeoutError struct{}

func (timeoutError) Error() string   { return "est: read deadline exceeded" }
func (timeoutError) Timeout() bool   { return true }
func (timeoutError) Temporary() bool { return true }

var errReadTimeout net.Error = timeoutError{}
