package policy

import "strconv"

// Class says who is at fault in a refusal, and so which response the EST
// front end sends (RFC 9148 §4.5). Exactly one table in the front end maps a
// Class to a CoAP code; the mapping below is the intended one.
type Class uint8

// Classes of reasons.
const (
	// ClassBadRequest: the CSR is wrong (4.00). The device can fix it.
	ClassBadRequest Class = iota + 1
	// ClassForbidden: the requester may not do this (4.03).
	ClassForbidden
	// ClassNotFound: the profile (path label) does not exist (4.04).
	ClassNotFound
	// ClassRetry: not now; retry after Decision.RetryAfter (5.03 + Max-Age).
	ClassRetry
	// ClassInternal: the caller passed an invalid Request (5.00); a bug in
	// the caller, never the device's fault.
	ClassInternal
)

// String returns the class name used in logs: "bad-request", "forbidden",
// "not-found", "retry", "internal".
func (c Class) String() string {
	switch c {
	case ClassBadRequest:
		return "bad-request"
	case ClassForbidden:
		return "forbidden"
	case ClassNotFound:
		return "not-found"
	case ClassRetry:
		return "retry"
	case ClassInternal:
		return "internal"
	}
	return "class(" + strconv.Itoa(int(c)) + ")"
}

// Code is the precise, stable reason of a refusal (or of a pending
// decision), recorded in the audit log. Its Text is the short fixed
// diagnostic the device may be sent; its Class selects the response code.
type Code uint16

