package policy

import (
	"bytes"
	"crypto"
	"crypto/rsa"
	"crypto/x509"
	"encoding/asn1"
	"slices"
	"strconv"
	"time"

	"golang.org/x/crypto/cryptobyte"
	cbasn1 "golang.org/x/crypto/cryptobyte/asn1"
)

// Evaluate decides one enrollment request. It performs no I/O, reads no
// clock (Request.Time) and keeps no state; it relies on the caller for what
// needs the store (Requester.Revoked, IssuedProfile, Counters) and for the
// CSR signature (ParseCSR).
//
// The order of the rules: the profile and operation; the requester (kind,
// anchor, validity, lists, CRLs, revocation, renewal grace); the CSR (version,
// signature algorithm, key); the subject and SAN against the profile's
// template and the identity; requested extensions; renewal rules (RFC 7030
// §4.2.2) and key reuse. Every violated rule is reported (up to 8 reasons,
// forbidden before bad-request). Only a request that passes them all meets
// the operator decision, rate limit and approval rules.
func (e *Engine) Evaluate(req Request) Decision {
	var d Decision
	p := e.profile(req.Profile)
	if p == nil {
		return deny(d, Reason{Code: CodeProfileUnknown, Detail: "label " + quote(req.Profile)})
	}
	d.Profile = p.name
	r := &req.Requester
	csr := req.CSR
	op := req.Operation
	switch {
	case req.Time.IsZero():
		return deny(d, Reason{Code: CodeInvalidRequest, Detail: "no request time"})
	case csr == nil:
		return deny(d, Reason{Code: CodeInvalidRequest, Detail: "no CSR"})
	case op < OpSen || op > OpSkc:
		return deny(d, Reason{Code: CodeInvalidRequest, Detail: "unknown operation"})
	case r.Kind != KindOperator && (len(r.Chain) == 0 || slices.Contains(r.Chain, nil)):
		return deny(d, Reason{Code: CodeInvalidRequest, Detail: "requester without certificate"})
	}
	d.Identity = IdentityOf(*r)
	now := req.Time
	var f findings

	if !p.ops[op] {
		f.add(CodeOperationNotAllowed, op.String())
	}
	var nbuf [maxNameAttrs]nameAttr
	var id identity
	renewal := false
	switch r.Kind {
	case KindIDevID:
		if !p.idevid {
			f.add(CodeRequesterNotAllowed, "IDevID")
		}
		e.checkIDevID(r, p, now, &f, &d)
		id = newIdentity(r.Chain[0], nbuf[:0])
	case KindOperational:
		if !p.operational {
			f.add(CodeRequesterNotAllowed, "operational certificate")
		}
		e.checkOperational(r, p, now, &f, &d)
		id = newIdentity(r.Chain[0], nbuf[:0])
		renewal = true
	case KindOperator:
		if !p.oper {
			f.add(CodeRequesterNotAllowed, "operator")
		}
	default:
		return deny(d, Reason{Code: CodeInvalidRequest, Detail: "unknown requester kind"})
	}
	if op == OpSren && !renewal {
		f.add(CodeRenewalNeedsOperational, "")
	}

	// The key: the CSR's, or the one the server will generate.
	t := &Template{ExtKeyUsage: p.eku}
	if csr.Version != 0 {
		f.add(CodeCSRVersion, "version field "+strconv.Itoa(csr.Version)+" (v1 is 0)")
	}
	var kt *keyType
	if op.serverKeygen() {
		kt = p.serverKey
		if kt != nil {
			t.ServerKeyType = kt.name
		}
		t.EscrowKey = p.escrow
		if p.requireEncrypted && !req.EncryptedKey {
			f.add(CodeKeyEncryptionRequired, "the CSR names no key to encrypt the generated key to")
		}
	} else {
		if code, detail := checkSignatureAlgorithm(csr.SignatureAlgorithm); code != 0 {
			f.add(code, detail)
		}
		var code Code
		var detail string
		if kt, code, detail = classifyKey(csr.PublicKey); code != 0 {
			f.add(code, detail)
		} else if !containsKeyType(p.keyTypes, kt) {
			f.add(CodeKeyTypeNotAllowed, kt.name)
		}
		t.PublicKey, t.RawSubjectPublicKeyInfo = csr.PublicKey, csr.RawSubjectPublicKeyInfo
	}
	var fam keyFamily
	if kt != nil {
		fam = kt.family
		t.KeyUsage = p.ku.of(fam)
	}

	csrSAN, hasSAN := e.checkExtensions(p, csr, fam, t, &f)
	subject := e.buildSubject(p, csr.RawSubject, &id, &f)
	san, sanOK := e.buildSAN(p, csrSAN, hasSAN, &id, &f)

	if renewal {
		leaf := r.Chain[0]
		if !bytes.Equal(csr.RawSubject, leaf.RawSubject) {
			f.add(CodeRenewalNameChanged, "subject differs from the certificate being renewed")
		}
		cur, curOK := extValue(leaf.Extensions, OIDSubjectAltName)
		if curOK != hasSAN || !bytes.Equal(cur, csrSAN) {
			f.add(CodeRenewalNameChanged, "SAN differs from the certificate being renewed")
		}
		// The renewed certificate keeps the names byte for byte.
		subject, san = leaf.RawSubject, nil
		if curOK {
			san = cur
		}
		d.Renewal = RenewalRekey
	}
	if !op.serverKeygen() && id.present && sameKey(id.leaf, csr) {
		d.KeyReused = true
		if renewal {
			d.Renewal = RenewalRenew
		}
		if p.forbidReuse {
			f.add(CodeKeyReuse, "the CSR key is the key of the requester's certificate")
		}
	}
	emptySubject := len(subject) == 2 // SEQUENCE {}
	if subject != nil && emptySubject && sanOK && len(san) == 0 {
		f.add(CodeNoName, "")
	}
	if len(f.rs) > 0 {
		return deny(d, f.rs...)
	}

	t.Subject, t.SubjectAltName, t.SANCritical = subject, san, emptySubject && len(san) > 0
	t.NotBefore = now.Add(-p.backdate)
	t.NotAfter = now.Add(p.validity)
	if e.issuing != nil && t.NotAfter.After(e.issuing.NotAfter) {
		t.NotAfter = e.issuing.NotAfter
	}
	return e.admission(p, req.Counters, now, d, t)
}

