package bench

import (
	"context"
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/tls"
	"crypto/x509"
	"encoding/asn1"
	"errors"
	"fmt"
	"io"
	"runtime"
	"slices"
	"sort"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	"github.com/estca/estca/ca/cms"
	"github.com/estca/estca/est/client"
	"github.com/estca/estca/est/wire"
)

// Modes.
const (
	// ModeEnroll: every enrollment on a new DTLS session (handshake included).
	ModeEnroll = "sen"
	// ModeEnrollReuse: many enrollments over one DTLS session per worker.
	ModeEnrollReuse = "sen-reuse"
	// ModeCACerts: GET /crts over one DTLS session per worker.
	ModeCACerts = "crts"
	// ModeKeygen: server-side key generation (/skg, RFC 9148 §4.8) over one
	// DTLS session per worker; the key is delivered as KeyRequest asks.
	ModeKeygen = "skg"
	// ModeKeygenSingle: as ModeKeygen with /skc (a single DER certificate).
	ModeKeygenSingle = "skc"
)

// Modes lists the modes.
var Modes = []string{ModeEnroll, ModeEnrollReuse, ModeCACerts, ModeKeygen, ModeKeygenSingle}

// DefaultTimeout bounds one operation, handshake included, when
// Options.Client.Timeout is 0.
const DefaultTimeout = 10 * time.Second

// Options configures Run.
type Options struct {
	// Client is how every worker connects (server, label, identity, trust
	// anchors, server name, block size, cipher suites, logger), as for
	// client.Dial, with two differences: Timeout bounds one operation,
	// handshake included, and 0 means DefaultTimeout; and a 5.03 is counted
	// as an error, never retried (MaxRetries and MaxWait are ignored), so
	// that the report measures the server rather than Max-Age waits.
	Client client.Options
	// Mode is one of Modes.
	Mode string
	// Workers is the number of concurrent clients; 0 means 1.
	Workers int
	// Duration of the timed loop; 0 means 10 s.
	Duration time.Duration
	// CSRs is the number of distinct CSRs (each with its own P-256 key)
	// prepared before the timed loop; 0 means 400 per worker-second, at most
	// 100000. A run that uses them all stops early (Report.Exhausted).
	// Preparing costs CPU the server also needs on a small machine, which is
	// why it happens before the clock starts.
	CSRs int
	// KeyRequest is what the CSRs of ModeKeygen and ModeKeygenSingle ask
	// for (nil: a plain PKCS#8 key), and DecryptKey opens the answers (nil
	// for plain keys); every answer is decrypted, its SignedData verified
	// and its key matched to the certificate after the timed loop
	// (client.OpenServerKey).
	KeyRequest *cms.KeyRequest
	DecryptKey *cms.DecryptKey
	// Prepared, if not nil, is the set of CSRs to draw from instead of
	// preparing CSRs of its own (CSRs and KeyRequest then do not matter for
	// the CSRs): a set prepared once serves many runs (Compare's rounds),
	// each taking the CSRs the previous runs left.
	Prepared *CSRSet
	// FixedAnswer is for servers that answer every enrollment with the
	// same certificate (est/baseline): issued certificates are verified
	// against the CA chain, but not matched to their CSR's key.
	FixedAnswer bool
	// ServerPID, if not 0, is the server's process on this machine: its
	// CPU time (user and system) and context switches over the timed loop
	// are reported (Report.Server; Linux /proc).
	ServerPID int
}

// keygen reports whether mode is server-side key generation.
func keygen(mode string) bool { return mode == ModeKeygen || mode == ModeKeygenSingle }

// Report is the outcome of Run.
type Report struct {
	Mode     string
	Workers  int
	Prepared int           // CSRs prepared before the timed loop
	Elapsed  time.Duration // wall time of the timed loop
	// Ops counts successful operations; Verified the issued certificates that
	// matched their CSR's key and chained to the CA (enrollment modes).
	Ops      int
	Verified int
	// Delivery names how keygen modes asked for the key: plain, kek or
	// asymmetric; empty for the other modes.
	Delivery string
	// OpsPerSec is Ops / Elapsed.
	OpsPerSec float64
	// Latency percentiles of successful operations (nearest rank).
	P50, P90, P99, Max time.Duration
	// Errors counts failures by kind: "handshake", "coap 5.03" (by code),
	// "verify" (certificate mismatch), "timeout", "other".
	Errors map[string]int
	// Exhausted is set when the prepared CSRs ran out before Duration.
	Exhausted bool
	// Server is what the server process (Options.ServerPID) spent over the
	// timed loop; nil without a ServerPID.
	Server *Usage
}

