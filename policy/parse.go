package policy

import "crypto/x509"

// MaxCSRSize bounds the CSRs ParseCSR reads (a P-384 CSR with a few names is
// under 1 KiB; RSA-4096 with extensions stays under 4 KiB).
const MaxCSRSize = 16 << 10

// ParseCSR parses a DER PKCS #10 request (RFC 2986) and checks what must be
// checked before trusting its content: size, version (0) and, unless op
// generates the key in the server (RFC 9148 §4.8: the CSR's key and
// signature are then ignored), the signature algorithm (no MD2, MD5 or
// SHA-1) and the signature itself (proof of possession). Errors are *Error with a Code and
// ErrRejected.
func ParseCSR(der []byte, op Operation) (*x509.CertificateRequest, error) {
	if len(der) > MaxCSRSize {
		return nil, reasonError(CodeCSRMalformed)
	}
	csr, err := x509.ParseCertificateRequest(der)
	if err != nil {
		return nil, &Error{Reason: CodeCSRMalformed.Text(), Code: CodeCSRMalformed, Err: joinRejected(err)}
	}
	if csr.Version != 0 {
		return nil, reasonError(CodeCSRVersion)
	}
	if op.serverKeygen() {
		return csr, nil
	}
	if code, _ := checkSignatureAlgorithm(csr.SignatureAlgorithm); code != 0 {
		return nil, reasonError(code)
	}
	if err := csr.CheckSignature(); err != nil {
		return nil, &Error{Reason: CodeCSRSignatureInvalid.Text(), Code: CodeCSRSignatureInvalid, Err: joinRejected(err)}
	}
	return csr, nil
}

func reasonError(c Code) *Error { return &Error{Reason: c.Text(), Code: c, Err: ErrRejected} }
