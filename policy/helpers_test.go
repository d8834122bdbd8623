package policy

import (
	"testing"
	"time"

	"github.com/estca/estca/policy/pkitest"
)

var t0 = time.Date(2026, 3, 1, 12, 0, 0, 0, time.UTC)

// mint issues a certificate under parent (nil: self-signed) with the serial
// and validity the requester tests spell out.
func mint(t testing.TB, parent *pkitest.Cert, cn string, serial int64, isCA bool, nb, na time.Time) *pkitest.Cert {
	t.Helper()
	s := pkitest.Spec{CN: cn, Serial: serial, CA: isCA, NotBefore: nb, NotAfter: na}
	if parent == nil {
		return pkitest.SelfSigned(t, s)
	}
	return parent.Issue(t, s)
}

const time365 = 365 * 24 * time.Hour
