package block

import (
	"bytes"
	"context"
	"errors"
	"testing"

	"github.com/plgd-dev/go-coap/v3/message"
	"github.com/plgd-dev/go-coap/v3/message/codes"
	"github.com/plgd-dev/go-coap/v3/message/pool"
)

func TestFromMessage(t *testing.T) {
	t.Parallel()
	build := func(opts ...message.Option) *pool.Message {
		m := pool.NewMessage(context.Background())
		m.SetCode(codes.POST)
		m.MustSetPath("/.well-known/est/sen")
		for _, o := range opts {
			m.AddOptionBytes(o.ID, o.Value)
		}
		m.SetBody(bytes.NewReader([]byte("payload")))
		return m
	}
	b1 := message.Option{ID: message.Block1, Value: Option{Num: 2, More: true, SZX: 2}.Encode()}
	b2 := message.Option{ID: message.Block2, Value: Option{Num: 1, SZX: 6}.Encode()}
	in, err := FromMessage("peer", build(b1, b2,
		message.Option{ID: message.Size1, Value: []byte{0x05, 0xDC}},
		message.Option{ID: message.Size2, Value: []byte{}},
		message.Option{ID: OptionRequestTag, Value: []byte{0x54, 0xDB}}))
	if err != nil {
		t.Fatal(err)
	}
	want := Key{Peer: "peer", Method: MethodPOST, Path: "/.well-known/est/sen", RequestTag: "54db"}
	if in.Key != want || *in.Block1 != (Option{Num: 2, More: true, SZX: 2}) ||
		*in.Block2 != (Option{Num: 1, SZX: 6}) || *in.Size1 != 1500 || !in.Size2 || string(in.Payload) != "payload" {
		t.Fatalf("%+v", in)
	}
	in, err = FromMessage("peer", build(message.Option{ID: OptionRequestTag, Value: []byte{}}))
	if err != nil || in.Key.RequestTag != "-" || in.Block1 != nil || in.Size1 != nil {
		t.Fatalf("empty Request-Tag: %+v, %v", in, err)
	}
	for name, opts := range map[string][]message.Option{
		"repeated Block1": {b1, b1},
		"SZX 7":           {{ID: message.Block2, Value: []byte{0x17}}},
		"Block1 4 bytes":  {{ID: message.Block1, Value: []byte{0, 0, 0, 1}}},
		"Size1 5 bytes":   {{ID: message.Size1, Value: []byte{1, 0, 0, 0, 0}}},
		"Request-Tag 9":   {{ID: OptionRequestTag, Value: make([]byte, 9)}},
	} {
		if _, err := FromMessage("peer", build(opts...)); !errors.Is(err, ErrBadOption) {
			t.Errorf("%s: err %v, want ErrBadOption", name, err)
		}
	}
}

func TestOutgoingApply(t *testing.T) {
	t.Parallel()
	cf, age := uint16(281), uint32(7)
	out := Outgoing{Code: CodeChanged, ContentFormat: &cf, MaxAge: &age,
		Block1: opt(3, false, 2), Block2: opt(0, true, 6), Size2: u32(3000), Size1: u32(100), Payload: []byte("abc")}
	m := pool.NewMessage(context.Background())
	out.Apply(m)
	if m.Code() != codes.Changed {
		t.Fatalf("code %v", m.Code())
	}
	get := func(id message.OptionID) uint32 {
		v, err := m.GetOptionUint32(id)
		if err != nil {
			t.Fatalf("option %d: %v", id, err)
		}
		return v
	}
	if get(message.ContentFormat) != 281 || get(message.MaxAge) != 7 || get(message.Size2) != 3000 ||
		get(message.Size1) != 100 || get(message.Block1) != opt(3, false, 2).Value() || get(message.Block2) != opt(0, true, 6).Value() {
		t.Fatal("options not applied")
	}
	body, err := m.ReadBody()
	if err != nil || string(body) != "abc" {
		t.Fatalf("body %q %v", body, err)
	}
}