// Reason codes. The names (Code.String) are part of the audit vocabulary:
// do not rename them.
const (
	_ Code = iota
	// CodeInvalidRequest: the caller passed an incomplete Request.
	CodeInvalidRequest
	// CodeProfileUnknown: no profile has this name.
	CodeProfileUnknown
	// CodeOperationNotAllowed: the profile does not offer this operation.
	CodeOperationNotAllowed
	// CodeRequesterNotAllowed: this kind of requester may not use the profile.
	CodeRequesterNotAllowed
	// CodeAnchorNotAllowed: this manufacturer's devices may not use the profile.
	CodeAnchorNotAllowed
	// CodeAnchorUnknown: the manufacturer anchor that authenticated the
	// requester is no longer configured (removed by a reload).
	CodeAnchorUnknown
	// CodeUntrusted: the chain leads to no configured trust anchor.
	CodeUntrusted
	// CodeCertExpired: the requester's certificate is expired (and no
	// expiry tolerance or renewal grace applies).
	CodeCertExpired
	// CodeCertNotYetValid: the requester's certificate is not yet valid.
	CodeCertNotYetValid
	// CodeCertDenied: the requester's certificate is deny-listed.
	CodeCertDenied
	// CodeCertNotAllowed: the anchor has an allow-list and the certificate is not on it.
	CodeCertNotAllowed
	// CodeCertRevoked: the requester's certificate (or one above it) is
	// revoked: on a manufacturer CRL, or in this CA's store.
	CodeCertRevoked
	// CodeCRLStale: an expired IDevID was presented and its anchor's CRL is
	// past its nextUpdate, so its revocation status is unknown.
	CodeCRLStale
	// CodeNotClientCert: the certificate may not authenticate a client.
	CodeNotClientCert
	// CodeIssuingCAInvalid: this CA's own chain is outside its validity.
	CodeIssuingCAInvalid
	// CodeRenewalNeedsOperational: /sren without an operational certificate.
	CodeRenewalNeedsOperational
	// CodeRenewalProfileChanged: an operational certificate renewed under a
	// profile that does not accept renewals from its profile.
	CodeRenewalProfileChanged
	// CodeIdentityIncomplete: the profile binds a value the requester's
	// identity does not have.
	CodeIdentityIncomplete
	// CodeIdentityValueInvalid: a value of the requester's identity cannot
	// be placed in a certificate (bad string type, characters, length).
	CodeIdentityValueInvalid
	// CodeSubjectNotBound: a subject attribute differs from the identity's.
	CodeSubjectNotBound
	// CodeHardwareNameNotBound: a hardwareModuleName differs from the identity's.
	CodeHardwareNameNotBound
	// CodeNameReserved: the CSR claims a name reserved for the CA or the server.
	CodeNameReserved
	// CodeCSRMalformed: the CSR does not parse.
	CodeCSRMalformed
	// CodeCSRVersion: the CSR version is not v1 (0) (RFC 2986 §4.1).
	CodeCSRVersion
	// CodeCSRSignatureWeak: the CSR is signed with MD2, MD5 or SHA-1.
	CodeCSRSignatureWeak
	// CodeCSRSignatureUnsupported: the CSR signature algorithm is not accepted.
	CodeCSRSignatureUnsupported
	// CodeCSRSignatureInvalid: the CSR signature does not verify.
	CodeCSRSignatureInvalid
	// CodeKeyTypeNotAllowed: the CSR key type is not accepted by the profile.
	CodeKeyTypeNotAllowed
	// CodeKeyWeak: the CSR key is too weak (RSA < 2048, P-224, small exponent).
	CodeKeyWeak
	// CodeKeyReuse: the CSR reuses the key of the requester's certificate
	// and the profile forbids it.
	CodeKeyReuse
	// CodeSubjectMalformed: the subject Name does not parse.
	CodeSubjectMalformed
	// CodeSubjectEmptyRDN: a RelativeDistinguishedName is empty.
	CodeSubjectEmptyRDN
	// CodeSubjectMultiValuedRDN: a RelativeDistinguishedName has several values.
	CodeSubjectMultiValuedRDN
	// CodeSubjectDuplicate: an attribute type occurs twice in the subject.
	CodeSubjectDuplicate
	// CodeSubjectAttrNotAllowed: the profile does not allow this attribute.
	CodeSubjectAttrNotAllowed
	// CodeSubjectAttrMissing: a required attribute is absent.
	CodeSubjectAttrMissing
	// CodeSubjectEncoding: a value is not PrintableString or UTF8String, or
	// not PrintableString where RFC 5280 requires it.
	CodeSubjectEncoding
	// CodeSubjectCharacters: a value holds control, bidi or invalid characters.
	CodeSubjectCharacters
	// CodeSubjectTooLong: a value exceeds its RFC 5280 upper bound.
	CodeSubjectTooLong
	// CodeSubjectValueNotAllowed: a value differs from the profile's fixed or
	// derived value, or does not match its pattern.
	CodeSubjectValueNotAllowed
	// CodeNoName: the certificate would have neither subject nor SAN.
	CodeNoName
	// CodeSANMalformed: the SubjectAltName extension does not parse.
	CodeSANMalformed
	// CodeSANTypeNotAllowed: a GeneralName type the profile does not allow.
	CodeSANTypeNotAllowed
	// CodeSANNotAllowed: a SAN value not on the profile's lists or patterns.
	CodeSANNotAllowed
	// CodeSANTooMany: more SAN entries than the profile allows.
	CodeSANTooMany
	// CodeSANDuplicate: the same SAN entry twice.
	CodeSANDuplicate
	// CodeSANInvalid: a SAN value with invalid syntax.
	CodeSANInvalid
	// CodeExtensionNotAllowed: a requested extension the profile rejects.
	CodeExtensionNotAllowed
	// CodeExtensionMalformed: a requested extension does not parse.
	CodeExtensionMalformed
	// CodeCARequested: basicConstraints cA=TRUE requested.
	CodeCARequested
	// CodeKeyUsageInvalid: a requested key usage impossible for the key type
	// (keyAgreement for RSA or Ed25519, keyEncipherment for ECDSA, …).
	CodeKeyUsageInvalid
	// CodeRenewalNameChanged: a renewal CSR's subject or SAN differs from the
	// certificate being renewed (RFC 7030 §4.2.2).
	CodeRenewalNameChanged
	// CodePendingApproval: the request waits for an operator.
	CodePendingApproval
	// CodeOperatorRejected: an operator denied this request.
	CodeOperatorRejected
	// CodeRateLimited: the identity has had its quota of certificates in the window.
	CodeRateLimited
	// CodeTooManyPending: the identity has too many requests waiting for approval.
	CodeTooManyPending
	// CodeKeyEncryptionRequired: a server-side key generation request
	// (OpSkg, OpSkc) that does not ask for the key encrypted, on a profile
	// that requires it (Profile.RequireEncryptedKeys).
	CodeKeyEncryptionRequired
	// CodeCertUnknown: an operational certificate of this CA whose serial
	// the caller's store does not hold (Requester.Unknown): issued after
	// the backup a loss-accepting restore put back, or cut from the store.
	// Its profile and renewal history are unknown, so it is not served.
	CodeCertUnknown

	numCodes
)

