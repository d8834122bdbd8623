package est

import (
	"context"
	"errors"
	"strings"
	"time"

	"github.com/plgd-dev/go-coap/v3/message"
	"github.com/plgd-dev/go-coap/v3/message/codes"
	"github.com/plgd-dev/go-coap/v3/message/noresponse"
	"github.com/plgd-dev/go-coap/v3/message/pool"
	"github.com/plgd-dev/go-coap/v3/net/responsewriter"
	udpclient "github.com/plgd-dev/go-coap/v3/udp/client"
	"github.com/plgd-dev/go-coap/v3/udp/coder"

	"github.com/estca/estca/est/block"
)

// serveCoAP is the go-coap handler of every request: hygiene checks,
// routing, block-wise reassembly, the resource, the audit record of a
// refusal, the response and one log line.
func (s *Server) serveCoAP(w *responsewriter.ResponseWriter[*udpclient.Conn], m *pool.Message) {
	x := &exchange{id: s.reqID.Add(1), start: s.now(), method: m.Code(), resource: "-", target: "-"}
	sess, _ := w.Conn().NetConn().(*session)
	x.peer = w.Conn().RemoteAddr().String()
	if sess != nil && sess.ready.Load() && sess.who.Leaf != nil {
		x.who = &sess.who
	}
	payload, err := m.ReadBody()
	if err != nil {
		payload = nil
	}
	var out block.Outgoing
	var recheck error
	req, err := parseRequest(m.Type(), m.Code(), m.Options(), payload)
	var pe *Error
	switch {
	case errors.Is(err, ErrNotServed) && errors.As(err, &pe):
		// A non-confirmable request with a bad critical option: rejected
		// without an answer (RFC 7252 §5.4.1), but audited and logged.
		x.refused = pe
		s.auditRefusal(x)
		s.report(x)
		return
	case errors.Is(err, ErrNotServed):
		s.log.Debug("request not served", "req", x.id, "peer", x.peer, "type", m.Type().String(), "code", m.Code().String(), "reason", KindOf(err).String())
		s.metrics.request(x.resource, 0)
		return
	case err != nil:
		x.refused = err
		out = s.errorOut(x.id, err)
	case x.who == nil:
		// Cannot happen: the handshake requires an authenticated certificate.
		x.refused = protoErr(KindUnauthenticated, "not authenticated")
		out = s.errorOut(x.id, x.refused)
	case s.recheck(x, req, &recheck):
		// The requester is no longer admitted (revoked since the
		// handshake, manufacturer removed by a reload, expired): refused,
		// and the session closed once the answer is out.
		out = s.errorOut(x.id, recheck)
	default:
		var sessID string
		if sess != nil {
			sessID = sess.id
		}
		out = s.serveRequest(m.Context(), x, sessID, req)
	}
	if out.Code == 0 {
		return
	}
	x.code = codes.Code(out.Code)
	s.auditRefusal(x)
	write, direct := writeOut, false
	if m.Type() == message.NonConfirmable && sess != nil {
		direct = true
		write = func(w *responsewriter.ResponseWriter[*udpclient.Conn], o block.Outgoing) error {
			return sess.writeNon(w, m, o)
		}
	}
	if err := write(w, out); err != nil {
		// No-Response option (RFC 7967) suppressed the answer.
		x.code = 0
	}
	if out.Sensitive {
		clearAfterWrite(m.Context(), direct, out.Payload)
	}
	s.report(x)
	if recheck != nil && sess != nil {
		// go-coap sends the answer after the handler returns.
		time.AfterFunc(closeDelay, func() { _ = s.closeRefused(sess, recheck) })
	}
}

// clearAfterWrite zeroes the payload of a sensitive response once it is
// sent: at once when the handler wrote it itself (direct: writeNon), else
// after go-coap wrote it (its response cache and the write have encoded it
// by then). A response go-coap never writes (session closing) keeps its
// payload until the garbage collector takes it.
func clearAfterWrite(ctx context.Context, direct bool, payload []byte) {
	if direct {
		clear(payload)
		return
	}
	responsewriter.AfterWrite(ctx, func() { clear(payload) })
}

// closeDelay lets the answer to a refused request leave before its session
// is closed.
const closeDelay = 50 * time.Millisecond

// recheck runs Authority.Check for the requester of a request before it is
// served; it reports true (with *err set and the request's target filled in
// for the audit) when the requester is refused.
func (s *Server) recheck(x *exchange, req *request, err *error) bool {
	*err = s.auth.Check(*x.who)
	if *err == nil {
		return false
	}
	x.refused = *err
	x.target = "/" + strings.Join(req.path, "/")
	return true
}

