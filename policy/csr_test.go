package policy

import (
	"encoding/asn1"
	"testing"

	"github.com/estca/estca/policy/pkitest"
)

func TestHardwareModuleNames(t *testing.T) {
	t.Parallel()
	typ := asn1.ObjectIdentifier{1, 3, 6, 1, 4, 1, 99999, 1}
	v := pkitest.SAN(t, pkitest.Tagged(tagDNS, []byte("x.example")), pkitest.HardwareModuleName(typ, "SN-42"))
	h, err := HardwareModuleNames(v)
	if err != nil || len(h) != 1 || !h[0].Type.Equal(typ) || string(h[0].SerialNum) != "SN-42" {
		t.Fatalf("HardwareModuleNames = %v, %v", h, err)
	}
	if _, err := HardwareModuleNames([]byte{0x30, 0x05}); err == nil {
		t.Fatal("truncated SAN accepted")
	}
}

func TestKnownKeyType(t *testing.T) {
	t.Parallel()
	for _, k := range []string{"ecdsa-p256", "ecdsa-p384", "rsa-2048", "rsa-3072", "ed25519"} {
		if !KnownKeyType(k) {
			t.Errorf("KnownKeyType(%q) = false", k)
		}
	}
	if KnownKeyType("dsa-1024") {
		t.Error("KnownKeyType(dsa-1024) = true")
	}
}