// CPUPerOp is the server's CPU time (user + system) per successful
// operation, 0 without Server or operations.
func (r *Report) CPUPerOp() time.Duration {
	if r.Server == nil || r.Ops == 0 {
		return 0
	}
	return (r.Server.User + r.Server.System) / time.Duration(r.Ops)
}

// ErrorCount is the total number of failed operations.
func (r *Report) ErrorCount() int {
	n := 0
	for _, v := range r.Errors {
		n += v
	}
	return n
}

// Format writes a human-readable report, for `estca bench`.
func (r *Report) Format(w io.Writer) error {
	var b strings.Builder
	mode := r.Mode
	if r.Delivery != "" {
		mode += " (" + r.Delivery + " key)"
	}
	fmt.Fprintf(&b, "mode %s, %d workers, %s\n", mode, r.Workers, r.Elapsed.Round(time.Millisecond))
	fmt.Fprintf(&b, "ops %d (%.1f/s), errors %d", r.Ops, r.OpsPerSec, r.ErrorCount())
	if r.Mode != ModeCACerts {
		what := "certificates"
		if keygen(r.Mode) {
			what = "keys and certificates"
		}
		fmt.Fprintf(&b, ", %s verified %d of %d prepared CSRs", what, r.Verified, r.Prepared)
	}
	b.WriteString("\n")
	fmt.Fprintf(&b, "latency p50 %s p90 %s p99 %s max %s\n", roundDur(r.P50), roundDur(r.P90), roundDur(r.P99), roundDur(r.Max))
	keys := make([]string, 0, len(r.Errors))
	for k := range r.Errors {
		keys = append(keys, k)
	}
	sort.Strings(keys)
	for _, k := range keys {
		fmt.Fprintf(&b, "  error %-12s %d\n", k, r.Errors[k])
	}
	if r.Exhausted {
		b.WriteString("  stopped early: prepared CSRs used up (raise CSRs)\n")
	}
	if u := r.Server; u != nil && r.Ops > 0 {
		n := float64(r.Ops)
		fmt.Fprintf(&b, "server cpu per op %s (user %s, system %s; %.0f%% of one core), context switches per op %.1f\n",
			roundDur(r.CPUPerOp()), roundDur(u.User/time.Duration(r.Ops)), roundDur(u.System/time.Duration(r.Ops)),
			100*float64(u.User+u.System)/float64(r.Elapsed), float64(u.Voluntary+u.Involuntary)/n)
	}
	_, err := io.WriteString(w, b.String())
	return err
}

func roundDur(d time.Duration) string {
	if d < 10*time.Millisecond {
		return d.Round(time.Microsecond).String()
	}
	return d.Round(10 * time.Microsecond).String()
}

// preparedCSR is one prepared enrollment request.
type preparedCSR struct {
	der []byte
	pub []byte // SubjectPublicKeyInfo
}

// result is what a worker collected.
type result struct {
	latencies []time.Duration
	errors    map[string]int
	certs     []*x509.Certificate
	csrs      []int
	keys      []*client.KeygenResult // keygen modes
}

