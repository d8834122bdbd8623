package policy

// Test PKI for the engine tests: the fixed clock and the composition of
// the shared builders of policy/pkitest into the CAs, IDevIDs and
// operational certificates of the test world.

import (
	"crypto"
	"crypto/x509"
	"crypto/x509/pkix"
	"encoding/asn1"
	"math/big"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/estca/estca/policy/pkitest"
)

// pkNow is the decision time of the engine tests.
var pkNow = time.Date(2026, 3, 1, 12, 0, 0, 0, time.UTC)

const pkDay = 24 * time.Hour

// pkForever is the IDevID notAfter of RFC 5280 §4.1.2.5.
var pkForever = time.Date(9999, 12, 31, 23, 59, 59, 0, time.UTC)

// pkHWType is the hwType of the test devices' hardwareModuleName.
var pkHWType = asn1.ObjectIdentifier{1, 3, 6, 1, 4, 1, 32473, 1, 1}

var pkSerial atomic.Int64

func pkNextSerial() *big.Int { return big.NewInt(0x1000 + pkSerial.Add(1)) }

// pkKeys caches generated keys by name: RSA generation is slow under -race.
var pkKeys sync.Map

func pkKey(t testing.TB, kind string) crypto.Signer {
	t.Helper()
	if k, ok := pkKeys.Load(kind); ok {
		return k.(crypto.Signer)
	}
	k := pkitest.NewKey(t, kind)
	actual, _ := pkKeys.LoadOrStore(kind, k)
	return actual.(crypto.Signer)
}

// pkIssue signs tmpl for key with parent (nil: self-signed), with the next
// serial of the test world when tmpl has none.
func pkIssue(t testing.TB, parent *pkitest.Cert, tmpl *x509.Certificate, key crypto.Signer) *pkitest.Cert {
	t.Helper()
	if tmpl.SerialNumber == nil {
		tmpl.SerialNumber = pkNextSerial()
	}
	return pkitest.IssueTemplate(t, parent, tmpl, key)
}

func pkCA(t testing.TB, parent *pkitest.Cert, cn string, nb, na time.Time) *pkitest.Cert {
	t.Helper()
	return pkIssue(t, parent, &x509.Certificate{
		Subject: pkix.Name{CommonName: cn}, NotBefore: nb, NotAfter: na,
		KeyUsage:              x509.KeyUsageCertSign | x509.KeyUsageCRLSign,
		BasicConstraintsValid: true, IsCA: true,
	}, pkitest.NewKey(t, "p256"))
}

// pkHMNSAN is a SAN extension value with one hardwareModuleName of the test
// devices' hwType and more names.
func pkHMNSAN(t testing.TB, hwSerial string, more ...pkitest.GeneralName) []byte {
	t.Helper()
	return pkitest.SAN(t, append([]pkitest.GeneralName{pkitest.HardwareModuleName(pkHWType, hwSerial)}, more...)...)
}

// pkAttr is an ATV of the attribute type the policy knows by name, with
// the string type the policy writes for it.
func pkAttr(name, v string) []byte {
	t := lookupAttrType(name)
	return pkitest.ATV(t.oid, valueTag(t), v)
}

// pkDevSubject is the subject of a test IDevID: O, CN, serialNumber (the
// order crypto/x509 writes, as ca.Demo's devices have).
func pkDevSubject(serial string) []byte {
	return pkitest.Name(pkitest.O("Acme Devices"), pkitest.CN("device "+serial), pkitest.SerialNumber(serial))
}

// pkIDevID issues a device certificate under a manufacturer CA.
func pkIDevID(t testing.TB, ca *pkitest.Cert, serial string, key crypto.Signer, nb, na time.Time) *pkitest.Cert {
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
func pkOperational(t testing.TB, issuing *pkitest.Cert, subject, san []byte, key crypto.Signer, nb, na time.Time) *pkitest.Cert {
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

// pkCRL makes a CRL of ca revoking serials, numbered from the world's
// serial counter.
func pkCRL(t testing.TB, ca *pkitest.Cert, this, next time.Time, serials ...*big.Int) *x509.RevocationList {
	t.Helper()
	return pkitest.CRL(t, ca, pkSerial.Add(1), this, next, serials...)
}
