package policy

import (
	"crypto/x509"
	"crypto/x509/pkix"
	"encoding/asn1"
	"encoding/hex"
	"errors"
	"fmt"
	"net/netip"
	"strings"
	"time"

	"golang.org/x/crypto/cryptobyte"
)

// CheckInput is what an offline check (`estca policy check --csr FILE
// --requester CERT [--label L]`) knows about a request.
type CheckInput struct {
	// CSR is the DER request.
	CSR []byte
	// Chain is the requester's certificate chain, leaf first, as a device
	// would send it; empty means the local operator.
	Chain []*x509.Certificate
	// Label selects the profile ("" the default); Operation defaults to OpSen.
	Label     string
	Operation Operation
	// Time of the decision (required).
	Time time.Time
	// Revoked, IssuedProfile and Counters are what the store would say;
	// the zero values assume a fresh, unrevoked requester.
	Revoked       bool
	IssuedProfile string
	Counters      Counters
	// EncryptedKey is Request.EncryptedKey (OpSkg, OpSkc): the CSR asks
	// for the generated key encrypted.
	EncryptedKey bool
}

// Report is the outcome of Check.
type Report struct {
	// Requester is the requester as verified ("" Kind if it did not verify).
	Requester Requester
	// VerifyError is why the chain did not authenticate, if it did not.
	VerifyError error
	// Decision is what Evaluate decided (a denial when the chain or the CSR
	// were refused before).
	Decision Decision
}

// Check runs the whole decision offline: Verify on the chain, ParseCSR on
// the CSR, then Evaluate. It performs no I/O.
func (e *Engine) Check(in CheckInput) Report {
	var rep Report
	op := in.Operation
	if op == 0 {
		op = OpSen
	}
	fail := func(err error) Report {
		var pe *Error
		code := CodeInvalidRequest
		if errors.As(err, &pe) && pe.Code != 0 {
			code = pe.Code
		}
		rep.Decision = deny(Decision{Profile: e.profileName(in.Label)}, Reason{Code: code, Detail: err.Error()})
		return rep
	}
	if len(in.Chain) == 0 {
		rep.Requester.Kind = KindOperator
	} else {
		v, err := e.Verify(in.Chain, in.Time)
		if err != nil {
			rep.VerifyError = err
			return fail(err)
		}
		rep.Requester = Requester{Verified: v, Revoked: in.Revoked, IssuedProfile: in.IssuedProfile}
	}
	csr, err := ParseCSR(in.CSR, op)
	if err != nil {
		return fail(err)
	}
	rep.Decision = e.Evaluate(Request{Requester: rep.Requester, CSR: csr, Operation: op,
		Profile: in.Label, Time: in.Time, Counters: in.Counters, EncryptedKey: in.EncryptedKey})
	return rep
}

func (e *Engine) profileName(label string) string {
	if p := e.profile(label); p != nil {
		return p.name
	}
	return ""
}

