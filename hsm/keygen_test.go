//go:build cgo

package hsm_test

import (
	"bufio"
	"bytes"
	"crypto"
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/rsa"
	"crypto/x509"
	"errors"
	"fmt"
	"os"
	"os/exec"
	"strings"
	"testing"
	"time"

	"github.com/estca/estca/ca/cms"
	"github.com/estca/estca/hsm"
	"github.com/estca/estca/softhsm"
	"github.com/estca/estca/softhsm/softhsmtest"
)

// unwrapExported recovers the PKCS#8 key of an exported key as package ca
// does, and checks that it belongs to the reported public key.
func unwrapExported(t *testing.T, k *hsm.ExportedKey) crypto.PrivateKey {
	t.Helper()
	padded, err := cms.UnwrapPad(k.TransportKey, k.Wrapped)
	if err != nil {
		t.Fatalf("unwrap: %v", err)
	}
	der, err := cms.TrimDERPadding(padded)
	if err != nil {
		t.Fatalf("trim: %v", err)
	}
	priv, err := x509.ParsePKCS8PrivateKey(der)
	if err != nil {
		t.Fatalf("PKCS#8: %v", err)
	}
	pub := priv.(crypto.Signer).Public().(interface{ Equal(crypto.PublicKey) bool })
	if !pub.Equal(k.Public) {
		t.Fatal("unwrapped key does not match the reported public key")
	}
	return priv
}

func TestGenerateExportable(t *testing.T) {
	_, tok := softhsmtest.New(t)
	before, err := tok.CountKeyObjects()
	if err != nil {
		t.Fatal(err)
	}
	for _, c := range []struct {
		kt   hsm.KeyType
		want func(crypto.PublicKey) bool
	}{
		{hsm.ECDSAP256, func(p crypto.PublicKey) bool { k, ok := p.(*ecdsa.PublicKey); return ok && k.Curve == elliptic.P256() }},
		{hsm.ECDSAP384, func(p crypto.PublicKey) bool { k, ok := p.(*ecdsa.PublicKey); return ok && k.Curve == elliptic.P384() }},
		{hsm.RSA2048, func(p crypto.PublicKey) bool {
			k, ok := p.(*rsa.PublicKey)
			return ok && k.N.BitLen() == 2048 && k.E == 65537
		}},
		{hsm.RSA3072, func(p crypto.PublicKey) bool { k, ok := p.(*rsa.PublicKey); return ok && k.N.BitLen() == 3072 }},
	} {
		for _, keep := range []bool{false, true} {
			t.Run(fmt.Sprintf("%s keep=%t", c.kt, keep), func(t *testing.T) {
				k, err := tok.GenerateExportable(c.kt, keep)
				if err != nil {
					t.Fatal(err)
				}
				defer k.Zero()
				if k.Type != c.kt || !c.want(k.Public) {
					t.Fatalf("type %s public %T", k.Type, k.Public)
				}
				a := k.Attributes
				if !a.Local || !a.Sensitive || !a.Extractable || !a.AlwaysSensitive || a.NeverExtractable || a.Sign || a.Token != keep {
					t.Fatalf("attributes %+v", a)
				}
				if len(k.TransportKey) != 32 {
					t.Fatalf("transport key of %d bytes", len(k.TransportKey))
				}
				unwrapExported(t, k)
				if !keep {
					if k.Label != "" {
						t.Fatalf("label %q for a session key", k.Label)
					}
					return
				}
				if !strings.HasPrefix(k.Label, hsm.PendingPrefix) {
					t.Fatalf("label %q", k.Label)
				}
				if err := tok.DeleteKey(k.Label); err != nil {
					t.Fatal(err)
				}
			})
		}
	}
	// SoftHSM exports C_WrapKey: one call into a buffer, no length query
	// (which SoftHSM answers by wrapping the key once more); a buffer too
	// small is retried with the length the token asks for.
	if ok, _ := tok.OneCallWraps(); !ok {
		t.Error("SoftHSM exports C_WrapKey: the Token should wrap in one call")
	}
	t.Run("small wrap buffer", func(t *testing.T) {
		defer hsm.SetWrapBufferSize(hsm.SetWrapBufferSize(16))
		for _, kt := range []hsm.KeyType{hsm.ECDSAP256, hsm.RSA2048} {
			_, before := tok.OneCallWraps()
			k, err := tok.GenerateExportable(kt, false)
			if err != nil {
				t.Fatalf("%s: %v", kt, err)
			}
			unwrapExported(t, k)
			k.Zero()
			// Too small, then again at the length the token asked for.
			if _, after := tok.OneCallWraps(); after-before != 2 {
				t.Errorf("%s: %d one-call wraps, want 2 (the retry)", kt, after-before)
			}
		}
	})
	if _, err := tok.GenerateExportable("rsa-1024", false); !errors.Is(err, hsm.ErrKeyType) {
		t.Fatalf("rsa-1024: %v", err)
	}
	// Nothing of the session keys, their transport keys (or the deleted
	// kept ones) is left, session objects included.
	assertNoGenerated(t, tok, 0)
	if after, err := tok.CountKeyObjects(); err != nil || after != before {
		t.Fatalf("%d key objects after, %d before (%v)", after, before, err)
	}
}

