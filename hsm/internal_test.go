//go:build cgo

package hsm

import (
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/sha256"
	"errors"
	"fmt"
	"testing"

	"github.com/miekg/pkcs11"
)

func TestParseURI(t *testing.T) {
	t.Parallel()
	good := []struct {
		in   string
		want map[string]string
	}{
		{"pkcs11:", map[string]string{}},
		{"pkcs11:token=estca%20CA;object=ca-key?module-path=/usr/lib/softhsm/libsofthsm2.so&pin-source=file:/run/pin",
			map[string]string{"token": "estca CA", "object": "ca-key", "module-path": "/usr/lib/softhsm/libsofthsm2.so", "pin-source": "file:/run/pin"}},
		{"pkcs11:serial=abc123?pin-value=1234", map[string]string{"serial": "abc123", "pin-value": "1234"}},
	}
	for _, c := range good {
		got, err := parseURI(c.in)
		if err != nil {
			t.Errorf("parseURI(%q): %v", c.in, err)
			continue
		}
		if fmt.Sprint(got) != fmt.Sprint(c.want) {
			t.Errorf("parseURI(%q) = %v, want %v", c.in, got, c.want)
		}
	}
	for _, in := range []string{
		"token=x", "pkcs11:token", "pkcs11:token=a;token=b", "pkcs11:manufacturer=x",
		"pkcs11:token=%zz", "pkcs11:?pin-source=|/bin/cat", "pkcs11:?pin-source=file:",
		// The PIN is never read from the URI (hsm reads no PIN sources).
		"pkcs11:?pin-source=file:///run/pin", "pkcs11:serial=abc123?pin-value=1234",
	} {
		_, err := Options{URI: in}.resolve()
		if !errors.Is(err, ErrURI) {
			t.Errorf("resolve(URI %q) = %v, want ErrURI", in, err)
		}
	}
}

func TestResolveDefaults(t *testing.T) {
	t.Parallel()
	r, err := Options{MaxSessions: 1, URI: "pkcs11:token=a?module-path=/m.so"}.resolve()
	if err != nil || r.maxSessions != 2 || r.label != "a" || r.module != "/m.so" {
		t.Errorf("resolve = %+v, %v; want maxSessions 2, label a, module /m.so", r, err)
	}
	if r, _ := (Options{}).resolve(); r.maxSessions < 4 {
		t.Errorf("default maxSessions = %d, want 2*GOMAXPROCS+2", r.maxSessions)
	}
}

func TestECDSADER(t *testing.T) {
	t.Parallel()
	priv, err := ecdsa.GenerateKey(elliptic.P384(), rand.Reader)
	if err != nil {
		t.Fatal(err)
	}
	d := sha256.Sum256([]byte("der"))
	r, s, err := ecdsa.Sign(rand.Reader, priv, d[:])
	if err != nil {
		t.Fatal(err)
	}
	raw := make([]byte, 96)
	r.FillBytes(raw[:48])
	s.FillBytes(raw[48:])
	der, err := ecdsaDER(raw)
	if err != nil || !ecdsa.VerifyASN1(&priv.PublicKey, d[:], der) {
		t.Fatalf("ecdsaDER output does not verify (%v)", err)
	}
	for _, bad := range [][]byte{nil, {1, 2, 3}} {
		if _, err := ecdsaDER(bad); err == nil {
			t.Errorf("ecdsaDER(%x) accepted", bad)
		}
	}
}

func TestParseECPoint(t *testing.T) {
	t.Parallel()
	priv, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		t.Fatal(err)
	}
	raw, err := priv.PublicKey.Bytes()
	if err != nil {
		t.Fatal(err)
	}
	wrapped := append([]byte{0x04, byte(len(raw))}, raw...)
	for name, v := range map[string][]byte{"der": wrapped, "raw": raw} {
		pub, err := parseECPoint(elliptic.P256(), v)
		if err != nil || !pub.Equal(&priv.PublicKey) {
			t.Errorf("%s: parseECPoint = %v, %v", name, pub, err)
		}
	}
	if _, err := parseECPoint(elliptic.P256(), raw[:40]); err == nil {
		t.Error("truncated point accepted")
	}
}

func TestClassify(t *testing.T) {
	t.Parallel()
	for _, c := range []struct {
		err  error
		want errClass
	}{
		{pkcs11.Error(pkcs11.CKR_SESSION_HANDLE_INVALID), classRecover},
		{fmt.Errorf("x: %w", pkcs11.Error(pkcs11.CKR_USER_NOT_LOGGED_IN)), classRecover},
		{pkcs11.Error(pkcs11.CKR_DEVICE_REMOVED), classRecover},
		{pkcs11.Error(pkcs11.CKR_TOKEN_NOT_PRESENT), classRecover},
		{pkcs11.Error(pkcs11.CKR_KEY_HANDLE_INVALID), classRetry},
		{pkcs11.Error(pkcs11.CKR_DATA_LEN_RANGE), classFatal},
		{ErrKeyNotFound, classFatal},
	} {
		if got := classify(c.err); got != c.want {
			t.Errorf("classify(%v) = %d, want %d", c.err, got, c.want)
		}
	}
}

func TestFailureReason(t *testing.T) {
	t.Parallel()
	for _, c := range []struct {
		err  error
		want string
	}{
		{fmt.Errorf("%w since x: %w", ErrUnavailable, ErrTokenNotFound), FailureUnavailable},
		{fmt.Errorf("hsm: find key: %w", ErrKeyNotFound), FailureKeyNotFound},
		{fmt.Errorf("%w: x", ErrPIN), FailurePIN},
		{ErrNoPIN, FailurePIN},
		{fmt.Errorf("%w: label", ErrKeyExists), FailureRequest},
		{pkcs11.Error(pkcs11.CKR_DEVICE_MEMORY), FailureDevice},
	} {
		if got := failureReason(c.err); got != c.want {
			t.Errorf("failureReason(%v) = %q, want %q", c.err, got, c.want)
		}
	}
}

// TestTokenError: CKR_DEVICE_MEMORY (the real pkcs11 value, also wrapped)
// is ErrTokenFull with the pkcs11.Error kept; other values are unchanged.
func TestTokenError(t *testing.T) {
	t.Parallel()
	full := pkcs11.Error(pkcs11.CKR_DEVICE_MEMORY)
	for _, in := range []error{full, fmt.Errorf("hsm: escrow key %q: %w", "x", full)} {
		err := tokenError(in)
		if !errors.Is(err, ErrTokenFull) || !errors.Is(err, full) {
			t.Errorf("tokenError(%v) = %v", in, err)
		}
		if again := tokenError(err); again != err {
			t.Errorf("tokenError wrapped twice: %v", again)
		}
	}
	for _, in := range []error{nil, pkcs11.Error(pkcs11.CKR_HOST_MEMORY), pkcs11.Error(pkcs11.CKR_DEVICE_ERROR), ErrUnavailable} {
		if err := tokenError(in); err != in || errors.Is(err, ErrTokenFull) {
			t.Errorf("tokenError(%v) = %v", in, err)
		}
	}
}
