package ca

import (
	"net"
	"slices"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/estca/estca/policy/pkitest"
	"github.com/estca/estca/softhsm/softhsmtest"
)

// TestServerCertificateReissue: the DTLS server certificate carries the
// names and addresses devices use, and is renewed for the key in the token
// without touching the issuing CA; openssl accepts it for that address.
func TestServerCertificateReissue(t *testing.T) {
	_, tok := softhsmtest.New(t)
	h, err := Init(tok, InitOptions{ServerDNSNames: []string{"est.example"}, ServerIPs: []net.IP{net.ParseIP("192.0.2.7"), net.ParseIP("2001:db8::7")}})
	if err != nil {
		t.Fatal(err)
	}
	if got := h.Server.IPAddresses; len(got) != 3 || !got[1].Equal(net.ParseIP("192.0.2.7")) || !got[2].Equal(net.ParseIP("2001:db8::7")) {
		t.Fatalf("init: server IP addresses %v", got)
	}
	issuingKey, err := tok.FindKey(LabelIssuing)
	if err != nil {
		t.Fatal(err)
	}
	serverKey, err := tok.FindKey(LabelServer)
	if err != nil {
		t.Fatal(err)
	}
	later := time.Now().Add(time.Hour)
	c, err := ServerCertificate(serverKey.Public(), h.Issuing, issuingKey, InitOptions{
		ServerDNSNames: []string{"ca.plant.example", "est.example"}, ServerIPs: []net.IP{net.ParseIP("10.1.2.3"), net.ParseIP("127.0.0.1")},
		ServerValidity: 48 * time.Hour, Now: func() time.Time { return later }})
	if err != nil {
		t.Fatal(err)
	}
	if !slices.Equal(c.DNSNames, []string{"ca.plant.example", "est.example", "localhost"}) || c.Subject.CommonName != "ca.plant.example" {
		t.Errorf("names %v, subject %s", c.DNSNames, c.Subject)
	}
	if len(c.IPAddresses) != 2 || !c.IPAddresses[1].Equal(net.ParseIP("10.1.2.3")) {
		t.Errorf("addresses %v (127.0.0.1 once, then 10.1.2.3)", c.IPAddresses)
	}
	if c.SerialNumber.Cmp(h.Server.SerialNumber) == 0 || !c.NotAfter.Equal(later.Add(48*time.Hour).Truncate(time.Second)) {
		t.Errorf("serial %x, not after %v", c.SerialNumber, c.NotAfter)
	}
	if c.CheckSignatureFrom(h.Issuing) != nil {
		t.Fatal("not signed by the issuing CA")
	}
	dir := t.TempDir()
	root := pkitest.WritePEM(t, dir, "root.pem", h.Root)
	iss := pkitest.WritePEM(t, dir, "issuing.pem", h.Issuing)
	srv := pkitest.WritePEM(t, dir, "server.pem", c)
	at := strconv.FormatInt(later.Add(time.Minute).Unix(), 10)
	if out := pkitest.OpenSSL(t, "verify", "-CAfile", root, "-untrusted", iss, "-purpose", "sslserver",
		"-verify_ip", "10.1.2.3", "-attime", at, srv); !strings.Contains(out, "OK") {
		t.Fatalf("openssl verify: %s", out)
	}
}
