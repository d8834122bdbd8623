package wire

import (
	"bytes"
	"crypto/x509"
	"errors"
	"os"
	"path/filepath"
	"strings"
	"testing"

	"github.com/estca/estca/policy/pkitest"
)

// chain is a leaf, an intermediate and a root, leaf first.
func chain(t *testing.T) []*x509.Certificate {
	t.Helper()
	root := pkitest.NewCA(t, "p7 root")
	inter := root.Issue(t, pkitest.SubCA("p7 intermediate"))
	leaf := inter.Issue(t, pkitest.ClientAuth("p7 leaf"))
	return []*x509.Certificate{leaf.Cert, inter.Cert, root.Cert}
}

// TestCertsOnlyOpenSSL: openssl reads what CertsOnly writes, in order, and
// its own DER re-encoding is byte for byte ours.
func TestCertsOnlyOpenSSL(t *testing.T) {
	t.Parallel()
	certs := chain(t)
	der, err := CertsOnly(certs...)
	if err != nil {
		t.Fatal(err)
	}
	dir := t.TempDir()
	p := filepath.Join(dir, "certs.p7")
	if err := os.WriteFile(p, der, 0o600); err != nil {
		t.Fatal(err)
	}
	out := pkitest.OpenSSL(t, "pkcs7", "-inform", "DER", "-in", p, "-print_certs")
	if n := strings.Count(out, "-----BEGIN CERTIFICATE-----"); n != 3 {
		t.Fatalf("openssl printed %d certificates:\n%s", n, out)
	}
	if a, b, c := strings.Index(out, "CN = p7 leaf"), strings.Index(out, "CN = p7 intermediate"), strings.Index(out, "subject=CN = p7 root"); a < 0 || b < a || c < b {
		t.Errorf("openssl output out of order or incomplete:\n%s", out)
	}
	re := filepath.Join(dir, "re.p7")
	pkitest.OpenSSL(t, "pkcs7", "-inform", "DER", "-in", p, "-outform", "DER", "-out", re)
	if reDER, err := os.ReadFile(re); err != nil || !bytes.Equal(reDER, der) {
		t.Errorf("openssl re-encoding differs from ours (%v)", err)
	}
}

// TestParseCertsOnlyOpenSSL: ParseCertsOnly reads what
// `openssl crl2pkcs7 -nocrl` writes, in payload order.
func TestParseCertsOnlyOpenSSL(t *testing.T) {
	t.Parallel()
	certs := chain(t)
	for _, tc := range []struct {
		name  string
		certs []*x509.Certificate
	}{
		{"one", certs[2:]},
		{"chain", certs},
	} {
		t.Run(tc.name, func(t *testing.T) {
			dir := t.TempDir()
			in, out := pkitest.WritePEM(t, dir, "x.pem", tc.certs...), filepath.Join(dir, "x.p7")
			pkitest.OpenSSL(t, "crl2pkcs7", "-nocrl", "-certfile", in, "-outform", "DER", "-out", out)
			der, err := os.ReadFile(out)
			if err != nil {
				t.Fatal(err)
			}
			got, err := ParseCertsOnly(der)
			if err != nil {
				t.Fatal(err)
			}
			if len(got) != len(tc.certs) {
				t.Fatalf("got %d certs, want %d", len(got), len(tc.certs))
			}
			for i := range got {
				if !got[i].Equal(tc.certs[i]) {
					t.Errorf("cert %d differs from input", i)
				}
			}
		})
	}
}

