//go:build cgo

package hsm_test

import (
	"crypto"
	"crypto/ecdsa"
	"crypto/rand"
	"crypto/rsa"
	"crypto/sha256"
	"crypto/sha512"
	"crypto/x509"
	"crypto/x509/pkix"
	"encoding/pem"
	"errors"
	"math/big"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/estca/estca/hsm"
	"github.com/estca/estca/policy/pkitest"
	"github.com/estca/estca/softhsm/softhsmtest"
	"github.com/miekg/pkcs11"
)

func writeFile(t *testing.T, name, data string) string {
	t.Helper()
	p := filepath.Join(t.TempDir(), name)
	if err := os.WriteFile(p, []byte(data), 0o600); err != nil {
		t.Fatal(err)
	}
	return p
}

func readPIN(t testing.TB, path string) string {
	t.Helper()
	b, err := os.ReadFile(path)
	if err != nil {
		t.Fatal(err)
	}
	return strings.TrimSuffix(string(b), "\n")
}

// TestOpenErrors checks that each way of failing to open has its own sentinel,
// and that a failed Open releases the module (the next case initialises it again).
func TestOpenErrors(t *testing.T) {
	st := softhsmtest.Provision(t)
	pin := readPIN(t, st.PINFile)
	good := []byte(pin)
	notModule := writeFile(t, "notamodule.so", "this is not an ELF file\n")
	all := []error{hsm.ErrModule, hsm.ErrTokenNotFound, hsm.ErrPIN, hsm.ErrNoPIN, hsm.ErrURI}
	cases := []struct {
		name string
		opts hsm.Options
		want error
	}{
		{"no module", hsm.Options{TokenLabel: st.Label, PIN: good}, hsm.ErrModule},
		{"missing module", hsm.Options{Module: "/nonexistent/libsofthsm2.so", TokenLabel: st.Label, PIN: good}, hsm.ErrModule},
		{"unloadable module", hsm.Options{Module: notModule, TokenLabel: st.Label, PIN: good}, hsm.ErrModule},
		{"missing token", hsm.Options{Module: st.Module, TokenLabel: "no-such-token", PIN: good}, hsm.ErrTokenNotFound},
		{"missing serial", hsm.Options{Module: st.Module, TokenLabel: st.Label, TokenSerial: "0000", PIN: good}, hsm.ErrTokenNotFound},
		{"no token selector", hsm.Options{Module: st.Module, PIN: good}, hsm.ErrTokenNotFound},
		{"wrong pin", hsm.Options{Module: st.Module, TokenLabel: st.Label, PIN: []byte("not-" + pin)}, hsm.ErrPIN},
		{"no pin", hsm.Options{Module: st.Module, TokenLabel: st.Label}, hsm.ErrNoPIN},
		{"pin-value in the uri", hsm.Options{URI: "pkcs11:token=" + st.Label + "?module-path=" + st.Module + "&pin-value=" + pin}, hsm.ErrURI},
		{"pin-source in the uri", hsm.Options{URI: "pkcs11:token=" + st.Label + "?module-path=" + st.Module + "&pin-source=file:" + st.PINFile, PIN: good}, hsm.ErrURI},
		{"bad uri", hsm.Options{URI: "pkcs11:token=x;manufacturer=y"}, hsm.ErrURI},
	}
	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			tok, err := hsm.Open(c.opts)
			if err == nil {
				tok.Close()
				t.Fatal("Open succeeded")
			}
			t.Logf("%v", err)
			for _, e := range all {
				if got := errors.Is(err, e); got != (e == c.want) {
					t.Errorf("errors.Is(%v, %v) = %v", err, e, got)
				}
			}
			if strings.Contains(err.Error(), pin) {
				t.Errorf("error leaks the PIN: %v", err)
			}
		})
	}
	// After all those failures the module must still open cleanly.
	tok, err := hsm.Open(softhsmtest.Options(t, st))
	if err != nil {
		t.Fatal(err)
	}
	if err := tok.Close(); err != nil {
		t.Fatal(err)
	}
}

