package est

import (
	"bytes"
	"crypto/x509"
	"encoding/hex"
	"errors"
	"os"
	"path/filepath"
	"slices"
	"testing"

	"github.com/fxamacker/cbor/v2"
	"github.com/plgd-dev/go-coap/v3/message"

	"github.com/estca/estca/ca"
	"github.com/estca/estca/policy/pkitest"
)

// RFC 9148 Appendix A.3: the serverkeygen response parts (key 284, cert 281).
const (
	rfc9148A3Key  = "308187020100301306072a8648ce3d020106082a8648ce3d030107046d306b020101042061336a86ac6e7af4a96f632830ad4e6aa0837679206094d7679a01ca8c6f0c37a14403420004c8b421f11c25e47e3ac57123bf2d9fdc494f028bc351cc80c03f150bf50cff958d75419d81a6a245dffae790be95cf75f602f9152618f816a2b23b5638e59fd9"
	rfc9148A3Cert = "308201cf06092a864886f70d010702a08201c0308201bc0201013100300b06092a864886f70d010701a08201a23082019e30820144a003020102020900b3313e8f3fc9538e300a06082a8648ce3d040302301631143012060355040a0c0b736b67206578616d706c65301e170d3139303930343037343430335a170d3339303833303037343430335a301631143012060355040a0c0b736b67206578616d706c653059301306072a8648ce3d020106082a8648ce3d03010703420004c8b421f11c25e47e3ac57123bf2d9fdc494f028bc351cc80c03f150bf50cff958d75419d81a6a245dffae790be95cf75f602f9152618f816a2b23b5638e59fd9a37b307930090603551d1304023000302c06096086480186f842010d041f161d4f70656e53534c2047656e657261746564204365727469666963617465301d0603551d0e0416041496600d8716bf7fd0e752d0ac760777ad665d02a0301f0603551d2304183016801496600d8716bf7fd0e752d0ac760777ad665d02a0300a06082a8648ce3d0403020348003045022100e95bfa25a08976652246f2d96143da39fce0dc4c9b26b9cce1f24164cc2b12b602201351fd8eea65764e3459d324e4345ff5b2a91538c04976111796b3698bf6379ca1003100"
)

func ctHex(t testing.TB, s string) []byte {
	t.Helper()
	b, err := hex.DecodeString(s)
	if err != nil {
		t.Fatal(err)
	}
	return b
}

// ctRFC9148A3Response is the multipart-core payload of RFC 9148 Appendix A.3,
// byte for byte: 84 19 011C 58 8A <key> 19 0119 59 01D3 <pkcs7>.
func ctRFC9148A3Response(t testing.TB) []byte {
	t.Helper()
	key, cert := ctHex(t, rfc9148A3Key), ctHex(t, rfc9148A3Cert)
	out := []byte{0x84, 0x19, 0x01, 0x1c, 0x58, 0x8a}
	out = append(out, key...)
	out = append(out, 0x19, 0x01, 0x19, 0x59, 0x01, 0xd3)
	return append(out, cert...)
}

// ctOpenSSLCertsOnly builds a certs-only PKCS#7 from certs with the real
// openssl binary (`openssl crl2pkcs7 -nocrl -certfile x.pem -outform DER`).
func ctOpenSSLCertsOnly(t testing.TB, certs ...*x509.Certificate) []byte {
	t.Helper()
	dir := t.TempDir()
	in, out := pkitest.WritePEM(t, dir, "x.pem", certs...), filepath.Join(dir, "x.p7")
	pkitest.OpenSSL(t, "crl2pkcs7", "-nocrl", "-certfile", in, "-outform", "DER", "-out", out)
	der, err := os.ReadFile(out)
	if err != nil {
		t.Fatal(err)
	}
	return der
}

func TestParseCertsOnlyOpenSSL(t *testing.T) {
	t.Parallel()
	root := pkitest.NewCA(t, "root")
	inter := root.Issue(t, pkitest.SubCA("intermediate")).Cert
	leaf := root.Issue(t, pkitest.ClientAuth("leaf")).Cert
	for _, tc := range []struct {
		name  string
		certs []*x509.Certificate
	}{
		{"one", []*x509.Certificate{root.Cert}},
		{"chain", []*x509.Certificate{leaf, inter, root.Cert}},
	} {
		t.Run(tc.name, func(t *testing.T) {
			der := ctOpenSSLCertsOnly(t, tc.certs...)
			got, err := ParseCertsOnly(der)
			if err != nil {
				t.Fatal(err)
			}
			if len(got) != len(tc.certs) {
				t.Fatalf("got %d certs, want %d", len(got), len(tc.certs))
			}
			for i := range got {
				if !bytes.Equal(got[i].Raw, tc.certs[i].Raw) {
					t.Errorf("cert %d differs from input", i)
				}
			}
		})
	}
}

