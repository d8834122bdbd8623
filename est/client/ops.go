package client

import (
	"bytes"
	"context"
	"crypto/x509"
	"fmt"
	"slices"

	"github.com/plgd-dev/go-coap/v3/message"
	"github.com/plgd-dev/go-coap/v3/message/codes"

	"github.com/estca/estca/est/wire"
)

// DiscoveryQuery is the query of EST-coaps discovery (RFC 9148 §4.1).
const DiscoveryQuery = "rt=ace.est*"

// Discover asks the server which EST-coaps resources it offers
// (GET /.well-known/core?rt=ace.est*, RFC 9148 §4.1) and returns the parsed
// RFC 6690 links and the raw link-format payload.
func (c *Conn) Discover(ctx context.Context) ([]wire.Link, []byte, error) {
	resp, err := c.do(ctx, "discovery", &request{
		method: codes.GET, path: "/.well-known/core", query: []string{DiscoveryQuery},
	})
	if err != nil {
		return nil, nil, err
	}
	if resp.hasFormat && resp.format != message.AppLinkFormat {
		return nil, resp.payload, fmt.Errorf("%w: discovery answered Content-Format %d, want 40", ErrBadResponse, resp.format)
	}
	links, err := wire.ParseLinks(resp.payload)
	if err != nil {
		return nil, resp.payload, fmt.Errorf("client: discovery: %w", err)
	}
	return links, resp.payload, nil
}

// checkCertAccept validates an Accept value for a certificate response:
// 0 (none: the server answers 281), 281 or 287.
func checkCertAccept(accept message.MediaType) error {
	switch accept {
	case 0, wire.FormatCertsOnly, wire.FormatPKIXCert:
		return nil
	}
	return fmt.Errorf("client: Accept %d is not a certificate format (281 or 287)", accept)
}

// certRequest fills the Accept of a certificate request.
func certRequest(r *request, accept message.MediaType) *request {
	if accept != 0 {
		r.accept, r.hasAccept = accept, true
	}
	return r
}

// parseCertResponse decodes a 281 or 287 response (a missing Content-Format
// is taken as the requested one, or 281).
func parseCertResponse(what string, resp *response, accept message.MediaType) ([]*x509.Certificate, error) {
	format := wire.FormatCertsOnly
	if accept != 0 {
		format = accept
	}
	if resp.hasFormat {
		if resp.format != format {
			return nil, fmt.Errorf("%w: %s answered Content-Format %d, asked %d", ErrBadResponse, what, resp.format, format)
		}
	}
	switch format {
	case wire.FormatPKIXCert:
		cert, err := x509.ParseCertificate(resp.payload)
		if err != nil {
			return nil, fmt.Errorf("%w: %s: pkix-cert: %w", wire.ErrMalformedPayload, what, err)
		}
		return []*x509.Certificate{cert}, nil
	default:
		certs, err := wire.ParseCertsOnly(resp.payload)
		if err != nil {
			return nil, fmt.Errorf("client: %s: %w", what, err)
		}
		if len(certs) == 0 {
			return nil, fmt.Errorf("%w: %s: certs-only without certificates", ErrBadResponse, what)
		}
		return certs, nil
	}
}

// CACerts fetches the CA certificates (GET /crts, RFC 9148 §4.1, RFC 7030
// §4.1). accept is 0 (server default, 281), wire.FormatCertsOnly or wire.FormatPKIXCert
// (the issuing CA certificate only). It returns the certificates in payload
// order and the raw payload. The certificates are not trust anchors by
// themselves: see UpdateTrust.
func (c *Conn) CACerts(ctx context.Context, accept message.MediaType) ([]*x509.Certificate, []byte, error) {
	if err := checkCertAccept(accept); err != nil {
		return nil, nil, err
	}
	resp, err := c.do(ctx, wire.ResourceCrts, certRequest(&request{method: codes.GET, path: c.path(wire.ResourceCrts)}, accept))
	if err != nil {
		return nil, nil, err
	}
	certs, err := parseCertResponse(wire.ResourceCrts, resp, accept)
	return certs, resp.payload, err
}

// Enroll requests a certificate for csrDER (POST /sen with Content-Format 286,
// RFC 9148 §4.2, RFC 7030 §4.2.1). A 5.03 with Max-Age (manual approval) is
// retried with the identical CSR per Options (RFC 9148 §4.7). accept is
// 0, wire.FormatCertsOnly or wire.FormatPKIXCert. It returns the certificate that
// carries the CSR's public key, and the raw payload (which may hold more
// certificates).
func (c *Conn) Enroll(ctx context.Context, csrDER []byte, accept message.MediaType) (*x509.Certificate, []byte, error) {
	return c.enroll(ctx, wire.ResourceSen, csrDER, accept)
}

