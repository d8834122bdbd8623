package est

import (
	"context"
	"crypto/tls"
	"errors"
	"fmt"
	"log/slog"
	"net"
	"strconv"
	"sync"
	"sync/atomic"
	"time"

	"github.com/pion/dtls/v3"
	"github.com/pion/dtls/v3/pkg/crypto/elliptic"
	dtlsserver "github.com/plgd-dev/go-coap/v3/dtls/server"
	"github.com/plgd-dev/go-coap/v3/message/pool"
	coapnet "github.com/plgd-dev/go-coap/v3/net"
	"github.com/plgd-dev/go-coap/v3/net/blockwise"
	"github.com/plgd-dev/go-coap/v3/net/monitor/inactivity"
	"github.com/plgd-dev/go-coap/v3/pkg/connections"
	udpclient "github.com/plgd-dev/go-coap/v3/udp/client"

	"github.com/estca/estca/est/block"
)

// Server defaults, used for the zero fields of Options.
const (
	DefaultAddr                   = ":5684"
	DefaultMaxSessions            = 10000
	DefaultMaxSessionsPerPrefix   = 1024
	DefaultMaxHandshakes          = 512
	DefaultMaxHandshakesPerPrefix = 32
	DefaultMaxSessionsPerIdentity = 4
	DefaultIdleTimeout            = 2 * time.Minute
	DefaultHandshakeTimeout       = 10 * time.Second
	DefaultHandshakeBurst         = 10
	DefaultHandshakeMaxWait       = 500 * time.Millisecond
	DefaultBlockMaxBody           = 64 << 10
	DefaultMaxMessageSize         = 1472
	DefaultRecheckInterval        = time.Second
	// DefaultMTU is pion's default DTLS MTU: handshake messages are
	// fragmented so that no datagram the server sends is larger.
	DefaultMTU = 1200
)

