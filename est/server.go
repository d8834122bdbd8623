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
	coapnet "github.com/plgd-dev/go-coap/v3/net"
	"github.com/plgd-dev/go-coap/v3/options"
	"github.com/plgd-dev/go-coap/v3/pkg/runner/periodic"
	udpclient "github.com/plgd-dev/go-coap/v3/udp/client"

	"github.com/estca/estca/est/block"
)

// Server defaults, used for the zero fields of Options.
const (
	DefaultAddr             = ":5684"
	DefaultMaxSessions      = 10000
	DefaultIdleTimeout      = 2 * time.Minute
	DefaultHandshakeTimeout = 10 * time.Second
	DefaultHandshakeBurst   = 10
	DefaultBlockMaxBody     = 64 << 10
)

// Options configure a Server. Certificate and Authority are required; every
// other zero value selects the documented default.
type Options struct {
	// Addr is the UDP address to listen on; "" means DefaultAddr (":5684").
	Addr string
	// Certificate is the server certificate with its chain; PrivateKey is a
	// crypto.Signer, normally in the HSM (P-256, RFC 7925 §4.4).
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
	// MaxSessions bounds open DTLS sessions (handshaking or established);
	// further handshake attempts are refused. 0 means DefaultMaxSessions.
	MaxSessions int
	// IdleTimeout closes a session without traffic; 0 means DefaultIdleTimeout.
	IdleTimeout time.Duration
	// HandshakeTimeout bounds one handshake; 0 means DefaultHandshakeTimeout.
	HandshakeTimeout time.Duration
	// HandshakeRate is the sustained handshake attempts per second allowed
	// per peer IP address (token bucket); 0 means unlimited.
	HandshakeRate float64
	// HandshakeBurst is the bucket size; 0 means DefaultHandshakeBurst.
	HandshakeBurst int
	// ConnectionID enables DTLS Connection IDs (RFC 9146, 8 random bytes), so
	// that a session survives NAT rebinding.
	ConnectionID bool
	// BlockMaxBody bounds a reassembled request body (RFC 7959 §2.9.3); 0
	// means DefaultBlockMaxBody (64 KiB).
	BlockMaxBody int
	// HandshakeAuditInterval is how often refused DTLS handshakes, tallied by
	// reason, are written to the audit log (one record per reason, through
	// Authority.RecordRejection); they are also written at shutdown. 0 means
	// DefaultHandshakeAuditInterval.
	HandshakeAuditInterval time.Duration
	// Logger receives one line per request; nil discards.
	Logger *slog.Logger
	// Metrics receives the server metrics; nil means a fresh NewMetrics().
	Metrics *Metrics
	// Now is the clock; nil means time.Now.
	Now func() time.Time
}

