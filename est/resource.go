package est

import (
	"context"
	"crypto/x509"
	"errors"

	"github.com/plgd-dev/go-coap/v3/message"
	"github.com/plgd-dev/go-coap/v3/message/codes"

	"github.com/estca/estca/ca"
	"github.com/estca/estca/est/wire"
)

// Authority is what the EST-coaps server needs from the certificate
// authority; *ca.Authority implements it. Errors should be *ca.Error so that
// StatusOf maps them to the right CoAP code; anything else answers 5.00.
type Authority interface {
	// Authenticate establishes the requester from a DTLS client certificate
	// chain, leaf first (RFC 9148 §3, §9.1). Failures are KindUnauthenticated
	// or KindForbidden; the handshake is then aborted with an alert.
	Authenticate(chain []*x509.Certificate) (ca.Requester, error)
	// Check re-checks an authenticated requester under the policy in
	// force (revoked since the handshake, manufacturer removed or
	// deny-listed by a reload, expired): on every request before it is
	// served, and on every open session each RecheckInterval; a failure
	// refuses the request and closes the session.
	Check(who ca.Requester) error
	// CACertificates returns the CA certificates for /crts, issuing CA first
	// (RFC 7030 §4.1, RFC 9148 §4.1).
	CACertificates(profile string) ([]*x509.Certificate, error)
	// Enroll serves /sen and /sren (req.Operation), RFC 7030 §4.2; it is
	// idempotent per requester and CSR (RFC 9148 §4.7).
	Enroll(ctx context.Context, req ca.Request) (*ca.Result, error)
	// CSRAttributes returns the DER CsrAttrs of /att (RFC 7030 §4.5, RFC
	// 9908) for the requester under the profile.
	CSRAttributes(profile string, who ca.Requester) ([]byte, error)
	// CRL returns the newest certificate revocation list (RFC 5280 §5) for
	// /est/crl.
	CRL() (*ca.CRL, error)
	// HasProfile reports whether a path label names a profile.
	HasProfile(label string) bool
	// RecordRejection durably audits a refusal the authority did not decide
	// itself: a request the server answered 4.xx/5.xx (or rejected without
	// an answer) outside Enroll, or an aggregate of refused handshakes. The
	// server never reports an error for which ca.Audited is true.
	RecordRejection(r ca.Rejection) error
}

// Resource names the server routes besides the EST ones of format.go:
// discovery, and the CRL (EST-coaps defines no CRL resource; estca serves
// its CRL to devices at /est/crl, see CRLPath).
const (
	resourceCore = "core"
	resourceCRL  = wire.ResourceCRL
)

// CRLPath is where devices fetch the CA's CRL over CoAP (GET, Content-Format
// 281: a certs-only SignedData that carries the CRL in its crls field, RFC
// 8551 §3.6), announced in discovery with rt="estca.crl". It is not an EST
// resource: it has no /.well-known/est or label form.
const CRLPath = wire.LabelRoot + "/" + wire.ResourceCRL

// target is the routing decision for a request path.
type target struct {
	resource string // one of the Resource* names, or resourceCore
	profile  string // "" for the default profile
}

// route maps a Uri-Path to a target (RFC 9148 §4.1):
//
//	/.well-known/core              discovery (RFC 6690)
//	/.well-known/est/<res>         default profile
//	/.well-known/est/<label>/<res> profile <label>; unknown label → 4.04
//	/est/<res>                     default profile (alias)
//	/est/<label>/<res>             profile <label>; unknown label → 4.04
//	/est/crl                       the CRL (CRLPath)
//
// Unknown paths and resources are KindNotFound.
func route(path []string, hasProfile func(string) bool) (target, error) {
	notFound := protoErr(KindNotFound, "not found")
	labelled := func(label, res string) (target, error) {
		if !isESTResource(res) || label == "" {
			return target{}, notFound
		}
		if !hasProfile(label) {
			return target{}, protoErr(KindNotFound, "unknown label")
		}
		return target{resource: res, profile: label}, nil
	}
	switch {
	case len(path) == 4 && path[0] == ".well-known" && path[1] == "est":
		return labelled(path[2], path[3])
	case len(path) == 2 && path[0] == ".well-known" && path[1] == "core":
		return target{resource: resourceCore}, nil
	case len(path) == 2 && path[0] == "est" && path[1] == resourceCRL:
		return target{resource: resourceCRL}, nil
	case len(path) == 3 && path[0] == ".well-known" && path[1] == "est":
		if !isESTResource(path[2]) {
			return target{}, notFound
		}
		return target{resource: path[2]}, nil
	case len(path) == 2 && path[0] == "est":
		if !isESTResource(path[1]) {
			return target{}, notFound
		}
		return target{resource: path[1]}, nil
	case len(path) == 3 && path[0] == "est":
		return labelled(path[1], path[2])
	}
	return target{}, notFound
}

