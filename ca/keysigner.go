package ca

import (
	"crypto"
	"crypto/x509"
	"errors"
	"fmt"
	"time"

	"github.com/estca/estca/hsm"
)

// LabelKeyPackage is the token label of the key that signs server-generated
// key packages (the SignedData of RFC 7030 §4.4.2).
const LabelKeyPackage = "estca-keypkg"

// IssueKeyPackageSigner makes the key-package signer of server-side key
// generation: it finds the P-256 key labelled label (LabelKeyPackage when
// "") in the token, or generates it (non-extractable, like every estca key), and issues its
// certificate under the issuing CA: digitalSignature, no extended key usage
// (so that `openssl cms -verify`, whose default purpose is S/MIME signing,
// accepts it), valid for o.ServerValidity (2 years by default) within the
// issuing CA's validity. It serves `estca init` and appliances initialised
// before server-side key generation existed (`estca keys init-signer`, and
// `estca serve` when the certificate is missing). The certificate is not
// stored in the store, like the DTLS server certificate.
func IssueKeyPackageSigner(ks KeyStore, label string, issuingKey crypto.Signer, issuing *x509.Certificate, o InitOptions) (*x509.Certificate, error) {
	o.defaults()
	if label == "" {
		label = LabelKeyPackage
	}
	if issuingKey == nil || issuing == nil || !samePublicKey(signerKey(issuingKey), issuing.PublicKey) {
		return nil, fmt.Errorf("ca: key-package signer: %w", ErrKeyMismatch)
	}
	key, err := ks.FindKey(label)
	if errors.Is(err, hsm.ErrKeyNotFound) {
		key, err = ks.GenerateKey(label, hsm.ECDSAP256)
	}
	if err != nil {
		return nil, fmt.Errorf("ca: key-package signer: %w", err)
	}
	tmpl, err := leafTemplate(o, o.name(o.IssuingName+" key-package signer"), key.Public(), issuing)
	if err != nil {
		return nil, err
	}
	tmpl.KeyUsage = x509.KeyUsageDigitalSignature
	c, err := create(o.Rand, tmpl, issuing, key.Public(), issuingKey)
	if err != nil {
		return nil, fmt.Errorf("ca: key-package signer certificate: %w", err)
	}
	return c, checkKeyPackageSigner(c, issuing, o.Now())
}

// checkKeyPackageSigner checks a key-package signer certificate: issued by
// issuing, valid at now, digitalSignature allowed, and no extended key
// usage that `openssl cms -verify` refuses by default (anything but
// emailProtection or anyExtendedKeyUsage).
func checkKeyPackageSigner(c, issuing *x509.Certificate, now time.Time) error {
	var errs []error
	if err := c.CheckSignatureFrom(issuing); err != nil {
		errs = append(errs, fmt.Errorf("not issued by the issuing CA: %w", err))
	}
	if now.Before(c.NotBefore) || now.After(c.NotAfter) {
		errs = append(errs, fmt.Errorf("outside its validity (%s to %s)", c.NotBefore.UTC().Format(time.RFC3339), c.NotAfter.UTC().Format(time.RFC3339)))
	}
	if c.IsCA || (c.KeyUsage != 0 && c.KeyUsage&x509.KeyUsageDigitalSignature == 0) {
		errs = append(errs, errors.New("not an end-entity certificate allowing digitalSignature"))
	}
	for _, u := range c.ExtKeyUsage {
		if u != x509.ExtKeyUsageEmailProtection && u != x509.ExtKeyUsageAny {
			errs = append(errs, errors.New("an extended key usage other than emailProtection: openssl cms -verify refuses it"))
			break
		}
	}
	if len(c.UnknownExtKeyUsage) > 0 {
		errs = append(errs, errors.New("an unknown extended key usage"))
	}
	if err := errors.Join(errs...); err != nil {
		return fmt.Errorf("ca: key-package signer certificate %q: %w", c.Subject, err)
	}
	return nil
}

// KeyPackageSignerUsable reports whether c can serve as the key-package
// signer of an authority issuing under issuing at now (see
// IssueKeyPackageSigner), for callers deciding to issue a new one.
func KeyPackageSignerUsable(c, issuing *x509.Certificate, now time.Time) error {
	if c == nil || issuing == nil {
		return errors.New("ca: no key-package signer certificate")
	}
	return checkKeyPackageSigner(c, issuing, now)
}
