package ca

import (
	"crypto"
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/x509"
	"crypto/x509/pkix"
	"encoding/asn1"
	"encoding/pem"
	"fmt"
	"io"
	"time"

	"golang.org/x/crypto/cryptobyte"
	cbasn1 "golang.org/x/crypto/cryptobyte/asn1"

	"github.com/estca/estca/policy"
)

// DemoHardwareType is the hwType of the demo devices' hardwareModuleName: an
// arc of the IANA example enterprise number 32473 (RFC 5612).
var DemoHardwareType = asn1.ObjectIdentifier{1, 3, 6, 1, 4, 1, 32473, 1, 1}

// noWellDefinedExpiry is the IDevID notAfter of RFC 5280 §4.1.2.5.
var noWellDefinedExpiry = time.Date(9999, 12, 31, 23, 59, 59, 0, time.UTC)

// PEMPair is a certificate and its PKCS#8 private key, PEM encoded.
type PEMPair struct {
	Cert, Key []byte
}

// DemoSet are the fixtures of `estca init --demo`: a manufacturer CA to
// configure as a trust anchor, and IDevID-like device identities (subject
// serialNumber, SAN otherName hardwareModuleName, RFC 4108) with software
// P-256 keys. These are device keys, never CA keys of estca.
type DemoSet struct {
	// ManufacturerCA is the demo manufacturer's root.
	ManufacturerCA PEMPair
	// Valid is a device with notAfter 99991231235959Z.
	Valid PEMPair
	// Expired is a device whose notAfter is a day before now.
	Expired PEMPair
	// Unknown is a device of a manufacturer that is not in ManufacturerCA.
	Unknown PEMPair
}

// Demo creates a fresh DemoSet at time now using r for keys and serials.
func Demo(now time.Time, r io.Reader) (*DemoSet, error) {
	mfg, mfgKey, err := demoCA(r, "Demo Manufacturer IDevID CA", now)
	if err != nil {
		return nil, err
	}
	other, otherKey, err := demoCA(r, "Unknown Manufacturer IDevID CA", now)
	if err != nil {
		return nil, err
	}
	set := &DemoSet{ManufacturerCA: PEMPair{Cert: pemCert(mfg.Raw)}}
	if set.ManufacturerCA.Key, err = pemKey(mfgKey); err != nil {
		return nil, err
	}
	year := 365 * 24 * time.Hour
	devices := []struct {
		dst    *PEMPair
		serial string
		ca     *x509.Certificate
		caKey  crypto.Signer
		nb, na time.Time
	}{
		{&set.Valid, "DEMO-0001", mfg, mfgKey, now.Add(-time.Hour), noWellDefinedExpiry},
		{&set.Expired, "DEMO-0002", mfg, mfgKey, now.Add(-3 * year), now.Add(-24 * time.Hour)},
		{&set.Unknown, "OTHER-0001", other, otherKey, now.Add(-time.Hour), noWellDefinedExpiry},
	}
	for _, d := range devices {
		key, err := ecdsa.GenerateKey(elliptic.P256(), r)
		if err != nil {
			return nil, fmt.Errorf("ca: demo: %w", err)
		}
		san, err := HardwareModuleNameSAN(DemoHardwareType, []byte(d.serial))
		if err != nil {
			return nil, err
		}
		serial, err := newSerial(r)
		if err != nil {
			return nil, err
		}
		tmpl := &x509.Certificate{
			SerialNumber:          serial,
			Subject:               pkix.Name{CommonName: "demo device " + d.serial, SerialNumber: d.serial, Organization: []string{"Demo Devices"}},
			NotBefore:             d.nb,
			NotAfter:              d.na,
			KeyUsage:              x509.KeyUsageDigitalSignature,
			ExtKeyUsage:           []x509.ExtKeyUsage{x509.ExtKeyUsageClientAuth},
			BasicConstraintsValid: true,
			ExtraExtensions:       []pkix.Extension{{Id: policy.OIDSubjectAltName, Value: san}},
		}
		der, err := x509.CreateCertificate(r, tmpl, d.ca, key.Public(), d.caKey)
		if err != nil {
			return nil, fmt.Errorf("ca: demo: device %s: %w", d.serial, err)
		}
		d.dst.Cert = pemCert(der)
		if d.dst.Key, err = pemKey(key); err != nil {
			return nil, err
		}
	}
	return set, nil
}

func demoCA(r io.Reader, cn string, now time.Time) (*x509.Certificate, crypto.Signer, error) {
	key, err := ecdsa.GenerateKey(elliptic.P256(), r)
	if err != nil {
		return nil, nil, fmt.Errorf("ca: demo: %w", err)
	}
	serial, err := newSerial(r)
	if err != nil {
		return nil, nil, err
	}
	tmpl := &x509.Certificate{
		SerialNumber:          serial,
		Subject:               pkix.Name{CommonName: cn, Organization: []string{"Demo Devices"}},
		NotBefore:             now.Add(-10 * 365 * 24 * time.Hour),
		NotAfter:              noWellDefinedExpiry,
		KeyUsage:              x509.KeyUsageCertSign | x509.KeyUsageCRLSign,
		BasicConstraintsValid: true,
		IsCA:                  true,
	}
	der, err := x509.CreateCertificate(r, tmpl, tmpl, key.Public(), key)
	if err != nil {
		return nil, nil, fmt.Errorf("ca: demo: %w", err)
	}
	c, err := x509.ParseCertificate(der)
	if err != nil {
		return nil, nil, fmt.Errorf("ca: demo: %w", err)
	}
	return c, key, nil
}

// HardwareModuleNameSAN returns the DER value of a SubjectAltName extension
// holding one otherName hardwareModuleName (RFC 4108 §5) and any DNS names.
func HardwareModuleNameSAN(hwType asn1.ObjectIdentifier, hwSerial []byte, dnsNames ...string) ([]byte, error) {
	var b cryptobyte.Builder
	b.AddASN1(cbasn1.SEQUENCE, func(b *cryptobyte.Builder) {
		b.AddASN1(cbasn1.Tag(0).ContextSpecific().Constructed(), func(b *cryptobyte.Builder) {
			b.AddASN1ObjectIdentifier(policy.OIDHardwareModuleName)
			b.AddASN1(cbasn1.Tag(0).ContextSpecific().Constructed(), func(b *cryptobyte.Builder) {
				b.AddASN1(cbasn1.SEQUENCE, func(b *cryptobyte.Builder) {
					b.AddASN1ObjectIdentifier(hwType)
					b.AddASN1OctetString(hwSerial)
				})
			})
		})
		for _, d := range dnsNames {
			b.AddASN1(cbasn1.Tag(2).ContextSpecific(), func(b *cryptobyte.Builder) { b.AddBytes([]byte(d)) })
		}
	})
	v, err := b.Bytes()
	if err != nil {
		return nil, fmt.Errorf("ca: hardwareModuleName SAN: %w", err)
	}
	return v, nil
}

func pemCert(der []byte) []byte {
	return pem.EncodeToMemory(&pem.Block{Type: "CERTIFICATE", Bytes: der})
}

func pemKey(k crypto.Signer) ([]byte, error) {
	der, err := x509.MarshalPKCS8PrivateKey(k)
	if err != nil {
		return nil, fmt.Errorf("ca: demo: %w", err)
	}
	return pem.EncodeToMemory(&pem.Block{Type: "PRIVATE KEY", Bytes: der}), nil
}
