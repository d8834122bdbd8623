package main

import (
	"context"
	"log/slog"
	"time"

	"github.com/prometheus/client_golang/prometheus"

	"github.com/estca/estca/hsm"
)

// hsmCheckInterval is how often `serve` probes the token (hsm.Token.Check),
// so that an outage shows in the log and in estca_hsm_up without waiting
// for a request.
const hsmCheckInterval = 5 * time.Second

// failureBadSignature is the estca_hsm_failures_total reason of a signature
// the HSM returned that did not verify (ca.ErrBadSignature).
const failureBadSignature = "bad-signature"

// hsmWatch turns the token's events into log lines and metrics: one line
// when the token goes down and one when it is back (never one per refused
// request), estca_hsm_up, and failure and recovery counters. Package hsm
// reports, it does not log or count.
type hsmWatch struct {
	log        *slog.Logger
	up         prometheus.Gauge
	failures   *prometheus.CounterVec
	recoveries *prometheus.CounterVec
}

// newHSMWatch creates the HSM metrics in reg; estca_hsm_up starts at 1 (the
// token was just opened).
func newHSMWatch(log *slog.Logger, reg prometheus.Registerer) *hsmWatch {
	w := &hsmWatch{
		log: log,
		up: prometheus.NewGauge(prometheus.GaugeOpts{
			Namespace: "estca", Subsystem: "hsm", Name: "up",
			Help: "1 while the HSM token is available, 0 while it is down and being re-initialised.",
		}),
		failures: prometheus.NewCounterVec(prometheus.CounterOpts{
			Namespace: "estca", Subsystem: "hsm", Name: "failures_total",
			Help: "HSM operations that failed, by reason: unavailable (token down), key-not-found, pin, request (e.g. key exists), device, bad-signature (a signature that did not verify).",
		}, []string{"reason"}),
		recoveries: prometheus.NewCounterVec(prometheus.CounterOpts{
			Namespace: "estca", Subsystem: "hsm", Name: "recoveries_total",
			Help: "Lost HSM sessions recovered, by kind: login (new login session), reinit (module finalised and initialised again).",
		}, []string{"kind"}),
	}
	w.up.Set(1)
	for _, r := range []string{hsm.FailureUnavailable, hsm.FailureKeyNotFound, hsm.FailurePIN, hsm.FailureRequest, hsm.FailureDevice, failureBadSignature} {
		w.failures.WithLabelValues(r)
	}
	for _, r := range []string{hsm.RecoveryLogin, hsm.RecoveryReinit} {
		w.recoveries.WithLabelValues(r)
	}
	reg.MustRegister(w.up, w.failures, w.recoveries)
	return w
}

// observe is the hsm.Options.Observer of `serve`.
func (w *hsmWatch) observe(e hsm.Event) {
	switch e.Kind {
	case hsm.EventDown:
		w.up.Set(0)
		w.log.Error("hsm token unavailable", "error", e.Err,
			"effect", "enrollments answer 5.03, new DTLS handshakes are refused; re-initialising in the background")
	case hsm.EventUp:
		w.up.Set(1)
		w.log.Info("hsm token available again", "outage", e.Outage.Round(time.Millisecond))
	case hsm.EventRecovered:
		w.recoveries.WithLabelValues(e.Reason).Inc()
	case hsm.EventFailure:
		w.failures.WithLabelValues(e.Reason).Inc()
	}
}

// badSignature is the ca.VerifySigner hook: it counts signatures that did not
// verify. Whoever got the error logs it (est for requests and handshakes,
// serve for audit heads) and the authority audits it.
func (w *hsmWatch) badSignature(error) { w.failures.WithLabelValues(failureBadSignature).Inc() }

// probe runs tok.Check every interval until ctx ends. Its findings reach the
// log and the metrics through observe.
func probe(ctx context.Context, tok *hsm.Token, interval time.Duration) {
	t := time.NewTicker(interval)
	defer t.Stop()
	for {
		select {
		case <-ctx.Done():
			return
		case <-t.C:
			_ = tok.Check()
		}
	}
}