func TestParseCertsOnlyRFC9148(t *testing.T) {
	t.Parallel()
	// Appendix A.3's PKCS#7 ends with an empty crls [1] and empty signerInfos.
	certs, err := ParseCertsOnly(ctHex(t, rfc9148A3Cert))
	if err != nil {
		t.Fatal(err)
	}
	if len(certs) != 1 || certs[0].Subject.Organization[0] != "skg example" {
		t.Fatalf("got %d certs, subject %v", len(certs), certs[0].Subject)
	}
}

func TestParseCertsOnlyErrors(t *testing.T) {
	t.Parallel()
	good := ctHex(t, rfc9148A3Cert)
	badOID := bytes.Clone(good)
	badOID[bytes.Index(badOID, []byte{0x01, 0x07, 0x02})+2] = 0x03 // envelopedData
	badCert := bytes.Clone(good)
	badCert[bytes.Index(badCert, []byte{0x30, 0x82, 0x01, 0x9e})+10] ^= 0xff
	for _, tc := range []struct {
		name string
		der  []byte
	}{
		{"empty", nil},
		{"truncated", good[:len(good)-1]},
		{"trailing", append(bytes.Clone(good), 0)},
		{"not signedData", badOID},
		{"garbage", []byte("-----BEGIN PKCS7-----")},
		{"bad certificate", badCert},
	} {
		t.Run(tc.name, func(t *testing.T) {
			if _, err := ParseCertsOnly(tc.der); !errors.Is(err, ErrMalformedPayload) {
				t.Fatalf("err = %v, want ErrMalformedPayload", err)
			}
		})
	}
}

func TestParseLinks(t *testing.T) {
	t.Parallel()
	doc := `</est/crts>;rt="ace.est.crts";ct="281 287",</est/sen>;rt="ace.est.sen";ct="281 287",` +
		`</est/sren>;rt="ace.est.sren";ct="281 287",</est/att>;rt="ace.est.att";ct=285,` +
		` </est/skg>;rt="ace.est.skg";ct=62, </est/skc>;rt="ace.est.skc";ct=62;title="a, \"b\"; c";obs`
	links, err := ParseLinks([]byte(doc))
	if err != nil {
		t.Fatal(err)
	}
	want := []struct {
		target string
		rt     string
		ct     []message.MediaType
	}{
		{"/est/crts", "ace.est.crts", []message.MediaType{281, 287}},
		{"/est/sen", "ace.est.sen", []message.MediaType{281, 287}},
		{"/est/sren", "ace.est.sren", []message.MediaType{281, 287}},
		{"/est/att", "ace.est.att", []message.MediaType{285}},
		{"/est/skg", "ace.est.skg", []message.MediaType{62}},
		{"/est/skc", "ace.est.skc", []message.MediaType{62}},
	}
	if len(links) != len(want) {
		t.Fatalf("got %d links, want %d: %+v", len(links), len(want), links)
	}
	for i, w := range want {
		l := links[i]
		if l.Target != w.target || !l.HasResourceType(w.rt) || !slices.Equal(l.ContentFormats, w.ct) {
			t.Errorf("link %d = %+v, want %+v", i, l, w)
		}
	}
	last := links[5].Params
	if last["title"] != `a, "b"; c` {
		t.Errorf("title = %q", last["title"])
	}
	if v, ok := last["obs"]; !ok || v != "" {
		t.Errorf("obs = %q, %v", v, ok)
	}
	if empty, err := ParseLinks(nil); err != nil || len(empty) != 0 {
		t.Errorf("empty document: %v, %v", empty, err)
	}
}

func TestParseLinksErrors(t *testing.T) {
	t.Parallel()
	for _, doc := range []string{
		`/est/crts;rt=x`,
		`</est/crts`,
		`</est/crts>;rt="ace`,
		`</est/crts>;ct=abc`,
		`</est/crts>;ct=70000`,
		`</est/crts>;=x`,
		`</est/crts> x`,
	} {
		if _, err := ParseLinks([]byte(doc)); !errors.Is(err, ErrMalformedPayload) {
			t.Errorf("%q: err = %v, want ErrMalformedPayload", doc, err)
		}
	}
}

