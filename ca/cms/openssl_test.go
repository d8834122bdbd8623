package cms

import (
	"bytes"
	"encoding/hex"
	"encoding/pem"
	"errors"
	"os"
	"path/filepath"
	"testing"
	"time"

	"golang.org/x/crypto/cryptobyte"
	cbasn1 "golang.org/x/crypto/cryptobyte/asn1"
)

// Interoperability with the openssl binary (tested with OpenSSL 3.0.x),
// both ways: what SealKeyPackage makes is decrypted and verified by
// `openssl cms`, and what `openssl cms -sign` / `-encrypt` makes is opened
// by this package.

// opensslDecryptArgs are the `openssl cms -decrypt` key options for a
// recipient case.
func opensslDecryptArgs(p *testPKI, rc recipientCase) []string {
	switch rc.name {
	case "kekri-aes128":
		return []string{"-secretkey", hex.EncodeToString(testKEK128), "-secretkeyid", hex.EncodeToString(testKEKID)}
	case "kekri-aes256":
		return []string{"-secretkey", hex.EncodeToString(testKEK256), "-secretkeyid", hex.EncodeToString(testKEKID)}
	}
	var kc keyCert
	for _, n := range fixtureNames.recipients {
		if k := rc.key(nil, p); k.Certificate == p.recipients[n].cert {
			kc = p.recipients[n]
		}
	}
	return []string{"-inkey", kc.keyFile, "-recip", kc.certFile}
}

// wrapContentInfo puts a bare SignedData (what `openssl cms -decrypt`
// writes for an id-signedData content) into a ContentInfo, as `openssl cms
// -verify` reads it.
func wrapContentInfo(t testing.TB, sd []byte) []byte {
	t.Helper()
	var b cryptobyte.Builder
	b.AddASN1(cbasn1.SEQUENCE, func(b *cryptobyte.Builder) {
		b.AddASN1ObjectIdentifier(oidSignedData)
		b.AddASN1(tagExplicit0, func(b *cryptobyte.Builder) { b.AddBytes(sd) })
	})
	return b.BytesOrPanic()
}

// opensslPublicKey returns the DER SubjectPublicKeyInfo openssl reads from a
// private key file (DER PKCS#8) or a certificate (PEM).
func opensslPublicKey(t testing.TB, dir, keyFile, certFile string) (fromKey, fromCert []byte) {
	t.Helper()
	openssl(t, "pkey", "-inform", "DER", "-in", keyFile, "-check", "-noout")
	fromKey = openssl(t, "pkey", "-inform", "DER", "-in", keyFile, "-pubout", "-outform", "DER")
	pubPEM := openssl(t, "x509", "-in", certFile, "-pubkey", "-noout")
	fromCert = openssl(t, "pkey", "-pubin", "-in", writeFile(t, dir, "cert-pub.pem", pubPEM), "-outform", "DER")
	return fromKey, fromCert
}

// TestOpenSSLDecryptsSealed: for every recipient kind and content
// encryption, `openssl cms -decrypt` recovers the SignedData, `openssl cms
// -verify` checks it against the test root (the issuing CA given with
// -certfile, and also as carried in the message), and the key in the
// AsymmetricKeyPackage is a valid key matching the device certificate.
func TestOpenSSLDecryptsSealed(t *testing.T) {
	t.Parallel()
	p := pki(t)
	for _, c := range sealMatrix() {
		rc := c.rc
		t.Run(c.String(), func(t *testing.T) {
			t.Parallel()
			dir := t.TempDir()
			d := newDevice(t, p, c.device)
			devCert := writeFile(t, dir, "device.pem", pem.EncodeToMemory(&pem.Block{Type: "CERTIFICATE", Bytes: d.cert.Raw}))
			// OpenSSL up to 3.6 cannot parse AuthEnvelopedData authAttrs
			// (openssl#26101): GCM goes without them.
			der, err := p.signer(t, c.signer, !c.bySKI).SealKeyPackage(d.pkcs8, rc.rcpt(t, p), SealOptions{
				EncryptOptions: EncryptOptions{Content: c.ce, NoAuthAttrs: true}, SigningTime: time.Now()})
			if err != nil {
				t.Fatal(err)
			}
			env := writeFile(t, dir, "env.der", der)
			sdFile := filepath.Join(dir, "sd.der")
			openssl(t, append([]string{"cms", "-decrypt", "-inform", "DER", "-in", env, "-out", sdFile, "-binary"},
				opensslDecryptArgs(p, rc)...)...)
			sd, err := os.ReadFile(sdFile)
			if err != nil {
				t.Fatal(err)
			}
			ci := writeFile(t, dir, "ci.der", wrapContentInfo(t, sd))
			pkgFile := filepath.Join(dir, "pkg.der")
			openssl(t, "cms", "-verify", "-inform", "DER", "-in", ci, "-binary", "-out", pkgFile,
				"-CAfile", p.root.certFile, "-certfile", p.issuing.certFile) // cms has no -untrusted in 3.0
			openssl(t, "cms", "-verify", "-inform", "DER", "-in", ci, "-binary", "-out", os.DevNull,
				"-CAfile", p.root.certFile) // the issuing CA from the SignedData
			pkg, err := os.ReadFile(pkgFile)
			if err != nil {
				t.Fatal(err)
			}
			// AsymmetricKeyPackage: SEQUENCE { OneAsymmetricKey }.
			s := cryptobyte.String(pkg)
			var seq, key cryptobyte.String
			if !s.ReadASN1(&seq, cbasn1.SEQUENCE) || !s.Empty() || !seq.ReadASN1Element(&key, cbasn1.SEQUENCE) || !seq.Empty() {
				t.Fatalf("openssl's verified content is not a one-key AsymmetricKeyPackage: %x", pkg)
			}
			keyFile := writeFile(t, dir, "key.der", key)
			fromKey, fromCert := opensslPublicKey(t, dir, keyFile, devCert)
			if !bytes.Equal(fromKey, fromCert) {
				t.Fatal("openssl: recovered key does not match the device certificate")
			}
		})
	}
}

