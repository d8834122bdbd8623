package cms

import (
	"bytes"
	"crypto"
	"crypto/ecdh"
	"crypto/ecdsa"
	"crypto/rand"
	"crypto/x509"
	"crypto/x509/pkix"
	"encoding/asn1"
	"errors"
	"fmt"
	"io"
	"testing"
	"time"

	"github.com/estca/estca/policy/pkitest"
	"golang.org/x/crypto/cryptobyte"
	cbasn1 "golang.org/x/crypto/cryptobyte/asn1"
)

// recipientCase is one recipient set-up: what the server seals to and what
// the device decrypts with.
type recipientCase struct {
	name string
	kind RecipientKind
	rcpt func(t testing.TB, p *testPKI) *Recipient
	key  func(t testing.TB, p *testPKI) *DecryptKey
}

var testKEK128 = bytes.Repeat([]byte{0x4b}, 16)
var testKEK256 = bytes.Repeat([]byte{0x5a}, 32)
var testKEKID = []byte("device-42 kek")

func kekCase(name string, key []byte) recipientCase {
	return recipientCase{name: name, kind: RecipientKEK,
		rcpt: func(t testing.TB, _ *testPKI) *Recipient {
			k, err := NewAESKEK(key)
			if err != nil {
				t.Fatal(err)
			}
			r, err := NewKEKRecipient(testKEKID, k)
			if err != nil {
				t.Fatal(err)
			}
			return r
		},
		key: func(t testing.TB, _ *testPKI) *DecryptKey {
			k, err := NewAESKEK(key)
			if err != nil {
				t.Fatal(err)
			}
			return &DecryptKey{KEKID: testKEKID, KEK: k}
		}}
}

func certCase(name, recip string, kind RecipientKind, bySKI bool) recipientCase {
	return recipientCase{name: name, kind: kind,
		rcpt: func(t testing.TB, p *testPKI) *Recipient {
			r, err := NewCertificateRecipient(p.recipients[recip].cert, bySKI)
			if err != nil {
				t.Fatal(err)
			}
			return r
		},
		key: func(t testing.TB, p *testPKI) *DecryptKey {
			kc := p.recipients[recip]
			return &DecryptKey{PrivateKey: kc.key, Certificate: kc.cert}
		}}
}

var recipientCases = []recipientCase{
	kekCase("kekri-aes128", testKEK128),
	kekCase("kekri-aes256", testKEK256),
	certCase("ktri-rsa-ias", "rsa", RecipientKeyTrans, false),
	certCase("ktri-rsa-ski", "rsa", RecipientKeyTrans, true),
	certCase("kari-p256-ias", "p256", RecipientKeyAgree, false),
	certCase("kari-p256-ski", "p256", RecipientKeyAgree, true),
	certCase("kari-p384-ias", "p384", RecipientKeyAgree, false),
}

var allContent = []ContentEncryption{AES128CBC, AES256CBC, AES128GCM, AES256GCM}

// sealCase is one cell of the sealing matrix: every recipient case with
// every content encryption, the signer, the device key type, the signer
// identifier and the authAttrs choice rotating across the cells.
type sealCase struct {
	rc             recipientCase
	ce             ContentEncryption
	signer, device string
	bySKI, noAuth  bool
}

func (c sealCase) String() string {
	return fmt.Sprintf("%s/%s/signer-%s/key-%s", c.rc.name, c.ce, c.signer, c.device)
}

func sealMatrix() []sealCase {
	kinds := []string{"p256", "p384", "rsa"}
	var cases []sealCase
	for _, rc := range recipientCases {
		for _, ce := range allContent {
			i := len(cases) + 1
			cases = append(cases, sealCase{rc: rc, ce: ce, signer: kinds[i%3], device: kinds[(i/3)%3],
				bySKI: i%2 == 0, noAuth: i%4 == 1})
		}
	}
	return cases
}

