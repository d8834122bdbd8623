package main

// Interop of server-side key generation: a real `estca serve`, libcoap's
// coap-client-openssl as the device, the CBOR answer decoded here and every
// key checked with the real openssl.

import (
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/x509"
	"crypto/x509/pkix"
	"encoding/asn1"
	"encoding/hex"
	"encoding/json"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"

	"golang.org/x/crypto/cryptobyte"
	cbasn1 "golang.org/x/crypto/cryptobyte/asn1"

	"github.com/estca/estca/ca/cms"
	"github.com/estca/estca/est/client"
	"github.com/estca/estca/est/wire"
	"github.com/estca/estca/store"
)

// keygenProfiles are added to the demo appliance's configuration (and to
// the demo manufacturer's profiles). Like every profile without a subject
// template, they bind the certificate to the device's IDevID.
const keygenProfiles = `  - name: escrow
    validity: 24h
    operations: [skg]
    escrow_keys: true
  - name: sealed
    validity: 24h
    operations: [skg, skc]
    require_encrypted_keys: true
  - name: rsa
    validity: 24h
    key_types: [rsa-2048]
    operations: [skg]
  - name: nokeygen
    validity: 24h
`

// keygenAppliance is a demo appliance with the keygen profiles.
func keygenAppliance(t *testing.T) (dir, cfg string) {
	t.Helper()
	dir, cfg = demoAppliance(t, false)
	b, err := os.ReadFile(cfg)
	if err != nil {
		t.Fatal(err)
	}
	s := strings.Replace(string(b), "\n# IDevID trust anchors", keygenProfiles+"\n# IDevID trust anchors", 1)
	if s == string(b) {
		t.Fatal("config template changed: no manufacturers section")
	}
	s = strings.Replace(s, "profiles: [default, padded]", "profiles: [default, padded, escrow, sealed, rsa, nokeygen]", 1)
	if err := os.WriteFile(cfg, []byte(s), 0o600); err != nil {
		t.Fatal(err)
	}
	return dir, cfg
}

// keygenCSR writes a DER CSR for server-side key generation (the key is a
// throwaway the server ignores) and returns its path. Its subject is empty
// (the profile fills it in from the device's identity), or CN cn.
func keygenCSR(t *testing.T, path, cn string, kr *cms.KeyRequest, exts ...pkix.Extension) string {
	t.Helper()
	key, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		t.Fatal(err)
	}
	tmpl := &x509.CertificateRequest{RawSubject: []byte{0x30, 0}, ExtraExtensions: exts}
	if cn != "" {
		tmpl = &x509.CertificateRequest{Subject: pkix.Name{CommonName: cn}, ExtraExtensions: exts}
	}
	der, err := cms.CreateCertificateRequest(rand.Reader, tmpl, key, kr)
	if err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(path, der, 0o600); err != nil {
		t.Fatal(err)
	}
	return path
}

// keygenAnswer is a decoded /skg or /skc answer written to files.
type keygenAnswer struct {
	keyFormat, certFormat int
	key, cert             string // files: the key part (DER) and the certificate (PEM)
}

// splitAnswer decodes the CBOR array of a keygen answer (RFC 8710) and
// writes its parts.
func splitAnswer(t *testing.T, answer, prefix string, out string) keygenAnswer {
	t.Helper()
	b, err := os.ReadFile(answer)
	if err != nil || len(b) == 0 {
		t.Fatalf("no answer (%v):\n%s", err, out)
	}
	parts, err := wire.ParseMultipart(b)
	if err != nil || len(parts) != 2 {
		t.Fatalf("answer is not a two-part multipart-core: %v (%d bytes)\n%s", err, len(b), out)
	}
	a := keygenAnswer{keyFormat: int(parts[0].Format), certFormat: int(parts[1].Format), key: prefix + ".key.der", cert: prefix + ".pem"}
	if err := os.WriteFile(a.key, parts[0].Data, 0o600); err != nil {
		t.Fatal(err)
	}
	certDER := parts[1].Data
	if a.certFormat == int(wire.FormatCertsOnly) {
		certs, err := wire.ParseCertsOnly(certDER)
		if err != nil || len(certs) != 1 {
			t.Fatalf("certs-only: %v", err)
		}
		certDER = certs[0].Raw
	}
	os.WriteFile(prefix+".der", certDER, 0o600)
	derToPEM(t, prefix+".der", a.cert)
	return a
}