// TestOpenSSLRejectsWrongKey: the interop check can fail — openssl refuses
// our message with a wrong KEK and a wrong private key.
func TestOpenSSLRejectsWrongKey(t *testing.T) {
	t.Parallel()
	p := pki(t)
	dir := t.TempDir()
	der, _ := sealFor(t, p, recipientCases[0], AES128CBC)
	env := writeFile(t, dir, "env.der", der)
	if _, err := runOpenSSL(t, nil, "cms", "-decrypt", "-inform", "DER", "-in", env, "-out", os.DevNull,
		"-secretkey", hex.EncodeToString(testKEK256[:16]), "-secretkeyid", hex.EncodeToString(testKEKID)); err == nil {
		t.Error("openssl decrypted with a wrong KEK")
	}
	der, _ = sealFor(t, p, recipientCases[4], AES128CBC)
	env = writeFile(t, dir, "env2.der", der)
	if _, err := runOpenSSL(t, nil, "cms", "-decrypt", "-inform", "DER", "-in", env, "-out", os.DevNull,
		"-inkey", p.recipients["p384"].keyFile); err == nil {
		t.Error("openssl decrypted with a wrong EC key")
	}
}

// opensslSigned makes an AsymmetricKeyPackage signed by `openssl cms -sign`
// (its own choice of signed attributes, rsaEncryption for RSA).
func opensslSigned(t testing.TB, p *testPKI, dir, signer string, pkcs8 []byte) string {
	t.Helper()
	var b cryptobyte.Builder
	b.AddASN1(cbasn1.SEQUENCE, func(b *cryptobyte.Builder) { b.AddBytes(pkcs8) })
	in := writeFile(t, dir, "pkg-"+signer+".der", b.BytesOrPanic())
	out := filepath.Join(dir, "signed-"+signer+".der")
	md := "sha256"
	if signer == "p384" {
		md = "sha384"
	}
	openssl(t, "cms", "-sign", "-binary", "-nodetach", "-outform", "DER", "-econtent_type", oidAsymmetricKeyPackage.String(),
		"-md", md, "-signer", p.signers[signer].certFile, "-inkey", p.signers[signer].keyFile,
		"-certfile", p.issuing.certFile, "-in", in, "-out", out)
	return out
}