// Options configure a Server. Certificate and Authority are required; every
// other zero value selects the documented default.
type Options struct {
	// Addr is the UDP address to listen on; "" means DefaultAddr (":5684").
	Addr string
	// Certificate is the server certificate with its chain; PrivateKey is a
	// crypto.Signer, normally in the HSM (P-256, RFC 7925 §4.4). Send the
	// intermediate CA certificates in the chain: clients that installed the
	// root from /crts (Accept 287) as their only trust anchor need them.
	Certificate tls.Certificate
	// Authority authenticates clients and serves the EST functions.
	Authority Authority
	// Keygen serves server-side key generation (/skg, /skc, RFC 9148 §4.8);
	// nil answers them 4.04 "not implemented" and leaves them out of
	// discovery.
	Keygen KeyGenerator
	// CipherSuites offered; nil means TLS_ECDHE_ECDSA_WITH_AES_128_CCM_8 only
	// (RFC 9148 §3, RFC 7925). pion follows the client's order, so offering
	// more suites lets clients pick a weaker one.
	CipherSuites []dtls.CipherSuiteID
	// ExtendedMasterSecret policy (RFC 7627); the zero value requests it.
	ExtendedMasterSecret dtls.ExtendedMasterSecretType
	// MTU is the DTLS MTU (pion WithMTU): the largest datagram the server
	// sends; handshake messages are fragmented to fit (RFC 6347 §4.1.1.1).
	// 0 means DefaultMTU (1200); 6LoWPAN paths want less.
	MTU int
	// MaxMessageSize is the largest CoAP message (DTLS plaintext) the server
	// accepts in one datagram; a larger request is answered 4.13 with
	// Block1 and Size1 (RFC 7959 §2.9.3). 0 means DefaultMaxMessageSize.
	MaxMessageSize int
	// MaxSessions bounds open DTLS sessions (handshaking or established)
	// of peers that returned a valid cookie; further handshakes are refused
	// with an internal_error alert. 0 means DefaultMaxSessions.
	MaxSessions int
	// MaxSessionsPerPrefix bounds the sessions of one source prefix (IPv4
	// address, IPv6 /64). 0 means DefaultMaxSessionsPerPrefix.
	MaxSessionsPerPrefix int
	// MaxHandshakes bounds handshakes in progress after the cookie; 0 means
	// DefaultMaxHandshakes. MaxHandshakesPerPrefix is the same per source
	// prefix; 0 means DefaultMaxHandshakesPerPrefix.
	MaxHandshakes          int
	MaxHandshakesPerPrefix int
	// MaxSessionsPerIdentity bounds the sessions of one client identity
	// (the authority's identity fingerprint). A further handshake is refused
	// inside the handshake, before any slot is held, with the
	// bad_certificate alert pion sends for every refused client certificate.
	// 0 means DefaultMaxSessionsPerIdentity.
	MaxSessionsPerIdentity int
	// IdleTimeout closes a session without traffic; 0 means DefaultIdleTimeout.
	IdleTimeout time.Duration
	// HandshakeTimeout bounds one handshake; 0 means DefaultHandshakeTimeout.
	HandshakeTimeout time.Duration
	// HandshakeRate is the sustained handshakes per second allowed per
	// source prefix after the cookie (token bucket); 0 means unlimited.
	HandshakeRate float64
	// HandshakeBurst is the bucket size; 0 means DefaultHandshakeBurst.
	HandshakeBurst int
	// HandshakeMaxWait is how long a cookie-verified handshake may wait for
	// its rate token before it is refused; 0 means DefaultHandshakeMaxWait.
	HandshakeMaxWait time.Duration
	// CookieRotation is the rotation period of the HelloVerifyRequest
	// cookie secret; 0 means DefaultCookieRotation.
	CookieRotation time.Duration
	// ConnectionID enables DTLS Connection IDs (RFC 9146, 8 random bytes), so
	// that a session survives NAT rebinding.
	ConnectionID bool
	// BlockMaxBody bounds a reassembled request body (RFC 7959 §2.9.3); 0
	// means DefaultBlockMaxBody (64 KiB).
	BlockMaxBody int
	// Block limits the block-wise state: transfers and stored responses per
	// session, per identity and in all (see est/block.Options); zero fields
	// select est/block's defaults.
	Block BlockLimits
	// ResponseCache bounds the CoAP duplicate-detection cache per session
	// (RFC 7252 §4.5); zero fields select the defaults.
	ResponseCache ResponseCacheLimits
	// HandshakeAuditInterval is how often aggregated refusals are written to
	// the audit log: refused DTLS handshakes by reason, and repeated
	// refusals of requests by identity and reason (through
	// Authority.RecordRejection); they are also written at shutdown. 0 means
	// DefaultHandshakeAuditInterval.
	HandshakeAuditInterval time.Duration
	// RecheckInterval is how often every open session's requester is
	// re-checked (Authority.Check: revoked, manufacturer removed or
	// deny-listed, expired); sessions that fail are closed. 0 means
	// DefaultRecheckInterval. Requests are also re-checked one by one
	// before they are served, and RecheckSessions runs the check at once.
	RecheckInterval time.Duration
	// Logger receives one line per request; nil discards.
	Logger *slog.Logger
	// Metrics receives the server metrics; nil means a fresh NewMetrics().
	Metrics *Metrics
	// Now is the clock; nil means time.Now.
	Now func() time.Time
}

// BlockLimits are the block-wise limits of Options.Block.
type BlockLimits struct {
	// PerSession bounds concurrent Block1 transfers (and, separately,
	// stored Block2 responses) of one session. Default 4.
	PerSession int
	// PerIdentity bounds them for all sessions of one client identity.
	// Default 8.
	PerIdentity int
	// Total bounds them for the whole server. Default 1024.
	Total int
}

// Server is an EST-coaps server (RFC 9148): DTLS 1.2 with mandatory client
// certificates, CoAP, block-wise transfer, the EST resources and discovery.
type Server struct {
	o       Options
	auth    Authority
	keygen  KeyGenerator
	authn   *authenticator
	admit   *admitter
	blocks  *block.Manager
	metrics *Metrics
	log     *slog.Logger
	now     func() time.Time
	pool    *pool.Pool

	reqID  atomic.Uint64
	sessID atomic.Uint64

	hsAudit  handshakeAudit
	reqAudit refusalAudit
	flushMu  sync.Mutex // serialises audit flushes

	mu       sync.Mutex
	gate     *gate
	serving  bool
	shutdown bool
	stop     context.CancelFunc
	done     chan struct{}
}