// TestSealOpenRoundTrip seals a key package for every recipient kind and
// content encryption, with each signer and device key type in turn, and
// opens it with this package's parser.
func TestSealOpenRoundTrip(t *testing.T) {
	t.Parallel()
	p := pki(t)
	for _, c := range sealMatrix() {
		rc, ce, signerName := c.rc, c.ce, c.signer
		t.Run(c.String(), func(t *testing.T) {
			t.Parallel()
			d := newDevice(t, p, c.device)
			s := p.signer(t, signerName, c.bySKI)
			st := time.Date(2026, 3, 4, 5, 6, 7, 0, time.UTC)
			der, err := s.SealKeyPackage(d.pkcs8, rc.rcpt(t, p), SealOptions{
				EncryptOptions: EncryptOptions{Content: ce, NoAuthAttrs: c.noAuth}, SigningTime: st})
			if err != nil {
				t.Fatal(err)
			}
			kp, err := OpenKeyPackage(der, rc.key(t, p), p.verifyOptions())
			if err != nil {
				t.Fatal(err)
			}
			defer kp.Zero()
			if !bytes.Equal(kp.PrivateKey, d.pkcs8) {
				t.Fatal("recovered key differs from the sealed one")
			}
			if kp.ContentEncryption != ce || kp.Recipient != rc.kind {
				t.Fatalf("protection = %v/%v, want %v/%v", kp.ContentEncryption, kp.Recipient, ce, rc.kind)
			}
			if !kp.SigningTime.Equal(st) || !kp.Signer.Equal(p.signers[signerName].cert) || len(kp.Chains) == 0 {
				t.Fatalf("signer %v at %v, %d chains", kp.Signer.Subject, kp.SigningTime, len(kp.Chains))
			}
			priv, err := x509.ParsePKCS8PrivateKey(kp.PrivateKey)
			if err != nil {
				t.Fatal(err)
			}
			if !priv.(interface{ Public() crypto.PublicKey }).Public().(interface{ Equal(crypto.PublicKey) bool }).Equal(d.cert.PublicKey) {
				t.Fatal("recovered key does not match the device certificate")
			}
		})
	}
}

// TestSignedDataExactBuffer: the buffers holding the key in the clear are
// allocated once at their exact size, so no grown copy is left unzeroed.
func TestSignedDataExactBuffer(t *testing.T) {
	t.Parallel()
	p := pki(t)
	d := newDevice(t, p, "rsa")
	ci, sd, err := p.signer(t, "rsa", false).signedData(d.pkcs8, time.Now(), nil)
	if err != nil {
		t.Fatal(err)
	}
	if cap(ci) != len(ci) || &sd[len(sd)-1] != &ci[len(ci)-1] {
		t.Fatalf("ContentInfo buffer len %d cap %d; SignedData not inside it", len(ci), cap(ci))
	}
	kp, err := VerifyKeyPackage(ci, p.verifyOptions())
	if err != nil || !bytes.Equal(kp.PrivateKey, d.pkcs8) {
		t.Fatalf("VerifyKeyPackage: %v", err)
	}
}

// TestDecryptTrialKey: a device that knows only its private key (no
// certificate, no key identifier) still finds its recipient entry.
func TestDecryptTrialKey(t *testing.T) {
	t.Parallel()
	p := pki(t)
	d := newDevice(t, p, "p256")
	for _, name := range []string{"rsa", "p256"} {
		r, err := NewCertificateRecipient(p.recipients[name].cert, true)
		if err != nil {
			t.Fatal(err)
		}
		der, err := p.signer(t, "p256", false).SealKeyPackage(d.pkcs8, r, SealOptions{})
		if err != nil {
			t.Fatal(err)
		}
		kp, err := OpenKeyPackage(der, &DecryptKey{PrivateKey: p.recipients[name].key}, p.verifyOptions())
		if err != nil || !bytes.Equal(kp.PrivateKey, d.pkcs8) {
			t.Fatalf("%s: %v", name, err)
		}
	}
	// An *ecdh.PrivateKey and a raw public-key recipient with ukm.
	ek := p.recipients["p384"].key.(*ecdsa.PrivateKey)
	eh, err := ek.ECDH()
	if err != nil {
		t.Fatal(err)
	}
	r, err := NewPublicKeyRecipient(eh.PublicKey(), []byte{1, 2, 3})
	if err != nil {
		t.Fatal(err)
	}
	r.ukm = []byte("user keying material")
	der, err := p.signer(t, "p384", true).SealKeyPackage(d.pkcs8, r, SealOptions{EncryptOptions: EncryptOptions{Content: AES256GCM}})
	if err != nil {
		t.Fatal(err)
	}
	kp, err := OpenKeyPackage(der, &DecryptKey{PrivateKey: eh, SubjectKeyID: []byte{1, 2, 3}}, p.verifyOptions())
	if err != nil || !bytes.Equal(kp.PrivateKey, d.pkcs8) {
		t.Fatalf("ecdh key with ukm: %v", err)
	}
}

