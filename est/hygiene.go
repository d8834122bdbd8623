package est

import (
	"encoding/hex"
	"strings"

	"github.com/plgd-dev/go-coap/v3/message"
	"github.com/plgd-dev/go-coap/v3/message/codes"

	"github.com/estca/estca/est/wire"
)

// optionRule describes an option the server recognises (RFC 7252 §5.10,
// RFC 7959 §2.1, RFC 9175 §3.2): its length range and whether it may repeat.
// Critical options (odd numbers) outside this set are unrecognised.
type optionRule struct {
	min, max  int
	repeat    bool
	supported bool
}

// optionRuleOf is the server's option table. Options that go-coap knows but
// this server does not implement (If-Match 1, If-None-Match 5, OSCORE 9,
// Q-Block1 19, Q-Block2 31, Proxy-Uri 35, Proxy-Scheme 39) are absent, so
// they count as unrecognised: critical ones are rejected.
func optionRuleOf(id message.OptionID) (optionRule, bool) {
	switch id {
	case message.URIHost:
		return optionRule{min: 1, max: 255, supported: true}, true
	case message.ETag:
		return optionRule{min: 1, max: 8, repeat: true, supported: true}, true
	case message.Observe:
		return optionRule{min: 0, max: 3, supported: true}, true
	case message.URIPort:
		return optionRule{min: 0, max: 2, supported: true}, true
	case message.URIPath:
		return optionRule{min: 0, max: 255, repeat: true, supported: true}, true
	case message.ContentFormat:
		return optionRule{min: 0, max: 2, supported: true}, true
	case message.URIQuery:
		return optionRule{min: 0, max: 255, repeat: true, supported: true}, true
	case message.Accept:
		return optionRule{min: 0, max: 2, supported: true}, true
	case message.Block2, message.Block1:
		return optionRule{min: 0, max: 3, supported: true}, true
	case message.Size2, message.Size1:
		return optionRule{min: 0, max: 4, supported: true}, true
	case message.Echo:
		return optionRule{min: 1, max: 40, supported: true}, true
	case message.NoResponse:
		return optionRule{min: 0, max: 1, supported: true}, true
	case wire.OptionRequestTag:
		return optionRule{min: 0, max: 8, repeat: true, supported: true}, true
	}
	return optionRule{}, false
}

// request is a CoAP request after the hygiene checks: the parts the server
// routes and serves on, with every option decoded once.
type request struct {
	typ    message.Type
	method codes.Code
	path   []string
	query  []string
	format int // Content-Format, -1 when absent
	accept int // Accept, -1 when absent
	block1 []byte
	block2 []byte
	hasB1  bool
	hasB2  bool
	size1  uint32
	hasSz1 bool
	hasSz2 bool
	// continuation is set for a Block1 or Block2 option with Num > 0.
	continuation bool
	tag          string // block.Key form of the Request-Tag values, "" when absent
	payload      []byte
}

// isMethod reports whether c is a request method code (RFC 7252 §12.1.1,
// RFC 8132): class 0, detail 1..7.
func isMethod(c codes.Code) bool { return c >= codes.GET && c <= 7 }

// parseRequest applies the message hygiene of RFC 7252 §3, §4, §5.4 and
// RFC 7959 §2.2 to one decoded message and returns the request to serve.
//
// Errors: ErrNotServed for messages that are not requests (ACK/RST types,
// response codes) and for non-confirmable requests that would get 4.02
// (RFC 7252 §5.4.1: rejected, not answered); otherwise an *Error of kind
// KindBadOption (unrecognised or malformed critical option, repeated
// non-repeatable critical option) or KindBadRequest (Block SZX 7, RFC 7959
// §2.2). Elective options that are unrecognised, malformed or repeated beyond
// their definition are ignored (RFC 7252 §5.4.1, §5.4.3, §5.4.5).
func parseRequest(typ message.Type, code codes.Code, opts message.Options, payload []byte) (*request, error) {
	if typ != message.Confirmable && typ != message.NonConfirmable {
		return nil, ErrNotServed
	}
	if code == codes.Empty || code>>5 != 0 {
		return nil, ErrNotServed
	}
	r := &request{typ: typ, method: code, format: -1, accept: -1, payload: payload}
	var tags []string
	seen := map[message.OptionID]bool{}
	bad := func(e *Error) (*request, error) {
		if typ == message.NonConfirmable {
			return nil, &Error{Kind: e.Kind, Reason: e.Reason, Err: ErrNotServed}
		}
		return nil, e
	}
	for _, o := range opts {
		critical := o.ID%2 == 1
		rule, known := optionRuleOf(o.ID)
		ok := known && len(o.Value) >= rule.min && len(o.Value) <= rule.max
		if ok && seen[o.ID] && !rule.repeat {
			ok = false // RFC 7252 §5.4.5: a supernumerary occurrence is unrecognised
		}
		if !ok {
			if critical {
				return bad(protoErr(KindBadOption, "bad option"))
			}
			continue
		}
		first := !seen[o.ID]
		seen[o.ID] = true
		switch o.ID {
		case message.URIPath:
			r.path = append(r.path, string(o.Value))
		case message.URIQuery:
			r.query = append(r.query, string(o.Value))
		case message.ContentFormat:
			if first {
				r.format = int(decodeUint(o.Value))
			}
		case message.Accept:
			r.accept = int(decodeUint(o.Value))
		case message.Block1:
			r.block1, r.hasB1 = o.Value, true
		case message.Block2:
			r.block2, r.hasB2 = o.Value, true
		case message.Size1:
			if first {
				r.size1, r.hasSz1 = decodeUint(o.Value), true
			}
		case message.Size2:
			r.hasSz2 = true
		case wire.OptionRequestTag:
			tags = append(tags, hex.EncodeToString(o.Value))
		}
	}
	if len(tags) > 0 {
		// An absent tag and an empty tag are different tags (RFC 9175
		// §3.2.1); the form is est/block's Key.RequestTag.
		r.tag = strings.Join(tags, ",")
		if r.tag == "" {
			r.tag = "-"
		}
	}
	for _, b := range [][]byte{r.block1, r.block2} {
		if len(b) > 0 && b[len(b)-1]&7 == 7 {
			return bad(protoErr(KindBadRequest, "reserved block size"))
		}
		if decodeUint(b)>>4 > 0 {
			r.continuation = true
		}
	}
	if !isMethod(code) {
		return nil, protoErr(KindMethodNotAllowed, "method not allowed")
	}
	return r, nil
}

// decodeUint decodes a CoAP uint option value (RFC 7252 §3.2); callers bound
// the length to 4 bytes.
func decodeUint(v []byte) uint32 {
	var n uint32
	for _, b := range v {
		n = n<<8 | uint32(b)
	}
	return n
}
