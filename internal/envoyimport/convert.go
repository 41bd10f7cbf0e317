package envoyimport

import (
	"bytes"
	"fmt"
	"regexp"
	"sort"
	"strconv"
	"strings"
	"time"

	"github.com/devflow/flowguard/internal/yamlx"
	"github.com/devflow/flowguard/policy"
	"gopkg.in/yaml.v3"
)

// The flowguard meanings a descriptor key may have. A key of these names
// means itself; Options.Keys maps other names onto them.
const (
	KeyAPIKey      = "api_key"      // the API key: no value, a per-key budget; a value, that one key
	KeyTenant      = "tenant"       // the tenant, with a value: that tenant's rule
	KeyMethod      = "method"       // the HTTP method, with a value
	KeyPath        = "path"         // the path, with a value; a trailing * is a prefix
	KeyHeaderMatch = "header_match" // an Envoy header_value_match whose value is an endpoint pattern
)

// Meanings lists the flowguard meanings a descriptor key may have.
var Meanings = []string{KeyAPIKey, KeyTenant, KeyMethod, KeyPath, KeyHeaderMatch}

// Options adjusts a conversion.
type Options struct {
	// Keys maps descriptor keys of the file onto flowguard meanings
	// (Meanings), for files whose Envoy route configuration names them
	// otherwise: {"user": "api_key", "org": "tenant"}. A key listed here
	// loses its own meaning. Default: none, the keys mean their names.
	Keys map[string]string
}

// Validate checks that every mapped key has a flowguard meaning.
func (o Options) Validate() error {
	for k, m := range o.Keys {
		if !isKnown(m, Meanings) {
			return fmt.Errorf("key %q: unknown meaning %q, want one of %s", k, m, strings.Join(Meanings, ", "))
		}
	}
	return nil
}

// Result is a conversion.
type Result struct {
	// YAML is a flowguard configuration file holding only a policies:
	// section, with what could not be mapped listed in its header.
	YAML []byte
	// Skipped is what the output does not carry, in line order.
	Skipped []Item
	// Approximated is what the output carries with other semantics than
	// envoyproxy/ratelimit's, in line order.
	Approximated []Item
	// Rules is the number of rules written (tier, tenant and endpoint
	// rules, and denied keys).
	Rules int
}

// Item is one thing of the input the output does not carry as it is.
type Item struct {
	File   string
	Line   int
	What   string // the descriptor chain or option
	Reason string
}

// Skip renders a skipped item: "FILE:LINE: cannot map WHAT: REASON".
func (i Item) Skip() string {
	return fmt.Sprintf("%s:%d: cannot map %s: %s", i.File, i.Line, i.What, i.Reason)
}

// Approx renders an approximated item: "FILE:LINE: approximated WHAT: REASON".
func (i Item) Approx() string {
	return fmt.Sprintf("%s:%d: approximated %s: %s", i.File, i.Line, i.What, i.Reason)
}

// Generous is the rule that stands for no limit: the fastest rate
// flowguard's limiter counts, one request per microsecond.
const (
	generousRate   = 1_000_000
	generousPeriod = time.Second
)

// Flowguard's own bounds on a rule (policy's maxRate and maxPeriod).
const (
	maxRate   = 1_000_000_000
	maxPeriod = 31 * 24 * time.Hour
)

var (
	nameRE     = regexp.MustCompile(`^[A-Za-z0-9][A-Za-z0-9_.-]{0,63}$`)
	methodRE   = regexp.MustCompile(`^[A-Z]{1,16}$`)
	endpointRE = regexp.MustCompile(`^/[\x21-\x7e]*$`)
)

// Convert reads an envoyproxy/ratelimit configuration (file names it in
// errors and items) and returns flowguard policies. A malformed file is an
// error: yamlx.Errors, one per problem, each naming file and line. What
// flowguard cannot express is not an error: it is in Result.Skipped and in
// the output's header.
func Convert(file string, data []byte, opts Options) (*Result, error) {
	if err := opts.Validate(); err != nil {
		return nil, err
	}
	cfg, err := parse(file, data)
	if err != nil {
		return nil, err
	}
	c := &converter{file: file, opts: opts, slots: map[slot]*rule{}}
	for _, d := range cfg.descriptors {
		c.walk(d, nil)
	}
	tier := cfg.domain
	if !nameRE.MatchString(tier) {
		tier = "imported"
	}
	out, rules, err := c.render(cfg.domain, tier)
	if err != nil {
		return nil, err
	}
	sortItems(c.skipped)
	sortItems(c.approx)
	res := &Result{Skipped: c.skipped, Approximated: c.approx, Rules: rules}
	res.YAML, err = withHeader(out, file, cfg.domain, tier, res)
	if err != nil {
		return nil, err
	}
	if err := loads(res.YAML); err != nil {
		return nil, fmt.Errorf("the converted policies do not load (a bug in the converter): %w", err)
	}
	return res, nil
}

