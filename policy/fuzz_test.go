package policy

import (
	"crypto/x509"
	"crypto/x509/pkix"
	"encoding/asn1"
	"testing"

	"golang.org/x/crypto/cryptobyte"

	"github.com/estca/estca/policy/pkitest"
)

// FuzzCheckCSR feeds arbitrary DER through the CSR path the authority runs on
// untrusted input: parse, CheckCSR (SAN walker included), CheckRenewal. It
// must never panic, and an accepted CSR must have a CN and an allowed key.
func FuzzCheckCSR(f *testing.F) {
	key := pkitest.Key(f)
	typ := asn1.ObjectIdentifier{1, 3, 6, 1, 4, 1, 32473, 1}
	san := pkix.Extension{Id: OIDSubjectAltName, Value: sanExt(f, func(b *cryptobyte.Builder) {
		addTagged(b, tagDNS, []byte("a.example"))
		addHMN(b, typ, []byte("SN"))
	})}
	f.Add(pkitest.CSR(f, key, pkix.Name{CommonName: "x"}))
	f.Add(pkitest.CSR(f, key, pkix.Name{CommonName: "x"}, san))
	f.Add([]byte{0x30, 0x00})
	ca := mint(f, nil, "ca", 1, true, t0, t0.Add(time365))
	f.Fuzz(func(t *testing.T, der []byte) {
		csr, err := x509.ParseCertificateRequest(der)
		if err != nil {
			return
		}
		if err := CheckCSR(csr, Rules{AllowSAN: true, MaxSANs: 4}); err == nil {
			if csr.Subject.CommonName == "" || KeyTypeOf(csr.PublicKey) == "" {
				t.Fatal("accepted a CSR without CN or with an unknown key")
			}
		}
		_ = CheckRenewal(ca.Cert, csr)
	})
}

// FuzzHardwareModuleNames checks the SAN walker on arbitrary extension values.
func FuzzHardwareModuleNames(f *testing.F) {
	f.Add(sanExt(f, func(b *cryptobyte.Builder) { addHMN(b, asn1.ObjectIdentifier{1, 2, 3}, []byte("s")) }))
	f.Add([]byte{0x30, 0x02, 0xa0, 0x00})
	f.Fuzz(func(t *testing.T, v []byte) {
		hs, err := HardwareModuleNames(v)
		if err == nil {
			for _, h := range hs {
				if len(h.SerialNum) == 0 {
					t.Fatal("empty hwSerialNum accepted")
				}
			}
		}
		_ = checkSAN(v, 8)
	})
}