// String renders the report for a terminal: decision, requester, reasons and
// template. Request data is quoted, never printed raw.
func (r *Report) String() string {
	var b strings.Builder
	d := &r.Decision
	fmt.Fprintf(&b, "decision:  %s", d.Action)
	if d.Action != ActionIssue {
		fmt.Fprintf(&b, " (%s: %s)", d.Class(), d.Text())
	}
	b.WriteString("\n")
	fmt.Fprintf(&b, "profile:   %s\n", orNone(d.Profile))
	switch q := &r.Requester; {
	case r.VerifyError != nil:
		fmt.Fprintf(&b, "requester: not authenticated\n")
	case q.Kind == KindOperator:
		fmt.Fprintf(&b, "requester: operator\n")
	default:
		leaf := q.Chain[0]
		fmt.Fprintf(&b, "requester: %s", q.Kind)
		if q.Anchor != "" {
			fmt.Fprintf(&b, " (anchor %q)", q.Anchor)
		}
		fmt.Fprintf(&b, ", serial %s, subject %s\n", leaf.SerialNumber.Text(16), quoteN(leaf.Subject.String(), 256))
		fmt.Fprintf(&b, "identity:  %s\n", d.Identity)
	}
	if f := d.Flags(); len(f) > 0 {
		fmt.Fprintf(&b, "flags:     %s\n", strings.Join(f, ", "))
	}
	for i, rs := range d.Reasons {
		if i == 0 {
			b.WriteString("reasons:\n")
		}
		fmt.Fprintf(&b, "  - %s [%s] %q", rs.Code, rs.Class(), rs.Text())
		if rs.Detail != "" {
			fmt.Fprintf(&b, ": %s", rs.Detail)
		}
		b.WriteString("\n")
	}
	if d.RetryAfter > 0 {
		fmt.Fprintf(&b, "retry after: %s\n", d.RetryAfter)
	}
	if t := d.Template; t != nil {
		b.WriteString("template:\n")
		fmt.Fprintf(&b, "  subject:      %s\n", describeName(t.Subject))
		if t.SubjectAltName != nil {
			crit := ""
			if t.SANCritical {
				crit = " (critical)"
			}
			fmt.Fprintf(&b, "  subjectAltName%s: %s\n", crit, describeSAN(t.SubjectAltName))
		}
		if t.ServerKeyType != "" {
			fmt.Fprintf(&b, "  key:          generated in the server: %s", t.ServerKeyType)
			if t.EscrowKey {
				b.WriteString(", escrowed in the token")
			}
			b.WriteString("\n")
		} else {
			fmt.Fprintf(&b, "  key:          %s (from the CSR)\n", KeyTypeOf(t.PublicKey))
		}
		fmt.Fprintf(&b, "  keyUsage:     %s\n", keyUsageString(t.KeyUsage))
		var ekus []string
		for _, u := range t.ExtKeyUsage {
			ekus = append(ekus, extKeyUsageName(u))
		}
		fmt.Fprintf(&b, "  extKeyUsage:  %s\n", strings.Join(ekus, ","))
		fmt.Fprintf(&b, "  validity:     %s to %s\n", t.NotBefore.UTC().Format(time.RFC3339), t.NotAfter.UTC().Format(time.RFC3339))
		for _, x := range t.Extensions {
			fmt.Fprintf(&b, "  copied extension: %s\n", x.Id)
		}
		for _, oid := range t.Dropped {
			fmt.Fprintf(&b, "  dropped extension: %s\n", oid)
		}
	}
	return b.String()
}

func orNone(s string) string {
	if s == "" {
		return "(none)"
	}
	return s
}

// describeName renders a DER Name with its values quoted.
func describeName(der []byte) string {
	var rdns pkix.RDNSequence
	if rest, err := asn1.Unmarshal(der, &rdns); err != nil || len(rest) > 0 {
		return "(unparsable)"
	}
	if len(rdns) == 0 {
		return "(empty)"
	}
	var parts []string
	for _, rdn := range rdns {
		for _, atv := range rdn {
			name := atv.Type.String()
			if t := lookupAttrType(name); t != nil {
				name = t.name
			}
			parts = append(parts, name+"="+quote(fmt.Sprint(atv.Value)))
		}
	}
	return strings.Join(parts, ", ")
}

// describeSAN renders a SAN extension value with its values quoted.
func describeSAN(v []byte) string {
	var buf [16]sanEntry
	entries, code, _ := parseSAN(v, buf[:0])
	if code != 0 {
		return "(unparsable)"
	}
	var parts []string
	for _, e := range entries {
		switch e.tag {
		case tagOtherNameC:
			if h, err := parseHardwareModuleName(cryptobyte.String(e.val)); err == nil {
				parts = append(parts, fmt.Sprintf("hardwareModuleName %s serial %s (%s)", h.Type, quote(string(h.SerialNum)), hex.EncodeToString(h.SerialNum)))
				continue
			}
		case tagIPP:
			if a, ok := netip.AddrFromSlice(e.val); ok {
				parts = append(parts, "IP "+a.String())
				continue
			}
		}
		parts = append(parts, generalNameType(e.tag)+" "+quote(string(e.val)))
	}
	return strings.Join(parts, ", ")
}

var extKeyUsageNames = map[x509.ExtKeyUsage]string{
	x509.ExtKeyUsageServerAuth: "serverAuth", x509.ExtKeyUsageClientAuth: "clientAuth",
	x509.ExtKeyUsageCodeSigning: "codeSigning", x509.ExtKeyUsageEmailProtection: "emailProtection",
	x509.ExtKeyUsageTimeStamping: "timeStamping", x509.ExtKeyUsageOCSPSigning: "OCSPSigning",
}

// ParseExtKeyUsage returns the extended key usage named name
// ("clientAuth", "serverAuth", "codeSigning", "emailProtection",
// "timeStamping", "OCSPSigning"; case-insensitive), for configuration
// decoding.
func ParseExtKeyUsage(name string) (x509.ExtKeyUsage, bool) {
	for u, n := range extKeyUsageNames {
		if strings.EqualFold(n, name) {
			return u, true
		}
	}
	return 0, false
}

func extKeyUsageName(u x509.ExtKeyUsage) string {
	if n, ok := extKeyUsageNames[u]; ok {
		return n
	}
	return fmt.Sprintf("eku(%d)", u)
}
