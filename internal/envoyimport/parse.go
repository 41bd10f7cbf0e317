package envoyimport

import (
	"bytes"
	"fmt"
	"math"
	"sort"
	"strconv"
	"strings"
	"time"

	"github.com/devflow/flowguard/internal/yamlx"
	"gopkg.in/yaml.v3"
)

// envoyConfig is an envoyproxy/ratelimit configuration file: one domain and its
// descriptor tree.
type envoyConfig struct {
	domain      string
	descriptors []*descriptor
}

// descriptor is one entry of a descriptor list, with the lines of what
// the mapping may need to point at.
type descriptor struct {
	line     int // of the entry (its first key)
	path     string
	key      string
	value    string
	hasValue bool
	rate     *rateLimit
	// Options that change nothing flowguard can express, by name, with
	// their lines: shadow_mode, quota_mode, detailed_metric,
	// value_to_metric, share_threshold (when true) and metadata.
	options     map[string]int
	descriptors []*descriptor
}

// rateLimit is a descriptor's rate_limit block.
type rateLimit struct {
	line            int
	unit            string // lower case; "" when unlimited
	period          time.Duration
	requestsPerUnit int64
	unlimited       bool
	name            string
	replaces        []string
	replacesLine    int
}

// Limits against input that would make the walk itself expensive.
const (
	maxDepth       = 32
	maxDescriptors = 10000
)

// units are envoyproxy/ratelimit's units and their length there
// (utils.UnitToDivider: a month is 30 days, a year 365).
var units = map[string]time.Duration{
	"second": time.Second,
	"minute": time.Minute,
	"hour":   time.Hour,
	"day":    24 * time.Hour,
	"week":   7 * 24 * time.Hour,
	"month":  30 * 24 * time.Hour,
	"year":   365 * 24 * time.Hour,
}

// parser collects every error of a file, in line order.
type parser struct {
	file  string
	errs  yamlx.Errors
	count int
}

func (p *parser) errorf(n *yaml.Node, path, format string, args ...any) {
	msg := fmt.Sprintf(format, args...)
	if path != "" {
		msg = path + ": " + msg
	}
	line := 0
	if n != nil {
		line = n.Line
	}
	p.errs = append(p.errs, &yamlx.Error{File: p.file, Line: line, Msg: msg})
}

// parse reads data strictly: the keys envoyproxy/ratelimit knows (and no
// other), the right types, one document.
func parse(file string, data []byte) (*envoyConfig, error) {
	if len(bytes.TrimSpace(data)) == 0 {
		return nil, &yamlx.Error{File: file, Msg: "file is empty"}
	}
	dec := yaml.NewDecoder(bytes.NewReader(data))
	var doc yaml.Node
	if err := dec.Decode(&doc); err != nil {
		return nil, syntaxError(file, err)
	}
	var extra yaml.Node
	if err := dec.Decode(&extra); err == nil {
		return nil, &yamlx.Error{File: file, Line: extra.Line, Msg: "more than one YAML document"}
	}
	p := &parser{file: file}
	cfg := p.root(&doc)
	if len(p.errs) > 0 {
		sort.SliceStable(p.errs, func(i, j int) bool { return p.errs[i].Line < p.errs[j].Line })
		return nil, p.errs
	}
	return cfg, nil
}

func syntaxError(file string, err error) error {
	s := strings.TrimPrefix(err.Error(), "yaml: ")
	if rest, ok := strings.CutPrefix(s, "line "); ok {
		if i := strings.Index(rest, ": "); i > 0 {
			if line, convErr := strconv.Atoi(rest[:i]); convErr == nil {
				return &yamlx.Error{File: file, Line: line, Msg: "invalid YAML: " + rest[i+2:]}
			}
		}
	}
	return &yamlx.Error{File: file, Msg: "invalid YAML: " + s}
}

func (p *parser) root(doc *yaml.Node) *envoyConfig {
	n := doc
	if n.Kind == yaml.DocumentNode && len(n.Content) > 0 {
		n = n.Content[0]
	}
	cfg := &envoyConfig{}
	fields, ok := p.mapping(n, "", "domain", "descriptors")
	if !ok {
		return cfg
	}
	if v := fields["domain"]; v == nil {
		p.errorf(n, "", "domain is required")
	} else if s, ok := p.str(v, "domain"); ok {
		if s == "" {
			p.errorf(v, "domain", "domain is empty")
		}
		cfg.domain = s
	}
	if v := fields["descriptors"]; v != nil {
		cfg.descriptors = p.list(v, "descriptors", 1)
	}
	return cfg
}