// Server is an EST-coaps server (RFC 9148): DTLS 1.2 with mandatory client
// certificates, CoAP, block-wise transfer, the EST resources and discovery.
type Server struct {
	o       Options
	auth    Authority
	keygen  KeyGenerator
	authn   *authenticator
	limiter *rateLimiter
	blocks  *block.Manager
	metrics *Metrics
	log     *slog.Logger
	now     func() time.Time

	reqID    atomic.Uint64
	sessID   atomic.Uint64
	sessions atomic.Int64

	hsAudit handshakeAudit
	flushMu sync.Mutex // serialises handshake audit flushes

	mu       sync.Mutex
	ln       *listener
	coap     *dtlsserver.Server
	serving  bool
	shutdown bool
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
		o.HandshakeBurst < 0 || o.BlockMaxBody < 0 || o.HandshakeAuditInterval < 0 {
		errs = append(errs, errors.New("est: negative limit"))
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
	if o.MaxSessions == 0 {
		o.MaxSessions = DefaultMaxSessions
	}
	if o.IdleTimeout == 0 {
		o.IdleTimeout = DefaultIdleTimeout
	}
	if o.HandshakeTimeout == 0 {
		o.HandshakeTimeout = DefaultHandshakeTimeout
	}
	if o.HandshakeBurst == 0 {
		o.HandshakeBurst = DefaultHandshakeBurst
	}
	if o.BlockMaxBody == 0 {
		o.BlockMaxBody = DefaultBlockMaxBody
	}
	if o.HandshakeAuditInterval == 0 {
		o.HandshakeAuditInterval = DefaultHandshakeAuditInterval
	}
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
	blocks, err := block.NewManager(block.Options{MaxBody: o.BlockMaxBody, Now: o.Now})
	if err != nil {
		return nil, fmt.Errorf("est: %w", err)
	}
	return &Server{
		o:       o,
		auth:    o.Authority,
		keygen:  o.Keygen,
		authn:   &authenticator{auth: o.Authority, now: o.Now, cache: map[[32]byte]authEntry{}},
		limiter: &rateLimiter{rate: o.HandshakeRate, burst: float64(o.HandshakeBurst), now: o.Now, buckets: map[string]*bucket{}},
		blocks:  blocks,
		metrics: o.Metrics,
		log:     log,
		now:     o.Now,
		done:    make(chan struct{}),
	}, nil
}

// Metrics returns the server's metrics.
func (s *Server) Metrics() *Metrics { return s.metrics }

// dtlsOptions builds the pion server options: DTLS 1.2, P-256, cookies
// (HelloVerifyRequest) on, a client certificate required and checked by
// Authority.Authenticate inside the handshake.
func (s *Server) dtlsOptions() []dtls.ServerOption {
	opts := []dtls.ServerOption{
		dtls.WithCertificates(s.o.Certificate),
		dtls.WithCipherSuites(s.o.CipherSuites...),
		dtls.WithEllipticCurves(elliptic.P256),
		dtls.WithExtendedMasterSecret(s.o.ExtendedMasterSecret),
		dtls.WithClientAuth(dtls.RequireAnyClientCert),
		dtls.WithVerifyPeerCertificate(s.authn.verify),
		dtls.WithInsecureSkipVerifyHello(false),
		dtls.WithOnConnectionAttempt(s.admit),
	}
	if s.o.ConnectionID {
		opts = append(opts, dtls.WithConnectionIDGenerator(dtls.RandomCIDGenerator(8)))
	}
	return opts
}

// errRefused is returned to pion for a refused handshake attempt.
var errRefused = errors.New("est: handshake attempt refused")

// admit decides on a new handshake attempt (before any handshake work).
func (s *Server) admit(addr net.Addr) error {
	if s.sessions.Load() >= int64(s.o.MaxSessions) {
		s.metrics.handshakeFailure(ReasonTooManySessions)
		s.noteHandshake(ReasonTooManySessions, addr.String(), "")
		return errRefused
	}
	if !s.limiter.allow(addr) {
		s.metrics.handshakeFailure(ReasonRateLimited)
		s.noteHandshake(ReasonRateLimited, addr.String(), "")
		return errRefused
	}
	return nil
}

func (s *Server) sessionDone() {
	s.sessions.Add(-1)
	s.metrics.sessionDelta(-1)
}

// Listen binds the UDP socket. Serve calls it when it was not called before;
// call it first to learn Addr (e.g. for ":0").
func (s *Server) Listen() error {
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.shutdown {
		return ErrServerClosed
	}
	if s.ln != nil {
		return nil
	}
	a, err := net.ResolveUDPAddr("udp", s.o.Addr)
	if err != nil {
		return fmt.Errorf("est: listen: %w", err)
	}
	l, err := dtls.ListenWithOptions("udp", a, s.dtlsOptions()...)
	if err != nil {
		return fmt.Errorf("est: listen: %w", err)
	}
	s.ln = &listener{srv: s, ln: l}
	return nil
}

// Addr returns the bound address, or nil before Listen.
func (s *Server) Addr() net.Addr {
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.ln == nil {
		return nil
	}
	return s.ln.ln.Addr()
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
	defer cancelRun()
	// Expiry checks (idle sessions) run at a quarter of the idle timeout,
	// at most every second.
	tick := min(max(s.o.IdleTimeout/4, 50*time.Millisecond), time.Second)
	s.coap = dtlsserver.New(
		options.WithContext(runCtx),
		options.WithPeriodicRunner(periodic.New(runCtx.Done(), tick)),
		options.WithHandlerFunc(s.serveCoAP),
		options.WithBlockwise(false, 0, 0),
		options.WithInactivityMonitor(s.o.IdleTimeout, func(cc *udpclient.Conn) { _ = cc.Close() }),
		options.WithOnNewConn(func(cc *udpclient.Conn) {}),
		options.WithErrors(func(err error) {
			s.log.Debug("coap", "error", err)
		}),
	)
	srv, ln := s.coap, s.ln
	s.mu.Unlock()
	defer close(s.done)

	stop := context.AfterFunc(ctx, func() { srv.Stop() })
	defer stop()
	sweepCtx, cancelSweep := context.WithCancel(ctx)
	defer cancelSweep()
	go s.sweep(sweepCtx)
	auditCtx, cancelAudit := context.WithCancel(context.WithoutCancel(ctx))
	auditDone := make(chan struct{})
	go s.auditLoop(auditCtx, auditDone)

	_ = srv.Serve(ln)
	// go-coap's Serve returns once every session goroutine (handshakes
	// included) has ended: the last tallies are complete.
	cancelAudit()
	<-auditDone
	s.flushHandshakes()
	return ErrServerClosed
}

// ListenAndServe is Serve; it exists for symmetry with net/http.
func (s *Server) ListenAndServe(ctx context.Context) error { return s.Serve(ctx) }

// sweep expires block-wise state periodically.
func (s *Server) sweep(ctx context.Context) {
	t := time.NewTicker(5 * time.Second)
	defer t.Stop()
	for {
		select {
		case <-ctx.Done():
			return
		case <-t.C:
			s.blocks.Sweep(s.now())
		}
	}
}

// Shutdown stops accepting handshakes, closes every session and waits for
// Serve to return or ctx to end. Refused handshakes not yet audited are
// written to the audit log before Serve returns.
func (s *Server) Shutdown(ctx context.Context) error {
	s.mu.Lock()
	s.shutdown = true
	srv, ln, serving := s.coap, s.ln, s.serving
	s.mu.Unlock()
	if srv != nil {
		srv.Stop()
	} else if ln != nil {
		_ = ln.Close()
	}
	if !serving {
		s.flushHandshakes()
		return nil
	}
	select {
	case <-s.done:
		return nil
	case <-ctx.Done():
		return ctx.Err()
	}
}

// listener adapts the pion DTLS listener to go-coap and wraps every
// connection in a session.
type listener struct {
	srv    *Server
	ln     net.Listener
	closed atomic.Bool
}

// AcceptWithContext returns the next DTLS connection (not yet handshaken).
func (l *listener) AcceptWithContext(ctx context.Context) (net.Conn, error) {
	for {
		if err := ctx.Err(); err != nil {
			return nil, err
		}
		if l.closed.Load() {
			return nil, coapnet.ErrListenerIsClosed
		}
		c, err := l.ln.Accept()
		if err != nil {
			if l.closed.Load() || errors.Is(err, net.ErrClosed) {
				return nil, coapnet.ErrListenerIsClosed
			}
			if errors.Is(err, errRefused) {
				continue
			}
			return nil, err
		}
		dc, ok := c.(*dtls.Conn)
		if !ok {
			_ = c.Close()
			continue
		}
		l.srv.sessions.Add(1)
		l.srv.metrics.sessionDelta(1)
		return &session{Conn: dc, srv: l.srv, id: "s" + strconv.FormatUint(l.srv.sessID.Add(1), 10)}, nil
	}
}

// Close closes the listener; established sessions are closed by go-coap.
func (l *listener) Close() error {
	if !l.closed.CompareAndSwap(false, true) {
		return nil
	}
	return l.ln.Close()
}