// NewServer validates o, reporting every problem at once, and returns a
// Server that is not listening yet.
func NewServer(o Options) (*Server, error) {
	var errs []error
	if o.Authority == nil {
		errs = append(errs, errors.New("est: no authority"))
	}
	if len(o.Certificate.Certificate) == 0 || o.Certificate.PrivateKey == nil {
		errs = append(errs, errors.New("est: no server certificate and key"))
	}
	if o.MaxSessions < 0 || o.IdleTimeout < 0 || o.HandshakeTimeout < 0 || o.HandshakeRate < 0 ||
		o.HandshakeBurst < 0 || o.BlockMaxBody < 0 || o.HandshakeAuditInterval < 0 ||
		o.MaxSessionsPerPrefix < 0 || o.MaxHandshakes < 0 || o.MaxHandshakesPerPrefix < 0 ||
		o.MaxSessionsPerIdentity < 0 || o.HandshakeMaxWait < 0 || o.CookieRotation < 0 ||
		o.Block.PerSession < 0 || o.Block.PerIdentity < 0 || o.Block.Total < 0 ||
		o.ResponseCache.Entries < 0 || o.ResponseCache.Bytes < 0 || o.MaxMessageSize < 0 || o.RecheckInterval < 0 {
		errs = append(errs, errors.New("est: negative limit"))
	}
	if o.MTU != 0 && (o.MTU < MinMTU || o.MTU > maxDatagram) {
		errs = append(errs, fmt.Errorf("est: MTU %d outside %d..%d", o.MTU, MinMTU, maxDatagram))
	}
	if o.MaxMessageSize != 0 && (o.MaxMessageSize < 64 || o.MaxMessageSize > maxDatagram-64) {
		errs = append(errs, fmt.Errorf("est: max message size %d outside 64..%d", o.MaxMessageSize, maxDatagram-64))
	}
	if _, err := pionCookieOffset(); err != nil {
		errs = append(errs, err)
	}
	if len(errs) > 0 {
		return nil, errors.Join(errs...)
	}
	if o.Addr == "" {
		o.Addr = DefaultAddr
	}
	if len(o.CipherSuites) == 0 {
		o.CipherSuites = []dtls.CipherSuiteID{dtls.TLS_ECDHE_ECDSA_WITH_AES_128_CCM_8}
	}
	def := func(v *int, d int) {
		if *v == 0 {
			*v = d
		}
	}
	defD := func(v *time.Duration, d time.Duration) {
		if *v == 0 {
			*v = d
		}
	}
	def(&o.MTU, DefaultMTU)
	def(&o.MaxMessageSize, DefaultMaxMessageSize)
	def(&o.MaxSessions, DefaultMaxSessions)
	def(&o.MaxSessionsPerPrefix, DefaultMaxSessionsPerPrefix)
	def(&o.MaxHandshakes, DefaultMaxHandshakes)
	def(&o.MaxHandshakesPerPrefix, DefaultMaxHandshakesPerPrefix)
	def(&o.MaxSessionsPerIdentity, DefaultMaxSessionsPerIdentity)
	def(&o.HandshakeBurst, DefaultHandshakeBurst)
	def(&o.BlockMaxBody, DefaultBlockMaxBody)
	def(&o.Block.PerSession, block.DefaultMaxTransfersPerPeer)
	def(&o.Block.PerIdentity, block.DefaultMaxTransfersPerOwner)
	def(&o.Block.Total, block.DefaultMaxTransfers)
	def(&o.ResponseCache.Entries, DefaultResponseCacheEntries)
	def(&o.ResponseCache.Bytes, DefaultResponseCacheBytes)
	defD(&o.IdleTimeout, DefaultIdleTimeout)
	defD(&o.HandshakeTimeout, DefaultHandshakeTimeout)
	defD(&o.HandshakeMaxWait, DefaultHandshakeMaxWait)
	defD(&o.CookieRotation, DefaultCookieRotation)
	defD(&o.HandshakeAuditInterval, DefaultHandshakeAuditInterval)
	defD(&o.RecheckInterval, DefaultRecheckInterval)
	if o.Now == nil {
		o.Now = time.Now
	}
	if o.Metrics == nil {
		o.Metrics = NewMetrics()
	}
	log := o.Logger
	if log == nil {
		log = slog.New(slog.DiscardHandler)
	}
	blocks, err := block.NewManager(block.Options{
		MaxBody:              o.BlockMaxBody,
		MaxTransfersPerPeer:  o.Block.PerSession,
		MaxTransfersPerOwner: o.Block.PerIdentity,
		MaxTransfers:         o.Block.Total,
		Now:                  o.Now,
	})
	if err != nil {
		return nil, fmt.Errorf("est: %w", err)
	}
	s := &Server{
		o:      o,
		auth:   o.Authority,
		keygen: o.Keygen,
		admit: newAdmitter(admitLimits{
			sessions: o.MaxSessions, prefixSessions: o.MaxSessionsPerPrefix,
			handshakes: o.MaxHandshakes, prefixHandshakes: o.MaxHandshakesPerPrefix,
			rate: o.HandshakeRate, burst: float64(o.HandshakeBurst), maxWait: o.HandshakeMaxWait,
		}, o.Now),
		blocks:  blocks,
		metrics: o.Metrics,
		log:     log,
		now:     o.Now,
		pool:    pool.New(1024, 2048),
		done:    make(chan struct{}),
	}
	s.authn = &authenticator{auth: o.Authority, maxPerIdentity: o.MaxSessionsPerIdentity, identities: map[string]int{}}
	return s, nil
}

