package client

import (
	"crypto/ecdsa"
	"crypto/rand"
	"crypto/x509"
	"errors"
	"testing"

	"github.com/fxamacker/cbor/v2"
	"github.com/plgd-dev/go-coap/v3/message"

	"github.com/estca/estca/ca/cms"
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

// okFixture is a software key-generation answer: a CA, its key-package
// signer, a device key and its certificate, and the key sealed for a KEK.
type okFixture struct {
	ca       *pkitest.Cert
	pkcs8    []byte
	cert     *x509.Certificate
	sealed   []byte
	kekID    []byte
	kek      *cms.AESKEK
	signer   *cms.Signer
	roots    *x509.CertPool
	devicePK *ecdsa.PrivateKey
}

func newOKFixture(t testing.TB) *okFixture {
	t.Helper()
	f := &okFixture{ca: pkitest.NewCA(t, "client test CA"), kekID: []byte("kek-1")}
	f.roots = f.ca.Pool()
	s := f.ca.Issue(t, pkitest.Spec{CN: "key-package signer"})
	var err error
	if f.signer, err = cms.NewSigner(s.Key, s.Cert, cms.SignerOptions{}); err != nil {
		t.Fatal(err)
	}
	f.devicePK = pkitest.Key(t)
	if f.pkcs8, err = x509.MarshalPKCS8PrivateKey(f.devicePK); err != nil {
		t.Fatal(err)
	}
	if f.cert, err = f.ca.Sign(pkitest.ClientAuth("device"), f.devicePK.Public()); err != nil {
		t.Fatal(err)
	}
	kek := make([]byte, 16)
	rand.Read(kek)
	if f.kek, err = cms.NewAESKEK(kek); err != nil {
		t.Fatal(err)
	}
	r, err := cms.NewKEKRecipient(f.kekID, f.kek)
	if err != nil {
		t.Fatal(err)
	}
	if f.sealed, err = f.signer.SealKeyPackage(f.pkcs8, r, cms.SealOptions{}); err != nil {
		t.Fatal(err)
	}
	return f
}

func (f *okFixture) dk() *cms.DecryptKey { return &cms.DecryptKey{KEKID: f.kekID, KEK: f.kek} }

func TestOpenServerKey(t *testing.T) {
	t.Parallel()
	f := newOKFixture(t)
	other := newOKFixture(t)
	plain := &KeygenResult{Key: f.pkcs8, KeyFormat: wire.FormatPKCS8, Certificates: []*x509.Certificate{f.cert}}
	enc := &KeygenResult{Key: f.sealed, KeyFormat: wire.FormatServerGeneratedKey, Certificates: []*x509.Certificate{f.cert}}
	vo := cms.VerifyOptions{Roots: f.roots}
	for _, tc := range []struct {
		name string
		res  *KeygenResult
		dk   *cms.DecryptKey
		vo   cms.VerifyOptions
		want error
	}{
		{"plain", plain, nil, vo, nil},
		{"encrypted", enc, f.dk(), vo, nil},
		{"plain although encryption was asked", plain, f.dk(), vo, ErrBadResponse},
		{"encrypted but not asked", enc, nil, vo, ErrBadResponse},
		{"key of another certificate", &KeygenResult{Key: f.pkcs8, KeyFormat: wire.FormatPKCS8, Certificates: []*x509.Certificate{other.cert}}, nil,
			cms.VerifyOptions{Roots: other.roots}, ErrKeyMismatch},
		{"certificate of another CA", plain, nil, cms.VerifyOptions{Roots: other.roots}, nil},
		{"signer of another CA", enc, f.dk(), cms.VerifyOptions{Roots: other.roots}, cms.ErrCertificate},
		{"wrong KEK", enc, other.dk(), vo, cms.ErrDecrypt},
		{"garbage key", &KeygenResult{Key: []byte{0x30, 0}, KeyFormat: wire.FormatPKCS8, Certificates: []*x509.Certificate{f.cert}}, nil, vo,
			wire.ErrMalformedPayload},
		{"no trust anchors", plain, nil, cms.VerifyOptions{}, nil},
	} {
		t.Run(tc.name, func(t *testing.T) {
			k, err := OpenServerKey(tc.res, tc.dk, tc.vo)
			switch {
			case tc.name == "certificate of another CA" || tc.name == "no trust anchors":
				if err == nil {
					t.Fatal("accepted")
				}
			case tc.want == nil && err != nil:
				t.Fatal(err)
			case tc.want == nil:
				if !k.PrivateKey.Public().(*ecdsa.PublicKey).Equal(f.devicePK.Public()) || !k.Certificate.Equal(f.cert) || len(k.Chain) != 2 {
					t.Fatalf("opened %+v", k)
				}
				k.Zero()
			case !errors.Is(err, tc.want):
				t.Fatalf("err = %v, want %v", err, tc.want)
			}
		})
	}
}

// FuzzOpenServerKey: the key part of an answer is untrusted; whatever it
// holds, OpenServerKey accepts only the key of the certificate, verified.
func FuzzOpenServerKey(f *testing.F) {
	fx := newOKFixture(f)
	f.Add(fx.sealed, true)
	f.Add(fx.pkcs8, false)
	f.Fuzz(func(t *testing.T, key []byte, encrypted bool) {
		res := &KeygenResult{Key: key, KeyFormat: wire.FormatPKCS8, Certificates: []*x509.Certificate{fx.cert}}
		var dk *cms.DecryptKey
		if encrypted {
			res.KeyFormat, dk = wire.FormatServerGeneratedKey, fx.dk()
		}
		k, err := OpenServerKey(res, dk, cms.VerifyOptions{Roots: fx.roots})
		if err == nil && !k.PrivateKey.Public().(*ecdsa.PublicKey).Equal(fx.devicePK.Public()) {
			t.Fatal("accepted another key")
		}
	})
}
