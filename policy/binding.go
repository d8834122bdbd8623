package policy

import (
	"bytes"
	"errors"
	"net/netip"
	"net/url"
	"strconv"
	"strings"

	"github.com/estca/estca/policy/der"
	"golang.org/x/crypto/cryptobyte"
	cbasn1 "golang.org/x/crypto/cryptobyte/asn1"
)

// buildSubject checks the CSR's subject against the profile's template and
// the requester's identity, and returns the subject for the certificate, in
// template order: identity values copied from the identity, fixed and
// derived values from the profile, CSR values from the CSR. It returns nil
// when a rule is violated (the reasons are in f).
func (e *Engine) buildSubject(p *profile, csrSubject []byte, id *identity, f *findings) []byte {
	var buf [maxNameAttrs]nameAttr
	attrs, code, detail := parseName(csrSubject, buf[:0])
	if code != 0 {
		f.add(code, detail)
		return nil
	}
	ok := true
	fail := func(c Code, d string) { f.add(c, d); ok = false }
	var match [maxNameAttrs]*nameAttr // by template slot
	for i := range attrs {
		a := &attrs[i]
		slot := -1
		for j := range p.subject {
			if a.typ != nil && p.subject[j].typ == a.typ {
				slot = j
				break
			}
		}
		switch {
		case slot < 0:
			fail(CodeSubjectAttrNotAllowed, a.typeName())
			continue
		case match[slot] != nil:
			fail(CodeSubjectDuplicate, a.typ.name)
			continue
		}
		match[slot] = a
		checkValue(a.typ, a.tag, a.val, fail)
		if a.typ == attrCN && e.reserved.name(string(a.val)) {
			fail(CodeNameReserved, "CN "+quote(string(a.val)))
		}
	}
	if !ok {
		return nil
	}
	var atvs [maxNameAttrs][]byte
	n := 0
	for j := range p.subject {
		s := &p.subject[j]
		c := match[j]
		from := s.from
		if !id.present && (from == SourceIdentity || from == SourceDerived) {
			from = SourceCSR // the operator has no identity to bind to
		}
		var out []byte
		switch from {
		case SourceIdentity:
			iv := id.attr(s.typ)
			switch {
			case iv == nil && c != nil:
				fail(CodeSubjectNotBound, s.typ.name+" "+quote(c.String())+": the identity has none")
			case iv == nil && !s.optional:
				fail(CodeIdentityIncomplete, "the identity has no "+s.typ.name)
			case iv == nil:
			case !identityValueOK(s.typ, iv.tag, iv.val, f):
				ok = false
			case c != nil && !bytes.Equal(c.val, iv.val):
				fail(CodeSubjectNotBound, s.typ.name+" "+quote(c.String())+" is not the identity's "+quote(iv.String()))
			default:
				out = iv.raw
			}
		case SourceFixed:
			if c != nil && string(c.val) != s.fixed {
				fail(CodeSubjectValueNotAllowed, s.typ.name+" "+quote(c.String())+" must be "+quote(s.fixed))
			}
			out = s.fixedATV
		case SourceDerived:
			v, have := s.tmpl.expand(id)
			switch {
			case !have && c != nil:
				fail(CodeSubjectNotBound, s.typ.name+" "+quote(c.String())+": the identity lacks its value")
			case !have && !s.optional:
				fail(CodeIdentityIncomplete, "the identity lacks a value of derived "+s.typ.name)
			case !have:
			case !identityValueOK(s.typ, valueTag(s.typ), []byte(v), f):
				ok = false
			case c != nil && string(c.val) != v:
				fail(CodeSubjectNotBound, s.typ.name+" "+quote(c.String())+" is not "+quote(v))
			default:
				out = encodeATV(s.typ, v)
			}
		case SourceCSR:
			switch {
			case c == nil && !s.optional:
				fail(CodeSubjectAttrMissing, s.typ.name)
			case c == nil:
			case s.re != nil && !s.re.Match(c.val):
				fail(CodeSubjectValueNotAllowed, s.typ.name+" "+quote(c.String())+" does not match the profile's pattern")
			default:
				out = c.raw
			}
		}
		if out != nil {
			atvs[n] = out
			n++
		}
	}
	if !ok {
		return nil
	}
	return encodeName(atvs[:n])
}

