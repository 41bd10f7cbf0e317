package policy

import (
	"fmt"
	"math"
	"regexp"
	"sort"
	"strconv"
	"strings"
	"time"

	"github.com/devflow/flowguard/internal/yamlx"
	"github.com/devflow/flowguard/limiter"
)

// Doc is the YAML form of the policies section. Every field of a Spec is
// optional below the tier level and inherits from above.
type Doc struct {
	// DefaultTier is what an unknown or missing tenant gets, matched
	// case-insensitively. Default: "free" when such a tier exists and no
	// other is named.
	DefaultTier string `yaml:"default_tier"`
	// Tiers are the tiers, by name. Names match case-insensitively
	// everywhere (tenants' tier, default_tier, experiments' targeting), so
	// two names differing only in case are an error; the spelling here is
	// the tier's canonical name.
	Tiers   map[string]Spec   `yaml:"tiers"`
	Tenants map[string]Tenant `yaml:"tenants"`
	Deny    []string          `yaml:"deny"`
	Allow   []string          `yaml:"allow"`
}

// Spec is the budget and behaviour of a tier, a tenant or an endpoint.
type Spec struct {
	Rate      *int64         `yaml:"rate"`       // requests per period
	Period    *time.Duration `yaml:"period"`     // Default: 1s at tier level
	Burst     *int64         `yaml:"burst"`      // Default: rate
	Floor     *float64       `yaml:"floor"`      // Default: 1
	Ceiling   *float64       `yaml:"ceiling"`    // Default: 1
	ML        *string        `yaml:"ml"`         // on | shadow | off; Default: off
	AutoBlock *bool          `yaml:"auto_block"` // Default: false
	Audit     *bool          `yaml:"audit"`      // Default: false
	// DailyQuota is the second window beside the rate: off, fitted (seed
	// 004's quota, refitted from served usage; see quotas:) or a pinned
	// number of requests per rolling 24 h. Default: off.
	DailyQuota *string         `yaml:"daily_quota"`
	Endpoints  map[string]Spec `yaml:"endpoints"` // overrides by endpoint pattern
	// Class is enterprise or standard, and only a tier has one (its
	// tenants and endpoints share it). Default: DefaultClass(tier name).
	Class Class `yaml:"class"`
}

// Tenant is a Spec bound to a tier.
type Tenant struct {
	Tier string `yaml:"tier"` // Default: the default tier
	Spec `yaml:",inline"`
}

// Limits on values, against typos that would silently disable a limit.
const (
	maxRate       = 1_000_000_000
	maxPeriod     = 31 * 24 * time.Hour
	maxMultiplier = 1000
	maxListedKey  = 256
	maxDaily      = 86_400_000_000 // one request per microsecond, the limiter's finest
)

var (
	nameRE     = regexp.MustCompile(`^[A-Za-z0-9][A-Za-z0-9_.-]{0,63}$`)
	methodRE   = regexp.MustCompile(`^[A-Z]{1,16}$`)
	endpointRE = regexp.MustCompile(`^/[\x21-\x7e]*$`)
)

// Compile validates doc and compiles it into a Set. d locates errors: each
// names the file and line of the offending value. path is where the
// policies section sits in the file (nil when it is the whole file).
func Compile(doc Doc, d *yamlx.Doc, path ...string) (*Set, error) {
	c := compiler{d: d, base: path}
	set := c.compile(doc)
	if len(c.errs) > 0 {
		sort.SliceStable(c.errs, func(i, j int) bool { return c.errs[i].Line < c.errs[j].Line })
		return nil, c.errs
	}
	return set, nil
}

type compiler struct {
	d    *yamlx.Doc
	base []string
	errs yamlx.Errors
}

func (c *compiler) errorf(path []string, format string, args ...any) {
	full := append(append([]string(nil), c.base...), path...)
	c.errs = append(c.errs, c.d.Errorf(full, format, args...))
}

