package policy

import (
	"crypto"
	"crypto/x509"
	"crypto/x509/pkix"
	"net"
	"sync"
	"testing"
	"time"

	"github.com/estca/estca/policy/pkitest"
)

// world is the configuration the engine tests run against: this CA, its
// DTLS server certificate, four manufacturers with different rules, their
// devices, and a set of profiles covering every rule kind.
type world struct {
	root, issuing, server *pkitest.Cert
	acme, acmeSub         *pkitest.Cert // strict manufacturer, devices under a sub-CA, CRL, deny-lists
	bolt                  *pkitest.Cert // tolerates expiry, fresh CRL, restricted to some profiles
	dusk                  *pkitest.Cert // tolerates expiry, stale CRL
	cog                   *pkitest.Cert // allow-list

	devKey                                crypto.Signer
	dev                                   *pkitest.Cert // DEMO-0001, the demo device
	dev2                                  *pkitest.Cert // DEMO-0002, another device
	devNoSN                               *pkitest.Cert // an IDevID without serialNumber
	devUTF8SN                             *pkitest.Cert // an IDevID with a UTF8String serialNumber (not RFC 5280)
	devFuture, devExpiring                *pkitest.Cert
	devRevoked, devDenied, devDeniedFP    *pkitest.Cert
	boltExpired, boltExpiredRev, boltOK   *pkitest.Cert
	duskExpired, duskOK                   *pkitest.Cert
	cogListed, cogUnlisted                *pkitest.Cert
	opKey                                 crypto.Signer
	op, opExpired, opLongExpired, opNoSAN *pkitest.Cert

	opts Options
	e    *Engine
	// lax is e without deny-lists and CRLs: the configuration before a
	// reload, to verify requesters that the current one refuses.
	lax *Engine
}

var (
	worldOnce sync.Once
	theWorld  *world
)

// getWorld builds the world once per test binary (key generation is slow
// under -race); it is read only.
func getWorld(t testing.TB) *world {
	t.Helper()
	worldOnce.Do(func() { theWorld = buildWorld(t) })
	if theWorld == nil {
		t.Fatal("world setup failed")
	}
	return theWorld
}