// TestPINOnlyFromOptions: hsm reads no PIN source of its own (the old
// ESTCA_HSM_PIN variable and PIN files are cmd/estca's business), and the
// caller's PIN buffer is not kept: the caller zeroes it after Open and the
// Token still logs in again after its login is lost.
func TestPINOnlyFromOptions(t *testing.T) {
	st := softhsmtest.Provision(t)
	pin := readPIN(t, st.PINFile)
	t.Setenv("ESTCA_HSM_PIN", pin)
	if tok, err := hsm.Open(hsm.Options{Module: st.Module, TokenLabel: st.Label}); !errors.Is(err, hsm.ErrNoPIN) {
		if err == nil {
			tok.Close()
		}
		t.Fatalf("Open without Options.PIN, ESTCA_HSM_PIN set = %v, want ErrNoPIN", err)
	}
	for _, c := range []struct {
		name string
		opts hsm.Options
	}{
		{"fields", hsm.Options{Module: st.Module, TokenLabel: st.Label}},
		{"uri only", hsm.Options{URI: "pkcs11:token=" + st.Label + "?module-path=" + st.Module}},
		{"uri overrides fields", hsm.Options{Module: "/nonexistent.so", TokenLabel: "other", URI: "pkcs11:token=" + st.Label + "?module-path=" + st.Module}},
		{"uri complements fields", hsm.Options{Module: st.Module, URI: "pkcs11:token=" + st.Label}},
	} {
		t.Run(c.name, func(t *testing.T) {
			buf := []byte(pin)
			c.opts.PIN = buf
			tok, err := hsm.Open(c.opts)
			clear(buf)
			if err != nil {
				t.Fatal(err)
			}
			defer tok.Close()
			signer, err := tok.GenerateKey("k-"+strings.ReplaceAll(c.name, " ", "-"), hsm.ECDSAP256)
			if err != nil {
				t.Fatal(err)
			}
			raw := openRaw(t, st)
			raw.logout(t) // the login is shared by the application: the Token's is gone too
			if err := signVerify(signer, "after logout"); err != nil {
				t.Fatalf("no new login with the Token's own copy of the PIN: %v", err)
			}
		})
	}
}

func TestParseKeyType(t *testing.T) {
	t.Parallel()
	for in, want := range map[string]hsm.KeyType{
		"": hsm.ECDSAP256, "ecdsa-p256": hsm.ECDSAP256, "ECDSA-P384": hsm.ECDSAP384, "rsa-3072": hsm.RSA3072,
	} {
		if got, err := hsm.ParseKeyType(in); err != nil || got != want {
			t.Errorf("ParseKeyType(%q) = %q, %v; want %q", in, got, err, want)
		}
	}
	for _, in := range []string{"rsa-2048", "ed25519", "p256"} {
		if _, err := hsm.ParseKeyType(in); !errors.Is(err, hsm.ErrKeyType) {
			t.Errorf("ParseKeyType(%q) error = %v, want ErrKeyType", in, err)
		}
	}
}

// verify checks sig over digest with pub, for the signer options used.
func verify(t *testing.T, pub crypto.PublicKey, digest, sig []byte, opts crypto.SignerOpts) {
	t.Helper()
	switch pub := pub.(type) {
	case *ecdsa.PublicKey:
		if !ecdsa.VerifyASN1(pub, digest, sig) {
			t.Fatal("ECDSA signature does not verify")
		}
	case *rsa.PublicKey:
		var err error
		if pss, ok := opts.(*rsa.PSSOptions); ok {
			err = rsa.VerifyPSS(pub, opts.HashFunc(), digest, sig, &rsa.PSSOptions{SaltLength: pss.SaltLength, Hash: pss.Hash})
		} else {
			err = rsa.VerifyPKCS1v15(pub, opts.HashFunc(), digest, sig)
		}
		if err != nil {
			t.Fatalf("RSA signature does not verify: %v", err)
		}
	default:
		t.Fatalf("unexpected public key %T", pub)
	}
}