// admission applies the operator decision, the rate limit and the approval
// mode to a request that passed every rule.
func (e *Engine) admission(p *profile, c Counters, now time.Time, d Decision, t *Template) Decision {
	if c.Operator == OperatorRejected {
		return deny(d, Reason{Code: CodeOperatorRejected})
	}
	approved := c.Operator == OperatorApproved
	if !approved && p.rateCount > 0 && c.Issued >= p.rateCount {
		wait := p.rateWindow
		if !c.OldestIssued.IsZero() {
			wait = c.OldestIssued.Add(p.rateWindow).Sub(now)
		}
		d = deny(d, Reason{Code: CodeRateLimited, Detail: strconv.Itoa(c.Issued) + " issued in " + p.rateWindow.String()})
		d.RetryAfter = ceilSecond(min(wait, p.rateWindow))
		return d
	}
	if p.manual && !approved {
		if !c.ThisPending && c.Pending >= p.maxPending {
			d = deny(d, Reason{Code: CodeTooManyPending, Detail: strconv.Itoa(c.Pending) + " pending"})
			d.RetryAfter = ceilSecond(p.pendingMaxAge)
			return d
		}
		d.Action, d.Reasons, d.Template = ActionPending, []Reason{{Code: CodePendingApproval}}, t
		d.RetryAfter = ceilSecond(p.pendingMaxAge)
		return d
	}
	d.Action, d.Template = ActionIssue, t
	return d
}

// checkIDevID re-checks, at request time and under the current
// configuration, what Verify checked at the handshake and may have changed
// since: the anchor, the leaf's validity, the lists and CRLs.
func (e *Engine) checkIDevID(r *Requester, p *profile, now time.Time, f *findings, d *Decision) {
	a := e.anchors[r.Anchor]
	if a == nil {
		f.add(CodeAnchorUnknown, "anchor "+quote(r.Anchor))
		return
	}
	if a.profiles != nil && !a.profiles[p.name] {
		f.add(CodeAnchorNotAllowed, "anchor "+quote(a.name))
	}
	leaf := r.Chain[0]
	if now.Before(leaf.NotBefore) {
		f.add(CodeCertNotYetValid, "notBefore "+leaf.NotBefore.UTC().Format(time.RFC3339))
	}
	expired := now.After(leaf.NotAfter)
	if expired {
		if !a.tolerate {
			f.add(CodeCertExpired, "notAfter "+leaf.NotAfter.UTC().Format(time.RFC3339))
		} else {
			d.ExpiredAccepted = true
		}
	}
	if code, detail := a.admit(r.Chain, now, expired); code != 0 {
		f.add(code, detail)
	}
}

