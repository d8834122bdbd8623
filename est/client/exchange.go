package client

import (
	"bytes"
	"context"
	"crypto/rand"
	"errors"
	"fmt"
	"time"

	"github.com/plgd-dev/go-coap/v3/message"
	"github.com/plgd-dev/go-coap/v3/message/codes"
	"github.com/plgd-dev/go-coap/v3/message/pool"

	"github.com/estca/estca/est/wire"
)

// request is one logical EST request, before block-wise splitting.
type request struct {
	method    codes.Code
	path      string
	query     []string
	format    message.MediaType
	hasFormat bool
	accept    message.MediaType
	hasAccept bool
	body      []byte
}

// response is one logical response, after Block2 reassembly.
type response struct {
	code      codes.Code
	format    message.MediaType
	hasFormat bool
	maxAge    time.Duration
	payload   []byte
}

// blockOpt is a Block1/Block2 option value (RFC 7959 §2.2).
type blockOpt struct {
	num  uint32
	more bool
	szx  uint8
}

func (b blockOpt) value() uint32 {
	v := b.num<<4 | uint32(b.szx)
	if b.more {
		v |= 8
	}
	return v
}

func (b blockOpt) size() int { return 16 << b.szx }

func decodeBlockOpt(v uint32) (blockOpt, error) {
	b := blockOpt{num: v >> 4, more: v&8 != 0, szx: uint8(v & 7)}
	if b.szx == 7 {
		return b, fmt.Errorf("%w: block option with reserved SZX 7", ErrBadResponse)
	}
	return b, nil
}

// wireResponse is one CoAP response on the wire (one block).
type wireResponse struct {
	response
	block1, block2 *blockOpt
	etag           []byte
}

// do performs one EST request with the 5.03 retry policy; error responses
// become *ResponseError.
func (c *Conn) do(ctx context.Context, what string, req *request) (*response, error) {
	resp, err := c.policy.run(ctx, c.log, what, func() (*response, error) {
		actx, cancel := c.opContext(ctx)
		defer cancel()
		return c.roundTrip(actx, req)
	})
	if err != nil {
		return nil, err
	}
	if err := responseErr(what, resp); err != nil {
		return nil, err
	}
	return resp, nil
}

// roundTrip sends req, using Block1 when its body exceeds the block size, and
// reassembles a Block2 response (RFC 7959 §2, RFC 9148 §4.6). Each block is a
// fresh token; the blocks of one body share a Request-Tag (RFC 9175 §3.2), which
// the Block2 follow-ups repeat so that a server keying by endpoint, method,
// path and Request-Tag finds the stored response.
func (c *Conn) roundTrip(ctx context.Context, req *request) (*response, error) {
	var tag []byte
	var first *wireResponse
	var err error
	if len(req.body) > 16<<c.szx {
		tag = make([]byte, 4)
		_, _ = rand.Read(tag)
		first, err = c.sendBlock1(ctx, req, tag)
	} else {
		var b2 *blockOpt
		if req.method == codes.GET && c.szx < 6 {
			// Early negotiation of a smaller Block2 size (RFC 7959 §2.4).
			b2 = &blockOpt{szx: c.szx}
		}
		first, err = c.send(ctx, req, req.body, tag, nil, b2, false)
	}
	if err != nil {
		return nil, err
	}
	return c.readBlock2(ctx, req, tag, first)
}

// sendBlock1 sends req.body in Block1 blocks and returns the response to the
// last block (or an earlier final error response).
func (c *Conn) sendBlock1(ctx context.Context, req *request, tag []byte) (*wireResponse, error) {
	szx := c.szx
	offset := 0
	for {
		size := 16 << szx
		end := min(offset+size, len(req.body))
		b1 := &blockOpt{num: uint32(offset / size), more: end < len(req.body), szx: szx}
		resp, err := c.send(ctx, req, req.body[offset:end], tag, b1, nil, offset == 0)
		if err != nil {
			return nil, err
		}
		if !b1.more {
			return resp, nil
		}
		switch {
		case resp.code == codes.Continue:
		case resp.code>>5 == 2:
			return nil, fmt.Errorf("%w: %s answered %s before the last Block1 block", ErrBadResponse, req.path, resp.code)
		default:
			return resp, nil // final error, e.g. 4.13 or 4.08
		}
		if resp.block1 == nil {
			return nil, fmt.Errorf("%w: 2.31 Continue without Block1", ErrBadResponse)
		}
		if resp.block1.szx >= szx && resp.block1.num != b1.num {
			return nil, fmt.Errorf("%w: 2.31 acknowledged block %d, sent %d", ErrBadResponse, resp.block1.num, b1.num)
		}
		offset = end
		if resp.block1.szx < szx {
			// The server asks for smaller blocks (RFC 7959 §2.3); it has
			// taken the whole block just sent.
			szx = resp.block1.szx
		}
	}
}

