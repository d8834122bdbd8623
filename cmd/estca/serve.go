package main

import (
	"context"
	"crypto"
	"crypto/tls"
	"crypto/x509"
	"errors"
	"flag"
	"fmt"
	"io"
	"net"
	"net/http"
	"os"
	"os/signal"
	"path/filepath"
	"syscall"
	"time"

	"github.com/pion/dtls/v3"

	"github.com/estca/estca/ca"
	"github.com/estca/estca/est"
	"github.com/estca/estca/hsm"
	"github.com/estca/estca/store"
)

func serveCommand() *command {
	var listen string
	return &command{
		name: "serve", args: "[--listen ADDR]",
		summary: "Run the appliance: EST-coaps server, metrics listener and admin socket.\n\n" +
			"EST-coaps over DTLS 1.2 on UDP, Prometheus metrics, the admin socket of the query commands.\n" +
			"SIGINT/SIGTERM stop it cleanly; SIGHUP re-reads the configuration (as `estca reload` does).",
		flags: func(fs *flag.FlagSet) {
			fs.StringVar(&listen, "listen", "", "UDP `ADDR` to serve EST-coaps on (default: est.listen, \":5684\")")
		},
		run: func(ctx context.Context, a *app, fs *flag.FlagSet, args []string) error {
			cfg, err := a.config()
			if err != nil {
				return err
			}
			if listen != "" {
				cfg.EST.Listen = listen
			}
			return serve(ctx, a, cfg)
		},
	}
}

// timedSigner reports the latency of every HSM signature to the metrics.
type timedSigner struct {
	crypto.Signer
	m *applianceMetrics
}

func (s timedSigner) Sign(r io.Reader, digest []byte, o crypto.SignerOpts) ([]byte, error) {
	start := time.Now()
	sig, err := s.Signer.Sign(r, digest, o)
	s.m.observeHSM("sign", time.Since(start))
	return sig, err
}