// Run runs a load test against an EST-coaps server: Workers clients for
// Duration, in Mode. It first fetches the CA certificates (to verify the issued
// certificates against the chain) and prepares the CSRs; then it runs the timed
// loop; then it verifies every issued certificate against its CSR's public key
// and the CA chain, counting mismatches as "verify" errors.
func Run(ctx context.Context, o Options) (*Report, error) {
	if !slices.Contains(Modes, o.Mode) {
		return nil, fmt.Errorf("bench: unknown mode %q (%s)", o.Mode, strings.Join(Modes, ", "))
	}
	kr := o.KeyRequest
	if kr == nil {
		kr = &cms.KeyRequest{}
	}
	if keygen(o.Mode) && (kr.Delivery == cms.DeliverPlain) != (o.DecryptKey == nil) {
		return nil, errors.New("bench: a DecryptKey goes with a KeyRequest for an encrypted key, and only then")
	}
	if o.Workers <= 0 {
		o.Workers = 1
	}
	if o.Duration <= 0 {
		o.Duration = 10 * time.Second
	}
	copts := o.Client
	if copts.Timeout <= 0 {
		copts.Timeout = DefaultTimeout
	}
	copts.MaxRetries, copts.MaxWait = -1, 0

	// The CA chain, for verification after the timed loop.
	c, err := client.Dial(ctx, copts)
	if err != nil {
		return nil, fmt.Errorf("bench: %w", err)
	}
	caCerts, _, err := c.CACerts(ctx, wire.FormatCertsOnly)
	_ = c.Close()
	if err != nil {
		return nil, fmt.Errorf("bench: fetching CA certificates: %w", err)
	}

	set := o.Prepared
	if set == nil && o.Mode != ModeCACerts {
		n := o.CSRs
		if n <= 0 {
			n = defaultCSRs(o.Duration, o.Workers)
		}
		if !keygen(o.Mode) {
			kr = nil
		}
		if set, err = PrepareCSRs(ctx, n, copts.Certificate, kr); err != nil {
			return nil, err
		}
	}
	if set == nil {
		set = &CSRSet{}
	}
	csrs := set.csrs

	var before Usage
	if o.ServerPID != 0 {
		if before, err = ProcessUsage(o.ServerPID); err != nil {
			return nil, fmt.Errorf("bench: server process: %w", err)
		}
	}
	var exhausted atomic.Bool
	loopCtx, cancel := context.WithTimeout(ctx, o.Duration)
	defer cancel()
	results := make([]result, o.Workers)
	var wg sync.WaitGroup
	start := time.Now()
	for w := range o.Workers {
		wg.Go(func() {
			results[w] = worker(loopCtx, ctx, o, copts, set, &exhausted)
		})
	}
	wg.Wait()
	elapsed := time.Since(start)

	rep := &Report{Mode: o.Mode, Workers: o.Workers, Prepared: len(csrs), Elapsed: elapsed,
		Errors: map[string]int{}, Exhausted: exhausted.Load()}
	if o.ServerPID != 0 {
		after, err := ProcessUsage(o.ServerPID)
		if err != nil {
			return nil, fmt.Errorf("bench: server process: %w", err)
		}
		u := after.Sub(before)
		rep.Server = &u
	}
	if keygen(o.Mode) {
		rep.Delivery = kr.Delivery.String()
	}
	var lat []time.Duration
	bad := 0
	verifier := newVerifier(caCerts)
	for _, r := range results {
		lat = append(lat, r.latencies...)
		for k, v := range r.errors {
			rep.Errors[k] += v
		}
		for i, cert := range r.certs {
			spki := csrs[r.csrs[i]].pub
			if o.FixedAnswer {
				spki = cert.RawSubjectPublicKeyInfo
			}
			if err := verifier.verify(cert, spki); err != nil {
				rep.Errors["verify"]++
				bad++
				continue
			}
			rep.Verified++
		}
		for _, k := range r.keys {
			sk, err := client.OpenServerKey(k, o.DecryptKey, cms.VerifyOptions{Roots: verifier.opts.Roots, Intermediates: caCerts})
			k.Zero()
			if err != nil {
				rep.Errors["verify"]++
				bad++
				continue
			}
			sk.Zero()
			rep.Verified++
		}
	}
	rep.Ops = len(lat) - bad
	if elapsed > 0 {
		rep.OpsPerSec = float64(rep.Ops) / elapsed.Seconds()
	}
	if len(lat) > 0 {
		slices.Sort(lat)
		rank := func(p float64) time.Duration {
			i := int(float64(len(lat))*p+0.999999) - 1
			return lat[max(0, min(i, len(lat)-1))]
		}
		rep.P50, rep.P90, rep.P99, rep.Max = rank(0.50), rank(0.90), rank(0.99), lat[len(lat)-1]
	}
	return rep, nil
}

