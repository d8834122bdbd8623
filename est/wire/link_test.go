package wire

import (
	"errors"
	"slices"
	"testing"

	"github.com/plgd-dev/go-coap/v3/message"
)

func TestParseLinks(t *testing.T) {
	t.Parallel()
	doc := `</est/crts>;rt="ace.est.crts";ct="281 287",</est/sen>;rt="ace.est.sen";ct="281 287",` +
		`</est/sren>;rt="ace.est.sren";ct="281 287",</est/att>;rt="ace.est.att";ct=285,` +
		` </est/skg>;rt="ace.est.skg";ct=62, </est/skc>;rt="ace.est.skc";ct=62;title="a, \"b\"; c";obs`
	links, err := ParseLinks([]byte(doc))
	if err != nil {
		t.Fatal(err)
	}
	want := []struct {
		target string
		rt     string
		ct     []message.MediaType
	}{
		{"/est/crts", "ace.est.crts", []message.MediaType{281, 287}},
		{"/est/sen", "ace.est.sen", []message.MediaType{281, 287}},
		{"/est/sren", "ace.est.sren", []message.MediaType{281, 287}},
		{"/est/att", "ace.est.att", []message.MediaType{285}},
		{"/est/skg", "ace.est.skg", []message.MediaType{62}},
		{"/est/skc", "ace.est.skc", []message.MediaType{62}},
	}
	if len(links) != len(want) {
		t.Fatalf("got %d links, want %d: %+v", len(links), len(want), links)
	}
	for i, w := range want {
		l := links[i]
		if l.Target != w.target || !l.HasResourceType(w.rt) || !slices.Equal(l.ContentFormats, w.ct) {
			t.Errorf("link %d = %+v, want %+v", i, l, w)
		}
	}
	last := links[5].Params
	if last["title"] != `a, "b"; c` {
		t.Errorf("title = %q", last["title"])
	}
	if v, ok := last["obs"]; !ok || v != "" {
		t.Errorf("obs = %q, %v", v, ok)
	}
	if empty, err := ParseLinks(nil); err != nil || len(empty) != 0 {
		t.Errorf("empty document: %v, %v", empty, err)
	}
}

func TestParseLinksErrors(t *testing.T) {
	t.Parallel()
	for _, doc := range []string{
		`/est/crts;rt=x`,
		`</est/crts`,
		`</est/crts>;rt="ace`,
		`</est/crts>;ct=abc`,
		`</est/crts>;ct=70000`,
		`</est/crts>;=x`,
		`</est/crts> x`,
	} {
		if _, err := ParseLinks([]byte(doc)); !errors.Is(err, ErrMalformedPayload) {
			t.Errorf("%q: err = %v, want ErrMalformedPayload", doc, err)
		}
	}
}