// slot is where a rule goes in flowguard's policies: a tenant ("" for the
// tier) and an endpoint pattern ("" for the base rule).
type slot struct{ tenant, endpoint string }

type rule struct {
	line          int
	from, name    string
	rate          int64
	period        time.Duration
	approximation string
}

type converter struct {
	file    string
	opts    Options
	slots   map[slot]*rule
	deny    []string
	denied  map[string]bool
	skipped []Item
	approx  []Item
}

func (c *converter) skip(line int, what, format string, args ...any) {
	c.skipped = append(c.skipped, Item{File: c.file, Line: line, What: what, Reason: fmt.Sprintf(format, args...)})
}

func (c *converter) approximate(line int, what, format string, args ...any) {
	c.approx = append(c.approx, Item{File: c.file, Line: line, What: what, Reason: fmt.Sprintf(format, args...)})
}

// walk maps d, reached through chain, and its nested descriptors.
func (c *converter) walk(d *descriptor, chain []*descriptor) {
	chain = append(chain[:len(chain):len(chain)], d)
	what := chainString(chain)
	for _, opt := range sortedKeys(d.options) {
		line := d.options[opt]
		switch opt {
		case "shadow_mode", "quota_mode":
			if d.rate == nil {
				c.skip(line, what+" "+opt, "it applies to this descriptor's rate_limit, and there is none")
			}
		case "share_threshold":
			// flowguard's prefix rule is one budget for all it matches:
			// what share_threshold asks for.
		default:
			c.skip(line, what+" "+opt, "flowguard's metrics count decisions by tier and outcome, not by descriptor")
		}
	}
	switch {
	case d.rate != nil:
		c.rule(d, chain, what)
	case len(d.descriptors) == 0:
		c.skip(d.line, what, "a descriptor without rate_limit or descriptors exempts its requests; flowguard has no exemption (its requests get the rule that matches them)")
	}
	for _, child := range d.descriptors {
		c.walk(child, chain)
	}
}

// rule maps the chain that ends in d, which has a rate_limit.
func (c *converter) rule(d *descriptor, chain []*descriptor, what string) {
	r := d.rate
	if _, ok := d.options["shadow_mode"]; ok {
		c.skip(d.options["shadow_mode"], what, "shadow_mode never rejects; flowguard has no budget that is counted but not enforced (ml: shadow shadows the bandit, not the budget), so the rule is left out rather than enforced")
		return
	}
	if _, ok := d.options["quota_mode"]; ok {
		c.skip(d.options["quota_mode"], what, "quota_mode never rejects; flowguard enforces every budget, so the rule is left out rather than enforced")
		return
	}
	target, denyKey, perKey, ok := c.place(chain, what)
	if !ok {
		return
	}
	if denyKey != "" {
		if r.unlimited || r.requestsPerUnit != 0 {
			c.skip(d.line, what, "flowguard has no per-key budget; give the key a tenant of its own and a descriptor on the tenant")
			return
		}
		if len(chain) > 1 {
			c.skip(d.line, what, "flowguard denies a key on every endpoint; requests_per_unit 0 here blocks it for this chain only")
			return
		}
		if !c.denied[denyKey] {
			if c.denied == nil {
				c.denied = map[string]bool{}
			}
			c.denied[denyKey] = true
			c.deny = append(c.deny, denyKey)
		}
		return
	}
	nr := &rule{line: d.line, from: what, name: r.name, rate: r.requestsPerUnit, period: r.period}
	switch {
	case r.unlimited:
		nr.rate, nr.period = generousRate, generousPeriod
		c.approximate(r.line, what+" unlimited", "flowguard has no unlimited rule; written as %d per second, the fastest its limiter counts", generousRate)
	case r.requestsPerUnit == 0:
		c.skip(r.line, what, "requests_per_unit 0 blocks every request; flowguard rates are at least 1, and it blocks whole keys only (deny list)")
		return
	case r.period > maxPeriod:
		c.skip(r.line, what, "unit %s: flowguard periods are at most 31 days", r.unit)
		return
	case r.requestsPerUnit > maxRate:
		c.skip(r.line, what, "requests_per_unit %d is above flowguard's largest rate, %d", r.requestsPerUnit, maxRate)
		return
	case r.period.Microseconds()/r.requestsPerUnit < 1:
		c.skip(r.line, what, "%d per %s is faster than flowguard's limiter counts (one request per microsecond)", r.requestsPerUnit, r.unit)
		return
	}
	if other, taken := c.slots[target]; taken {
		c.skip(d.line, what, "flowguard has one rule for %s, already taken by %s at line %d", target, other.from, other.line)
		return
	}
	c.slots[target] = nr
	if len(r.replaces) > 0 {
		c.skip(r.replacesLine, what+" replaces "+strings.Join(r.replaces, ", "),
			"flowguard has no named limits: of the rules matching a request, the most specific (tenant over tier, endpoint over base) applies")
	}
	if !perKey {
		c.approximate(d.line, what, "envoyproxy/ratelimit counts this limit over all requests with these descriptors; flowguard counts it for each API key")
	}
}

