package ca

import (
	"crypto"
	"errors"
	"fmt"
	"io"
	"time"

	"github.com/estca/estca/ca/cms"
	"github.com/estca/estca/hsm"
)

// Signature errors.
var (
	// ErrBadSignature reports a signature from the signer (the HSM) that does
	// not verify under the public key it must verify under. It is never
	// returned together with the signature: nothing signed with it leaves the
	// authority.
	ErrBadSignature = errors.New("ca: hsm signature does not verify")
	// ErrHSMUnavailable is hsm.ErrUnavailable: the token that holds the key is
	// down and the Token refused the signature at once. Enroll answers it as
	// KindUnavailable with Max-Age HSMRetryAfter.
	ErrHSMUnavailable = hsm.ErrUnavailable
)

// HSMRetryAfter is the Max-Age of the 5.03 answered while the HSM is
// unavailable: hsm re-tries a lost token at most every few seconds.
const HSMRetryAfter = 5 * time.Second

// FlagBadSignature marks the audit record of a request refused because the
// HSM returned a signature that does not verify.
const FlagBadSignature = "hsm-bad-signature"

// VerifyingSigner is a crypto.Signer that verifies every signature of the
// signer it wraps before returning it, with a public key given by the caller
// (the certificate's, not what the signer claims), so that a faulty HSM, a
// fault-injected ECDSA or RSA-CRT computation (which can leak the private
// key) or a key swapped in the token never produces a certificate, CRL,
// audit head or handshake signature that leaves the box.
//
// It is safe for concurrent use if the wrapped signer is.
type VerifyingSigner struct {
	signer crypto.Signer
	verify *cms.Verifier // with the table of an ECDSA P-256 key: the check costs about 40% of crypto/ecdsa's
	onBad  func(error)
}

// VerifySigner returns s wrapped so that every signature is verified under
// pub. Public returns pub. onBad, if not nil, is called with each
// ErrBadSignature error before Sign returns it (to count or log it); it must
// not block.
func VerifySigner(s crypto.Signer, pub crypto.PublicKey, onBad func(error)) *VerifyingSigner {
	return &VerifyingSigner{signer: s, verify: cms.NewVerifier(pub), onBad: onBad}
}

// Public returns the public key every signature is verified under.
func (v *VerifyingSigner) Public() crypto.PublicKey { return v.verify.Public() }

// Sign signs digest with the wrapped signer and returns the signature only if
// it verifies under Public; otherwise an error wrapping ErrBadSignature.
// Errors of the wrapped signer are returned unchanged.
func (v *VerifyingSigner) Sign(r io.Reader, digest []byte, opts crypto.SignerOpts) ([]byte, error) {
	sig, err := v.signer.Sign(r, digest, opts)
	if err != nil {
		return nil, err
	}
	if err := v.verify.Verify(digest, sig, opts); err != nil {
		err = fmt.Errorf("%w: %w", ErrBadSignature, err)
		if v.onBad != nil {
			v.onBad(err)
		}
		return nil, err
	}
	return sig, nil
}
