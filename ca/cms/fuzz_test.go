package cms

import (
	"bytes"
	"crypto/rand"
	"crypto/sha256"
	"encoding/hex"
	"fmt"
	"os"
	"path/filepath"
	"testing"
	"time"
)

// Fuzz targets for every decoder of untrusted input: the device client
// parses what the server sends (EnvelopedData, AuthEnvelopedData, SignedData)
// and the server parses the CSR's attributes. The seed corpora in
// testdata/fuzz are real messages made with the committed test keys (see
// TestWriteFuzzCorpus), so that mutations reach the decryption and
// signature code, not only the outer DER.

var fuzzTime = time.Date(2030, 1, 1, 0, 0, 0, 0, time.UTC)

// fuzzKeys are the decryption keys tried on every input.
func fuzzKeys(t testing.TB) []*DecryptKey {
	p := pki(t)
	keys := []*DecryptKey{recipientCases[0].key(t, p), recipientCases[1].key(t, p)}
	for _, n := range fixtureNames.recipients {
		keys = append(keys, &DecryptKey{PrivateKey: p.recipients[n].key}) // trial: any rid
	}
	return keys
}

func FuzzParseEnvelopedData(f *testing.F) {
	p := pki(f)
	keys := fuzzKeys(f)
	der, _ := sealFor(f, p, recipientCases[0], AES128GCM)
	f.Add(der)
	f.Fuzz(func(t *testing.T, b []byte) {
		for _, k := range keys {
			d, err := Decrypt(b, k)
			if err != nil {
				continue
			}
			if d.ContentType == nil || !d.ContentEncryption.valid() || d.Recipient == 0 {
				t.Fatalf("decrypted without type, algorithm or recipient: %+v", d)
			}
			kp, err := OpenKeyPackage(b, k, VerifyOptions{Roots: p.roots, CurrentTime: fuzzTime})
			if err == nil {
				if err := checkOneAsymmetricKey(kp.PrivateKey, "fuzz"); err != nil {
					t.Fatalf("opened a package with a bad key: %v", err)
				}
			}
		}
	})
}

func FuzzParseSignedData(f *testing.F) {
	p := pki(f)
	d := newDevice(f, p, "p256")
	ci, _ := p.signer(f, "p256", true).SignKeyPackage(d.pkcs8, fuzzTime, nil)
	f.Add(ci)
	opts := VerifyOptions{Roots: p.roots, CurrentTime: fuzzTime}
	f.Fuzz(func(t *testing.T, b []byte) {
		kp, err := VerifyKeyPackage(b, opts)
		if err == nil {
			if err := checkOneAsymmetricKey(kp.PrivateKey, "fuzz"); err != nil || kp.Signer == nil || len(kp.Chains) == 0 {
				t.Fatalf("verified a package with a bad key or no chain: %v", err)
			}
		}
		// The bare SignedData, as found inside an EnvelopedData.
		if sd, err := parseSignedData(b); err == nil {
			_, _, _ = sd.verify()
		}
	})
}

func FuzzParseKeyRequest(f *testing.F) {
	key := pki(f).recipients["p256"].key
	der, _ := CreateCertificateRequest(rand.Reader, csrTemplate(), key,
		&KeyRequest{Delivery: DeliverAsymmetric, KeyID: []byte{1, 2}, Capabilities: ContentCapabilities(AES128GCM)})
	f.Add(der)
	f.Fuzz(func(t *testing.T, b []byte) {
		r, err := ParseKeyRequest(b)
		if err != nil {
			return
		}
		_, _ = r.ContentEncryption(128)
		if r.Delivery == DeliverPlain && r.Capabilities == nil {
			return
		}
		// What parses must build again, and parse to the same request.
		csr, err := CreateCertificateRequest(rand.Reader, csrTemplate(), key, r)
		if err != nil {
			t.Fatalf("rebuild %+v: %v", r, err)
		}
		back, err := ParseKeyRequest(csr)
		if err != nil || back.Delivery != r.Delivery || !bytes.Equal(back.KeyID, r.KeyID) || len(back.Capabilities) != len(r.Capabilities) {
			t.Fatalf("round trip: %+v -> %+v, %v", r, back, err)
		}
	})
}