// identityValueOK checks a value taken from the identity (or derived from
// it) as it would check a CSR's; problems are CodeIdentityValueInvalid.
func identityValueOK(t *attrType, tag cbasn1.Tag, val []byte, f *findings) bool {
	ok := true
	checkValue(t, tag, val, func(_ Code, d string) {
		f.add(CodeIdentityValueInvalid, d)
		ok = false
	})
	return ok
}

// derivedName is a SAN name the profile derives from the identity.
type derivedName struct {
	tag cbasn1.Tag
	val string
}

// buildSAN checks the CSR's SAN against the profile's SAN policy and the
// identity, and returns the SAN for the certificate: the identity's
// hardwareModuleName, the derived names, then the CSR's accepted names. It
// returns nil when there is none, and false when a rule is violated.
func (e *Engine) buildSAN(p *profile, csrSAN []byte, hasSAN bool, id *identity, f *findings) ([]byte, bool) {
	rules := &p.san
	var buf [16]sanEntry
	var entries []sanEntry
	if hasSAN {
		var code Code
		var detail string
		if entries, code, detail = parseSAN(csrSAN, buf[:0]); code != 0 {
			f.add(code, detail)
			return nil, false
		}
		if len(entries) > rules.max {
			f.add(CodeSANTooMany, strconv.Itoa(len(entries))+" entries, at most "+strconv.Itoa(rules.max))
			return nil, false
		}
	}
	ok := true
	fail := func(c Code, d string) { f.add(c, d); ok = false }

	var obuf [8][]byte
	out := obuf[:0]
	if rules.hmn == HardwareNameIdentity && id.present {
		out = append(out, id.hmnRaw...)
	}
	var derived []derivedName
	if id.present {
		for _, d := range [...]struct {
			r   *nameRules
			tag cbasn1.Tag
			ok  func(string) bool
		}{{&rules.dns, tagDNSP, validDNSName}, {&rules.uri, tagURIP, validURI}, {&rules.email, tagEmailP, validEmail}} {
			for _, tm := range d.r.derived {
				v, have := tm.expand(id)
				switch {
				case !have:
					fail(CodeIdentityIncomplete, "the identity lacks a value of a derived "+generalNameType(d.tag))
				case !d.ok(v):
					fail(CodeIdentityValueInvalid, "derived "+generalNameType(d.tag)+" "+quote(v))
				default:
					derived = append(derived, derivedName{d.tag, v})
					out = append(out, encodeGeneralName(d.tag, v))
				}
			}
		}
	}
	var nDNS, nIP, nURI, nEmail int
	for i := range entries {
		en := &entries[i]
		for j := 0; j < i; j++ {
			if bytes.Equal(entries[j].raw, en.raw) {
				fail(CodeSANDuplicate, generalNameType(en.tag))
			}
		}
		keep := true
		switch en.tag {
		case tagOtherNameC:
			keep = e.checkHMN(rules.hmn, en, id, fail)
		case tagDNSP:
			nDNS++
			keep = e.checkName(&rules.dns, en, nDNS, derived, validDNSName, fail)
		case tagURIP:
			nURI++
			keep = e.checkName(&rules.uri, en, nURI, derived, validURI, fail)
		case tagEmailP:
			nEmail++
			keep = e.checkName(&rules.email, en, nEmail, derived, validEmail, fail)
		case tagIPP:
			nIP++
			keep = e.checkIP(rules, en, nIP, fail)
		default:
			fail(CodeSANTypeNotAllowed, generalNameType(en.tag))
			keep = false
		}
		if keep {
			out = append(out, en.raw)
		}
	}
	if !ok {
		return nil, false
	}
	if len(out) == 0 {
		return nil, true
	}
	return encodeSequence(out), true
}

