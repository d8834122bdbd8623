package hsm

import (
	"errors"
	"fmt"
	"net/url"
	"runtime"
	"strings"
	"time"
)

// Sentinel errors. Errors returned by this package wrap one of them (and, where
// the cause is a PKCS#11 return value, the pkcs11.Error too) with detail.
var (
	// ErrModule reports a PKCS#11 module that is not configured, missing,
	// cannot be loaded or fails C_Initialize.
	ErrModule = errors.New("hsm: pkcs11 module unavailable")
	// ErrTokenNotFound reports that no slot holds a token with the requested label or serial.
	ErrTokenNotFound = errors.New("hsm: token not found")
	// ErrPIN reports a PIN the token rejected (incorrect, locked, expired or not initialised).
	ErrPIN = errors.New("hsm: pin rejected")
	// ErrNoPIN reports that Options.PIN is empty.
	ErrNoPIN = errors.New("hsm: no pin")
	// ErrKeyNotFound reports that no private key with the label exists (or that it
	// was replaced by a different key since it was found).
	ErrKeyNotFound = errors.New("hsm: key not found")
	// ErrKeyExists reports a GenerateKey whose label is already used by a key object.
	ErrKeyExists = errors.New("hsm: key already exists")
	// ErrKeyType reports an unknown or unsupported key type.
	ErrKeyType = errors.New("hsm: unsupported key type")
	// ErrURI reports a malformed or unsupported RFC 7512 pkcs11: URI.
	ErrURI = errors.New("hsm: invalid pkcs11 uri")
	// ErrClosed reports use of a Token (or of a key found through it) after Close.
	ErrClosed = errors.New("hsm: token closed")
	// ErrInUse reports an InitToken call while the module is already initialised in
	// this process (a Token is open), see InitToken.
	ErrInUse = errors.New("hsm: pkcs11 module already initialised in this process")
	// ErrTokenExists reports an InitToken whose label is already used by a token.
	ErrTokenExists = errors.New("hsm: token already exists")
	// ErrUnavailable reports an operation refused because the token is down:
	// it vanished, or could not be reached or logged in to again, and the
	// Token is re-initialising the module in the background (see Status).
	// Operations fail with it at once, without touching the module, until the
	// token is back.
	ErrUnavailable = errors.New("hsm: token unavailable")
	// ErrTokenFull reports a token without memory for another object
	// (CKR_DEVICE_MEMORY, PKCS#11 v2.40 §5.1.5): escrowed and pending keys,
	// or other objects, fill it. It passes only when objects are freed.
	ErrTokenFull = errors.New("hsm: token memory full")
	// ErrNoCgo is what every function and method returns in a build without
	// cgo, where PKCS#11 cannot be loaded.
	ErrNoCgo = errors.New("hsm: built without cgo: PKCS#11 unavailable")
)

// KeyType names a key algorithm and size supported by GenerateKey.
type KeyType string

// Supported key types.
const (
	ECDSAP256 KeyType = "ecdsa-p256" // ECDSA on NIST P-256; the default.
	ECDSAP384 KeyType = "ecdsa-p384" // ECDSA on NIST P-384.
	RSA3072   KeyType = "rsa-3072"   // RSA with a 3072-bit modulus and e = 65537.
	// RSA2048 is RSA with a 2048-bit modulus and e = 65537: a device key
	// type of GenerateExportable (ParseDeviceKeyType), not a CA key type.
	RSA2048 KeyType = "rsa-2048"
)

// ParseKeyType parses a key type name. The empty string yields ECDSAP256;
// names are matched case-insensitively. Unknown names wrap ErrKeyType.
func ParseKeyType(s string) (KeyType, error) {
	switch kt := KeyType(strings.ToLower(strings.TrimSpace(s))); kt {
	case "":
		return ECDSAP256, nil
	case ECDSAP256, ECDSAP384, RSA3072:
		return kt, nil
	}
	return "", fmt.Errorf("%w: %q (want %s, %s or %s)", ErrKeyType, s, ECDSAP256, ECDSAP384, RSA3072)
}

// ParseDeviceKeyType parses the type of a key generated for a device by
// GenerateExportable: ParseKeyType's types and RSA2048. The empty string
// yields ECDSAP256; unknown names wrap ErrKeyType.
func ParseDeviceKeyType(s string) (KeyType, error) {
	if kt := KeyType(strings.ToLower(strings.TrimSpace(s))); kt == RSA2048 {
		return kt, nil
	}
	kt, err := ParseKeyType(s)
	if err != nil {
		return "", fmt.Errorf("%w: %q (want %s, %s, %s or %s)", ErrKeyType, s, ECDSAP256, ECDSAP384, RSA2048, RSA3072)
	}
	return kt, nil
}

