package policy

import (
	"encoding/asn1"
	"math/big"

	"golang.org/x/crypto/cryptobyte"
	cbasn1 "golang.org/x/crypto/cryptobyte/asn1"
)

// Object identifiers of the CSR attributes response (RFC 7030 §4.5.2, RFC
// 9908). The two RFC 9908 attributes are in the S/MIME attribute arc as
// assigned by IANA for RFC 9908.
var (
	// OIDCertificationRequestInfoTemplate is id-aa-certificationRequestInfoTemplate.
	OIDCertificationRequestInfoTemplate = asn1.ObjectIdentifier{1, 2, 840, 113549, 1, 9, 16, 2, 61}
	// OIDExtensionReqTemplate is id-aa-extensionReqTemplate.
	OIDExtensionReqTemplate = asn1.ObjectIdentifier{1, 2, 840, 113549, 1, 9, 16, 2, 62}
	// OIDExtensionRequest is PKCS #9 extensionRequest (id-ExtensionReq).
	OIDExtensionRequest = asn1.ObjectIdentifier{1, 2, 840, 113549, 1, 9, 14}

	oidECPublicKey   = asn1.ObjectIdentifier{1, 2, 840, 10045, 2, 1}
	oidRSAEncryption = asn1.ObjectIdentifier{1, 2, 840, 113549, 1, 1, 1}
	oidEd25519       = asn1.ObjectIdentifier{1, 3, 101, 112}
	oidP256          = asn1.ObjectIdentifier{1, 2, 840, 10045, 3, 1, 7}
	oidP384          = asn1.ObjectIdentifier{1, 3, 132, 0, 34}
	oidP521          = asn1.ObjectIdentifier{1, 3, 132, 0, 35}
	oidECDSASHA256   = asn1.ObjectIdentifier{1, 2, 840, 10045, 4, 3, 2}
	oidECDSASHA384   = asn1.ObjectIdentifier{1, 2, 840, 10045, 4, 3, 3}
	oidECDSASHA512   = asn1.ObjectIdentifier{1, 2, 840, 10045, 4, 3, 4}
	oidSHA256RSA     = asn1.ObjectIdentifier{1, 2, 840, 113549, 1, 1, 11}
)

// CSRAttrs returns the DER CsrAttrs (RFC 7030 §4.5.2) that /att answers to
// requester for the profile label: what to put in the CSR so that Evaluate
// accepts it.
//
// The first element is an RFC 9908 CertificationRequestInfoTemplate: the
// subject with the values the profile binds (identity, fixed and derived
// values filled in, CSR-chosen attributes as types without value), the key
// type (the profile's first), and the SAN (its value in an extensionRequest
// when the profile determines it entirely, else an extensionReqTemplate
// SAN without value for the client to fill). A renewing operational
// requester is told its current subject and SAN, which RFC 7030 §4.2.2
// requires unchanged. For clients of RFC 7030 alone there follow the
// signature algorithm OID, the ecPublicKey attribute with its curve, the
// determined SAN as an extensionRequest, and the profile's CSRAttrs OIDs.
// An unknown label is an *Error with CodeProfileUnknown.
func (e *Engine) CSRAttrs(label string, r Requester) ([]byte, error) {
	p := e.profile(label)
	if p == nil {
		return nil, &Error{Reason: CodeProfileUnknown.Text(), Code: CodeProfileUnknown, Err: ErrUnknownProfile}
	}
	var nbuf [maxNameAttrs]nameAttr
	var id identity
	renewal := false
	if r.Kind != KindOperator && len(r.Chain) > 0 && r.Chain[0] != nil {
		id = newIdentity(r.Chain[0], nbuf[:0])
		renewal = r.Kind == KindOperational
	}
	subject := e.subjectTemplate(p, &id, renewal)
	san, determined := e.sanTemplate(p, &id, renewal)
	var kt *keyType
	if len(p.keyTypes) > 0 {
		kt = p.keyTypes[0]
	}

	var b cryptobyte.Builder
	b.AddASN1(cbasn1.SEQUENCE, func(b *cryptobyte.Builder) {
		addAttribute(b, OIDCertificationRequestInfoTemplate, func(b *cryptobyte.Builder) {
			b.AddASN1(cbasn1.SEQUENCE, func(b *cryptobyte.Builder) {
				b.AddASN1Int64(0)
				if subject != nil {
					b.AddBytes(subject)
				}
				if kt != nil {
					b.AddASN1(cbasn1.Tag(0).ContextSpecific().Constructed(), func(b *cryptobyte.Builder) {
						addSPKITemplate(b, kt)
					})
				}
				b.AddASN1(cbasn1.Tag(1).ContextSpecific().Constructed(), func(b *cryptobyte.Builder) {
					switch {
					case san != nil && determined:
						addExtensionRequest(b, OIDExtensionRequest, san)
					case san != nil:
						addExtensionRequest(b, OIDExtensionReqTemplate, nil)
					}
				})
			})
		})
		if kt != nil {
			b.AddASN1ObjectIdentifier(kt.sigOID)
			if kt.family == famECDSA {
				addAttribute(b, oidECPublicKey, func(b *cryptobyte.Builder) { b.AddASN1ObjectIdentifier(kt.curveOID) })
			}
		}
		if san != nil && determined {
			b.AddBytes(attributeExtensionRequest(san))
		}
		for _, oid := range p.csrAttrs {
			b.AddASN1ObjectIdentifier(oid)
		}
	})
	return b.Bytes()
}

