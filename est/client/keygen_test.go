package client

import (
	"errors"
	"testing"

	"github.com/fxamacker/cbor/v2"
	"github.com/plgd-dev/go-coap/v3/message"

	"github.com/estca/estca/est/wire"
	"github.com/estca/estca/policy/pkitest"
)

// TestParseKeygenRFC9148 splits the server-side key generation response of
// RFC 9148 Appendix A.3.
func TestParseKeygenRFC9148(t *testing.T) {
	t.Parallel()
	res, err := parseKeygen(pkitest.Fixture(t, "rfc9148/a3-skg-response.hex"))
	if err != nil {
		t.Fatal(err)
	}
	if res.KeyFormat != wire.FormatPKCS8 || res.CertFormat != wire.FormatCertsOnly || len(res.Key) != 138 ||
		len(res.Certificates) != 1 || res.Certificates[0].Subject.String() != "O=skg example" {
		t.Fatalf("keygen = %+v", res)
	}
}

func TestParseKeygenShapes(t *testing.T) {
	t.Parallel()
	a3, err := wire.ParseMultipart(pkitest.Fixture(t, "rfc9148/a3-skg-response.hex"))
	if err != nil {
		t.Fatal(err)
	}
	key, p7 := a3[0].Data, a3[1].Data
	certs, err := wire.ParseCertsOnly(p7)
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
			res, err := parseKeygen(tc.payload)
			if !tc.ok {
				if !errors.Is(err, wire.ErrMalformedPayload) {
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

// FuzzParseKeygen: a server-side key generation response is untrusted input;
// what is accepted has exactly one key and one certificate part.
func FuzzParseKeygen(f *testing.F) {
	f.Add(pkitest.Fixture(f, "rfc9148/a3-skg-response.hex"))
	f.Add([]byte{0x82, 0x19, 0x01, 0x1c, 0xf6})
	f.Fuzz(func(t *testing.T, b []byte) {
		res, err := parseKeygen(b)
		if err == nil && (len(res.Key) == 0 || len(res.Certificates) == 0) {
			t.Fatalf("accepted %+v", res)
		}
	})
}
