package policy

import (
	"crypto/x509"
	"errors"
	"strings"
	"testing"
	"time"

	"github.com/estca/estca/policy/pkitest"
)

// TestVerifyAnchorRules covers the handshake side of the anchor rules:
// CRLs, fingerprint and allow lists, stale CRLs for expired IDevIDs, and
// the operational renewal grace.
func TestVerifyAnchorRules(t *testing.T) {
	t.Parallel()
	w := getWorld(t)
	tests := []struct {
		name    string
		chain   func(w *world) []*pkitest.Cert
		at      time.Time
		kind    string
		expired bool
		grace   bool
		code    Code // 0: accepted
		want    error
	}{
		{"IDevID via its sub-CA", func(w *world) []*pkitest.Cert { return []*pkitest.Cert{w.dev} }, pkNow, KindIDevID, false, false, 0, nil},
		{"IDevID on the CRL", func(w *world) []*pkitest.Cert { return []*pkitest.Cert{w.devRevoked} }, pkNow, "", false, false, CodeCertRevoked, ErrDenied},
		{"IDevID deny-listed by serial", func(w *world) []*pkitest.Cert { return []*pkitest.Cert{w.devDenied} }, pkNow, "", false, false, CodeCertDenied, ErrDenied},
		{"IDevID deny-listed by fingerprint", func(w *world) []*pkitest.Cert { return []*pkitest.Cert{w.devDeniedFP} }, pkNow, "", false, false, CodeCertDenied, ErrDenied},
		{"IDevID not on the allow-list", func(w *world) []*pkitest.Cert { return []*pkitest.Cert{w.cogUnlisted} }, pkNow, "", false, false, CodeCertNotAllowed, ErrDenied},
		{"IDevID on the allow-list", func(w *world) []*pkitest.Cert { return []*pkitest.Cert{w.cogListed} }, pkNow, KindIDevID, false, false, 0, nil},
		{"expired IDevID, strict anchor", func(w *world) []*pkitest.Cert { return []*pkitest.Cert{w.devExpiring} }, pkNow, "", false, false, CodeCertExpired, ErrExpired},
		{"expired IDevID, tolerant anchor, fresh CRL", func(w *world) []*pkitest.Cert { return []*pkitest.Cert{w.boltExpired} }, pkNow, KindIDevID, true, false, 0, nil},
		{"expired IDevID, tolerant anchor, on its CRL", func(w *world) []*pkitest.Cert { return []*pkitest.Cert{w.boltExpiredRev} }, pkNow, "", false, false, CodeCertRevoked, ErrDenied},
		{"expired IDevID, tolerant anchor, CRL stale", func(w *world) []*pkitest.Cert { return []*pkitest.Cert{w.duskExpired} }, pkNow, "", false, false, CodeCRLStale, ErrDenied},
		{"valid IDevID, CRL stale", func(w *world) []*pkitest.Cert { return []*pkitest.Cert{w.duskOK} }, pkNow, KindIDevID, false, false, 0, nil},
		{"IDevID not yet valid", func(w *world) []*pkitest.Cert { return []*pkitest.Cert{w.devFuture} }, pkNow, "", false, false, CodeCertNotYetValid, ErrNotYetValid},
		{"operational", func(w *world) []*pkitest.Cert { return []*pkitest.Cert{w.op} }, pkNow, KindOperational, false, false, 0, nil},
		{"operational expired within the longest grace", func(w *world) []*pkitest.Cert { return []*pkitest.Cert{w.opExpired} }, pkNow, KindOperational, false, true, 0, nil},
		{"operational expired beyond every grace", func(w *world) []*pkitest.Cert { return []*pkitest.Cert{w.opLongExpired} }, pkNow, "", false, false, CodeCertExpired, ErrExpired},
		{"the server certificate as a client", func(w *world) []*pkitest.Cert { return []*pkitest.Cert{w.server} }, pkNow, "", false, false, CodeNotClientCert, ErrUntrusted},
		{"a manufacturer CA certificate as a client", func(w *world) []*pkitest.Cert { return []*pkitest.Cert{w.acmeSub} }, pkNow, "", false, false, CodeNotClientCert, ErrUntrusted},
		{"foreign device with a forged chain", func(w *world) []*pkitest.Cert {
			return []*pkitest.Cert{pkIDevID(t, pkCA(t, nil, "Acme IDevID Sub", pkNow.Add(-pkDay), pkForever), "DEMO-0001",
				pkKey(t, "p256"), pkNow.Add(-pkDay), pkForever), w.acmeSub}
		}, pkNow, "", false, false, CodeUntrusted, ErrUntrusted},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			t.Parallel()
			var chain []*x509.Certificate
			for _, c := range tc.chain(w) {
				chain = append(chain, c.Cert)
			}
			v, err := w.e.Verify(chain, tc.at)
			if tc.code != 0 {
				var pe *Error
				if !errors.As(err, &pe) || pe.Code != tc.code || !errors.Is(err, tc.want) || pe.Reason == "" {
					t.Fatalf("Verify = %+v, %v; want %s (%v)", v, err, tc.code, tc.want)
				}
				return
			}
			if err != nil {
				t.Fatalf("Verify: %v", err)
			}
			if v.Kind != tc.kind || v.ExpiredAccepted != tc.expired || v.InGrace != tc.grace {
				t.Fatalf("Verify = kind %q expired %v grace %v", v.Kind, v.ExpiredAccepted, v.InGrace)
			}
		})
	}
}