func buildWorld(t testing.TB) *world {
	w := &world{}
	long := 20 * 365 * pkDay
	w.root = pkCA(t, nil, "estca root", pkNow.Add(-2*365*pkDay), pkNow.Add(long))
	w.issuing = pkCA(t, w.root, "estca issuing", pkNow.Add(-2*365*pkDay), pkNow.Add(long/2))
	w.server = pkIssue(t, w.issuing, &x509.Certificate{
		Subject: pkix.Name{CommonName: "est.example.net"}, DNSNames: []string{"est.example.net"},
		IPAddresses: []net.IP{net.ParseIP("192.0.2.10")}, NotBefore: pkNow.Add(-pkDay), NotAfter: pkNow.Add(365 * pkDay),
		ExtKeyUsage: []x509.ExtKeyUsage{x509.ExtKeyUsageServerAuth},
	}, pkitest.NewKey(t, "p256"))
	w.acme = pkCA(t, nil, "Acme IDevID Root", pkNow.Add(-10*365*pkDay), pkForever)
	w.acmeSub = pkCA(t, w.acme, "Acme IDevID Sub", pkNow.Add(-10*365*pkDay), pkForever)
	w.bolt = pkCA(t, nil, "Bolt IDevID Root", pkNow.Add(-10*365*pkDay), pkForever)
	w.dusk = pkCA(t, nil, "Dusk IDevID Root", pkNow.Add(-10*365*pkDay), pkForever)
	w.cog = pkCA(t, nil, "Cog IDevID Root", pkNow.Add(-10*365*pkDay), pkForever)

	w.devKey = pkitest.NewKey(t, "p256")
	yearAgo := pkNow.Add(-365 * pkDay)
	dev := func(ca *pkitest.Cert, serial string, nb, na time.Time) *pkitest.Cert {
		return pkIDevID(t, ca, serial, pkitest.NewKey(t, "p256"), nb, na)
	}
	w.dev = pkIDevID(t, w.acmeSub, "DEMO-0001", w.devKey, yearAgo, pkForever)
	w.dev2 = dev(w.acmeSub, "DEMO-0002", yearAgo, pkForever)
	w.devNoSN = pkIssue(t, w.acmeSub, &x509.Certificate{
		Subject: pkix.Name{CommonName: "no serial"}, NotBefore: yearAgo, NotAfter: pkForever,
	}, pkitest.NewKey(t, "p256"))
	w.devUTF8SN = pkIssue(t, w.acmeSub, &x509.Certificate{
		RawSubject: pkitest.Name(pkitest.CN("device DEMO-0008"), pkitest.ATV(attrSerialNumber.oid, 12, "DEMO-0008")),
		NotBefore:  yearAgo, NotAfter: pkForever,
	}, pkitest.NewKey(t, "p256"))
	w.devFuture = dev(w.acmeSub, "DEMO-0003", pkNow.Add(pkDay), pkForever)
	w.devExpiring = dev(w.acmeSub, "DEMO-0004", yearAgo, pkNow.Add(-pkDay))
	w.devRevoked = dev(w.acmeSub, "DEMO-0005", yearAgo, pkForever)
	w.devDenied = dev(w.acmeSub, "DEMO-0006", yearAgo, pkForever)
	w.devDeniedFP = dev(w.acmeSub, "DEMO-0007", yearAgo, pkForever)
	w.boltExpired = dev(w.bolt, "BOLT-0001", pkNow.Add(-3*365*pkDay), pkNow.Add(-pkDay))
	w.boltExpiredRev = dev(w.bolt, "BOLT-0002", pkNow.Add(-3*365*pkDay), pkNow.Add(-pkDay))
	w.boltOK = dev(w.bolt, "BOLT-0003", yearAgo, pkForever)
	w.duskExpired = dev(w.dusk, "DUSK-0001", pkNow.Add(-3*365*pkDay), pkNow.Add(-pkDay))
	w.duskOK = dev(w.dusk, "DUSK-0002", yearAgo, pkForever)
	w.cogListed = dev(w.cog, "COG-0001", yearAgo, pkForever)
	w.cogUnlisted = dev(w.cog, "COG-0002", yearAgo, pkForever)

	// Operational certificates as the default profile issues them: the
	// IDevID's subject and hardwareModuleName.
	w.opKey = pkitest.NewKey(t, "p256")
	subj, san := pkDevSubject("DEMO-0001"), pkHMNSAN(t, "DEMO-0001")
	w.op = pkOperational(t, w.issuing, subj, san, w.opKey, pkNow.Add(-30*pkDay), pkNow.Add(300*pkDay))
	w.opExpired = pkOperational(t, w.issuing, subj, san, w.opKey, pkNow.Add(-400*pkDay), pkNow.Add(-10*pkDay))
	w.opLongExpired = pkOperational(t, w.issuing, subj, san, w.opKey, pkNow.Add(-400*pkDay), pkNow.Add(-60*pkDay))
	w.opNoSAN = pkOperational(t, w.issuing, pkitest.Name(pkitest.CN("legacy")), nil, w.opKey, pkNow.Add(-30*pkDay), pkNow.Add(300*pkDay))

	year := 365 * pkDay
	w.opts = Options{
		Requesters: Requesters{
			Operational: []*x509.Certificate{w.issuing.Cert, w.root.Cert},
			Anchors: []Anchor{
				{Name: "acme", Roots: []*x509.Certificate{w.acme.Cert}, Intermediates: []*x509.Certificate{w.acmeSub.Cert},
					DenySerials:      []string{w.devDenied.Cert.SerialNumber.Text(16)},
					DenyFingerprints: []string{pkitest.Fingerprint(w.devDeniedFP.Cert)},
					CRLs: []*x509.RevocationList{pkCRL(t, w.acmeSub, pkNow.Add(-pkDay), pkNow.Add(7*pkDay),
						w.devRevoked.Cert.SerialNumber)}},
				{Name: "bolt", Roots: []*x509.Certificate{w.bolt.Cert}, TolerateExpiry: true,
					CRLs: []*x509.RevocationList{pkCRL(t, w.bolt, pkNow.Add(-pkDay), pkNow.Add(7*pkDay),
						w.boltExpiredRev.Cert.SerialNumber)},
					Profiles: []string{"default", "manual", "bolt-only"}},
				{Name: "dusk", Roots: []*x509.Certificate{w.dusk.Cert}, TolerateExpiry: true,
					CRLs: []*x509.RevocationList{pkCRL(t, w.dusk, pkNow.Add(-30*pkDay), pkNow.Add(-pkDay))}},
				{Name: "cog", Roots: []*x509.Certificate{w.cog.Cert},
					AllowSerials: []string{w.cogListed.Cert.SerialNumber.Text(16)}},
			},
		},
		Reserved:      []*x509.Certificate{w.server.Cert},
		ReservedNames: []string{"ca.example.net"},
		Profiles: []Profile{
			{Name: "default", Validity: year, RenewalGrace: 30 * pkDay},
			{Name: "strict", Validity: 90 * pkDay,
				Subject: []SubjectAttr{
					{Type: "serialNumber"},
					{Type: "CN", From: SourceCSR, Optional: true, Pattern: `dev-[0-9]{4}`},
				},
				SAN: SANPolicy{
					DNS:   NamePolicy{Patterns: []string{`[a-z0-9-]+\.example\.net`}, Max: 2},
					IP:    IPPolicy{Allow: []string{"192.0.2.0/24", "2001:db8::/32"}},
					URI:   NamePolicy{Patterns: []string{`urn:dev:[a-z0-9:-]+`}},
					Email: NamePolicy{},
				},
				Extensions: ExtensionPolicy{Copy: []string{"1.3.6.1.4.1.32473.7.1"}},
			},
			{Name: "drop", Validity: year, Extensions: ExtensionPolicy{Unknown: ExtensionsDrop,
				Copy: []string{"1.3.6.1.4.1.32473.7.1"}}},
			{Name: "manual", Validity: year, Approval: ApprovalManual, MaxPending: 2},
			{Name: "rated", Validity: year, RateLimit: RateLimit{Count: 2, Window: time.Hour}},
			{Name: "derived", Validity: year,
				Subject: []SubjectAttr{{Type: "CN", From: SourceDerived, Value: "dev-${serialNumber}"}, {Type: "serialNumber"}},
				SAN:     SANPolicy{DNS: NamePolicy{Derived: []string{"${hwSerial}.dev.example.com"}}}},
			{Name: "cnless", Validity: year, Subject: []SubjectAttr{{Type: "serialNumber"}},
				SAN: SANPolicy{HardwareModuleName: HardwareNameForbid}},
			{Name: "fixed", Validity: year, Subject: []SubjectAttr{
				{Type: "C", From: SourceCSR, Optional: true},
				{Type: "O", From: SourceFixed, Value: "Acme Devices"},
				{Type: "CN", From: SourceCSR, Optional: true, Pattern: `[a-z][a-z0-9 \x1b\x{202e}-]{0,63}`},
				{Type: "serialNumber", Optional: true},
			}},
			{Name: "keygen", Validity: year, Operations: []Operation{OpSen, OpSkg, OpSkc}, ServerKeyType: "ecdsa-p384"},
			{Name: "keygen-sealed", Validity: year, Operations: []Operation{OpSen, OpSkg, OpSkc}, RequireEncryptedKeys: true,
				EscrowKeys: true},
			{Name: "keygen-manual", Validity: year, Operations: []Operation{OpSkg}, Approval: ApprovalManual},
			{Name: "ops-only", Validity: year, Requesters: []string{KindOperator},
				Subject: []SubjectAttr{{Type: "CN", From: SourceCSR}}, SAN: SANPolicy{HardwareModuleName: HardwareNameCSR}},
			{Name: "idevid-only", Validity: year, Requesters: []string{KindIDevID}},
			{Name: "bolt-only", Validity: year},
			{Name: "renew-here", Validity: year, RenewFrom: []string{"default"}},
			{Name: "nokeyreuse", Validity: year, ForbidKeyReuse: true},
			{Name: "rsa", Validity: year, KeyTypes: []string{"rsa-2048", "ecdsa-p256"},
				KeyUsage: KeyUsages{RSA: x509.KeyUsageDigitalSignature | x509.KeyUsageKeyEncipherment,
					ECDSA: x509.KeyUsageDigitalSignature | x509.KeyUsageKeyAgreement}},
			{Name: "ed", Validity: year, KeyTypes: []string{"ed25519"}},
			{Name: "sn-derived", Validity: year, Subject: []SubjectAttr{{Type: "serialNumber", From: SourceDerived, Value: "${serialNumber}"}}},
		},
	}
	var err error
	if w.e, err = New(w.opts); err != nil {
		t.Fatal(err)
	}
	lax := w.opts
	lax.Requesters.Anchors = append([]Anchor(nil), w.opts.Requesters.Anchors...)
	for i := range lax.Requesters.Anchors {
		a := &lax.Requesters.Anchors[i]
		a.DenySerials, a.DenyFingerprints, a.CRLs = nil, nil, nil
	}
	if w.lax, err = New(lax); err != nil {
		t.Fatal(err)
	}
	return w
}

