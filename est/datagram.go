package est

import (
	"encoding/binary"
	"time"

	"github.com/plgd-dev/go-coap/v3/message"
	"github.com/plgd-dev/go-coap/v3/message/codes"
	"github.com/plgd-dev/go-coap/v3/udp/coder"

	"github.com/estca/estca/est/block"
)

// Datagram-level rules applied in session.Read before go-coap sees a
// datagram (RFC 7252 §3, §4.1-§4.5), where go-coap is more lenient than the
// RFC or has no hook:
//
//   - a message whose version is not 1 is silently ignored (§3);
//   - an Empty message (0.00) with a token, options or payload, a token
//     length of 9-15, or a code of a reserved class (1, 6, 7) is a message
//     format error: a CON or NON is rejected with RST (§4.1, §4.2, §4.3),
//     an ACK or RST is ignored; go-coap would ACK it;
//   - a request larger than Options.MaxMessageSize is answered 4.13 with
//     Block1 (the size the server takes, SZX 6) and Size1 (the largest body)
//     (RFC 7959 §2.9.3), in an ACK for a CON and a NON for a NON; with the
//     session's buffers it would otherwise end the DTLS session;
//   - a duplicate NON request (same Message ID within NON_LIFETIME) is
//     silently ignored (§4.5).

// nonLifetime is NON_LIFETIME with the default parameters (RFC 7252 §4.8.2).
const nonLifetime = 145 * time.Second

// nonSeenMax is the number of NON Message IDs a session remembers.
const nonSeenMax = 16

type nonSeen struct {
	mid uint16
	at  time.Time
}

// header is the fixed part of a CoAP message (RFC 7252 §3).
type header struct {
	typ   message.Type
	tkl   int
	code  codes.Code
	mid   uint16
	token []byte
}

func parseHeader(d []byte) (header, bool) {
	if len(d) < 4 || d[0]>>6 != 1 {
		return header{}, false
	}
	h := header{typ: message.Type(d[0] >> 4 & 3), tkl: int(d[0] & 0xf), code: codes.Code(d[1]), mid: binary.BigEndian.Uint16(d[2:4])}
	if h.tkl <= 8 && len(d) >= 4+h.tkl {
		h.token = d[4 : 4+h.tkl]
	}
	return h, true
}

// reset is the RST matching message ID mid (RFC 7252 §4.2).
func reset(mid uint16) []byte {
	return []byte{0x70, 0, byte(mid >> 8), byte(mid)}
}

// screenDatagram applies the rules above to one datagram; it reports true
// when the datagram was handled here and must not reach go-coap.
func (c *session) screenDatagram(d []byte) bool {
	h, ok := parseHeader(d)
	if !ok {
		return true // not CoAP version 1: silently ignored
	}
	request := h.typ == message.Confirmable || h.typ == message.NonConfirmable
	class := h.code >> 5
	formatError := h.tkl > 8 || (h.code == codes.Empty && len(d) > 4) || class == 1 || class == 6 || class == 7
	if formatError {
		if request {
			_, _ = c.Conn.Write(reset(h.mid))
		}
		return true
	}
	if !request || h.code == codes.Empty || class != 0 {
		return false
	}
	if len(d) > c.srv.o.MaxMessageSize {
		c.tooLarge(h)
		return true
	}
	if h.typ == message.NonConfirmable {
		now := c.srv.now()
		for _, s := range c.nonSeen {
			if s.mid == h.mid && now.Sub(s.at) < nonLifetime {
				return true
			}
		}
		if len(c.nonSeen) >= nonSeenMax {
			copy(c.nonSeen, c.nonSeen[1:])
			c.nonSeen = c.nonSeen[:nonSeenMax-1]
		}
		c.nonSeen = append(c.nonSeen, nonSeen{mid: h.mid, at: now})
	}
	return false
}

// tooLarge answers a request larger than MaxMessageSize with 4.13.
func (c *session) tooLarge(h header) {
	s := c.srv
	x := &exchange{id: s.reqID.Add(1), start: s.now(), peer: c.RemoteAddr().String(), method: h.code,
		resource: "-", target: "-", refused: protoErr(KindTooLarge, "request entity too large")}
	if c.ready.Load() && c.who.Leaf != nil {
		x.who = &c.who
	}
	st := StatusOf(x.refused)
	size1 := uint32(s.o.BlockMaxBody)
	resp := message.Message{Type: message.Acknowledgement, Code: st.Code, MessageID: int32(h.mid), Token: h.token,
		Options: message.Options{
			{ID: message.Block1, Value: block.Option{SZX: block.MaxSZX}.Encode()},
			{ID: message.Size1, Value: uintValue(size1)},
		},
		Payload: []byte(st.Diagnostic)}
	if h.typ == message.NonConfirmable {
		resp.Type, resp.MessageID = message.NonConfirmable, c.nextMID()
	}
	buf := make([]byte, 256)
	n, err := coder.DefaultCoder.Encode(resp, buf)
	if err == nil {
		x.code = st.Code
		s.auditRefusal(x)
		if _, err := c.Conn.Write(buf[:n]); err != nil {
			x.code = 0
		}
	}
	s.report(x)
}

// nextMID returns a Message ID for a message the server sends on its own
// (a NON response): from go-coap's counter of the session when it runs, so
// that the two never collide.
func (c *session) nextMID() int32 {
	if cc := c.cc.Load(); cc != nil {
		return cc.GetMessageID()
	}
	return int32(message.GetMID())
}

// uintValue encodes a CoAP uint option value (RFC 7252 §3.2).
func uintValue(v uint32) []byte {
	var b []byte
	for ; v > 0; v >>= 8 {
		b = append([]byte{byte(v)}, b...)
	}
	return b
}