// selfSign creates a self-signed CA certificate with the signer and checks it
// with crypto/x509 and, when available, with openssl verify.
func selfSign(t *testing.T, s crypto.Signer, alg x509.SignatureAlgorithm) {
	t.Helper()
	tmpl := &x509.Certificate{
		SerialNumber:          big.NewInt(1),
		Subject:               pkix.Name{CommonName: "estca hsm test CA"},
		NotBefore:             time.Now().Add(-time.Hour),
		NotAfter:              time.Now().Add(time.Hour),
		KeyUsage:              x509.KeyUsageCertSign | x509.KeyUsageCRLSign,
		BasicConstraintsValid: true,
		IsCA:                  true,
		SignatureAlgorithm:    alg,
	}
	der, err := x509.CreateCertificate(rand.Reader, tmpl, tmpl, s.Public(), s)
	if err != nil {
		t.Fatalf("CreateCertificate: %v", err)
	}
	cert, err := x509.ParseCertificate(der)
	if err != nil {
		t.Fatal(err)
	}
	if err := cert.CheckSignatureFrom(cert); err != nil {
		t.Fatalf("certificate signature: %v", err)
	}
	openssl := pkitest.RequireTool(t, "openssl")
	p := writeFile(t, "ca.pem", string(pem.EncodeToMemory(&pem.Block{Type: "CERTIFICATE", Bytes: der})))
	out, err := exec.Command(openssl, "verify", "-CAfile", p, p).CombinedOutput()
	if err != nil || !strings.Contains(string(out), ": OK") {
		t.Fatalf("openssl verify: %v: %s", err, out)
	}
}

func TestGenerateKeyTypes(t *testing.T) {
	_, tok := softhsmtest.New(t)
	h256 := sha256.Sum256([]byte("estca"))
	h384 := sha512.Sum384([]byte("estca"))
	for _, c := range []struct {
		kt    hsm.KeyType
		algs  []x509.SignatureAlgorithm
		opts  []crypto.SignerOpts
		dgsts [][]byte
	}{
		{hsm.ECDSAP256, []x509.SignatureAlgorithm{x509.ECDSAWithSHA256},
			[]crypto.SignerOpts{crypto.SHA256}, [][]byte{h256[:]}},
		{hsm.ECDSAP384, []x509.SignatureAlgorithm{x509.ECDSAWithSHA384},
			[]crypto.SignerOpts{crypto.SHA384}, [][]byte{h384[:]}},
		{hsm.RSA3072, []x509.SignatureAlgorithm{x509.SHA256WithRSA, x509.SHA384WithRSAPSS},
			[]crypto.SignerOpts{crypto.SHA256, crypto.SHA384,
				&rsa.PSSOptions{Hash: crypto.SHA256, SaltLength: rsa.PSSSaltLengthEqualsHash},
				&rsa.PSSOptions{Hash: crypto.SHA256, SaltLength: rsa.PSSSaltLengthAuto}},
			[][]byte{h256[:], h384[:], h256[:], h256[:]}},
	} {
		t.Run(string(c.kt), func(t *testing.T) {
			label := "key-" + string(c.kt)
			s, err := tok.GenerateKey(label, c.kt)
			if err != nil {
				t.Fatal(err)
			}
			ki, err := tok.KeyInfo(label)
			if err != nil {
				t.Fatal(err)
			}
			if ki.Type != c.kt || !ki.Sensitive || ki.Extractable || !ki.AlwaysSensitive || !ki.NeverExtractable ||
				!ki.Sign || !ki.Token || !ki.Private || ki.Label != label || len(ki.ID) != 16 {
				t.Errorf("KeyInfo = %+v", ki)
			}
			for i, opts := range c.opts {
				sig, err := s.Sign(rand.Reader, c.dgsts[i], opts)
				if err != nil {
					t.Fatalf("Sign(%T %v): %v", opts, opts.HashFunc(), err)
				}
				verify(t, s.Public(), c.dgsts[i], sig, opts)
			}
			if _, err := s.Sign(rand.Reader, h256[:20], crypto.SHA256); err == nil {
				t.Error("Sign accepted a digest of the wrong length")
			}
			for _, alg := range c.algs {
				selfSign(t, s, alg)
			}
			found, err := tok.FindKey(label)
			if err != nil {
				t.Fatal(err)
			}
			if !found.Public().(interface{ Equal(crypto.PublicKey) bool }).Equal(s.Public()) {
				t.Error("FindKey returned a different public key")
			}
			if k, ok := found.(*hsm.Key); !ok || k.Label() != label || k.Type() != c.kt {
				t.Errorf("FindKey returned %T %+v", found, found)
			}
		})
	}
}

