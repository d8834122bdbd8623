package policy

// Test PKI for the engine tests: real certificates, CRLs and CSRs made with
// crypto/x509, and a raw CSR builder for what crypto/x509 will not make
// (other versions, SHA-1 and MD5 signatures). Self-contained so that it can
// move to the shared test-support package unchanged.

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
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"golang.org/x/crypto/cryptobyte"
	cbasn1 "golang.org/x/crypto/cryptobyte/asn1"
)

// pkNow is the decision time of the engine tests.
var pkNow = time.Date(2026, 3, 1, 12, 0, 0, 0, time.UTC)

const pkDay = 24 * time.Hour

// pkForever is the IDevID notAfter of RFC 5280 §4.1.2.5.
var pkForever = time.Date(9999, 12, 31, 23, 59, 59, 0, time.UTC)

// pkHWType is the hwType of the test devices' hardwareModuleName.
var pkHWType = asn1.ObjectIdentifier{1, 3, 6, 1, 4, 1, 32473, 1, 1}

// pkCert is a certificate with its key.
type pkCert struct {
	cert *x509.Certificate
	key  crypto.Signer
}

var pkSerial atomic.Int64

func pkNextSerial() *big.Int { return big.NewInt(0x1000 + pkSerial.Add(1)) }

// pkKeys caches generated keys by name: RSA generation is slow under -race.
var pkKeys sync.Map

func pkKey(t testing.TB, kind string) crypto.Signer {
	t.Helper()
	if k, ok := pkKeys.Load(kind); ok {
		return k.(crypto.Signer)
	}
	k := pkFreshKey(t, kind)
	actual, _ := pkKeys.LoadOrStore(kind, k)
	return actual.(crypto.Signer)
}

// pkFreshKey generates a new key: "p256", "p384", "p224", "rsa1024",
// "rsa2048", "ed25519".
func pkFreshKey(t testing.TB, kind string) crypto.Signer {
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
	case "rsa2048":
		k, err = rsa.GenerateKey(rand.Reader, 2048)
	case "ed25519":
		_, k, err = ed25519.GenerateKey(rand.Reader)
	default:
		t.Fatalf("unknown key kind %q", kind)
	}
	if err != nil {
		t.Fatal(err)
	}
	return k
}

// pkIssue signs tmpl for key with parent (nil: self-signed).
func pkIssue(t testing.TB, parent *pkCert, tmpl *x509.Certificate, key crypto.Signer) *pkCert {
	t.Helper()
	if tmpl.SerialNumber == nil {
		tmpl.SerialNumber = pkNextSerial()
	}
	pc, pk := tmpl, key
	if parent != nil {
		pc, pk = parent.cert, parent.key
	}
	der, err := x509.CreateCertificate(rand.Reader, tmpl, pc, key.Public(), pk)
	if err != nil {
		t.Fatal(err)
	}
	c, err := x509.ParseCertificate(der)
	if err != nil {
		t.Fatal(err)
	}
	return &pkCert{c, key}
}

func pkCA(t testing.TB, parent *pkCert, cn string, nb, na time.Time) *pkCert {
	t.Helper()
	return pkIssue(t, parent, &x509.Certificate{
		Subject: pkix.Name{CommonName: cn}, NotBefore: nb, NotAfter: na,
		KeyUsage:              x509.KeyUsageCertSign | x509.KeyUsageCRLSign,
		BasicConstraintsValid: true, IsCA: true,
	}, pkFreshKey(t, "p256"))
}

// pkHMNSAN is a SAN extension value with one hardwareModuleName and more
// names (GeneralNames DER, tagged by the caller's builder).
func pkHMNSAN(t testing.TB, hwSerial string, more ...func(*cryptobyte.Builder)) []byte {
	t.Helper()
	return pkSAN(t, append([]func(*cryptobyte.Builder){pkGNHMN(pkHWType, hwSerial)}, more...)...)
}