// assertNoGenerated checks that the token holds no pending generated key
// and escrowed ones.
func assertNoGenerated(t *testing.T, tok *hsm.Token, escrowed int) {
	t.Helper()
	n, err := tok.CleanupGenerated()
	if err != nil || n != 0 {
		t.Fatalf("pending keys left: %d, %v", n, err)
	}
	es, err := tok.EscrowedKeys()
	if err != nil || len(es) != escrowed {
		t.Fatalf("escrowed %v, %v; want %d", es, err, escrowed)
	}
}

func TestEscrowAndCleanup(t *testing.T) {
	_, tok := softhsmtest.New(t)
	kept, err := tok.GenerateExportable(hsm.ECDSAP256, true)
	if err != nil {
		t.Fatal(err)
	}
	pending, err := tok.GenerateExportable(hsm.ECDSAP384, true)
	if err != nil {
		t.Fatal(err)
	}
	if err := tok.EscrowKey(kept.Label, "1a2b"); err != nil {
		t.Fatal(err)
	}
	for _, bad := range []struct{ label, serial string }{
		{pending.Label, "1A2B"}, {pending.Label, ""}, {"estca-issuing", "1a2b"}, {pending.Label, "1a2b"},
	} {
		if err := tok.EscrowKey(bad.label, bad.serial); err == nil {
			t.Errorf("EscrowKey(%q, %q) accepted", bad.label, bad.serial)
		}
	}
	es, err := tok.EscrowedKeys()
	if err != nil || len(es) != 1 || es[0].Serial != "1a2b" || es[0].Type != hsm.ECDSAP256 {
		t.Fatalf("escrowed %+v, %v", es, err)
	}
	n, err := tok.CleanupGenerated()
	if err != nil || n != 1 {
		t.Fatalf("cleanup %d, %v", n, err)
	}
	if err := tok.DeleteKey(pending.Label); !errors.Is(err, hsm.ErrKeyNotFound) {
		t.Fatalf("pending key survived the cleanup: %v", err)
	}
	assertNoGenerated(t, tok, 1)
	if err := tok.DestroyEscrowed("1a2b"); err != nil {
		t.Fatal(err)
	}
	if err := tok.DestroyEscrowed("1a2b"); !errors.Is(err, hsm.ErrKeyNotFound) {
		t.Fatalf("second destroy: %v", err)
	}
	assertNoGenerated(t, tok, 0)
}