// TestParseCertsOnlyRFC9148 decodes the certs-only payloads of RFC 9148
// Appendix A; they end with an empty crls [1] and empty signerInfos.
func TestParseCertsOnlyRFC9148(t *testing.T) {
	t.Parallel()
	a3, err := ParseMultipart(pkitest.Fixture(t, "rfc9148/a3-skg-response.hex"))
	if err != nil || len(a3) != 2 {
		t.Fatalf("A.3: %d parts, %v", len(a3), err)
	}
	for _, tc := range []struct {
		name    string
		der     []byte
		subject string
	}{
		{"A.1 crts", pkitest.Fixture(t, "rfc9148/a1-crts-response.hex"), "CN=Root CA,OU=certification,O=Example Inc,L=LA,ST=CA,C=US"},
		{"A.2 sen", pkitest.Fixture(t, "rfc9148/a2-sen-response.hex"), "SERIALNUMBER=Wt1234,OU=IoT,O=example Inc,L=LA,ST=CA,C=US"},
		{"A.3 skg", a3[1].Data, "O=skg example"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			certs, err := ParseCertsOnly(tc.der)
			if err != nil {
				t.Fatal(err)
			}
			if len(certs) != 1 || certs[0].Subject.String() != tc.subject {
				t.Fatalf("got %d certs, first %v", len(certs), certs[0].Subject)
			}
			// The RFC's encoding carries an empty crls [1], ours omits it;
			// both are valid, and each parses back to the same certificate.
			again, err := CertsOnly(certs...)
			if err != nil {
				t.Fatal(err)
			}
			if back, err := ParseCertsOnly(again); err != nil || len(back) != 1 || !back[0].Equal(certs[0]) {
				t.Errorf("re-encoded: %d certs, %v", len(back), err)
			}
		})
	}
}

func TestCertsOnlyErrors(t *testing.T) {
	t.Parallel()
	if _, err := CertsOnly(); !errors.Is(err, ErrNoCertificates) {
		t.Fatalf("CertsOnly() = %v", err)
	}
	if _, err := CertsOnly(nil); err == nil {
		t.Fatal("CertsOnly(nil) accepted")
	}
	if _, err := CertsOnly(&x509.Certificate{}); err == nil {
		t.Fatal("CertsOnly(empty certificate) accepted")
	}
}

func TestParseCertsOnlyErrors(t *testing.T) {
	t.Parallel()
	good := pkitest.Fixture(t, "rfc9148/a1-crts-response.hex")
	badOID := bytes.Clone(good)
	badOID[bytes.Index(badOID, []byte{0x01, 0x07, 0x02})+2] = 0x03 // envelopedData
	badCert := bytes.Clone(good)
	badCert[bytes.Index(badCert, []byte{0x30, 0x82, 0x02, 0x49})+10] ^= 0xff
	leaf := chain(t)[0]
	many := make([]*x509.Certificate, MaxCertsOnly+1)
	for i := range many {
		many[i] = leaf
	}
	tooMany, err := CertsOnly(many...)
	if err != nil {
		t.Fatal(err)
	}
	for _, tc := range []struct {
		name string
		der  []byte
	}{
		{"empty", nil},
		{"truncated", good[:len(good)-1]},
		{"trailing", append(bytes.Clone(good), 0)},
		{"not signedData", badOID},
		{"garbage", []byte("-----BEGIN PKCS7-----")},
		{"bad certificate", badCert},
		{"too many certificates", tooMany},
	} {
		t.Run(tc.name, func(t *testing.T) {
			if _, err := ParseCertsOnly(tc.der); !errors.Is(err, ErrMalformedPayload) {
				t.Fatalf("err = %v, want ErrMalformedPayload", err)
			}
		})
	}
}

// TestCRLsOnly: a CRL travels in the crls field of a certs-only message
// (RFC 8551 §3.6), which certificate readers parse as holding none.
func TestCRLsOnly(t *testing.T) {
	t.Parallel()
	if _, err := CRLsOnly(); !errors.Is(err, ErrNoCRLs) {
		t.Fatalf("no CRLs: %v", err)
	}
	for _, bad := range [][]byte{nil, {0x02, 0x01, 0x00}, {0x30, 0x00, 0x00}} {
		if _, err := CRLsOnly(bad); err == nil {
			t.Errorf("CRLsOnly(%x) accepted", bad)
		}
	}
	crl := []byte{0x30, 0x03, 0x02, 0x01, 0x07}
	der, err := CRLsOnly(crl)
	if err != nil {
		t.Fatal(err)
	}
	if !bytes.Contains(der, append([]byte{0xa1, 0x05}, crl...)) {
		t.Fatalf("no [1] crls field with the CRL in %x", der)
	}
	if certs, err := ParseCertsOnly(der); err != nil || len(certs) != 0 {
		t.Fatalf("ParseCertsOnly = %d certificates, %v", len(certs), err)
	}
}
