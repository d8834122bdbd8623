package cms

import (
	"crypto"
	"crypto/rand"
	"crypto/x509"
	"crypto/x509/pkix"
	"encoding/asn1"
	"encoding/pem"
	"errors"
	"reflect"
	"strings"
	"testing"

	"github.com/estca/estca/policy/pkitest"
	"golang.org/x/crypto/cryptobyte"
	cbasn1 "golang.org/x/crypto/cryptobyte/asn1"
)

func csrTemplate() *x509.CertificateRequest {
	return &x509.CertificateRequest{
		Subject:  pkix.Name{CommonName: "device-42", Organization: []string{"estca test"}},
		DNSNames: []string{"device-42.example"},
	}
}

// TestKeyRequestRoundTrip builds CSRs with each kind of request and signer
// key, parses them back, and has openssl verify and print them.
func TestKeyRequestRoundTrip(t *testing.T) {
	t.Parallel()
	p := pki(t)
	edKey := pkitest.NewKey(t, "ed25519")
	for _, tc := range []struct {
		name string
		key  crypto.Signer
		alg  x509.SignatureAlgorithm
		req  KeyRequest
		text []string // what `openssl req -text` must show (it names the attributes, cannot print their values)
		dump []string // what `openssl asn1parse` must show (the values)
	}{
		{"kek/p256", p.recipients["p256"].key, 0,
			KeyRequest{Delivery: DeliverKEK, KeyID: testKEKID, Capabilities: ContentCapabilities(AES128GCM, AES128CBC)},
			[]string{"1.2.840.113549.1.9.16.2.37", "S/MIME Capabilities", "DNS:device-42.example"},
			[]string{"aes-128-gcm", "aes-128-cbc", "OCTET STRING      :device-42 kek"}},
		{"asymmetric/rsa", p.recipients["rsa"].key, 0,
			KeyRequest{Delivery: DeliverAsymmetric, KeyID: p.recipients["rsa"].cert.SubjectKeyId, Capabilities: ContentCapabilities(AES256CBC)},
			[]string{"1.2.840.113549.1.9.16.2.54", "S/MIME Capabilities"}, []string{"aes-256-cbc"}},
		{"asymmetric/rsa-pss", p.recipients["rsa"].key, x509.SHA256WithRSAPSS,
			KeyRequest{Delivery: DeliverAsymmetric, KeyID: []byte{1, 2, 3, 4}, Capabilities: ContentCapabilities(AES128CBC)},
			[]string{"1.2.840.113549.1.9.16.2.54"}, []string{"[HEX DUMP]:01020304"}},
		{"asymmetric/p384", p.recipients["p384"].key, 0,
			KeyRequest{Delivery: DeliverAsymmetric, KeyID: p.recipients["p384"].cert.SubjectKeyId, Capabilities: ContentCapabilities(AES256GCM, AES256CBC)},
			[]string{"1.2.840.113549.1.9.16.2.54"}, []string{"aes-256-gcm", "aes-256-cbc"}},
		{"plain with capabilities/ed25519", edKey, 0,
			KeyRequest{Capabilities: ContentCapabilities(AES128CBC)}, []string{"S/MIME Capabilities"}, []string{"aes-128-cbc"}},
		{"kek without capabilities", p.recipients["p256"].key, 0,
			KeyRequest{Delivery: DeliverKEK, KeyID: []byte{0xAA}}, []string{"1.2.840.113549.1.9.16.2.37"}, []string{"[HEX DUMP]:AA"}},
	} {
		t.Run(tc.name, func(t *testing.T) {
			t.Parallel()
			tmpl := csrTemplate()
			tmpl.SignatureAlgorithm = tc.alg
			der, err := CreateCertificateRequest(rand.Reader, tmpl, tc.key, &tc.req)
			if err != nil {
				t.Fatal(err)
			}
			got, err := ParseKeyRequest(der)
			if err != nil {
				t.Fatal(err)
			}
			if !reflect.DeepEqual(*got, tc.req) {
				t.Fatalf("parsed %+v, built %+v", *got, tc.req)
			}
			csr, err := x509.ParseCertificateRequest(der)
			if err != nil || csr.CheckSignature() != nil {
				t.Fatalf("x509: %v", err)
			}
			if csr.Subject.CommonName != "device-42" || len(csr.DNSNames) != 1 {
				t.Fatalf("template fields lost: %v %v", csr.Subject, csr.DNSNames)
			}
			dir := t.TempDir()
			in := writeFile(t, dir, "req.pem", pem.EncodeToMemory(&pem.Block{Type: "CERTIFICATE REQUEST", Bytes: der}))
			openssl(t, "req", "-in", in, "-verify", "-noout")
			text := string(openssl(t, "req", "-in", in, "-text", "-noout"))
			for _, s := range tc.text {
				if !strings.Contains(text, s) {
					t.Errorf("openssl req -text lacks %q:\n%s", s, text)
				}
			}
			dump := string(openssl(t, "asn1parse", "-in", in))
			for _, s := range tc.dump {
				if !strings.Contains(dump, s) {
					t.Errorf("openssl asn1parse lacks %q:\n%s", s, dump)
				}
			}
		})
	}
}

