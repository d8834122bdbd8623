package est

import (
	"net/http"
	"strconv"
	"time"

	"github.com/plgd-dev/go-coap/v3/message/codes"
	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/promhttp"
)

// Metrics are the EST front end's Prometheus metrics, in their own registry
// (no global registration): requests by resource and code, refused
// handshakes by reason, the latency of the authority's Enroll as the front
// end sees it, and open sessions. Metrics of other components (HSM latency,
// pending approvals) are not here: the program that wires them registers its
// own collectors in Registry. The methods are safe for concurrent use and
// are no-ops on a nil *Metrics.
//
//	estca_est_requests_total{resource,code}      counter
//	estca_est_handshake_failures_total{reason}   counter
//	estca_est_issuance_seconds{outcome}          histogram
//	estca_est_sessions_active                    gauge
//	estca_est_sessions_closed_total{reason}      counter (requester refused by the re-check)
//	estca_est_hello_verify_total                 counter
//	estca_est_limit_refusals_total{limit}        counter
//	estca_est_audit_refusals_total{outcome}      counter
//	estca_est_handshakes_active                  gauge (of a serving Server)
//	estca_est_blockwise_state{kind}              gauge (of a serving Server)
//
// sessions_active counts peers that returned a valid cookie and were
// admitted (handshaking or established); hello_verify_total counts the
// stateless HelloVerifyRequests sent before that. limit_refusals_total
// counts requests refused by a block-wise limit (limit = transfers-session,
// transfers-identity, transfers-total); handshakes refused by a session,
// handshake or rate limit are in handshake_failures_total. audit_refusals
// counts refused requests by how they reached the audit log: "written" (a
// record of its own) or "aggregated" (counted into the record of its
// identity and reason for the interval).
type Metrics struct {
	reg               *prometheus.Registry
	requests          *prometheus.CounterVec
	handshakeFailures *prometheus.CounterVec
	issuance          *prometheus.HistogramVec
	sessions          prometheus.Gauge
	closed            *prometheus.CounterVec
	helloVerifies     prometheus.Counter
	limitRefusals     *prometheus.CounterVec
	auditRefusals     *prometheus.CounterVec
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
			Help: "DTLS sessions currently open (admitted after the cookie exchange: handshaking or established).",
		}),
		closed: prometheus.NewCounterVec(prometheus.CounterOpts{
			Namespace: "estca", Subsystem: "est", Name: "sessions_closed_total",
			Help: "DTLS sessions the server closed because their requester failed the re-check, by reason.",
		}, []string{"reason"}),
	}
	m.helloVerifies = prometheus.NewCounter(prometheus.CounterOpts{
		Namespace: "estca", Subsystem: "est", Name: "hello_verify_total",
		Help: "Stateless HelloVerifyRequests sent (ClientHellos without a valid cookie).",
	})
	m.limitRefusals = prometheus.NewCounterVec(prometheus.CounterOpts{
		Namespace: "estca", Subsystem: "est", Name: "limit_refusals_total",
		Help: "Requests refused by a block-wise limit, by limit.",
	}, []string{"limit"})
	m.auditRefusals = prometheus.NewCounterVec(prometheus.CounterOpts{
		Namespace: "estca", Subsystem: "est", Name: "audit_refusals_total",
		Help: "Refused requests of authenticated peers by how they were audited (written, aggregated).",
	}, []string{"outcome"})
	m.reg.MustRegister(m.requests, m.handshakeFailures, m.issuance, m.sessions,
		m.closed, m.helloVerifies, m.limitRefusals, m.auditRefusals)
	return m
}

// serverGauges registers the gauges that read a serving Server's state. A
// Metrics serves one Server; a second registration is ignored.
func (m *Metrics) serverGauges(s *Server) {
	if m == nil {
		return
	}
	_ = m.reg.Register(prometheus.NewGaugeFunc(prometheus.GaugeOpts{
		Namespace: "estca", Subsystem: "est", Name: "handshakes_active",
		Help: "DTLS handshakes in progress after the cookie exchange.",
	}, func() float64 { _, h := s.admit.counts(); return float64(h) }))
	bs := prometheus.NewDesc("estca_est_blockwise_state", "Block-wise state held: transfers, stored responses, buffered bytes.", []string{"kind"}, nil)
	_ = m.reg.Register(blockCollector{desc: bs, s: s})
}

type blockCollector struct {
	desc *prometheus.Desc
	s    *Server
}

func (c blockCollector) Describe(ch chan<- *prometheus.Desc) { ch <- c.desc }

func (c blockCollector) Collect(ch chan<- prometheus.Metric) {
	st := c.s.blocks.Stats()
	ch <- prometheus.MustNewConstMetric(c.desc, prometheus.GaugeValue, float64(st.Transfers), "transfers")
	ch <- prometheus.MustNewConstMetric(c.desc, prometheus.GaugeValue, float64(st.Responses), "responses")
	ch <- prometheus.MustNewConstMetric(c.desc, prometheus.GaugeValue, float64(st.Buffered), "bytes")
}

func (m *Metrics) helloVerify() {
	if m != nil {
		m.helloVerifies.Inc()
	}
}

func (m *Metrics) limitRefusal(limit string) {
	if m != nil {
		m.limitRefusals.WithLabelValues(limit).Inc()
	}
}

func (m *Metrics) auditRefusal(outcome string) {
	if m != nil {
		m.auditRefusals.WithLabelValues(outcome).Inc()
	}
}

// Registry returns the registry holding the metrics, for the program to add
// the collectors of the other components it serves on the same endpoint.
func (m *Metrics) Registry() *prometheus.Registry { return m.reg }

// Handler serves the metrics in the Prometheus exposition format.
func (m *Metrics) Handler() http.Handler {
	return promhttp.HandlerFor(m.reg, promhttp.HandlerOpts{})
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

func (m *Metrics) sessionClosed(reason string) {
	if m != nil {
		m.closed.WithLabelValues(reason).Inc()
	}
}

func (m *Metrics) sessionDelta(n float64) {
	if m != nil {
		m.sessions.Add(n)
	}
}
