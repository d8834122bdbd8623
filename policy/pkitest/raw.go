package pkitest

import (
	"crypto"
	"crypto/ecdsa"
	"crypto/ed25519"
	"crypto/elliptic"
	"crypto/md5"
	"crypto/rand"
	"crypto/rsa"
	"crypto/sha1"
	"crypto/sha256"
	"crypto/x509"
	"crypto/x509/pkix"
	"encoding/asn1"
	"encoding/hex"
	"math/big"
	"net"
	"testing"
	"time"

	"golang.org/x/crypto/cryptobyte"
	cbasn1 "golang.org/x/crypto/cryptobyte/asn1"
)

// NewKey makes a fresh key of a kind: "p256", "p384", "p224", "rsa1024",
// "rsa2048" (or "rsa"), "ed25519".
func NewKey(t testing.TB, kind string) crypto.Signer {
	t.Helper()
	var k crypto.Signer
	var err error
	switch kind {
	case "p256":
		k, err = ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	case "p384":
		k, err = ecdsa.GenerateKey(elliptic.P384(), rand.Reader)
	case "p224":
		k, err = ecdsa.GenerateKey(elliptic.P224(), rand.Reader)
	case "rsa1024":
		k, err = rsa.GenerateKey(rand.Reader, 1024)
	case "rsa2048", "rsa":
		k, err = rsa.GenerateKey(rand.Reader, 2048)
	case "ed25519":
		_, k, err = ed25519.GenerateKey(rand.Reader)
	default:
		t.Fatalf("pkitest: unknown key kind %q", kind)
	}
	if err != nil {
		t.Fatal(err)
	}
	return k
}

// IssueTemplate signs tmpl for key with parent (nil: self-signed) and
// returns the certificate with key. A nil serial becomes a random one.
func IssueTemplate(t testing.TB, parent *Cert, tmpl *x509.Certificate, key crypto.Signer) *Cert {
	t.Helper()
	issuer, signer := tmpl, key
	if parent != nil {
		issuer, signer = parent.Cert, parent.Key
	}
	return &Cert{Cert: SignTemplate(t, tmpl, key.Public(), issuer, signer), Key: key}
}

// SignTemplate signs tmpl for the public key pub with signer, the key of
// issuer (tmpl itself for a self-signed certificate), for the cases where
// only the public key is at hand (a CSR's, a fixture's). A nil serial
// becomes a random one.
func SignTemplate(t testing.TB, tmpl *x509.Certificate, pub crypto.PublicKey, issuer *x509.Certificate, signer crypto.Signer) *x509.Certificate {
	t.Helper()
	if tmpl.SerialNumber == nil {
		serial, err := rand.Int(rand.Reader, new(big.Int).Lsh(big.NewInt(1), 64))
		if err != nil {
			t.Fatal(err)
		}
		tmpl.SerialNumber = serial
	}
	der := must[[]byte](t)(x509.CreateCertificate(rand.Reader, tmpl, issuer, pub, signer))
	return must[*x509.Certificate](t)(x509.ParseCertificate(der))
}

// CRL makes a CRL of ca, with CRL number number, revoking serials
// (keyCompromise, at this).
func CRL(t testing.TB, ca *Cert, number int64, this, next time.Time, serials ...*big.Int) *x509.RevocationList {
	t.Helper()
	var entries []x509.RevocationListEntry
	for _, s := range serials {
		entries = append(entries, x509.RevocationListEntry{SerialNumber: s, RevocationTime: this, ReasonCode: 1})
	}
	der := must[[]byte](t)(x509.CreateRevocationList(rand.Reader, &x509.RevocationList{
		Number: big.NewInt(number), ThisUpdate: this, NextUpdate: next,
		RevokedCertificateEntries: entries,
	}, ca.Cert, ca.Key))
	return must[*x509.RevocationList](t)(x509.ParseRevocationList(der))
}

