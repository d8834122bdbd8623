package policy

import (
	"encoding/asn1"
	"testing"

	"github.com/estca/estca/policy/pkitest"
)

// FuzzHardwareModuleNames checks the SAN walker on arbitrary extension values.
func FuzzHardwareModuleNames(f *testing.F) {
	f.Add(pkitest.SAN(f, pkitest.HardwareModuleName(asn1.ObjectIdentifier{1, 2, 3}, "s")))
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
		var buf [8]sanEntry
		_, _, _ = parseSAN(v, buf[:0])
	})
}
