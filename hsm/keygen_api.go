package hsm

import (
	"crypto"
	"encoding/asn1"
)

// Server-side key generation (RFC 9148 §4.8): the exported API, identical
// with and without cgo (see keygen.go; the stub returns ErrNoCgo).

// Label prefixes of the objects GenerateExportable, EscrowKey and ImportKEK
// create. No other estca key uses them.
const (
	// GeneratedPrefix starts the label of every generated device key kept
	// as a token object.
	GeneratedPrefix = "estca-kg/"
	// PendingPrefix (+ 32 hex digits) labels a generated key kept for
	// escrow whose certificate is not issued yet. CleanupGenerated destroys
	// such keys: they are what a crash between generation and escrow leaves.
	PendingPrefix = GeneratedPrefix + "pending/"
	// EscrowPrefix (+ the certificate serial in lowercase hex) labels an
	// escrowed key.
	EscrowPrefix = GeneratedPrefix + "escrow/"
	// KEKPrefix (+ the identifier in lowercase hex) labels a pre-shared
	// key-encryption key (ImportKEK).
	KEKPrefix = "estca-kek/"
)

// MaxKEKIDLen bounds a key-encryption key identifier, as package ca/cms
// bounds a DecryptKeyIdentifier.
const MaxKEKIDLen = 64

// GeneratedAttributes are the PKCS#11 attributes of a generated private key
// as the token reported them right after C_GenerateKeyPair.
type GeneratedAttributes struct {
	Local            bool // CKA_LOCAL: generated in the token (by its RNG)
	Token            bool // CKA_TOKEN: a token object (kept for escrow), not a session object
	Sensitive        bool // CKA_SENSITIVE
	Extractable      bool // CKA_EXTRACTABLE
	AlwaysSensitive  bool // CKA_ALWAYS_SENSITIVE
	NeverExtractable bool // CKA_NEVER_EXTRACTABLE
	Sign             bool // CKA_SIGN (false: the token copy can do nothing but be wrapped)
}

// ExportedKey is a device key pair generated in the token and exported
// wrapped: Wrapped is the private key's PKCS#8 PrivateKeyInfo wrapped with
// AES key wrap with padding (RFC 5649, CKM_AES_KEY_WRAP_PAD) under
// TransportKey, a fresh AES-256 key. Some tokens (SoftHSM 2.6.1) zero-pad
// the PKCS#8 to a multiple of 8 before wrapping: trim it to its DER length
// after unwrapping (ca/cms UnwrapPad and TrimDERPadding).
type ExportedKey struct {
	Type   KeyType
	Public crypto.PublicKey
	// Label is the pending label of the token objects kept for escrow (see
	// EscrowKey); "" when nothing was kept.
	Label        string
	Wrapped      []byte
	TransportKey []byte
	Attributes   GeneratedAttributes
}

// Zero overwrites the transport key and the wrapped key.
func (k *ExportedKey) Zero() {
	if k != nil {
		clear(k.TransportKey)
		clear(k.Wrapped)
	}
}

// GenerateExportable generates a device key pair of type kt (ECDSAP256,
// ECDSAP384, RSA2048 or RSA3072) with the token's RNG and exports the
// private key wrapped (see ExportedKey). The private key is CKA_SENSITIVE and
// CKA_EXTRACTABLE (it leaves the token only wrapped) and has no usage in the
// token. Without keep both objects are session objects, destroyed in the
// same operation, before GenerateExportable returns: nothing of the key
// remains in the token, and a crash cannot leave it behind (session objects
// die with their session). With keep they are token objects labelled
// PendingPrefix+hex(CKA_ID), to be escrowed with EscrowKey or destroyed with
// DeleteKey; CleanupGenerated destroys what a crash left pending.
//
// CKA_WRAP_WITH_TRUSTED is not set: only a CKA_TRUSTED wrapping key could
// then export the key, and only the security officer can mark a key trusted.
func (t *Token) GenerateExportable(kt KeyType, keep bool) (*ExportedKey, error) {
	return t.generateExportable(kt, keep)
}