// TestOpenSSLMadeOpens: EnvelopedData and AuthEnvelopedData made by
// `openssl cms -encrypt` for each recipient kind OpenSSL can produce, around
// a key package signed by `openssl cms -sign`, are decrypted and verified
// here. OpenSSL's -encrypt always labels its content id-data (no
// -econtent_type for enveloped content), so the content here is the signed
// ContentInfo, checked with VerifyKeyPackage.
func TestOpenSSLMadeOpens(t *testing.T) {
	t.Parallel()
	p := pki(t)
	oaep := []string{"-keyopt", "rsa_padding_mode:oaep", "-keyopt", "rsa_oaep_md:sha256", "-keyopt", "rsa_mgf1_md:sha256"}
	for _, tc := range []struct {
		name string
		args []string
		key  *DecryptKey
		kind RecipientKind
	}{
		{"kekri-aes128", []string{"-secretkey", hex.EncodeToString(testKEK128), "-secretkeyid", hex.EncodeToString(testKEKID)},
			recipientCases[0].key(t, p), RecipientKEK},
		{"kekri-aes256", []string{"-secretkey", hex.EncodeToString(testKEK256), "-secretkeyid", hex.EncodeToString(testKEKID)},
			recipientCases[1].key(t, p), RecipientKEK},
		{"ktri-rsa-oaep-sha256", append([]string{"-recip", p.recipients["rsa"].certFile}, oaep...),
			recipientCases[2].key(t, p), RecipientKeyTrans},
		{"ktri-rsa-oaep-sha256-keyid", append([]string{"-keyid", "-recip", p.recipients["rsa"].certFile}, oaep...),
			&DecryptKey{PrivateKey: p.recipients["rsa"].key, SubjectKeyID: p.recipients["rsa"].cert.SubjectKeyId}, RecipientKeyTrans},
		{"kari-p256-sha256kdf", []string{"-recip", p.recipients["p256"].certFile, "-keyopt", "ecdh_kdf_md:sha256"},
			recipientCases[4].key(t, p), RecipientKeyAgree},
		{"kari-p256-sha256kdf-keyid", []string{"-keyid", "-recip", p.recipients["p256"].certFile, "-keyopt", "ecdh_kdf_md:sha256"},
			&DecryptKey{PrivateKey: p.recipients["p256"].key}, RecipientKeyAgree},
		{"kari-p384-sha384kdf", []string{"-recip", p.recipients["p384"].certFile, "-keyopt", "ecdh_kdf_md:sha384"},
			recipientCases[6].key(t, p), RecipientKeyAgree},
	} {
		for ci, cipher := range []string{"aes-128-cbc", "aes-256-cbc", "aes-128-gcm", "aes-256-gcm"} {
			signer := fixtureNames.signers[ci%3]
			t.Run(tc.name+"/"+cipher+"/signer-"+signer, func(t *testing.T) {
				t.Parallel()
				dir := t.TempDir()
				d := newDevice(t, p, "p256")
				signed := opensslSigned(t, p, dir, signer, d.pkcs8)
				env := filepath.Join(dir, "env.der")
				openssl(t, append([]string{"cms", "-encrypt", "-binary", "-outform", "DER", "-in", signed, "-out", env, "-" + cipher}, tc.args...)...)
				der, err := os.ReadFile(env)
				if err != nil {
					t.Fatal(err)
				}
				dec, err := Decrypt(der, tc.key)
				if err != nil {
					t.Fatal(err)
				}
				if dec.Recipient != tc.kind || dec.ContentEncryption.String() != map[string]string{"aes-128-cbc": "AES-128-CBC",
					"aes-256-cbc": "AES-256-CBC", "aes-128-gcm": "AES-128-GCM", "aes-256-gcm": "AES-256-GCM"}[cipher] {
					t.Fatalf("decrypted as %v/%v", dec.Recipient, dec.ContentEncryption)
				}
				if !dec.ContentType.Equal(oidData) {
					t.Fatalf("content type %v", dec.ContentType)
				}
				kp, err := VerifyKeyPackage(dec.Content, p.verifyOptions())
				if err != nil {
					t.Fatal(err)
				}
				if !bytes.Equal(kp.PrivateKey, d.pkcs8) || !kp.Signer.Equal(p.signers[signer].cert) || kp.SigningTime.IsZero() {
					t.Fatalf("key package: key equal %v, signer %v, time %v", bytes.Equal(kp.PrivateKey, d.pkcs8), kp.Signer.Subject, kp.SigningTime)
				}
			})
		}
	}
}

// TestOpenSSLMadeRefused: what OpenSSL makes with its weaker defaults is
// refused with ErrUnsupported (exact algorithms only): PKCS #1 v1.5 key
// transport, OAEP with SHA-1, and the SHA-1 X9.63 KDF.
func TestOpenSSLMadeRefused(t *testing.T) {
	t.Parallel()
	p := pki(t)
	for _, tc := range []struct {
		name string
		args []string
		key  *DecryptKey
	}{
		{"ktri-pkcs1", []string{"-recip", p.recipients["rsa"].certFile}, recipientCases[2].key(t, p)},
		{"ktri-oaep-sha1", []string{"-recip", p.recipients["rsa"].certFile, "-keyopt", "rsa_padding_mode:oaep"}, recipientCases[2].key(t, p)},
		{"kari-sha1kdf", []string{"-recip", p.recipients["p256"].certFile}, recipientCases[4].key(t, p)},
	} {
		t.Run(tc.name, func(t *testing.T) {
			t.Parallel()
			dir := t.TempDir()
			in := writeFile(t, dir, "in", []byte("hello"))
			env := filepath.Join(dir, "env.der")
			openssl(t, append([]string{"cms", "-encrypt", "-binary", "-outform", "DER", "-in", in, "-out", env, "-aes-128-cbc"}, tc.args...)...)
			der, err := os.ReadFile(env)
			if err != nil {
				t.Fatal(err)
			}
			if _, err := Decrypt(der, tc.key); !errors.Is(err, ErrUnsupported) {
				t.Fatalf("got %v, want ErrUnsupported", err)
			}
		})
	}
}