func FuzzUnwrapPad(f *testing.F) {
	kek := testKEK128
	w, _ := WrapPad(kek, []byte("a key of some length"))
	f.Add(w)
	f.Fuzz(func(t *testing.T, b []byte) {
		if out, err := UnwrapPad(kek, b); err == nil {
			again, err := WrapPad(kek, out)
			if err != nil || !bytes.Equal(again, b) {
				t.Fatalf("unwrap/wrap not inverse: %x -> %x -> %x", b, out, again)
			}
		}
		if out, err := Unwrap(kek, b); err == nil {
			if again, err := Wrap(kek, out); err != nil || !bytes.Equal(again, b) {
				t.Fatalf("RFC 3394 unwrap/wrap not inverse")
			}
		}
	})
}

// TestWriteFuzzCorpus regenerates the committed seed corpora (real messages
// of every kind, made by this package and by openssl, with the committed
// keys); it only runs with -update-fixtures.
func TestWriteFuzzCorpus(t *testing.T) {
	if !*updateFixtures {
		t.Skip("corpus generator: runs with -update-fixtures only")
	}
	p := pki(t)
	add := func(target string, b []byte) {
		dir := filepath.Join("testdata", "fuzz", target)
		if err := os.MkdirAll(dir, 0o755); err != nil {
			t.Fatal(err)
		}
		sum := sha256.Sum256(b)
		body := fmt.Sprintf("go test fuzz v1\n[]byte(%q)\n", b)
		if err := os.WriteFile(filepath.Join(dir, hex.EncodeToString(sum[:8])), []byte(body), 0o644); err != nil {
			t.Fatal(err)
		}
	}
	for i, rc := range recipientCases {
		for _, ce := range allContent {
			d := newDevice(t, p, fixtureNames.signers[i%3])
			der, err := p.signer(t, fixtureNames.signers[(i+1)%3], i%2 == 0).SealKeyPackage(d.pkcs8, rc.rcpt(t, p),
				SealOptions{EncryptOptions: EncryptOptions{Content: ce, NoAuthAttrs: i%3 == 0}, SigningTime: fuzzTime})
			if err != nil {
				t.Fatal(err)
			}
			add("FuzzParseEnvelopedData", der)
		}
	}
	dir := t.TempDir()
	d := newDevice(t, p, "p256")
	for _, args := range [][]string{
		{"-secretkey", hex.EncodeToString(testKEK128), "-secretkeyid", hex.EncodeToString(testKEKID), "-aes-128-gcm"},
		{"-recip", p.recipients["rsa"].certFile, "-keyopt", "rsa_padding_mode:oaep", "-keyopt", "rsa_oaep_md:sha256", "-keyopt", "rsa_mgf1_md:sha256", "-aes-256-cbc"},
		{"-recip", p.recipients["p384"].certFile, "-keyopt", "ecdh_kdf_md:sha384", "-aes-256-gcm"},
	} {
		signed := opensslSigned(t, p, dir, "rsa", d.pkcs8)
		out := filepath.Join(dir, "env.der")
		openssl(t, append([]string{"cms", "-encrypt", "-binary", "-outform", "DER", "-in", signed, "-out", out}, args...)...)
		b, _ := os.ReadFile(out)
		add("FuzzParseEnvelopedData", b)
	}
	for i, n := range fixtureNames.signers {
		ci, err := p.signer(t, n, i%2 == 0).SignKeyPackage(newDevice(t, p, n).pkcs8, fuzzTime, nil)
		if err != nil {
			t.Fatal(err)
		}
		add("FuzzParseSignedData", ci)
		b, _ := os.ReadFile(opensslSigned(t, p, dir, n, d.pkcs8))
		add("FuzzParseSignedData", b)
	}
	for _, r := range []*KeyRequest{
		{Delivery: DeliverKEK, KeyID: testKEKID, Capabilities: ContentCapabilities(AES128GCM, AES128CBC)},
		{Delivery: DeliverAsymmetric, KeyID: p.recipients["p256"].cert.SubjectKeyId, Capabilities: ContentCapabilities(AES256CBC, AES256GCM)},
		{Delivery: DeliverKEK, KeyID: []byte{1}},
		{Capabilities: []Capability{{ID: oidAES128CBC, Parameters: []byte{0x05, 0x00}}}},
	} {
		b, err := CreateCertificateRequest(rand.Reader, csrTemplate(), p.recipients["rsa"].key, r)
		if err != nil {
			t.Fatal(err)
		}
		add("FuzzParseKeyRequest", b)
	}
	for _, n := range []int{1, 8, 9, 100} {
		w, _ := WrapPad(testKEK128, make([]byte, n))
		add("FuzzUnwrapPad", w)
	}
	w, _ := Wrap(testKEK128, make([]byte, 32))
	add("FuzzUnwrapPad", w)
}