// pionMTUOverhead is taken off Options.MTU before it is given to pion: pion
// v3.1.15 splits handshake message bodies into pieces of its MTU without
// counting the handshake header (12 bytes), the record header (13, or 22
// with a connection ID) and the AEAD expansion of an encrypted record (16)
// (conn.go:866 splitBytes(content, c.maximumTransmissionUnit)); it does
// count whole records when it packs several into one datagram (conn.go:705).
const pionMTUOverhead = 12 + 13 + 9 + 16

// MinMTU is the smallest DTLS MTU accepted: the IPv6 minimum link MTU
// (RFC 8200 §5) less the IPv6 and UDP headers, rounded down.
const MinMTU = 256

// Metrics returns the server's metrics.
func (s *Server) Metrics() *Metrics { return s.metrics }

// dtlsOptions builds the pion server options: DTLS 1.2, P-256, cookies
// (HelloVerifyRequest, replayed by the gate: pioncookie.go), the MTU, a
// client certificate required. The gate adds the VerifyPeerCertificate
// callback of each handshake (authenticator.verifier), which checks it with
// Authority.Authenticate inside the handshake.
func (s *Server) dtlsOptions() []dtls.ServerOption {
	opts := []dtls.ServerOption{
		dtls.WithCertificates(s.o.Certificate),
		dtls.WithCipherSuites(s.o.CipherSuites...),
		dtls.WithEllipticCurves(elliptic.P256),
		dtls.WithExtendedMasterSecret(s.o.ExtendedMasterSecret),
		dtls.WithClientAuth(dtls.RequireAnyClientCert),
		dtls.WithInsecureSkipVerifyHello(false),
		dtls.WithMTU(s.o.MTU - pionMTUOverhead),
	}
	if s.o.ConnectionID {
		opts = append(opts, dtls.WithConnectionIDGenerator(dtls.RandomCIDGenerator(connectionIDLength)))
	}
	return opts
}

// Listen binds the UDP socket. Serve calls it when it was not called before;
// call it first to learn Addr (e.g. for ":0").
func (s *Server) Listen() error {
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.shutdown {
		return ErrServerClosed
	}
	if s.gate != nil {
		return nil
	}
	a, err := net.ResolveUDPAddr("udp", s.o.Addr)
	if err != nil {
		return fmt.Errorf("est: listen: %w", err)
	}
	pc, err := net.ListenUDP("udp", a)
	if err != nil {
		return fmt.Errorf("est: listen: %w", err)
	}
	s.gate = newGate(s, pc, s.dtlsOptions())
	return nil
}