// EscrowKey relabels the pending key pair label (from GenerateExportable
// with keep) to EscrowPrefix+serial. An escrowed key of that serial already
// present is ErrKeyExists.
func (t *Token) EscrowKey(label, serial string) error { return t.escrowKey(label, serial) }

// CleanupGenerated destroys every pending generated key pair (token objects
// labelled PendingPrefix...) and returns how many private keys it destroyed.
// Call it only where no other process generates keys in the same token
// (estca serve calls it at start, holding the store's lock).
func (t *Token) CleanupGenerated() (int, error) { return t.cleanupGenerated() }

// EscrowedKey is a generated key kept in the token.
type EscrowedKey struct {
	Serial string // certificate serial, lowercase hex
	Label  string
	Type   KeyType
	ID     []byte
}

// EscrowedKeys lists the escrowed keys.
func (t *Token) EscrowedKeys() ([]EscrowedKey, error) { return t.escrowedKeys() }

// DestroyEscrowed destroys the escrowed key pair of serial (lowercase hex);
// ErrKeyNotFound if there is none.
func (t *Token) DestroyEscrowed(serial string) error { return t.destroyEscrowed(serial) }

// ImportKEK stores a pre-shared AES key-encryption key (16, 24 or 32 bytes)
// under identifier id (1 to MaxKEKIDLen bytes, the DecryptKeyIdentifier a
// device names it by, RFC 7030 §4.4.1.1) as a token object labelled
// KEKPrefix+hex(id): CKA_SENSITIVE, not CKA_EXTRACTABLE, CKA_WRAP only. An
// identifier already present is ErrKeyExists. key is not retained.
func (t *Token) ImportKEK(id, key []byte) error { return t.importKEK(id, key) }

// FindKEK returns the key-encryption key with identifier id, or an error
// wrapping ErrKeyNotFound.
func (t *Token) FindKEK(id []byte) (*KEK, error) { return t.findKEK(id) }

// KEKInfo describes a key-encryption key in the token.
type KEKInfo struct {
	ID    []byte
	Label string
	Bits  int
}

// KEKs lists the key-encryption keys.
func (t *Token) KEKs() ([]KEKInfo, error) { return t.keks() }

// DeleteKEK destroys the key-encryption key with identifier id.
func (t *Token) DeleteKEK(id []byte) error { return t.deleteKEK(id) }

// AES key-wrap algorithm identifiers (RFC 3565 §2.3.2, RFC 3394).
var (
	oidAES128Wrap = asn1.ObjectIdentifier{2, 16, 840, 1, 101, 3, 4, 1, 5}
	oidAES192Wrap = asn1.ObjectIdentifier{2, 16, 840, 1, 101, 3, 4, 1, 25}
	oidAES256Wrap = asn1.ObjectIdentifier{2, 16, 840, 1, 101, 3, 4, 1, 45}
)

// WrapKey wraps a content-encryption key (16, 24 or 32 bytes) in the token
// with AES key wrap (RFC 3394, CKM_AES_KEY_WRAP) under the key-encryption
// key: the content key enters the token as a session object, is wrapped and
// destroyed.
func (k *KEK) WrapKey(cek []byte) ([]byte, error) { return k.wrapKey(cek) }

// Algorithm returns id-aes128-wrap, id-aes192-wrap or id-aes256-wrap
// according to the key's length.
func (k *KEK) Algorithm() asn1.ObjectIdentifier {
	switch k.kekBits() {
	case 128:
		return oidAES128Wrap
	case 192:
		return oidAES192Wrap
	case 256:
		return oidAES256Wrap
	}
	return nil
}

// ID returns the key's identifier.
func (k *KEK) ID() []byte { return k.kekID() }
