package wire

import (
	"fmt"

	"github.com/fxamacker/cbor/v2"
	"github.com/plgd-dev/go-coap/v3/message"
)

// Part is one representation of an application/multipart-core payload
// (Content-Format 62, RFC 8710 §2).
type Part struct {
	// Format is the part's Content-Format.
	Format message.MediaType
	// Data is the representation; nil when the part was sent as null.
	Data []byte
}

// MaxParts bounds the number of parts ParseMultipart decodes from one payload.
const MaxParts = 16

// ParseMultipart decodes an application/multipart-core payload (RFC 8710 §2):
// a CBOR array of alternating Content-Format (uint) and representation (byte
// string) items. The array must have an even number of items and nothing may
// follow it. RFC 8710 allows null for an omitted representation; such pairs
// are returned with a nil Data.
func ParseMultipart(payload []byte) ([]Part, error) {
	dm, err := cbor.DecOptions{
		MaxArrayElements: 2 * MaxParts,
		MaxNestedLevels:  4,
		IndefLength:      cbor.IndefLengthForbidden,
	}.DecMode()
	if err != nil {
		return nil, fmt.Errorf("wire: multipart: %w", err)
	}
	var items []cbor.RawMessage
	if err := dm.Unmarshal(payload, &items); err != nil {
		return nil, fmt.Errorf("%w: multipart: %w", ErrMalformedPayload, err)
	}
	if items == nil {
		return nil, malformed("multipart: not a CBOR array")
	}
	if len(items)%2 != 0 {
		return nil, malformed("multipart: odd number of items (%d)", len(items))
	}
	parts := make([]Part, 0, len(items)/2)
	for k := 0; k < len(items); k += 2 {
		var format uint64
		if err := dm.Unmarshal(items[k], &format); err != nil || items[k][0]>>5 != 0 {
			return nil, malformed("multipart: item %d is not a content-format uint", k)
		}
		if format > 0xffff {
			return nil, malformed("multipart: content-format %d out of range", format)
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
			return nil, malformed("multipart: item %d is not a byte string", k+1)
		}
		parts = append(parts, p)
	}
	return parts, nil
}

// EncodeMultipart encodes parts as an application/multipart-core payload
// (RFC 8710 §2): a definite-length CBOR array of Content-Format (uint) and
// representation (byte string) items, in order, with the shortest encodings
// (RFC 8949 §4.2.1), as in RFC 9148 Appendix A.3. A part with nil Data is
// sent as null, which RFC 8710 allows for an omitted representation.
func EncodeMultipart(parts ...Part) ([]byte, error) {
	items := make([]any, 0, 2*len(parts))
	for _, p := range parts {
		items = append(items, uint64(p.Format), p.Data)
	}
	em, err := cbor.EncOptions{Sort: cbor.SortNone, IndefLength: cbor.IndefLengthForbidden,
		NilContainers: cbor.NilContainerAsNull}.EncMode()
	if err != nil {
		return nil, fmt.Errorf("wire: multipart: %w", err)
	}
	b, err := em.Marshal(items)
	if err != nil {
		return nil, fmt.Errorf("wire: multipart: %w", err)
	}
	return b, nil
}
