package est

import (
	"errors"
	"testing"
	"time"

	"github.com/plgd-dev/go-coap/v3/message"
	"github.com/plgd-dev/go-coap/v3/message/codes"
	"github.com/plgd-dev/go-coap/v3/udp/coder"

	"github.com/estca/estca/est/wire"
)

func TestParseRequest(t *testing.T) {
	t.Parallel()
	path := func(s string) message.Option { return message.Option{ID: message.URIPath, Value: []byte(s)} }
	tests := []struct {
		name string
		typ  message.Type
		code codes.Code
		opts message.Options
		kind ErrorKind // -1: ok
		drop bool      // ErrNotServed
	}{
		{"plain GET", message.Confirmable, codes.GET, message.Options{path("est"), path("crts")}, -1, false},
		{"If-Match", message.Confirmable, codes.GET, message.Options{stOpt(message.IfMatch, 1)}, KindBadOption, false},
		{"If-None-Match", message.Confirmable, codes.GET, message.Options{stOpt(message.IfNoneMatch)}, KindBadOption, false},
		{"OSCORE", message.Confirmable, codes.GET, message.Options{stOpt(9, 1)}, KindBadOption, false},
		{"Proxy-Uri", message.Confirmable, codes.GET, message.Options{stOpt(message.ProxyURI, 'x')}, KindBadOption, false},
		{"Q-Block1", message.Confirmable, codes.POST, message.Options{stOpt(message.QBlock1, 8)}, KindBadOption, false},
		{"unknown critical", message.Confirmable, codes.GET, message.Options{stOpt(2049, 1)}, KindBadOption, false},
		{"unknown elective", message.Confirmable, codes.GET, message.Options{stOpt(2048, 1)}, -1, false},
		{"Accept too long", message.Confirmable, codes.GET, message.Options{stOpt(message.Accept, 1, 2, 3)}, KindBadOption, false},
		{"Accept repeated", message.Confirmable, codes.GET, message.Options{stUint(message.Accept, 281), stUint(message.Accept, 287)}, KindBadOption, false},
		{"Uri-Host empty", message.Confirmable, codes.GET, message.Options{stOpt(message.URIHost)}, KindBadOption, false},
		{"Uri-Port 3 bytes", message.Confirmable, codes.GET, message.Options{stOpt(message.URIPort, 1, 2, 3)}, KindBadOption, false},
		{"Block1 4 bytes", message.Confirmable, codes.POST, message.Options{stOpt(message.Block1, 1, 2, 3, 4)}, KindBadOption, false},
		{"Block2 repeated", message.Confirmable, codes.GET, message.Options{stUint(message.Block2, 2), stUint(message.Block2, 18)}, KindBadOption, false},
		{"Block2 SZX 7", message.Confirmable, codes.GET, message.Options{stUint(message.Block2, 7)}, KindBadRequest, false},
		{"Block1 SZX 7", message.Confirmable, codes.POST, message.Options{stUint(message.Block1, 0x17)}, KindBadRequest, false},
		{"Content-Format repeated is ignored", message.Confirmable, codes.POST, message.Options{stUint(message.ContentFormat, 286), stUint(message.ContentFormat, 0)}, -1, false},
		{"Content-Format too long is ignored", message.Confirmable, codes.POST, message.Options{stOpt(message.ContentFormat, 1, 2, 3)}, -1, false},
		{"Size1 too long is ignored", message.Confirmable, codes.POST, message.Options{stOpt(message.Size1, 1, 2, 3, 4, 5)}, -1, false},
		{"Request-Tag repeated", message.Confirmable, codes.POST, message.Options{stOpt(wire.OptionRequestTag, 1), stOpt(wire.OptionRequestTag, 2)}, -1, false},
		{"Request-Tag too long is ignored", message.Confirmable, codes.POST, message.Options{stOpt(wire.OptionRequestTag, 1, 2, 3, 4, 5, 6, 7, 8, 9)}, -1, false},
		{"NON bad option", message.NonConfirmable, codes.GET, message.Options{stOpt(message.IfMatch, 1)}, KindBadOption, true},
		{"NON SZX 7", message.NonConfirmable, codes.GET, message.Options{stUint(message.Block2, 7)}, KindBadRequest, true},
		{"NON plain", message.NonConfirmable, codes.GET, nil, -1, false},
		{"ACK carrying GET", message.Acknowledgement, codes.GET, nil, KindInternal, true},
		{"RST carrying GET", message.Reset, codes.GET, nil, KindInternal, true},
		{"response code", message.Confirmable, codes.Content, nil, KindInternal, true},
		{"FETCH parses, routing refuses", message.Confirmable, 5, nil, -1, false},
		{"iPATCH parses, routing refuses", message.Confirmable, 7, nil, -1, false},
		{"0.08", message.Confirmable, 8, nil, KindMethodNotAllowed, false},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			r, err := parseRequest(tt.typ, tt.code, tt.opts, nil)
			if tt.drop != errors.Is(err, ErrNotServed) {
				t.Fatalf("err %v, not-served want %v", err, tt.drop)
			}
			if tt.kind == -1 {
				if err != nil || r == nil {
					t.Fatalf("err %v, want a request", err)
				}
				return
			}
			if err == nil {
				t.Fatal("no error")
			}
			if !tt.drop && KindOf(err) != tt.kind {
				t.Fatalf("kind %v, want %v", KindOf(err), tt.kind)
			}
		})
	}
	r, err := parseRequest(message.Confirmable, codes.POST, message.Options{
		path("est"), path("sen"), stUint(message.ContentFormat, 286), stUint(message.ContentFormat, 0),
		stUint(message.Accept, 287), stUint(message.Block1, 0x1a), stUint(message.Size1, 3000),
		stOpt(wire.OptionRequestTag), stUint(message.Size2, 0),
	}, []byte("x"))
	if err != nil {
		t.Fatal(err)
	}
	if r.format != 286 || r.accept != 287 || !r.hasB1 || !r.continuation || r.size1 != 3000 || r.tag != "-" || !r.hasSz2 ||
		len(r.path) != 2 || r.path[1] != "sen" {
		t.Fatalf("parsed %+v", r)
	}
}

