package policy

import (
	"encoding/asn1"
	"testing"
	"time"

	"golang.org/x/crypto/cryptobyte"
	cbasn1 "golang.org/x/crypto/cryptobyte/asn1"

	"github.com/estca/estca/policy/pkitest"
)

var t0 = time.Date(2026, 3, 1, 12, 0, 0, 0, time.UTC)

// mint issues a certificate under parent (nil: self-signed) with the serial
// and validity the requester tests spell out.
func mint(t testing.TB, parent *pkitest.Cert, cn string, serial int64, isCA bool, nb, na time.Time) *pkitest.Cert {
	t.Helper()
	s := pkitest.Spec{CN: cn, Serial: serial, CA: isCA, NotBefore: nb, NotAfter: na}
	if parent == nil {
		return pkitest.SelfSigned(t, s)
	}
	return parent.Issue(t, s)
}

func sanExt(t testing.TB, fn func(b *cryptobyte.Builder)) []byte {
	t.Helper()
	var b cryptobyte.Builder
	b.AddASN1(cbasn1.SEQUENCE, fn)
	v, err := b.Bytes()
	if err != nil {
		t.Fatal(err)
	}
	return v
}

func addHMN(b *cryptobyte.Builder, typ asn1.ObjectIdentifier, serial []byte) {
	b.AddASN1(cbasn1.Tag(0).ContextSpecific().Constructed(), func(b *cryptobyte.Builder) {
		b.AddASN1ObjectIdentifier(OIDHardwareModuleName)
		b.AddASN1(cbasn1.Tag(0).ContextSpecific().Constructed(), func(b *cryptobyte.Builder) {
			b.AddASN1(cbasn1.SEQUENCE, func(b *cryptobyte.Builder) {
				b.AddASN1ObjectIdentifier(typ)
				b.AddASN1OctetString(serial)
			})
		})
	})
}

func addTagged(b *cryptobyte.Builder, tag int, v []byte) {
	b.AddASN1(cbasn1.Tag(tag).ContextSpecific(), func(b *cryptobyte.Builder) { b.AddBytes(v) })
}

const time365 = 365 * 24 * time.Hour
