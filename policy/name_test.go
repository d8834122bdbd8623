package policy

import (
	"bytes"
	"strings"
	"testing"

	"golang.org/x/crypto/cryptobyte"
	cbasn1 "golang.org/x/crypto/cryptobyte/asn1"
)

// TestEncodeDER checks the hand-written DER encoders against cryptobyte's
// for every length form (short, one, two and three length octets).
func TestEncodeDER(t *testing.T) {
	t.Parallel()
	for _, n := range []int{0, 1, 127, 128, 255, 256, 65535, 65536, 70000} {
		v := strings.Repeat("x", n)
		var b cryptobyte.Builder
		b.AddASN1(cbasn1.SEQUENCE, func(b *cryptobyte.Builder) {
			b.AddASN1ObjectIdentifier(attrCN.oid)
			b.AddASN1(cbasn1.UTF8String, func(b *cryptobyte.Builder) { b.AddBytes([]byte(v)) })
		})
		atv := b.BytesOrPanic()
		if got := encodeATV(attrCN, v); !bytes.Equal(got, atv) {
			t.Fatalf("encodeATV of %d octets differs", n)
		}
		var nb cryptobyte.Builder
		nb.AddASN1(cbasn1.SEQUENCE, func(b *cryptobyte.Builder) {
			for range 2 {
				b.AddASN1(cbasn1.SET, func(b *cryptobyte.Builder) { b.AddBytes(atv) })
			}
		})
		if got := encodeName([][]byte{atv, atv}); !bytes.Equal(got, nb.BytesOrPanic()) {
			t.Fatalf("encodeName of %d octets differs", n)
		}
		var gb cryptobyte.Builder
		gb.AddASN1(tagDNSP, func(b *cryptobyte.Builder) { b.AddBytes([]byte(v)) })
		if got := encodeGeneralName(tagDNSP, v); !bytes.Equal(got, gb.BytesOrPanic()) {
			t.Fatalf("encodeGeneralName of %d octets differs", n)
		}
	}
}