func isESTResource(s string) bool {
	switch s {
	case wire.ResourceCrts, wire.ResourceSen, wire.ResourceSren, wire.ResourceAtt, wire.ResourceSkg, wire.ResourceSkc:
		return true
	}
	return false
}

// methodFor is the one method each resource serves (RFC 9148 §4.1).
func methodFor(resource string) codes.Code {
	switch resource {
	case wire.ResourceSen, wire.ResourceSren, wire.ResourceSkg, wire.ResourceSkc:
		return codes.POST
	default:
		return codes.GET
	}
}

// response is what a resource produces; the block layer may split it.
type response struct {
	code   codes.Code
	format int // -1: no Content-Format (diagnostic payloads)
	body   []byte
	// sensitive: body holds a private key in the clear; the block layer
	// clears it when done (block.Response.Sensitive).
	sensitive bool
}

// certAccept checks the Accept of /crts, /sen, /sren: absent or 281 gives
// certs-only, 287 a single DER certificate (RFC 9148 §4.1, §8.1).
func certAccept(accept int) (message.MediaType, error) {
	switch accept {
	case -1, int(wire.FormatCertsOnly):
		return wire.FormatCertsOnly, nil
	case int(wire.FormatPKIXCert):
		return wire.FormatPKIXCert, nil
	}
	return 0, protoErr(KindNotAcceptable, "not acceptable")
}

// check validates what needs no body: method, Content-Format and Accept.
// It runs before block-wise reassembly, so that a doomed body is not
// buffered, and again (through serve) on the complete request. A
// continuation block (Block1 or Block2 Num > 0) may omit Content-Format: the
// body's format was checked on block 0 (RFC 7959 §2.3).
func (s *Server) check(r *request, t target) error {
	if r.method != methodFor(t.resource) {
		return protoErr(KindMethodNotAllowed, "method not allowed")
	}
	switch t.resource {
	case resourceCore:
		if r.accept != -1 && r.accept != int(message.AppLinkFormat) {
			return protoErr(KindNotAcceptable, "not acceptable")
		}
	case resourceCRL:
		if r.accept != -1 && r.accept != int(wire.FormatCertsOnly) {
			return protoErr(KindNotAcceptable, "not acceptable")
		}
	case wire.ResourceCrts:
		_, err := certAccept(r.accept)
		return err
	case wire.ResourceAtt:
		if r.accept != -1 && r.accept != int(wire.FormatCSRAttrs) {
			return protoErr(KindNotAcceptable, "not acceptable")
		}
	case wire.ResourceSen, wire.ResourceSren:
		if r.format != int(wire.FormatPKCS10) && !(r.format == -1 && r.continuation) {
			return protoErr(KindUnsupportedFormat, "unsupported content-format")
		}
		_, err := certAccept(r.accept)
		return err
	case wire.ResourceSkg, wire.ResourceSkc:
		if s.keygen == nil {
			return protoErr(KindNotFound, "not implemented")
		}
		return keygenCheck(r)
	}
	return nil
}

