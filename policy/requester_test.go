package policy

import (
	"crypto/x509"
	"errors"
	"strings"
	"testing"
	"time"

	"github.com/estca/estca/policy/pkitest"
)

func TestVerify(t *testing.T) {
	t.Parallel()
	day := 24 * time.Hour
	far := time.Date(9999, 12, 31, 23, 59, 59, 0, time.UTC)
	// This CA.
	root := mint(t, nil, "estca root", 1, true, t0.Add(-day), t0.Add(20*time365))
	issuing := mint(t, root, "estca issuing", 2, true, t0.Add(-day), t0.Add(10*time365))
	op := mint(t, issuing, "op-1", 10, false, t0.Add(-day), t0.Add(time365))
	opExpired := mint(t, issuing, "op-2", 11, false, t0.Add(-2*day), t0.Add(-day))
	opFuture := mint(t, issuing, "op-3", 12, false, t0.Add(day), t0.Add(time365))
	// Impostor CA with the same name as the issuing CA.
	fakeRoot := mint(t, nil, "estca root", 1, true, t0.Add(-day), t0.Add(20*time365))
	fakeIssuing := mint(t, fakeRoot, "estca issuing", 2, true, t0.Add(-day), t0.Add(10*time365))
	forged := mint(t, fakeIssuing, "op-1", 10, false, t0.Add(-day), t0.Add(time365))
	// Manufacturers.
	mfgA := mint(t, nil, "Acme IDevID CA", 1, true, t0.Add(-5*time365), far)
	mfgASub := mint(t, mfgA, "Acme IDevID Sub CA", 2, true, t0.Add(-5*time365), far)
	mfgB := mint(t, nil, "Bolt IDevID CA", 1, true, t0.Add(-5*time365), far)
	mfgC := mint(t, nil, "Cog IDevID CA", 1, true, t0.Add(-5*time365), t0.Add(-day)) // expired root
	unknown := mint(t, nil, "Nobody CA", 1, true, t0.Add(-5*time365), far)

	devA := mint(t, mfgA, "a-valid", 0x100, false, t0.Add(-time365), far)
	devADeny := mint(t, mfgA, "a-denied", 0xdead, false, t0.Add(-time365), far)
	devAExp := mint(t, mfgA, "a-expired", 0x101, false, t0.Add(-2*time365), t0.Add(-day))
	devASub := mint(t, mfgASub, "a-sub", 0x102, false, t0.Add(-time365), far)
	devBExp := mint(t, mfgB, "b-expired", 0x200, false, t0.Add(-2*time365), t0.Add(-day))
	devBExpDeny := mint(t, mfgB, "b-expired-denied", 0xbeef, false, t0.Add(-2*time365), t0.Add(-day))
	devBFuture := mint(t, mfgB, "b-future", 0x201, false, t0.Add(day), far)
	devBAfterRoot := mint(t, mfgC, "c-dev", 0x300, false, t0.Add(-2*time365), t0.Add(time365))
	devUnknown := mint(t, unknown, "u", 0x400, false, t0.Add(-time365), far)
	// A tolerant anchor's sub-CA that is not valid yet: crypto/x509 calls
	// that "Expired" too, and it must not pass as a tolerated expiry.
	mfgBSubFuture := mint(t, mfgB, "Bolt future sub CA", 3, true, t0.Add(day), far)
	devBSubFuture := mint(t, mfgBSubFuture, "b-under-future-sub", 0x202, false, t0.Add(-time365), t0.Add(time365))
	// The DTLS server certificate is issued by this CA too, but for serverAuth.
	opServer := issuing.Issue(t, pkitest.Spec{CN: "estca server", Serial: 13, NotBefore: t0.Add(-day), NotAfter: t0.Add(time365),
		ExtKeyUsage: []x509.ExtKeyUsage{x509.ExtKeyUsageServerAuth}})
	opClient := issuing.Issue(t, pkitest.Spec{CN: "op-4", Serial: 14, NotBefore: t0.Add(-day), NotAfter: t0.Add(time365),
		ExtKeyUsage: []x509.ExtKeyUsage{x509.ExtKeyUsageClientAuth}})

	v, err := NewVerifier(Requesters{
		Operational: []*x509.Certificate{issuing.Cert, root.Cert},
		Anchors: []Anchor{
			{Name: "acme", Roots: []*x509.Certificate{mfgA.Cert}, DenySerials: []string{"00:DE:AD"}},
			{Name: "bolt", Roots: []*x509.Certificate{mfgB.Cert}, TolerateExpiry: true, DenySerials: []string{"BEEF"}},
			{Name: "cog", Roots: []*x509.Certificate{mfgC.Cert}, TolerateExpiry: true},
		},
	})
	if err != nil {
		t.Fatal(err)
	}
	tests := []struct {
		name    string
		chain   []*pkitest.Cert
		kind    string
		anchor  string
		expired bool
		want    error // sentinel; nil means accepted
	}{
		{"operational", []*pkitest.Cert{op}, KindOperational, "", false, nil},
		{"operational with chain", []*pkitest.Cert{op, issuing}, KindOperational, "", false, nil},
		{"operational expired", []*pkitest.Cert{opExpired}, "", "", false, ErrExpired},
		{"operational not yet valid", []*pkitest.Cert{opFuture}, "", "", false, ErrNotYetValid},
		{"forged issuer name", []*pkitest.Cert{forged, fakeIssuing}, "", "", false, ErrUntrusted},
		{"CA cert as client", []*pkitest.Cert{issuing}, "", "", false, ErrUntrusted},
		{"idevid valid", []*pkitest.Cert{devA}, KindIDevID, "acme", false, nil},
		{"idevid via sent intermediate", []*pkitest.Cert{devASub, mfgASub}, KindIDevID, "acme", false, nil},
		{"idevid missing intermediate", []*pkitest.Cert{devASub}, "", "", false, ErrUntrusted},
		{"idevid deny-listed", []*pkitest.Cert{devADeny}, "", "", false, ErrDenied},
		{"expired, anchor not tolerant", []*pkitest.Cert{devAExp}, "", "", false, ErrExpired},
		{"expired, anchor tolerant", []*pkitest.Cert{devBExp}, KindIDevID, "bolt", true, nil},
		{"expired, tolerant, deny-listed", []*pkitest.Cert{devBExpDeny}, "", "", false, ErrDenied},
		{"notBefore in future", []*pkitest.Cert{devBFuture}, "", "", false, ErrNotYetValid},
		{"root expired before leaf notAfter", []*pkitest.Cert{devBAfterRoot}, "", "", false, ErrExpired},
		{"unknown manufacturer", []*pkitest.Cert{devUnknown}, "", "", false, ErrUntrusted},
		{"unknown with its root", []*pkitest.Cert{devUnknown, unknown}, "", "", false, ErrUntrusted},
		{"empty chain", nil, "", "", false, ErrUntrusted},
		{"tolerant anchor, sub CA not yet valid", []*pkitest.Cert{devBSubFuture, mfgBSubFuture}, "", "", false, ErrExpired},
		{"operational serverAuth-only certificate", []*pkitest.Cert{opServer}, "", "", false, ErrUntrusted},
		{"operational clientAuth certificate", []*pkitest.Cert{opClient}, KindOperational, "", false, nil},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			var chain []*x509.Certificate
			for _, n := range tc.chain {
				chain = append(chain, n.Cert)
			}
			got, err := v.Verify(chain, t0)
			if tc.want != nil {
				var pe *Error
				if !errors.Is(err, tc.want) || !errors.As(err, &pe) || pe.Reason == "" {
					t.Fatalf("Verify = %+v, %v; want %v", got, err, tc.want)
				}
				return
			}
			if err != nil {
				t.Fatalf("Verify: %v", err)
			}
			if got.Kind != tc.kind || got.Anchor != tc.anchor || got.ExpiredAccepted != tc.expired {
				t.Fatalf("Verify = kind %q anchor %q expired %v; want %q %q %v",
					got.Kind, got.Anchor, got.ExpiredAccepted, tc.kind, tc.anchor, tc.expired)
			}
			if got.Chain[0] != chain[0] || len(got.Chain) < 2 || !got.Chain[len(got.Chain)-1].IsCA {
				t.Fatalf("verified chain malformed: %d certs", len(got.Chain))
			}
		})
	}
}