// pubOf returns the public key PEM openssl derives from a private key DER
// (PKCS#8) or a certificate PEM.
func pubOfKey(t *testing.T, keyDER string) string {
	return openssl(t, "pkey", "-inform", "DER", "-in", keyDER, "-pubout")
}

func pubOfCert(t *testing.T, certPEM string) string {
	return openssl(t, "x509", "-in", certPEM, "-noout", "-pubkey")
}

// TestKeyPackageSignerOnly: with keys.package_chain: false the key package
// carries the signer's certificate only: the KARI answer of the demo
// appliance fits in two 1024-byte blocks, openssl verifies it against the
// CA certificates of /crts, and not against the root alone.
func TestKeyPackageSignerOnly(t *testing.T) {
	dir, cfg := keygenAppliance(t)
	b, err := os.ReadFile(cfg)
	if err != nil {
		t.Fatal(err)
	}
	s := strings.Replace(string(b), "  package_chain: true", "  package_chain: false", 1)
	if s == string(b) {
		t.Fatal("config template changed: no keys.package_chain")
	}
	if err := os.WriteFile(cfg, []byte(s), 0o600); err != nil {
		t.Fatal(err)
	}
	tmp := t.TempDir()
	root := filepath.Join(dir, "ca", "root.pem")
	dev := demoDevice(dir, "valid")
	devCert, err := readCert(dev.cert)
	if err != nil {
		t.Fatal(err)
	}
	devID, _ := client.KeyIdentifier(devCert)
	srv := startServer(t, cfg)

	csr := keygenCSR(t, filepath.Join(tmp, "kari.csr"), "", &cms.KeyRequest{Delivery: cms.DeliverAsymmetric, KeyID: devID})
	answer := filepath.Join(tmp, "kari.cbor")
	out := coap(t, "coap-client-openssl", &dev, root, "-m", "post", "-t", "286", "-A", "62", "-b", "1024", "-f", csr, "-o", answer,
		"coaps://"+srv.addr+"/.well-known/est/skg")
	a := splitAnswer(t, answer, filepath.Join(tmp, "kari"), out)
	if fi, err := os.Stat(answer); err != nil || fi.Size() > 2048 {
		t.Fatalf("answer %v, %v: want at most 2048 bytes", fi, err)
	}
	keyDER := openEnveloped(t, a.key, filepath.Join(tmp, "kari"), root, filepath.Join(dir, "ca", "issuing.pem"), "-recip", dev.cert, "-inkey", dev.key)
	if k, crt := pubOfKey(t, keyDER), pubOfCert(t, a.cert); k != crt {
		t.Errorf("the key is not the certificate's:\n%s\n%s", k, crt)
	}
	if out, err := exec.Command("openssl", "cms", "-verify", "-inform", "DER", "-in", filepath.Join(tmp, "kari.ci.der"),
		"-CAfile", root, "-out", os.DevNull).CombinedOutput(); err == nil {
		t.Fatalf("the package verified against the root alone: it carries the issuing CA certificate\n%s", out)
	}
}