// readBlock2 completes a Block2 response whose first block is first.
func (c *Conn) readBlock2(ctx context.Context, req *request, tag []byte, first *wireResponse) (*response, error) {
	if first.block2 == nil {
		return &first.response, nil
	}
	b := *first.block2
	if b.num != 0 {
		return nil, fmt.Errorf("%w: first Block2 block is %d", ErrBadResponse, b.num)
	}
	out := first.response
	if b.more && len(first.payload) != b.size() {
		return nil, fmt.Errorf("%w: Block2 block of %d bytes for size %d with More set", ErrBadResponse, len(first.payload), b.size())
	}
	body := bytes.Clone(first.payload)
	for b.more {
		szx := min(b.szx, c.szx)
		next := &blockOpt{num: uint32(len(body) / (16 << szx)), szx: szx}
		// "further requests with the same options as the initial request
		// and a Block2 Option" (RFC 7959 §2.4): Content-Format, Accept and
		// Request-Tag stay, the body and Block1 go (RFC 7959 §3.3).
		resp, err := c.send(ctx, req, nil, tag, nil, next, false)
		if err != nil {
			return nil, err
		}
		if resp.code != first.code {
			if resp.code>>5 != 2 {
				return &resp.response, nil
			}
			return nil, fmt.Errorf("%w: Block2 follow-up answered %s, first block %s", ErrBadResponse, resp.code, first.code)
		}
		if resp.block2 == nil {
			return nil, fmt.Errorf("%w: Block2 follow-up without Block2", ErrBadResponse)
		}
		if uint64(resp.block2.num)*uint64(resp.block2.size()) != uint64(len(body)) {
			return nil, fmt.Errorf("%w: asked Block2 offset %d, got block %d of size %d", ErrBadResponse,
				len(body), resp.block2.num, resp.block2.size())
		}
		if first.etag != nil && !bytes.Equal(first.etag, resp.etag) {
			return nil, fmt.Errorf("%w: representation changed between blocks (ETag)", ErrBadResponse)
		}
		if len(resp.payload) > resp.block2.size() || resp.block2.more && len(resp.payload) != resp.block2.size() {
			return nil, fmt.Errorf("%w: Block2 block of %d bytes for size %d", ErrBadResponse, len(resp.payload), resp.block2.size())
		}
		if len(body)+len(resp.payload) > maxResponseBody {
			return nil, fmt.Errorf("%w: response larger than %d bytes", ErrBadResponse, maxResponseBody)
		}
		body = append(body, resp.payload...)
		b = *resp.block2
	}
	out.payload = body
	return &out, nil
}

// send writes one CoAP message (one block) and waits for its response.
func (c *Conn) send(ctx context.Context, req *request, payload, tag []byte, b1, b2 *blockOpt, size1 bool) (*wireResponse, error) {
	msg := c.conn.AcquireMessage(ctx)
	defer c.conn.ReleaseMessage(msg)
	token, err := c.conn.GetToken()
	if err != nil {
		return nil, fmt.Errorf("client: token: %w", err)
	}
	msg.SetToken(token)
	msg.SetCode(req.method)
	msg.SetType(message.Confirmable)
	if err := msg.SetPath(req.path); err != nil {
		return nil, fmt.Errorf("client: path %q: %w", req.path, err)
	}
	for _, q := range req.query {
		msg.AddQuery(q)
	}
	if req.hasFormat {
		msg.SetContentFormat(req.format)
	}
	if req.hasAccept {
		msg.SetAccept(req.accept)
	}
	if tag != nil {
		msg.SetOptionBytes(wire.OptionRequestTag, tag)
	}
	if b1 != nil {
		msg.SetOptionUint32(message.Block1, b1.value())
	}
	if b2 != nil {
		msg.SetOptionUint32(message.Block2, b2.value())
	}
	if size1 {
		msg.SetOptionUint32(message.Size1, uint32(len(req.body)))
	}
	if len(payload) > 0 {
		msg.SetBody(bytes.NewReader(payload))
	}
	resp, err := c.conn.Do(msg)
	if err != nil {
		if ctx.Err() != nil {
			return nil, fmt.Errorf("client: %s %s: no response: %w", req.method, req.path, ctx.Err())
		}
		return nil, fmt.Errorf("client: %s %s: %w", req.method, req.path, err)
	}
	defer c.conn.ReleaseMessage(resp)
	return readWire(resp)
}

// readWire copies what the client needs out of a pooled response message.
func readWire(m *pool.Message) (*wireResponse, error) {
	w := &wireResponse{response: response{code: m.Code(), maxAge: DefaultMaxAge}}
	if f, err := m.ContentFormat(); err == nil {
		w.format, w.hasFormat = f, true
	}
	if v, err := m.GetOptionUint32(message.MaxAge); err == nil {
		w.maxAge = time.Duration(v) * time.Second
	}
	for _, o := range []struct {
		id  message.OptionID
		dst **blockOpt
	}{{message.Block1, &w.block1}, {message.Block2, &w.block2}} {
		v, err := m.GetOptionUint32(o.id)
		if errors.Is(err, message.ErrOptionNotFound) {
			continue
		}
		if err != nil {
			return nil, fmt.Errorf("%w: bad %s option: %w", ErrBadResponse, o.id, err)
		}
		b, err := decodeBlockOpt(v)
		if err != nil {
			return nil, err
		}
		*o.dst = &b
	}
	if etag, err := m.ETag(); err == nil {
		w.etag = bytes.Clone(etag)
	}
	if m.Body() != nil {
		p, err := m.ReadBody()
		if err != nil {
			return nil, fmt.Errorf("client: reading response body: %w", err)
		}
		w.payload = p
	}
	return w, nil
}