// checkOperational re-checks an operational certificate at request time:
// revocation (the caller's store lookup), validity with the profile's
// renewal grace, and the profile it may renew into.
func (e *Engine) checkOperational(r *Requester, p *profile, now time.Time, f *findings, d *Decision) {
	leaf := r.Chain[0]
	if r.Unknown {
		f.add(CodeCertUnknown, "serial "+leaf.SerialNumber.Text(16)+" is not in the store")
	}
	if r.Revoked {
		f.add(CodeCertRevoked, "serial "+leaf.SerialNumber.Text(16)+" is revoked")
	}
	if now.Before(leaf.NotBefore) {
		f.add(CodeCertNotYetValid, "notBefore "+leaf.NotBefore.UTC().Format(time.RFC3339))
	}
	if now.After(leaf.NotAfter) {
		if past := now.Sub(leaf.NotAfter); past > p.grace {
			f.add(CodeCertExpired, "expired "+past.Truncate(time.Second).String()+" ago; renewal grace "+p.grace.String())
		} else {
			d.InGrace = true
		}
	}
	if r.IssuedProfile != "" && r.IssuedProfile != p.name && !p.renewFrom[r.IssuedProfile] {
		f.add(CodeRenewalProfileChanged, "issued under "+quote(r.IssuedProfile))
	}
}

// checkExtensions applies the extension policy to the CSR's requested
// extensions: it returns the requested SAN and fills t's copied and dropped
// extensions.
func (e *Engine) checkExtensions(p *profile, csr *x509.CertificateRequest, fam keyFamily, t *Template, f *findings) ([]byte, bool) {
	var san []byte
	hasSAN := false
	for _, x := range csr.Extensions {
		switch {
		case x.Id.Equal(OIDSubjectAltName):
			san, hasSAN = x.Value, true
		case x.Id.Equal(OIDBasicConstraints):
			if isCA(x.Value) {
				f.add(CodeCARequested, "basicConstraints cA")
			}
		case x.Id.Equal(oidKeyUsage):
			ku, ok := parseKeyUsageExt(x.Value)
			switch {
			case !ok:
				f.add(CodeExtensionMalformed, "keyUsage")
			case fam != 0 && ku&^permittedUsage(fam) != 0:
				f.add(CodeKeyUsageInvalid, keyUsageString(ku&^permittedUsage(fam))+" for an "+familyName(fam)+" key")
			}
		case x.Id.Equal(oidExtKeyUsage):
			if !validOIDSequence(x.Value) {
				f.add(CodeExtensionMalformed, "extKeyUsage")
			}
		case x.Id.Equal(oidSubjectKeyID):
			// The CA computes its own.
		case containsOID(p.extCopy, x.Id):
			t.Extensions = append(t.Extensions, x)
		case x.Critical:
			f.add(CodeExtensionNotAllowed, "critical "+x.Id.String())
		case p.extDrop:
			t.Dropped = append(t.Dropped, x.Id)
		default:
			f.add(CodeExtensionNotAllowed, x.Id.String())
		}
	}
	return san, hasSAN
}

var oidSubjectKeyID = asn1.ObjectIdentifier{2, 5, 29, 14}

func containsOID(list []asn1.ObjectIdentifier, oid asn1.ObjectIdentifier) bool {
	for _, o := range list {
		if o.Equal(oid) {
			return true
		}
	}
	return false
}

func containsKeyType(list []*keyType, k *keyType) bool {
	for _, x := range list {
		if x == k {
			return true
		}
	}
	return false
}

// parseKeyUsageExt reads a keyUsage extension value (RFC 5280 §4.2.1.3).
func parseKeyUsageExt(v []byte) (x509.KeyUsage, bool) {
	s := cryptobyte.String(v)
	var bs asn1.BitString
	if !s.ReadASN1BitString(&bs) || !s.Empty() {
		return 0, false
	}
	var ku x509.KeyUsage
	for i := 0; i < 9; i++ {
		if bs.At(i) != 0 {
			ku |= 1 << i
		}
	}
	for i := 9; i < bs.BitLength; i++ {
		if bs.At(i) != 0 {
			return 0, false
		}
	}
	return ku, true
}

// validOIDSequence reports whether v is a non-empty SEQUENCE OF OBJECT IDENTIFIER.
func validOIDSequence(v []byte) bool {
	s := cryptobyte.String(v)
	var seq cryptobyte.String
	if !s.ReadASN1(&seq, cbasn1.SEQUENCE) || !s.Empty() || seq.Empty() {
		return false
	}
	for !seq.Empty() {
		var oid asn1.ObjectIdentifier
		if !seq.ReadASN1ObjectIdentifier(&oid) {
			return false
		}
	}
	return true
}

// sameKey reports whether the CSR's key is the certificate's. The DER of
// the same EC and Ed25519 keys is identical; RSA keys may differ in the
// encoding of absent parameters, so they are compared as keys.
func sameKey(c *x509.Certificate, csr *x509.CertificateRequest) bool {
	if bytes.Equal(c.RawSubjectPublicKeyInfo, csr.RawSubjectPublicKeyInfo) {
		return true
	}
	if _, ok := c.PublicKey.(*rsa.PublicKey); !ok {
		return false
	}
	k, ok := c.PublicKey.(interface{ Equal(crypto.PublicKey) bool })
	return ok && csr.PublicKey != nil && k.Equal(csr.PublicKey)
}