func TestParseMultipartRFC9148(t *testing.T) {
	t.Parallel()
	payload := ctRFC9148A3Response(t)
	parts, err := ParseMultipart(payload)
	if err != nil {
		t.Fatal(err)
	}
	if len(parts) != 2 || parts[0].Format != FormatPKCS8 || parts[1].Format != FormatCertsOnly {
		t.Fatalf("parts = %+v", parts)
	}
	if !bytes.Equal(parts[0].Data, ctHex(t, rfc9148A3Key)) || !bytes.Equal(parts[1].Data, ctHex(t, rfc9148A3Cert)) {
		t.Fatal("part data differs from the RFC example")
	}
	res, err := clParseKeygen(payload)
	if err != nil {
		t.Fatal(err)
	}
	if res.KeyFormat != FormatPKCS8 || res.CertFormat != FormatCertsOnly || len(res.Certificates) != 1 {
		t.Fatalf("keygen = %+v", res)
	}
}

func TestParseKeygenShapes(t *testing.T) {
	t.Parallel()
	key, p7 := ctHex(t, rfc9148A3Key), ctHex(t, rfc9148A3Cert)
	certs, err := ParseCertsOnly(p7)
	if err != nil {
		t.Fatal(err)
	}
	der := certs[0].Raw
	enc := func(items ...any) []byte {
		b, err := cbor.Marshal(items)
		if err != nil {
			t.Fatal(err)
		}
		return b
	}
	for _, tc := range []struct {
		name    string
		payload []byte
		ok      bool
		keyFmt  message.MediaType
		certFmt message.MediaType
	}{
		{"skc order swapped", enc(287, der, 280, []byte{0x30, 0x00}), true, 280, 287},
		{"skg", enc(284, key, 281, p7), true, 284, 281},
		{"odd items", enc(284, key, 281), false, 0, 0},
		{"one part", enc(284, key), false, 0, 0},
		{"two keys", enc(284, key, 280, key), false, 0, 0},
		{"two certs", enc(281, p7, 287, der), false, 0, 0},
		{"text format", enc("284", key, 281, p7), false, 0, 0},
		{"text data", enc(284, "key", 281, p7), false, 0, 0},
		{"negative format", enc(-1, key, 281, p7), false, 0, 0},
		{"unknown part", enc(284, key, 40, []byte("x")), false, 0, 0},
		{"bad cert", enc(284, key, 287, []byte{1, 2, 3}), false, 0, 0},
		{"null key", enc(284, nil, 281, p7), false, 0, 0},
		{"map", func() []byte { b, _ := cbor.Marshal(map[int][]byte{284: key}); return b }(), false, 0, 0},
		{"trailing", append(enc(284, key, 281, p7), 0x00), false, 0, 0},
		{"empty", nil, false, 0, 0},
	} {
		t.Run(tc.name, func(t *testing.T) {
			res, err := clParseKeygen(tc.payload)
			if !tc.ok {
				if !errors.Is(err, ErrMalformedPayload) {
					t.Fatalf("err = %v, want ErrMalformedPayload", err)
				}
				return
			}
			if err != nil {
				t.Fatal(err)
			}
			if res.KeyFormat != tc.keyFmt || res.CertFormat != tc.certFmt {
				t.Fatalf("formats %d/%d", res.KeyFormat, res.CertFormat)
			}
		})
	}
}

func FuzzParseCertsOnly(f *testing.F) {
	f.Add(ctHex(f, rfc9148A3Cert))
	f.Add([]byte{0x30, 0x00})
	f.Fuzz(func(t *testing.T, b []byte) {
		certs, err := ParseCertsOnly(b)
		if err == nil && len(certs) > ca.MaxCertsOnly {
			t.Fatal("too many certs")
		}
	})
}

func FuzzParseLinks(f *testing.F) {
	f.Add([]byte(`</est/crts>;rt="ace.est.crts";ct="281 287",</est/att>;rt="ace.est.att";ct=285`))
	f.Add([]byte(`<a>;b="\`))
	f.Fuzz(func(t *testing.T, b []byte) {
		links, err := ParseLinks(b)
		if err == nil && len(links) > clMaxLinks {
			t.Fatal("too many links")
		}
	})
}

func FuzzParseMultipart(f *testing.F) {
	f.Add(ctRFC9148A3Response(f))
	f.Add([]byte{0x82, 0x19, 0x01, 0x1c, 0xf6})
	f.Fuzz(func(t *testing.T, b []byte) {
		parts, err := ParseMultipart(b)
		if err == nil && len(parts) > clMaxParts {
			t.Fatal("too many parts")
		}
		_, _ = clParseKeygen(b)
	})
}