// Reenroll renews or rekeys the client's certificate (POST /sren, RFC 9148
// §4.2, RFC 7030 §4.2.2): the CSR's Subject and SubjectAltName must equal the
// certificate the client authenticated with. Results as for Enroll.
func (c *Conn) Reenroll(ctx context.Context, csrDER []byte, accept message.MediaType) (*x509.Certificate, []byte, error) {
	return c.enroll(ctx, wire.ResourceSren, csrDER, accept)
}

func (c *Conn) enroll(ctx context.Context, resource string, csrDER []byte, accept message.MediaType) (*x509.Certificate, []byte, error) {
	if err := checkCertAccept(accept); err != nil {
		return nil, nil, err
	}
	csr, err := x509.ParseCertificateRequest(csrDER)
	if err != nil {
		return nil, nil, fmt.Errorf("client: %s: the CSR does not parse: %w", resource, err)
	}
	resp, err := c.do(ctx, resource, certRequest(&request{
		method: codes.POST, path: c.path(resource),
		format: wire.FormatPKCS10, hasFormat: true, body: csrDER,
	}, accept))
	if err != nil {
		return nil, nil, err
	}
	certs, err := parseCertResponse(resource, resp, accept)
	if err != nil {
		return nil, resp.payload, err
	}
	cert := certForKey(certs, csr.RawSubjectPublicKeyInfo)
	if cert == nil {
		return nil, resp.payload, fmt.Errorf("%w (%s)", ErrCertMismatch, resource)
	}
	return cert, resp.payload, nil
}

// certForKey returns the first certificate whose SubjectPublicKeyInfo is spki.
func certForKey(certs []*x509.Certificate, spki []byte) *x509.Certificate {
	for _, c := range certs {
		if bytes.Equal(c.RawSubjectPublicKeyInfo, spki) {
			return c
		}
	}
	return nil
}

// CSRAttrs fetches the CSR attributes of the selected profile (GET /att,
// Content-Format 285, RFC 9148 §4.1, RFC 7030 §4.5): the raw DER CsrAttrs,
// which may be empty.
func (c *Conn) CSRAttrs(ctx context.Context) ([]byte, error) {
	resp, err := c.do(ctx, wire.ResourceAtt, &request{method: codes.GET, path: c.path(wire.ResourceAtt)})
	if err != nil {
		return nil, err
	}
	if resp.hasFormat && resp.format != wire.FormatCSRAttrs {
		return nil, fmt.Errorf("%w: att answered Content-Format %d, want 285", ErrBadResponse, resp.format)
	}
	return resp.payload, nil
}

// KeygenResult is the outcome of server-side key generation (RFC 9148 §4.8).
type KeygenResult struct {
	// Key is the private key part: DER PKCS#8 PrivateKeyInfo (KeyFormat 284)
	// or a CMS EnvelopedData for the requester (KeyFormat 280).
	Key       []byte
	KeyFormat message.MediaType
	// Certificates are the certificates of the cert part (281: certs-only,
	// 287: one certificate), CertFormat its Content-Format.
	Certificates []*x509.Certificate
	CertFormat   message.MediaType
	// Raw is the multipart-core payload.
	Raw []byte
}

// ServerKeygen asks the server to generate the key pair (POST /skg, or /skc
// when skc is true, with Accept 62, RFC 9148 §4.8). The server ignores the
// CSR's public key and signature but uses its subject, SAN and attributes;
// the key comes back encrypted (280) when the CSR asks for it.
func (c *Conn) ServerKeygen(ctx context.Context, csrDER []byte, skc bool) (*KeygenResult, error) {
	resource := wire.ResourceSkg
	if skc {
		resource = wire.ResourceSkc
	}
	resp, err := c.do(ctx, resource, &request{
		method: codes.POST, path: c.path(resource),
		format: wire.FormatPKCS10, hasFormat: true,
		accept: wire.FormatMultipartCore, hasAccept: true,
		body: csrDER,
	})
	if err != nil {
		return nil, err
	}
	if resp.hasFormat && resp.format != wire.FormatMultipartCore {
		return nil, fmt.Errorf("%w: %s answered Content-Format %d, want 62", ErrBadResponse, resource, resp.format)
	}
	res, err := parseKeygen(resp.payload)
	if err != nil {
		return nil, fmt.Errorf("client: %s: %w", resource, err)
	}
	return res, nil
}

