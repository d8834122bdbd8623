package wire

import (
	"bytes"
	"errors"
	"testing"

	"github.com/fxamacker/cbor/v2"

	"github.com/estca/estca/policy/pkitest"
)

// TestMultipartRFC9148 decodes the server-side key generation response of
// RFC 9148 Appendix A.3 and encodes its parts back to the same bytes.
func TestMultipartRFC9148(t *testing.T) {
	t.Parallel()
	payload := pkitest.Fixture(t, "rfc9148/a3-skg-response.hex")
	parts, err := ParseMultipart(payload)
	if err != nil {
		t.Fatal(err)
	}
	if len(parts) != 2 || parts[0].Format != FormatPKCS8 || parts[1].Format != FormatCertsOnly ||
		len(parts[0].Data) != 138 || len(parts[1].Data) != 467 {
		t.Fatalf("parts = %d", len(parts))
	}
	again, err := EncodeMultipart(parts...)
	if err != nil {
		t.Fatal(err)
	}
	if !bytes.Equal(again, payload) {
		t.Fatalf("EncodeMultipart differs from the RFC example:\n got % x\nwant % x", again[:16], payload[:16])
	}
}

func TestMultipartRoundTrip(t *testing.T) {
	t.Parallel()
	for _, tc := range []struct {
		name  string
		parts []Part
		want  []byte
	}{
		{"none", nil, []byte{0x80}},
		{"null representation", []Part{{Format: FormatPKCS8}}, []byte{0x82, 0x19, 0x01, 0x1c, 0xf6}},
		{"empty representation", []Part{{Format: 0, Data: []byte{}}}, []byte{0x82, 0x00, 0x40}},
		{"small format", []Part{{Format: 23, Data: []byte{1}}}, []byte{0x82, 0x17, 0x41, 0x01}},
		{"largest format", []Part{{Format: 0xffff, Data: []byte{1}}}, []byte{0x82, 0x19, 0xff, 0xff, 0x41, 0x01}},
	} {
		t.Run(tc.name, func(t *testing.T) {
			b, err := EncodeMultipart(tc.parts...)
			if err != nil {
				t.Fatal(err)
			}
			if !bytes.Equal(b, tc.want) {
				t.Fatalf("encoded % x, want % x", b, tc.want)
			}
			back, err := ParseMultipart(b)
			if err != nil {
				t.Fatal(err)
			}
			if len(back) != len(tc.parts) {
				t.Fatalf("%d parts back, want %d", len(back), len(tc.parts))
			}
			for i := range back {
				if back[i].Format != tc.parts[i].Format || !bytes.Equal(back[i].Data, tc.parts[i].Data) ||
					(back[i].Data == nil) != (tc.parts[i].Data == nil) {
					t.Errorf("part %d = %+v, want %+v", i, back[i], tc.parts[i])
				}
			}
		})
	}
}

func TestParseMultipartErrors(t *testing.T) {
	t.Parallel()
	enc := func(items ...any) []byte {
		b, err := cbor.Marshal(items)
		if err != nil {
			t.Fatal(err)
		}
		return b
	}
	tooMany := make([]any, 0, 2*(MaxParts+1))
	for range MaxParts + 1 {
		tooMany = append(tooMany, 284, []byte{1})
	}
	for _, tc := range []struct {
		name    string
		payload []byte
	}{
		{"empty", nil},
		{"odd items", enc(284, []byte{1}, 281)},
		{"text format", enc("284", []byte{1})},
		{"text data", enc(284, "key")},
		{"negative format", enc(-1, []byte{1})},
		{"format above 16 bits", enc(0x10000, []byte{1})},
		{"map", func() []byte { b, _ := cbor.Marshal(map[int][]byte{284: {1}}); return b }()},
		{"not an array", enc(284)[1:]},
		{"trailing", append(enc(284, []byte{1}), 0x00)},
		{"indefinite array", []byte{0x9f, 0x19, 0x01, 0x1c, 0x41, 0x01, 0xff}},
		{"indefinite bytes", []byte{0x82, 0x19, 0x01, 0x1c, 0x5f, 0x41, 0x01, 0xff}},
		{"too many parts", enc(tooMany...)},
	} {
		t.Run(tc.name, func(t *testing.T) {
			if _, err := ParseMultipart(tc.payload); !errors.Is(err, ErrMalformedPayload) {
				t.Fatalf("err = %v, want ErrMalformedPayload", err)
			}
		})
	}
}
