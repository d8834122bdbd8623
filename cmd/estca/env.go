package main

import (
	"crypto"
	"crypto/x509"
	"errors"
	"fmt"

	"github.com/estca/estca/ca"
	"github.com/estca/estca/hsm"
	"github.com/estca/estca/policy"
	"github.com/estca/estca/softhsm"
	"github.com/estca/estca/store"
)

// config loads the configuration named by --config.
func (a *app) config() (*Config, error) { return loadConfig(a.configPath) }

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
	return hsm.Open(hsm.Options{
		Module:      c.path(c.HSM.Module),
		TokenLabel:  c.HSM.Token,
		URI:         c.HSM.URI,
		PINFile:     c.path(c.HSM.PINFile),
		MaxSessions: c.HSM.MaxSessions,
		Observer:    observe,
	})
}

// openStore opens the bbolt store of the configuration.
func openStore(c *Config, readOnly bool) (*store.DB, error) {
	db, err := store.Open(c.path(c.Store.Path), store.Options{
		LockTimeout:   c.Store.LockTimeout.D(),
		MaxBatchDelay: c.Store.MaxBatchDelay.D(),
		MaxBatchSize:  c.Store.MaxBatchSize,
		ReadOnly:      readOnly,
	})
	if errors.Is(err, store.ErrLocked) {
		return nil, fmt.Errorf("%w (is `estca serve` running? stop it, or use its admin socket %s)", err, c.path(c.EST.AdminSocket))
	}
	return db, err
}

// requesters builds the requester trust configuration: our own hierarchy for
// operational certificates and the manufacturer anchors for IDevIDs.
func requesters(c *Config, root, issuing *x509.Certificate) (policy.Requesters, error) {
	r := policy.Requesters{Operational: []*x509.Certificate{issuing, root}}
	var errs []error
	for _, m := range c.Manufacturers {
		a := policy.Anchor{Name: m.Name, TolerateExpiry: m.TolerateExpiry, DenySerials: m.DenySerials}
		for _, p := range m.Roots {
			cs, err := readCerts(c.path(p))
			if err != nil {
				errs = append(errs, fmt.Errorf("manufacturer %s: %w", m.Name, err))
			}
			a.Roots = append(a.Roots, cs...)
		}
		for _, p := range m.Intermediates {
			cs, err := readCerts(c.path(p))
			if err != nil {
				errs = append(errs, fmt.Errorf("manufacturer %s: %w", m.Name, err))
			}
			a.Intermediates = append(a.Intermediates, cs...)
		}
		r.Anchors = append(r.Anchors, a)
	}
	return r, errors.Join(errs...)
}

// authority is everything `serve` and `issue` need, opened together.
type authority struct {
	token   *hsm.Token
	db      *store.DB
	ca      *ca.Authority
	root    *x509.Certificate
	issuing *x509.Certificate
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

// authorityOptions are what `serve` adds to openAuthority; the zero value is
// what `issue` uses.
type authorityOptions struct {
	// wrap, if not nil, wraps the issuing key (latency metrics).
	wrap func(crypto.Signer) crypto.Signer
	// observe receives the token's events (hsm.Options.Observer).
	observe func(hsm.Event)
	// badSignature is told of every HSM signature that does not verify.
	badSignature func(error)
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
	if x.root, err = readCert(c.path(c.CA.Root)); err != nil {
		return nil, fmt.Errorf("root CA certificate: %w", err)
	}
	if x.issuing, err = readCert(c.path(c.CA.Issuing)); err != nil {
		return nil, fmt.Errorf("issuing CA certificate: %w", err)
	}
	reqs, err := requesters(c, x.root, x.issuing)
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
	if x.db, err = openStore(c, false); err != nil {
		return nil, err
	}
	x.ca, err = ca.New(ca.Options{
		Signer:         verified,
		Certificate:    x.issuing,
		Root:           x.root,
		Profiles:       c.profiles(),
		DefaultProfile: c.DefaultProfile,
		Store:          x.db,
		Requesters:     reqs,
	})
	if err != nil {
		return nil, err
	}
	return x, nil
}
