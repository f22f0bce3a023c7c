package configtest

import (
	"fmt"
	"os"
	"reflect"
	"regexp"
	"strings"
	"testing"

	"gopkg.in/yaml.v3"
)

// DocumentedKeys checks that the shipped YAML file at path is a complete
// reference for the config struct cfg (a value or pointer): every key of
// the struct, walked through its yaml tags, is in the file — as a key, or
// commented out ("# host_id: web-1") where it has no default worth stating
// — and every key in the file has a comment (above it, at the end of its
// line, or a comment above an earlier key of the same block that names it).
// Keys of list elements (auth.users, storage.redis.shards) are found in
// the list's entries or in its commented example. Maps (labels) are free
// form: their keys are not checked.
//
// docs/configuration.md says the shipped files document every key; this
// is what keeps that true when a field is added.
func DocumentedKeys(t *testing.T, path string, cfg any) {
	t.Helper()
	data, err := os.ReadFile(path)
	if err != nil {
		t.Fatalf("read %s: %v", path, err)
	}
	problems, err := Undocumented(data, cfg)
	if err != nil {
		t.Fatalf("%s: %v", path, err)
	}
	for _, p := range problems {
		t.Errorf("%s: %s", path, p)
	}
}

// Undocumented returns what DocumentedKeys complains about in the YAML
// data, one sentence per key; an error when data is not one YAML mapping.
func Undocumented(data []byte, cfg any) ([]string, error) {
	var doc yaml.Node
	if err := yaml.Unmarshal(data, &doc); err != nil {
		return nil, fmt.Errorf("parse: %w", err)
	}
	if doc.Kind != yaml.DocumentNode || len(doc.Content) != 1 || doc.Content[0].Kind != yaml.MappingNode {
		return nil, fmt.Errorf("want one YAML document holding a mapping")
	}
	typ := reflect.TypeOf(cfg)
	for typ.Kind() == reflect.Pointer {
		typ = typ.Elem()
	}
	return checkKeys(doc.Content[0], comments(&doc), typ, "", true), nil
}

// checkKeys walks the struct type typ against node (a mapping, or nil when
// the block is only described in comments, text) and returns the problems.
// requireDoc asks for a comment on each key present.
func checkKeys(node *yaml.Node, text string, typ reflect.Type, prefix string, requireDoc bool) []string {
	var problems []string
	for i := range typ.NumField() {
		f := typ.Field(i)
		name, _, _ := strings.Cut(f.Tag.Get("yaml"), ",")
		if name == "" || name == "-" || !f.IsExported() {
			continue
		}
		key := prefix + name
		var k, v *yaml.Node
		if node != nil {
			k, v = lookup(node, name)
		}
		sub := text
		if k == nil {
			if !mentions(text, name) {
				problems = append(problems, fmt.Sprintf("key %s is missing: add it with its default and a comment (or commented out, \"# %s: ...\")", key, name))
				continue
			}
		} else {
			if requireDoc && !documented(node, k) {
				problems = append(problems, fmt.Sprintf("key %s (line %d) has no comment: say what it does, its default and its range", key, k.Line))
			}
			sub = k.HeadComment + "\n" + k.LineComment + "\n" + comments(v)
		}
		ft := f.Type
		for ft.Kind() == reflect.Pointer {
			ft = ft.Elem()
		}
		switch {
		case ft.Kind() == reflect.Struct && !isScalar(ft):
			if v != nil && v.Kind != yaml.MappingNode {
				problems = append(problems, fmt.Sprintf("key %s (line %d) should be a mapping", key, v.Line))
				continue
			}
			problems = append(problems, checkKeys(v, sub, ft, key+".", requireDoc)...)
		case ft.Kind() == reflect.Slice && ft.Elem().Kind() == reflect.Struct && !isScalar(ft.Elem()):
			problems = append(problems, checkList(v, sub, ft.Elem(), key)...)
		}
	}
	return problems
}

// checkList checks the element struct of a list: each of its keys is in
// one of the list's entries or in the comments around the list.
func checkList(v *yaml.Node, text string, elem reflect.Type, key string) []string {
	var entries []*yaml.Node
	if v != nil && v.Kind == yaml.SequenceNode {
		entries = v.Content
	}
	// A key is present when an entry has it; otherwise it must be in the
	// comments. Check against a merged view: every entry's comments and
	// keys, as text.
	merged := text
	for _, e := range entries {
		merged += "\n" + keysText(e) + "\n" + comments(e)
	}
	return checkKeys(nil, merged, elem, key+"[].", false)
}

// keysText renders the keys of a mapping subtree as "key:" lines, so
// checkKeys can find them with mentions.
func keysText(n *yaml.Node) string {
	var sb strings.Builder
	var walk func(n *yaml.Node)
	walk = func(n *yaml.Node) {
		if n.Kind == yaml.MappingNode {
			for i := 0; i+1 < len(n.Content); i += 2 {
				sb.WriteString(n.Content[i].Value + ":\n")
				walk(n.Content[i+1])
			}
			return
		}
		for _, c := range n.Content {
			walk(c)
		}
	}
	walk(n)
	return sb.String()
}

func lookup(m *yaml.Node, name string) (k, v *yaml.Node) {
	for i := 0; i+1 < len(m.Content); i += 2 {
		if m.Content[i].Value == name {
			return m.Content[i], m.Content[i+1]
		}
	}
	return nil, nil
}

// documented reports whether key k of mapping m has a comment: its own, or
// one above an earlier key of the same block that names it.
func documented(m, k *yaml.Node) bool {
	if strings.TrimSpace(k.HeadComment) != "" || strings.TrimSpace(k.LineComment) != "" {
		return true
	}
	for i := 0; i+1 < len(m.Content); i += 2 {
		if m.Content[i] == k {
			// "key: value # comment" puts the comment on the value.
			return strings.TrimSpace(m.Content[i+1].LineComment) != ""
		}
		if c := m.Content[i]; strings.Contains(c.HeadComment, k.Value) {
			return true
		}
	}
	return false
}

// mentions reports whether the comment text names key as "key:" (a
// commented-out key or an example).
func mentions(text, key string) bool {
	return regexp.MustCompile(`(^|[\s#-])` + regexp.QuoteMeta(key) + `:`).MatchString(text)
}

// comments returns every comment in the subtree of n.
func comments(n *yaml.Node) string {
	if n == nil {
		return ""
	}
	var sb strings.Builder
	var walk func(n *yaml.Node)
	walk = func(n *yaml.Node) {
		for _, c := range []string{n.HeadComment, n.LineComment, n.FootComment} {
			if c != "" {
				sb.WriteString(c)
				sb.WriteByte('\n')
			}
		}
		for _, c := range n.Content {
			walk(c)
		}
	}
	walk(n)
	return sb.String()
}

// isScalar reports whether a struct type is written as one YAML value (it
// unmarshals itself, like time.Time).
func isScalar(t reflect.Type) bool {
	return reflect.PointerTo(t).Implements(reflect.TypeFor[yaml.Unmarshaler]()) ||
		t.Implements(reflect.TypeFor[yaml.Unmarshaler]()) || t.PkgPath() == "time"
}