// at names d's line when it is not the leaf's, where an item is reported.
func at(d, leaf *descriptor) string {
	if d == leaf {
		return ""
	}
	return fmt.Sprintf("line %d: ", d.line)
}

func (s slot) String() string {
	switch {
	case s.tenant == "" && s.endpoint == "":
		return "the tier"
	case s.tenant == "":
		return fmt.Sprintf("endpoint %q", s.endpoint)
	case s.endpoint == "":
		return fmt.Sprintf("tenant %q", s.tenant)
	}
	return fmt.Sprintf("tenant %q endpoint %q", s.tenant, s.endpoint)
}

// place finds the slot of a chain: a tenant and an endpoint, or a key to
// deny (a chain on one API key's value). perKey says the chain counts per
// API key, as flowguard does. ok is false when the chain was skipped.
func (c *converter) place(chain []*descriptor, what string) (target slot, denyKey string, perKey, ok bool) {
	leaf := chain[len(chain)-1]
	var method, path string
	var methodLine int
	seen := map[string]int{}
	for _, d := range chain {
		meaning := d.key
		if m, mapped := c.opts.Keys[d.key]; mapped {
			meaning = m
		} else if !isKnown(d.key, Meanings) {
			c.skip(leaf.line, what, at(d, leaf)+"descriptor key %q has no flowguard meaning: flowguard budgets API keys, by tenant and endpoint (--key %s=%s renames it)",
				d.key, d.key, strings.Join(Meanings, "|"))
			return slot{}, "", false, false
		}
		if line, twice := seen[meaning]; twice {
			c.skip(leaf.line, what, at(d, leaf)+"%s twice in one chain (also line %d)", meaning, line)
			return slot{}, "", false, false
		}
		seen[meaning] = d.line
		if meaning != KeyAPIKey && !d.hasValue {
			c.skip(leaf.line, what, at(d, leaf)+"%s without a value is a budget for each distinct %s; flowguard names the tenants and endpoints it budgets", d.key, meaning)
			return slot{}, "", false, false
		}
		if meaning != KeyPath && meaning != KeyHeaderMatch && strings.Contains(d.value, "*") {
			c.skip(leaf.line, what, at(d, leaf)+"a wildcard %s value: flowguard matches %ss exactly", meaning, meaning)
			return slot{}, "", false, false
		}
		switch meaning {
		case KeyAPIKey:
			if d.hasValue {
				denyKey = d.value
			} else {
				perKey = true
			}
		case KeyTenant:
			if !nameRE.MatchString(d.value) {
				c.skip(leaf.line, what, at(d, leaf)+"tenant %q: flowguard tenant names are 1-64 letters, digits, '_', '.' or '-'", d.value)
				return slot{}, "", false, false
			}
			target.tenant = d.value
		case KeyMethod:
			if !methodRE.MatchString(d.value) {
				c.skip(leaf.line, what, at(d, leaf)+"method %q: flowguard methods are 1-16 upper-case letters", d.value)
				return slot{}, "", false, false
			}
			method, methodLine = d.value, d.line
		case KeyPath, KeyHeaderMatch:
			if path != "" {
				c.skip(leaf.line, what, at(d, leaf)+"%s", "a path and a header_match in one chain")
				return slot{}, "", false, false
			}
			m, p, reason := endpoint(d.value, meaning == KeyHeaderMatch)
			if reason != "" {
				c.skip(leaf.line, what, at(d, leaf)+"%s", reason)
				return slot{}, "", false, false
			}
			if m != "" {
				if method != "" {
					c.skip(leaf.line, what, at(d, leaf)+"header_match %q names a method and the chain has one (line %d)", d.value, methodLine)
					return slot{}, "", false, false
				}
				method, methodLine = m, d.line
			}
			path = p
			if strings.HasSuffix(p, "*") {
				if _, shared := d.options["share_threshold"]; !shared && meaning == KeyPath {
					c.approximate(d.line, what, "each path matching %q has its own counter here; flowguard's prefix rule is one budget per key for all of them (share_threshold: true)", d.value)
				}
			}
		}
	}
	switch {
	case method != "" && path == "":
		target.endpoint = method + " /*"
	case method != "":
		target.endpoint = method + " " + path
	default:
		target.endpoint = path
	}
	return target, denyKey, perKey, true
}