// faultySigner flips a bit of every signature, like a failing HSM.
type faultySigner struct{ crypto.Signer }

func (f faultySigner) Sign(r io.Reader, d []byte, o crypto.SignerOpts) ([]byte, error) {
	sig, err := f.Signer.Sign(r, d, o)
	if err == nil {
		sig[len(sig)/2] ^= 0x10
	}
	return sig, err
}

func TestSignerRejects(t *testing.T) {
	t.Parallel()
	p := pki(t)
	d := newDevice(t, p, "p256")
	for _, name := range fixtureNames.signers {
		kc := p.signers[name]
		s, err := NewSigner(faultySigner{kc.key}, kc.cert, SignerOptions{})
		if err != nil {
			t.Fatal(err)
		}
		if out, err := s.SignKeyPackage(d.pkcs8, time.Time{}, nil); !errors.Is(err, ErrSignature) || out != nil {
			t.Errorf("%s: faulty signature: %v, %d bytes out", name, err, len(out))
		}
		r, _ := NewCertificateRecipient(p.recipients["p256"].cert, false)
		if out, err := s.SealKeyPackage(d.pkcs8, r, SealOptions{}); !errors.Is(err, ErrSignature) || out != nil {
			t.Errorf("%s: faulty signature sealed: %v", name, err)
		}
	}
	if _, err := NewSigner(p.signers["p256"].key, p.signers["p384"].cert, SignerOptions{}); !errors.Is(err, ErrKeyMismatch) {
		t.Errorf("key of another certificate: %v", err)
	}
	kc := p.recipients["rsa"] // key usage keyEncipherment|digitalSignature: fine
	if _, err := NewSigner(kc.key, kc.cert, SignerOptions{}); err != nil {
		t.Errorf("digitalSignature certificate refused: %v", err)
	}
	noDS := issue(t, &x509.Certificate{Subject: pkix.Name{CommonName: "no ds"}, KeyUsage: x509.KeyUsageKeyAgreement},
		p.signers["p256"].key.Public(), p.issuing.cert, p.issuing.key)
	if _, err := NewSigner(p.signers["p256"].key, noDS, SignerOptions{}); !errors.Is(err, ErrKeyMismatch) {
		t.Errorf("certificate without digitalSignature: %v", err)
	}
	p224 := pkitest.NewKey(t, "p224")
	c224 := issue(t, &x509.Certificate{Subject: pkix.Name{CommonName: "p224"}}, p224.Public(), p.issuing.cert, p.issuing.key)
	if _, err := NewSigner(p224, c224, SignerOptions{}); !errors.Is(err, ErrUnsupported) {
		t.Errorf("P-224 signer: %v", err)
	}
	if _, err := p.signer(t, "p256", false).SignKeyPackage([]byte{0x30, 0x03, 0x02, 0x01, 0x00}, time.Time{}, nil); !errors.Is(err, ErrMalformed) {
		t.Errorf("bad PKCS#8: %v", err)
	}
}

func TestRecipientRejects(t *testing.T) {
	t.Parallel()
	small := pkitest.NewKey(t, "rsa1024")
	if _, err := NewPublicKeyRecipient(small.Public(), []byte{1}); !errors.Is(err, ErrKeyMismatch) {
		t.Errorf("RSA-1024: %v", err)
	}
	if _, err := NewPublicKeyRecipient(pkitest.NewKey(t, "p224").Public(), []byte{1}); err == nil {
		t.Error("P-224 accepted")
	}
	x, _ := ecdh.X25519().GenerateKey(rand.Reader)
	if _, err := NewPublicKeyRecipient(x.PublicKey(), []byte{1}); !errors.Is(err, ErrUnsupported) {
		t.Errorf("X25519: %v", err)
	}
	if _, err := NewPublicKeyRecipient(small.Public(), nil); err == nil {
		t.Error("empty key identifier accepted")
	}
	if _, err := NewKEKRecipient(nil, nil); err == nil {
		t.Error("empty KEK recipient accepted")
	}
}