func (c *compiler) compile(doc Doc) *Set {
	s := &Set{
		tiers:   make(map[string]*ruleTable),
		tenants: make(map[string]*ruleTable),
		deny:    make(map[string]struct{}),
		allow:   make(map[string]struct{}),
	}
	if len(doc.Tiers) == 0 {
		c.errorf(nil, "at least one tier is required under tiers")
		return s
	}
	// Tiers are keyed by their folded name: lookups match case-insensitively.
	tierSpecs := make(map[string]Spec)
	broken := make(map[string]bool) // reported once already
	spelled := make(map[string]string)
	for _, name := range sortedKeys(doc.Tiers) {
		spec := doc.Tiers[name]
		path := []string{"tiers", name}
		if !nameRE.MatchString(name) {
			c.errorf(path, "tier name must be 1-64 letters, digits, '_', '.' or '-'")
			continue
		}
		key := strings.ToLower(name)
		if other, dup := spelled[key]; dup {
			c.errorf(path, "tier %q differs from tier %q only in case: tier names match case-insensitively", name, other)
			continue
		}
		spelled[key] = name
		if spec.Rate == nil {
			c.errorf(path, "rate is required for a tier")
			broken[key] = true
			continue
		}
		class := spec.Class
		switch class {
		case "":
			class = DefaultClass(name)
		case ClassEnterprise, ClassStandard:
		default:
			c.errorf(append(path, "class"), "class is %q, want enterprise or standard", spec.Class)
		}
		c.noClass(spec.Endpoints, path)
		full := withDefaults(spec)
		before := len(c.errs)
		s.tiers[key] = c.table(Tier{Name: name, Class: class}, name, "", full, nil, path)
		s.tierNames = append(s.tierNames, name)
		if len(c.errs) == before {
			tierSpecs[key] = full
		} else {
			broken[key] = true
		}
	}
	def := doc.DefaultTier
	if def == "" {
		def = "free"
	}
	switch t := s.tiers[strings.ToLower(def)]; {
	case t != nil:
		s.defaultTier = t
	case broken[strings.ToLower(def)]:
	case doc.DefaultTier != "":
		c.errorf([]string{"default_tier"}, "unknown tier %q (tiers: %s)", def, strings.Join(s.tierNames, ", "))
	default:
		c.errorf(nil, "default_tier is required when there is no tier named \"free\"")
	}
	for _, name := range sortedKeys(doc.Tenants) {
		ten := doc.Tenants[name]
		path := []string{"tenants", name}
		if !nameRE.MatchString(name) {
			c.errorf(path, "tenant name must be 1-64 letters, digits, '_', '.' or '-'")
			continue
		}
		if ten.Class != "" {
			c.errorf(append(path, "class"), "class belongs to a tier, not a tenant: the tenant has its tier's")
		}
		c.noClass(ten.Endpoints, path)
		tier := ten.Tier
		if tier == "" {
			tier = def
		}
		key := strings.ToLower(tier)
		tierSpec, ok := tierSpecs[key]
		if !ok {
			if !broken[key] { // a broken tier is reported once, not again for each tenant
				c.errorf(append(path, "tier"), "unknown tier %q (tiers: %s)", tier, strings.Join(s.tierNames, ", "))
			}
			continue
		}
		merged := merge(tierSpec, ten.Spec)
		merged.Endpoints = ten.Endpoints
		base := s.tiers[key].base
		s.tenants[name] = c.table(Tier{Name: base.Tier, Class: base.Class}, name, name, merged, tierSpec.Endpoints, path)
	}
	c.keyList(doc.Deny, s.deny, "deny")
	c.keyList(doc.Allow, s.allow, "allow")
	for k := range s.deny {
		if _, ok := s.allow[k]; ok {
			c.errorf([]string{"allow"}, "key %q is on both the deny and the allow list", k)
		}
	}
	return s
}

// noClass reports a class set on an endpoint override: a class is the
// tier's alone.
func (c *compiler) noClass(endpoints map[string]Spec, path []string) {
	for _, pattern := range sortedKeys(endpoints) {
		if endpoints[pattern].Class != "" {
			c.errorf(append(append([]string(nil), path...), "endpoints", pattern, "class"),
				"class belongs to a tier, not an endpoint: every endpoint has its tier's")
		}
	}
}