// worker runs operations until loopCtx ends. Operations run under ctx
// (not loopCtx) with their own timeout so that the end of the run does not
// turn in-flight operations into errors.
func worker(loopCtx, ctx context.Context, o Options, copts client.Options, set *CSRSet, exhausted *atomic.Bool) result {
	csrs := set.csrs
	r := result{errors: map[string]int{}}
	var c *client.Conn
	defer func() {
		if c != nil {
			_ = c.Close()
		}
	}()
	for loopCtx.Err() == nil {
		idx := -1
		if o.Mode != ModeCACerts {
			idx = set.draw()
			if idx < 0 {
				exhausted.Store(true)
				return r
			}
		}
		opCtx, cancel := context.WithTimeout(ctx, copts.Timeout)
		t0 := time.Now()
		err := func() error {
			if c == nil {
				var err error
				if c, err = client.Dial(opCtx, copts); err != nil {
					return err
				}
			}
			switch o.Mode {
			case ModeCACerts:
				_, _, err := c.CACerts(opCtx, wire.FormatCertsOnly)
				return err
			case ModeKeygen, ModeKeygenSingle:
				res, err := c.ServerKeygen(opCtx, csrs[idx].der, o.Mode == ModeKeygenSingle)
				if err == nil {
					r.keys = append(r.keys, res)
				}
				return err
			default:
				cert, payload, err := c.Enroll(opCtx, csrs[idx].der, wire.FormatPKIXCert)
				if o.FixedAnswer && errors.Is(err, client.ErrCertMismatch) {
					// The one certificate such a server answers (287:
					// the DER certificate); verified after the loop.
					cert, err = x509.ParseCertificate(payload)
				}
				if err == nil {
					r.certs = append(r.certs, cert)
					r.csrs = append(r.csrs, idx)
				}
				return err
			}
		}()
		d := time.Since(t0)
		cancel()
		if o.Mode == ModeEnroll || (err != nil && c != nil && !isResponseError(err)) {
			// A fresh session per enrollment; or a broken session.
			if c != nil {
				_ = c.Close()
			}
			c = nil
		}
		if err != nil {
			r.errors[errorKind(err)]++
			continue
		}
		r.latencies = append(r.latencies, d)
	}
	return r
}

func isResponseError(err error) bool {
	var re *client.ResponseError
	return errors.As(err, &re)
}

// errorKind classifies an operation error for the report.
func errorKind(err error) string {
	var re *client.ResponseError
	switch {
	case errors.As(err, &re):
		return fmt.Sprintf("coap %d.%02d", re.Code>>5, re.Code&0x1f)
	case errors.Is(err, client.ErrHandshake):
		return "handshake"
	case errors.Is(err, client.ErrCertMismatch):
		return "verify"
	case errors.Is(err, context.DeadlineExceeded):
		return "timeout"
	default:
		return "other"
	}
}

// defaultCSRs is the number of CSRs Run prepares when Options.CSRs is 0:
// 400 per worker-second, at least 100, at most 100000.
func defaultCSRs(d time.Duration, workers int) int {
	return min(100000, max(100, int(d.Seconds()*400)*workers))
}

// CSRSet is a set of prepared CSRs (PrepareCSRs) that runs draw from in
// order, each CSR used once (Options.Prepared). It is safe for concurrent
// use.
type CSRSet struct {
	csrs []preparedCSR
	next atomic.Int64
	// wrap starts over at the first CSR once all are drawn (Replay).
	wrap bool
}

// Replay is a view of the same CSRs that draws them from the first again,
// and starts over when all are drawn: for a server that stores nothing
// (Options.FixedAnswer), so that it need not have CSRs of its own.
func (s *CSRSet) Replay() *CSRSet { return &CSRSet{csrs: s.csrs, wrap: true} }

// draw takes the index of the next CSR, -1 when none is left.
func (s *CSRSet) draw() int {
	i := int(s.next.Add(1) - 1)
	switch {
	case i < len(s.csrs):
		return i
	case s.wrap && len(s.csrs) > 0:
		return i % len(s.csrs)
	}
	return -1
}

