package main

import (
	"crypto"
	"crypto/x509"
	"errors"
	"fmt"
	"io/fs"
	"log/slog"
	"time"

	"github.com/estca/estca/ca"
	"github.com/estca/estca/hsm"
	"github.com/estca/estca/store"
)

// setupKeygen prepares server-side key generation for `estca serve`: it
// destroys the generated keys an interrupted run left pending in the token
// (audited), makes sure the key-package signer exists (creating its key and
// certificate when missing or unusable, as on an appliance initialised
// before server-side key generation existed), and returns the ca.Keygen and
// the key manager of the admin socket. Every signature of the signer is
// verified by package cms before it is used (not a second time here: a bad
// one is refused and audited with flag hsm-bad-signature); wrap, if not
// nil, wraps the token key (latency metrics). It also returns the signer's
// certificate (for the expiry metric).
func setupKeygen(cfg *Config, x *authority, log *slog.Logger, wrap func(crypto.Signer) crypto.Signer) (*ca.Keygen, *keyManager, *x509.Certificate, error) {
	n, err := x.token.CleanupGenerated()
	if err != nil {
		return nil, nil, nil, err
	}
	if n > 0 {
		log.Warn("destroyed generated keys left pending by an interrupted run", "count", n)
		if _, err := x.db.Append(store.AuditRecord{Time: time.Now(), Event: store.EventKeygen, Verdict: ca.VerdictDestroyed,
			Reason: fmt.Sprintf("%d pending generated key(s) left by an interrupted run destroyed at start", n)}); err != nil {
			return nil, nil, nil, err
		}
	}
	cert, key, err := keySigner(cfg, x)
	if err != nil {
		log.Info("issuing the key-package signer certificate", "reason", err.Error())
		if cert, err = issueKeySigner(cfg, x.token, x.db, "estca serve"); err != nil {
			return nil, nil, nil, fmt.Errorf("key-package signer: %w", err)
		}
		if key, err = x.token.FindKey(cfg.Keys.SignerKey); err != nil {
			return nil, nil, nil, err
		}
	}
	if wrap != nil {
		key = wrap(key)
	}
	recips := recipientDir{cfg.path(cfg.Keys.RecipientsDir)}
	kg, err := x.ca.NewKeygen(ca.KeygenOptions{
		Token:                 x.token,
		Signer:                key,
		SignerCertificate:     cert,
		Recipients:            recips,
		NoAuthAttrs:           !*cfg.Keys.GCMAuthAttrs,
		SignerCertificateOnly: !*cfg.Keys.PackageChain,
	})
	if err != nil {
		return nil, nil, nil, err
	}
	return kg, &keyManager{tok: x.token, db: x.db, recips: recips, who: "operator:admin-socket"}, cert, nil
}

// keySigner loads the key-package signer and checks it: the certificate
// file, the key in the token, that they match, and that the certificate is
// usable under the issuing CA now.
func keySigner(cfg *Config, x *authority) (*x509.Certificate, crypto.Signer, error) {
	cert, err := readCert(cfg.path(cfg.Keys.SignerCert))
	if errors.Is(err, fs.ErrNotExist) {
		return nil, nil, fmt.Errorf("no certificate %s", cfg.path(cfg.Keys.SignerCert))
	}
	if err != nil {
		return nil, nil, err
	}
	key, err := x.token.FindKey(cfg.Keys.SignerKey)
	if errors.Is(err, hsm.ErrKeyNotFound) {
		return nil, nil, fmt.Errorf("no key %q in the token", cfg.Keys.SignerKey)
	}
	if err != nil {
		return nil, nil, err
	}
	if k, ok := key.Public().(interface{ Equal(crypto.PublicKey) bool }); !ok || !k.Equal(cert.PublicKey) {
		return nil, nil, fmt.Errorf("certificate %s is not for key %q", cfg.path(cfg.Keys.SignerCert), cfg.Keys.SignerKey)
	}
	// Renewed at start when it would expire within signerRenewal (or
	// before the issuing CA, which bounds every certificate it issues).
	at := time.Now().Add(signerRenewal)
	if end := x.issuing.NotAfter.Add(-time.Hour); at.After(end) {
		at = end
	}
	if err := ca.KeyPackageSignerUsable(cert, x.issuing, at); err != nil {
		return nil, nil, err
	}
	return cert, key, nil
}

// signerRenewal: serve issues a new key-package signer certificate at start
// when the current one expires within this (or the issuing CA's validity
// ends first, which KeyPackageSignerUsable also catches).
const signerRenewal = 30 * 24 * time.Hour