// parseKeygen splits a server-side key generation response (RFC 9148 §4.8):
// exactly one key part (280 or 284) and one certificate part (281 or 287),
// in either order.
func parseKeygen(payload []byte) (*KeygenResult, error) {
	parts, err := wire.ParseMultipart(payload)
	if err != nil {
		return nil, err
	}
	if len(parts) != 2 {
		return nil, fmt.Errorf("%w: multipart: %d parts, want a key and a certificate", wire.ErrMalformedPayload, len(parts))
	}
	res := &KeygenResult{Raw: payload}
	for _, p := range parts {
		switch p.Format {
		case wire.FormatPKCS8, wire.FormatServerGeneratedKey:
			if res.Key != nil {
				return nil, fmt.Errorf("%w: multipart: two key parts", wire.ErrMalformedPayload)
			}
			if len(p.Data) == 0 {
				return nil, fmt.Errorf("%w: multipart: empty key part", wire.ErrMalformedPayload)
			}
			res.Key, res.KeyFormat = p.Data, p.Format
		case wire.FormatCertsOnly, wire.FormatPKIXCert:
			if res.Certificates != nil {
				return nil, fmt.Errorf("%w: multipart: two certificate parts", wire.ErrMalformedPayload)
			}
			certs, err := parseCertResponse("multipart", &response{payload: p.Data}, p.Format)
			if err != nil {
				return nil, err
			}
			res.Certificates, res.CertFormat = certs, p.Format
		default:
			return nil, fmt.Errorf("%w: multipart: unexpected part Content-Format %d", wire.ErrMalformedPayload, p.Format)
		}
	}
	if res.Key == nil || res.Certificates == nil {
		return nil, fmt.Errorf("%w: multipart: missing key or certificate part", wire.ErrMalformedPayload)
	}
	return res, nil
}

// UpdateTrust performs the trust-anchor update of RFC 9148 §9.1 (RFC 7030
// §4.1.3): it fetches /crts (281), takes the self-signed certificates as the
// new trust anchors, and re-validates the server certificate of the current
// DTLS session against them. On success the client's Roots become the new
// set and the anchors are returned for the caller to store; on failure the
// error wraps ErrTrustUpdate and the old set stays in force.
func (c *Conn) UpdateTrust(ctx context.Context) ([]*x509.Certificate, error) {
	certs, _, err := c.CACerts(ctx, wire.FormatCertsOnly)
	if err != nil {
		return nil, err
	}
	state, ok := c.dconn.ConnectionState()
	if !ok || len(state.PeerCertificates) == 0 {
		return nil, fmt.Errorf("%w: no server certificate in the session", ErrTrustUpdate)
	}
	anchors, pool, err := trustFromCACerts(certs)
	if err != nil {
		return nil, err
	}
	if err := verifyServerChain(state.PeerCertificates, pool, certs, c.opts.ServerName); err != nil {
		return nil, err
	}
	c.mu.Lock()
	c.roots = pool
	c.mu.Unlock()
	return anchors, nil
}

// trustFromCACerts picks the self-signed certificates of a /crts answer (the
// roots; RFC 7030 §4.1.3 also carries root key rollover certificates, which
// are not self-signed and are used as intermediates only).
func trustFromCACerts(certs []*x509.Certificate) ([]*x509.Certificate, *x509.CertPool, error) {
	pool := x509.NewCertPool()
	var anchors []*x509.Certificate
	for _, c := range certs {
		if !bytes.Equal(c.RawSubject, c.RawIssuer) || c.CheckSignatureFrom(c) != nil || !c.IsCA {
			continue
		}
		pool.AddCert(c)
		anchors = append(anchors, c)
	}
	if len(anchors) == 0 {
		return nil, nil, fmt.Errorf("%w: /crts holds no self-signed CA certificate", ErrTrustUpdate)
	}
	return anchors, pool, nil
}

// verifyServerChain validates the session's server certificate (raw DER,
// leaf first) against roots, with the peer's and the /crts certificates as
// intermediates, for serverName.
func verifyServerChain(raw [][]byte, roots *x509.CertPool, extra []*x509.Certificate, serverName string) error {
	certs := make([]*x509.Certificate, 0, len(raw))
	for _, r := range raw {
		c, err := x509.ParseCertificate(r)
		if err != nil {
			return fmt.Errorf("%w: server certificate: %w", ErrTrustUpdate, err)
		}
		certs = append(certs, c)
	}
	inter := x509.NewCertPool()
	for _, c := range slices.Concat(certs[1:], extra) {
		inter.AddCert(c)
	}
	_, err := certs[0].Verify(x509.VerifyOptions{
		Roots:         roots,
		Intermediates: inter,
		DNSName:       serverName,
		KeyUsages:     []x509.ExtKeyUsage{x509.ExtKeyUsageServerAuth},
	})
	if err != nil {
		return fmt.Errorf("%w: %w", ErrTrustUpdate, err)
	}
	return nil
}