// Addr returns the bound address, or nil before Listen.
func (s *Server) Addr() net.Addr {
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.gate == nil {
		return nil
	}
	return s.gate.pc.LocalAddr()
}

// ErrServerClosed is returned by Serve and Listen after Shutdown.
var ErrServerClosed = errors.New("est: server closed")

// Serve listens (if Listen was not called) and serves until ctx is done or
// Shutdown is called; it then returns ErrServerClosed once every session has
// ended. It may be called once.
func (s *Server) Serve(ctx context.Context) error {
	if err := s.Listen(); err != nil {
		return err
	}
	s.mu.Lock()
	if s.serving || s.shutdown {
		s.mu.Unlock()
		return ErrServerClosed
	}
	s.serving = true
	runCtx, cancelRun := context.WithCancel(context.WithoutCancel(ctx))
	s.stop = cancelRun
	g := s.gate
	s.mu.Unlock()
	defer close(s.done)
	defer cancelRun()
	stop := context.AfterFunc(ctx, cancelRun)
	defer stop()

	s.metrics.serverGauges(s)
	go g.run()
	conns := connections.New()
	var wg sync.WaitGroup
	wg.Add(3)
	go func() {
		defer wg.Done()
		s.sweep(runCtx, conns)
	}()
	go func() {
		defer wg.Done()
		s.recheckLoop(runCtx)
	}()
	auditCtx, cancelAudit := context.WithCancel(context.Background())
	go func() {
		defer wg.Done()
		s.auditLoop(auditCtx)
	}()

	var sessions sync.WaitGroup
accept:
	for {
		select {
		case <-runCtx.Done():
			break accept
		case v := <-g.accept:
			sessions.Add(1)
			go func() {
				defer sessions.Done()
				s.serveSession(runCtx, conns, v)
			}()
		}
	}
	// Shutdown: no new peers, every session and pending admission closed.
	g.close()
	conns.Close()
	for {
		select {
		case v := <-g.accept:
			if c := v.dtlsConn(); c != nil {
				_ = c.Close()
			}
			_ = v.Close()
			continue
		default:
		}
		break
	}
	for _, v := range g.all() {
		if c := v.dtlsConn(); c != nil {
			_ = c.Close()
		}
		_ = v.Close()
	}
	sessions.Wait()
	_ = g.closeSocket()
	<-g.done
	cancelAudit()
	wg.Wait()
	// Every session goroutine (handshakes included) has ended: the last
	// tallies are complete.
	s.flushAudits()
	return ErrServerClosed
}

// ListenAndServe is Serve; it exists for symmetry with net/http.
func (s *Server) ListenAndServe(ctx context.Context) error { return s.Serve(ctx) }

// sweep runs the periodic work until ctx ends: CoAP expirations (idle
// sessions, retransmissions, the response cache) at a quarter of the idle
// timeout (at most every second), block-wise and admission state every 5 s.
func (s *Server) sweep(ctx context.Context, conns *connections.Connections) {
	tick := min(max(s.o.IdleTimeout/4, 50*time.Millisecond), time.Second)
	t := time.NewTicker(tick)
	defer t.Stop()
	last := s.now()
	for {
		select {
		case <-ctx.Done():
			return
		case now := <-t.C:
			conns.CheckExpirations(now)
			if n := s.now(); n.Sub(last) >= 5*time.Second {
				last = n
				s.blocks.Sweep(n)
				s.admit.sweep(n)
			}
		}
	}
}

