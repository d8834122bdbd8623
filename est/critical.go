package est

import (
	"errors"
	"strings"

	"github.com/plgd-dev/go-coap/v3/message"
	"github.com/plgd-dev/go-coap/v3/message/codes"
	coapclient "github.com/plgd-dev/go-coap/v3/net/client"
	"github.com/plgd-dev/go-coap/v3/udp/coder"
)

// Unknown critical options and go-coap.
//
// go-coap v3.8.0 answers a CON request carrying a critical option outside its
// option table (or one of its table with a length outside the defined range)
// itself, with 4.02 and its library diagnostic "unknown critical option(s):
// N", and drops such a NON request. It does so in udp/client
// Conn.Process → processUnknownCriticalOptions, right after decoding the
// datagram and before the request monitor, the ProcessReceivedMessage hook
// or any handler: no go-coap option reaches it. The only layer that sees the
// datagram earlier is the net.Conn go-coap reads from, which is the server's
// own *session (go-coap's DTLS session calls its Read through net.Conn). So
// session.Read screens each datagram with go-coap's own rule
// (net/client.GetUnknownCriticalOptionsWithQBlock, Q-Block disabled as in
// this server) and answers those requests itself: 4.02 with the fixed
// diagnostic "bad option" for CON, nothing for NON, counted, logged and
// audited like any request the handler refuses. go-coap never sees them.
// Critical options that go-coap knows but estca does not implement are
// rejected by parseRequest in the handler, with the same answer.

// Read returns the next datagram of the session to go-coap, after answering
// requests that go-coap would reject for an unknown critical option (see
// above). It is called by go-coap's session loop only, one call at a time.
func (c *session) Read(b []byte) (int, error) {
	for {
		n, err := c.Conn.Read(b)
		if err != nil || (!c.screenDatagram(b[:n]) && !c.screen(b[:n])) {
			return n, err
		}
	}
}

// screen answers data and reports true when it is a request that go-coap
// would answer itself for an unknown critical option; otherwise (including
// undecodable data, which go-coap answers with RST or drops) it reports false
// and leaves data to go-coap.
func (c *session) screen(data []byte) bool {
	m := message.Message{Options: make(message.Options, 0, 16)}
	_, err := coder.DefaultCoder.Decode(data, &m)
	if errors.Is(err, message.ErrOptionsTooSmall) {
		// Every option takes at least one byte.
		m = message.Message{Options: make(message.Options, 0, len(data))}
		_, err = coder.DefaultCoder.Decode(data, &m)
	}
	if err != nil || (m.Type != message.Confirmable && m.Type != message.NonConfirmable) ||
		m.Code < codes.GET || m.Code >= 32 {
		return false
	}
	if len(coapclient.GetUnknownCriticalOptionsWithQBlock(m.Options, false)) == 0 {
		return false
	}
	s := c.srv
	// A retransmission of the CON just refused gets the same answer again
	// (RFC 7252 §4.5) and no second audit record.
	if m.Type == message.Confirmable && c.lastRefusal != nil && c.lastRefusalMID == m.MessageID {
		_, _ = c.Conn.Write(c.lastRefusal)
		return true
	}
	x := &exchange{id: s.reqID.Add(1), start: s.now(), peer: c.RemoteAddr().String(), method: m.Code,
		resource: "-", target: "-", refused: protoErr(KindBadOption, "bad option")}
	if c.ready.Load() && c.who.Leaf != nil {
		x.who = &c.who
	}
	var path []string
	for _, o := range m.Options {
		if o.ID == message.URIPath {
			path = append(path, string(o.Value))
		}
	}
	if t, err := route(path, s.auth.HasProfile); err == nil {
		x.resource, x.profile = t.resource, t.profile
		if t.profile != "" {
			x.resource = t.profile + "/" + t.resource
		}
		x.target = x.resource
	} else if len(path) > 0 {
		x.target = "/" + strings.Join(path, "/")
	}
	var answer []byte
	if m.Type == message.Confirmable {
		if answer = encodeRefusal(m, x.refused); answer != nil {
			x.code = StatusOf(x.refused).Code
		}
	}
	s.auditRefusal(x)
	if answer != nil {
		if _, err := c.Conn.Write(answer); err != nil {
			x.code = 0
		}
		c.lastRefusal, c.lastRefusalMID = answer, m.MessageID
	}
	s.report(x)
	return true
}

// encodeRefusal builds the piggybacked ACK answering CON request m with err's
// code and fixed diagnostic, without Content-Format like the handler's error
// answers (RFC 7252 §5.5.2). It returns nil if the answer cannot be encoded.
func encodeRefusal(m message.Message, err error) []byte {
	st := StatusOf(err)
	resp := message.Message{Type: message.Acknowledgement, Code: st.Code, MessageID: m.MessageID,
		Token: m.Token, Payload: []byte(st.Diagnostic)}
	n, encErr := coder.DefaultCoder.Size(resp)
	if encErr != nil {
		return nil
	}
	buf := make([]byte, n)
	if n, encErr = coder.DefaultCoder.Encode(resp, buf); encErr != nil {
		return nil
	}
	return buf[:n]
}