// sealFor makes a sealed key package for a recipient case.
func sealFor(t testing.TB, p *testPKI, rc recipientCase, ce ContentEncryption) ([]byte, device) {
	t.Helper()
	d := newDevice(t, p, "p256")
	der, err := p.signer(t, "p256", false).SealKeyPackage(d.pkcs8, rc.rcpt(t, p), SealOptions{EncryptOptions: EncryptOptions{Content: ce}})
	if err != nil {
		t.Fatal(err)
	}
	return der, d
}

func TestOpenWrongKeys(t *testing.T) {
	t.Parallel()
	p := pki(t)
	otherKEK, _ := NewAESKEK(bytes.Repeat([]byte{1}, 16))
	otherKEK256, _ := NewAESKEK(bytes.Repeat([]byte{1}, 32))
	otherRSA := pkitest.NewKey(t, "rsa")
	otherEC := pkitest.NewKey(t, "p256")
	for _, tc := range []struct {
		name string
		rc   recipientCase
		key  *DecryptKey
		want error
	}{
		{"kek: wrong key", recipientCases[0], &DecryptKey{KEKID: testKEKID, KEK: otherKEK}, ErrDecrypt},
		{"kek: wrong size", recipientCases[0], &DecryptKey{KEKID: testKEKID, KEK: otherKEK256}, ErrDecrypt},
		{"kek: wrong id", recipientCases[0], &DecryptKey{KEKID: []byte("x"), KEK: otherKEK}, ErrNoRecipient},
		{"ktri: wrong key, right cert", recipientCases[2], &DecryptKey{PrivateKey: otherRSA, Certificate: p.recipients["rsa"].cert}, ErrDecrypt},
		{"ktri: wrong key, trial", recipientCases[2], &DecryptKey{PrivateKey: otherRSA}, ErrDecrypt},
		{"ktri: other cert", recipientCases[2], &DecryptKey{PrivateKey: p.recipients["rsa"].key, Certificate: p.recipients["p256"].cert}, ErrNoRecipient},
		{"ktri: ski mismatch", recipientCases[3], &DecryptKey{PrivateKey: p.recipients["rsa"].key, SubjectKeyID: []byte{9}}, ErrNoRecipient},
		{"ktri: EC key", recipientCases[2], &DecryptKey{PrivateKey: p.recipients["p256"].key}, ErrNoRecipient},
		{"kari: wrong key, right cert", recipientCases[4], &DecryptKey{PrivateKey: otherEC, Certificate: p.recipients["p256"].cert}, ErrDecrypt},
		{"kari: wrong curve", recipientCases[4], &DecryptKey{PrivateKey: p.recipients["p384"].key}, ErrDecrypt},
		{"kari: RSA key", recipientCases[4], &DecryptKey{PrivateKey: p.recipients["rsa"].key}, ErrNoRecipient},
		{"kari: KEK only", recipientCases[4], &DecryptKey{KEKID: testKEKID, KEK: otherKEK}, ErrNoRecipient},
	} {
		t.Run(tc.name, func(t *testing.T) {
			t.Parallel()
			for _, ce := range []ContentEncryption{AES128CBC, AES128GCM} {
				der, _ := sealFor(t, p, tc.rc, ce)
				kp, err := OpenKeyPackage(der, tc.key, p.verifyOptions())
				if !errors.Is(err, tc.want) || kp != nil {
					t.Fatalf("%v: got %v, want %v", ce, err, tc.want)
				}
			}
		})
	}
}

// ciphertextOffset finds the encrypted content inside a sealed message.
func ciphertextOffset(t testing.TB, der []byte) (start, end int, env *envelope) {
	t.Helper()
	ct, content, err := parseContentInfo(der)
	if err != nil {
		t.Fatal(err)
	}
	env, err = parseEnvelope(content, ct.Equal(oidAuthEnvelopedData))
	if err != nil {
		t.Fatal(err)
	}
	start = bytes.Index(der, env.ciphertext)
	return start, start + len(env.ciphertext), env
}

func flipAt(b []byte, i int) []byte {
	c := bytes.Clone(b)
	c[i] ^= 0x01
	return c
}