// serveSession runs one admitted peer: the DTLS handshake (which binds the
// requester), then CoAP until the session ends.
func (s *Server) serveSession(ctx context.Context, conns *connections.Connections, v *vconn) {
	sess := &session{Conn: v.dtlsConn(), vc: v, srv: s, id: "s" + strconv.FormatUint(s.sessID.Add(1), 10)}
	if err := sess.HandshakeContext(ctx); err != nil {
		_ = sess.Close()
		return
	}
	cs := dtlsserver.NewSession(ctx, coapnet.NewConn(sess), uint32(maxDatagram), uint16(maxDatagram), true)
	cfg := udpclient.DefaultConfig
	cfg.Ctx = ctx
	cfg.Handler = s.serveCoAP
	cfg.Errors = func(err error) {
		if !coapnet.IsCancelOrCloseError(err) {
			s.log.Debug("coap", "session", sess.id, "error", err)
		}
	}
	cfg.MTU = uint16(maxDatagram)
	cfg.MessagePool = s.pool
	// In-flight duplicate suppression: go-coap forgets a Message ID only
	// after the handler returned, which is after the response left, so a
	// client that sends its next request as soon as it has the answer
	// (NSTART = 1, the normal case) may find the previous one still
	// counted: one more than the response cache's entries, or with one
	// entry every second request of a block-wise transfer is dropped
	// ("in-flight message limit (1) exceeded") until the client retransmits.
	cfg.MaxPendingMessages = uint32(s.o.ResponseCache.Entries) + 1
	cfg.BlockwiseEnable = false
	rc := newResponseCache(s.o.ResponseCache, s.now)
	defer rc.drop()
	cc := udpclient.NewConnWithOpts(cs, &cfg,
		udpclient.WithBlockWise(func(*udpclient.Conn) *blockwise.BlockWise[*udpclient.Conn] { return nil }),
		udpclient.WithInactivityMonitor(inactivity.New(s.o.IdleTimeout, func(cc *udpclient.Conn) { _ = cc.Close() })),
		udpclient.WithRequestMonitor(func(*udpclient.Conn, *pool.Message) (bool, error) { return false, nil }),
		udpclient.WithResponseMessageCache(rc),
	)
	sess.cc.Store(cc)
	conns.Store(cc)
	defer conns.Delete(cc)
	if err := cc.Run(); err != nil && !coapnet.IsCancelOrCloseError(err) {
		s.log.Debug("coap session ended", "session", sess.id, "error", err)
	}
	_ = sess.Close()
}

// recheckLoop re-checks every open session each RecheckInterval.
func (s *Server) recheckLoop(ctx context.Context) {
	t := time.NewTicker(s.o.RecheckInterval)
	defer t.Stop()
	for {
		select {
		case <-ctx.Done():
			return
		case <-t.C:
			s.RecheckSessions()
		}
	}
}

// RecheckSessions re-checks the requester of every established session
// with Authority.Check and closes the sessions that fail (a certificate
// revoked since the handshake, a manufacturer removed or deny-listed by a
// reload, a certificate expired during the session), each with one log
// line. It returns how many it closed. The server runs it every
// RecheckInterval; call it after a revocation or a reload to close the
// sessions concerned at once.
//
// The sessions are those of the gate's peer table (an admitted peer whose
// handshake completed carries its session: vconn.established), the one
// registry of the server's peers.
func (s *Server) RecheckSessions() int {
	s.mu.Lock()
	g := s.gate
	s.mu.Unlock()
	if g == nil {
		return 0
	}
	closed := 0
	for _, v := range g.all() {
		c := v.session()
		if c == nil {
			continue
		}
		if err := s.auth.Check(c.who); err != nil && s.closeRefused(c, err) {
			closed++
		}
	}
	return closed
}

// closeRefused closes a session whose requester failed Authority.Check
// (once: the per-request and the periodic re-checks may both find it).
func (s *Server) closeRefused(c *session, err error) bool {
	if !c.refused.CompareAndSwap(false, true) {
		return false
	}
	fp, subject := identity(&c.who)
	s.log.Info("session closed", "peer", c.RemoteAddr().String(), "session", c.id, "requester", fp,
		"subject", subject, "reason", StatusOf(err).Diagnostic)
	s.metrics.sessionClosed(StatusOf(err).Diagnostic)
	_ = c.Close()
	return true
}

// Shutdown stops accepting handshakes, closes every session and waits for
// Serve to return or ctx to end. Refusals not yet audited are written to the
// audit log before Serve returns.
func (s *Server) Shutdown(ctx context.Context) error {
	s.mu.Lock()
	s.shutdown = true
	g, serving, stop := s.gate, s.serving, s.stop
	s.mu.Unlock()
	if !serving {
		if g != nil {
			_ = g.closeSocket()
		}
		s.flushAudits()
		return nil
	}
	stop()
	select {
	case <-s.done:
		return nil
	case <-ctx.Done():
		return ctx.Err()
	}
}
