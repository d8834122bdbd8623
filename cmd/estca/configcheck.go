package main

import (
	"fmt"
	"reflect"
	"regexp"
	"strings"

	"gopkg.in/yaml.v3"
)

// removedKeys are configuration keys estca no longer reads: accepted (so an
// older estca.yaml still loads) with a warning saying why they go.
var removedKeys = map[string]string{
	"store.max_batch_delay": "it never had an effect: the store commits a batch as soon as the previous commit ends, without a timer",
}

// checkYAML walks the YAML document against the Go type of the
// configuration and reports, by key path ("est.max_body",
// "profiles[1].validity"), every unknown key and every value of the wrong
// kind, in words an operator reads (no Go type names); removed keys come
// back as warnings. The decoder then only fills in what this accepted.
func checkYAML(doc *yaml.Node, t reflect.Type) (errs []error, warnings []string) {
	w := &yamlWalker{}
	if doc.Kind == yaml.DocumentNode && len(doc.Content) > 0 {
		w.walk(doc.Content[0], t, "")
	}
	return w.errs, w.warnings
}

type yamlWalker struct {
	errs     []error
	warnings []string
}

func (w *yamlWalker) fail(n *yaml.Node, path, format string, a ...any) {
	w.errs = append(w.errs, fmt.Errorf("%s: %s (line %d)", path, fmt.Sprintf(format, a...), n.Line))
}

var unmarshalerType = reflect.TypeOf((*yaml.Unmarshaler)(nil)).Elem()

func (w *yamlWalker) walk(n *yaml.Node, t reflect.Type, path string) {
	for n.Kind == yaml.AliasNode && n.Alias != nil {
		n = n.Alias
	}
	if n.Kind == yaml.ScalarNode && n.Tag == "!!null" {
		return // an empty value keeps the default
	}
	for t.Kind() == reflect.Pointer {
		t = t.Elem()
	}
	if reflect.PointerTo(t).Implements(unmarshalerType) {
		if err := n.Decode(reflect.New(t).Interface()); err != nil {
			w.fail(n, path, "%s", yamlMessage(err))
		}
		return
	}
	switch t.Kind() {
	case reflect.Struct:
		if n.Kind != yaml.MappingNode {
			w.fail(n, path, "want a mapping of keys, not %s", describeNode(n))
			return
		}
		for i := 0; i+1 < len(n.Content); i += 2 {
			k, v := n.Content[i], n.Content[i+1]
			key := joinPath(path, k.Value)
			f, ok := fieldByKey(t, k.Value)
			switch {
			case ok:
				w.walk(v, f.Type, key)
			case removedKeys[key] != "":
				w.warnings = append(w.warnings, fmt.Sprintf("%s (line %d) is ignored: %s", key, k.Line, removedKeys[key]))
			default:
				w.fail(k, key, "unknown key")
			}
		}
	case reflect.Slice:
		if n.Kind != yaml.SequenceNode {
			w.fail(n, path, "want a list, not %s", describeNode(n))
			return
		}
		for i, e := range n.Content {
			w.walk(e, t.Elem(), fmt.Sprintf("%s[%d]", path, i))
		}
	default:
		if n.Kind != yaml.ScalarNode {
			w.fail(n, path, "want %s, not %s", kindWords(t), describeNode(n))
			return
		}
		if err := n.Decode(reflect.New(t).Interface()); err != nil {
			w.fail(n, path, "want %s, not %q", kindWords(t), n.Value)
		}
	}
}

func joinPath(path, key string) string {
	if path == "" {
		return key
	}
	return path + "." + key
}

// fieldByKey finds the struct field whose yaml tag is key.
func fieldByKey(t reflect.Type, key string) (reflect.StructField, bool) {
	for i := range t.NumField() {
		f := t.Field(i)
		if !f.IsExported() {
			continue
		}
		name, _, _ := strings.Cut(f.Tag.Get("yaml"), ",")
		if name == "-" {
			continue
		}
		if name == "" {
			name = strings.ToLower(f.Name)
		}
		if name == key {
			return f, true
		}
	}
	return reflect.StructField{}, false
}

// configKeys lists every key path of t ("hsm.module", "profiles[].name"),
// for the documentation test.
func configKeys(t reflect.Type, path string) []string {
	for t.Kind() == reflect.Pointer {
		t = t.Elem()
	}
	if reflect.PointerTo(t).Implements(unmarshalerType) {
		return []string{path}
	}
	switch t.Kind() {
	case reflect.Struct:
		var out []string
		for i := range t.NumField() {
			f := t.Field(i)
			name, _, _ := strings.Cut(f.Tag.Get("yaml"), ",")
			if !f.IsExported() || name == "-" || name == "" {
				continue
			}
			out = append(out, configKeys(f.Type, joinPath(path, name))...)
		}
		return out
	case reflect.Slice:
		if t.Elem().Kind() == reflect.Struct {
			return configKeys(t.Elem(), path+"[]")
		}
	}
	return []string{path}
}

func kindWords(t reflect.Type) string {
	switch t.Kind() {
	case reflect.Bool:
		return "true or false"
	case reflect.Int, reflect.Int8, reflect.Int16, reflect.Int32, reflect.Int64,
		reflect.Uint, reflect.Uint8, reflect.Uint16, reflect.Uint32, reflect.Uint64:
		return "a whole number"
	case reflect.Float32, reflect.Float64:
		return "a number"
	case reflect.String:
		return "a text value"
	}
	return "a value"
}

func describeNode(n *yaml.Node) string {
	switch n.Kind {
	case yaml.MappingNode:
		return "a mapping"
	case yaml.SequenceNode:
		return "a list"
	}
	return fmt.Sprintf("%q", n.Value)
}

var yamlLinePrefix = regexp.MustCompile(`^(yaml: )?line \d+: `)

// yamlMessage is the text of an error from a yaml.Unmarshaler, without the
// "line N:" prefix (the walker adds the line itself).
func yamlMessage(err error) string {
	if te, ok := err.(*yaml.TypeError); ok && len(te.Errors) > 0 {
		return yamlLinePrefix.ReplaceAllString(te.Errors[0], "")
	}
	return yamlLinePrefix.ReplaceAllString(err.Error(), "")
}