func TestOpenTampered(t *testing.T) {
	t.Parallel()
	p := pki(t)
	for _, rc := range []recipientCase{recipientCases[0], recipientCases[2], recipientCases[4]} {
		t.Run(rc.name, func(t *testing.T) {
			t.Parallel()
			key := rc.key(t, p)
			// GCM: any change to ciphertext or tag fails the tag check.
			der, _ := sealFor(t, p, rc, AES256GCM)
			start, end, env := ciphertextOffset(t, der)
			macAt := bytes.LastIndex(der, env.mac)
			for _, i := range []int{start, (start + end) / 2, end - 1, macAt, len(der) - 1} {
				if _, err := OpenKeyPackage(flipAt(der, i), key, p.verifyOptions()); !errors.Is(err, ErrDecrypt) {
					t.Errorf("GCM flip at %d: %v, want ErrDecrypt", i, err)
				}
			}
			// CBC: the last block fails at the padding, others at parsing
			// or at the signature check; nothing opens.
			der, _ = sealFor(t, p, rc, AES128CBC)
			start, end, _ = ciphertextOffset(t, der)
			if _, err := OpenKeyPackage(flipAt(der, end-1), key, p.verifyOptions()); !errors.Is(err, ErrDecrypt) {
				t.Errorf("CBC flip in the padding: %v, want ErrDecrypt", err)
			}
			for i := start; i < end-16; i += 7 {
				_, err := OpenKeyPackage(flipAt(der, i), key, p.verifyOptions())
				if !errors.Is(err, ErrMalformed) && !errors.Is(err, ErrSignature) && !errors.Is(err, ErrDecrypt) &&
					!errors.Is(err, ErrUnsupported) && !errors.Is(err, ErrCertificate) {
					t.Fatalf("CBC flip at %d: %v", i, err)
				}
			}
		})
	}
}

// TestVerifyTampered changes signed content, signature and signer and
// expects the matching error.
func TestVerifyTampered(t *testing.T) {
	t.Parallel()
	p := pki(t)
	d := newDevice(t, p, "p256")
	for _, name := range fixtureNames.signers {
		t.Run(name, func(t *testing.T) {
			t.Parallel()
			s := p.signer(t, name, false)
			ci, err := s.SignKeyPackage(d.pkcs8, time.Now(), nil)
			if err != nil {
				t.Fatal(err)
			}
			_, content, _ := parseContentInfo(ci)
			parsed, err := parseSignedData(content)
			if err != nil {
				t.Fatal(err)
			}
			sigAt := bytes.LastIndex(ci, parsed.signer.signature)
			keyAt := bytes.Index(ci, d.pkcs8)
			attrsAt := bytes.Index(ci, parsed.signer.signedAttrs)
			for _, tc := range []struct {
				name string
				at   int
				want error
			}{
				{"signature", sigAt + len(parsed.signer.signature) - 3, ErrSignature},
				{"key in content", keyAt + len(d.pkcs8) - 5, ErrSignature},
				{"signed attribute value", attrsAt + len(parsed.signer.signedAttrs) - 2, ErrSignature},
			} {
				bad := flipAt(ci, tc.at)
				if _, err := VerifyKeyPackage(bad, p.verifyOptions()); !errors.Is(err, tc.want) {
					t.Errorf("%s: %v, want %v", tc.name, err, tc.want)
				}
				// The same SignedData, encrypted: OpenKeyPackage refuses too.
				_, bc, _ := parseContentInfo(bad)
				r, _ := NewCertificateRecipient(p.recipients["p256"].cert, false)
				enc, err := Encrypt(bc, oidSignedData, r, EncryptOptions{})
				if err != nil {
					t.Fatal(err)
				}
				key := &DecryptKey{PrivateKey: p.recipients["p256"].key, Certificate: p.recipients["p256"].cert}
				if _, err := OpenKeyPackage(enc, key, p.verifyOptions()); !errors.Is(err, tc.want) {
					t.Errorf("%s, encrypted: %v, want %v", tc.name, err, tc.want)
				}
			}
		})
	}
}