func serve(ctx context.Context, a *app, cfg *Config) error {
	// SIGHUP is what systemctl reload sends (ExecReload in the unit): it
	// must never end the server, also not while it starts, so it is caught
	// first; one that comes while starting is kept and reloads the
	// configuration (running.reload) once the server runs.
	hup := make(chan os.Signal, 1)
	signal.Notify(hup, syscall.SIGHUP)
	defer signal.Stop(hup)
	metrics := est.NewMetrics()
	appMetrics, err := newApplianceMetrics(metrics.Registry())
	if err != nil {
		return err
	}
	watch := newHSMWatch(a.log, metrics.Registry())
	x, err := openAuthority(cfg, authorityOptions{
		wrap:         func(s crypto.Signer) crypto.Signer { return timedSigner{s, appMetrics} },
		observe:      watch.observe,
		badSignature: watch.badSignature,
		onCommit:     appMetrics.observeCommit,
	})
	if err != nil {
		return err
	}
	defer x.Close()
	run := &running{configPath: a.configPath, cfg: cfg, x: x, log: a.log}
	// A CRL at once (the HSM may be down: the schedule retries).
	_ = run.publishCRL("start")
	if left := time.Until(x.issuing.NotAfter); left < 30*24*time.Hour {
		a.log.Warn("issuing CA expires soon: enrollment stops an hour before", "not_after", x.issuing.NotAfter, "left", left.Round(time.Hour))
	}
	keygen, keys, signerCert, err := setupKeygen(cfg, x, a.log, func(s crypto.Signer) crypto.Signer { return timedSigner{s, appMetrics} })
	if err != nil {
		return err
	}
	serverKey, err := x.token.FindKey(cfg.CA.ServerKey)
	if err != nil {
		return fmt.Errorf("server key %q: %w", cfg.CA.ServerKey, err)
	}
	chain, err := readCerts(cfg.path(cfg.CA.ServerCert))
	if err != nil {
		return fmt.Errorf("server certificate: %w", err)
	}
	if err := appMetrics.watchAppliance(x.db, map[string]*x509.Certificate{
		"root": x.root, "issuing": x.issuing, "server": chain[0], "keypkg": signerCert}); err != nil {
		return err
	}
	if left := time.Until(chain[0].NotAfter); left < 30*24*time.Hour {
		a.log.Warn("server certificate expires soon: renew it with estca ca reissue-server", "not_after", chain[0].NotAfter, "left", left.Round(time.Hour))
	}
	// Handshake and audit head signatures are verified before they are used,
	// like the issuing key's (ca.VerifySigner).
	cert := tls.Certificate{PrivateKey: ca.VerifySigner(serverKey, chain[0].PublicKey, watch.badSignature), Leaf: chain[0]}
	for _, c := range chain {
		cert.Certificate = append(cert.Certificate, c.Raw)
	}
	var suites []dtls.CipherSuiteID
	for _, s := range cfg.EST.CipherSuites {
		suites = append(suites, cipherSuites[s])
	}
	ems := map[string]dtls.ExtendedMasterSecretType{
		"request": dtls.RequestExtendedMasterSecret,
		"require": dtls.RequireExtendedMasterSecret,
		"disable": dtls.DisableExtendedMasterSecret,
	}[cfg.EST.ExtendedMasterSecret]

	srv, err := est.NewServer(est.Options{
		Addr:                   cfg.EST.Listen,
		Certificate:            cert,
		Authority:              x.ca,
		Keygen:                 keygen,
		CipherSuites:           suites,
		ExtendedMasterSecret:   ems,
		MaxSessions:            cfg.EST.MaxSessions,
		IdleTimeout:            cfg.EST.IdleTimeout.D(),
		HandshakeRate:          *cfg.EST.HandshakeRate,
		ConnectionID:           true,
		BlockMaxBody:           cfg.EST.MaxBody,
		MTU:                    cfg.EST.DTLSMTU,
		MaxMessageSize:         cfg.EST.MaxMessageSize,
		MaxSessionsPerPrefix:   cfg.EST.MaxSessionsPerPrefix,
		MaxSessionsPerIdentity: cfg.EST.MaxSessionsPerIdentity,
		MaxHandshakes:          cfg.EST.MaxHandshakes,
		MaxHandshakesPerPrefix: cfg.EST.MaxHandshakesPerPrefix,
		HandshakeBurst:         cfg.EST.HandshakeBurst,
		HandshakeMaxWait:       cfg.EST.HandshakeMaxWait.D(),
		CookieRotation:         cfg.EST.CookieRotation.D(),
		Block: est.BlockLimits{
			PerSession:  cfg.EST.BlockTransfersSession,
			PerIdentity: cfg.EST.BlockTransfersIdentity,
			Total:       cfg.EST.BlockTransfersTotal,
		},
		ResponseCache: est.ResponseCacheLimits{
			Entries: cfg.EST.ResponseCacheEntries,
			Bytes:   cfg.EST.ResponseCacheBytes,
		},
		HandshakeAuditInterval: cfg.EST.AuditInterval.D(),
		Logger:                 a.log,
		Metrics:                metrics,
	})
	if err != nil {
		return err
	}
	if err := srv.Listen(); err != nil {
		return err
	}
	run.srv = srv

	admin, err := listenAdmin(cfg.path(cfg.EST.AdminSocket))
	if err != nil {
		return err
	}
	adminMux := http.NewServeMux()
	adminMux.Handle("/v1/keys/", keysAdminHandler(keys))
	adminMux.Handle("/", adminHandler(x.db, x.auditPub))
	registerPolicyAdmin(adminMux, run)
	adminSrv := &http.Server{Handler: adminMux, ReadHeaderTimeout: 10 * time.Second}
	go adminSrv.Serve(admin)
	defer func() {
		adminSrv.Close()
		os.Remove(cfg.path(cfg.EST.AdminSocket))
	}()

	if cfg.EST.MetricsListen != "" {
		ml, err := net.Listen("tcp", cfg.EST.MetricsListen)
		if err != nil {
			return fmt.Errorf("metrics listener: %w", err)
		}
		mux := http.NewServeMux()
		mux.Handle("/metrics", metrics.Handler())
		mux.Handle(CRLHTTPPath, crlHandler(x.ca))
		ms := &http.Server{Handler: mux, ReadHeaderTimeout: 10 * time.Second}
		go ms.Serve(ml)
		defer ms.Close()
		a.log.Info("metrics listening", "addr", ml.Addr().String())
	}
	if cfg.CRL.Listen != "" {
		cl, err := net.Listen("tcp", cfg.CRL.Listen)
		if err != nil {
			return fmt.Errorf("crl listener: %w", err)
		}
		mux := http.NewServeMux()
		mux.Handle(CRLHTTPPath, crlHandler(x.ca))
		cs := &http.Server{Handler: mux, ReadHeaderTimeout: 10 * time.Second, WriteTimeout: time.Minute}
		go cs.Serve(cl)
		defer cs.Close()
		fmt.Fprintf(a.stdout, "estca serving the CRL on http://%s%s\n", cl.Addr(), CRLHTTPPath)
	}

	if _, err := x.db.Append(store.AuditRecord{Event: store.EventStart, Verdict: "start",
		Reason: "estca serve on " + srv.Addr().String()}); err != nil {
		return err
	}
	if err := signHead(x.db); err != nil {
		return err
	}
	sw := &storeWatch{db: x.db, log: a.log, logCheckpoints: *cfg.Store.LogCheckpoints, retryAfter: cfg.Store.RetryAfter.D()}
	sw.poll(time.Now())
	a.log.Info("estca serving", "addr", srv.Addr().String(), "admin_socket", cfg.path(cfg.EST.AdminSocket),
		"root", cfg.path(cfg.CA.Root))
	fmt.Fprintf(a.stdout, "estca serving EST-coaps on udp %s (admin socket %s)\n", srv.Addr(), cfg.path(cfg.EST.AdminSocket))

	serveErr := make(chan error, 1)
	srvCtx, stopSrv := context.WithCancel(context.WithoutCancel(ctx))
	defer stopSrv()
	go func() { serveErr <- srv.Serve(srvCtx) }()
	go probe(srvCtx, x.token, hsmCheckInterval)

	tick := time.NewTicker(cfg.Store.AuditSignInterval.D())
	defer tick.Stop()
	crlTick := time.NewTicker(cfg.CRL.Refresh.D())
	defer crlTick.Stop()
	watchTick := time.NewTicker(storeWatchInterval)
	defer watchTick.Stop()
	for done := false; !done; {
		select {
		case <-ctx.Done():
			done = true
		case err := <-serveErr:
			if !errors.Is(err, est.ErrServerClosed) {
				return err
			}
			done = true
		case now := <-watchTick.C:
			sw.poll(now)
		case <-hup:
			_ = run.reload("SIGHUP") // logged and audited
		case <-crlTick.C:
			_ = run.publishCRL("schedule")
		case <-tick.C:
			if err := signHead(x.db); errors.Is(err, hsm.ErrUnavailable) || errors.Is(err, store.ErrUnavailable) {
				a.log.Debug("audit head not signed", "err", err) // the outage is logged once, by its watcher
			} else if err != nil {
				a.log.Error("signing the audit head", "err", err)
			}
			if reqs, err := x.db.Requests(store.StatePending); err == nil {
				appMetrics.setPending(len(reqs))
			}
		}
	}
	a.log.Info("estca stopping")
	shutdownCtx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	if err := srv.Shutdown(shutdownCtx); err != nil {
		a.log.Warn("shutdown", "err", err)
	}
	if _, err := x.db.Append(store.AuditRecord{Event: store.EventStop, Verdict: "stop", Reason: "estca serve stopped"}); err != nil {
		return err
	}
	err = signHead(x.db)
	sw.logHead()
	if errors.Is(err, hsm.ErrUnavailable) {
		// The records since the last signed head are signed at the next start.
		a.log.Warn("audit head not signed at stop: hsm unavailable", "err", err)
		return nil
	}
	return err
}

