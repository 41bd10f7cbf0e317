package policy

import (
	"strings"
	"time"

	"github.com/devflow/flowguard/limiter"
)

// MLMode says how far the bandit may go for a key.
type MLMode string

const (
	MLOn     MLMode = "on"     // the bandit's multiplier is enforced
	MLShadow MLMode = "shadow" // the bandit's choice is computed and logged, the base budget enforced
	MLOff    MLMode = "off"    // deterministic budget only
)

// Class says how a tier is protected. Enterprise-class tiers are what the
// enterprise guardrail protects, what the enterprise feature and reports
// count, and what rewards weigh as enterprise.
type Class string

// Classes.
const (
	ClassStandard   Class = "standard"
	ClassEnterprise Class = "enterprise"
)

// DefaultClass is the class of a tier whose file gives none: enterprise
// for a tier named enterprise, in any case; standard for any other.
func DefaultClass(tier string) Class {
	if strings.EqualFold(tier, "enterprise") {
		return ClassEnterprise
	}
	return ClassStandard
}

// Tier is a tier the policy file defines.
type Tier struct {
	// Name is the tier's canonical name: as the file spells it under tiers.
	Name string
	// Class is the tier's class. "" (a Tier built in Go, or read from a
	// record written before classes existed) means DefaultClass(Name).
	Class Class
}

// Enterprise reports whether t is enterprise-class.
func (t Tier) Enterprise() bool {
	if t.Class == "" {
		return DefaultClass(t.Name) == ClassEnterprise
	}
	return t.Class == ClassEnterprise
}

// Rule is a resolved policy: what bounds one key's budget on one endpoint.
// Rules are shared and must not be modified.
type Rule struct {
	// Name identifies the rule in RateLimit-Policy headers: the tier, the
	// tenant, or either followed by the endpoint pattern.
	Name string
	// Tier is the canonical name of the tenant's tier (Tier.Name), whatever
	// case the tenant named it in; Tenant is "" for an unknown tenant.
	Tier, Tenant string
	// Class is the tier's class, never "" in a compiled Set. Compare with
	// Enterprise, not with the tier's name.
	Class Class
	// Scope is the endpoint pattern of an override, or "" when the key's
	// whole traffic shares one budget. It keys the limiter.
	Scope string
	// Limit is the base budget, before any multiplier.
	Limit limiter.Limit
	// Floor and Ceiling bound the budget multiplier: the bandit never goes
	// outside [Floor, Ceiling], and the deterministic budget is 1 clamped to it.
	Floor, Ceiling float64
	ML             MLMode
	AutoBlock      bool // the key may be blocked outright, not only throttled
	Audit          bool // every decision is written to the audit log
	// Daily is a pinned daily quota (requests per rolling 24 h, before the
	// multiplier), 0: none. DailyFitted says the quota is the fitted one
	// of the rule's tier × Scope, installed by the refit (quotas:); until
	// a fit is installed the rule has no daily window.
	Daily       int64
	DailyFitted bool
	// DailyScope keys the limiter for the daily window: Scope followed by
	// DailyScopeSuffix, so the two windows of a key are two limiter keys.
	DailyScope string
}

// DailyScopeSuffix ends the limiter scope of a rule's daily window.
const DailyScopeSuffix = "#day"

// Values of daily_quota besides a number.
const (
	DailyOff    = "off"
	DailyFitted = "fitted"
)

// DailyLimit is a daily quota q as the limiter enforces it, scaled by the
// multiplier m: a rolling 24 h GCRA whose burst is the whole quota, so a
// key may spend its day's budget at any pace the per-period rate allows.
// Seed 004 rate-limits a user-day above the quota, so a fractional quota
// admits its integer part; never less than one request.
func DailyLimit(q, m float64) limiter.Limit {
	n := int64(q * m)
	n = min(max(n, 1), 86_400_000_000)
	return limiter.Limit{Rate: n, Burst: n, Period: 24 * time.Hour}
}

// Enterprise reports whether the rule's tier is enterprise-class.
func (r *Rule) Enterprise() bool { return Tier{Name: r.Tier, Class: r.Class}.Enterprise() }