func TestKeyLifecycle(t *testing.T) {
	_, tok := softhsmtest.New(t)
	digest := sha256.Sum256([]byte("lifecycle"))
	if _, err := tok.FindKey("absent"); !errors.Is(err, hsm.ErrKeyNotFound) {
		t.Errorf("FindKey(absent) = %v, want ErrKeyNotFound", err)
	}
	if _, err := tok.KeyInfo("absent"); !errors.Is(err, hsm.ErrKeyNotFound) {
		t.Errorf("KeyInfo(absent) = %v, want ErrKeyNotFound", err)
	}
	if err := tok.DeleteKey("absent"); !errors.Is(err, hsm.ErrKeyNotFound) {
		t.Errorf("DeleteKey(absent) = %v, want ErrKeyNotFound", err)
	}
	if _, err := tok.GenerateKey("k", "dsa-1024"); !errors.Is(err, hsm.ErrKeyType) {
		t.Errorf("GenerateKey(dsa) = %v, want ErrKeyType", err)
	}
	old, err := tok.GenerateKey("k", "")
	if err != nil {
		t.Fatal(err)
	}
	if _, err := tok.GenerateKey("k", hsm.ECDSAP384); !errors.Is(err, hsm.ErrKeyExists) {
		t.Errorf("duplicate GenerateKey = %v, want ErrKeyExists", err)
	}
	if err := tok.DeleteKey("k"); err != nil {
		t.Fatal(err)
	}
	if _, err := tok.FindKey("k"); !errors.Is(err, hsm.ErrKeyNotFound) {
		t.Errorf("FindKey after delete = %v, want ErrKeyNotFound", err)
	}
	if _, err := old.Sign(rand.Reader, digest[:], crypto.SHA256); !errors.Is(err, hsm.ErrKeyNotFound) {
		t.Errorf("Sign with deleted key = %v, want ErrKeyNotFound", err)
	}
	// A new key under the same label must not be used by the old signer.
	if _, err := tok.GenerateKey("k", ""); err != nil {
		t.Fatal(err)
	}
	if _, err := old.Sign(rand.Reader, digest[:], crypto.SHA256); !errors.Is(err, hsm.ErrKeyNotFound) {
		t.Errorf("Sign with replaced key = %v, want ErrKeyNotFound", err)
	}
}

// TestTokenFull: an operation the token answers CKR_DEVICE_MEMORY (SoftHSM
// cannot be made to return it for real, so the real operation path is
// given the real value) fails with ErrTokenFull at once, without a
// recovery, and the token stays up for the next operation.
func TestTokenFull(t *testing.T) {
	_, tok := softhsmtest.New(t)
	signer, err := tok.GenerateKey("k", hsm.ECDSAP256)
	if err != nil {
		t.Fatal(err)
	}
	err = tok.FailWith(pkcs11.CKR_DEVICE_MEMORY)
	if !errors.Is(err, hsm.ErrTokenFull) || errors.Is(err, hsm.ErrUnavailable) {
		t.Fatalf("CKR_DEVICE_MEMORY = %v, want ErrTokenFull", err)
	}
	if s := tok.Status(); !s.Up || s.Recoveries != 0 {
		t.Fatalf("status after a full token %+v", s)
	}
	if err := signVerify(signer, "after"); err != nil {
		t.Fatal(err)
	}
}
