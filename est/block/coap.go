package block

import (
	"bytes"
	"encoding/hex"
	"fmt"
	"strings"

	"github.com/plgd-dev/go-coap/v3/message"
	"github.com/plgd-dev/go-coap/v3/message/codes"
	"github.com/plgd-dev/go-coap/v3/message/pool"
)

// OptionRequestTag is the Request-Tag option number (RFC 9175 §3.2).
const OptionRequestTag = 292

// FromMessage builds the Incoming for a go-coap request received from peer
// (the caller's DTLS session or remote address identifier). The path is the
// Uri-Path joined with "/" ("" when absent); Uri-Query is not part of the
// Key. A malformed or repeated Block1/Block2/Size1 option is an error
// wrapping ErrBadOption (4.02, RFC 7252 §5.4.1); so is a Request-Tag longer
// than 8 bytes (RFC 9175 §3.2).
func FromMessage(peer string, msg *pool.Message) (Incoming, error) {
	in := Incoming{Key: Key{Peer: peer, Method: uint8(msg.Code())}}
	opts := msg.Options()
	if p, err := opts.Path(); err == nil {
		in.Key.Path = p
	}
	var tags []string
	var b1, b2, s1 int
	for _, o := range opts {
		switch o.ID {
		case message.Block1, message.Block2:
			v, err := Decode(o.Value)
			if err != nil {
				return Incoming{}, err
			}
			if o.ID == message.Block1 {
				b1++
				in.Block1 = &v
			} else {
				b2++
				in.Block2 = &v
			}
		case message.Size1:
			if len(o.Value) > 4 {
				return Incoming{}, fmt.Errorf("%w: Size1 of %d bytes", ErrBadOption, len(o.Value))
			}
			var v uint32
			for _, c := range o.Value {
				v = v<<8 | uint32(c)
			}
			s1++
			in.Size1 = &v
		case message.Size2:
			in.Size2 = true
		case OptionRequestTag:
			if len(o.Value) > 8 {
				return Incoming{}, fmt.Errorf("%w: Request-Tag of %d bytes", ErrBadOption, len(o.Value))
			}
			tags = append(tags, hex.EncodeToString(o.Value))
		}
	}
	if b1 > 1 || b2 > 1 || s1 > 1 {
		return Incoming{}, fmt.Errorf("%w: repeated non-repeatable option", ErrBadOption)
	}
	if len(tags) > 0 {
		in.Key.RequestTag = strings.Join(tags, ",")
		if in.Key.RequestTag == "" {
			// A zero-length Request-Tag is not the same as none (RFC 9175 §3.2.1).
			in.Key.RequestTag = "-"
		}
	}
	body, err := msg.ReadBody()
	if err != nil {
		return Incoming{}, fmt.Errorf("block: reading payload: %w", err)
	}
	in.Payload = body
	return in, nil
}

// Apply writes o into the go-coap response message resp (for a mux handler:
// o.Apply(w.Message())): code, options and payload.
func (o Outgoing) Apply(resp *pool.Message) {
	resp.SetCode(codes.Code(o.Code))
	if o.ContentFormat != nil {
		resp.SetContentFormat(message.MediaType(*o.ContentFormat))
	}
	if o.MaxAge != nil {
		resp.SetOptionUint32(message.MaxAge, *o.MaxAge)
	}
	if o.Block2 != nil {
		resp.SetOptionBytes(message.Block2, o.Block2.Encode())
	}
	if o.Block1 != nil {
		resp.SetOptionBytes(message.Block1, o.Block1.Encode())
	}
	if o.Size2 != nil {
		resp.SetOptionUint32(message.Size2, *o.Size2)
	}
	if o.Size1 != nil {
		resp.SetOptionUint32(message.Size1, *o.Size1)
	}
	if len(o.Payload) > 0 {
		resp.SetBody(bytes.NewReader(o.Payload))
	}
}