func TestContentEncryptionChoice(t *testing.T) {
	t.Parallel()
	caps := func(c ...ContentEncryption) []Capability { return ContentCapabilities(c...) }
	desEDE3 := Capability{ID: asn1.ObjectIdentifier{1, 2, 840, 113549, 3, 7}}
	withParams := Capability{ID: oidAES128CBC, Parameters: []byte{0x04, 0x00}}
	for _, tc := range []struct {
		name string
		caps []Capability
		bits int
		want ContentEncryption
		err  error
	}{
		{"absent, 128", nil, 128, AES128CBC, nil},
		{"absent, 256", nil, 256, AES256CBC, nil},
		{"empty list", []Capability{}, 128, 0, ErrNoUsableAlgorithm},
		{"gcm first", caps(AES128GCM, AES128CBC), 128, AES128GCM, nil},
		{"cbc first", caps(AES128CBC, AES128GCM), 128, AES128CBC, nil},
		{"exact size wins over order", caps(AES256GCM, AES128CBC), 128, AES128CBC, nil},
		{"stronger when no exact", caps(AES256GCM), 128, AES256GCM, nil},
		{"never weaker", caps(AES128GCM, AES128CBC), 256, 0, ErrNoUsableAlgorithm},
		{"unknown skipped", []Capability{desEDE3, {ID: oidAES256CBC}}, 256, AES256CBC, nil},
		{"only unknown", []Capability{desEDE3}, 128, 0, ErrNoUsableAlgorithm},
		{"parameters not allowed", []Capability{withParams}, 128, 0, ErrNoUsableAlgorithm},
	} {
		r := &KeyRequest{Delivery: DeliverKEK, KeyID: []byte{1}, Capabilities: tc.caps}
		got, err := r.ContentEncryption(tc.bits)
		if got != tc.want || !errors.Is(err, tc.err) || (tc.err == nil && err != nil) {
			t.Errorf("%s: got %v, %v; want %v, %v", tc.name, got, err, tc.want, tc.err)
		}
	}
	if _, err := (&KeyRequest{}).ContentEncryption(192); err == nil {
		t.Error("192 bits accepted")
	}
}

// csrWithAttrs is a CertificationRequest with the given attribute elements
// and a dummy signature: ParseKeyRequest does not check signatures.
func csrWithAttrs(t testing.TB, attrs ...[]byte) []byte {
	t.Helper()
	base, err := x509.CreateCertificateRequest(rand.Reader, csrTemplate(), pki(t).recipients["p256"].key)
	if err != nil {
		t.Fatal(err)
	}
	head, _, sigAlg, err := splitCSR(base)
	if err != nil {
		t.Fatal(err)
	}
	var b cryptobyte.Builder
	b.AddASN1(cbasn1.SEQUENCE, func(b *cryptobyte.Builder) {
		b.AddASN1(cbasn1.SEQUENCE, func(b *cryptobyte.Builder) {
			b.AddBytes(head)
			b.AddASN1(tagExplicit0, func(b *cryptobyte.Builder) {
				for _, a := range attrs {
					b.AddBytes(a)
				}
			})
		})
		b.AddBytes(sigAlg)
		b.AddASN1BitString([]byte{0})
	})
	return b.BytesOrPanic()
}

func octets(b []byte) []byte {
	var c cryptobyte.Builder
	c.AddASN1OctetString(b)
	return c.BytesOrPanic()
}