// subjectTemplate is the NameTemplate for the profile, or nil when the
// profile places no requirement on the subject.
func (e *Engine) subjectTemplate(p *profile, id *identity, renewal bool) []byte {
	if renewal {
		// A SingleAttributeTemplate with its value is an AttributeTypeAndValue:
		// the current subject is its own template.
		return id.leaf.RawSubject
	}
	var parts [maxNameAttrs][]byte
	n := 0
	for i := range p.subject {
		s := &p.subject[i]
		from := s.from
		if !id.present && (from == SourceIdentity || from == SourceDerived) {
			from = SourceCSR
		}
		var part []byte
		switch from {
		case SourceIdentity:
			if iv := id.attr(s.typ); iv != nil {
				part = iv.raw
			}
		case SourceFixed:
			part = s.fixedATV
		case SourceDerived:
			if v, ok := s.tmpl.expand(id); ok {
				part = encodeATV(s.typ, v)
			}
		case SourceCSR:
			if !s.optional {
				var b cryptobyte.Builder
				b.AddASN1(cbasn1.SEQUENCE, func(b *cryptobyte.Builder) { b.AddASN1ObjectIdentifier(s.typ.oid) })
				part = b.BytesOrPanic()
			}
		}
		if part != nil {
			parts[n] = part
			n++
		}
	}
	if n == 0 {
		return nil
	}
	return encodeName(parts[:n])
}

// sanTemplate returns the SAN the certificate will carry as far as the
// profile determines it, and whether it determines it entirely (the client
// may add no name of its choice).
func (e *Engine) sanTemplate(p *profile, id *identity, renewal bool) ([]byte, bool) {
	if renewal {
		v, _ := extValue(id.leaf.Extensions, OIDSubjectAltName)
		return v, true
	}
	r := &p.san
	var out [][]byte
	if r.hmn == HardwareNameIdentity && id.present {
		out = append(out, id.hmnRaw...)
	}
	if id.present {
		for _, d := range [...]struct {
			r   *nameRules
			tag cbasn1.Tag
		}{{&r.dns, tagDNSP}, {&r.uri, tagURIP}, {&r.email, tagEmailP}} {
			for _, tm := range d.r.derived {
				if v, ok := tm.expand(id); ok {
					out = append(out, encodeGeneralName(d.tag, v))
				}
			}
		}
	}
	chosen := r.dns.allow != nil || r.dns.res != nil || r.uri.allow != nil || r.uri.res != nil ||
		r.email.allow != nil || r.email.res != nil || len(r.ips) > 0 ||
		(r.hmn != HardwareNameForbid && !id.present)
	if len(out) == 0 {
		if chosen {
			return []byte{}, false
		}
		return nil, true
	}
	var b cryptobyte.Builder
	b.AddASN1(cbasn1.SEQUENCE, func(b *cryptobyte.Builder) {
		for _, o := range out {
			b.AddBytes(o)
		}
	})
	return b.BytesOrPanic(), !chosen
}

// addAttribute adds Attribute ::= SEQUENCE { type, values SET { value } }.
func addAttribute(b *cryptobyte.Builder, oid asn1.ObjectIdentifier, value func(*cryptobyte.Builder)) {
	b.AddASN1(cbasn1.SEQUENCE, func(b *cryptobyte.Builder) {
		b.AddASN1ObjectIdentifier(oid)
		b.AddASN1(cbasn1.SET, value)
	})
}

// addExtensionRequest adds an extensionRequest (san not nil) or an
// extensionReqTemplate whose subjectAltName has no value (san nil).
func addExtensionRequest(b *cryptobyte.Builder, oid asn1.ObjectIdentifier, san []byte) {
	addAttribute(b, oid, func(b *cryptobyte.Builder) {
		b.AddASN1(cbasn1.SEQUENCE, func(b *cryptobyte.Builder) {
			b.AddASN1(cbasn1.SEQUENCE, func(b *cryptobyte.Builder) {
				b.AddASN1ObjectIdentifier(OIDSubjectAltName)
				if san != nil {
					b.AddASN1OctetString(san)
				}
			})
		})
	})
}

func attributeExtensionRequest(san []byte) []byte {
	var b cryptobyte.Builder
	addExtensionRequest(&b, OIDExtensionRequest, san)
	return b.BytesOrPanic()
}

// addSPKITemplate adds the contents of a SubjectPublicKeyInfoTemplate:
// the algorithm and, for RSA, a dummy key of the required modulus size
// (RFC 9908).
func addSPKITemplate(b *cryptobyte.Builder, kt *keyType) {
	b.AddASN1(cbasn1.SEQUENCE, func(b *cryptobyte.Builder) {
		switch kt.family {
		case famECDSA:
			b.AddASN1ObjectIdentifier(oidECPublicKey)
			b.AddASN1ObjectIdentifier(kt.curveOID)
		case famRSA:
			b.AddASN1ObjectIdentifier(oidRSAEncryption)
			b.AddASN1NULL()
		default:
			b.AddASN1ObjectIdentifier(oidEd25519)
		}
	})
	if kt.family == famRSA {
		n := new(big.Int).Lsh(big.NewInt(1), uint(kt.bits-1))
		n.Add(n, big.NewInt(1))
		var k cryptobyte.Builder
		k.AddASN1(cbasn1.SEQUENCE, func(k *cryptobyte.Builder) {
			k.AddASN1BigInt(n)
			k.AddASN1Int64(rsaMinExponent)
		})
		b.AddASN1BitString(k.BytesOrPanic())
	}
}