// serve serves one complete request on target t for requester who.
func (s *Server) serve(ctx context.Context, who *ca.Requester, r *request, t target) (response, error) {
	if err := s.check(r, t); err != nil {
		return response{}, err
	}
	switch t.resource {
	case resourceCore:
		return s.discovery(r)
	case resourceCRL:
		return s.crl()
	case wire.ResourceCrts:
		return s.crts(r, t)
	case wire.ResourceAtt:
		return s.att(who, r, t)
	case wire.ResourceSen, wire.ResourceSren:
		return s.enroll(ctx, who, r, t)
	case wire.ResourceSkg, wire.ResourceSkc:
		// Without a KeyGenerator the resources are routed but answer 4.04
		// and are not listed in discovery.
		return s.serverKeygen(ctx, who, r, t)
	}
	return response{}, protoErr(KindNotFound, "not found")
}

func (s *Server) crts(r *request, t target) (response, error) {
	f, err := certAccept(r.accept)
	if err != nil {
		return response{}, err
	}
	certs, err := s.auth.CACertificates(t.profile)
	if err != nil {
		return response{}, err
	}
	if len(certs) == 0 {
		return response{}, errors.New("est: authority returned no CA certificates")
	}
	var body []byte
	if f == wire.FormatPKIXCert {
		// One certificate (RFC 9148 §4.1): the top of the chain, the root
		// CA when the authority includes it. A client installs this
		// answer as its explicit trust anchor (RFC 7030 §4.1.3), and the
		// root is the one certificate OpenSSL (which by default wants a
		// self-signed anchor) and GnuTLS accept as such (tested with
		// libcoap's OpenSSL and GnuTLS builds; mbedTLS is not verified by
		// our tests); the server sends the intermediates in its handshake.
		body = certs[len(certs)-1].Raw
	} else if body, err = wire.CertsOnly(certs...); err != nil {
		return response{}, err
	}
	return response{code: codes.Content, format: int(f), body: body}, nil
}

func (s *Server) att(who *ca.Requester, r *request, t target) (response, error) {
	if r.accept != -1 && r.accept != int(wire.FormatCSRAttrs) {
		return response{}, protoErr(KindNotAcceptable, "not acceptable")
	}
	der, err := s.auth.CSRAttributes(t.profile, *who)
	if err != nil {
		return response{}, err
	}
	return response{code: codes.Content, format: int(wire.FormatCSRAttrs), body: der}, nil
}

// crl serves the newest CRL, in a certs-only SignedData (Content-Format 281).
func (s *Server) crl() (response, error) {
	c, err := s.auth.CRL()
	if err != nil {
		return response{}, err
	}
	body, err := wire.CRLsOnly(c.DER)
	if err != nil {
		return response{}, err
	}
	return response{code: codes.Content, format: int(wire.FormatCertsOnly), body: body}, nil
}

func (s *Server) enroll(ctx context.Context, who *ca.Requester, r *request, t target) (response, error) {
	// The final block of a Block1 body may omit Content-Format: check
	// accepted the body's first block only with 286.
	if r.format != int(wire.FormatPKCS10) && !(r.format == -1 && r.continuation) {
		return response{}, protoErr(KindUnsupportedFormat, "unsupported content-format")
	}
	f, err := certAccept(r.accept)
	if err != nil {
		return response{}, err
	}
	if len(r.payload) == 0 {
		return response{}, protoErr(KindBadRequest, "empty request")
	}
	start := s.now()
	op := ca.OpSen
	if t.resource == wire.ResourceSren {
		op = ca.OpSren
	}
	res, err := s.auth.Enroll(ctx, ca.Request{
		CSR:       r.payload,
		Profile:   t.profile,
		Requester: *who,
		Operation: op,
	})
	s.metrics.observeIssuance(s.now().Sub(start), err)
	if err != nil {
		return response{}, err
	}
	if res == nil || res.Certificate == nil {
		return response{}, errors.New("est: authority returned no certificate")
	}
	body := res.Certificate.Raw
	if f == wire.FormatCertsOnly {
		if body, err = wire.CertsOnly(res.Certificate); err != nil {
			return response{}, err
		}
	}
	// RFC 9148 §4.5: a successful POST answers 2.04 Changed.
	return response{code: codes.Changed, format: int(f), body: body}, nil
}
