package main

import (
	"crypto/x509"
	"errors"
	"os"
	"time"

	"github.com/prometheus/client_golang/prometheus"

	"github.com/estca/estca/store"
)

// applianceMetrics are the metrics `estca serve` feeds on behalf of the
// components it wires together that do not import Prometheus (hsm, store and
// policy never do): the latency of HSM operations, measured around the
// signers it hands to the authority, and the number of requests waiting for
// approval, read from the store. They are registered next to the EST front
// end's metrics (est.Metrics) and served on the same endpoint:
//
//	estca_hsm_operation_seconds{op}   histogram, op "sign"
//	estca_ca_pending_requests         gauge, refreshed every audit_sign_interval
//	estca_store_commit_seconds        histogram of durable commits (store.Options.OnCommit)
//	estca_store_commit_failures_total counter of commits that failed (disk full, I/O error)
//
// and, once the authority is open (watchAppliance), gauges computed at
// each scrape:
//
//	estca_certificate_expiry_seconds{certificate}  seconds until notAfter of the
//	                                    root, issuing, server and keypkg certificates in use
//	estca_audit_head_age_seconds        seconds since the newest signed audit head
//	estca_store_size_bytes              size of the store file
//
// The methods are safe for concurrent use and no-ops on a nil receiver.
type applianceMetrics struct {
	reg            prometheus.Registerer
	hsm            *prometheus.HistogramVec
	pending        prometheus.Gauge
	commits        prometheus.Histogram
	commitFailures prometheus.Counter
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
		commits: prometheus.NewHistogram(prometheus.HistogramOpts{
			Namespace: "estca", Subsystem: "store", Name: "commit_seconds",
			Help:    "Duration of the store's durable commits (one transaction with its fsync, for a batch of writes).",
			Buckets: prometheus.ExponentialBuckets(0.0001, 2, 14),
		}),
		commitFailures: prometheus.NewCounter(prometheus.CounterOpts{
			Namespace: "estca", Subsystem: "store", Name: "commit_failures_total",
			Help: "Store commits that failed (disk full, I/O error); devices get 5.03 meanwhile.",
		}),
		reg: reg,
	}
	for _, c := range []prometheus.Collector{m.hsm, m.pending, m.commits, m.commitFailures} {
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

// observeCommit is the store.Options.OnCommit hook.
func (m *applianceMetrics) observeCommit(s store.CommitStat) {
	if m == nil {
		return
	}
	if s.Err != nil {
		m.commitFailures.Inc()
		return
	}
	m.commits.Observe(s.Duration.Seconds())
}

// watchAppliance registers the gauges computed at each scrape: the expiry
// of the certificates in use (by name: root, issuing, server), the age of
// the newest signed audit head and the size of the store file.
func (m *applianceMetrics) watchAppliance(db *store.DB, certs map[string]*x509.Certificate) error {
	if m == nil {
		return nil
	}
	var cs []prometheus.Collector
	for name, c := range certs {
		notAfter := c.NotAfter
		cs = append(cs, prometheus.NewGaugeFunc(prometheus.GaugeOpts{
			Namespace: "estca", Name: "certificate_expiry_seconds",
			Help:        "Seconds until the notAfter of a certificate in use (negative once expired): root, issuing (the issuing CA), server (the DTLS server certificate), keypkg (the key-package signer of server-side key generation).",
			ConstLabels: prometheus.Labels{"certificate": name},
		}, func() float64 { return time.Until(notAfter).Seconds() }))
	}
	cs = append(cs,
		prometheus.NewGaugeFunc(prometheus.GaugeOpts{
			Namespace: "estca", Subsystem: "audit", Name: "head_age_seconds",
			Help: "Seconds since the newest signed audit head (signed every store.audit_sign_interval when records were added).",
		}, func() float64 {
			h, err := db.NewestHead()
			if err != nil {
				return -1
			}
			return time.Since(h.Time).Seconds()
		}),
		prometheus.NewGaugeFunc(prometheus.GaugeOpts{
			Namespace: "estca", Subsystem: "store", Name: "size_bytes",
			Help: "Size of the store file in bytes.",
		}, func() float64 {
			fi, err := os.Stat(db.Path())
			if err != nil {
				return -1
			}
			return float64(fi.Size())
		}),
	)
	var errs []error
	for _, c := range cs {
		errs = append(errs, m.reg.Register(c))
	}
	return errors.Join(errs...)
}
