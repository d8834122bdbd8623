package wire

import (
	"strconv"
	"strings"

	"github.com/plgd-dev/go-coap/v3/message"
)

// Link is one entry of an RFC 6690 link-format document, as returned by
// discovery (GET /.well-known/core?rt=ace.est*, RFC 9148 §4.1).
type Link struct {
	// Target is the link target between angle brackets, e.g. "/est/crts".
	Target string
	// ResourceTypes are the space separated values of the rt attribute.
	ResourceTypes []string
	// ContentFormats are the values of the ct attribute.
	ContentFormats []message.MediaType
	// Params holds every attribute by name, values unquoted; an attribute
	// without a value maps to "". Repeated attributes keep their first value.
	Params map[string]string
}

// HasResourceType reports whether l carries the resource type rt.
func (l Link) HasResourceType(rt string) bool {
	for _, v := range l.ResourceTypes {
		if v == rt {
			return true
		}
	}
	return false
}

// MaxLinks bounds the number of links ParseLinks decodes from one document.
const MaxLinks = 256

// ParseLinks decodes an RFC 6690 §2 link-format document (Content-Format 40).
// Attribute values may be tokens or quoted strings; a quoted string may hold
// commas and semicolons. Whitespace around separators is tolerated.
func ParseLinks(doc []byte) ([]Link, error) {
	s := string(doc)
	var links []Link
	i := 0
	skipSpace := func() {
		for i < len(s) && (s[i] == ' ' || s[i] == '\t' || s[i] == '\r' || s[i] == '\n') {
			i++
		}
	}
	for {
		skipSpace()
		if i == len(s) {
			break
		}
		if len(links) == MaxLinks {
			return nil, malformed("link-format: more than %d links", MaxLinks)
		}
		if s[i] != '<' {
			return nil, malformed("link-format: expected '<' at offset %d", i)
		}
		end := strings.IndexByte(s[i+1:], '>')
		if end < 0 {
			return nil, malformed("link-format: unterminated target at offset %d", i)
		}
		l := Link{Target: s[i+1 : i+1+end], Params: map[string]string{}}
		i += end + 2
		for {
			skipSpace()
			if i == len(s) || s[i] == ',' {
				break
			}
			if s[i] != ';' {
				return nil, malformed("link-format: expected ';' or ',' at offset %d", i)
			}
			i++
			skipSpace()
			start := i
			for i < len(s) && s[i] != '=' && s[i] != ';' && s[i] != ',' && s[i] != ' ' {
				i++
			}
			name := s[start:i]
			if name == "" {
				return nil, malformed("link-format: empty attribute name at offset %d", start)
			}
			value := ""
			if i < len(s) && s[i] == '=' {
				i++
				if i < len(s) && s[i] == '"' {
					i++
					var b strings.Builder
					closed := false
					for i < len(s) {
						c := s[i]
						i++
						if c == '\\' && i < len(s) {
							b.WriteByte(s[i])
							i++
							continue
						}
						if c == '"' {
							closed = true
							break
						}
						b.WriteByte(c)
					}
					if !closed {
						return nil, malformed("link-format: unterminated quoted value of %q", name)
					}
					value = b.String()
				} else {
					start := i
					for i < len(s) && s[i] != ';' && s[i] != ',' && s[i] != ' ' {
						i++
					}
					value = s[start:i]
				}
			}
			if _, dup := l.Params[name]; !dup {
				l.Params[name] = value
			}
		}
		if err := l.decodeAttrs(); err != nil {
			return nil, err
		}
		links = append(links, l)
		if i < len(s) { // at ','
			i++
		}
	}
	return links, nil
}

func (l *Link) decodeAttrs() error {
	if rt, ok := l.Params["rt"]; ok {
		l.ResourceTypes = strings.Fields(rt)
	}
	if ct, ok := l.Params["ct"]; ok {
		for _, f := range strings.Fields(ct) {
			n, err := strconv.ParseUint(f, 10, 16)
			if err != nil {
				return malformed("link-format: bad ct value %q", f)
			}
			l.ContentFormats = append(l.ContentFormats, message.MediaType(n))
		}
	}
	return nil
}