// TestServerHygiene sends unusual and malformed messages over a real DTLS
// session and checks the answers (RFC 7252 §3, §4.2, §5.4) and that the
// server keeps serving.
func TestServerHygiene(t *testing.T) {
	t.Parallel()
	e := stStart(t, nil)
	c := e.dial(t)
	crts := "/.well-known/est/crts"
	ok := func() {
		t.Helper()
		if r := c.do(stMsg{code: codes.GET, path: crts}); r.Code != codes.Content {
			t.Fatalf("server stopped serving: %v", r.Code)
		}
	}
	csr, _ := stCSR(t, "device hygiene", 0)
	tests := []struct {
		name string
		msg  stMsg
		code codes.Code
		diag string
	}{
		{"unknown critical option", stMsg{code: codes.GET, path: crts, opts: message.Options{stOpt(2049, 1)}}, codes.BadOption, "bad option"},
		{"If-Match", stMsg{code: codes.GET, path: crts, opts: message.Options{stOpt(message.IfMatch, 1)}}, codes.BadOption, "bad option"},
		{"Proxy-Uri", stMsg{code: codes.GET, path: crts, opts: message.Options{stOpt(message.ProxyURI, 'x')}}, codes.BadOption, "bad option"},
		{"Accept repeated", stMsg{code: codes.GET, path: crts, opts: message.Options{stUint(message.Accept, 281), stUint(message.Accept, 281)}}, codes.BadOption, "bad option"},
		{"Accept 3 bytes", stMsg{code: codes.GET, path: crts, opts: message.Options{stOpt(message.Accept, 0, 1, 0x19)}}, codes.BadOption, "bad option"},
		{"Block2 SZX 7", stMsg{code: codes.GET, path: crts, opts: message.Options{stUint(message.Block2, 7)}}, codes.BadRequest, "reserved block size"},
		{"unknown elective option", stMsg{code: codes.GET, path: crts, opts: message.Options{stOpt(2048, 1)}}, codes.Content, ""},
		{"Content-Format repeated", stMsg{code: codes.POST, path: "/est/sen", opts: message.Options{stUint(message.ContentFormat, 286), stUint(message.ContentFormat, 0)}, payload: csr}, codes.Changed, ""},
		{"Echo and No-Response 0", stMsg{code: codes.GET, path: crts, opts: message.Options{stOpt(message.Echo, 1, 2), stUint(message.NoResponse, 0)}}, codes.Content, ""},
	}
	for _, tt := range tests {
		r := c.do(tt.msg)
		if r.Code != tt.code || tt.diag != "" && string(r.Payload) != tt.diag {
			t.Errorf("%s: %v %q, want %v %q", tt.name, r.Code, r.Payload, tt.code, tt.diag)
		}
		ok()
	}

	// Non-confirmable requests with a bad critical option are not served.
	for _, opts := range []message.Options{{stOpt(message.IfMatch, 1)}, {stOpt(2049, 1)}, {stUint(message.Block2, 7)}} {
		if r, got := c.roundTrip(stMsg{typ: message.NonConfirmable, code: codes.GET, path: crts, opts: opts}, 300*time.Millisecond); got {
			t.Errorf("NON with %v answered %v", opts[0].ID, r.Code)
		}
	}
	// go-coap answers a NON request with a separate CON response (allowed by
	// RFC 7252 §5.2.3).
	if r := c.do(stMsg{typ: message.NonConfirmable, code: codes.GET, path: crts}); r.Code != codes.Content || r.Type == message.Acknowledgement {
		t.Errorf("NON GET: %v %v", r.Type, r.Code)
	}
	// An ACK carrying a request code is not a request.
	if r, got := c.roundTrip(stMsg{typ: message.Acknowledgement, code: codes.GET, path: crts}, 300*time.Millisecond); got {
		t.Errorf("ACK-typed GET answered %v %v", r.Type, r.Code)
	}
	ok()

	// Unparsable messages: RST for CON (go-coap's session), never served.
	hdr := func(mid byte) []byte { return []byte{0x41, 0x01, 0x7f, mid, 0xaa} } // CON GET, TKL 1
	for name, raw := range map[string][]byte{
		"payload marker without payload": append(hdr(1), 0xb3, 'e', 's', 't', 0xff),
		"option delta 15":                append(hdr(2), 0xf1, 0x00),
		"option length past end":         append(hdr(3), 0xb9, 'e', 's'),
		"token length 9":                 {0x49, 0x01, 0x7f, 0x04, 1, 2, 3, 4, 5, 6, 7, 8, 9},
	} {
		if _, err := c.c.Write(raw); err != nil {
			t.Fatal(err)
		}
		buf := make([]byte, 256)
		_ = c.c.SetReadDeadline(time.Now().Add(300 * time.Millisecond))
		n, err := c.c.Read(buf)
		switch {
		case err != nil:
			// Dropped: acceptable for messages without a parsable header.
			if name != "token length 9" {
				t.Errorf("%s: no RST", name)
			}
		default:
			var m message.Message
			m.Options = make(message.Options, 0, 8)
			if _, err := coder.DefaultCoder.Decode(buf[:n], &m); err != nil || m.Type != message.Reset || m.Code != codes.Empty {
				t.Errorf("%s: answered %v %v (%v), want RST", name, m.Type, m.Code, err)
			}
		}
		ok()
	}
}