// must returns a function that returns v, or ends the test when err is not
// nil; it is curried so that it takes a two-value call directly (T cannot
// be inferred from the call, so callers name it).
func must[T any](t testing.TB) func(v T, err error) T {
	return func(v T, err error) T {
		t.Helper()
		if err != nil {
			t.Fatal(err)
		}
		return v
	}
}

// Fingerprint is the hex SHA-256 of c's DER.
func Fingerprint(c *x509.Certificate) string {
	sum := sha256.Sum256(c.Raw)
	return hex.EncodeToString(sum[:])
}

// ATV is a DER AttributeTypeAndValue with a value of the given string tag.
func ATV(oid asn1.ObjectIdentifier, tag cbasn1.Tag, v string) []byte {
	var b cryptobyte.Builder
	b.AddASN1(cbasn1.SEQUENCE, func(b *cryptobyte.Builder) {
		b.AddASN1ObjectIdentifier(oid)
		b.AddASN1(tag, func(b *cryptobyte.Builder) { b.AddBytes([]byte(v)) })
	})
	return b.BytesOrPanic()
}

// CN, SerialNumber and O are commonName (UTF8String), serialNumber
// (PrintableString) and organizationName (UTF8String) ATVs.
func CN(v string) []byte { return ATV(asn1.ObjectIdentifier{2, 5, 4, 3}, cbasn1.UTF8String, v) }
func SerialNumber(v string) []byte {
	return ATV(asn1.ObjectIdentifier{2, 5, 4, 5}, cbasn1.PrintableString, v)
}
func O(v string) []byte { return ATV(asn1.ObjectIdentifier{2, 5, 4, 10}, cbasn1.UTF8String, v) }

// Name is a DER Name with one RDN per ATV, in order; a nil ATV makes an
// empty RDN.
func Name(atvs ...[]byte) []byte {
	rdns := make([][]byte, len(atvs))
	for i, a := range atvs {
		rdns[i] = tlv(cbasn1.SET, a)
	}
	return tlv(cbasn1.SEQUENCE, rdns...)
}

// RDN is a DER Name of one multi-valued RDN holding atvs.
func RDN(atvs ...[]byte) []byte {
	return tlv(cbasn1.SEQUENCE, tlv(cbasn1.SET, atvs...))
}

// tlv is the DER element of tag whose contents are parts in order.
func tlv(tag cbasn1.Tag, parts ...[]byte) []byte {
	var b cryptobyte.Builder
	b.AddASN1(tag, func(b *cryptobyte.Builder) {
		for _, p := range parts {
			b.AddBytes(p)
		}
	})
	return b.BytesOrPanic()
}

// GeneralName writes one GeneralName (RFC 5280 §4.2.1.6).
type GeneralName func(*cryptobyte.Builder)

// SAN is a subjectAltName extension value: GeneralNames holding names.
func SAN(t testing.TB, names ...GeneralName) []byte {
	t.Helper()
	var b cryptobyte.Builder
	b.AddASN1(cbasn1.SEQUENCE, func(b *cryptobyte.Builder) {
		for _, n := range names {
			n(b)
		}
	})
	v, err := b.Bytes()
	if err != nil {
		t.Fatal(err)
	}
	return v
}

// OtherName is an otherName GeneralName of type typeID whose value is the
// DER value (RFC 5280 §4.2.1.6).
func OtherName(typeID asn1.ObjectIdentifier, value []byte) GeneralName {
	return func(b *cryptobyte.Builder) {
		b.AddASN1(cbasn1.Tag(0).ContextSpecific().Constructed(), func(b *cryptobyte.Builder) {
			b.AddASN1ObjectIdentifier(typeID)
			b.AddASN1(cbasn1.Tag(0).ContextSpecific().Constructed(), func(b *cryptobyte.Builder) {
				b.AddBytes(value)
			})
		})
	}
}

// HardwareModuleName is an otherName hardwareModuleName (RFC 4108 §5).
func HardwareModuleName(hwType asn1.ObjectIdentifier, serial string) GeneralName {
	var b cryptobyte.Builder
	b.AddASN1(cbasn1.SEQUENCE, func(b *cryptobyte.Builder) {
		b.AddASN1ObjectIdentifier(hwType)
		b.AddASN1OctetString([]byte(serial))
	})
	return OtherName(asn1.ObjectIdentifier{1, 3, 6, 1, 5, 5, 7, 8, 4}, b.BytesOrPanic())
}