type codeInfo struct {
	name  string
	class Class
	text  string
}

// codeTable gives every code its audit name, class and client text. The
// texts are short, fixed and never carry request data.
var codeTable = [numCodes]codeInfo{
	CodeInvalidRequest:          {"invalid-request", ClassInternal, "internal error"},
	CodeProfileUnknown:          {"profile-unknown", ClassNotFound, "unknown profile"},
	CodeOperationNotAllowed:     {"operation-not-allowed", ClassForbidden, "operation not allowed for this profile"},
	CodeRequesterNotAllowed:     {"requester-not-allowed", ClassForbidden, "requester not allowed for this profile"},
	CodeAnchorNotAllowed:        {"anchor-not-allowed", ClassForbidden, "manufacturer not allowed for this profile"},
	CodeAnchorUnknown:           {"anchor-unknown", ClassForbidden, "manufacturer no longer trusted"},
	CodeUntrusted:               {"untrusted", ClassForbidden, "unknown certificate issuer"},
	CodeCertExpired:             {"cert-expired", ClassForbidden, "certificate expired"},
	CodeCertNotYetValid:         {"cert-not-yet-valid", ClassForbidden, "certificate not yet valid"},
	CodeCertDenied:              {"cert-denied", ClassForbidden, "certificate is deny-listed"},
	CodeCertNotAllowed:          {"cert-not-allowed", ClassForbidden, "certificate not on allow-list"},
	CodeCertRevoked:             {"cert-revoked", ClassForbidden, "certificate revoked"},
	CodeCRLStale:                {"crl-stale", ClassForbidden, "revocation status unknown"},
	CodeNotClientCert:           {"not-client-cert", ClassForbidden, "certificate not for client authentication"},
	CodeIssuingCAInvalid:        {"issuing-ca-invalid", ClassForbidden, "issuing CA outside validity"},
	CodeRenewalNeedsOperational: {"renewal-needs-operational", ClassForbidden, "re-enrollment needs an operational certificate"},
	CodeRenewalProfileChanged:   {"renewal-profile-changed", ClassForbidden, "renewal under another profile not allowed"},
	CodeIdentityIncomplete:      {"identity-incomplete", ClassForbidden, "identity lacks a required value"},
	CodeIdentityValueInvalid:    {"identity-value-invalid", ClassForbidden, "identity value unusable"},
	CodeSubjectNotBound:         {"subject-not-bound", ClassForbidden, "subject does not match your identity"},
	CodeHardwareNameNotBound:    {"hardware-name-not-bound", ClassForbidden, "hardware module name does not match your identity"},
	CodeNameReserved:            {"name-reserved", ClassForbidden, "name reserved"},
	CodeCSRMalformed:            {"csr-malformed", ClassBadRequest, "malformed CSR"},
	CodeCSRVersion:              {"csr-version", ClassBadRequest, "unsupported CSR version"},
	CodeCSRSignatureWeak:        {"csr-signature-weak", ClassBadRequest, "weak CSR signature algorithm"},
	CodeCSRSignatureUnsupported: {"csr-signature-unsupported", ClassBadRequest, "unsupported CSR signature algorithm"},
	CodeCSRSignatureInvalid:     {"csr-signature-invalid", ClassBadRequest, "bad CSR signature"},
	CodeKeyTypeNotAllowed:       {"key-type-not-allowed", ClassBadRequest, "key type not allowed"},
	CodeKeyWeak:                 {"key-weak", ClassBadRequest, "key too weak"},
	CodeKeyReuse:                {"key-reuse", ClassBadRequest, "key reuse not allowed"},
	CodeSubjectMalformed:        {"subject-malformed", ClassBadRequest, "malformed subject"},
	CodeSubjectEmptyRDN:         {"subject-empty-rdn", ClassBadRequest, "empty subject RDN"},
	CodeSubjectMultiValuedRDN:   {"subject-multivalued-rdn", ClassBadRequest, "multi-valued subject RDN"},
	CodeSubjectDuplicate:        {"subject-duplicate", ClassBadRequest, "duplicate subject attribute"},
	CodeSubjectAttrNotAllowed:   {"subject-attr-not-allowed", ClassBadRequest, "subject attribute not allowed"},
	CodeSubjectAttrMissing:      {"subject-attr-missing", ClassBadRequest, "required subject attribute missing"},
	CodeSubjectEncoding:         {"subject-encoding", ClassBadRequest, "subject string type not allowed"},
	CodeSubjectCharacters:       {"subject-characters", ClassBadRequest, "invalid characters in subject"},
	CodeSubjectTooLong:          {"subject-too-long", ClassBadRequest, "subject value too long"},
	CodeSubjectValueNotAllowed:  {"subject-value-not-allowed", ClassBadRequest, "subject value not allowed"},
	CodeNoName:                  {"no-name", ClassBadRequest, "certificate would have no name"},
	CodeSANMalformed:            {"san-malformed", ClassBadRequest, "malformed SAN"},
	CodeSANTypeNotAllowed:       {"san-type-not-allowed", ClassBadRequest, "SAN type not allowed"},
	CodeSANNotAllowed:           {"san-not-allowed", ClassBadRequest, "SAN value not allowed"},
	CodeSANTooMany:              {"san-too-many", ClassBadRequest, "too many SAN entries"},
	CodeSANDuplicate:            {"san-duplicate", ClassBadRequest, "duplicate SAN entry"},
	CodeSANInvalid:              {"san-invalid", ClassBadRequest, "invalid SAN value"},
	CodeExtensionNotAllowed:     {"extension-not-allowed", ClassBadRequest, "extension not allowed"},
	CodeExtensionMalformed:      {"extension-malformed", ClassBadRequest, "malformed extension"},
	CodeCARequested:             {"ca-requested", ClassBadRequest, "CA certificate requested"},
	CodeKeyUsageInvalid:         {"key-usage-invalid", ClassBadRequest, "key usage invalid for key type"},
	CodeRenewalNameChanged:      {"renewal-name-changed", ClassBadRequest, "subject or SAN differs from current certificate"},
	CodePendingApproval:         {"pending-approval", ClassRetry, "waiting for approval"},
	CodeOperatorRejected:        {"operator-rejected", ClassForbidden, "request denied by operator"},
	CodeRateLimited:             {"rate-limited", ClassRetry, "rate limit reached, retry later"},
	CodeTooManyPending:          {"too-many-pending", ClassRetry, "too many pending requests"},
	CodeKeyEncryptionRequired:   {"key-encryption-required", ClassBadRequest, "encrypted key delivery required"},
	CodeCertUnknown:             {"cert-unknown", ClassForbidden, "certificate unknown to this CA"},
}