// openEnveloped decrypts a 280 key part with openssl cms -decrypt (args
// select the recipient), verifies the SignedData with openssl cms -verify
// against the CA chain, and writes the private key of the
// AsymmetricKeyPackage to a PKCS#8 DER file, whose path it returns.
func openEnveloped(t *testing.T, keyPart, prefix, root, issuing string, args ...string) string {
	t.Helper()
	sd := prefix + ".sd.der"
	openssl(t, append([]string{"cms", "-decrypt", "-inform", "DER", "-in", keyPart, "-out", sd}, args...)...)
	raw, err := os.ReadFile(sd)
	if err != nil {
		t.Fatal(err)
	}
	// openssl writes the bare SignedData; cms -verify wants its ContentInfo.
	var cb cryptobyte.Builder
	cb.AddASN1(cbasn1.SEQUENCE, func(b *cryptobyte.Builder) {
		b.AddASN1ObjectIdentifier(asn1.ObjectIdentifier{1, 2, 840, 113549, 1, 7, 2})
		b.AddASN1(cbasn1.Tag(0).ContextSpecific().Constructed(), func(b *cryptobyte.Builder) { b.AddBytes(raw) })
	})
	ci, err := cb.Bytes()
	if err != nil {
		t.Fatal(err)
	}
	os.WriteFile(prefix+".ci.der", ci, 0o600)
	akp := prefix + ".akp.der"
	// Against the CA certificates a device has from /crts (as 281: the
	// chain), which OpenSSL 3.0's cms -verify (no -untrusted) takes as
	// -CAfile; they are needed with keys.package_chain: false.
	crts := prefix + ".crts.pem"
	var pems []byte
	for _, f := range []string{issuing, root} {
		b, err := os.ReadFile(f)
		if err != nil {
			t.Fatal(err)
		}
		pems = append(pems, b...)
	}
	if err := os.WriteFile(crts, pems, 0o600); err != nil {
		t.Fatal(err)
	}
	openssl(t, "cms", "-verify", "-inform", "DER", "-in", prefix+".ci.der", "-CAfile", crts, "-out", akp)
	b, err := os.ReadFile(akp)
	if err != nil {
		t.Fatal(err)
	}
	// AsymmetricKeyPackage ::= SEQUENCE SIZE (1..MAX) OF OneAsymmetricKey (RFC 5958).
	s := cryptobyte.String(b)
	var seq, key cryptobyte.String
	if !s.ReadASN1(&seq, cbasn1.SEQUENCE) || !seq.ReadASN1Element(&key, cbasn1.SEQUENCE) || !seq.Empty() {
		t.Fatalf("not an AsymmetricKeyPackage with one key: %x", b)
	}
	out := prefix + ".pkcs8.der"
	os.WriteFile(out, key, 0o600)
	return out
}