// list reads a descriptor list; duplicate (key, value) pairs are errors,
// as envoyproxy/ratelimit makes them.
func (p *parser) list(n *yaml.Node, path string, depth int) []*descriptor {
	n = resolve(n)
	if n.Kind != yaml.SequenceNode {
		if isNull(n) {
			return nil
		}
		p.errorf(n, path, "a %s cannot be a list of descriptors", kind(n))
		return nil
	}
	if depth > maxDepth {
		p.errorf(n, path, "descriptors nested more than %d deep", maxDepth)
		return nil
	}
	var out []*descriptor
	seen := map[string]*descriptor{}
	for i, item := range n.Content {
		ipath := fmt.Sprintf("%s.%d", path, i)
		if p.count++; p.count > maxDescriptors {
			p.errorf(item, ipath, "more than %d descriptors", maxDescriptors)
			return out
		}
		d := p.descriptor(item, ipath, depth)
		if d == nil {
			continue
		}
		id := d.key + "\x00" + d.value
		if other, dup := seen[id]; dup {
			p.errorf(resolve(item), ipath, "duplicate descriptor %s, also at line %d", d.tuple(), other.line)
			continue
		}
		seen[id] = d
		out = append(out, d)
	}
	return out
}

func (p *parser) descriptor(n *yaml.Node, path string, depth int) *descriptor {
	n = resolve(n)
	fields, ok := p.mapping(n, path, "key", "value", "rate_limit", "descriptors", "shadow_mode", "quota_mode",
		"detailed_metric", "value_to_metric", "share_threshold", "metadata")
	if !ok {
		return nil
	}
	d := &descriptor{line: n.Line, path: path, options: map[string]int{}}
	if v := fields["key"]; v == nil {
		p.errorf(n, path, "key is required")
		return nil
	} else if s, ok := p.str(v, path+".key"); !ok {
		return nil
	} else if s == "" {
		p.errorf(v, path+".key", "key is empty")
		return nil
	} else {
		d.key = s
	}
	if v := fields["value"]; v != nil {
		// envoyproxy/ratelimit treats an empty value as none.
		d.value, _ = p.str(v, path+".value")
		d.hasValue = d.value != ""
	}
	for _, opt := range []string{"shadow_mode", "quota_mode", "detailed_metric", "value_to_metric", "share_threshold"} {
		if v := fields[opt]; v != nil {
			if b, ok := p.boolean(v, path+"."+opt); ok && b {
				d.options[opt] = resolve(v).Line
			}
		}
	}
	if v := fields["metadata"]; v != nil {
		if r := resolve(v); r.Kind != yaml.MappingNode && !isNull(r) {
			p.errorf(r, path+".metadata", "a %s cannot be a mapping", kind(r))
		} else if len(r.Content) > 0 {
			d.options["metadata"] = r.Line
		}
	}
	if v := fields["rate_limit"]; v != nil {
		d.rate = p.rateLimit(v, path+".rate_limit")
	}
	if v := fields["descriptors"]; v != nil {
		d.descriptors = p.list(v, path+".descriptors", depth+1)
	}
	return d
}

func (p *parser) rateLimit(n *yaml.Node, path string) *rateLimit {
	n = resolve(n)
	fields, ok := p.mapping(n, path, "unit", "requests_per_unit", "unlimited", "name", "replaces")
	if !ok {
		return nil
	}
	r := &rateLimit{line: n.Line}
	if v := fields["unlimited"]; v != nil {
		r.unlimited, _ = p.boolean(v, path+".unlimited")
	}
	if v := fields["name"]; v != nil {
		r.name, _ = p.str(v, path+".name")
	}
	unit := fields["unit"]
	switch {
	case unit != nil && r.unlimited:
		p.errorf(resolve(unit), path+".unit", "unit must not be set when unlimited is true")
	case unit != nil:
		if s, ok := p.str(unit, path+".unit"); ok {
			r.unit = strings.ToLower(s)
			if r.period, ok = units[r.unit]; !ok {
				p.errorf(resolve(unit), path+".unit", "unknown unit %q, want second, minute, hour, day, week, month or year", s)
			}
		}
	case !r.unlimited:
		p.errorf(n, path, "unit is required (second, minute, hour, day, week, month or year), or unlimited: true")
	}
	if v := fields["requests_per_unit"]; v != nil {
		r.requestsPerUnit, _ = p.count32(v, path+".requests_per_unit")
	} else if !r.unlimited {
		p.errorf(n, path, "requests_per_unit is required")
	}
	if v := fields["replaces"]; v != nil {
		v = resolve(v)
		r.replacesLine = v.Line
		if v.Kind != yaml.SequenceNode {
			p.errorf(v, path+".replaces", "a %s cannot be a list", kind(v))
		} else {
			for i, item := range v.Content {
				ipath := fmt.Sprintf("%s.replaces.%d", path, i)
				f, ok := p.mapping(resolve(item), ipath, "name")
				if !ok {
					continue
				}
				name := ""
				if nv := f["name"]; nv != nil {
					name, _ = p.str(nv, ipath+".name")
				}
				if name == "" {
					p.errorf(resolve(item), ipath, "a replaces entry needs a name")
					continue
				}
				r.replaces = append(r.replaces, name)
			}
		}
	}
	return r
}