// Options selects a PKCS#11 module, a token and its user PIN. The zero value is
// not usable: a module and a token are required.
type Options struct {
	// Module is the path of the PKCS#11 shared library.
	Module string
	// TokenLabel selects the token by its label.
	TokenLabel string
	// TokenSerial selects the token by its serial number; if both TokenLabel and
	// TokenSerial are set, the token must match both.
	TokenSerial string
	// URI is an RFC 7512 pkcs11: URI. Its attributes token=, serial= and
	// module-path= override the corresponding fields above; attributes it
	// omits leave them as they are. Key-addressing attributes (object=, id=,
	// type=) are accepted and ignored. pin-source= and pin-value= are
	// refused (ErrURI): the PIN comes in PIN.
	URI string
	// PIN is the user PIN. This package reads no PIN file and no
	// environment variable: the caller (cmd/estca: hsm.pin_file or
	// $ESTCA_HSM_PIN) does, and zeroes its buffer once Open returns. Open
	// copies PIN; the Token keeps the copy to log in again after a recovery
	// and zeroes it in Close (or when Open fails).
	PIN []byte
	// MaxSessions bounds the PKCS#11 sessions the Token opens, including the
	// one kept open to hold the login. Zero means 2*GOMAXPROCS+2; values below
	// 2 are raised to 2. A lower limit reported by the token applies too.
	MaxSessions int
	// MaxRecoveryDelay caps the wait between two attempts to bring a token
	// that is down back (module re-initialisation and login). The first
	// attempt comes FirstRecoveryDelay after the token went down and the wait
	// doubles from there. Zero means DefaultMaxRecoveryDelay.
	MaxRecoveryDelay time.Duration
	// SignWithTokenObjects makes Keys sign with the token's private key
	// objects themselves. By default (false) a Key signs with a copy of its
	// private key made once per login with C_CopyObject as a session object
	// (CKA_TOKEN false; every other attribute, CKA_PRIVATE, CKA_SENSITIVE,
	// CKA_EXTRACTABLE false included, unchanged: the copy lives in the token
	// and never leaves it, and dies with the login session or C_Finalize).
	// A module that refuses the copy gets the token object. SoftHSM re-reads
	// a token object's file under a file lock at every use, about 40 system
	// calls per C_SignInit; a session object spares them.
	SignWithTokenObjects bool
	// Observer, if not nil, receives the Token's events: the token going down
	// and coming back, recoveries, and every operation that fails (see Event).
	// It is called synchronously, in order, from the goroutine that caused the
	// event; it must return quickly and must not call the Token.
	Observer func(Event)
}

// Recovery timing (see Options.MaxRecoveryDelay).
const (
	// FirstRecoveryDelay is the wait before the first attempt to bring back a
	// token that went down.
	FirstRecoveryDelay = 250 * time.Millisecond
	// DefaultMaxRecoveryDelay is the longest wait between two attempts when
	// Options.MaxRecoveryDelay is zero: a token that comes back is in use
	// again at most this long (plus one attempt) later.
	DefaultMaxRecoveryDelay = 4 * time.Second
)

// resolved is Options after the URI is merged in and the PIN source decided.
type resolved struct {
	module, label, serial string
	maxSessions           int
	maxRecoveryDelay      time.Duration
	observer              func(Event)
	tokenObjects          bool
}

func (o Options) resolve() (resolved, error) {
	r := resolved{
		module:       o.Module,
		label:        o.TokenLabel,
		serial:       o.TokenSerial,
		maxSessions:  o.MaxSessions,
		observer:     o.Observer,
		tokenObjects: o.SignWithTokenObjects,
	}
	r.maxRecoveryDelay = o.MaxRecoveryDelay
	if r.maxRecoveryDelay <= 0 {
		r.maxRecoveryDelay = DefaultMaxRecoveryDelay
	}
	r.maxRecoveryDelay = max(r.maxRecoveryDelay, FirstRecoveryDelay)
	if o.URI != "" {
		u, err := parseURI(o.URI)
		if err != nil {
			return r, err
		}
		if v, ok := u["module-path"]; ok {
			r.module = v
		}
		if v, ok := u["token"]; ok {
			r.label = v
		}
		if v, ok := u["serial"]; ok {
			r.serial = v
		}
		for _, k := range []string{"pin-source", "pin-value"} {
			if _, ok := u[k]; ok {
				return r, fmt.Errorf("%w: %s: the PIN is not read from the URI; pass it in Options.PIN", ErrURI, k)
			}
		}
	}
	if r.maxSessions == 0 {
		r.maxSessions = 2*runtime.GOMAXPROCS(0) + 2
	}
	r.maxSessions = max(r.maxSessions, 2)
	return r, nil
}

// knownURIAttr reports whether parseURI accepts the RFC 7512 attribute k:
// the path attributes of section 2.3 used to select a token (plus the
// key-addressing ones, ignored here) and the query attributes for the module and PIN.
func knownURIAttr(k string) bool {
	switch k {
	case "token", "serial", "object", "id", "type", "module-path", "pin-source", "pin-value":
		return true
	}
	return false
}

// parseURI parses an RFC 7512 pkcs11: URI into its attributes (percent-decoded).
// Unknown attributes, and repeated attributes, are errors.
func parseURI(s string) (map[string]string, error) {
	rest, ok := strings.CutPrefix(s, "pkcs11:")
	if !ok {
		return nil, fmt.Errorf("%w: missing pkcs11: scheme", ErrURI)
	}
	path, query, _ := strings.Cut(rest, "?")
	out := map[string]string{}
	add := func(parts []string) error {
		for _, p := range parts {
			if p == "" {
				continue
			}
			k, v, ok := strings.Cut(p, "=")
			if !ok {
				return fmt.Errorf("%w: attribute %q has no value", ErrURI, k)
			}
			if !knownURIAttr(k) {
				return fmt.Errorf("%w: unsupported attribute %q", ErrURI, k)
			}
			if _, dup := out[k]; dup {
				return fmt.Errorf("%w: repeated attribute %q", ErrURI, k)
			}
			dv, err := url.PathUnescape(v)
			if err != nil {
				return fmt.Errorf("%w: attribute %q: %w", ErrURI, k, err)
			}
			out[k] = dv
		}
		return nil
	}
	if err := add(strings.Split(path, ";")); err != nil {
		return nil, err
	}
	if err := add(strings.Split(query, "&")); err != nil {
		return nil, err
	}
	return out, nil
}
