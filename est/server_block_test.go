package est

import (
	"bytes"
	"crypto/ecdsa"
	"crypto/x509"
	"testing"

	"github.com/plgd-dev/go-coap/v3/message"
	"github.com/plgd-dev/go-coap/v3/message/codes"

	"github.com/estca/estca/est/block"
	"github.com/estca/estca/est/wire"
)

func stBlock(id message.OptionID, num uint32, more bool, szx uint8) message.Option {
	return message.Option{ID: id, Value: block.Option{Num: num, More: more, SZX: szx}.Encode()}
}

func (r stReply) block(t *testing.T, id message.OptionID) (block.Option, bool) {
	t.Helper()
	for _, o := range r.Options {
		if o.ID == id {
			b, err := block.Decode(o.Value)
			if err != nil {
				t.Fatalf("response block option: %v", err)
			}
			return b, true
		}
	}
	return block.Option{}, false
}

// stPostBlocks sends body to path in Block1 blocks of 16<<szx bytes, a fresh
// token per block (like libcoap) and the given Request-Tag; the last block
// asks for Block2 blocks of 16<<b2szx bytes. It returns the last response.
func stPostBlocks(t *testing.T, c *stConn, path string, body []byte, szx, b2szx uint8, tag []byte) stReply {
	t.Helper()
	size := 16 << szx
	for num := 0; ; num++ {
		off := num * size
		end := min(off+size, len(body))
		more := end < len(body)
		opts := message.Options{stUint(message.ContentFormat, 286), stBlock(message.Block1, uint32(num), more, szx)}
		if tag != nil {
			opts = append(opts, stOpt(wire.OptionRequestTag, tag...))
		}
		if num == 0 {
			opts = append(opts, stUint(message.Size1, uint32(len(body))))
		}
		if !more {
			opts = append(opts, stBlock(message.Block2, 0, false, b2szx))
		}
		r := c.do(stMsg{code: codes.POST, path: path, opts: opts, payload: body[off:end]})
		if !more || r.Code != codes.Continue {
			return r
		}
		b1, ok := r.block(t, message.Block1)
		if !ok || b1.Num != uint32(num) || !b1.More {
			t.Fatalf("2.31 for block %d echoes %v", num, b1)
		}
	}
}

// stFetchBlock2 collects the rest of a Block2 response whose first reply is
// first, re-sending the request without payload (libcoap's follow-ups).
func stFetchBlock2(t *testing.T, c *stConn, method codes.Code, path string, first stReply, tag []byte) []byte {
	t.Helper()
	body := bytes.Clone(first.Payload)
	b2, ok := first.block(t, message.Block2)
	for ok && b2.More {
		opts := message.Options{stBlock(message.Block2, b2.Num+1, false, b2.SZX)}
		if tag != nil {
			opts = append(opts, stOpt(wire.OptionRequestTag, tag...))
		}
		r := c.do(stMsg{code: method, path: path, opts: opts})
		if r.Code != first.Code {
			t.Fatalf("Block2 %d: %v %q", b2.Num+1, r.Code, r.Payload)
		}
		body = append(body, r.Payload...)
		b2, ok = r.block(t, message.Block2)
		if !ok {
			t.Fatal("follow-up without Block2")
		}
	}
	return body
}