// Tagged is a primitive context-specific GeneralName with raw contents v
// (tag 1 rfc822Name, 2 dNSName, 6 URI, 7 iPAddress, 8 registeredID).
func Tagged(tag int, v []byte) GeneralName {
	return func(b *cryptobyte.Builder) {
		b.AddASN1(cbasn1.Tag(tag).ContextSpecific(), func(b *cryptobyte.Builder) { b.AddBytes(v) })
	}
}

// DNS, URI and Email are dNSName, uniformResourceIdentifier and rfc822Name.
func DNS(s string) GeneralName   { return Tagged(2, []byte(s)) }
func URI(s string) GeneralName   { return Tagged(6, []byte(s)) }
func Email(s string) GeneralName { return Tagged(1, []byte(s)) }

// IP is an iPAddress: 4 bytes for IPv4, 16 for IPv6.
func IP(s string) GeneralName {
	ip := net.ParseIP(s)
	if v4 := ip.To4(); v4 != nil {
		ip = v4
	}
	return Tagged(7, ip)
}

// DirName is a directoryName whose Name is CN=cn.
func DirName(cn string) GeneralName {
	return func(b *cryptobyte.Builder) {
		b.AddASN1(cbasn1.Tag(4).ContextSpecific().Constructed(), func(b *cryptobyte.Builder) {
			b.AddBytes(Name(CN(cn)))
		})
	}
}

// Ext is an extension with a DER value.
func Ext(oid asn1.ObjectIdentifier, critical bool, v []byte) pkix.Extension {
	return pkix.Extension{Id: oid, Critical: critical, Value: v}
}

// SANExt is a non-critical subjectAltName extension with value v (SAN).
func SANExt(v []byte) pkix.Extension { return Ext(asn1.ObjectIdentifier{2, 5, 29, 17}, false, v) }

// KeyUsageExt is a critical keyUsage extension.
func KeyUsageExt(t testing.TB, ku x509.KeyUsage) pkix.Extension {
	t.Helper()
	var bits [2]byte
	n := 0
	for i := 0; i < 9; i++ {
		if ku&(1<<i) != 0 {
			bits[i/8] |= 0x80 >> (i % 8)
			n = i + 1
		}
	}
	v, err := asn1.Marshal(asn1.BitString{Bytes: bits[:(n+7)/8], BitLength: n})
	if err != nil {
		t.Fatal(err)
	}
	return Ext(asn1.ObjectIdentifier{2, 5, 29, 15}, true, v)
}

// BasicConstraintsExt is a critical basicConstraints extension.
func BasicConstraintsExt(ca bool) pkix.Extension {
	v, _ := asn1.Marshal(struct {
		CA bool `asn1:"optional"`
	}{ca})
	return Ext(asn1.ObjectIdentifier{2, 5, 29, 19}, true, v)
}

// Attribute is a DER Attribute (RFC 2986 §4.1) of type oid whose SET holds
// the DER values in order.
func Attribute(oid asn1.ObjectIdentifier, values ...[]byte) []byte {
	id, err := asn1.Marshal(oid)
	if err != nil {
		panic(err)
	}
	return tlv(cbasn1.SEQUENCE, id, tlv(cbasn1.SET, values...))
}

// Request is a PKCS#10 request to build, also one crypto/x509 will not
// make: another version, an MD5 or SHA-1 signature, a P-224 key.
type Request struct {
	Key        crypto.Signer
	Subject    []byte // DER Name
	Extensions []pkix.Extension
	Version    int                     // 0 unless testing other versions
	Algorithm  x509.SignatureAlgorithm // 0: crypto/x509's choice
}