func TestVerifyChain(t *testing.T) {
	t.Parallel()
	p := pki(t)
	d := newDevice(t, p, "p384")
	otherRootKey := pkitest.NewKey(t, "p256")
	otherRoot := issue(t, &x509.Certificate{Subject: pkix.Name{CommonName: "other root"}, IsCA: true,
		BasicConstraintsValid: true, KeyUsage: x509.KeyUsageCertSign}, otherRootKey.Public(), nil, otherRootKey)
	otherPool := x509.NewCertPool()
	otherPool.AddCert(otherRoot)
	kc := p.signers["p384"]
	noChain, err := NewSigner(kc.key, kc.cert, SignerOptions{}) // issuing CA not included
	if err != nil {
		t.Fatal(err)
	}
	withChain := p.signer(t, "p384", true)
	full, _ := withChain.SignKeyPackage(d.pkcs8, time.Time{}, nil)
	bare, _ := noChain.SignKeyPackage(d.pkcs8, time.Time{}, nil)
	for _, tc := range []struct {
		name string
		der  []byte
		o    VerifyOptions
		want error
	}{
		{"other root", full, VerifyOptions{Roots: otherPool}, ErrCertificate},
		{"after expiry", full, VerifyOptions{Roots: p.roots, CurrentTime: time.Date(2200, 1, 1, 0, 0, 0, 0, time.UTC)}, ErrCertificate},
		{"missing intermediate", bare, VerifyOptions{Roots: p.roots}, ErrCertificate},
		{"intermediate given", bare, VerifyOptions{Roots: p.roots, Intermediates: []*x509.Certificate{p.issuing.cert}}, nil},
		{"server auth usage", full, VerifyOptions{Roots: p.roots, KeyUsages: []x509.ExtKeyUsage{x509.ExtKeyUsageServerAuth}}, nil},
	} {
		_, err := VerifyKeyPackage(tc.der, tc.o)
		if !errors.Is(err, tc.want) && !(tc.want == nil && err == nil) {
			t.Errorf("%s: %v, want %v", tc.name, err, tc.want)
		}
	}
	if _, err := VerifyKeyPackage(full, VerifyOptions{}); err == nil {
		t.Error("no roots: accepted")
	}
}

// replaceOID swaps one OID encoding for another of the same length.
func replaceOID(t testing.TB, der []byte, from, to asn1.ObjectIdentifier) []byte {
	t.Helper()
	f, g := oidDER(from), oidDER(to)
	if len(f) != len(g) || !bytes.Contains(der, f) {
		t.Fatalf("cannot replace %v by %v", from, to)
	}
	return bytes.ReplaceAll(der, f, g)
}

func TestUnknownOIDs(t *testing.T) {
	t.Parallel()
	p := pki(t)
	aes128OFB := asn1.ObjectIdentifier{2, 16, 840, 1, 101, 3, 4, 1, 3}
	aes128CCM := asn1.ObjectIdentifier{2, 16, 840, 1, 101, 3, 4, 1, 7}
	aes128WrapPad := asn1.ObjectIdentifier{2, 16, 840, 1, 101, 3, 4, 1, 8}
	cofactorKDF := asn1.ObjectIdentifier{1, 3, 132, 1, 14, 1} // dhSinglePass-cofactorDH-sha256kdf
	sha224KDF := asn1.ObjectIdentifier{1, 3, 132, 1, 11, 0}
	rsaPKCS1 := asn1.ObjectIdentifier{1, 2, 840, 113549, 1, 1, 2} // md2WithRSA, same length as OAEP
	for _, tc := range []struct {
		name     string
		rc       recipientCase
		ce       ContentEncryption
		from, to asn1.ObjectIdentifier
		want     error
	}{
		{"CBC to OFB", recipientCases[0], AES128CBC, oidAES128CBC, aes128OFB, ErrUnsupported},
		{"GCM to CCM", recipientCases[0], AES128GCM, oidAES128GCM, aes128CCM, ErrUnsupported},
		{"GCM in EnvelopedData", recipientCases[0], AES128GCM, oidAuthEnvelopedData, asn1.ObjectIdentifier{1, 2, 840, 113549, 1, 9, 16, 1, 2}, ErrUnsupported},
		{"KEK wrap-pad", recipientCases[0], AES128CBC, oidAES128Wrap, aes128WrapPad, ErrUnsupported},
		{"KARI cofactor KDF", recipientCases[4], AES128CBC, oidStdDHSHA256KDF, cofactorKDF, ErrUnsupported},
		{"KARI sha224 KDF", recipientCases[4], AES128CBC, oidStdDHSHA256KDF, sha224KDF, ErrUnsupported},
		{"KARI wrap-pad", recipientCases[4], AES128CBC, oidAES128Wrap, aes128WrapPad, ErrUnsupported},
		{"KTRI PKCS1", recipientCases[2], AES128CBC, oidRSAESOAEP, rsaPKCS1, ErrUnsupported},
		{"KTRI OAEP sha224", recipientCases[2], AES128CBC, oidHashSHA256, asn1.ObjectIdentifier{2, 16, 840, 1, 101, 3, 4, 2, 4}, ErrUnsupported},
	} {
		t.Run(tc.name, func(t *testing.T) {
			t.Parallel()
			der, _ := sealFor(t, p, tc.rc, tc.ce)
			_, err := OpenKeyPackage(replaceOID(t, der, tc.from, tc.to), tc.rc.key(t, p), p.verifyOptions())
			if !errors.Is(err, tc.want) {
				t.Fatalf("got %v, want %v", err, tc.want)
			}
		})
	}
	// Inside the SignedData.
	d := newDevice(t, p, "p256")
	ci, err := p.signer(t, "p256", false).SignKeyPackage(d.pkcs8, time.Time{}, nil)
	if err != nil {
		t.Fatal(err)
	}
	for _, tc := range []struct {
		name     string
		from, to asn1.ObjectIdentifier
	}{
		{"ecdsa-with-SHA224", oidSigECDSAWithSHA256, asn1.ObjectIdentifier{1, 2, 840, 10045, 4, 3, 1}},
		{"digest sha224", oidHashSHA256, asn1.ObjectIdentifier{2, 16, 840, 1, 101, 3, 4, 2, 4}},
		{"id-ct-KP-keyPackage", oidAsymmetricKeyPackage, asn1.ObjectIdentifier{2, 16, 840, 1, 101, 2, 1, 2, 78, 2}},
		{"enveloped, not signed", oidSignedData, oidEnvelopedData},
	} {
		if _, err := VerifyKeyPackage(replaceOID(t, ci, tc.from, tc.to), p.verifyOptions()); !errors.Is(err, ErrUnsupported) {
			t.Errorf("%s: %v, want ErrUnsupported", tc.name, err)
		}
	}
}