// pkSAN builds a SAN extension value from GeneralName writers.
func pkSAN(t testing.TB, names ...func(*cryptobyte.Builder)) []byte {
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

func pkGNHMN(typ asn1.ObjectIdentifier, serial string) func(*cryptobyte.Builder) {
	return func(b *cryptobyte.Builder) {
		b.AddASN1(cbasn1.Tag(0).ContextSpecific().Constructed(), func(b *cryptobyte.Builder) {
			b.AddASN1ObjectIdentifier(OIDHardwareModuleName)
			b.AddASN1(cbasn1.Tag(0).ContextSpecific().Constructed(), func(b *cryptobyte.Builder) {
				b.AddASN1(cbasn1.SEQUENCE, func(b *cryptobyte.Builder) {
					b.AddASN1ObjectIdentifier(typ)
					b.AddASN1OctetString([]byte(serial))
				})
			})
		})
	}
}

// pkGN writes a primitive context-specific GeneralName (1 email, 2 DNS,
// 6 URI, 7 IP, 8 registeredID).
func pkGN(tag int, v []byte) func(*cryptobyte.Builder) {
	return func(b *cryptobyte.Builder) {
		b.AddASN1(cbasn1.Tag(tag).ContextSpecific(), func(b *cryptobyte.Builder) { b.AddBytes(v) })
	}
}

func pkDNS(s string) func(*cryptobyte.Builder)   { return pkGN(2, []byte(s)) }
func pkURI(s string) func(*cryptobyte.Builder)   { return pkGN(6, []byte(s)) }
func pkEmail(s string) func(*cryptobyte.Builder) { return pkGN(1, []byte(s)) }
func pkIP(s string) func(*cryptobyte.Builder) {
	ip := net.ParseIP(s)
	if v4 := ip.To4(); v4 != nil {
		ip = v4
	}
	return pkGN(7, ip)
}

// pkDirName writes a directoryName GeneralName.
func pkDirName(cn string) func(*cryptobyte.Builder) {
	return func(b *cryptobyte.Builder) {
		b.AddASN1(cbasn1.Tag(4).ContextSpecific().Constructed(), func(b *cryptobyte.Builder) {
			b.AddBytes(pkName(pkATV(attrCN.oid, cbasn1.UTF8String, cn)))
		})
	}
}

// pkATV is an AttributeTypeAndValue with a value of the given string tag.
func pkATV(oid asn1.ObjectIdentifier, tag cbasn1.Tag, v string) []byte {
	var b cryptobyte.Builder
	b.AddASN1(cbasn1.SEQUENCE, func(b *cryptobyte.Builder) {
		b.AddASN1ObjectIdentifier(oid)
		b.AddASN1(tag, func(b *cryptobyte.Builder) { b.AddBytes([]byte(v)) })
	})
	return b.BytesOrPanic()
}

func pkCN(v string) []byte { return pkATV(attrCN.oid, cbasn1.UTF8String, v) }
func pkSN(v string) []byte { return pkATV(attrSerialNumber.oid, cbasn1.PrintableString, v) }
func pkO(v string) []byte  { return pkATV(asn1.ObjectIdentifier{2, 5, 4, 10}, cbasn1.UTF8String, v) }
func pkAttr(name, v string) []byte {
	t := lookupAttrType(name)
	return pkATV(t.oid, valueTag(t), v)
}

// pkName is a Name with one RDN per ATV; pkRDN makes a multi-valued RDN.
func pkName(atvs ...[]byte) []byte {
	var b cryptobyte.Builder
	b.AddASN1(cbasn1.SEQUENCE, func(b *cryptobyte.Builder) {
		for _, a := range atvs {
			if a == nil {
				b.AddASN1(cbasn1.SET, func(*cryptobyte.Builder) {})
				continue
			}
			b.AddASN1(cbasn1.SET, func(b *cryptobyte.Builder) { b.AddBytes(a) })
		}
	})
	return b.BytesOrPanic()
}

func pkRDN(atvs ...[]byte) []byte {
	var b cryptobyte.Builder
	b.AddASN1(cbasn1.SEQUENCE, func(b *cryptobyte.Builder) {
		b.AddASN1(cbasn1.SET, func(b *cryptobyte.Builder) {
			for _, a := range atvs {
				b.AddBytes(a)
			}
		})
	})
	return b.BytesOrPanic()
}

// pkDevSubject is the subject of a test IDevID: O, CN, serialNumber (the
// order crypto/x509 writes, as ca.Demo's devices have).
func pkDevSubject(serial string) []byte {
	return pkName(pkO("Acme Devices"), pkCN("device "+serial), pkSN(serial))
}

// pkIDevID issues a device certificate under a manufacturer CA.
func pkIDevID(t testing.TB, ca *pkCert, serial string, key crypto.Signer, nb, na time.Time) *pkCert {
	t.Helper()
	return pkIssue(t, ca, &x509.Certificate{
		RawSubject: pkDevSubject(serial), NotBefore: nb, NotAfter: na,
		KeyUsage:    x509.KeyUsageDigitalSignature,
		ExtKeyUsage: []x509.ExtKeyUsage{x509.ExtKeyUsageClientAuth},
		ExtraExtensions: []pkix.Extension{{Id: OIDSubjectAltName,
			Value: pkHMNSAN(t, serial)}},
		BasicConstraintsValid: true,
	}, key)
}

// pkOperational issues an operational certificate as the CA would (subject
// and SAN given as DER).
func pkOperational(t testing.TB, issuing *pkCert, subject, san []byte, key crypto.Signer, nb, na time.Time) *pkCert {
	t.Helper()
	tmpl := &x509.Certificate{
		RawSubject: subject, NotBefore: nb, NotAfter: na,
		KeyUsage:              x509.KeyUsageDigitalSignature,
		ExtKeyUsage:           []x509.ExtKeyUsage{x509.ExtKeyUsageClientAuth},
		BasicConstraintsValid: true,
	}
	if san != nil {
		tmpl.ExtraExtensions = []pkix.Extension{{Id: OIDSubjectAltName, Value: san}}
	}
	return pkIssue(t, issuing, tmpl, key)
}

// pkCRL makes a CRL of ca revoking serials.
func pkCRL(t testing.TB, ca *pkCert, this, next time.Time, serials ...*big.Int) *x509.RevocationList {
	t.Helper()
	var entries []x509.RevocationListEntry
	for _, s := range serials {
		entries = append(entries, x509.RevocationListEntry{SerialNumber: s, RevocationTime: this, ReasonCode: 1})
	}
	der, err := x509.CreateRevocationList(rand.Reader, &x509.RevocationList{
		Number: big.NewInt(pkSerial.Add(1)), ThisUpdate: this, NextUpdate: next,
		RevokedCertificateEntries: entries,
	}, ca.cert, ca.key)
	if err != nil {
		t.Fatal(err)
	}
	crl, err := x509.ParseRevocationList(der)
	if err != nil {
		t.Fatal(err)
	}
	return crl
}

func pkFingerprint(c *x509.Certificate) string {
	sum := sha256.Sum256(c.Raw)
	return hex.EncodeToString(sum[:])
}

// pkCSR is a CSR to build: subject as DER, requested extensions, and
// optionally the version and signature algorithm crypto/x509 would not use.
type pkCSR struct {
	key     crypto.Signer
	subject []byte
	exts    []pkix.Extension
	version int                     // 0 unless testing other versions
	alg     x509.SignatureAlgorithm // 0: crypto/x509's choice
}

// der builds the CSR: with crypto/x509 when it can, else by hand (other
// versions, weak signature algorithms, P-224 keys).
func (c pkCSR) der(t testing.TB) []byte {
	t.Helper()
	ec, isEC := c.key.Public().(*ecdsa.PublicKey)
	if c.version == 0 && c.alg == 0 && (!isEC || ec.Curve != elliptic.P224()) {
		der, err := x509.CreateCertificateRequest(rand.Reader, &x509.CertificateRequest{
			RawSubject: c.subject, ExtraExtensions: c.exts}, c.key)
		if err != nil {
			t.Fatal(err)
		}
		return der
	}
	spki, err := x509.MarshalPKIXPublicKey(c.key.Public())
	if err != nil {
		t.Fatal(err)
	}
	var tb cryptobyte.Builder
	tb.AddASN1(cbasn1.SEQUENCE, func(b *cryptobyte.Builder) {
		b.AddASN1Int64(int64(c.version))
		b.AddBytes(c.subject)
		b.AddBytes(spki)
		b.AddASN1(cbasn1.Tag(0).ContextSpecific().Constructed(), func(b *cryptobyte.Builder) {
			if len(c.exts) == 0 {
				return
			}
			exts, err := asn1.Marshal(c.exts)
			if err != nil {
				t.Fatal(err)
			}
			addAttribute(b, OIDExtensionRequest, func(b *cryptobyte.Builder) { b.AddBytes(exts) })
		})
	})
	return pkSign(t, tb.BytesOrPanic(), c.key, c.alg)
}

// parsed builds and parses the CSR (signature not checked: Evaluate's
// caller does that; tests of ParseCSR check it).
func (c pkCSR) parsed(t testing.TB) *x509.CertificateRequest {
	t.Helper()
	csr, err := x509.ParseCertificateRequest(c.der(t))
	if err != nil {
		t.Fatal(err)
	}
	return csr
}

// pkSign signs a CertificationRequestInfo with alg (MD5, SHA-1, or 0 for
// SHA-256) over RSA or ECDSA.
func pkSign(t testing.TB, newTBS []byte, key crypto.Signer, alg x509.SignatureAlgorithm) []byte {
	t.Helper()
	var h crypto.Hash
	var oid asn1.ObjectIdentifier
	_, isRSA := key.(*rsa.PrivateKey)
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
		h, oid = crypto.SHA256, oidECDSASHA256
	}
	var digest []byte
	switch h {
	case crypto.MD5:
		sum := md5.Sum(newTBS)
		digest = sum[:]
	case crypto.SHA1:
		sum := sha1.Sum(newTBS)
		digest = sum[:]
	default:
		sum := sha256.Sum256(newTBS)
		digest = sum[:]
	}
	sig, err := key.Sign(rand.Reader, digest, h)
	if err != nil {
		t.Fatal(err)
	}
	var b cryptobyte.Builder
	b.AddASN1(cbasn1.SEQUENCE, func(b *cryptobyte.Builder) {
		b.AddBytes(newTBS)
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

// pkExt is a requested extension with a DER value.
func pkExt(oid asn1.ObjectIdentifier, critical bool, v []byte) pkix.Extension {
	return pkix.Extension{Id: oid, Critical: critical, Value: v}
}

func pkSANExt(v []byte) pkix.Extension { return pkExt(OIDSubjectAltName, false, v) }

// pkKUExt is a requested keyUsage extension.
func pkKUExt(t testing.TB, ku x509.KeyUsage) pkix.Extension {
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
	return pkExt(oidKeyUsage, true, v)
}

func pkBCExt(ca bool) pkix.Extension {
	v, _ := asn1.Marshal(struct {
		CA bool `asn1:"optional"`
	}{ca})
	return pkExt(OIDBasicConstraints, true, v)
}
