package policy

import (
	"crypto/rand"
	"crypto/x509"
	"crypto/x509/pkix"
	"errors"
	"math/big"
	"strings"
	"testing"
	"time"
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
	opServer := mintEKU(t, issuing, "estca server", 13, t0.Add(-day), t0.Add(time365), x509.ExtKeyUsageServerAuth)
	opClient := mintEKU(t, issuing, "op-4", 14, t0.Add(-day), t0.Add(time365), x509.ExtKeyUsageClientAuth)

	v, err := NewVerifier(Requesters{
		Operational: []*x509.Certificate{issuing.cert, root.cert},
		Anchors: []Anchor{
			{Name: "acme", Roots: []*x509.Certificate{mfgA.cert}, DenySerials: []string{"00:DE:AD"}},
			{Name: "bolt", Roots: []*x509.Certificate{mfgB.cert}, TolerateExpiry: true, DenySerials: []string{"BEEF"}},
			{Name: "cog", Roots: []*x509.Certificate{mfgC.cert}, TolerateExpiry: true},
		},
	})
	if err != nil {
		t.Fatal(err)
	}
	tests := []struct {
		name    string
		chain   []*node
		kind    string
		anchor  string
		expired bool
		want    error // sentinel; nil means accepted
	}{
		{"operational", []*node{op}, KindOperational, "", false, nil},
		{"operational with chain", []*node{op, issuing}, KindOperational, "", false, nil},
		{"operational expired", []*node{opExpired}, "", "", false, ErrExpired},
		{"operational not yet valid", []*node{opFuture}, "", "", false, ErrNotYetValid},
		{"forged issuer name", []*node{forged, fakeIssuing}, "", "", false, ErrUntrusted},
		{"CA cert as client", []*node{issuing}, "", "", false, ErrUntrusted},
		{"idevid valid", []*node{devA}, KindIDevID, "acme", false, nil},
		{"idevid via sent intermediate", []*node{devASub, mfgASub}, KindIDevID, "acme", false, nil},
		{"idevid missing intermediate", []*node{devASub}, "", "", false, ErrUntrusted},
		{"idevid deny-listed", []*node{devADeny}, "", "", false, ErrDenied},
		{"expired, anchor not tolerant", []*node{devAExp}, "", "", false, ErrExpired},
		{"expired, anchor tolerant", []*node{devBExp}, KindIDevID, "bolt", true, nil},
		{"expired, tolerant, deny-listed", []*node{devBExpDeny}, "", "", false, ErrDenied},
		{"notBefore in future", []*node{devBFuture}, "", "", false, ErrNotYetValid},
		{"root expired before leaf notAfter", []*node{devBAfterRoot}, "", "", false, ErrExpired},
		{"unknown manufacturer", []*node{devUnknown}, "", "", false, ErrUntrusted},
		{"unknown with its root", []*node{devUnknown, unknown}, "", "", false, ErrUntrusted},
		{"empty chain", nil, "", "", false, ErrUntrusted},
		{"tolerant anchor, sub CA not yet valid", []*node{devBSubFuture, mfgBSubFuture}, "", "", false, ErrExpired},
		{"operational serverAuth-only certificate", []*node{opServer}, "", "", false, ErrUntrusted},
		{"operational clientAuth certificate", []*node{opClient}, KindOperational, "", false, nil},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			var chain []*x509.Certificate
			for _, n := range tc.chain {
				chain = append(chain, n.cert)
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
		Operational: []*x509.Certificate{leaf.cert},
		Anchors: []Anchor{
			{Name: ""},
			{Name: "x", Roots: []*x509.Certificate{leaf.cert}, DenySerials: []string{"zz"}},
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
	v, err := NewVerifier(Requesters{Anchors: []Anchor{{Name: "acme", Roots: []*x509.Certificate{mfg.cert}}}})
	if err != nil {
		b.Fatal(err)
	}
	chain := []*x509.Certificate{dev.cert}
	for b.Loop() {
		if _, err := v.Verify(chain, t0); err != nil {
			b.Fatal(err)
		}
	}
}

func mintEKU(t testing.TB, parent *node, cn string, serial int64, nb, na time.Time, eku x509.ExtKeyUsage) *node {
	t.Helper()
	k := newKey(t)
	tmpl := &x509.Certificate{
		SerialNumber: big.NewInt(serial), Subject: pkix.Name{CommonName: cn}, NotBefore: nb, NotAfter: na,
		BasicConstraintsValid: true, KeyUsage: x509.KeyUsageDigitalSignature, ExtKeyUsage: []x509.ExtKeyUsage{eku},
	}
	der, err := x509.CreateCertificate(rand.Reader, tmpl, parent.cert, k.Public(), parent.key)
	if err != nil {
		t.Fatal(err)
	}
	c, err := x509.ParseCertificate(der)
	if err != nil {
		t.Fatal(err)
	}
	return &node{c, k}
}
