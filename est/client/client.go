package client

import (
	"context"
	"crypto/tls"
	"crypto/x509"
	"errors"
	"fmt"
	"log/slog"
	"net"
	"strconv"
	"strings"
	"sync"
	"time"

	"github.com/pion/dtls/v3"
	"github.com/pion/dtls/v3/pkg/crypto/elliptic"
	dtlsnet "github.com/pion/dtls/v3/pkg/net"
	coapdtls "github.com/plgd-dev/go-coap/v3/dtls"
	"github.com/plgd-dev/go-coap/v3/message/codes"
	"github.com/plgd-dev/go-coap/v3/options"
	udpclient "github.com/plgd-dev/go-coap/v3/udp/client"

	"github.com/estca/estca/est/wire"
)

// Defaults of Options.
const (
	// DefaultBlockSize is the block size used when Options.BlockSize is 0.
	DefaultBlockSize = 1024
	// DefaultTimeout bounds one operation when Options.Timeout is 0.
	DefaultTimeout = 30 * time.Second
	// DefaultMaxRetries is the number of 5.03 retries when Options.MaxRetries is 0.
	DefaultMaxRetries = 3
	// DefaultMaxWait caps one Max-Age wait when Options.MaxWait is 0.
	DefaultMaxWait = 2 * time.Minute
	// DefaultMaxAge is the Max-Age of a response without the option (RFC 7252 §5.10.5).
	DefaultMaxAge = 60 * time.Second
	// maxResponseBody bounds a reassembled Block2 response.
	maxResponseBody = 1 << 20
)

// Errors; the concrete errors wrap these sentinels.
var (
	// ErrHandshake is matched (errors.Is) by every *HandshakeError.
	ErrHandshake = errors.New("client: dtls handshake failed")
	// ErrRetriesExhausted is returned when the server still answered 5.03
	// after Options.MaxRetries resends (RFC 9148 §4.7).
	ErrRetriesExhausted = errors.New("client: server still busy")
	// ErrBadResponse is a response that violates RFC 9148 or RFC 7959: wrong
	// Content-Format, inconsistent blocks, oversized body.
	ErrBadResponse = errors.New("client: bad response")
	// ErrCertMismatch means the certificate returned for a CSR does not carry
	// the CSR's public key.
	ErrCertMismatch = errors.New("client: certificate does not match the CSR public key")
	// ErrTrustUpdate means the new trust anchors do not validate the current
	// server certificate (RFC 9148 §9.1); the old anchors stay in force.
	ErrTrustUpdate = errors.New("client: new trust anchors do not validate the server")
)

// Options configures Dial. The zero value of every field has a documented
// default; Server, Certificate and Roots are required.
type Options struct {
	// Server is "coaps://host:port", "coaps://host", "host:port" or "host";
	// the default port is wire.DefaultPort (5684).
	Server string
	// Label selects a profile path label: resources live under /est/<Label>/.
	// Empty means the mandatory root /.well-known/est (RFC 9148 §4.1).
	Label string
	// Certificate is the client certificate and key (an IDevID or an
	// operational certificate); every EST-coaps function needs it (RFC 9148 §3).
	Certificate tls.Certificate
	// Roots are the explicit trust anchors the server certificate must chain
	// to (RFC 7030 §4.1.1). Required: there is no implicit trust store.
	Roots *x509.CertPool
	// ServerName is checked against the server certificate (DNS or IP SAN).
	// Empty means the host part of Server.
	ServerName string
	// BlockSize is the block size for Block1 and the preferred Block2 size
	// (RFC 7959 §2.2): a power of two in 16..1024; 0 means DefaultBlockSize.
	BlockSize int
	// CipherSuites offered; empty means TLS_ECDHE_ECDSA_WITH_AES_128_CCM_8 only
	// (RFC 9148 §3; pion follows the client's order, so offer one by default).
	CipherSuites []dtls.CipherSuiteID
	// Timeout bounds the handshake and each attempt of an operation (all its
	// blocks); 0 means DefaultTimeout. The waits after a 5.03 are
	// bounded by MaxRetries and MaxWait, and everything by the caller's context.
	Timeout time.Duration
	// MaxRetries bounds the resends after a 5.03 (RFC 9148 §4.7); 0 means
	// DefaultMaxRetries, a negative value disables retries.
	MaxRetries int
	// MaxWait caps one wait for a 5.03's Max-Age; 0 means DefaultMaxWait.
	MaxWait time.Duration
	// Logger receives debug records of retries; nil discards.
	Logger *slog.Logger
}

// Conn is an EST-coaps client (RFC 9148) over one DTLS 1.2 session. It is
// safe for concurrent use; go-coap sends one request of a session at a time,
// so concurrent operations interleave message by message (NSTART 1,
// RFC 7252 §4.7). Each block-wise request body has its own Request-Tag.
type Conn struct {
	opts   Options
	root   string
	szx    uint8
	dconn  *dtls.Conn
	conn   *udpclient.Conn
	stop   context.CancelFunc
	log    *slog.Logger
	policy retryPolicy

	mu    sync.Mutex
	roots *x509.CertPool
}

