package est

import (
	"crypto/x509"
	"errors"
	"fmt"
	"strconv"
	"strings"

	"github.com/fxamacker/cbor/v2"
	"github.com/plgd-dev/go-coap/v3/message"

	"github.com/estca/estca/ca"
)

// ErrMalformedPayload is wrapped by every payload decoding error of the client
// side parsers (PKCS#7 certs-only, link-format, multipart-core).
var ErrMalformedPayload = errors.New("est: malformed payload")

func clMalformed(what string, args ...any) error {
	return fmt.Errorf("%w: "+what, append([]any{ErrMalformedPayload}, args...)...)
}

// ParseCertsOnly decodes a DER certs-only message (Content-Format 281) with
// ca.ParseCertsOnly; its errors also wrap ErrMalformedPayload.
func ParseCertsOnly(der []byte) ([]*x509.Certificate, error) {
	certs, err := ca.ParseCertsOnly(der)
	if err != nil {
		return nil, fmt.Errorf("%w: pkcs7: %w", ErrMalformedPayload, err)
	}
	return certs, nil
}

// Link is one entry of an RFC 6690 link-format document, as returned by
// discovery (GET /.well-known/core?rt=ace.est*, RFC 9148 §4.1).
type Link struct {
	// Target is the link target between angle brackets, e.g. "/est/crts".
	Target string
	// ResourceTypes are the space separated values of the rt attribute.
	ResourceTypes []string
	// ContentFormats are the values of the ct attribute.
	ContentFormats []message.MediaType
	// Params holds every attribute by name, values unquoted; an attribute
	// without a value maps to "". Repeated attributes keep their first value.
	Params map[string]string
}

// HasResourceType reports whether l carries the resource type rt.
func (l Link) HasResourceType(rt string) bool {
	for _, v := range l.ResourceTypes {
		if v == rt {
			return true
		}
	}
	return false
}

// clMaxLinks bounds the number of links decoded from one document.
const clMaxLinks = 256

// ParseLinks decodes an RFC 6690 §2 link-format document (Content-Format 40).
// Attribute values may be tokens or quoted strings; a quoted string may hold
// commas and semicolons. Whitespace around separators is tolerated.
func ParseLinks(doc []byte) ([]Link, error) {
	s := string(doc)
	var links []Link
	i := 0
	skipSpace := func() {
		for i < len(s) && (s[i] == ' ' || s[i] == '\t' || s[i] == '\r' || s[i] == '\n') {
			i++
		}
	}
	for {
		skipSpace()
		if i == len(s) {
			break
		}
		if len(links) == clMaxLinks {
			return nil, clMalformed("link-format: more than %d links", clMaxLinks)
		}
		if s[i] != '<' {
			return nil, clMalformed("link-format: expected '<' at offset %d", i)
		}
		end := strings.IndexByte(s[i+1:], '>')
		if end < 0 {
			return nil, clMalformed("link-format: unterminated target at offset %d", i)
		}
		l := Link{Target: s[i+1 : i+1+end], Params: map[string]string{}}
		i += end + 2
		for {
			skipSpace()
			if i == len(s) || s[i] == ',' {
				break
			}
			if s[i] != ';' {
				return nil, clMalformed("link-format: expected ';' or ',' at offset %d", i)
			}
			i++
			skipSpace()
			start := i
			for i < len(s) && s[i] != '=' && s[i] != ';' && s[i] != ',' && s[i] != ' ' {
				i++
			}
			name := s[start:i]
			if name == "" {
				return nil, clMalformed("link-format: empty attribute name at offset %d", start)
			}
			value := ""
			if i < len(s) && s[i] == '=' {
				i++
				if i < len(s) && s[i] == '"' {
					i++
					var b strings.Builder
					closed := false
					for i < len(s) {
						c := s[i]
						i++
						if c == '\\' && i < len(s) {
							b.WriteByte(s[i])
							i++
							continue
						}
						if c == '"' {
							closed = true
							break
						}
						b.WriteByte(c)
					}
					if !closed {
						return nil, clMalformed("link-format: unterminated quoted value of %q", name)
					}
					value = b.String()
				} else {
					start := i
					for i < len(s) && s[i] != ';' && s[i] != ',' && s[i] != ' ' {
						i++
					}
					value = s[start:i]
				}
			}
			if _, dup := l.Params[name]; !dup {
				l.Params[name] = value
			}
		}
		if err := l.decodeAttrs(); err != nil {
			return nil, err
		}
		links = append(links, l)
		if i < len(s) { // at ','
			i++
		}
	}
	return links, nil
}

func (l *Link) decodeAttrs() error {
	if rt, ok := l.Params["rt"]; ok {
		l.ResourceTypes = strings.Fields(rt)
	}
	if ct, ok := l.Params["ct"]; ok {
		for _, f := range strings.Fields(ct) {
			n, err := strconv.ParseUint(f, 10, 16)
			if err != nil {
				return clMalformed("link-format: bad ct value %q", f)
			}
			l.ContentFormats = append(l.ContentFormats, message.MediaType(n))
		}
	}
	return nil
}

// Part is one representation of an application/multipart-core payload
// (Content-Format 62, RFC 8710 §2).
type Part struct {
	// Format is the part's Content-Format.
	Format message.MediaType
	// Data is the representation; nil when the part was sent as null.
	Data []byte
}

// clMaxParts bounds the number of parts decoded from one multipart-core payload.
const clMaxParts = 16

// ParseMultipart decodes an application/multipart-core payload (RFC 8710 §2):
// a CBOR array of alternating Content-Format (uint) and representation (byte
// string) items. The array must have an even number of items and nothing may
// follow it. RFC 8710 allows null for an omitted representation; such pairs
// are returned with a nil Data.
func ParseMultipart(payload []byte) ([]Part, error) {
	dm, err := cbor.DecOptions{
		MaxArrayElements: 2 * clMaxParts,
		MaxNestedLevels:  4,
		IndefLength:      cbor.IndefLengthForbidden,
	}.DecMode()
	if err != nil {
		return nil, fmt.Errorf("est: multipart: %w", err)
	}
	var items []cbor.RawMessage
	if err := dm.Unmarshal(payload, &items); err != nil {
		return nil, fmt.Errorf("%w: multipart: %w", ErrMalformedPayload, err)
	}
	if items == nil {
		return nil, clMalformed("multipart: not a CBOR array")
	}
	if len(items)%2 != 0 {
		return nil, clMalformed("multipart: odd number of items (%d)", len(items))
	}
	parts := make([]Part, 0, len(items)/2)
	for k := 0; k < len(items); k += 2 {
		var format uint64
		if err := dm.Unmarshal(items[k], &format); err != nil || items[k][0]>>5 != 0 {
			return nil, clMalformed("multipart: item %d is not a content-format uint", k)
		}
		if format > 0xffff {
			return nil, clMalformed("multipart: content-format %d out of range", format)
		}
		p := Part{Format: message.MediaType(format)}
		switch major := items[k+1][0] >> 5; {
		case items[k+1][0] == 0xf6: // null: omitted representation
		case major == 2:
			var data []byte
			if err := dm.Unmarshal(items[k+1], &data); err != nil {
				return nil, fmt.Errorf("%w: multipart: item %d: %w", ErrMalformedPayload, k+1, err)
			}
			if data == nil {
				data = []byte{}
			}
			p.Data = data
		default:
			return nil, clMalformed("multipart: item %d is not a byte string", k+1)
		}
		parts = append(parts, p)
	}
	return parts, nil
}
