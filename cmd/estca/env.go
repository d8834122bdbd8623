package main

import (
	"crypto"
	"crypto/x509"
	"errors"
	"fmt"
	"os"

	"github.com/estca/estca/ca"
	"github.com/estca/estca/hsm"
	"github.com/estca/estca/softhsm"
	"github.com/estca/estca/store"
)

// config loads the configuration named by --config and logs its warnings
// (removed keys).
func (a *app) config() (*Config, error) {
	c, err := loadConfig(a.configPath)
	if err != nil {
		return nil, err
	}
	for _, w := range c.warnings {
		a.log.Warn("config: "+w, "config", a.configPath)
	}
	return c, nil
}

// openToken opens the PKCS#11 token of the configuration; observe, if not
// nil, receives the token's events. For the embedded SoftHSM default it
// points SOFTHSM2_CONF at the appliance's own token directory first (SoftHSM
// reads it at C_Initialize).
func openToken(c *Config, observe func(hsm.Event)) (*hsm.Token, error) {
	if c.HSM.SoftHSMConf != "" {
		// Relative token paths resolve against the appliance, so that a
		// copied or restored appliance uses its own token.
		if err := softhsm.Activate(c.path(c.HSM.SoftHSMConf)); err != nil {
			return nil, err
		}
	}
	pin, err := readPIN(c)
	if err != nil {
		return nil, err
	}
	defer clear(pin) // the Token keeps its own copy for its recoveries
	return hsm.Open(hsm.Options{
		Module:      c.path(c.HSM.Module),
		TokenLabel:  c.HSM.Token,
		URI:         c.HSM.URI,
		PIN:         pin,
		MaxSessions: c.HSM.MaxSessions,
		Observer:    observe,

		SignWithTokenObjects: c.HSM.SignWithTokenObjects,
	})
}

// pinEnv is the environment variable that, when set and non-empty, supplies
// the HSM user PIN; it wins over hsm.pin_file.
const pinEnv = "ESTCA_HSM_PIN"

// readPIN reads the HSM user PIN: $ESTCA_HSM_PIN when set and non-empty,
// else the file hsm.pin_file names, without one trailing newline (LF or
// CRLF). The caller zeroes the returned buffer. The errors wrap
// hsm.ErrNoPIN and never carry the PIN.
func readPIN(c *Config) ([]byte, error) {
	if v := os.Getenv(pinEnv); v != "" {
		return []byte(v), nil
	}
	if c.HSM.PINFile == "" {
		return nil, fmt.Errorf("%w: set hsm.pin_file or $%s", hsm.ErrNoPIN, pinEnv)
	}
	path := c.path(c.HSM.PINFile)
	b, err := os.ReadFile(path)
	if err != nil {
		return nil, fmt.Errorf("%w: read pin file: %w", hsm.ErrNoPIN, err)
	}
	pin := b
	if n := len(pin); n > 0 && pin[n-1] == '\n' {
		pin = pin[:n-1]
		if n := len(pin); n > 0 && pin[n-1] == '\r' {
			pin = pin[:n-1]
		}
	}
	if len(pin) == 0 {
		clear(b)
		return nil, fmt.Errorf("%w: pin file %s is empty", hsm.ErrNoPIN, path)
	}
	return pin, nil
}

// storeOptions are the store options of the configuration; with a signer
// the store is opened for writing with the audit check (the newest signed
// head, the chain since the checkpoint, the revocation set).
func storeOptions(c *Config, signer crypto.Signer, pub crypto.PublicKey) store.Options {
	return store.Options{
		LockTimeout:  c.Store.LockTimeout.D(),
		MaxBatchSize: c.Store.MaxBatchSize,
		CheckPages:   c.Store.CheckPages,
		ReadOnly:     signer == nil,
		Signer:       signer,
		AuditKey:     pub,
		Checkpoint:   c.path(c.Store.Checkpoint),
	}
}