// HandshakeError reports a failed DTLS handshake with a reason a person can act on.
type HandshakeError struct {
	// Server is the address dialled.
	Server string
	// Reason is a short explanation, e.g. "server rejected the client certificate".
	Reason string
	// Err is the underlying pion/dtls or x509 error.
	Err error
}

// Error implements error.
func (e *HandshakeError) Error() string {
	return fmt.Sprintf("client: dtls handshake with %s failed: %s: %v", e.Server, e.Reason, e.Err)
}

// Unwrap returns the underlying error.
func (e *HandshakeError) Unwrap() error { return e.Err }

// Is makes errors.Is(err, ErrHandshake) true.
func (e *HandshakeError) Is(target error) bool { return target == ErrHandshake }

// ResponseError is a CoAP error response (4.xx, 5.xx) from the server
// (RFC 9148 §4.5), with the server's diagnostic payload (RFC 7252 §5.5.2).
type ResponseError struct {
	// Resource names the request, e.g. "sen", "crts", "discovery".
	Resource string
	// Code is the response code.
	Code codes.Code
	// Diagnostic is the UTF-8 diagnostic payload, possibly empty.
	Diagnostic string
	// MaxAge is the response's Max-Age; DefaultMaxAge when the option was absent.
	MaxAge time.Duration
}

// Error implements error.
func (e *ResponseError) Error() string {
	s := fmt.Sprintf("client: %s: server answered %d.%02d %s", e.Resource, e.Code>>5, e.Code&0x1f, e.Code)
	if e.Diagnostic != "" {
		s += ": " + strconv.Quote(e.Diagnostic)
	}
	if e.Code == codes.ServiceUnavailable {
		s += fmt.Sprintf(" (retry after %s)", e.MaxAge)
	}
	return s
}

// blockSZX maps a block size to its SZX (RFC 7959 §2.2).
func blockSZX(size int) (uint8, error) {
	for szx := uint8(0); szx <= 6; szx++ {
		if 16<<szx == size {
			return szx, nil
		}
	}
	return 0, fmt.Errorf("client: block size %d is not a power of two in 16..1024", size)
}

// splitServer returns host and host:port of a coaps URI or address.
func splitServer(server string) (host, hostport string, err error) {
	s := strings.TrimPrefix(server, "coaps://")
	if i := strings.IndexByte(s, '/'); i >= 0 {
		if s[i:] != "/" {
			return "", "", fmt.Errorf("client: server %q: a path is not allowed (use Label)", server)
		}
		s = s[:i]
	}
	if s == "" {
		return "", "", fmt.Errorf("client: server address is empty")
	}
	if h, p, err := net.SplitHostPort(s); err == nil {
		if _, err := strconv.ParseUint(p, 10, 16); err != nil {
			return "", "", fmt.Errorf("client: server %q: bad port", server)
		}
		return h, s, nil
	}
	h := strings.TrimSuffix(strings.TrimPrefix(s, "["), "]")
	return h, net.JoinHostPort(h, strconv.Itoa(wire.DefaultPort)), nil
}

func (o Options) withDefaults() (Options, error) {
	var problems []error
	if o.Server == "" {
		problems = append(problems, errors.New("client: Server is required"))
	}
	if len(o.Certificate.Certificate) == 0 || o.Certificate.PrivateKey == nil {
		problems = append(problems, errors.New("client: Certificate with a private key is required (RFC 9148 §3)"))
	}
	if o.Roots == nil {
		problems = append(problems, errors.New("client: Roots (explicit trust anchors) are required"))
	}
	if strings.ContainsAny(o.Label, "/?#") {
		problems = append(problems, fmt.Errorf("client: label %q must be one path segment", o.Label))
	}
	if o.BlockSize == 0 {
		o.BlockSize = DefaultBlockSize
	}
	if _, err := blockSZX(o.BlockSize); err != nil {
		problems = append(problems, err)
	}
	if len(o.CipherSuites) == 0 {
		o.CipherSuites = []dtls.CipherSuiteID{dtls.TLS_ECDHE_ECDSA_WITH_AES_128_CCM_8}
	}
	if o.Timeout <= 0 {
		o.Timeout = DefaultTimeout
	}
	if o.MaxRetries == 0 {
		o.MaxRetries = DefaultMaxRetries
	} else if o.MaxRetries < 0 {
		o.MaxRetries = 0
	}
	if o.MaxWait <= 0 {
		o.MaxWait = DefaultMaxWait
	}
	if o.Logger == nil {
		o.Logger = slog.New(slog.DiscardHandler)
	}
	return o, errors.Join(problems...)
}