func TestKEK(t *testing.T) {
	_, tok := softhsmtest.New(t)
	before, err := tok.CountKeyObjects()
	if err != nil {
		t.Fatal(err)
	}
	for _, n := range []int{16, 24, 32} {
		t.Run(fmt.Sprint(n*8), func(t *testing.T) {
			id := []byte(fmt.Sprintf("kek-%d", n))
			key := make([]byte, n)
			rand.Read(key)
			if err := tok.ImportKEK(id, key); err != nil {
				t.Fatal(err)
			}
			if err := tok.ImportKEK(id, key); !errors.Is(err, hsm.ErrKeyExists) {
				t.Fatalf("second import: %v", err)
			}
			k, err := tok.FindKEK(id)
			if err != nil {
				t.Fatal(err)
			}
			if r, err := tok.KEKValueReadable(id); err != nil || r {
				t.Fatalf("KEK value readable or extractable: %t, %v", r, err)
			}
			soft, err := cms.NewAESKEK(key)
			if err != nil {
				t.Fatal(err)
			}
			if !k.Algorithm().Equal(soft.Algorithm()) || !bytes.Equal(k.ID(), id) {
				t.Fatalf("algorithm %v, want %v", k.Algorithm(), soft.Algorithm())
			}
			for _, cekLen := range []int{16, 32} {
				cek := make([]byte, cekLen)
				rand.Read(cek)
				w, err := k.WrapKey(cek)
				if err != nil {
					t.Fatal(err)
				}
				// The token's RFC 3394 wrapping is what software computes.
				want, err := cms.Wrap(key, cek)
				if err != nil || !bytes.Equal(w, want) {
					t.Fatalf("token wrap %x, software %x (%v)", w, want, err)
				}
			}
			if _, err := k.WrapKey(make([]byte, 7)); err == nil {
				t.Fatal("wrapped a 7-byte key")
			}
		})
	}
	keks, err := tok.KEKs()
	if err != nil || len(keks) != 3 {
		t.Fatalf("KEKs %v, %v", keks, err)
	}
	// The content keys wrapped were session objects, destroyed at once.
	if after, err := tok.CountKeyObjects(); err != nil || after != before+3 {
		t.Fatalf("%d key objects after 3 imports, %d before (%v)", after, before, err)
	}
	for _, bad := range []struct{ id, key []byte }{
		{nil, make([]byte, 16)}, {[]byte("x"), make([]byte, 15)}, {bytes.Repeat([]byte("x"), 65), make([]byte, 16)},
	} {
		if err := tok.ImportKEK(bad.id, bad.key); err == nil {
			t.Errorf("ImportKEK(%x, %d bytes) accepted", bad.id, len(bad.key))
		}
	}
	if _, err := tok.FindKEK([]byte("nope")); !errors.Is(err, hsm.ErrKeyNotFound) {
		t.Fatalf("unknown KEK: %v", err)
	}
	held, err := tok.FindKEK([]byte("kek-16"))
	if err != nil {
		t.Fatal(err)
	}
	if err := tok.DeleteKEK([]byte("kek-16")); err != nil {
		t.Fatal(err)
	}
	// A KEK found before its deletion no longer wraps.
	if _, err := held.WrapKey(make([]byte, 16)); !errors.Is(err, hsm.ErrKeyNotFound) {
		t.Fatalf("wrap under a deleted KEK: %v", err)
	}
	if _, err := tok.FindKEK([]byte("kek-16")); !errors.Is(err, hsm.ErrKeyNotFound) {
		t.Fatalf("deleted KEK: %v", err)
	}
}

const keygenHelperEnv = "ESTCA_HSM_KEYGEN_HELPER"

