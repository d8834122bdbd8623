package est

import (
	"context"
	"errors"
	"log/slog"
	"strings"

	"github.com/plgd-dev/go-coap/v3/message/codes"
	"github.com/plgd-dev/go-coap/v3/message/pool"
	"github.com/plgd-dev/go-coap/v3/net/responsewriter"
	udpclient "github.com/plgd-dev/go-coap/v3/udp/client"

	"github.com/estca/estca/ca"
	"github.com/estca/estca/est/block"
)

// serveCoAP is the go-coap handler of every request: hygiene checks,
// routing, block-wise reassembly, the resource, the response and one log line.
func (s *Server) serveCoAP(w *responsewriter.ResponseWriter[*udpclient.Conn], m *pool.Message) {
	start := s.now()
	id := s.reqID.Add(1)
	sess, _ := w.Conn().NetConn().(*session)
	var who *ca.Requester
	peer := w.Conn().RemoteAddr().String()
	if sess != nil && sess.ready.Load() && sess.who.Leaf != nil {
		who = &sess.who
	}
	payload, err := m.ReadBody()
	if err != nil {
		payload = nil
	}
	resource := "-"
	var out block.Outgoing
	req, err := parseRequest(m.Type(), m.Code(), m.Options(), payload)
	switch {
	case errors.Is(err, ErrNotServed):
		s.log.Debug("request not served", "req", id, "peer", peer, "type", m.Type().String(), "code", m.Code().String(), "reason", KindOf(err).String())
		s.metrics.request(resource, 0)
		return
	case err != nil:
		out = s.errorOut(id, err)
	case who == nil:
		// Cannot happen: the handshake requires an authenticated certificate.
		out = s.errorOut(id, protoErr(KindUnauthenticated, "not authenticated"))
	default:
		var sessID string
		if sess != nil {
			sessID = sess.id
		}
		resource, out = s.serveRequest(m.Context(), id, sessID, who, req)
	}
	if out.Code == 0 {
		return
	}
	if err := writeOut(w, out); err != nil {
		// No-Response option (RFC 7967) suppressed the answer.
		out.Code = 0
	}
	fp, subject := identity(who)
	s.metrics.request(resource, codes.Code(out.Code))
	s.log.LogAttrs(context.Background(), slog.LevelInfo, "est request",
		slog.Uint64("req", id),
		slog.String("peer", peer),
		slog.String("identity", fp),
		slog.String("subject", subject),
		slog.String("method", m.Code().String()),
		slog.String("resource", resource),
		slog.String("code", codeString(codes.Code(out.Code))),
		slog.Duration("duration", s.now().Sub(start)),
	)
}

// serveRequest routes a request that passed the hygiene checks, runs it
// through the block-wise Manager and, once per complete request, the resource.
func (s *Server) serveRequest(ctx context.Context, id uint64, sessID string, who *ca.Requester, req *request) (string, block.Outgoing) {
	t, err := route(req.path, s.auth.HasProfile)
	if err != nil {
		return "-", s.errorOut(id, err)
	}
	resource := t.resource
	if t.profile != "" {
		resource = t.profile + "/" + t.resource
	}
	// Checks that need no body run before any block is buffered.
	if err := s.check(req, t); err != nil {
		return resource, s.errorOut(id, err)
	}
	in := block.Incoming{
		Key: block.Key{
			Peer:       sessID,
			Method:     uint8(req.method),
			Path:       strings.Join(req.path, "/"),
			RequestTag: req.tag,
		},
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
			return resource, s.errorOut(id, err)
		}
		*b.dst = &o
	}
	d := s.blocks.Request(in)
	if !d.Handle {
		if d.Err != nil {
			d.Reply.Payload = []byte(StatusOf(d.Err).Diagnostic)
			d.Reply.ContentFormat = nil
		}
		return resource, d.Reply
	}
	req.payload = d.Body
	resp, err := s.serve(ctx, who, req, t)
	var r block.Response
	if err != nil {
		e := s.errorOut(id, err)
		r = block.Response{Code: e.Code, MaxAge: e.MaxAge, Body: e.Payload}
	} else {
		r = block.Response{Code: uint8(resp.code), Body: resp.body}
		if resp.format >= 0 {
			f := uint16(resp.format)
			r.ContentFormat = &f
		}
	}
	return resource, s.blocks.Respond(in, r)
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