func TestNewVerifierReportsAllProblems(t *testing.T) {
	t.Parallel()
	leaf := mint(t, nil, "leaf", 1, false, t0, t0.Add(time365))
	_, err := NewVerifier(Requesters{
		Operational: []*x509.Certificate{leaf.Cert},
		Anchors: []Anchor{
			{Name: ""},
			{Name: "x", Roots: []*x509.Certificate{leaf.Cert}, DenySerials: []string{"zz"}},
			{Name: "x", Roots: []*x509.Certificate{nil}},
		},
	})
	if err == nil {
		t.Fatal("NewVerifier accepted a bad configuration")
	}
	for _, want := range []string{"is not a CA", "anchor 0 has no name", "has no roots", "bad deny-listed serial",
		"listed twice", "nil root"} {
		if !strings.Contains(err.Error(), want) {
			t.Errorf("error %q lacks %q", err, want)
		}
	}
}

func TestNormalizeSerial(t *testing.T) {
	t.Parallel()
	for in, want := range map[string]string{"00:DE:AD": "dead", "0xBEEF": "beef", "0": "0", "0a": "a"} {
		if got, ok := NormalizeSerial(in); !ok || got != want {
			t.Errorf("NormalizeSerial(%q) = %q, %v; want %q", in, got, ok, want)
		}
	}
	if _, ok := NormalizeSerial("g1"); ok {
		t.Error("NormalizeSerial accepted non-hex")
	}
}

func BenchmarkVerifyIDevID(b *testing.B) {
	mfg := mint(b, nil, "Acme", 1, true, t0.Add(-time365), t0.Add(10*time365))
	dev := mint(b, mfg, "d", 2, false, t0.Add(-time365), t0.Add(time365))
	v, err := NewVerifier(Requesters{Anchors: []Anchor{{Name: "acme", Roots: []*x509.Certificate{mfg.Cert}}}})
	if err != nil {
		b.Fatal(err)
	}
	chain := []*x509.Certificate{dev.Cert}
	for b.Loop() {
		if _, err := v.Verify(chain, t0); err != nil {
			b.Fatal(err)
		}
	}
}