// endpoint reads a path value, or a header_match value written as an
// endpoint pattern ("/path" or "METHOD /path"), into flowguard's form; a
// reason when it cannot.
func endpoint(value string, headerMatch bool) (method, path, reason string) {
	path = value
	if headerMatch {
		if m, p, ok := strings.Cut(value, " "); ok {
			if !methodRE.MatchString(m) {
				return "", "", fmt.Sprintf("header_match %q is not an endpoint pattern (\"/path\" or \"METHOD /path\"): flowguard cannot see which requests the Envoy header match selects", value)
			}
			method, path = m, p
		}
		if !strings.HasPrefix(path, "/") {
			return "", "", fmt.Sprintf("header_match %q is not an endpoint pattern (\"/path\" or \"METHOD /path\"): flowguard cannot see which requests the Envoy header match selects", value)
		}
	}
	bare := strings.TrimSuffix(path, "*")
	switch {
	case !endpointRE.MatchString(bare) || strings.ContainsAny(bare, "*?#"):
		if strings.Contains(bare, "*") {
			return "", "", fmt.Sprintf("path %q has a wildcard before its end; flowguard's endpoint patterns are exact or a prefix ending in *", value)
		}
		return "", "", fmt.Sprintf("path %q: flowguard endpoints are a path from /, printable ASCII, without ? or #", value)
	}
	return method, path, ""
}

// render writes the policies section.
func (c *converter) render(domain, tier string) (*yaml.Node, int, error) {
	tiers := mapNode()
	tenants := mapNode()
	tierRule := mapNode()
	tierEndpoints := mapNode()
	tenantRules := map[string]*yaml.Node{}
	tenantEndpoints := map[string]*yaml.Node{}
	var slots []slot
	for s := range c.slots {
		slots = append(slots, s)
	}
	sort.Slice(slots, func(i, j int) bool {
		if slots[i].tenant != slots[j].tenant {
			return slots[i].tenant < slots[j].tenant
		}
		return slots[i].endpoint < slots[j].endpoint
	})
	base, ok := c.slots[slot{}]
	if !ok {
		base = &rule{rate: generousRate, period: generousPeriod}
		tierRule.HeadComment = "No descriptor limits every API key: envoyproxy/ratelimit lets through the\nrequests no descriptor matches, so the tier is the fastest rate flowguard counts."
	} else {
		tierRule.HeadComment = base.comment()
	}
	tierRule.Content = append(tierRule.Content, budget(base)...)
	for _, s := range slots {
		r := c.slots[s]
		switch {
		case s.tenant == "" && s.endpoint == "":
		case s.tenant == "":
			tierEndpoints.Content = append(tierEndpoints.Content, endpointKey(s.endpoint, r), budgetNode(r))
		default:
			if tenantRules[s.tenant] == nil {
				tr := mapNode(scalar("tier"), quoted(tier))
				tenantRules[s.tenant] = tr
				tenants.Content = append(tenants.Content, quoted(s.tenant), tr)
			}
			tr := tenantRules[s.tenant]
			if s.endpoint == "" {
				b := budget(r)
				b[0].HeadComment = r.comment()
				tr.Content = append(tr.Content, b...)
				continue
			}
			if tenantEndpoints[s.tenant] == nil {
				tenantEndpoints[s.tenant] = mapNode()
				tr.Content = append(tr.Content, scalar("endpoints"), tenantEndpoints[s.tenant])
			}
			tenantEndpoints[s.tenant].Content = append(tenantEndpoints[s.tenant].Content, endpointKey(s.endpoint, r), budgetNode(r))
		}
	}
	if len(tierEndpoints.Content) > 0 {
		tierRule.Content = append(tierRule.Content, scalar("endpoints"), tierEndpoints)
	}
	tiers.Content = append(tiers.Content, quoted(tier), tierRule)
	policies := mapNode(scalar("default_tier"), quoted(tier), scalar("tiers"), tiers)
	if len(tenants.Content) > 0 {
		policies.Content = append(policies.Content, scalar("tenants"), tenants)
	}
	if len(c.deny) > 0 {
		deny := &yaml.Node{Kind: yaml.SequenceNode}
		for _, k := range c.deny {
			deny.Content = append(deny.Content, quoted(k))
		}
		policies.Content = append(policies.Content, scalar("deny"), deny)
	}
	return mapNode(scalar("policies"), policies), len(c.slots) + len(c.deny), nil
}