// DER builds the request: with crypto/x509 when it can, else by hand.
func (r Request) DER(t testing.TB) []byte {
	t.Helper()
	ec, isEC := r.Key.Public().(*ecdsa.PublicKey)
	if r.Version == 0 && r.Algorithm == 0 && (!isEC || ec.Curve != elliptic.P224()) {
		der, err := x509.CreateCertificateRequest(rand.Reader, &x509.CertificateRequest{
			RawSubject: r.Subject, ExtraExtensions: r.Extensions}, r.Key)
		if err != nil {
			t.Fatal(err)
		}
		return der
	}
	spki, err := x509.MarshalPKIXPublicKey(r.Key.Public())
	if err != nil {
		t.Fatal(err)
	}
	var tb cryptobyte.Builder
	tb.AddASN1(cbasn1.SEQUENCE, func(b *cryptobyte.Builder) {
		b.AddASN1Int64(int64(r.Version))
		b.AddBytes(r.Subject)
		b.AddBytes(spki)
		b.AddASN1(cbasn1.Tag(0).ContextSpecific().Constructed(), func(b *cryptobyte.Builder) {
			if len(r.Extensions) == 0 {
				return
			}
			exts, err := asn1.Marshal(r.Extensions)
			if err != nil {
				t.Fatal(err)
			}
			b.AddBytes(Attribute(asn1.ObjectIdentifier{1, 2, 840, 113549, 1, 9, 14}, exts))
		})
	})
	return SignRequest(t, tb.BytesOrPanic(), r.Key, r.Algorithm)
}

// Parsed builds and parses the request (its signature not checked).
func (r Request) Parsed(t testing.TB) *x509.CertificateRequest {
	t.Helper()
	return ParseCSR(t, r.DER(t))
}

// SignRequest signs a DER CertificationRequestInfo with key and alg (MD5
// or SHA-1 with RSA, ECDSA with SHA-1, or 0 for SHA-256) and returns the
// CertificationRequest.
func SignRequest(t testing.TB, info []byte, key crypto.Signer, alg x509.SignatureAlgorithm) []byte {
	t.Helper()
	var h crypto.Hash
	var oid asn1.ObjectIdentifier
	_, isRSA := key.(*rsa.PrivateKey)
	if _, isEC := key.(*ecdsa.PrivateKey); !isRSA && !isEC {
		t.Fatalf("pkitest: SignRequest signs with RSA or ECDSA keys, not %T", key)
	}
	switch {
	case alg == x509.MD5WithRSA:
		h, oid = crypto.MD5, asn1.ObjectIdentifier{1, 2, 840, 113549, 1, 1, 4}
	case alg == x509.SHA1WithRSA:
		h, oid = crypto.SHA1, asn1.ObjectIdentifier{1, 2, 840, 113549, 1, 1, 5}
	case alg == x509.ECDSAWithSHA1:
		h, oid = crypto.SHA1, asn1.ObjectIdentifier{1, 2, 840, 10045, 4, 1}
	case isRSA:
		h, oid = crypto.SHA256, asn1.ObjectIdentifier{1, 2, 840, 113549, 1, 1, 11}
	default:
		h, oid = crypto.SHA256, asn1.ObjectIdentifier{1, 2, 840, 10045, 4, 3, 2}
	}
	var digest []byte
	switch h {
	case crypto.MD5:
		sum := md5.Sum(info)
		digest = sum[:]
	case crypto.SHA1:
		sum := sha1.Sum(info)
		digest = sum[:]
	default:
		sum := sha256.Sum256(info)
		digest = sum[:]
	}
	sig, err := key.Sign(rand.Reader, digest, h)
	if err != nil {
		t.Fatal(err)
	}
	var b cryptobyte.Builder
	b.AddASN1(cbasn1.SEQUENCE, func(b *cryptobyte.Builder) {
		b.AddBytes(info)
		b.AddASN1(cbasn1.SEQUENCE, func(b *cryptobyte.Builder) {
			b.AddASN1ObjectIdentifier(oid)
			if isRSA {
				b.AddASN1NULL()
			}
		})
		b.AddASN1BitString(sig)
	})
	return b.BytesOrPanic()
}
