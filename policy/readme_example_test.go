package policy

import (
	"crypto/x509"
	"encoding/asn1"
	"testing"
	"time"

	"github.com/estca/estca/policy/pkitest"
)

// TestReadmeExample is the complete example of README.md (Policy reference), as
// cmd/estca would decode it, with a meter and a gateway of the two
// manufacturers enrolling: the example must be a valid configuration that
// does what the text says.
func TestReadmeExample(t *testing.T) {
	t.Parallel()
	w := getWorld(t)
	far := pkForever
	meterRoot := pkCA(t, nil, "Example Meters Root", pkNow.Add(-3650*pkDay), far)
	meterSub := pkCA(t, meterRoot, "Example Meters Sub", pkNow.Add(-3650*pkDay), far)
	acmeRoot := pkCA(t, nil, "Acme Gateways Root", pkNow.Add(-3650*pkDay), far)
	meter := pkIDevID(t, meterSub, "EXM-123456", pkKey(t, "p256"), pkNow.Add(-pkDay), far)
	gateway := pkIDevID(t, acmeRoot, "GW-0042", pkKey(t, "p256"), pkNow.Add(-11*365*pkDay), pkNow.Add(-365*pkDay))
	day := 24 * time.Hour
	opts := Options{
		Requesters: Requesters{
			Operational: []*x509.Certificate{w.issuing.Cert, w.root.Cert},
			Anchors: []Anchor{
				{Name: "example-meters", Roots: []*x509.Certificate{meterRoot.Cert}, Intermediates: []*x509.Certificate{meterSub.Cert},
					CRLs:        []*x509.RevocationList{pkCRL(t, meterSub, pkNow.Add(-day), pkNow.Add(7*day))},
					DenySerials: []string{"7A:31:0C:44"}, Profiles: []string{"meter"}},
				{Name: "acme-gateways", Roots: []*x509.Certificate{acmeRoot.Cert}, TolerateExpiry: true,
					CRLs:     []*x509.RevocationList{pkCRL(t, acmeRoot, pkNow.Add(-day), pkNow.Add(7*day))},
					Profiles: []string{"gateway"}},
			},
		},
		Reserved:       []*x509.Certificate{w.server.Cert},
		ReservedNames:  []string{"est.example.net", "ca.example.net", "192.0.2.10"},
		DefaultProfile: "meter",
		Profiles: []Profile{
			{Name: "meter", Validity: 8760 * time.Hour, Backdate: time.Minute, Operations: []Operation{OpSen, OpSren},
				Requesters: []string{KindIDevID, KindOperational}, KeyTypes: []string{"ecdsa-p256"},
				KeyUsage:    KeyUsages{ECDSA: x509.KeyUsageDigitalSignature | x509.KeyUsageKeyAgreement},
				ExtKeyUsage: []x509.ExtKeyUsage{x509.ExtKeyUsageClientAuth}, ForbidKeyReuse: true,
				Subject: []SubjectAttr{
					{Type: "O", From: SourceFixed, Value: "Example Utility"},
					{Type: "CN", From: SourceDerived, Value: "meter-${serialNumber}"},
					{Type: "serialNumber", From: SourceIdentity},
				},
				SAN:          SANPolicy{DNS: NamePolicy{Derived: []string{"${serialNumber}.meters.example.net"}}},
				RateLimit:    RateLimit{Count: 4, Window: 24 * time.Hour},
				RenewalGrace: 720 * time.Hour},
			{Name: "gateway", Validity: 2160 * time.Hour, Requesters: []string{KindIDevID, KindOperational},
				KeyTypes: []string{"ecdsa-p256", "rsa-2048"},
				KeyUsage: KeyUsages{ECDSA: x509.KeyUsageDigitalSignature, RSA: x509.KeyUsageDigitalSignature | x509.KeyUsageKeyEncipherment},
				Subject: []SubjectAttr{
					{Type: "CN", From: SourceIdentity},
					{Type: "serialNumber", From: SourceIdentity, Optional: true},
					{Type: "OU", From: SourceCSR, Pattern: "site-[0-9]{3}", Optional: true},
				},
				SAN: SANPolicy{DNS: NamePolicy{Patterns: []string{`gw-[0-9]{4}\.sites\.example\.net`}, Max: 1},
					IP: IPPolicy{Allow: []string{"10.20.0.0/16"}, Max: 2}, MaxNames: 4},
				Extensions: ExtensionPolicy{Unknown: ExtensionsDrop, Copy: []string{"1.3.6.1.4.1.32473.7.1"}},
				Approval:   ApprovalManual, PendingMaxAge: 10 * time.Minute, MaxPending: 1},
			{Name: "bench", Validity: 24 * time.Hour, Requesters: []string{KindOperator},
				Subject: []SubjectAttr{{Type: "CN", From: SourceCSR, Pattern: "bench-[a-z0-9-]{1,32}"}},
				SAN:     SANPolicy{HardwareModuleName: HardwareNameCSR}, Operations: []Operation{OpSen, OpSkg},
				ServerKeyType: "ecdsa-p256"},
		},
	}
	e, err := New(opts)
	if err != nil {
		t.Fatalf("the README example does not load: %v", err)
	}
	at := func(c *pkitest.Cert, chain ...*pkitest.Cert) Requester {
		certs := []*x509.Certificate{c.Cert}
		for _, x := range chain {
			certs = append(certs, x.Cert)
		}
		v, err := e.Verify(certs, pkNow)
		if err != nil {
			t.Fatalf("Verify: %v", err)
		}
		return Requester{Verified: v}
	}
	// The meter asks with nothing but its key and gets its bound certificate.
	d := e.Evaluate(Request{Requester: at(meter, meterSub), CSR: csrFor(t, pkitest.NewKey(t, "p256"), pkitest.Name()),
		Operation: OpSen, Time: pkNow})
	if d.Action != ActionIssue {
		t.Fatalf("meter: %s %v", d.Action, d.Reasons)
	}
	if got := describeName(d.Template.Subject); got != `O="Example Utility", CN="meter-EXM-123456", serialNumber="EXM-123456"` {
		t.Errorf("meter subject %s", got)
	}
	hmn := `hardwareModuleName 1.3.6.1.4.1.32473.1.1 serial "EXM-123456" (45584d2d313233343536)`
	if got := describeSAN(d.Template.SubjectAltName); got != hmn+`, dNSName "EXM-123456.meters.example.net"` {
		t.Errorf("meter SAN %s", got)
	}
	if d.Template.KeyUsage != x509.KeyUsageDigitalSignature|x509.KeyUsageKeyAgreement {
		t.Errorf("meter key usage %s", keyUsageString(d.Template.KeyUsage))
	}
	// The meter may not use the gateway profile, nor reuse its IDevID key.
	if d := e.Evaluate(Request{Requester: at(meter, meterSub), CSR: csrFor(t, pkitest.NewKey(t, "p256"), pkitest.Name()),
		Operation: OpSen, Profile: "gateway", Time: pkNow}); !d.Has(CodeAnchorNotAllowed) {
		t.Errorf("meter on gateway: %s %v", d.Action, d.Reasons)
	}
	if d := e.Evaluate(Request{Requester: at(meter, meterSub), CSR: csrFor(t, meter.Key, pkitest.Name()),
		Operation: OpSen, Time: pkNow}); !d.Has(CodeKeyReuse) {
		t.Errorf("meter key reuse: %s %v", d.Action, d.Reasons)
	}
	// The expired gateway IDevID is accepted (fresh CRL), with a site OU, a
	// DNS name and an address, and waits for an operator; the vendor
	// extension is copied, an unknown one dropped.
	gwCSR := csrFor(t, pkitest.NewKey(t, "p256"), pkitest.Name(pkitest.CN("device GW-0042"), pkAttr("OU", "site-007")),
		pkitest.SANExt(pkitest.SAN(t, pkitest.DNS("gw-0042.sites.example.net"), pkitest.IP("10.20.3.4"))),
		pkitest.Ext(oidVendorExt, false, []byte{5, 0}), pkitest.Ext(asn1.ObjectIdentifier{1, 2, 3}, false, []byte{5, 0}))
	d = e.Evaluate(Request{Requester: at(gateway), CSR: gwCSR, Operation: OpSen, Profile: "gateway", Time: pkNow})
	if d.Action != ActionPending || d.RetryAfter != 10*time.Minute || !d.ExpiredAccepted {
		t.Fatalf("gateway: %s %v %v", d.Action, d.Reasons, d.RetryAfter)
	}
	d = e.Evaluate(Request{Requester: at(gateway), CSR: gwCSR, Operation: OpSen, Profile: "gateway", Time: pkNow,
		Counters: Counters{Operator: OperatorApproved, ThisPending: true}})
	if d.Action != ActionIssue || len(d.Template.Extensions) != 1 || len(d.Template.Dropped) != 1 {
		t.Fatalf("approved gateway: %s %v", d.Action, d.Reasons)
	}
	if got := describeName(d.Template.Subject); got != `CN="device GW-0042", serialNumber="GW-0042", OU="site-007"` {
		t.Errorf("gateway subject %s", got)
	}
	// The server's address is reserved even inside the allowed prefix... and
	// outside it anyway.
	bad := csrFor(t, pkitest.NewKey(t, "p256"), pkitest.Name(), pkitest.SANExt(pkitest.SAN(t, pkitest.IP("192.0.2.10"))))
	if d := e.Evaluate(Request{Requester: at(gateway), CSR: bad, Operation: OpSen, Profile: "gateway", Time: pkNow}); !d.Has(CodeNameReserved) {
		t.Errorf("gateway with the server address: %s %v", d.Action, d.Reasons)
	}
}