func TestServerBlockwise(t *testing.T) {
	t.Parallel()
	e := stStart(t, nil)
	c := e.dial(t)

	t.Run("Block1 and Block2 sen, handler once", func(t *testing.T) {
		csr, key := stCSR(t, "device block", 3000)
		before, _ := e.auth.counts()
		first := stPostBlocks(t, c, "/est/sen", csr, 2, 1, []byte{7, 7})
		if first.Code != codes.Changed {
			t.Fatalf("final block: %v %q", first.Code, first.Payload)
		}
		if b1, ok := first.block(t, message.Block1); !ok || b1.More {
			t.Fatalf("final response Block1 %v %v", b1, ok)
		}
		if b2, ok := first.block(t, message.Block2); !ok || b2.SZX != 1 || !b2.More || len(first.Payload) != 32 {
			t.Fatalf("first Block2 %v (%d bytes)", b2, len(first.Payload))
		}
		body := stFetchBlock2(t, c, codes.POST, "/est/sen", first, []byte{7, 7})
		certs := stCertsOnly(t, body)
		if !key.PublicKey.Equal(certs[0].PublicKey) {
			t.Fatal("certificate does not carry the CSR key")
		}
		if after, _ := e.auth.counts(); after != before+1 {
			t.Fatalf("Enroll ran %d times for one request", after-before)
		}
	})

	t.Run("Content-Format on block 0 only", func(t *testing.T) {
		csr, key := stCSR(t, "device cf once", 300)
		var last stReply
		for num, off := 0, 0; off < len(csr); num, off = num+1, off+64 {
			end := min(off+64, len(csr))
			opts := message.Options{stBlock(message.Block1, uint32(num), end < len(csr), 2), stOpt(wire.OptionRequestTag, 9)}
			if num == 0 {
				opts = append(opts, stUint(message.ContentFormat, 286))
			}
			last = c.do(stMsg{code: codes.POST, path: "/est/sen", opts: append(opts, stUint(message.Accept, 287)), payload: csr[off:end]})
		}
		if last.Code != codes.Changed {
			t.Fatalf("final block: %v %q", last.Code, last.Payload)
		}
		// No Block2 asked for: the response comes in the request's 64-byte blocks.
		if b2, ok := last.block(t, message.Block2); !ok || b2.Size() != 64 {
			t.Fatalf("response Block2 %v %v, want 64-byte blocks", b2, ok)
		}
		cert, err := x509.ParseCertificate(stFetchBlock2(t, c, codes.POST, "/est/sen", last, []byte{9}))
		if err != nil || !key.PublicKey.Equal(cert.PublicKey) {
			t.Fatalf("certificate: %v", err)
		}
	})

	t.Run("interleaved Request-Tags", func(t *testing.T) {
		a, ka := stCSR(t, "device tag a", 600)
		b, kb := stCSR(t, "device tag b", 600)
		size := 64
		var lastA, lastB stReply
		for num := 0; num*size < max(len(a), len(b)); num++ {
			for _, x := range []struct {
				body []byte
				tag  byte
				last *stReply
			}{{a, 'a', &lastA}, {b, 'b', &lastB}} {
				off := num * size
				if off >= len(x.body) {
					continue
				}
				end := min(off+size, len(x.body))
				r := c.do(stMsg{code: codes.POST, path: "/.well-known/est/sen", opts: message.Options{
					stUint(message.ContentFormat, 286), stUint(message.Accept, 287),
					stBlock(message.Block1, uint32(num), end < len(x.body), 2), stOpt(wire.OptionRequestTag, x.tag),
				}, payload: x.body[off:end]})
				*x.last = r
			}
		}
		for i, x := range []struct {
			r   stReply
			key *ecdsa.PublicKey
			tag byte
		}{{lastA, &ka.PublicKey, 'a'}, {lastB, &kb.PublicKey, 'b'}} {
			if x.r.Code != codes.Changed {
				t.Fatalf("transfer %d: %v %q", i, x.r.Code, x.r.Payload)
			}
			cert, err := x509.ParseCertificate(stFetchBlock2(t, c, codes.POST, "/.well-known/est/sen", x.r, []byte{x.tag}))
			if err != nil || !x.key.Equal(cert.PublicKey) {
				t.Fatalf("transfer %d: %v", i, err)
			}
		}
	})

	t.Run("GET crts in 16-byte blocks", func(t *testing.T) {
		first := c.do(stMsg{code: codes.GET, path: "/.well-known/est/crts", opts: message.Options{stBlock(message.Block2, 0, false, 0)}})
		body := stFetchBlock2(t, c, codes.GET, "/.well-known/est/crts", first, nil)
		if certs := stCertsOnly(t, body); !certs[0].Equal(e.ca.Cert) {
			t.Fatal("reassembled crts differ")
		}
	})

	t.Run("too large by Size1", func(t *testing.T) {
		r := c.do(stMsg{code: codes.POST, path: "/est/sen", opts: message.Options{
			stUint(message.ContentFormat, 286), stBlock(message.Block1, 0, true, 6), stUint(message.Size1, 70<<10),
		}, payload: make([]byte, 1024)})
		if v, ok := r.uintOpt(message.Size1); r.Code != codes.RequestEntityTooLarge || !ok || v != 64<<10 {
			t.Fatalf("%v Size1 %d %v", r.Code, v, ok)
		}
	})

	t.Run("70 KiB body", func(t *testing.T) {
		body := bytes.Repeat([]byte{0x30}, 70<<10)
		r := stPostBlocks(t, c, "/est/sen", body, 6, 6, []byte{9})
		if r.Code != codes.RequestEntityTooLarge || string(r.Payload) != "request entity too large" {
			t.Fatalf("%v %q", r.Code, r.Payload)
		}
	})

	t.Run("out of order", func(t *testing.T) {
		r := c.do(stMsg{code: codes.POST, path: "/est/sen", opts: message.Options{
			stUint(message.ContentFormat, 286), stBlock(message.Block1, 3, true, 2), stOpt(wire.OptionRequestTag, 3),
		}, payload: make([]byte, 64)})
		if r.Code != codes.RequestEntityIncomplete {
			t.Fatalf("%v %q", r.Code, r.Payload)
		}
	})

	t.Run("wrong format refused before buffering", func(t *testing.T) {
		r := c.do(stMsg{code: codes.POST, path: "/est/sen", opts: message.Options{
			stUint(message.ContentFormat, 0), stBlock(message.Block1, 0, true, 2),
		}, payload: make([]byte, 64)})
		if r.Code != codes.UnsupportedMediaType {
			t.Fatalf("%v", r.Code)
		}
		if st := e.srv.blocks.Stats(); st.Transfers != 0 || st.Buffered != 0 {
			t.Fatalf("state kept: %+v", st)
		}
	})

	// The server still serves after every refusal.
	if r := c.do(stMsg{code: codes.GET, path: "/est/crts"}); r.Code != codes.Content {
		t.Fatalf("after block errors: %v", r.Code)
	}
}
