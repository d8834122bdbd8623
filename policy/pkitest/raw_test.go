package pkitest

import (
	"crypto/x509"
	"crypto/x509/pkix"
	"encoding/asn1"
	"testing"
)

// TestRequestRaw: the hand-built requests carry the version and signature
// algorithm asked for, their subject and extensions as written, and a
// signature that verifies where Go still verifies the algorithm.
func TestRequestRaw(t *testing.T) {
	t.Parallel()
	subject := Name(O("Acme"), CN("dev"), SerialNumber("SN-1"))
	san := SANExt(SAN(t, HardwareModuleName(asn1.ObjectIdentifier{1, 2, 3}, "SN-1"), DNS("a.example"), IP("127.0.0.1")))
	for _, tc := range []struct {
		name    string
		key     string
		version int
		alg     x509.SignatureAlgorithm
		want    x509.SignatureAlgorithm
		checks  bool
	}{
		{"crypto/x509", "p256", 0, 0, x509.ECDSAWithSHA256, true},
		{"version 1", "p256", 1, x509.ECDSAWithSHA256, x509.ECDSAWithSHA256, true},
		{"P-224 key", "p224", 0, x509.ECDSAWithSHA256, x509.ECDSAWithSHA256, true},
		{"ECDSA SHA-1", "p256", 0, x509.ECDSAWithSHA1, x509.ECDSAWithSHA1, false},
		{"RSA MD5", "rsa1024", 0, x509.MD5WithRSA, x509.MD5WithRSA, false},
		{"RSA SHA-1", "rsa1024", 0, x509.SHA1WithRSA, x509.SHA1WithRSA, false},
	} {
		t.Run(tc.name, func(t *testing.T) {
			t.Parallel()
			csr := Request{Key: NewKey(t, tc.key), Subject: subject, Extensions: []pkix.Extension{san},
				Version: tc.version, Algorithm: tc.alg}.Parsed(t)
			if csr.Version != tc.version || csr.SignatureAlgorithm != tc.want {
				t.Fatalf("version %d, algorithm %v", csr.Version, csr.SignatureAlgorithm)
			}
			if string(csr.RawSubject) != string(subject) || csr.Subject.SerialNumber != "SN-1" {
				t.Fatalf("subject %v", csr.Subject)
			}
			if len(csr.Extensions) != 1 || !csr.Extensions[0].Id.Equal(san.Id) || len(csr.DNSNames) != 1 || len(csr.IPAddresses) != 1 {
				t.Fatalf("extensions %v, DNS %v, IP %v", csr.Extensions, csr.DNSNames, csr.IPAddresses)
			}
			if err := csr.CheckSignature(); tc.checks && err != nil {
				t.Fatalf("signature: %v", err)
			}
		})
	}
}

// TestNameRDN: one RDN per ATV in Name, one multi-valued RDN in RDN, an
// empty RDN for a nil ATV.
func TestNameRDN(t *testing.T) {
	t.Parallel()
	for _, tc := range []struct {
		name string
		der  []byte
		rdns []int
	}{
		{"Name", Name(CN("a"), O("b")), []int{1, 1}},
		{"RDN", RDN(CN("a"), O("b")), []int{2}},
		{"empty RDN", Name(CN("a"), nil), []int{1, 0}},
	} {
		var seq pkix.RDNSequence
		if rest, err := asn1.Unmarshal(tc.der, &seq); err != nil || len(rest) != 0 {
			t.Fatalf("%s: %v", tc.name, err)
		}
		if len(seq) != len(tc.rdns) {
			t.Fatalf("%s: %d RDNs", tc.name, len(seq))
		}
		for i, n := range tc.rdns {
			if len(seq[i]) != n {
				t.Fatalf("%s: RDN %d has %d ATVs", tc.name, i, len(seq[i]))
			}
		}
	}
}
