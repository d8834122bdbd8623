package cms

import (
	"errors"
	"fmt"
)

// Sentinel errors. Every error this package returns wraps exactly one of them
// (errors.Is), so that callers can branch on the kind: the EST server maps
// them to CoAP codes, the device client to an exit reason.
var (
	// ErrMalformed: the input is not the DER structure the RFCs define
	// (wrong tag, bad length, trailing data, wrong version, missing field).
	// The error is a *SyntaxError naming where parsing stopped.
	ErrMalformed = errors.New("cms: malformed input")
	// ErrUnsupported: well-formed, but an algorithm, parameter or structure
	// this package does not implement (exact OIDs only: see doc.go).
	ErrUnsupported = errors.New("cms: unsupported algorithm or structure")
	// ErrTooLarge: the input exceeds one of the size bounds (MaxMessageSize,
	// MaxCSRSize, or a count bound inside the message).
	ErrTooLarge = errors.New("cms: input too large")
	// ErrNoRecipient: no RecipientInfo of the message names the given key.
	ErrNoRecipient = errors.New("cms: no recipient matches the key")
	// ErrDecrypt: a recipient matched but the key could not be recovered
	// (wrong key-encryption key, wrong private key, key-wrap integrity check)
	// or the content failed to decrypt (GCM tag, CBC padding). The reasons are
	// deliberately not distinguished.
	ErrDecrypt = errors.New("cms: decryption failed")
	// ErrSignature: the SignedData signature, its message digest or its
	// content-type attribute does not verify.
	ErrSignature = errors.New("cms: signature verification failed")
	// ErrCertificate: the signer certificate is missing from the SignedData or
	// does not chain to the given roots; the x509 error is wrapped as well.
	ErrCertificate = errors.New("cms: signer certificate not trusted")
	// ErrKeyMismatch: a signing key does not belong to its certificate, or a
	// recipient public key is not usable for the requested recipient kind.
	ErrKeyMismatch = errors.New("cms: key does not match")
	// ErrUnwrap: the AES key-wrap integrity check failed (RFC 3394 §2.2.3,
	// RFC 5649 §3): wrong key-encryption key or tampered ciphertext.
	ErrUnwrap = errors.New("cms: key unwrap failed")
	// ErrNoUsableAlgorithm: the SMIMECapabilities of a request list no
	// content-encryption algorithm this package offers at the required
	// strength.
	ErrNoUsableAlgorithm = errors.New("cms: no usable content-encryption algorithm")
)

// SyntaxError reports where a DER structure was found malformed. It matches
// ErrMalformed with errors.Is.
type SyntaxError struct {
	// Where names the structure being parsed, e.g. "EnvelopedData.version".
	Where string
	// Reason says what was wrong, e.g. "trailing data".
	Reason string
}

func (e *SyntaxError) Error() string {
	return "cms: malformed " + e.Where + ": " + e.Reason
}

// Unwrap returns ErrMalformed.
func (e *SyntaxError) Unwrap() error { return ErrMalformed }

func malformed(where, reason string) error {
	return &SyntaxError{Where: where, Reason: reason}
}

func unsupported(format string, args ...any) error {
	return fmt.Errorf("%w: "+format, append([]any{ErrUnsupported}, args...)...)
}

func tooLarge(format string, args ...any) error {
	return fmt.Errorf("%w: "+format, append([]any{ErrTooLarge}, args...)...)
}
