package policy

import (
	"crypto"
	"crypto/ecdsa"
	"crypto/ed25519"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/rsa"
	"crypto/x509"
	"crypto/x509/pkix"
	"encoding/asn1"
	"errors"
	"strings"
	"testing"

	"golang.org/x/crypto/cryptobyte"
	cbasn1 "golang.org/x/crypto/cryptobyte/asn1"

	"github.com/estca/estca/policy/pkitest"
)

func TestCheckCSR(t *testing.T) {
	t.Parallel()
	p256 := pkitest.Key(t)
	p384, _ := ecdsa.GenerateKey(elliptic.P384(), rand.Reader)
	p224, _ := ecdsa.GenerateKey(elliptic.P224(), rand.Reader)
	_, ed, _ := ed25519.GenerateKey(rand.Reader)
	rsa2048, err := rsa.GenerateKey(rand.Reader, 2048)
	if err != nil {
		t.Fatal(err)
	}
	cn := pkix.Name{CommonName: "dev-1"}
	hwType := asn1.ObjectIdentifier{1, 3, 6, 1, 4, 1, 99999, 1}
	san := func(fn func(b *cryptobyte.Builder)) pkix.Extension {
		return pkix.Extension{Id: OIDSubjectAltName, Value: sanExt(t, fn)}
	}
	good := san(func(b *cryptobyte.Builder) {
		addTagged(b, tagDNS, []byte("dev-1.example.com"))
		addTagged(b, tagIP, []byte{192, 0, 2, 1})
		addTagged(b, tagURI, []byte("urn:dev:1"))
		addTagged(b, tagEmail, []byte("ops@example.com"))
		addHMN(b, hwType, []byte("SN-1"))
	})
	many := san(func(b *cryptobyte.Builder) {
		for range 9 {
			addTagged(b, tagDNS, []byte("a.example"))
		}
	})
	bc := func(ca bool) pkix.Extension {
		v, _ := asn1.Marshal(struct {
			CA bool `asn1:"optional"`
		}{ca})
		return pkix.Extension{Id: OIDBasicConstraints, Value: v}
	}
	tests := []struct {
		name   string
		key    crypto.Signer
		subj   pkix.Name
		exts   []pkix.Extension
		rules  Rules
		reason string // "" means accepted
	}{
		{"p256 default", p256, cn, nil, Rules{}, ""},
		{"p384 default", p384, cn, nil, Rules{}, ""},
		{"p224 refused", p224, cn, nil, Rules{}, "key type not allowed"},
		{"ed25519 not by default", ed, cn, nil, Rules{}, "key type not allowed"},
		{"ed25519 listed", ed, cn, nil, Rules{KeyTypes: []string{"ed25519"}}, ""},
		{"rsa-2048 listed", rsa2048, cn, nil, Rules{KeyTypes: []string{"rsa-2048"}}, ""},
		{"rsa-2048 not listed", rsa2048, cn, nil, Rules{KeyTypes: []string{"rsa-3072"}}, "key type not allowed"},
		{"p256 excluded", p256, cn, nil, Rules{KeyTypes: []string{"ecdsa-p384"}}, "key type not allowed"},
		{"no CN", p256, pkix.Name{SerialNumber: "123"}, nil, Rules{}, "subject commonName missing"},
		{"SANs allowed", p256, cn, []pkix.Extension{good}, Rules{AllowSAN: true}, ""},
		{"SANs refused", p256, cn, []pkix.Extension{good}, Rules{}, "SAN not allowed by profile"},
		{"too many SANs default", p256, cn, []pkix.Extension{many}, Rules{AllowSAN: true}, "too many SAN entries"},
		{"max SANs raised", p256, cn, []pkix.Extension{many}, Rules{AllowSAN: true, MaxSANs: 9}, ""},
		{"max SANs lowered", p256, cn, []pkix.Extension{good}, Rules{AllowSAN: true, MaxSANs: 2}, "too many SAN entries"},
		{"wildcard DNS", p256, cn, []pkix.Extension{san(func(b *cryptobyte.Builder) {
			addTagged(b, tagDNS, []byte("*.example.com"))
		})}, Rules{AllowSAN: true}, "bad DNS SAN"},
		{"directoryName", p256, cn, []pkix.Extension{san(func(b *cryptobyte.Builder) {
			b.AddASN1(cbasn1.Tag(4).ContextSpecific().Constructed(), func(b *cryptobyte.Builder) {
				b.AddASN1(cbasn1.SEQUENCE, func(*cryptobyte.Builder) {})
			})
		})}, Rules{AllowSAN: true}, "SAN type not allowed"},
		{"registeredID", p256, cn, []pkix.Extension{san(func(b *cryptobyte.Builder) {
			addTagged(b, 8, []byte{0x2a, 0x03})
		})}, Rules{AllowSAN: true}, "SAN type not allowed"},
		{"foreign otherName", p256, cn, []pkix.Extension{san(func(b *cryptobyte.Builder) {
			b.AddASN1(cbasn1.Tag(0).ContextSpecific().Constructed(), func(b *cryptobyte.Builder) {
				b.AddASN1ObjectIdentifier(asn1.ObjectIdentifier{1, 3, 6, 1, 4, 1, 311, 20, 2, 3})
				b.AddASN1(cbasn1.Tag(0).ContextSpecific().Constructed(), func(b *cryptobyte.Builder) {
					b.AddASN1(cbasn1.UTF8String, func(b *cryptobyte.Builder) { b.AddBytes([]byte("x@y")) })
				})
			})
		})}, Rules{AllowSAN: true}, "otherName type not allowed"},
		{"empty hwSerialNum", p256, cn, []pkix.Extension{san(func(b *cryptobyte.Builder) {
			addHMN(b, hwType, nil)
		})}, Rules{AllowSAN: true}, "malformed hardwareModuleName"},
		{"empty SAN", p256, cn, []pkix.Extension{san(func(*cryptobyte.Builder) {})}, Rules{AllowSAN: true}, "empty SAN"},
		{"CA requested", p256, cn, []pkix.Extension{bc(true)}, Rules{}, "CA certificate requested"},
		{"CA false ok", p256, cn, []pkix.Extension{bc(false)}, Rules{}, ""},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			csr := pkitest.ParseCSR(t, pkitest.CSR(t, tc.key, tc.subj, tc.exts...))
			err := CheckCSR(csr, tc.rules)
			if tc.reason == "" {
				if err != nil {
					t.Fatalf("CheckCSR: %v", err)
				}
				return
			}
			var pe *Error
			if !errors.As(err, &pe) || pe.Reason != tc.reason || !errors.Is(err, ErrRejected) {
				t.Fatalf("CheckCSR = %v, want reason %q", err, tc.reason)
			}
			if !strings.HasPrefix(err.Error(), "policy: ") {
				t.Errorf("error %q lacks package prefix", err)
			}
		})
	}
}

