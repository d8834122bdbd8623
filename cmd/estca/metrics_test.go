package main

import (
	"context"
	"crypto/x509"
	"crypto/x509/pkix"
	"io"
	"math"
	"net/http"
	"net/http/httptest"
	"path/filepath"
	"regexp"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/estca/estca/est"
	"github.com/estca/estca/est/client"
	"github.com/estca/estca/est/wire"
	"github.com/estca/estca/policy/pkitest"
)

// TestApplianceMetrics: the appliance's metrics register next to the EST
// front end's under their names, a second registration fails rather than
// double counting, and a nil set is a no-op.
func TestApplianceMetrics(t *testing.T) {
	t.Parallel()
	front := est.NewMetrics()
	m, err := newApplianceMetrics(front.Registry())
	if err != nil {
		t.Fatal(err)
	}
	m.observeHSM("sign", 3*time.Millisecond)
	m.setPending(4)
	rec := httptest.NewRecorder()
	front.Handler().ServeHTTP(rec, httptest.NewRequest("GET", "/metrics", nil))
	for _, want := range []string{`estca_hsm_operation_seconds_count{op="sign"} 1`, "estca_ca_pending_requests 4", "estca_est_sessions_active 0"} {
		if !strings.Contains(rec.Body.String(), want) {
			t.Errorf("metrics lack %q:\n%s", want, rec.Body.String())
		}
	}
	if _, err := newApplianceMetrics(front.Registry()); err == nil {
		t.Error("registered twice in one registry")
	}
	var none *applianceMetrics
	none.observeHSM("sign", time.Second)
	none.setPending(1)
}

var metricsLine = regexp.MustCompile(`msg="metrics listening" addr=(\S+)`)

// TestServeMetrics: the metrics endpoint of a real `estca serve` carries the
// front end's request counts and the HSM signing latency of a real
// enrollment, and the pending-approval gauge.
func TestServeMetrics(t *testing.T) {
	dir, cfg := demoAppliance(t, false)
	srv := startServer(t, cfg)
	var addr string
	for deadline := time.Now().Add(10 * time.Second); addr == "" && time.Now().Before(deadline); {
		if m := metricsLine.FindStringSubmatch(srv.logs()); m != nil {
			addr = m[1]
		} else {
			time.Sleep(20 * time.Millisecond)
		}
	}
	if addr == "" {
		t.Fatalf("no metrics listener in the log:\n%s", srv.logs())
	}

	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	c, err := client.Dial(ctx, deviceOptions(t, dir, srv.addr, nil))
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	csr := pkitest.CSR(t, pkitest.Key(t), pkix.Name{}) // the device's identity
	var cert *x509.Certificate
	if cert, _, err = c.Enroll(ctx, csr, wire.FormatPKIXCert); err != nil || cert == nil {
		t.Fatalf("enroll: %v\n%s", err, srv.logs())
	}

	// The request counter is incremented after the answer is sent: poll.
	wants := []string{`estca_est_requests_total{code="2.04",resource="sen"} 1`, `estca_hsm_operation_seconds_count{op="sign"}`,
		"estca_ca_pending_requests 0", `estca_certificate_expiry_seconds{certificate="issuing"} `,
		`estca_certificate_expiry_seconds{certificate="server"} `, `estca_certificate_expiry_seconds{certificate="root"} `,
		`estca_certificate_expiry_seconds{certificate="keypkg"} `,
		"estca_audit_head_age_seconds ", "estca_store_size_bytes ", "estca_store_commit_seconds_count ",
		"estca_store_commit_failures_total 0", "estca_hsm_up 1"}
	var body string
	for deadline := time.Now().Add(5 * time.Second); time.Now().Before(deadline); time.Sleep(50 * time.Millisecond) {
		body = scrapeMetrics(t, addr)
		if missing(body, wants) == "" {
			break
		}
	}
	if m := missing(body, wants); m != "" {
		t.Fatalf("metrics lack %q:\n%s", m, body)
	}
	if strings.Contains(body, `estca_hsm_operation_seconds_count{op="sign"} 0`) {
		t.Fatalf("no HSM signature counted for an issued certificate:\n%s", body)
	}
	// The gauges say what the appliance holds: the server certificate's
	// expiry in seconds, a store file of some size, commits counted.
	server, err := readCert(filepath.Join(dir, "ca", "server.pem"))
	if err != nil {
		t.Fatal(err)
	}
	if v := metricIn(t, body, `estca_certificate_expiry_seconds{certificate="server"}`); math.Abs(v-time.Until(server.NotAfter).Seconds()) > 600 {
		t.Errorf("server certificate expiry %v s, want about %v", v, time.Until(server.NotAfter).Seconds())
	}
	if v := metricIn(t, body, "estca_store_size_bytes"); v < 32768 {
		t.Errorf("store size %v", v)
	}
	if v := metricIn(t, body, "estca_store_commit_seconds_count"); v < 2 {
		t.Errorf("%v store commits counted; start and an issuance commit at least", v)
	}
	if v := metricIn(t, body, "estca_audit_head_age_seconds"); v < 0 || v > 3600 {
		t.Errorf("audit head age %v", v)
	}
}

// missing returns the first of wants that body lacks, or "".
func missing(body string, wants []string) string {
	for _, w := range wants {
		if !strings.Contains(body, w) {
			return w
		}
	}
	return ""
}

// scrapeMetrics returns the text of the metrics listener at addr.
func scrapeMetrics(t *testing.T, addr string) string {
	t.Helper()
	resp, err := http.Get("http://" + addr + "/metrics")
	if err != nil {
		t.Fatalf("scrape metrics: %v", err)
	}
	defer resp.Body.Close()
	b, err := io.ReadAll(resp.Body)
	if err != nil {
		t.Fatalf("scrape metrics: %v", err)
	}
	return string(b)
}

// metricIn returns the value of the sample whose name and labels are
// exactly series in a scrape (0 if absent: a vector without that series
// yet).
func metricIn(t *testing.T, body, series string) float64 {
	t.Helper()
	for _, l := range strings.Split(body, "\n") {
		if v, ok := strings.CutPrefix(l, series+" "); ok {
			f, err := strconv.ParseFloat(v, 64)
			if err != nil {
				t.Fatalf("%s: %v", l, err)
			}
			return f
		}
	}
	return 0
}