// openStore opens the store of the configuration: read-only without a
// signer (queries), otherwise for writing with the audit check. Only `estca
// init` creates a store; the errors say what to do.
func openStore(c *Config, signer crypto.Signer, pub crypto.PublicKey) (*store.DB, error) {
	path := c.path(c.Store.Path)
	db, err := store.Open(path, storeOptions(c, signer, pub))
	return db, explainStore(c, err)
}

// explainStore adds what the operator can do to a store error.
func explainStore(c *Config, err error) error {
	switch {
	case err == nil:
		return nil
	case errors.Is(err, store.ErrLocked):
		return fmt.Errorf("%w (is `estca serve` running? stop it, or use its admin socket %s)", err, c.path(c.EST.AdminSocket))
	case errors.Is(err, store.ErrNoStore), errors.Is(err, store.ErrEmpty):
		return fmt.Errorf("%w; restore a backup with `estca restore FILE`", err)
	case errors.Is(err, store.ErrTruncated), errors.Is(err, store.ErrDamaged), errors.Is(err, store.ErrForeign):
		return fmt.Errorf("%w; the file is not used: restore a backup with `estca restore FILE` (the damaged file is kept aside)", err)
	case errors.Is(err, store.ErrCheckpoint):
		return fmt.Errorf("%w; if this is expected (a restore, a lost checkpoint), compare with the checkpoint you keep off the box and acknowledge it with `estca audit checkpoint --reset`", err)
	}
	return err
}

// openAuditToken opens the token of a stopped appliance for a command that
// signs audit heads itself (restore, revoke, checkpoint reset): it refuses
// while `estca serve` runs, and returns the token (to close), the audit
// signer and the audit public key.
func openAuditToken(c *Config) (*hsm.Token, crypto.Signer, crypto.PublicKey, error) {
	if serverRunning(c) {
		return nil, nil, nil, errors.New("estca serve is running: stop it first")
	}
	tok, err := openToken(c, nil)
	if err != nil {
		return nil, nil, nil, err
	}
	signer, pub, err := auditSigner(c, tok, nil)
	if err != nil {
		tok.Close()
		return nil, nil, nil, err
	}
	return tok, signer, pub, nil
}

// openSignedStore opens the token (openAuditToken) and the store of a
// stopped appliance, which signs its audit heads with the token's audit
// key; the caller closes both.
func openSignedStore(c *Config) (*hsm.Token, *store.DB, crypto.PublicKey, error) {
	tok, signer, pub, err := openAuditToken(c)
	if err != nil {
		return nil, nil, nil, err
	}
	db, err := openStore(c, signer, pub)
	if err != nil {
		tok.Close()
		return nil, nil, nil, err
	}
	return tok, db, pub, nil
}

// withAuditToken runs f for a command of a stopped appliance that signs
// audit heads itself (see openAuditToken).
func withAuditToken(a *app, f func(cfg *Config, signer crypto.Signer, pub crypto.PublicKey) error) error {
	cfg, err := a.config()
	if err != nil {
		return err
	}
	tok, signer, pub, err := openAuditToken(cfg)
	if err != nil {
		return err
	}
	defer tok.Close()
	return f(cfg, signer, pub)
}

// auditSigner finds the audit key in the token and reads the audit public
// key; every signature of the key is verified under that public key
// (ca.VerifySigner; onBad, if not nil, hears of a bad one).
func auditSigner(c *Config, tok *hsm.Token, onBad func(error)) (crypto.Signer, crypto.PublicKey, error) {
	k, err := tok.FindKey(c.CA.AuditKey)
	if err != nil {
		return nil, nil, fmt.Errorf("audit key %q: %w", c.CA.AuditKey, err)
	}
	pub, err := readAuditPublic(c)
	if err != nil {
		return nil, nil, err
	}
	return ca.VerifySigner(k, pub, onBad), pub, nil
}

// importHint is what to do about missing CA certificates of an
// external-root appliance (ca.external_root), "" otherwise.
func (c *Config) importHint() string {
	if !c.CA.ExternalRoot {
		return ""
	}
	return fmt.Sprintf(" (an external-root appliance: have %s signed by your root, then run estca ca import)", c.path("ca/issuing.csr"))
}

