package pkitest

import (
	"bytes"
	"crypto/ecdsa"
	"crypto/x509"
	"crypto/x509/pkix"
	"net"
	"os"
	"os/exec"
	"strings"
	"testing"
	"time"
)

func TestChainVerifies(t *testing.T) {
	t.Parallel()
	root := NewCA(t, "root")
	sub := root.Issue(t, SubCA("sub"))
	for _, tc := range []struct {
		name string
		spec Spec
		eku  x509.ExtKeyUsage
		dns  string
	}{
		{"client", ClientAuth("device"), x509.ExtKeyUsageClientAuth, ""},
		{"server", ServerAuth("server"), x509.ExtKeyUsageServerAuth, "localhost"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			t.Parallel()
			leaf := sub.Issue(t, tc.spec)
			_, err := leaf.Cert.Verify(x509.VerifyOptions{Roots: root.Pool(), Intermediates: Pool(sub.Cert),
				DNSName: tc.dns, KeyUsages: []x509.ExtKeyUsage{tc.eku}})
			if err != nil {
				t.Fatal(err)
			}
			if !leaf.Cert.PublicKey.(*ecdsa.PublicKey).Equal(leaf.Key.Public()) {
				t.Fatal("key does not match the certificate")
			}
			id := leaf.TLS(sub.Cert)
			if len(id.Certificate) != 2 || id.Leaf != leaf.Cert {
				t.Fatalf("TLS chain of %d", len(id.Certificate))
			}
		})
	}
	if root.Cert.SerialNumber.Sign() <= 0 || len(root.Cert.SubjectKeyId) == 0 || !sub.Cert.IsCA {
		t.Fatalf("root serial %v, SKID %x, sub CA %v", root.Cert.SerialNumber, root.Cert.SubjectKeyId, sub.Cert.IsCA)
	}
}

func TestSpecFields(t *testing.T) {
	t.Parallel()
	nb := time.Date(2026, 3, 1, 12, 0, 0, 0, time.UTC)
	c := SelfSigned(t, Spec{CN: "x", Serial: 0x100, NotBefore: nb, NotAfter: nb.Add(time.Hour),
		IPAddresses: []net.IP{net.IPv4(192, 0, 2, 1)}})
	if c.Cert.SerialNumber.Int64() != 0x100 || !c.Cert.NotBefore.Equal(nb) || c.Cert.IsCA ||
		c.Cert.Subject.CommonName != "x" || len(c.Cert.IPAddresses) != 1 || c.Cert.KeyUsage != x509.KeyUsageDigitalSignature {
		t.Fatalf("certificate %+v", c.Cert)
	}
}

func TestCSRs(t *testing.T) {
	t.Parallel()
	key := Key(t)
	bare := ParseCSR(t, CSR(t, key, pkix.Name{CommonName: "dev"}))
	for _, pad := range []int{0, 100, 3000} {
		der := PaddedCSR(t, key, "dev", pad)
		csr := ParseCSR(t, der)
		// An ECDSA signature varies by a few bytes: compare the signed part.
		if csr.CheckSignature() != nil || csr.Subject.CommonName != "dev" || len(csr.RawTBSCertificateRequest) < len(bare.RawTBSCertificateRequest)+pad {
			t.Fatalf("pad %d: CSR of %d bytes, bare %d", pad, len(der), len(bare.Raw))
		}
	}
}

func TestPEMAndOpenSSL(t *testing.T) {
	t.Parallel()
	root := NewCA(t, "pem root")
	leaf := root.Issue(t, ClientAuth("pem leaf"))
	dir := t.TempDir()
	ca := WritePEM(t, dir, "root.pem", root.Cert)
	lp := WritePEM(t, dir, "leaf.pem", leaf.Cert)
	if got := PEMCert(t, PEM(leaf.Cert, root.Cert)); !got.Equal(leaf.Cert) {
		t.Fatal("PEMCert did not return the first certificate")
	}
	if out := OpenSSL(t, "verify", "-CAfile", ca, "-purpose", "sslclient", lp); !strings.Contains(out, "leaf.pem: OK") {
		t.Fatalf("openssl verify: %s", out)
	}
}

func TestFixture(t *testing.T) {
	t.Parallel()
	b := Fixture(t, "rfc9148/a3-skg-response.hex")
	// array(4), unsigned(284), bytes(138): the first CBOR items of the RFC.
	if len(b) != 617 || !bytes.HasPrefix(b, []byte{0x84, 0x19, 0x01, 0x1c, 0x58, 0x8a}) {
		t.Fatalf("%d bytes, starting % x", len(b), b[:min(6, len(b))])
	}
	if md := Fixture(t, "rfc9148/README.md"); !bytes.Contains(md, []byte("Appendix A")) {
		t.Fatal("a file that is not .hex is not returned as is")
	}
}

// TestRequireTool: CI is on for CI set to anything but "", "0" or
// "false"; a program that exists is found; a missing one skips the test
// outside CI and fails it under CI (run in a child process of this test
// binary, so that the failure is observed, not suffered).
func TestRequireTool(t *testing.T) {
	if os.Getenv("PKITEST_REQUIRE_CHILD") == "1" {
		RequireTool(t, "estca-no-such-tool")
		return
	}
	for _, tc := range []struct {
		env  string
		want bool
	}{{"", false}, {"0", false}, {"false", false}, {"FALSE", false}, {"true", true}, {"1", true}, {"yes", true}} {
		t.Setenv("CI", tc.env)
		if CI() != tc.want {
			t.Errorf("CI=%q: CI() = %v", tc.env, !tc.want)
		}
	}
	if p := RequireTool(t, "go"); p == "" {
		t.Fatal("RequireTool(go) = \"\"")
	}
	for _, tc := range []struct {
		ci   string
		fail bool
		out  string
	}{{"", false, "SKIP"}, {"true", true, "is required under CI=true"}} {
		cmd := exec.Command(os.Args[0], "-test.run=^TestRequireTool$", "-test.v", "-test.count=1")
		cmd.Env = append(os.Environ(), "PKITEST_REQUIRE_CHILD=1", "CI="+tc.ci)
		out, err := cmd.CombinedOutput()
		if (err != nil) != tc.fail || !strings.Contains(string(out), tc.out) {
			t.Errorf("CI=%q: exit %v, want failure %v and %q:\n%s", tc.ci, err, tc.fail, tc.out, out)
		}
	}
}