func (r *rule) comment() string {
	s := "from " + r.from + " at line " + strconv.Itoa(r.line)
	if r.name != "" {
		s += " (name " + r.name + ")"
	}
	return s
}

func budget(r *rule) []*yaml.Node {
	n := strconv.FormatInt(r.rate, 10)
	return []*yaml.Node{scalar("rate"), scalar(n), scalar("period"), scalar(formatPeriod(r.period)), scalar("burst"), scalar(n)}
}

func budgetNode(r *rule) *yaml.Node { return mapNode(budget(r)...) }

func endpointKey(pattern string, r *rule) *yaml.Node {
	k := quoted(pattern)
	k.HeadComment = r.comment()
	return k
}

// formatPeriod writes the periods units map to as a person would: 1s, 1m,
// 1h, 24h, 168h, 720h.
func formatPeriod(d time.Duration) string {
	switch {
	case d%time.Hour == 0:
		return strconv.FormatInt(int64(d/time.Hour), 10) + "h"
	case d%time.Minute == 0:
		return strconv.FormatInt(int64(d/time.Minute), 10) + "m"
	}
	return d.String()
}

func withHeader(body *yaml.Node, file, domain, tier string, res *Result) ([]byte, error) {
	lines := []string{
		"flowguard policies imported from envoyproxy/ratelimit by `flowguard import envoy-ratelimit`.",
		fmt.Sprintf("source: %s, domain %q, as tier %q (the default tier)", file, domain, tier),
		"Each rule is rate = requests_per_unit per unit, burst = rate: the whole unit's requests may come",
		"at once, as in envoyproxy/ratelimit's fixed window, but flowguard's window slides (GCRA) and counts",
		"per API key. ml is off (the default): budgets are enforced as written, no bandit.",
		"Check with `flowguard config validate FILE`; paste the policies: section into your configuration.",
	}
	if len(res.Skipped) == 0 {
		lines = append(lines, "Everything was mapped.")
	} else {
		lines = append(lines, fmt.Sprintf("Not mapped (%d):", len(res.Skipped)))
		for _, it := range res.Skipped {
			lines = append(lines, "  "+it.Skip())
		}
	}
	if len(res.Approximated) > 0 {
		lines = append(lines, fmt.Sprintf("Mapped with other semantics (%d):", len(res.Approximated)))
		for _, it := range res.Approximated {
			lines = append(lines, "  "+it.Approx())
		}
	}
	for i, l := range lines {
		// A comment is one line: a newline in a file name or value must
		// not end it.
		lines[i] = strings.NewReplacer("\n", `\n`, "\r", `\r`).Replace(l)
	}
	body.HeadComment = strings.Join(lines, "\n")
	var buf bytes.Buffer
	enc := yaml.NewEncoder(&buf)
	enc.SetIndent(2)
	if err := enc.Encode(body); err != nil {
		return nil, err
	}
	if err := enc.Close(); err != nil {
		return nil, err
	}
	return buf.Bytes(), nil
}

// loads compiles the output with flowguard's own policy compiler.
func loads(out []byte) error {
	var f struct {
		Policies policy.Doc `yaml:"policies"`
	}
	d, err := yamlx.Decode("output", out, &f)
	if err != nil {
		return err
	}
	_, err = policy.Compile(f.Policies, d, "policies")
	return err
}

func chainString(chain []*descriptor) string {
	parts := make([]string, len(chain))
	for i, d := range chain {
		parts[i] = d.tuple()
	}
	return strings.Join(parts, ",")
}

func sortItems(items []Item) {
	sort.SliceStable(items, func(i, j int) bool { return items[i].Line < items[j].Line })
}

func sortedKeys[V any](m map[string]V) []string {
	keys := make([]string, 0, len(m))
	for k := range m {
		keys = append(keys, k)
	}
	sort.Strings(keys)
	return keys
}

func mapNode(content ...*yaml.Node) *yaml.Node {
	return &yaml.Node{Kind: yaml.MappingNode, Content: content}
}

func scalar(v string) *yaml.Node { return &yaml.Node{Kind: yaml.ScalarNode, Value: v} }

func quoted(v string) *yaml.Node {
	return &yaml.Node{Kind: yaml.ScalarNode, Style: yaml.DoubleQuotedStyle, Value: v}
}
