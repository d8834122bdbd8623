package policy

import (
	"crypto/x509"
	"strings"
	"testing"

	"github.com/estca/estca/policy/pkitest"
)

// TestCheck runs the offline check as `estca policy check` would and reads
// its report.
func TestCheck(t *testing.T) {
	t.Parallel()
	w := getWorld(t)
	devChain := []*x509.Certificate{w.dev.Cert, w.acmeSub.Cert}
	good := pkitest.Request{Key: pkKey(t, "p256"), Subject: pkitest.Name(pkitest.SerialNumber("DEMO-0001"))}.DER(t)
	admin := pkitest.Request{Key: pkKey(t, "p256"), Subject: pkitest.Name(pkitest.CN("admin\x1b[31m")),
		Algorithm: x509.ECDSAWithSHA1}.DER(t)
	tests := []struct {
		name string
		in   CheckInput
		want Action
		has  []string
		not  []string
	}{
		{"issue", CheckInput{CSR: good, Chain: devChain, Time: pkNow}, ActionIssue, []string{
			"decision:  issue\n", "profile:   default\n", `requester: idevid (anchor "acme")`,
			"identity:  idevid/acme/sn:DEMO-0001\n",
			`subject:      O="Acme Devices", CN="device DEMO-0001", serialNumber="DEMO-0001"`,
			`subjectAltName: ` + demoHMN, "key:          ecdsa-p256 (from the CSR)", "keyUsage:     digitalSignature\n",
			"extKeyUsage:  clientAuth\n", "validity:     2026-03-01T11:59:00Z to 2027-03-01T12:00:00Z",
		}, []string{"reasons:"}},
		{"attack refused, the escape quoted", CheckInput{CSR: admin, Chain: devChain, Time: pkNow}, ActionDeny, []string{
			"decision:  deny (bad-request: weak CSR signature algorithm)", "csr-signature-weak [bad-request]",
		}, []string{"\x1b", "template:"}},
		{"parsed CSR rules", CheckInput{CSR: pkitest.Request{Key: pkKey(t, "p256"), Subject: pkitest.Name(pkitest.CN("admin\x1b[31m"))}.DER(t),
			Chain: devChain, Time: pkNow}, ActionDeny, []string{
			"decision:  deny (bad-request: invalid characters in subject)", `CN has control character U+1b`,
		}, []string{"\x1b"}},
		{"not authenticated", CheckInput{CSR: good, Chain: []*x509.Certificate{w.devRevoked.Cert}, Time: pkNow}, ActionDeny,
			[]string{"requester: not authenticated", "cert-revoked [forbidden]"}, nil},
		{"manual profile", CheckInput{CSR: good, Chain: devChain, Label: "manual", Time: pkNow}, ActionPending,
			[]string{"decision:  pending (retry: waiting for approval)", "retry after: 5m0s", "template:"}, nil},
		{"operator, server keygen", CheckInput{CSR: pkitest.Request{Key: pkKey(t, "p256"), Subject: pkitest.Name(pkitest.CN("bench"))}.DER(t),
			Label: "keygen", Operation: OpSkg, Time: pkNow}, ActionIssue,
			[]string{"requester: operator", "generated in the server: ecdsa-p384", `subject:      CN="bench"`}, nil},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			t.Parallel()
			rep := w.e.Check(tc.in)
			out := rep.String()
			if rep.Decision.Action != tc.want {
				t.Fatalf("decision %s, want %s:\n%s", rep.Decision.Action, tc.want, out)
			}
			for _, s := range tc.has {
				if !strings.Contains(out, s) {
					t.Errorf("report lacks %q:\n%s", s, out)
				}
			}
			for _, s := range tc.not {
				if strings.Contains(out, s) {
					t.Errorf("report has %q:\n%s", s, out)
				}
			}
		})
	}
}
