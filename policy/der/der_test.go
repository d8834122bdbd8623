package der

import (
	"bytes"
	"testing"

	"golang.org/x/crypto/cryptobyte"
	cbasn1 "golang.org/x/crypto/cryptobyte/asn1"
)

// TestHeader: for lengths at every boundary, the header is what
// cryptobyte writes for the same contents, and HeaderLen its size.
func TestHeader(t *testing.T) {
	t.Parallel()
	for _, n := range []int{0, 1, 0x7f, 0x80, 0xff, 0x100, 0xffff, 0x10000, 0xffffff, 0x1000000} {
		content := make([]byte, n)
		var b cryptobyte.Builder
		b.AddASN1(cbasn1.OCTET_STRING, func(b *cryptobyte.Builder) { b.AddBytes(content) })
		want := b.BytesOrPanic()
		got := AppendHeader([]byte{0xaa}, 0x04, n)
		if !bytes.Equal(got[1:], want[:len(want)-n]) || got[0] != 0xaa {
			t.Errorf("AppendHeader(%d) = %x, want %x", n, got[1:], want[:len(want)-n])
		}
		if HeaderLen(n) != len(want)-n {
			t.Errorf("HeaderLen(%d) = %d, want %d", n, HeaderLen(n), len(want)-n)
		}
	}
}