// table compiles an owner's base rule and its endpoint overrides. For a
// tenant, inherited holds its tier's overrides: an endpoint rule merges, in
// order, the tier, the tenant, the tier's endpoint override and the
// tenant's, so the more specific endpoint always wins and the tenant wins
// over its tier at the same specificity.
func (c *compiler) table(tier Tier, name, tenant string, spec Spec, inherited map[string]Spec, path []string) *ruleTable {
	t := &ruleTable{exact: make(map[string]*Rule)}
	t.base = c.rule(spec, path)
	if t.base == nil {
		t.base = &Rule{}
	}
	t.base.Name, t.base.Tier, t.base.Class, t.base.Tenant = name, tier.Name, tier.Class, tenant
	t.base.DailyScope = DailyScopeSuffix
	patterns := make(map[string]bool)
	for p := range inherited {
		patterns[p] = true
	}
	for p := range spec.Endpoints {
		patterns[p] = true
	}
	for _, pattern := range sortedKeys(patterns) {
		epath := append(append([]string(nil), path...), "endpoints", pattern)
		method, p, prefix, ok := parsePattern(pattern)
		if !ok {
			c.errorf(epath, "endpoint pattern must be \"/path\", \"METHOD /path\" or end in \"/*\" for a prefix")
			continue
		}
		merged := spec
		if tierEp, ok := inherited[pattern]; ok {
			merged = merge(merged, tierEp)
		}
		if own, ok := spec.Endpoints[pattern]; ok {
			merged = merge(merged, own)
		}
		r := c.rule(merged, epath)
		if r == nil {
			continue
		}
		r.Name, r.Tier, r.Class, r.Tenant, r.Scope = name+" "+pattern, tier.Name, tier.Class, tenant, pattern
		r.DailyScope = pattern + DailyScopeSuffix
		if prefix {
			t.prefixes = append(t.prefixes, prefixRule{method: method, path: p, rule: r})
		} else {
			t.exact[pattern] = r
		}
	}
	sort.SliceStable(t.prefixes, func(i, j int) bool {
		a, b := t.prefixes[i], t.prefixes[j]
		if len(a.path) != len(b.path) {
			return len(a.path) > len(b.path)
		}
		return a.method != "" && b.method == ""
	})
	return t
}

// parsePattern parses "METHOD /path", "/path" and either with a trailing "*".
func parsePattern(pattern string) (method, path string, prefix, ok bool) {
	path = pattern
	if i := strings.IndexByte(pattern, ' '); i >= 0 {
		method, path = pattern[:i], pattern[i+1:]
		if !methodRE.MatchString(method) {
			return "", "", false, false
		}
	}
	if strings.HasSuffix(path, "*") {
		path, prefix = strings.TrimSuffix(path, "*"), true
	}
	if !endpointRE.MatchString(path) || strings.ContainsAny(path, "*?#") {
		return "", "", false, false
	}
	return method, path, prefix, true
}