// authority is everything `serve` and `issue` need, opened together.
type authority struct {
	token   *hsm.Token
	db      *store.DB
	ca      *ca.Authority
	root    *x509.Certificate
	issuing *x509.Certificate
	server  *x509.Certificate // the DTLS server certificate (its names are reserved)
	// auditPub verifies signed audit heads.
	auditPub crypto.PublicKey
}

func (x *authority) Close() error {
	var errs []error
	if x.db != nil {
		errs = append(errs, x.db.Close())
	}
	if x.token != nil {
		errs = append(errs, x.token.Close())
	}
	return errors.Join(errs...)
}

// caCertificates reads the root, issuing and DTLS server certificates.
func caCertificates(c *Config) (root, issuing, server *x509.Certificate, err error) {
	if root, err = readCert(c.path(c.CA.Root)); err != nil {
		return nil, nil, nil, fmt.Errorf("root CA certificate: %w%s", err, c.importHint())
	}
	if issuing, err = readCert(c.path(c.CA.Issuing)); err != nil {
		return nil, nil, nil, fmt.Errorf("issuing CA certificate: %w%s", err, c.importHint())
	}
	if server, err = readCert(c.path(c.CA.ServerCert)); err != nil {
		return nil, nil, nil, fmt.Errorf("server certificate: %w", err)
	}
	return root, issuing, server, nil
}

// authorityOptions are what `serve` adds to openAuthority; the zero value is
// what `issue` uses.
type authorityOptions struct {
	// wrap, if not nil, wraps the issuing key (latency metrics).
	wrap func(crypto.Signer) crypto.Signer
	// observe receives the token's events (hsm.Options.Observer).
	observe func(hsm.Event)
	// badSignature is told of every HSM signature that does not verify.
	badSignature func(error)
	// onCommit hears of every store commit (store.Options.OnCommit).
	onCommit func(store.CommitStat)
}

// openAuthority opens the token, the store and the CA certificates and builds
// the authority. Every signature of the issuing key is verified under the
// issuing certificate (ca.VerifySigner) before it is used.
func openAuthority(c *Config, o authorityOptions) (_ *authority, err error) {
	x := &authority{}
	defer func() {
		if err != nil {
			x.Close()
		}
	}()
	if x.root, x.issuing, x.server, err = caCertificates(c); err != nil {
		return nil, err
	}
	po, err := c.policyOptions(x.root, x.issuing, x.server)
	if err != nil {
		return nil, fmt.Errorf("config: %w", err)
	}
	last, err := lastCRLNumber(c.path(c.CRL.Path))
	if err != nil {
		return nil, err
	}
	if x.token, err = openToken(c, o.observe); err != nil {
		return nil, err
	}
	signer, err := x.token.FindKey(c.CA.IssuingKey)
	if err != nil {
		return nil, fmt.Errorf("issuing key %q: %w", c.CA.IssuingKey, err)
	}
	if o.wrap != nil {
		signer = o.wrap(signer)
	}
	verified := ca.VerifySigner(signer, x.issuing.PublicKey, o.badSignature)
	auditKey, pub, err := auditSigner(c, x.token, o.badSignature)
	if err != nil {
		return nil, err
	}
	so := storeOptions(c, auditKey, pub)
	so.OnCommit = o.onCommit
	if x.db, err = store.Open(c.path(c.Store.Path), so); err != nil {
		return nil, explainStore(c, err)
	}
	x.auditPub = pub
	x.ca, err = ca.New(ca.Options{
		Signer:      verified,
		Certificate: x.issuing,
		Root:        x.root,
		Policy:      po,
		Store:       x.db,
		StoreRetry:  c.Store.RetryAfter.D(),
		CRL: ca.CRLOptions{DistributionPoint: c.CRL.DistributionPoint, Validity: c.CRL.Validity.D(),
			LastNumber: last},
	})
	if err != nil {
		return nil, err
	}
	return x, nil
}