func (c Code) info() codeInfo {
	if c == 0 || c >= numCodes {
		return codeInfo{"code(" + strconv.Itoa(int(c)) + ")", ClassInternal, "internal error"}
	}
	return codeTable[c]
}

// String returns the code's stable audit name, e.g. "subject-not-bound".
func (c Code) String() string { return c.info().name }

// Class returns who is at fault.
func (c Code) Class() Class { return c.info().class }

// Text returns the short, fixed diagnostic that is safe to send to the device.
func (c Code) Text() string { return c.info().text }

// Codes returns every reason code, for documentation and tests.
func Codes() []Code {
	out := make([]Code, 0, numCodes-1)
	for c := Code(1); c < numCodes; c++ {
		out = append(out, c)
	}
	return out
}

// Reason is one finding of a decision.
type Reason struct {
	// Code is the precise reason; Code.Text is what the device is told.
	Code Code
	// Detail says what exactly was found, for the audit record and `estca
	// policy check`; values from the request are quoted and truncated. It is
	// never sent to the device.
	Detail string
}

// Class returns the reason's class.
func (r Reason) Class() Class { return r.Code.Class() }

// Text returns the client-safe diagnostic.
func (r Reason) Text() string { return r.Code.Text() }

// String returns "code: detail" for logs.
func (r Reason) String() string {
	if r.Detail == "" {
		return r.Code.String()
	}
	return r.Code.String() + ": " + r.Detail
}

// maxDetail bounds the request data quoted in a Reason.Detail.
const maxDetail = 48

// quote renders untrusted text for a Detail: Go-quoted (control and
// non-printable characters escaped) and truncated.
func quote(s string) string { return quoteN(s, maxDetail) }

// quoteN is quote with a bound of max bytes.
func quoteN(s string, max int) string {
	n := len(s)
	if n > max {
		s = s[:max]
	}
	q := strconv.QuoteToASCII(s)
	if n > max {
		q += "…(" + strconv.Itoa(n) + " bytes)"
	}
	return q
}
