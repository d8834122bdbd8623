package est

import (
	"context"
	"errors"

	"github.com/plgd-dev/go-coap/v3/message/codes"

	"github.com/estca/estca/ca"
	"github.com/estca/estca/est/wire"
)

// KeyGenerator is what the server needs for server-side key generation
// (/skg and /skc, RFC 9148 §4.8); *ca.Keygen implements it. Errors should be
// *ca.Error, as for Authority; refusals it audited itself carry ca.Audited.
type KeyGenerator interface {
	// ServerKeygen generates a key pair for the requester, issues its
	// certificate and returns both, the key as PKCS#8 or CMS (RFC 7030 §4.4.2).
	ServerKeygen(ctx context.Context, req ca.KeygenRequest) (*ca.KeygenResult, error)
}

// keygenCheck validates what /skg and /skc need before the body: a
// PKCS#10 body (4.15 otherwise) and an Accept of 62 or none (4.06).
func keygenCheck(r *request) error {
	if r.format != int(wire.FormatPKCS10) && !(r.format == -1 && r.continuation) {
		return protoErr(KindUnsupportedFormat, "unsupported content-format")
	}
	if r.accept != -1 && r.accept != int(wire.FormatMultipartCore) {
		return protoErr(KindNotAcceptable, "not acceptable")
	}
	return nil
}

// serverKeygen serves /skg and /skc (RFC 9148 §4.8): the CSR goes to the
// key generator; the answer is 2.04 with Content-Format 62, the CBOR array
// [key-format, key, cert-format, cert] (RFC 8710): 284 PKCS#8 or 280 CMS,
// then 281 certs-only for /skg or 287 for /skc. The plain key is zeroed
// once encoded; the encoded response, which holds it, is marked sensitive:
// the block layer and the server zero it once sent (see the package
// documentation for what go-coap keeps).
func (s *Server) serverKeygen(ctx context.Context, who *ca.Requester, r *request, t target) (response, error) {
	if s.keygen == nil {
		return response{}, protoErr(KindNotFound, "not implemented")
	}
	if err := keygenCheck(r); err != nil {
		return response{}, err
	}
	if len(r.payload) == 0 {
		return response{}, protoErr(KindBadRequest, "empty request")
	}
	op := ca.OpSkg
	if t.resource == wire.ResourceSkc {
		op = ca.OpSkc
	}
	start := s.now()
	res, err := s.keygen.ServerKeygen(ctx, ca.KeygenRequest{CSR: r.payload, Profile: t.profile, Requester: *who, Operation: op})
	s.metrics.observeIssuance(s.now().Sub(start), err)
	if err != nil {
		return response{}, err
	}
	defer res.Zero()
	if res.Certificate == nil || len(res.Key) == 0 {
		return response{}, errors.New("est: key generator returned no key or certificate")
	}
	keyFormat := wire.FormatPKCS8
	if res.Encrypted() {
		keyFormat = wire.FormatServerGeneratedKey
	}
	cert, certFormat := res.Certificate.Raw, wire.FormatPKIXCert
	if op == ca.OpSkg {
		certFormat = wire.FormatCertsOnly
		if cert, err = wire.CertsOnly(res.Certificate); err != nil {
			return response{}, err
		}
	}
	body, err := wire.EncodeMultipart(wire.Part{Format: keyFormat, Data: res.Key}, wire.Part{Format: certFormat, Data: cert})
	if err != nil {
		return response{}, err
	}
	// RFC 9148 §4.5: a successful POST answers 2.04 Changed. A key in the
	// clear makes the response sensitive: zeroed once sent.
	return response{code: codes.Changed, format: int(wire.FormatMultipartCore), body: body,
		sensitive: keyFormat == wire.FormatPKCS8}, nil
}