// FuzzRequest runs arbitrary bytes through the CoAP decoder, the hygiene
// checks and the routing decision: no panic, and consistent outcomes.
func FuzzRequest(f *testing.F) {
	f.Add([]byte{0x41, 0x01, 0x00, 0x01, 0xaa, 0xbb, '.', 'w', 'e', 'l', 'l', '-', 'k', 'n', 'o', 'w', 'n', 0x03, 'e', 's', 't', 0x04, 'c', 'r', 't', 's'})
	f.Add([]byte{0x51, 0x02, 0x00, 0x02, 0xaa, 0xb3, 'e', 's', 't', 0x03, 's', 'e', 'n', 0x12, 0x01, 0x1e, 0xff, 0x30})
	f.Add([]byte{0x40, 0x01, 0x00, 0x03, 0x11, 0x01, 0xb3, 'e', 's', 't', 0x03, 'i', 'o', 't', 0x03, 'a', 't', 't', 0xc1, 0x07})
	f.Add([]byte{0x40, 0x02, 0x00, 0x04, 0xd1, 0x0e, 0x1e, 0xd0, 0x08, 0xe1, 0x00, 0xff, 0xff, 0x01})
	f.Fuzz(func(t *testing.T, data []byte) {
		m := message.Message{Options: make(message.Options, 0, 64)}
		if _, err := coder.DefaultCoder.Decode(data, &m); err != nil {
			return // go-coap answers RST (CON) or drops
		}
		r, err := parseRequest(m.Type, m.Code, m.Options, m.Payload)
		if err != nil {
			if r != nil {
				t.Fatal("request and error")
			}
			st := StatusOf(err)
			if !errors.Is(err, ErrNotServed) && (st.Code>>5 != 4 || st.Kind == KindInternal) {
				t.Fatalf("hygiene error %v mapped to %v", err, st.Code)
			}
			return
		}
		tg, err := route(r.path, func(l string) bool { return l == "iot" })
		if err != nil {
			if KindOf(err) != KindNotFound {
				t.Fatalf("route error %v", err)
			}
			return
		}
		if tg.profile != "" && tg.profile != "iot" {
			t.Fatalf("unknown profile %q routed", tg.profile)
		}
		s := &Server{}
		if err := s.check(r, tg); err != nil && StatusOf(err).Kind == KindInternal {
			t.Fatalf("check: %v", err)
		}
	})
}