// TestNewReportsAllProblems feeds New one configuration with every kind of
// mistake and expects each to be reported, at once.
func TestNewReportsAllProblems(t *testing.T) {
	t.Parallel()
	w := getWorld(t)
	// A CRL signed by another manufacturer than the anchor's.
	foreignCRL := pkCRL(t, w.bolt, pkNow, pkNow.Add(pkDay))
	_, err := New(Options{
		Requesters: Requesters{
			Operational: []*x509.Certificate{w.issuing.Cert, w.root.Cert},
			Anchors: []Anchor{{Name: "acme", Roots: []*x509.Certificate{w.acme.Cert},
				CRLs: []*x509.RevocationList{foreignCRL}, DenyFingerprints: []string{"abcd"},
				AllowSerials: []string{"xyz"}, Profiles: []string{"nope"}}},
		},
		DefaultProfile: "missing",
		Profiles: []Profile{
			{Name: "", Validity: time.Hour},
			{Name: "a/b", Validity: 0, Backdate: -1},
			{Name: "ku", Validity: time.Hour, KeyUsage: KeyUsages{
				RSA:     x509.KeyUsageDigitalSignature | x509.KeyUsageKeyAgreement,
				ECDSA:   x509.KeyUsageKeyEncipherment,
				Ed25519: x509.KeyUsageKeyAgreement,
			}},
			{Name: "keys", Validity: time.Hour, KeyTypes: []string{"rsa-1024", "ecdsa-p224", "dsa-2048"}, ServerKeyType: "rsa-512"},
			{Name: "subject", Validity: time.Hour, Subject: []SubjectAttr{
				{Type: "emailAddress"},
				{Type: "CN", From: SourceCSR, Pattern: "("},
				{Type: "commonName"},
				{Type: "C", From: SourceFixed, Value: "USA"},
				{Type: "O", From: SourceDerived, Value: "${nope}"},
				{Type: "OU", From: SourceDerived, Value: "no placeholder"},
				{Type: "L", From: SourceIdentity, Pattern: "x"},
			}},
			{Name: "san", Validity: time.Hour, Requesters: []string{"idevid", "robot"},
				SAN: SANPolicy{HardwareModuleName: HardwareNameCSR, DNS: NamePolicy{Allow: []string{"*.x"}, Patterns: []string{"["}},
					IP: IPPolicy{Allow: []string{"not-an-ip"}}, MaxNames: -1}},
			{Name: "noname", Validity: time.Hour, Subject: []SubjectAttr{}, SAN: SANPolicy{HardwareModuleName: HardwareNameForbid}},
			{Name: "exts", Validity: time.Hour, Extensions: ExtensionPolicy{Copy: []string{"2.5.29.17", "1.2.x"}},
				ExtKeyUsage: []x509.ExtKeyUsage{x509.ExtKeyUsageAny}},
			{Name: "limits", Validity: time.Hour, RateLimit: RateLimit{Count: 3}, MaxPending: -1, PendingMaxAge: -1,
				RenewalGrace: time.Hour, Requesters: []string{KindIDevID}, RenewFrom: []string{"ghost"}},
			{Name: "ku", Validity: time.Hour},
			{Name: "escrow-without-skg", Validity: time.Hour, EscrowKeys: true, RequireEncryptedKeys: true},
		},
	})
	if err == nil {
		t.Fatal("New accepted a bad configuration")
	}
	for _, want := range []string{
		"profile 0 has no name", `"a/b": validity must be positive`, `"a/b": backdate must not be negative`,
		`"a/b": name must be a single path label`,
		"keyAgreement is impossible for RSA keys", "keyEncipherment is impossible for ECDSA keys",
		"keyAgreement is impossible for Ed25519 keys",
		`key type "rsa-1024" is too weak`, `key type "ecdsa-p224" is too weak`, `unknown key type "dsa-2048"`,
		`unknown server key type "rsa-512"`,
		`"escrow-without-skg": server_key_type, require_encrypted_keys and escrow_keys need skg or skc`,
		`unsupported attribute type "emailAddress"`, "CN: pattern", "CN listed twice", "fixed value: C has 3 characters",
		"unknown placeholder ${nope}", "no ${placeholder}", "a pattern applies only to values from the CSR",
		`unknown requester kind "robot"`, "lets devices claim any hardware serial", `"*.x" is not a valid name`,
		"san.dns: pattern", `"not-an-ip" is neither`, "max names must not be negative",
		"can issue no name", "2.5.29.17 is set by the CA", `"1.2.x" is not a dotted OID`, "anyExtendedKeyUsage",
		"rate limit of 3 needs a window", "max pending must not be negative", "pending max-age must not be negative",
		"renewal grace without operational requesters", `renew_from names unknown profile "ghost"`,
		`profile "ku" is defined twice`, `default profile "missing" is not defined`,
		"is not signed by any of its certificates", "bad deny-listed fingerprint", `bad allow-listed serial "xyz"`,
	} {
		if !strings.Contains(err.Error(), want) {
			t.Errorf("error lacks %q", want)
		}
	}
	if t.Failed() {
		t.Logf("error:\n%v", err)
	}
}

