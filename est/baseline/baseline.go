package baseline

import (
	"context"
	"crypto/sha256"
	"crypto/x509"
	"encoding/hex"
	"errors"

	"github.com/estca/estca/ca"
	"github.com/estca/estca/store"
)

// emptyCSRAttrs is the DER of an empty CsrAttrs SEQUENCE (RFC 7030 §4.5.2).
var emptyCSRAttrs = []byte{0x30, 0x00}

// Authority is the est server's authority of the baseline: it checks what a
// minimal server checks (the client chain, the CSR's signature) and does no
// CA work. It implements est.Authority.
type Authority struct {
	verify x509.VerifyOptions
	ca     *x509.Certificate
	answer *x509.Certificate
}

// New returns the Authority of p: client chains must verify to p.CA, and
// every enrollment is answered with p.Answer.
func New(p *PKI) *Authority {
	roots := x509.NewCertPool()
	roots.AddCert(p.CA)
	return &Authority{
		verify: x509.VerifyOptions{Roots: roots, KeyUsages: []x509.ExtKeyUsage{x509.ExtKeyUsageAny}},
		ca:     p.CA,
		answer: p.Answer,
	}
}

// Authenticate verifies chain (leaf first) to the CA, as a DTLS server
// that requires client certificates from one trust anchor does.
func (a *Authority) Authenticate(chain []*x509.Certificate) (ca.Requester, error) {
	if len(chain) == 0 {
		return ca.Requester{}, &ca.Error{Kind: ca.KindUnauthenticated, Reason: "no client certificate"}
	}
	o := a.verify
	if len(chain) > 1 {
		o.Intermediates = x509.NewCertPool()
		for _, c := range chain[1:] {
			o.Intermediates.AddCert(c)
		}
	}
	verified, err := chain[0].Verify(o)
	if err != nil {
		return ca.Requester{}, &ca.Error{Kind: ca.KindUnauthenticated, Reason: "certificate not trusted", Err: err}
	}
	sum := sha256.Sum256(chain[0].Raw)
	return ca.Requester{
		Identity: store.Identity{Fingerprint: hex.EncodeToString(sum[:]), Subject: chain[0].Subject.String(), Kind: string(ca.KindIDevID)},
		Kind:     ca.KindIDevID,
		Leaf:     chain[0],
		Chain:    verified[0],
	}, nil
}

// Check admits every authenticated requester.
func (a *Authority) Check(ca.Requester) error { return nil }

// CACertificates returns the CA.
func (a *Authority) CACertificates(string) ([]*x509.Certificate, error) {
	return []*x509.Certificate{a.ca}, nil
}

// Enroll parses the CSR and checks its signature, then answers the fixed
// certificate.
func (a *Authority) Enroll(ctx context.Context, req ca.Request) (*ca.Result, error) {
	if err := ctx.Err(); err != nil {
		return nil, &ca.Error{Kind: ca.KindUnavailable, Reason: "request cancelled", Err: err}
	}
	csr, err := x509.ParseCertificateRequest(req.CSR)
	if err != nil {
		return nil, &ca.Error{Kind: ca.KindBadRequest, Reason: "malformed CSR", Err: err}
	}
	if err := csr.CheckSignature(); err != nil {
		return nil, &ca.Error{Kind: ca.KindBadRequest, Reason: "bad CSR signature", Err: err}
	}
	return &ca.Result{Certificate: a.answer, Serial: a.answer.SerialNumber.Text(16), Chain: []*x509.Certificate{a.ca}}, nil
}

// CSRAttributes answers an empty attribute set.
func (a *Authority) CSRAttributes(string, ca.Requester) ([]byte, error) {
	return emptyCSRAttrs, nil
}

// ErrNoCRL is the cause of the 4.04 the baseline answers for its CRL.
var ErrNoCRL = errors.New("baseline: no CRL")

// CRL is not served.
func (a *Authority) CRL() (*ca.CRL, error) {
	return nil, &ca.Error{Kind: ca.KindNotFound, Reason: "no CRL", Err: ErrNoCRL}
}

// HasProfile knows no profile labels.
func (a *Authority) HasProfile(string) bool { return false }

// RecordRejection records nothing.
func (a *Authority) RecordRejection(ca.Rejection) error { return nil }