func TestHardwareModuleNames(t *testing.T) {
	t.Parallel()
	typ := asn1.ObjectIdentifier{1, 3, 6, 1, 4, 1, 99999, 1}
	v := sanExt(t, func(b *cryptobyte.Builder) {
		addTagged(b, tagDNS, []byte("x.example"))
		addHMN(b, typ, []byte("SN-42"))
	})
	h, err := HardwareModuleNames(v)
	if err != nil || len(h) != 1 || !h[0].Type.Equal(typ) || string(h[0].SerialNum) != "SN-42" {
		t.Fatalf("HardwareModuleNames = %v, %v", h, err)
	}
	if _, err := HardwareModuleNames([]byte{0x30, 0x05}); err == nil {
		t.Fatal("truncated SAN accepted")
	}
}

func TestCheckRenewal(t *testing.T) {
	t.Parallel()
	ca := mint(t, nil, "ca", 1, true, t0.Add(-time365), t0.Add(time365))
	key := pkitest.Key(t)
	sanA := pkix.Extension{Id: OIDSubjectAltName, Value: sanExt(t, func(b *cryptobyte.Builder) {
		addTagged(b, tagDNS, []byte("a.example"))
	})}
	sanB := pkix.Extension{Id: OIDSubjectAltName, Value: sanExt(t, func(b *cryptobyte.Builder) {
		addTagged(b, tagDNS, []byte("b.example"))
	})}
	curCSR := pkitest.ParseCSR(t, pkitest.CSR(t, key, pkix.Name{CommonName: "dev-1", Organization: []string{"Acme"}}, sanA))
	der, err := x509.CreateCertificate(rand.Reader, &x509.Certificate{
		SerialNumber: bigOne, RawSubject: curCSR.RawSubject, NotBefore: t0, NotAfter: t0.Add(time365),
		ExtraExtensions: []pkix.Extension{sanA},
	}, ca.Cert, key.Public(), ca.Key)
	if err != nil {
		t.Fatal(err)
	}
	cur, _ := x509.ParseCertificate(der)
	newKey := pkitest.Key(t)
	tests := []struct {
		name   string
		csr    *x509.CertificateRequest
		reason string
	}{
		{"identical, rekey", pkitest.ParseCSR(t, pkitest.CSR(t, newKey, pkix.Name{CommonName: "dev-1", Organization: []string{"Acme"}}, sanA)), ""},
		{"identical, same key", curCSR, ""},
		{"subject changed", pkitest.ParseCSR(t, pkitest.CSR(t, key, pkix.Name{CommonName: "dev-2", Organization: []string{"Acme"}}, sanA)), "subject differs from current certificate"},
		{"subject attribute dropped", pkitest.ParseCSR(t, pkitest.CSR(t, key, pkix.Name{CommonName: "dev-1"}, sanA)), "subject differs from current certificate"},
		{"SAN changed", pkitest.ParseCSR(t, pkitest.CSR(t, key, pkix.Name{CommonName: "dev-1", Organization: []string{"Acme"}}, sanB)), "SAN differs from current certificate"},
		{"SAN dropped", pkitest.ParseCSR(t, pkitest.CSR(t, key, pkix.Name{CommonName: "dev-1", Organization: []string{"Acme"}})), "SAN differs from current certificate"},
		{"nil csr", nil, "nothing to renew"},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			err := CheckRenewal(cur, tc.csr)
			if tc.reason == "" {
				if err != nil {
					t.Fatal(err)
				}
				return
			}
			var pe *Error
			if !errors.As(err, &pe) || pe.Reason != tc.reason || !errors.Is(err, ErrRejected) {
				t.Fatalf("CheckRenewal = %v, want %q", err, tc.reason)
			}
		})
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