// TestTruncatedAndOversized: every prefix of a valid message, trailing
// data and oversized input are refused as malformed or too large.
func TestTruncatedAndOversized(t *testing.T) {
	t.Parallel()
	p := pki(t)
	der, _ := sealFor(t, p, recipientCases[0], AES128GCM)
	key := recipientCases[0].key(t, p)
	for n := 0; n < len(der); n++ {
		if _, err := Decrypt(der[:n], key); !errors.Is(err, ErrMalformed) {
			t.Fatalf("prefix of %d bytes: %v", n, err)
		}
	}
	if _, err := Decrypt(append(bytes.Clone(der), 0), key); !errors.Is(err, ErrMalformed) {
		t.Errorf("trailing byte: %v", err)
	}
	if _, err := Decrypt(make([]byte, MaxMessageSize+1), key); !errors.Is(err, ErrTooLarge) {
		t.Errorf("oversized: %v", err)
	}
	d := newDevice(t, p, "p256")
	ci, _ := p.signer(t, "p256", false).SignKeyPackage(d.pkcs8, time.Time{}, nil)
	for n := 0; n < len(ci); n++ {
		if _, err := VerifyKeyPackage(ci[:n], p.verifyOptions()); !errors.Is(err, ErrMalformed) {
			t.Fatalf("SignedData prefix of %d bytes: %v", n, err)
		}
	}
	if _, err := VerifyKeyPackage(make([]byte, MaxMessageSize+1), p.verifyOptions()); !errors.Is(err, ErrTooLarge) {
		t.Errorf("oversized SignedData: %v", err)
	}
}

