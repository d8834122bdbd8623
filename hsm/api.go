package hsm

import (
	"crypto"
	"io"
)

// The exported API, identical with and without cgo: without cgo every
// function and method below returns ErrNoCgo (see stub.go).

// KeyInfo describes a private key as the token reports it through PKCS#11
// attributes (PKCS#11 v2.40 section 4.9).
type KeyInfo struct {
	Label            string
	ID               []byte  // CKA_ID, shared by the private and public key objects
	Type             KeyType // e.g. ECDSAP256; "ecdsa-<oid>" or "rsa-<bits>" for other sizes
	Token            bool    // CKA_TOKEN: persistent object
	Private          bool    // CKA_PRIVATE: visible only after login
	Sign             bool    // CKA_SIGN
	Sensitive        bool    // CKA_SENSITIVE
	Extractable      bool    // CKA_EXTRACTABLE
	AlwaysSensitive  bool    // CKA_ALWAYS_SENSITIVE
	NeverExtractable bool    // CKA_NEVER_EXTRACTABLE
}

// Open loads the module, finds the token, and logs in as the user. Each
// failure has its own sentinel: ErrModule (not configured, missing file,
// unloadable, C_Initialize failed), ErrTokenNotFound, ErrNoPIN, ErrPIN; a
// malformed URI wraps ErrURI.
//
// If the module is already initialised in this process (another Token, or a
// raw handle), Open shares that initialisation and Close leaves it in place.
func Open(opts Options) (*Token, error) { return open(opts) }

// Close waits for operations in flight, stops the background recovery,
// closes the Token's sessions (which logs out once none remain) and, if this
// Token initialised the module, calls C_Finalize so that a later Open
// re-reads the module's configuration. Keys found through the Token fail
// with ErrClosed afterwards. Close is idempotent.
func (t *Token) Close() error { return t.close() }

// Label returns the label of the token as configured.
func (t *Token) Label() string { return t.tokenLabel() }

// Status returns the Token's availability: up, or down since when and why.
func (t *Token) Status() Status { return t.status() }

// Check probes the token: it must still be in its slot and the user logged
// in. A failed probe is recovered from as a failed operation would be (new
// login, module re-initialisation), and takes the token down if that fails,
// so that Status and the observer learn of an outage without waiting for an
// operation. While the token is down, Check returns the ErrUnavailable error
// at once.
func (t *Token) Check() error { return t.check() }

// GenerateKey generates a key pair in the token: persistent objects labelled
// label with a random shared CKA_ID; the private key is CKA_PRIVATE,
// CKA_SENSITIVE, not CKA_EXTRACTABLE, CKA_SIGN only. A label already used by a
// private or public key object yields ErrKeyExists. The returned signer is a *Key.
func (t *Token) GenerateKey(label string, kt KeyType) (crypto.Signer, error) {
	return t.generateKey(label, kt)
}

// FindKey returns the signer for the private key labelled label, or an error
// wrapping ErrKeyNotFound. More than one private key with the label is an error.
// The returned signer is a *Key.
func (t *Token) FindKey(label string) (crypto.Signer, error) { return t.findKey(label) }

// KeyInfo reads the attributes of the private key labelled label.
func (t *Token) KeyInfo(label string) (KeyInfo, error) { return t.keyInfo(label) }

// DeleteKey destroys the private and public key objects labelled label. Keys
// found earlier under that label fail with ErrKeyNotFound afterwards. It
// returns ErrKeyNotFound if there was no such object.
func (t *Token) DeleteKey(label string) error { return t.deleteKey(label) }

// Public returns the public key (*ecdsa.PublicKey or *rsa.PublicKey).
func (k *Key) Public() crypto.PublicKey { return k.public() }

// Label returns the CKA_LABEL of the key.
func (k *Key) Label() string { return k.keyLabel() }

// Type returns the key type.
func (k *Key) Type() KeyType { return k.keyType() }

// Sign signs digest with the key. For ECDSA keys the signature is ASN.1 DER
// (as crypto.Signer requires, RFC 5480 section 2.2 / RFC 5758); for RSA keys
// opts of type *rsa.PSSOptions selects RSASSA-PSS (MGF1 with the same hash),
// otherwise RSASSA-PKCS1-v1_5 (RFC 8017). rand is ignored: the token supplies
// the randomness. The signature is returned as the token made it: callers
// that must not release a faulty signature verify it (package ca does).
func (k *Key) Sign(_ io.Reader, digest []byte, opts crypto.SignerOpts) ([]byte, error) {
	return k.sign(digest, opts)
}

// InitToken initialises a token in the first slot whose token is not yet
// initialised (SoftHSM always offers one such free slot), with the given
// label (at most 32 bytes), security-officer PIN and user PIN, using
// C_InitToken, C_Login(CKU_SO) and C_InitPIN in this process: the PINs never
// appear on a command line.
//
// The module must not be initialised in this process already (an open Token):
// InitToken then returns ErrInUse, because it could not finalise the module
// afterwards, and SoftHSM would keep using the configuration it read at the
// first C_Initialize. A label already present wraps ErrTokenExists.
func InitToken(module, label, soPIN, userPIN string) error {
	return initToken(module, label, soPIN, userPIN)
}
