package est

import (
	"strings"

	"github.com/plgd-dev/go-coap/v3/message"
	"github.com/plgd-dev/go-coap/v3/message/codes"

	"github.com/estca/estca/est/wire"
)

// discoveryLink is one line of /.well-known/core.
type discoveryLink struct {
	resource string
	rt       string
	ct       string
}

// DiscoveryRoot is the root under which /.well-known/core advertises the EST
// resources. RFC 9148 §4.1 prefers short paths in discovery; /est/<res> is
// served as an alias of /.well-known/est/<res> (default profile).
const DiscoveryRoot = wire.LabelRoot

// discoveryLinks lists what exists (RFC 9148 §4.1): crts, sen, sren (MUST)
// and att; skg and skc (Content-Format 62) when keygen is served; then the
// CRL (CRLPath), with a resource type of estca's own: EST-coaps defines
// none, and ace.est.* names are registered by RFC 9148.
func discoveryLinks(keygen bool) []discoveryLink {
	links := []discoveryLink{
		{wire.ResourceCrts, "ace.est.crts", `"281 287"`},
		{wire.ResourceSen, "ace.est.sen", `"281 287"`},
		{wire.ResourceSren, "ace.est.sren", `"281 287"`},
		{wire.ResourceAtt, "ace.est.att", "285"},
	}
	if keygen {
		links = append(links,
			discoveryLink{wire.ResourceSkg, "ace.est.skg", "62"},
			discoveryLink{wire.ResourceSkc, "ace.est.skc", "62"})
	}
	return append(links, discoveryLink{wire.ResourceCRL, RTCRL, "281"})
}

// RTCRL is the resource type of the CRL in discovery.
const RTCRL = "estca.crl"

func (l discoveryLink) String() string {
	return "<" + DiscoveryRoot + "/" + l.resource + `>;rt="` + l.rt + `";ct=` + l.ct
}

// matchRT applies an RFC 6690 §4.1 rt filter: exact match, or prefix match
// when the value ends in '*'.
func matchRT(filter, rt string) bool {
	if p, ok := strings.CutSuffix(filter, "*"); ok {
		return strings.HasPrefix(rt, p)
	}
	return filter == rt
}

// discovery serves GET /.well-known/core in link format (RFC 6690, Content-
// Format 40). Query filters (RFC 6690 §4.1) on every attribute the server
// emits: href, rt and ct, each with a trailing '*' for a prefix match; rt
// and ct are space-separated lists and match when one of their values does
// (ct=287 matches ct="281 287"). Any other filter
// attribute matches nothing. When a filter
// matches no link the answer is 4.04 Not Found, so that a client learns that
// no such resource exists rather than parsing an empty document.
func (s *Server) discovery(r *request) (response, error) {
	if r.accept != -1 && r.accept != int(message.AppLinkFormat) {
		return response{}, protoErr(KindNotAcceptable, "not acceptable")
	}
	var out []string
	for _, l := range discoveryLinks(s.keygen != nil) {
		if matchLink(l, r.query) {
			out = append(out, l.String())
		}
	}
	if len(out) == 0 {
		return response{}, protoErr(KindNotFound, "no matching link")
	}
	return response{code: codes.Content, format: int(message.AppLinkFormat), body: []byte(strings.Join(out, ","))}, nil
}

func matchLink(l discoveryLink, query []string) bool {
	for _, q := range query {
		name, value, _ := strings.Cut(q, "=")
		switch name {
		case "rt":
			if !matchAny(value, l.rt) {
				return false
			}
		case "href":
			if !matchRT(value, DiscoveryRoot+"/"+l.resource) {
				return false
			}
		case "ct":
			if !matchAny(value, strings.Trim(l.ct, `"`)) {
				return false
			}
		default:
			return false
		}
	}
	return true
}

// matchAny applies filter to each value of a space-separated attribute
// value (RFC 6690 §4.1: a filter matches a multi-valued attribute when it
// matches one of its values).
func matchAny(filter, values string) bool {
	for _, v := range strings.Fields(values) {
		if matchRT(filter, v) {
			return true
		}
	}
	return false
}