// requester verifies chain with e at time at and returns the requester.
func (w *world) requester(t testing.TB, e *Engine, at time.Time, chain ...*pkitest.Cert) Requester {
	t.Helper()
	var certs []*x509.Certificate
	for _, c := range chain {
		certs = append(certs, c.Cert)
	}
	v, err := e.Verify(certs, at)
	if err != nil {
		t.Fatalf("Verify: %v", err)
	}
	return Requester{Verified: v}
}

// idev is an IDevID requester verified now under the current configuration.
func (w *world) idev(t testing.TB, c *pkitest.Cert) Requester {
	t.Helper()
	return w.requester(t, w.e, pkNow, c)
}

// issue signs a decision's template with the issuing CA, as package ca
// would, and parses the result: every template must make a valid
// certificate.
func (w *world) issue(t testing.TB, tm *Template) *x509.Certificate {
	t.Helper()
	tmpl := &x509.Certificate{
		SerialNumber: pkNextSerial(), RawSubject: tm.Subject, NotBefore: tm.NotBefore, NotAfter: tm.NotAfter,
		KeyUsage: tm.KeyUsage, ExtKeyUsage: tm.ExtKeyUsage, BasicConstraintsValid: true,
		ExtraExtensions: tm.Extensions,
	}
	if tm.SubjectAltName != nil {
		tmpl.ExtraExtensions = append(tmpl.ExtraExtensions,
			pkix.Extension{Id: OIDSubjectAltName, Critical: tm.SANCritical, Value: tm.SubjectAltName})
	}
	pub := tm.PublicKey
	if pub == nil {
		pub = pkitest.NewKey(t, "p384").Public()
	}
	return pkitest.SignTemplate(t, tmpl, pub, w.issuing.Cert, w.issuing.Key)
}