// signHead signs the audit chain head (nothing happens when no record was
// added since the newest head). A signature the HSM returned that does not
// verify is not stored; the refusal goes into the trail it protects.
func signHead(db *store.DB) error {
	_, err := db.SignHead()
	if errors.Is(err, ca.ErrBadSignature) {
		if _, aerr := db.Append(store.AuditRecord{Event: store.EventDenied, Verdict: ca.VerdictRejected,
			Reason: "audit head: invalid HSM signature", Flags: []string{ca.FlagBadSignature}}); aerr != nil {
			err = errors.Join(err, aerr)
		}
	}
	return err
}

// listenAdmin opens the admin socket (mode 0600). A socket file left by a
// crashed server is replaced; one that answers belongs to a running server.
func listenAdmin(path string) (net.Listener, error) {
	if err := os.MkdirAll(filepath.Dir(path), 0o700); err != nil {
		return nil, err
	}
	if _, err := os.Stat(path); err == nil {
		if c, err := net.DialTimeout("unix", path, time.Second); err == nil {
			c.Close()
			return nil, fmt.Errorf("admin socket %s is served by another estca", path)
		}
		os.Remove(path)
	}
	// Create the socket 0600 from the start: a chmod afterwards would leave
	// a window in which others could connect.
	old := syscall.Umask(0o177)
	l, err := net.Listen("unix", path)
	syscall.Umask(old)
	if err != nil {
		return nil, fmt.Errorf("admin socket: %w", err)
	}
	return l, nil
}