func TestParseKeyRequestRejects(t *testing.T) {
	t.Parallel()
	id := octets([]byte{1, 2, 3})
	goodCaps := func() []byte {
		var b cryptobyte.Builder
		b.AddASN1(cbasn1.SEQUENCE, func(b *cryptobyte.Builder) { addAlgID(b, oidAES128CBC, false) })
		return b.BytesOrPanic()
	}()
	manyCaps := func() []byte {
		var b cryptobyte.Builder
		b.AddASN1(cbasn1.SEQUENCE, func(b *cryptobyte.Builder) {
			for i := 0; i <= maxCapabilities; i++ {
				addAlgID(b, oidAES128CBC, false)
			}
		})
		return b.BytesOrPanic()
	}()
	for _, tc := range []struct {
		name string
		csr  []byte
		want error
	}{
		{"both identifiers", csrWithAttrs(t, pkitest.Attribute(oidAttrDecryptKeyID, id), pkitest.Attribute(oidAttrAsymmDecryptKeyID, id)), ErrMalformed},
		{"duplicate attribute", csrWithAttrs(t, pkitest.Attribute(oidAttrDecryptKeyID, id), pkitest.Attribute(oidAttrDecryptKeyID, id)), ErrMalformed},
		{"two values", csrWithAttrs(t, pkitest.Attribute(oidAttrDecryptKeyID, id, octets([]byte{4}))), ErrMalformed},
		{"no value", csrWithAttrs(t, pkitest.Attribute(oidAttrAsymmDecryptKeyID)), ErrMalformed},
		{"empty identifier", csrWithAttrs(t, pkitest.Attribute(oidAttrDecryptKeyID, octets(nil))), ErrMalformed},
		{"long identifier", csrWithAttrs(t, pkitest.Attribute(oidAttrDecryptKeyID, octets(make([]byte, maxKeyIDLen+1)))), ErrMalformed},
		{"identifier not OCTET STRING", csrWithAttrs(t, pkitest.Attribute(oidAttrDecryptKeyID, oidDER(oidData))), ErrMalformed},
		{"capabilities not SEQUENCE", csrWithAttrs(t, pkitest.Attribute(oidAttrSMIMECapabilities, id)), ErrMalformed},
		{"capability without OID", csrWithAttrs(t, pkitest.Attribute(oidAttrSMIMECapabilities, []byte{0x30, 0x02, 0x30, 0x00})), ErrMalformed},
		{"too many capabilities", csrWithAttrs(t, pkitest.Attribute(oidAttrSMIMECapabilities, manyCaps)), ErrTooLarge},
		{"oversized", make([]byte, MaxCSRSize+1), ErrTooLarge},
		{"not a CSR", []byte{0x30, 0x00}, ErrMalformed},
	} {
		if got, err := ParseKeyRequest(tc.csr); !errors.Is(err, tc.want) || got != nil {
			t.Errorf("%s: %v, want %v", tc.name, err, tc.want)
		}
	}
	// Unknown attributes are ignored; SMIMECapabilities alone is a plain request.
	r, err := ParseKeyRequest(csrWithAttrs(t, pkitest.Attribute(oidAttrChallengePassword, octets([]byte("x"))), pkitest.Attribute(oidAttrSMIMECapabilities, goodCaps)))
	if err != nil || r.Delivery != DeliverPlain || len(r.Capabilities) != 1 {
		t.Fatalf("plain request: %+v, %v", r, err)
	}
	// Every truncation of a real request is refused.
	der, err := CreateCertificateRequest(rand.Reader, csrTemplate(), pki(t).recipients["p256"].key,
		&KeyRequest{Delivery: DeliverKEK, KeyID: []byte{7}, Capabilities: ContentCapabilities(AES128CBC)})
	if err != nil {
		t.Fatal(err)
	}
	for n := 0; n < len(der); n++ {
		if _, err := ParseKeyRequest(der[:n]); !errors.Is(err, ErrMalformed) {
			t.Fatalf("prefix of %d bytes: %v", n, err)
		}
	}
}

func TestCreateCertificateRequestRejects(t *testing.T) {
	t.Parallel()
	k := pki(t).recipients["p256"].key
	for _, r := range []*KeyRequest{
		{Delivery: DeliverKEK},
		{Delivery: DeliverAsymmetric, KeyID: make([]byte, maxKeyIDLen+1)},
		{Delivery: DeliverPlain, KeyID: []byte{1}},
		{Delivery: 7, KeyID: []byte{1}},
	} {
		if _, err := CreateCertificateRequest(rand.Reader, csrTemplate(), k, r); err == nil {
			t.Errorf("%+v accepted", r)
		}
	}
	// A template attribute of the same type would make a duplicate.
	tmpl := csrTemplate()
	//lint:ignore SA1019 the deprecated field is what a caller could still set
	tmpl.Attributes = []pkix.AttributeTypeAndValueSET{{Type: oidAttrSMIMECapabilities,
		Value: [][]pkix.AttributeTypeAndValue{{{Type: oidData, Value: "x"}}}}}
	if _, err := CreateCertificateRequest(rand.Reader, tmpl, k, &KeyRequest{Capabilities: ContentCapabilities(AES128CBC)}); err == nil {
		t.Error("duplicate SMIMECapabilities accepted")
	}
}
