package wire

import (
	"bytes"
	"testing"

	"github.com/estca/estca/policy/pkitest"
)

// FuzzParseCertsOnly: certs-only payloads are untrusted input for the EST
// client. The parser must not panic, must stay within MaxCertsOnly, and
// what it accepts must encode as a certs-only form again.
func FuzzParseCertsOnly(f *testing.F) {
	c := pkitest.NewCA(f, "f").Cert
	p7, _ := CertsOnly(c, c)
	f.Add(p7)
	f.Add(pkitest.Fixture(f, "rfc9148/a1-crts-response.hex"))
	f.Add(pkitest.Fixture(f, "rfc9148/a2-sen-response.hex"))
	f.Add([]byte{0x30, 0x00})
	f.Fuzz(func(t *testing.T, b []byte) {
		certs, err := ParseCertsOnly(b)
		if err != nil || len(certs) == 0 {
			return
		}
		if len(certs) > MaxCertsOnly {
			t.Fatalf("%d certificates", len(certs))
		}
		if _, err := CertsOnly(certs...); err != nil {
			t.Fatalf("re-encode: %v", err)
		}
	})
}

func FuzzParseLinks(f *testing.F) {
	f.Add([]byte(`</est/crts>;rt="ace.est.crts";ct="281 287",</est/att>;rt="ace.est.att";ct=285`))
	f.Add([]byte(`<a>;b="\`))
	f.Fuzz(func(t *testing.T, b []byte) {
		links, err := ParseLinks(b)
		if err == nil && len(links) > MaxLinks {
			t.Fatal("too many links")
		}
	})
}

// FuzzParseMultipart: what ParseMultipart accepts, EncodeMultipart writes
// back to parts that parse the same.
func FuzzParseMultipart(f *testing.F) {
	f.Add(pkitest.Fixture(f, "rfc9148/a3-skg-response.hex"))
	f.Add([]byte{0x82, 0x19, 0x01, 0x1c, 0xf6})
	f.Fuzz(func(t *testing.T, b []byte) {
		parts, err := ParseMultipart(b)
		if err != nil {
			return
		}
		if len(parts) > MaxParts {
			t.Fatal("too many parts")
		}
		enc, err := EncodeMultipart(parts...)
		if err != nil {
			t.Fatal(err)
		}
		back, err := ParseMultipart(enc)
		if err != nil || len(back) != len(parts) {
			t.Fatalf("re-parse: %d parts, %v", len(back), err)
		}
		for i := range back {
			if back[i].Format != parts[i].Format || !bytes.Equal(back[i].Data, parts[i].Data) || (back[i].Data == nil) != (parts[i].Data == nil) {
				t.Fatalf("part %d changed", i)
			}
		}
	})
}
