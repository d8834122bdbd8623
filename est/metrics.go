package est

import (
	"net/http"
	"strconv"
	"time"

	"github.com/plgd-dev/go-coap/v3/message/codes"
	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/promhttp"
)

// Metrics are the server's Prometheus metrics, in their own registry (no
// global registration). The methods are safe for concurrent use and are
// no-ops on a nil *Metrics.
type Metrics struct {
	reg               *prometheus.Registry
	requests          *prometheus.CounterVec
	handshakeFailures *prometheus.CounterVec
	issuance          *prometheus.HistogramVec
	sessions          prometheus.Gauge
	hsm               *prometheus.HistogramVec
	pending           prometheus.Gauge
}

// NewMetrics creates the metrics and registers them in a new registry.
func NewMetrics() *Metrics {
	m := &Metrics{
		reg: prometheus.NewRegistry(),
		requests: prometheus.NewCounterVec(prometheus.CounterOpts{
			Namespace: "estca", Subsystem: "est", Name: "requests_total",
			Help: "EST-coaps requests by resource and CoAP response code.",
		}, []string{"resource", "code"}),
		handshakeFailures: prometheus.NewCounterVec(prometheus.CounterOpts{
			Namespace: "estca", Subsystem: "est", Name: "handshake_failures_total",
			Help: "Failed or refused DTLS handshakes by reason.",
		}, []string{"reason"}),
		issuance: prometheus.NewHistogramVec(prometheus.HistogramOpts{
			Namespace: "estca", Subsystem: "est", Name: "issuance_seconds",
			Help:    "Latency of Authority.Enroll by outcome.",
			Buckets: prometheus.ExponentialBuckets(0.0005, 2, 14),
		}, []string{"outcome"}),
		sessions: prometheus.NewGauge(prometheus.GaugeOpts{
			Namespace: "estca", Subsystem: "est", Name: "sessions_active",
			Help: "DTLS sessions currently open (handshaking or established).",
		}),
		hsm: prometheus.NewHistogramVec(prometheus.HistogramOpts{
			Namespace: "estca", Subsystem: "hsm", Name: "operation_seconds",
			Help:    "Latency of HSM operations, fed by the caller.",
			Buckets: prometheus.ExponentialBuckets(0.00005, 2, 14),
		}, []string{"op"}),
		pending: prometheus.NewGauge(prometheus.GaugeOpts{
			Namespace: "estca", Subsystem: "ca", Name: "pending_requests",
			Help: "Enrollment requests waiting for approval, fed by the caller.",
		}),
	}
	m.reg.MustRegister(m.requests, m.handshakeFailures, m.issuance, m.sessions, m.hsm, m.pending)
	return m
}

// Registry returns the registry holding the metrics, e.g. to add collectors.
func (m *Metrics) Registry() *prometheus.Registry { return m.reg }

// Handler serves the metrics in the Prometheus exposition format.
func (m *Metrics) Handler() http.Handler {
	return promhttp.HandlerFor(m.reg, promhttp.HandlerOpts{})
}

// ObserveHSM records the latency of one HSM operation (e.g. "sign").
func (m *Metrics) ObserveHSM(op string, d time.Duration) {
	if m != nil {
		m.hsm.WithLabelValues(op).Observe(d.Seconds())
	}
}

// SetPending sets the number of requests waiting for approval.
func (m *Metrics) SetPending(n int) {
	if m != nil {
		m.pending.Set(float64(n))
	}
}

// codeString renders a CoAP code as "c.dd" (RFC 7252 §3).
func codeString(c codes.Code) string {
	d := int(c & 0x1f)
	s := strconv.Itoa(int(c>>5)) + "."
	if d < 10 {
		s += "0"
	}
	return s + strconv.Itoa(d)
}

func (m *Metrics) request(resource string, c codes.Code) {
	if m != nil {
		m.requests.WithLabelValues(resource, codeString(c)).Inc()
	}
}

func (m *Metrics) handshakeFailure(reason string) {
	if m != nil {
		m.handshakeFailures.WithLabelValues(reason).Inc()
	}
}

func (m *Metrics) observeIssuance(d time.Duration, err error) {
	if m == nil {
		return
	}
	outcome := "issued"
	if err != nil {
		outcome = KindOf(err).String()
	}
	m.issuance.WithLabelValues(outcome).Observe(d.Seconds())
}

func (m *Metrics) sessionDelta(n float64) {
	if m != nil {
		m.sessions.Add(n)
	}
}
