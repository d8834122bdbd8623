package main

import (
	"time"

	"github.com/prometheus/client_golang/prometheus"
)

// applianceMetrics are the metrics `estca serve` feeds on behalf of the
// components it wires together that do not import Prometheus (hsm, store and
// policy never do): the latency of HSM operations, measured around the
// signers it hands to the authority, and the number of requests waiting for
// approval, read from the store. They are registered next to the EST front
// end's metrics (est.Metrics) and served on the same endpoint; the names are
// those of before the split:
//
//	estca_hsm_operation_seconds{op}   histogram, op "sign"
//	estca_ca_pending_requests         gauge, refreshed every audit_sign_interval
//
// The methods are safe for concurrent use and no-ops on a nil receiver.
type applianceMetrics struct {
	hsm     *prometheus.HistogramVec
	pending prometheus.Gauge
}

// newApplianceMetrics creates the metrics and registers them in reg.
func newApplianceMetrics(reg prometheus.Registerer) (*applianceMetrics, error) {
	m := &applianceMetrics{
		hsm: prometheus.NewHistogramVec(prometheus.HistogramOpts{
			Namespace: "estca", Subsystem: "hsm", Name: "operation_seconds",
			Help:    "Latency of HSM operations by operation.",
			Buckets: prometheus.ExponentialBuckets(0.00005, 2, 14),
		}, []string{"op"}),
		pending: prometheus.NewGauge(prometheus.GaugeOpts{
			Namespace: "estca", Subsystem: "ca", Name: "pending_requests",
			Help: "Enrollment requests waiting for approval.",
		}),
	}
	for _, c := range []prometheus.Collector{m.hsm, m.pending} {
		if err := reg.Register(c); err != nil {
			return nil, err
		}
	}
	return m, nil
}

// observeHSM records the latency of one HSM operation (e.g. "sign").
func (m *applianceMetrics) observeHSM(op string, d time.Duration) {
	if m != nil {
		m.hsm.WithLabelValues(op).Observe(d.Seconds())
	}
}

// setPending sets the number of requests waiting for approval.
func (m *applianceMetrics) setPending(n int) {
	if m != nil {
		m.pending.Set(float64(n))
	}
}