// Len is the number of CSRs in the set.
func (s *CSRSet) Len() int { return len(s.csrs) }

// Left is the number of CSRs not drawn yet (of a Replay: all).
func (s *CSRSet) Left() int {
	if s.wrap {
		return len(s.csrs)
	}
	return max(0, len(s.csrs)-int(s.next.Load()))
}

// PrepareCSRs makes n CSRs, each with its own P-256 key, using the
// available CPUs. They carry the subject and subjectAltName of the client
// certificate: a CA that binds certificates to the requester's identity
// (estca's default) accepts them from an IDevID, and from an operational
// certificate they are renewals, which must keep both (RFC 7030 §4.2.2).
// With kr, the CSRs carry its server-side key generation attributes
// (cms.CreateCertificateRequest).
func PrepareCSRs(ctx context.Context, n int, client tls.Certificate, kr *cms.KeyRequest) (*CSRSet, error) {
	out := make([]preparedCSR, n)
	leaf := client.Leaf
	if leaf == nil && len(client.Certificate) > 0 {
		var err error
		if leaf, err = x509.ParseCertificate(client.Certificate[0]); err != nil {
			return nil, fmt.Errorf("bench: client certificate: %w", err)
		}
	}
	if leaf == nil {
		return nil, errors.New("bench: no client certificate")
	}
	tmpl := &x509.CertificateRequest{RawSubject: leaf.RawSubject}
	for _, e := range leaf.Extensions {
		if e.Id.Equal(oidSubjectAltName) {
			tmpl.ExtraExtensions = append(tmpl.ExtraExtensions, e)
		}
	}
	var next atomic.Int64
	var firstErr error
	var mu sync.Mutex
	var wg sync.WaitGroup
	for range runtime.GOMAXPROCS(0) {
		wg.Go(func() {
			for {
				i := int(next.Add(1) - 1)
				if i >= n || ctx.Err() != nil {
					return
				}
				key, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
				if err == nil {
					var der []byte
					if kr != nil {
						der, err = cms.CreateCertificateRequest(rand.Reader, tmpl, key, kr)
					} else {
						der, err = x509.CreateCertificateRequest(rand.Reader, tmpl, key)
					}
					if err == nil {
						var csr *x509.CertificateRequest
						if csr, err = x509.ParseCertificateRequest(der); err == nil {
							out[i] = preparedCSR{der: der, pub: csr.RawSubjectPublicKeyInfo}
							continue
						}
					}
				}
				mu.Lock()
				firstErr = keepFirst(firstErr, err)
				mu.Unlock()
				return
			}
		})
	}
	wg.Wait()
	if firstErr != nil {
		return nil, fmt.Errorf("bench: preparing CSRs: %w", firstErr)
	}
	if err := ctx.Err(); err != nil {
		return nil, fmt.Errorf("bench: preparing CSRs: %w", err)
	}
	return &CSRSet{csrs: out}, nil
}

var oidSubjectAltName = asn1.ObjectIdentifier{2, 5, 29, 17}

func keepFirst(have, err error) error {
	if have != nil {
		return have
	}
	return err
}

// verifier checks issued certificates against the /crts chain.
type verifier struct {
	opts x509.VerifyOptions
}

func newVerifier(caCerts []*x509.Certificate) *verifier {
	roots, inter := x509.NewCertPool(), x509.NewCertPool()
	for _, c := range caCerts {
		if string(c.RawSubject) == string(c.RawIssuer) && c.CheckSignatureFrom(c) == nil {
			roots.AddCert(c)
		} else {
			inter.AddCert(c)
		}
	}
	return &verifier{opts: x509.VerifyOptions{
		Roots: roots, Intermediates: inter,
		KeyUsages: []x509.ExtKeyUsage{x509.ExtKeyUsageAny},
	}}
}

// verify checks that cert carries spki and chains to the CA.
func (v *verifier) verify(cert *x509.Certificate, spki []byte) error {
	if string(cert.RawSubjectPublicKeyInfo) != string(spki) {
		return client.ErrCertMismatch
	}
	if _, err := cert.Verify(v.opts); err != nil {
		return fmt.Errorf("bench: issued certificate does not verify: %w", err)
	}
	return nil
}