// Budget returns the limit for multiplier m, after clamping m to
// [Floor, Ceiling], and the multiplier used.
func (r *Rule) Budget(m float64) (limiter.Limit, float64) {
	m = min(max(m, r.Floor), r.Ceiling)
	return r.Limit.Scale(m), m
}

// Set is a compiled, immutable set of policies. It is safe for concurrent
// use.
type Set struct {
	defaultTier *ruleTable
	tiers       map[string]*ruleTable // by lower-case name
	tenants     map[string]*ruleTable
	deny, allow map[string]struct{}
	tierNames   []string
}

// ruleTable is one owner's (tier's or tenant's) rules: a base rule and its
// endpoint overrides, already merged.
type ruleTable struct {
	base     *Rule
	exact    map[string]*Rule // "METHOD /path" and "/path" (any method)
	prefixes []prefixRule     // most specific first
}

type prefixRule struct {
	method string // "" = any
	path   string // without the trailing *
	rule   *Rule
}

// Resolve returns the rule for a tenant's endpoint. An unknown or empty
// tenant gets the default tier. endpoint is "METHOD /path" (a query string
// is ignored) or "/path"; the most specific matching override wins: exact
// path over prefix, longer prefix over shorter, a named method over any.
// Resolve does not allocate.
func (s *Set) Resolve(tenant, endpoint string) *Rule {
	t := s.tenants[tenant]
	if t == nil {
		t = s.defaultTier
	}
	if len(t.exact) == 0 && len(t.prefixes) == 0 {
		return t.base
	}
	method, path, methodPath := splitEndpoint(endpoint)
	if method != "" {
		if r := t.exact[methodPath]; r != nil {
			return r
		}
	}
	if r := t.exact[path]; r != nil {
		return r
	}
	for _, p := range t.prefixes {
		if (p.method == "" || p.method == method) && strings.HasPrefix(path, p.path) {
			return p.rule
		}
	}
	return t.base
}

// splitEndpoint splits "METHOD /path?query" into its method, its path and
// "METHOD /path", slicing endpoint rather than allocating when it can.
func splitEndpoint(endpoint string) (method, path, methodPath string) {
	if i := strings.IndexAny(endpoint, "?#"); i >= 0 {
		endpoint = endpoint[:i]
	}
	i := strings.IndexByte(endpoint, ' ')
	if i < 0 {
		return "", endpoint, endpoint
	}
	method, path = endpoint[:i], endpoint[i+1:]
	if strings.HasPrefix(path, " ") {
		path = strings.TrimLeft(path, " ")
		return method, path, method + " " + path
	}
	return method, path, endpoint
}

// Denied reports whether key is on the deny list.
func (s *Set) Denied(key string) bool { _, ok := s.deny[key]; return ok }

// Allowed reports whether key is on the allow list.
func (s *Set) Allowed(key string) bool { _, ok := s.allow[key]; return ok }

// Tiers returns the tiers' canonical names, sorted.
func (s *Set) Tiers() []string { return append([]string(nil), s.tierNames...) }

// Tier returns the tier named name, matched case-insensitively, for callers
// that have a tier's name but no Rule; false when the set has no such tier.
// It does not allocate when name is in lower case.
func (s *Set) Tier(name string) (Tier, bool) {
	t := s.tiers[strings.ToLower(name)]
	if t == nil {
		return Tier{}, false
	}
	return Tier{Name: t.base.Tier, Class: t.base.Class}, true
}

// DefaultTier returns the base rule of the default tier.
func (s *Set) DefaultTier() *Rule { return s.defaultTier.base }

// FittedDaily reports whether some rule has daily_quota: fitted, so that
// serving refits the quotas.
func (s *Set) FittedDaily() bool {
	tables := []*ruleTable{s.defaultTier}
	for _, t := range s.tiers {
		tables = append(tables, t)
	}
	for _, t := range s.tenants {
		tables = append(tables, t)
	}
	for _, t := range tables {
		if t.base.DailyFitted {
			return true
		}
		for _, r := range t.exact {
			if r.DailyFitted {
				return true
			}
		}
		for _, p := range t.prefixes {
			if p.rule.DailyFitted {
				return true
			}
		}
	}
	return false
}
