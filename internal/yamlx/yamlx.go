// Package yamlx decodes YAML strictly and names the file and line of every
// error, the way flowguard's configuration files are checked: unknown keys,
// wrong types and duplicate keys are errors, and validation errors found
// after decoding can still point at the offending line.
package yamlx

import (
	"bytes"
	"errors"
	"fmt"
	"io"
	"regexp"
	"sort"
	"strconv"
	"strings"

	"gopkg.in/yaml.v3"
)

// Error is one problem in one file.
type Error struct {
	File string
	Line int // 0 when unknown
	Msg  string
}

func (e *Error) Error() string {
	if e.Line > 0 {
		return fmt.Sprintf("%s:%d: %s", e.File, e.Line, e.Msg)
	}
	return e.File + ": " + e.Msg
}

// Errors is every problem found in a file, in line order. Its Error is one
// line per problem.
type Errors []*Error

func (es Errors) Error() string {
	lines := make([]string, len(es))
	for i, e := range es {
		lines[i] = e.Error()
	}
	return strings.Join(lines, "\n")
}

// Doc is a decoded file: its name and node tree, for locating values.
type Doc struct {
	File string
	Root *yaml.Node
}

// Decode decodes data strictly into out: exactly one document, no unknown
// keys, no duplicate keys, every value of the right type.
func Decode(file string, data []byte, out any) (*Doc, error) {
	if len(bytes.TrimSpace(data)) == 0 {
		return nil, &Error{File: file, Msg: "file is empty"}
	}
	var root yaml.Node
	if err := yaml.Unmarshal(data, &root); err != nil {
		return nil, convert(file, err)
	}
	dec := yaml.NewDecoder(bytes.NewReader(data))
	dec.KnownFields(true)
	if err := dec.Decode(out); err != nil {
		return nil, convert(file, err)
	}
	var extra yaml.Node
	if err := dec.Decode(&extra); !errors.Is(err, io.EOF) {
		line := 0
		if err == nil {
			line = extra.Line
		}
		return nil, &Error{File: file, Line: line, Msg: "more than one YAML document"}
	}
	return &Doc{File: file, Root: &root}, nil
}

// Errorf returns an error at the value found by path (mapping keys, or
// list indexes as decimal strings), or at the deepest part of path that
// exists. The message is prefixed with the dotted path.
func (d *Doc) Errorf(path []string, format string, args ...any) *Error {
	msg := fmt.Sprintf(format, args...)
	if len(path) > 0 {
		msg = strings.Join(path, ".") + ": " + msg
	}
	return &Error{File: d.File, Line: d.Line(path...), Msg: msg}
}

// Line returns the line of the value at path, or of its deepest existing
// ancestor; 0 when even the document is missing.
func (d *Doc) Line(path ...string) int {
	n := d.Root
	if n == nil {
		return 0
	}
	if n.Kind == yaml.DocumentNode && len(n.Content) > 0 {
		n = n.Content[0]
	}
	line := n.Line
	for _, p := range path {
		next := child(n, p)
		if next == nil {
			break
		}
		n, line = next, next.Line
	}
	return line
}

func child(n *yaml.Node, key string) *yaml.Node {
	switch n.Kind {
	case yaml.MappingNode:
		for i := 0; i+1 < len(n.Content); i += 2 {
			if n.Content[i].Value == key {
				return n.Content[i+1]
			}
		}
	case yaml.SequenceNode:
		if i, err := strconv.Atoi(key); err == nil && i >= 0 && i < len(n.Content) {
			return n.Content[i]
		}
	}
	return nil
}

var (
	lineRE     = regexp.MustCompile(`^line (\d+): (.*)$`)
	syntaxRE   = regexp.MustCompile(`^yaml: line (\d+): (.*)$`)
	unknownRE  = regexp.MustCompile(`^field (.+) not found in type \S+$`)
	mismatchRE = regexp.MustCompile("^cannot unmarshal !!(\\w+) `(.*)` into (\\S+)$")
	kindRE     = regexp.MustCompile(`^cannot unmarshal !!(\w+) into (\S+)$`)
)

// convert turns a yaml.v3 error into Errors naming file and line, in words
// a person editing the file understands.
func convert(file string, err error) error {
	var te *yaml.TypeError
	if errors.As(err, &te) {
		var es Errors
		for _, s := range te.Errors {
			e := &Error{File: file, Msg: s}
			if m := lineRE.FindStringSubmatch(s); m != nil {
				e.Line, _ = strconv.Atoi(m[1])
				e.Msg = humanize(m[2])
			}
			es = append(es, e)
		}
		sort.SliceStable(es, func(i, j int) bool { return es[i].Line < es[j].Line })
		return es
	}
	s := err.Error()
	if m := syntaxRE.FindStringSubmatch(s); m != nil {
		line, _ := strconv.Atoi(m[1])
		return &Error{File: file, Line: line, Msg: "invalid YAML: " + m[2]}
	}
	return &Error{File: file, Msg: "invalid YAML: " + strings.TrimPrefix(s, "yaml: ")}
}

func humanize(msg string) string {
	if m := unknownRE.FindStringSubmatch(msg); m != nil {
		return fmt.Sprintf("unknown key %q", m[1])
	}
	if m := mismatchRE.FindStringSubmatch(msg); m != nil {
		return fmt.Sprintf("%q is not %s", m[2], typeName(m[3]))
	}
	if m := kindRE.FindStringSubmatch(msg); m != nil {
		return fmt.Sprintf("a %s cannot be %s", kindName(m[1]), typeName(m[2]))
	}
	return msg
}

func typeName(goType string) string {
	switch {
	case strings.HasPrefix(goType, "int"), strings.HasPrefix(goType, "uint"):
		return "a whole number"
	case strings.HasPrefix(goType, "float"):
		return "a number"
	case goType == "bool":
		return "true or false"
	case goType == "time.Duration":
		return "a duration such as 500ms, 10s or 1m"
	case goType == "string":
		return "a string"
	case strings.HasPrefix(goType, "[]"):
		return "a list"
	case strings.HasPrefix(goType, "map["):
		return "a mapping"
	}
	return "a mapping"
}

func kindName(tag string) string {
	switch tag {
	case "seq":
		return "list"
	case "map":
		return "mapping"
	}
	return "scalar"
}