// TestAuthAttrs: the default AuthEnvelopedData carries the RFC 5083
// content-type authAttr, authenticated as AAD; NoAuthAttrs omits it.
func TestAuthAttrs(t *testing.T) {
	t.Parallel()
	p := pki(t)
	r := recipientCases[0].rcpt(t, p)
	key := recipientCases[0].key(t, p)
	for _, noAuth := range []bool{false, true} {
		der, err := Encrypt([]byte("content"), oidSignedData, r, EncryptOptions{Content: AES128GCM, NoAuthAttrs: noAuth})
		if err != nil {
			t.Fatal(err)
		}
		_, _, env := ciphertextOffset(t, der)
		if (env.authAttrs == nil) != noAuth {
			t.Fatalf("NoAuthAttrs %v: authAttrs present %v", noAuth, env.authAttrs != nil)
		}
		if d, err := Decrypt(der, key); err != nil || string(d.Content) != "content" {
			t.Fatalf("NoAuthAttrs %v: %v", noAuth, err)
		}
		if noAuth {
			continue
		}
		// The content type in authAttrs is authenticated: naming another
		// type (same length) must fail, either at the attribute check or
		// at the tag.
		bad := bytes.Clone(der)
		i := bytes.LastIndex(bad, oidDER(oidSignedData))
		bad[i+len(oidDER(oidSignedData))-1] = 3 // id-envelopedData
		if _, err := Decrypt(bad, key); !errors.Is(err, ErrMalformed) && !errors.Is(err, ErrDecrypt) {
			t.Fatalf("changed authAttr: %v", err)
		}
	}
	// id-data content never gets authAttrs.
	der, _ := Encrypt([]byte("x"), oidData, r, EncryptOptions{Content: AES128GCM})
	if _, _, env := ciphertextOffset(t, der); env.authAttrs != nil {
		t.Fatal("id-data with authAttrs")
	}
}

// rebuildEnvelope re-encodes a sealed EnvelopedData with another version and
// optional originatorInfo / unprotectedAttrs elements (pre-encoded, with
// their [0] / [1] tags).
func rebuildEnvelope(t testing.TB, der []byte, version int64, originator, unprotected []byte) []byte {
	t.Helper()
	_, content, err := parseContentInfo(der)
	if err != nil {
		t.Fatal(err)
	}
	s := cryptobyte.String(content)
	var ed, ris, eci cryptobyte.String
	var v int64
	if !s.ReadASN1(&ed, cbasn1.SEQUENCE) || !ed.ReadASN1Integer(&v) || !ed.ReadASN1Element(&ris, cbasn1.SET) ||
		!ed.ReadASN1Element(&eci, cbasn1.SEQUENCE) {
		t.Fatal("cannot take the EnvelopedData apart")
	}
	var b cryptobyte.Builder
	b.AddASN1(cbasn1.SEQUENCE, func(b *cryptobyte.Builder) {
		b.AddASN1ObjectIdentifier(oidEnvelopedData)
		b.AddASN1(tagExplicit0, func(b *cryptobyte.Builder) {
			b.AddASN1(cbasn1.SEQUENCE, func(b *cryptobyte.Builder) {
				b.AddASN1Int64(version)
				b.AddBytes(originator)
				b.AddBytes(ris)
				b.AddBytes(eci)
				b.AddBytes(unprotected)
			})
		})
	})
	return b.BytesOrPanic()
}

// TestEnvelopeOptionalFields: originatorInfo and unprotectedAttrs, which
// this package never writes, are accepted (and skipped) with the version
// RFC 5652 §6.1 requires, and refused with another. (A nil-pointer read of
// the optional originatorInfo was found while writing the fuzz target.)
func TestEnvelopeOptionalFields(t *testing.T) {
	t.Parallel()
	p := pki(t)
	rc := recipientCases[0]
	der, d := sealFor(t, p, rc, AES128CBC)
	originator := []byte{0xA0, 0x00}
	attr := pkitest.Attribute(oidAttrContentType, oidDER(oidData))
	unprotected := append([]byte{0xA1, byte(len(attr))}, attr...)
	for _, tc := range []struct {
		name      string
		version   int64
		orig, unp []byte
		ok        bool
	}{
		{"originatorInfo v3", 3, originator, nil, true},
		{"originatorInfo v4", 4, originator, nil, true},
		{"originatorInfo v2", 2, originator, nil, false},
		{"unprotectedAttrs v3", 3, nil, unprotected, true},
		{"unprotectedAttrs v2", 2, nil, unprotected, false},
		{"both v3", 3, originator, unprotected, true},
		{"plain v2", 2, nil, nil, true},
		{"plain v0", 0, nil, nil, false},
	} {
		kp, err := OpenKeyPackage(rebuildEnvelope(t, der, tc.version, tc.orig, tc.unp), rc.key(t, p), p.verifyOptions())
		if tc.ok && (err != nil || !bytes.Equal(kp.PrivateKey, d.pkcs8)) {
			t.Errorf("%s: %v", tc.name, err)
		}
		if !tc.ok && !errors.Is(err, ErrMalformed) {
			t.Errorf("%s: %v, want ErrMalformed", tc.name, err)
		}
	}
}