// checkHMN applies the hardwareModuleName mode to a CSR otherName; it
// reports whether to copy the entry (an identity's is already in).
func (e *Engine) checkHMN(mode HardwareNameMode, en *sanEntry, id *identity, fail func(Code, string)) bool {
	h, err := parseHardwareModuleName(cryptobyte.String(en.val))
	if err != nil {
		var pe *Error
		if errors.As(err, &pe) && pe.Reason == "otherName type not allowed" {
			fail(CodeSANTypeNotAllowed, "otherName other than hardwareModuleName")
		} else {
			fail(CodeSANMalformed, "hardwareModuleName")
		}
		return false
	}
	switch {
	case mode == HardwareNameForbid:
		fail(CodeSANTypeNotAllowed, "hardwareModuleName")
		return false
	case mode == HardwareNameCSR || !id.present:
		return true
	case id.hasHMN(h):
		return false
	}
	fail(CodeHardwareNameNotBound, "hardwareModuleName serial "+quote(string(h.SerialNum)))
	return false
}

// checkName applies a NamePolicy to a DNS, URI or email entry (the n-th of
// its type); it reports whether to copy it (a derived name is already in).
func (e *Engine) checkName(r *nameRules, en *sanEntry, n int, derived []derivedName, valid func(string) bool, fail func(Code, string)) bool {
	what := generalNameType(en.tag)
	if !r.on() {
		fail(CodeSANTypeNotAllowed, what)
		return false
	}
	s := string(en.val)
	if !valid(s) {
		fail(CodeSANInvalid, what+" "+quote(s))
		return false
	}
	if e.reservedSAN(en.tag, s) {
		fail(CodeNameReserved, what+" "+quote(s))
		return false
	}
	if r.max > 0 && n > r.max {
		fail(CodeSANTooMany, "more than "+strconv.Itoa(r.max)+" "+what)
		return false
	}
	for _, d := range derived {
		if d.tag == en.tag && equalName(r.fold, d.val, s) {
			return false
		}
	}
	key := s
	if r.fold {
		key = strings.ToLower(s)
	}
	if r.allow[key] {
		return true
	}
	for _, re := range r.res {
		if re.MatchString(s) {
			return true
		}
	}
	fail(CodeSANNotAllowed, what+" "+quote(s))
	return false
}

func equalName(fold bool, a, b string) bool {
	if fold {
		return strings.EqualFold(a, b)
	}
	return a == b
}

// reservedSAN reports whether a DNS name, or the host of a URI or email
// address, is reserved.
func (e *Engine) reservedSAN(tag cbasn1.Tag, s string) bool {
	switch tag {
	case tagDNSP:
		return e.reserved.name(s)
	case tagURIP:
		if u, err := url.Parse(s); err == nil {
			h := u.Hostname()
			if a, err := netip.ParseAddr(h); err == nil {
				return e.reserved.ips[a.Unmap()]
			}
			return e.reserved.name(h)
		}
	case tagEmailP:
		_, domain, _ := strings.Cut(s, "@")
		return e.reserved.name(domain)
	}
	return false
}

// checkIP applies the IP policy to an iPAddress entry (the n-th).
func (e *Engine) checkIP(r *sanRules, en *sanEntry, n int, fail func(Code, string)) bool {
	if len(r.ips) == 0 {
		fail(CodeSANTypeNotAllowed, "iPAddress")
		return false
	}
	a, valid := netip.AddrFromSlice(en.val)
	if !valid {
		fail(CodeSANInvalid, "iPAddress of "+strconv.Itoa(len(en.val))+" octets")
		return false
	}
	a = a.Unmap()
	if e.reserved.ips[a] {
		fail(CodeNameReserved, "iPAddress "+a.String())
		return false
	}
	if r.ipMax > 0 && n > r.ipMax {
		fail(CodeSANTooMany, "more than "+strconv.Itoa(r.ipMax)+" iPAddress")
		return false
	}
	for _, pfx := range r.ips {
		if pfx.Contains(a) {
			return true
		}
	}
	fail(CodeSANNotAllowed, "iPAddress "+a.String())
	return false
}

// encodeGeneralName encodes a dNSName, URI or rfc822Name.
func encodeGeneralName(tag cbasn1.Tag, v string) []byte {
	return append(der.AppendHeader(make([]byte, 0, der.HeaderLen(len(v))+len(v)), byte(tag), len(v)), v...)
}