// serveRequest routes a request that passed the hygiene checks, runs it
// through the block-wise Manager and, once per complete request, the
// resource. It fills in x's resource, target, profile and, when this request
// decided a refusal, refused; a stored response replayed by the block layer
// leaves refused nil (it was audited when it was decided).
func (s *Server) serveRequest(ctx context.Context, x *exchange, sessID string, req *request) block.Outgoing {
	refuse := func(err error) block.Outgoing {
		x.refused = err
		return s.errorOut(x.id, err)
	}
	t, err := route(req.path, s.auth.HasProfile)
	if err != nil {
		x.target = "/" + strings.Join(req.path, "/")
		if len(req.path) == 3 && req.path[0] == "est" {
			x.profile = req.path[1]
		}
		return refuse(err)
	}
	x.resource, x.profile = t.resource, t.profile
	if t.profile != "" {
		x.resource = t.profile + "/" + t.resource
	}
	x.target = x.resource
	// Checks that need no body run before any block is buffered.
	if err := s.check(req, t); err != nil {
		return refuse(err)
	}
	in := block.Incoming{
		Key: block.Key{
			Peer:       sessID,
			Method:     uint8(req.method),
			Path:       strings.Join(req.path, "/"),
			RequestTag: req.tag,
		},
		Owner:   identityKey(x.who),
		Size2:   req.hasSz2,
		Payload: req.payload,
	}
	if req.hasSz1 {
		v := req.size1
		in.Size1 = &v
	}
	for _, b := range []struct {
		raw []byte
		has bool
		dst **block.Option
	}{{req.block1, req.hasB1, &in.Block1}, {req.block2, req.hasB2, &in.Block2}} {
		if !b.has {
			continue
		}
		o, err := block.Decode(b.raw)
		if err != nil {
			return refuse(err)
		}
		*b.dst = &o
	}
	d := s.blocks.Request(in)
	if !d.Handle {
		switch {
		case errors.Is(d.Err, block.ErrPeerLimit):
			s.metrics.limitRefusal("transfers-session")
		case errors.Is(d.Err, block.ErrOwnerLimit):
			s.metrics.limitRefusal("transfers-identity")
		case errors.Is(d.Err, block.ErrTotalLimit):
			s.metrics.limitRefusal("transfers-total")
		}
		if d.Err != nil {
			x.refused = d.Err
			d.Reply.Payload = []byte(StatusOf(d.Err).Diagnostic)
			d.Reply.ContentFormat = nil
		}
		return d.Reply
	}
	req.payload = d.Body
	resp, err := s.serve(ctx, x.who, req, t)
	var r block.Response
	if err != nil {
		x.refused = err
		e := s.errorOut(x.id, err)
		r = block.Response{Code: e.Code, MaxAge: e.MaxAge, Body: e.Payload}
	} else {
		r = block.Response{Code: uint8(resp.code), Body: resp.body, Sensitive: resp.sensitive}
		if resp.format >= 0 {
			f := uint16(resp.format)
			r.ContentFormat = &f
		}
	}
	return s.blocks.Respond(in, r)
}

// errorOut renders err through StatusOf; internal errors are logged with
// their detail under the request id and answered 5.00 without it.
func (s *Server) errorOut(id uint64, err error) block.Outgoing {
	st := StatusOf(err)
	if st.Kind == KindInternal {
		s.log.Error("internal error", "req", id, "error", err)
	}
	out := block.Outgoing{Code: uint8(st.Code), Payload: []byte(st.Diagnostic)}
	if st.MaxAge > 0 {
		a := uint32(st.MaxAge.Seconds())
		out.MaxAge = &a
	}
	if st.Code == codes.RequestEntityTooLarge {
		m := uint32(s.o.BlockMaxBody)
		out.Size1 = &m
	}
	return out
}

// writeOut puts o into the go-coap response, honouring No-Response (RFC 7967).
func writeOut(w *responsewriter.ResponseWriter[*udpclient.Conn], o block.Outgoing) error {
	if err := w.SetResponse(codes.Code(o.Code), 0, nil); err != nil {
		return err
	}
	o.Apply(w.Message())
	return nil
}

// writeNon sends the response to a NON request as a NON message with a new
// Message ID (RFC 7252 §5.2.3), honouring No-Response (RFC 7967). go-coap
// v3.8.0 sends responses to NON requests as CON and retransmits them until
// acknowledged, with no hook to change that; so the server writes the NON
// response to the session itself and leaves go-coap's response untouched,
// which go-coap then does not send.
func (c *session) writeNon(w *responsewriter.ResponseWriter[*udpclient.Conn], req *pool.Message, o block.Outgoing) error {
	if v, err := req.Options().GetUint32(message.NoResponse); err == nil {
		if err := noresponse.IsNoResponseCode(codes.Code(o.Code), v); err != nil {
			return err
		}
	}
	msg := w.Conn().AcquireMessage(req.Context())
	defer w.Conn().ReleaseMessage(msg)
	o.Apply(msg)
	msg.SetType(message.NonConfirmable)
	msg.SetMessageID(w.Conn().GetMessageID())
	msg.SetToken(req.Token())
	b, err := msg.MarshalWithEncoder(coder.DefaultCoder)
	if err != nil {
		return err
	}
	_, err = c.Conn.Write(b)
	return err
}