// TestKeygenHelperProcess is the child of TestKeygenCrash: it generates a
// key kept for escrow and escrows it, then a pending one and a session
// key, says so, and waits to be killed.
func TestKeygenHelperProcess(t *testing.T) {
	conf := os.Getenv(keygenHelperEnv)
	if conf == "" {
		t.Skip("helper process only")
	}
	pin, err := os.ReadFile(os.Getenv("ESTCA_HSM_PINFILE"))
	if err != nil {
		fmt.Println("error:", err)
		os.Exit(1)
	}
	opts := hsm.Options{Module: os.Getenv("ESTCA_HSM_MODULE"), TokenLabel: softhsmtest.Label, PIN: bytes.TrimSuffix(pin, []byte("\n"))}
	tok, err := hsm.Open(opts)
	if err != nil {
		fmt.Println("error:", err)
		os.Exit(1)
	}
	k, err := tok.GenerateExportable(hsm.ECDSAP256, true)
	if err == nil {
		err = tok.EscrowKey(k.Label, "5e")
	}
	if err == nil {
		_, err = tok.GenerateExportable(hsm.ECDSAP256, true)
	}
	if err == nil {
		_, err = tok.GenerateExportable(hsm.ECDSAP384, false)
	}
	if err != nil {
		fmt.Println("error:", err)
		os.Exit(1)
	}
	fmt.Println("ready")
	time.Sleep(time.Minute)
	os.Exit(2)
}

// TestKeygenCrash kills (SIGKILL) a process that holds a generated key
// pending and an escrowed one, then checks in a new process that
// CleanupGenerated destroys the pending key and keeps the escrowed one:
// what a crash of estca serve between generation and response leaves.
func TestKeygenCrash(t *testing.T) {
	st := softhsmtest.Provision(t)
	cmd := exec.Command(os.Args[0], "-test.run=^TestKeygenHelperProcess$", "-test.count=1")
	cmd.Env = append(os.Environ(), keygenHelperEnv+"="+os.Getenv(softhsm.ConfEnv),
		"ESTCA_HSM_MODULE="+st.Module, "ESTCA_HSM_PINFILE="+st.PINFile)
	cmd.Stderr = os.Stderr
	out, err := cmd.StdoutPipe()
	if err != nil {
		t.Fatal(err)
	}
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = cmd.Process.Kill(); _ = cmd.Wait() })
	sc := bufio.NewScanner(out)
	if !sc.Scan() || sc.Text() != "ready" {
		t.Fatalf("helper: %q", sc.Text())
	}
	if err := cmd.Process.Kill(); err != nil {
		t.Fatal(err)
	}
	_ = cmd.Wait()

	tok, err := hsm.Open(softhsmtest.Options(t, st))
	if err != nil {
		t.Fatal(err)
	}
	defer tok.Close()
	n, err := tok.CleanupGenerated()
	if err != nil || n != 1 {
		t.Fatalf("cleanup after kill -9: %d pending destroyed, %v; want 1", n, err)
	}
	assertNoGenerated(t, tok, 1)
}

// BenchmarkGenerateExportable: one device key generated in SoftHSM and
// exported wrapped (session objects), by key type.
func BenchmarkGenerateExportable(b *testing.B) {
	_, tok := softhsmtest.New(b)
	for _, kt := range []hsm.KeyType{hsm.ECDSAP256, hsm.ECDSAP384, hsm.RSA2048} {
		b.Run(string(kt), func(b *testing.B) {
			for b.Loop() {
				k, err := tok.GenerateExportable(kt, false)
				if err != nil {
					b.Fatal(err)
				}
				k.Zero()
			}
		})
	}
}

// BenchmarkKEK: finding a key-encryption key and wrapping a content key
// under it in the token.
func BenchmarkKEK(b *testing.B) {
	_, tok := softhsmtest.New(b)
	if err := tok.ImportKEK([]byte("kek"), make([]byte, 16)); err != nil {
		b.Fatal(err)
	}
	b.Run("find", func(b *testing.B) {
		for b.Loop() {
			if _, err := tok.FindKEK([]byte("kek")); err != nil {
				b.Fatal(err)
			}
		}
	})
	k, err := tok.FindKEK([]byte("kek"))
	if err != nil {
		b.Fatal(err)
	}
	cek := make([]byte, 16)
	b.Run("wrap", func(b *testing.B) {
		for b.Loop() {
			if _, err := k.WrapKey(cek); err != nil {
				b.Fatal(err)
			}
		}
	})
}