// rule validates a fully merged spec and builds its Rule; nil when invalid.
func (c *compiler) rule(s Spec, path []string) *Rule {
	at := func(field string) []string { return append(append([]string(nil), path...), field) }
	bad := len(c.errs)
	switch rate := *s.Rate; {
	case rate <= 0:
		c.errorf(at("rate"), "rate %d must be a positive number of requests per period", rate)
	case rate > maxRate:
		c.errorf(at("rate"), "rate %d is above the maximum of %d", rate, maxRate)
	}
	if p := *s.Period; p < time.Millisecond || p > maxPeriod {
		c.errorf(at("period"), "period %s must be between 1ms and %s", p, maxPeriod)
	}
	if b := *s.Burst; (b <= 0 || b > maxRate) && s.Burst != s.Rate { // a burst that follows a bad rate is not a second error
		c.errorf(at("burst"), "burst %d must be between 1 and %d", b, maxRate)
	}
	floor, ceiling := *s.Floor, *s.Ceiling
	for field, m := range map[string]float64{"floor": floor, "ceiling": ceiling} {
		if !(m > 0 && m <= maxMultiplier) || math.IsInf(m, 0) {
			c.errorf(at(field), "%s multiplier %g must be above 0 and at most %d", field, m, maxMultiplier)
		}
	}
	if floor > ceiling {
		c.errorf(at("floor"), "floor %g is above ceiling %g", floor, ceiling)
	}
	ml := MLMode(*s.ML)
	if ml != MLOn && ml != MLShadow && ml != MLOff {
		c.errorf(at("ml"), "ml is %q, want on, shadow or off", *s.ML)
	}
	var daily int64
	fitted := false
	switch v := *s.DailyQuota; v {
	case DailyOff:
	case DailyFitted:
		fitted = true
	default:
		n, err := strconv.ParseInt(v, 10, 64)
		if err != nil || n <= 0 || n > maxDaily {
			c.errorf(at("daily_quota"), "daily_quota is %q, want off, fitted or a number of requests per day from 1 to %d", v, maxDaily)
		}
		daily = n
	}
	if len(c.errs) > bad {
		return nil
	}
	l := limiter.Limit{Rate: *s.Rate, Burst: *s.Burst, Period: *s.Period}
	if err := l.Validate(); err != nil {
		c.errorf(at("rate"), "%v", strings.TrimPrefix(err.Error(), "limiter: "))
		return nil
	}
	return &Rule{Limit: l, Floor: floor, Ceiling: ceiling, ML: ml, AutoBlock: *s.AutoBlock, Audit: *s.Audit,
		Daily: daily, DailyFitted: fitted}
}

func (c *compiler) keyList(keys []string, into map[string]struct{}, field string) {
	for i, k := range keys {
		if k == "" || len(k) > maxListedKey {
			c.errorf([]string{field, fmt.Sprint(i)}, "key must be 1-%d bytes", maxListedKey)
			continue
		}
		into[k] = struct{}{}
	}
}

// withDefaults fills a tier's unset fields.
func withDefaults(s Spec) Spec {
	one, off, no := 1.0, string(MLOff), false
	sec := time.Second
	if s.Period == nil {
		s.Period = &sec
	}
	if s.Burst == nil {
		s.Burst = s.Rate
	}
	if s.Floor == nil {
		s.Floor = &one
	}
	if s.Ceiling == nil {
		s.Ceiling = &one
	}
	if s.ML == nil {
		s.ML = &off
	}
	if s.AutoBlock == nil {
		s.AutoBlock = &no
	}
	if s.Audit == nil {
		s.Audit = &no
	}
	if s.DailyQuota == nil {
		daily := DailyOff
		s.DailyQuota = &daily
	}
	return s
}

// merge returns base with every budget field over sets replaced; Endpoints
// stay base's. A rate set
// without a burst resets the burst to the new rate, so that overriding a
// rate never leaves a burst from another budget behind.
func merge(base, over Spec) Spec {
	if over.Rate != nil {
		base.Rate = over.Rate
		if over.Burst == nil {
			base.Burst = over.Rate
		}
	}
	if over.Period != nil {
		base.Period = over.Period
	}
	if over.Burst != nil {
		base.Burst = over.Burst
	}
	if over.Floor != nil {
		base.Floor = over.Floor
	}
	if over.Ceiling != nil {
		base.Ceiling = over.Ceiling
	}
	if over.ML != nil {
		base.ML = over.ML
	}
	if over.AutoBlock != nil {
		base.AutoBlock = over.AutoBlock
	}
	if over.Audit != nil {
		base.Audit = over.Audit
	}
	if over.DailyQuota != nil {
		base.DailyQuota = over.DailyQuota
	}
	return base
}

func sortedKeys[V any](m map[string]V) []string {
	keys := make([]string, 0, len(m))
	for k := range m {
		keys = append(keys, k)
	}
	sort.Strings(keys)
	return keys
}