// TestNewAnchorProfiles checks that an anchor naming an unknown profile is
// a configuration error (the Verifier alone does not know profiles).
func TestNewAnchorProfiles(t *testing.T) {
	t.Parallel()
	w := getWorld(t)
	_, err := New(Options{
		Requesters: Requesters{Anchors: []Anchor{{Name: "acme", Roots: []*x509.Certificate{w.acme.Cert}, Profiles: []string{"nope"}}}},
		Profiles:   []Profile{{Name: "p", Validity: time.Hour}},
	})
	if err == nil || !strings.Contains(err.Error(), `anchor "acme": profiles names unknown profile "nope"`) {
		t.Fatalf("New = %v", err)
	}
	if _, err := New(Options{}); err == nil || !strings.Contains(err.Error(), "no profiles") {
		t.Fatalf("New without profiles = %v", err)
	}
}

// TestCodes checks the reason table: every code has a unique audit name, a
// class and a short fixed text without request data.
func TestCodes(t *testing.T) {
	t.Parallel()
	names := map[string]bool{}
	for _, c := range Codes() {
		name, text := c.String(), c.Text()
		if name == "" || strings.HasPrefix(name, "code(") || names[name] {
			t.Errorf("code %d: bad or duplicate name %q", c, name)
		}
		names[name] = true
		if text == "" || len(text) > 64 || strings.ContainsAny(text, "%\n\"") {
			t.Errorf("code %s: text %q", name, text)
		}
		if c.Class() < ClassBadRequest || c.Class() > ClassInternal {
			t.Errorf("code %s: class %v", name, c.Class())
		}
	}
	if Code(0).String() != "code(0)" || Code(9999).Class() != ClassInternal {
		t.Error("out-of-range codes")
	}
}