// TestInteropKeygen: /skg and /skc with coap-client-openssl (Accept 62,
// block-wise at 64 and 1024) against a real server; KEKRI, KTRI (registered
// RSA recipient) and KARI (the device's P-256 IDevID) decrypted by openssl
// cms, the SignedData verified against the CA chain, the key matched to the
// certificate by openssl; plain PKCS#8 checked with openssl pkey; /skc's
// bare certificate; escrow kept in the token and listed; refusals answered
// 4.00/4.03 with a diagnostic, audited, while the server keeps serving; and
// `estca enroll skg|skc` decrypting and writing the key (0600).
func TestInteropKeygen(t *testing.T) {
	dir, cfg := keygenAppliance(t)
	tmp := t.TempDir()
	root := filepath.Join(dir, "ca", "root.pem")
	issuing := filepath.Join(dir, "ca", "issuing.pem")
	dev := demoDevice(dir, "valid")

	// A KEK imported with the server stopped (token and store opened here),
	// a second one and the RSA recipient while it runs (admin socket).
	kekHex := "000102030405060708090a0b0c0d0e0f"
	kekFile := filepath.Join(tmp, "kek.hex")
	os.WriteFile(kekFile, []byte(kekHex+"\n"), 0o600)
	mustEstca(t, "--config", cfg, "keys", "import-kek", "--id", "6b656b31", "--file", kekFile)
	rsaKey, rsaCert := filepath.Join(tmp, "rsa.key"), filepath.Join(tmp, "rsa.pem")
	openssl(t, "req", "-x509", "-newkey", "rsa:2048", "-nodes", "-keyout", rsaKey, "-out", rsaCert, "-subj", "/CN=device recipient rsa", "-days", "2")

	srv := startServer(t, cfg)
	base := "coaps://" + srv.addr
	kek2 := "f0e1d2c3b4a5968778695a4b3c2d1e0f00112233445566778899aabbccddeeff"
	kek2File := filepath.Join(tmp, "kek2.hex")
	os.WriteFile(kek2File, []byte(kek2), 0o600)
	mustEstca(t, "--config", cfg, "keys", "import-kek", "--id", "6b656b32", "--file", kek2File)
	if out := mustEstca(t, "--config", cfg, "keys", "add-recipient", "--cert", rsaCert, "--for-cert", dev.cert, "--anchor", "demo"); !strings.Contains(out, "registered") {
		t.Fatalf("add-recipient: %s", out)
	}
	rc, err := readCert(rsaCert)
	if err != nil {
		t.Fatal(err)
	}
	rsaID, _ := client.KeyIdentifier(rc)
	devCert, err := readCert(dev.cert)
	if err != nil {
		t.Fatal(err)
	}
	devID, _ := client.KeyIdentifier(devCert)

	post := func(name, path, csr, bs string) (keygenAnswer, string) {
		t.Helper()
		answer := filepath.Join(tmp, name+".cbor")
		out := coap(t, "coap-client-openssl", &dev, root, "-m", "post", "-t", "286", "-A", "62", "-b", bs, "-f", csr, "-o", answer, base+path)
		return splitAnswer(t, answer, filepath.Join(tmp, name), out), out
	}
	for _, bs := range []string{"64", "1024"} {
		t.Run("block "+bs, func(t *testing.T) {
			cases := []struct {
				name string
				kr   *cms.KeyRequest
				args []string // openssl cms -decrypt recipient arguments; nil for 284
			}{
				{"plain", &cms.KeyRequest{}, nil},
				{"kekri", &cms.KeyRequest{Delivery: cms.DeliverKEK, KeyID: []byte("kek1")},
					[]string{"-secretkey", kekHex, "-secretkeyid", hex.EncodeToString([]byte("kek1"))}},
				{"kekri-aes256", &cms.KeyRequest{Delivery: cms.DeliverKEK, KeyID: []byte("kek2")},
					[]string{"-secretkey", kek2, "-secretkeyid", hex.EncodeToString([]byte("kek2"))}},
				{"ktri", &cms.KeyRequest{Delivery: cms.DeliverAsymmetric, KeyID: rsaID}, []string{"-recip", rsaCert, "-inkey", rsaKey}},
				{"kari", &cms.KeyRequest{Delivery: cms.DeliverAsymmetric, KeyID: devID}, []string{"-recip", dev.cert, "-inkey", dev.key}},
			}
			for _, c := range cases {
				name := c.name + "-" + bs
				a, out := post(name, "/.well-known/est/skg", keygenCSR(t, filepath.Join(tmp, name+".csr"), "", c.kr), bs)
				if a.certFormat != int(wire.FormatCertsOnly) {
					t.Fatalf("%s: cert part %d, want 281\n%s", name, a.certFormat, out)
				}
				keyDER := a.key
				if c.args == nil {
					if a.keyFormat != int(wire.FormatPKCS8) {
						t.Fatalf("%s: key part %d, want 284", name, a.keyFormat)
					}
				} else {
					if a.keyFormat != int(wire.FormatServerGeneratedKey) {
						t.Fatalf("%s: key part %d, want 280", name, a.keyFormat)
					}
					keyDER = openEnveloped(t, a.key, filepath.Join(tmp, name), root, issuing, c.args...)
				}
				if c.name == "kari" {
					// keys.package_chain (default true): the package carries the
					// issuing CA certificate and verifies against the root alone.
					openssl(t, "cms", "-verify", "-inform", "DER", "-in", filepath.Join(tmp, name+".ci.der"), "-CAfile", root, "-out", os.DevNull)
				}
				if k, crt := pubOfKey(t, keyDER), pubOfCert(t, a.cert); k != crt {
					t.Errorf("%s: the key is not the certificate's:\n%s\n%s", name, k, crt)
				}
				if v := openssl(t, "verify", "-CAfile", root, "-untrusted", issuing, a.cert); !strings.Contains(v, ": OK") {
					t.Errorf("%s: %s", name, v)
				}
			}
		})
	}

	t.Run("skc", func(t *testing.T) {
		a, _ := post("skc", "/est/skc", keygenCSR(t, filepath.Join(tmp, "skc.csr"), "", &cms.KeyRequest{}), "1024")
		if a.certFormat != int(wire.FormatPKIXCert) || a.keyFormat != int(wire.FormatPKCS8) {
			t.Fatalf("formats %d/%d", a.keyFormat, a.certFormat)
		}
		if pubOfKey(t, a.key) != pubOfCert(t, a.cert) {
			t.Error("skc key is not the certificate's")
		}
		a, _ = post("skc-rsa", "/est/rsa/skg", keygenCSR(t, filepath.Join(tmp, "skc-rsa.csr"), "", &cms.KeyRequest{}), "1024")
		if !strings.Contains(openssl(t, "x509", "-in", a.cert, "-noout", "-text"), "Public-Key: (2048 bit)") {
			t.Error("rsa profile did not generate RSA-2048")
		}
	})

	t.Run("escrow", func(t *testing.T) {
		a, _ := post("escrow", "/est/escrow/skg", keygenCSR(t, filepath.Join(tmp, "escrow.csr"), "", &cms.KeyRequest{}), "1024")
		c, err := readCert(a.cert)
		if err != nil {
			t.Fatal(err)
		}
		serial := c.SerialNumber.Text(16)
		out := mustEstca(t, "--config", cfg, "keys", "list", "--json")
		// The real output, as documented: snake_case, exactly these keys.
		top := wantObject(t, "keys list --json", checkSnakeJSON(t, "keys list --json", out), "escrowed", "keks", "recipients")
		for list, keys := range map[string][]string{"escrowed": {"serial", "key_type", "label"}, "keks": {"id", "bits"},
			"recipients": {"identity", "subject", "key_id", "not_after"}} {
			items, ok := top[list].([]any)
			if !ok || len(items) == 0 {
				t.Fatalf("keys list --json: %s = %v, want a non-empty array", list, top[list])
			}
			for _, it := range items {
				wantObject(t, "keys list --json: "+list, it, keys...)
			}
		}
		var l keysView
		if err := json.Unmarshal([]byte(out), &l); err != nil {
			t.Fatal(err)
		}
		if len(l.Escrowed) != 1 || l.Escrowed[0].Serial != serial || len(l.KEKs) != 2 || len(l.Recipients) != 1 {
			t.Fatalf("keys list %+v, want the escrowed key of %s, 2 KEKs, 1 recipient", l, serial)
		}
		mustEstca(t, "--config", cfg, "keys", "destroy", "0x"+strings.ToUpper(serial))
		if out := mustEstca(t, "--config", cfg, "keys", "list"); !strings.Contains(out, "escrowed keys: 0") {
			t.Fatalf("after destroy:\n%s", out)
		}
		// Refusals through the admin socket: exit 1, one plain line, never
		// an HTTP status; a bad command line: exit 2.
		for _, c := range []struct {
			args []string
			code int
			want string
		}{
			{[]string{"keys", "destroy", serial}, 1, "no escrowed key for serial " + serial},
			{[]string{"keys", "delete-kek", "--id", "ff"}, 1, "no key-encryption key ff in the token"},
			{[]string{"keys", "import-kek", "--id", "6b656b31", "--file", kekFile}, 1, "holds a key-encryption key 6b656b31 already"},
			{[]string{"keys", "destroy", "xyz"}, 2, "serial"},
			{[]string{"keys", "import-kek", "--id", "6b656b33"}, 2, "--id and --file are required"},
		} {
			code, _, errs := estca(t, append([]string{"--config", cfg}, c.args...)...)
			lines := strings.Split(strings.TrimSpace(errs), "\n")
			last := lines[len(lines)-1]
			if code != c.code || !strings.Contains(last, c.want) || strings.Contains(errs, "500") || strings.Contains(errs, "internal") {
				t.Errorf("%v: exit %d, stderr:\n%s", c.args, code, errs)
			}
		}
	})

	t.Run("refusals", func(t *testing.T) {
		caExt := pkix.Extension{Id: asn1.ObjectIdentifier{2, 5, 29, 19}, Value: []byte{0x30, 0x03, 0x01, 0x01, 0xff}}
		for _, c := range []struct {
			name, path string
			kr         *cms.KeyRequest
			exts       []pkix.Extension
			code, diag string
		}{
			{"unknown KEK", "/.well-known/est/skg", &cms.KeyRequest{Delivery: cms.DeliverKEK, KeyID: []byte("nope")}, nil,
				"4.00", "unknown key-encryption key"},
			{"identifier matching no key", "/.well-known/est/skg", &cms.KeyRequest{Delivery: cms.DeliverAsymmetric, KeyID: []byte("nope")}, nil,
				"4.00", "no recipient key matches the identifier"},
			{"no usable algorithm", "/.well-known/est/skg", &cms.KeyRequest{Delivery: cms.DeliverKEK, KeyID: []byte("kek1"),
				Capabilities: []cms.Capability{{ID: asn1.ObjectIdentifier{1, 2, 840, 113549, 3, 7}}}}, nil, "4.00", "no usable content-encryption algorithm"},
			{"plain where encryption is required", "/est/sealed/skc", &cms.KeyRequest{}, nil,
				"4.00", "encrypted key delivery required"},
			{"policy refuses the CSR", "/.well-known/est/skg", &cms.KeyRequest{}, []pkix.Extension{caExt}, "4.00", "CA certificate requested"},
			{"subject not the device's", "/.well-known/est/skg", &cms.KeyRequest{}, nil, "4.03", "subject does not match your identity"},
			{"profile without keygen", "/est/nokeygen/skg", &cms.KeyRequest{}, nil, "4.03", "operation not allowed for this profile"},
		} {
			cn := ""
			if c.code == "4.03" && c.path != "/est/nokeygen/skg" {
				cn = "admin"
			}
			csr := keygenCSR(t, filepath.Join(tmp, "bad.csr"), cn, c.kr, c.exts...)
			out := coap(t, "coap-client-openssl", &dev, root, "-m", "post", "-t", "286", "-A", "62", "-f", csr, base+c.path)
			if !hasCode(out, c.code+" "+c.diag) {
				t.Errorf("%s: want %s %s, got:\n%s", c.name, c.code, c.diag, out)
			}
		}
		var recs []auditView
		if err := json.Unmarshal([]byte(mustEstca(t, "--config", cfg, "audit", "list", "--json")), &recs); err != nil {
			t.Fatal(err)
		}
		// The delivery's refusals as "op: diagnostic", the policy's as
		// "op: code (class): detail".
		for _, want := range []string{"skg: unknown key-encryption key", "skg: no recipient key matches the identifier",
			"skg: no usable content-encryption algorithm", "skc: key-encryption-required (bad-request)",
			"skg: ca-requested (bad-request)", "skg: subject-not-bound (forbidden)", "skg: operation-not-allowed (forbidden)"} {
			found := false
			for _, r := range recs {
				found = found || (r.Event == string(store.EventDenied) && strings.HasPrefix(r.Reason, want) &&
					strings.Contains(strings.Join(r.Flags, ","), "server-keygen"))
			}
			if !found {
				t.Errorf("no denied record %q flagged server-keygen", want)
			}
		}
		// Still serving.
		a, _ := post("after", "/.well-known/est/skg", keygenCSR(t, filepath.Join(tmp, "after.csr"), "", &cms.KeyRequest{}), "1024")
		if a.keyFormat != int(wire.FormatPKCS8) {
			t.Fatal("no answer after the refusals")
		}
	})

	t.Run("policy check", func(t *testing.T) {
		// The offline check reads the CSR's key request attributes as the
		// server does.
		plain := keygenCSR(t, filepath.Join(tmp, "check-plain.csr"), "", &cms.KeyRequest{})
		code, out, _ := estca(t, "--config", cfg, "policy", "check", "--csr", plain, "--requester", dev.cert, "--label", "sealed", "--op", "skc")
		if code != 1 || !strings.Contains(out, "key-encryption-required") {
			t.Errorf("plain skc on sealed: exit %d\n%s", code, out)
		}
		sealed := keygenCSR(t, filepath.Join(tmp, "check-kek.csr"), "", &cms.KeyRequest{Delivery: cms.DeliverKEK, KeyID: []byte("kek1")})
		code, out, _ = estca(t, "--config", cfg, "policy", "check", "--csr", sealed, "--requester", dev.cert, "--label", "sealed", "--op", "skc")
		if code != 0 || !strings.Contains(out, "decision:  issue") || !strings.Contains(out, "generated in the server: ecdsa-p256") {
			t.Errorf("KEK skc on sealed: exit %d\n%s", code, out)
		}
	})

	t.Run("estca enroll", func(t *testing.T) {
		for _, c := range []struct {
			name string
			args []string
			how  string
		}{
			{"plain", []string{"skg"}, "unencrypted"},
			{"kek", []string{"skc", "--kek-id", "6b656b31", "--kek-file", kekFile}, "kekri, AES-128-CBC"},
			{"kari-gcm", []string{"skg", "--recipient-key", dev.key, "--gcm"}, "kari, AES-128-GCM"},
			{"ktri", []string{"skg", "--recipient-key", rsaKey, "--recipient-cert", rsaCert}, "ktri, AES-128-CBC"},
		} {
			prefix := filepath.Join(tmp, "enroll-"+c.name)
			out := mustEstca(t, append([]string{"enroll", "--server", base, "--cert", dev.cert, "--key", dev.key,
				"--trust", root, "--out", prefix}, c.args...)...)
			if !strings.Contains(out, c.how) {
				t.Errorf("%s: %s", c.name, out)
			}
			fi, err := os.Stat(prefix + ".key")
			if err != nil || fi.Mode().Perm() != 0o600 {
				t.Fatalf("%s: key file %v %v", c.name, fi, err)
			}
			k := openssl(t, "pkey", "-in", prefix+".key", "-pubout")
			if k != pubOfCert(t, prefix+".pem") {
				t.Errorf("%s: written key is not the certificate's", c.name)
			}
		}
		// A KEK the server does not hold: refused, nothing written.
		code, _, errs := estca(t, "enroll", "--server", base, "--cert", dev.cert, "--key", dev.key,
			"--trust", root, "--out", filepath.Join(tmp, "none"), "skg", "--kek-id", "ff", "--kek-file", kekFile)
		if code == 0 || !strings.Contains(errs, "unknown key-encryption key") {
			t.Errorf("unknown KEK: exit %d %s", code, errs)
		}
	})

	// No generated key is left in the token but none was escrowed
	// (destroyed above); every key left a keygen record.
	if out := mustEstca(t, "--config", cfg, "keys", "list"); !strings.Contains(out, "escrowed keys: 0") {
		t.Fatalf("keys list:\n%s", out)
	}
	var recs []auditView
	if err := json.Unmarshal([]byte(mustEstca(t, "--config", cfg, "audit", "list", "--json")), &recs); err != nil {
		t.Fatal(err)
	}
	issued := 0
	for _, r := range recs {
		if r.Event == string(store.EventIssued) && strings.Contains(strings.Join(r.Flags, ","), "server-keygen") {
			issued++
			if !strings.Contains(r.Reason, "; server-generated ") || !strings.Contains(r.Reason, "CKA_LOCAL true") {
				t.Errorf("keygen certificate record %q", r.Reason)
			}
		}
	}
	if issued < 14 {
		t.Errorf("%d keygen certificate records", issued)
	}
	if v := mustEstca(t, "--config", cfg, "audit", "verify"); !strings.Contains(v, "audit chain ok") {
		t.Errorf("audit verify: %s", v)
	}
}
