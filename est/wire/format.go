package wire

import (
	"errors"
	"fmt"

	"github.com/plgd-dev/go-coap/v3/message"
)

// ErrMalformedPayload is wrapped by every error of the decoders of this
// package (PKCS#7 certs-only, link-format, multipart-core): the payload
// came from the peer and is not what the Content-Format says.
var ErrMalformedPayload = errors.New("wire: malformed payload")

func malformed(what string, args ...any) error {
	return fmt.Errorf("%w: "+what, append([]any{ErrMalformedPayload}, args...)...)
}

// Content-Formats of RFC 9148 §8.1 and RFC 8710.
const (
	FormatMultipartCore      message.MediaType = 62  // application/multipart-core
	FormatServerGeneratedKey message.MediaType = 280 // application/pkcs7-mime; smime-type=server-generated-key
	FormatCertsOnly          message.MediaType = 281 // application/pkcs7-mime; smime-type=certs-only
	FormatPKCS8              message.MediaType = 284 // application/pkcs8
	FormatCSRAttrs           message.MediaType = 285 // application/csrattrs
	FormatPKCS10             message.MediaType = 286 // application/pkcs10
	FormatPKIXCert           message.MediaType = 287 // application/pkix-cert
)

// Resource names (RFC 9148 §4.1); the long RFC 7030 names are not part of EST-coaps.
const (
	ResourceCrts = "crts"
	ResourceSen  = "sen"
	ResourceSren = "sren"
	ResourceAtt  = "att"
	ResourceSkg  = "skg"
	ResourceSkc  = "skc"
	// ResourceCRL is estca's CRL resource under LabelRoot (/est/crl): not
	// an EST-coaps resource.
	ResourceCRL = "crl"
)

// WellKnownRoot is the mandatory root of EST-coaps resources (RFC 9148 §4.1);
// LabelRoot is the root under which a path label selects a profile.
const (
	WellKnownRoot = "/.well-known/est"
	LabelRoot     = "/est"
)

// DefaultPort is the default UDP port of coaps (RFC 7252 §12.7).
const DefaultPort = 5684

// OptionRequestTag is the Request-Tag option (RFC 9175 §3.2), used by libcoap to
// separate concurrent block-wise request bodies.
const OptionRequestTag message.OptionID = 292