// TestParseCSR checks what ParseCSR refuses before Evaluate sees a CSR.
func TestParseCSR(t *testing.T) {
	t.Parallel()
	w := getWorld(t)
	good := pkitest.Request{Key: pkKey(t, "p256"), Subject: pkDevSubject("DEMO-0001")}.DER(t)
	tampered := append([]byte(nil), good...)
	tampered[len(tampered)-3] ^= 1 // inside the signature
	sha1CSR := pkitest.Request{Key: pkKey(t, "p256"), Subject: pkDevSubject("DEMO-0001"), Algorithm: x509.ECDSAWithSHA1}.DER(t)
	v1 := pkitest.Request{Key: pkKey(t, "p256"), Subject: pkDevSubject("DEMO-0001"), Version: 1, Algorithm: x509.ECDSAWithSHA256}.DER(t)
	_ = w
	tests := []struct {
		name string
		der  []byte
		op   Operation
		code Code
	}{
		{"good", good, OpSen, 0},
		{"garbage", []byte{0x30, 0x03, 1, 2, 3}, OpSen, CodeCSRMalformed},
		{"oversized", make([]byte, MaxCSRSize+1), OpSen, CodeCSRMalformed},
		{"tampered signature", tampered, OpSen, CodeCSRSignatureInvalid},
		{"tampered signature, skg ignores it", tampered, OpSkg, 0},
		{"SHA-1", sha1CSR, OpSren, CodeCSRSignatureWeak},
		{"SHA-1, skc ignores it", sha1CSR, OpSkc, 0},
		{"version 1", v1, OpSen, CodeCSRVersion},
		{"version 1, also for skg", v1, OpSkg, CodeCSRVersion},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			t.Parallel()
			csr, err := ParseCSR(tc.der, tc.op)
			if tc.code == 0 {
				if err != nil || csr == nil {
					t.Fatalf("ParseCSR: %v", err)
				}
				return
			}
			var pe *Error
			if !errors.As(err, &pe) || pe.Code != tc.code || !errors.Is(err, ErrRejected) {
				t.Fatalf("ParseCSR = %v, want %s", err, tc.code)
			}
		})
	}
}

// TestParseNames checks the names cmd/estca decodes configuration words with.
func TestParseNames(t *testing.T) {
	t.Parallel()
	for _, s := range []string{"identity", "fixed", "derived", "csr"} {
		if v, ok := ParseSource(s); !ok || v.String() != s {
			t.Errorf("ParseSource(%q) = %v, %v", s, v, ok)
		}
	}
	for _, s := range []string{"identity", "forbid", "csr"} {
		if v, ok := ParseHardwareNameMode(s); !ok || v.String() != s {
			t.Errorf("ParseHardwareNameMode(%q) = %v, %v", s, v, ok)
		}
	}
	for _, s := range []string{"auto", "manual"} {
		if v, ok := ParseApprovalMode(s); !ok || v.String() != s {
			t.Errorf("ParseApprovalMode(%q) = %v, %v", s, v, ok)
		}
	}
	for _, s := range []string{"reject", "drop"} {
		if v, ok := ParseExtensionMode(s); !ok || v.String() != s {
			t.Errorf("ParseExtensionMode(%q) = %v, %v", s, v, ok)
		}
	}
	for _, s := range []string{"sen", "sren", "skg", "skc"} {
		if v, ok := ParseOperation(s); !ok || v.String() != s {
			t.Errorf("ParseOperation(%q) = %v, %v", s, v, ok)
		}
	}
	if ku, ok := ParseKeyUsage("keyAgreement"); !ok || ku != x509.KeyUsageKeyAgreement {
		t.Errorf("ParseKeyUsage = %v, %v", ku, ok)
	}
	for _, bad := range []string{"", "Identity ", "x"} {
		if _, ok := ParseSource(bad); ok {
			t.Errorf("ParseSource(%q) accepted", bad)
		}
		if _, ok := ParseApprovalMode(bad); ok {
			t.Errorf("ParseApprovalMode(%q) accepted", bad)
		}
	}
	if oid, err := ParseOID("1.3.6.1.4.1.32473.7.1"); err != nil || !oid.Equal(oidVendorExt) {
		t.Errorf("ParseOID = %v, %v", oid, err)
	}
	for _, bad := range []string{"1", "3.1", "1.40", "1.02", "1.-2", "a.b"} {
		if _, err := ParseOID(bad); err == nil {
			t.Errorf("ParseOID(%q) accepted", bad)
		}
	}
}