// Dial opens a DTLS 1.2 session to the EST-coaps server and completes the
// handshake before returning, so that a rejected client certificate or an
// untrusted server shows as a *HandshakeError here rather than on the first
// request. The context bounds the handshake.
func Dial(ctx context.Context, o Options) (*Conn, error) {
	o, err := o.withDefaults()
	if err != nil {
		return nil, err
	}
	host, hostport, err := splitServer(o.Server)
	if err != nil {
		return nil, err
	}
	if o.ServerName == "" {
		o.ServerName = host
	}
	szx, _ := blockSZX(o.BlockSize)
	c := &Conn{
		opts:   o,
		root:   wire.WellKnownRoot,
		szx:    szx,
		log:    o.Logger,
		roots:  o.Roots,
		policy: retryPolicy{maxRetries: o.MaxRetries, maxWait: o.MaxWait, sleep: sleepCtx},
	}
	if o.Label != "" {
		c.root = wire.LabelRoot + "/" + o.Label
	}

	ctx, cancel := context.WithTimeout(ctx, o.Timeout)
	defer cancel()
	var d net.Dialer
	udp, err := d.DialContext(ctx, "udp", hostport)
	if err != nil {
		return nil, fmt.Errorf("client: dial %s: %w", hostport, err)
	}
	dconn, err := dtls.ClientWithOptions(dtlsnet.PacketConnFromConn(udp), udp.RemoteAddr(),
		dtls.WithCertificates(o.Certificate),
		dtls.WithRootCAs(o.Roots),
		dtls.WithServerName(o.ServerName),
		dtls.WithCipherSuites(o.CipherSuites...),
		dtls.WithEllipticCurves(elliptic.P256),
		dtls.WithExtendedMasterSecret(dtls.RequestExtendedMasterSecret),
	)
	if err != nil {
		_ = udp.Close()
		return nil, fmt.Errorf("client: dtls client: %w", err)
	}
	if err := dconn.HandshakeContext(ctx); err != nil {
		_ = dconn.Close()
		return nil, &HandshakeError{Server: hostport, Reason: handshakeReason(ctx, err), Err: err}
	}
	c.dconn = dconn
	// go-coap's default periodic runner (retransmissions, expiries) sleeps
	// 4 s between runs and outlives Close by that much; this one stops at
	// Close, which matters when a bench dials hundreds of sessions a second.
	life, stop := context.WithCancel(context.Background())
	c.stop = stop
	c.conn = coapdtls.Client(dconn,
		options.WithContext(life),
		options.WithBlockwise(false, 0, 0),
		options.WithCloseSocket(),
		options.WithErrors(func(error) {}),
		options.WithPeriodicRunner(func(f func(time.Time) bool) {
			go func() {
				t := time.NewTicker(500 * time.Millisecond)
				defer t.Stop()
				for f(time.Now()) {
					select {
					case <-t.C:
					case <-life.Done():
						return
					}
				}
			}()
		}),
	)
	return c, nil
}

// handshakeReason turns pion and x509 errors into an actionable reason.
func handshakeReason(ctx context.Context, err error) string {
	var unknownAuthority x509.UnknownAuthorityError
	var invalid x509.CertificateInvalidError
	var hostname x509.HostnameError
	msg := err.Error()
	switch {
	case errors.As(err, &unknownAuthority):
		return "server certificate does not chain to the configured trust anchors"
	case errors.As(err, &invalid):
		return "server certificate is invalid (" + invalid.Error() + ")"
	case errors.As(err, &hostname):
		return "server certificate does not match the server name"
	case strings.Contains(msg, "alert:") && (strings.Contains(msg, "BadCertificate") ||
		strings.Contains(msg, "UnknownCA") || strings.Contains(msg, "CertificateExpired") ||
		strings.Contains(msg, "CertificateRevoked") || strings.Contains(msg, "UnsupportedCertificate") ||
		strings.Contains(msg, "AccessDenied") || strings.Contains(msg, "CertificateUnknown")):
		return "server rejected the client certificate"
	case strings.Contains(msg, "alert:") && strings.Contains(msg, "NoCertificate"):
		return "server rejected the client certificate (none of ours matched the CAs it accepts)"
	case strings.Contains(msg, "alert:") && strings.Contains(msg, "HandshakeFailure"):
		return "no common cipher suite or parameters"
	case strings.Contains(msg, "alert:"):
		return "server sent a fatal alert"
	case errors.Is(err, context.DeadlineExceeded) || ctx.Err() != nil:
		return "no answer before the deadline (server down, or it dropped the handshake after rejecting the client certificate)"
	default:
		return "handshake error"
	}
}

// Close ends the DTLS session (sending close_notify) and releases the socket.
func (c *Conn) Close() error {
	err := c.conn.Close()
	c.stop()
	return err
}

// ConnectionState returns the DTLS state of the session (peer certificates,
// cipher suite).
func (c *Conn) ConnectionState() (dtls.State, bool) {
	return c.dconn.ConnectionState()
}

// Roots returns the trust anchors currently in force (updated by UpdateTrust).
func (c *Conn) Roots() *x509.CertPool {
	c.mu.Lock()
	defer c.mu.Unlock()
	return c.roots
}

// path returns the request path of an EST resource.
func (c *Conn) path(resource string) string {
	return c.root + "/" + resource
}

// opContext applies the client's Timeout to ctx.
func (c *Conn) opContext(ctx context.Context) (context.Context, context.CancelFunc) {
	return context.WithTimeout(ctx, c.opts.Timeout)
}