// mapping returns n's values by key, checking that n is a mapping whose
// keys are all known and none is repeated.
func (p *parser) mapping(n *yaml.Node, path string, known ...string) (map[string]*yaml.Node, bool) {
	n = resolve(n)
	if n.Kind != yaml.MappingNode {
		p.errorf(n, path, "a %s cannot be a mapping", kind(n))
		return nil, false
	}
	fields := map[string]*yaml.Node{}
	before := len(p.errs)
	for i := 0; i+1 < len(n.Content); i += 2 {
		k := n.Content[i]
		if !isKnown(k.Value, known) || k.Kind != yaml.ScalarNode {
			p.errorf(k, path, "unknown key %q (known: %s)", k.Value, strings.Join(known, ", "))
			continue
		}
		if _, dup := fields[k.Value]; dup {
			p.errorf(k, path, "key %q appears twice", k.Value)
			continue
		}
		fields[k.Value] = n.Content[i+1]
	}
	return fields, len(p.errs) == before
}

func isKnown(k string, known []string) bool {
	for _, s := range known {
		if k == s {
			return true
		}
	}
	return false
}

// str reads a scalar as a string, as envoyproxy/ratelimit's yaml.v2
// decoding into a string field does: 500 and 50.0.0.5 are strings too.
func (p *parser) str(n *yaml.Node, path string) (string, bool) {
	n = resolve(n)
	if n.Kind != yaml.ScalarNode {
		p.errorf(n, path, "a %s cannot be a string", kind(n))
		return "", false
	}
	if n.Tag == "!!null" {
		return "", true
	}
	return n.Value, true
}

func (p *parser) boolean(n *yaml.Node, path string) (bool, bool) {
	n = resolve(n)
	var b bool
	if n.Kind != yaml.ScalarNode || n.Tag != "!!bool" || n.Decode(&b) != nil {
		p.errorf(n, path, "%s is not true or false", show(n))
		return false, false
	}
	return b, true
}

// count32 reads a whole number in [0, 2^32-1], the range of
// envoyproxy/ratelimit's requests_per_unit (a uint32).
func (p *parser) count32(n *yaml.Node, path string) (int64, bool) {
	n = resolve(n)
	var v int64
	if n.Kind != yaml.ScalarNode || n.Tag != "!!int" || n.Decode(&v) != nil {
		p.errorf(n, path, "%s is not a whole number", show(n))
		return 0, false
	}
	switch {
	case v < 0:
		p.errorf(n, path, "requests_per_unit %d is negative", v)
		return 0, false
	case v > math.MaxUint32:
		p.errorf(n, path, "requests_per_unit %d is above %d, the largest envoyproxy/ratelimit accepts", v, uint64(math.MaxUint32))
		return 0, false
	}
	return v, true
}

// resolve follows an alias to its anchor's node.
func resolve(n *yaml.Node) *yaml.Node {
	for i := 0; n.Kind == yaml.AliasNode && n.Alias != nil && i < 8; i++ {
		n = n.Alias
	}
	return n
}

func isNull(n *yaml.Node) bool { return n.Kind == yaml.ScalarNode && n.Tag == "!!null" }

func kind(n *yaml.Node) string {
	switch n.Kind {
	case yaml.SequenceNode:
		return "list"
	case yaml.MappingNode:
		return "mapping"
	}
	return "scalar"
}

func show(n *yaml.Node) string {
	if n.Kind == yaml.ScalarNode {
		return strconv.Quote(n.Value)
	}
	return "a " + kind(n)
}

// tuple is the descriptor as envoyproxy/ratelimit's docs write it.
func (d *descriptor) tuple() string {
	if d.hasValue {
		return fmt.Sprintf("(%q, %q)", d.key, d.value)
	}
	return fmt.Sprintf("(%q)", d.key)
}
