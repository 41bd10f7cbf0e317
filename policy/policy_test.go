package policy

import (
	"strings"
	"testing"
	"time"

	"github.com/devflow/flowguard/internal/yamlx"
)

const doc = `
default_tier: free
tiers:
  free:
    rate: 60
    period: 1m
    burst: 20
    floor: 0.5
    ceiling: 2
    ml: on
    endpoints:
      "POST /v1/messages": {rate: 30, burst: 10}
  enterprise:
    rate: 100
    burst: 500
    floor: 1
    ceiling: 4
    audit: true
    endpoints:
      "POST /v1/payments": {rate: 50}
      "/v1/files/*": {rate: 5}
tenants:
  acme:
    tier: enterprise
    rate: 300
    endpoints:
      "POST /v1/payments": {rate: 200, burst: 400}
      "GET /v1/reports/*": {rate: 10, ml: off}
      "GET /v1/reports/daily/*": {rate: 20}
      "/v1/reports/*": {rate: 7}
  solo:
    rate: 5
deny: [k_bad]
allow: [k_good]
`

func compile(t testing.TB, src string) *Set {
	t.Helper()
	var d Doc
	yd, err := yamlx.Decode("policies.yaml", []byte(src), &d)
	if err != nil {
		t.Fatal(err)
	}
	s, err := Compile(d, yd)
	if err != nil {
		t.Fatal(err)
	}
	return s
}

func TestResolve(t *testing.T) {
	s := compile(t, doc)
	cases := map[string]struct {
		tenant, endpoint string
		name, scope      string
		rate, burst      int64
		period           time.Duration
		ml               MLMode
	}{
		"unknown tenant gets the default tier":     {"nobody", "GET /x", "free", "", 60, 20, time.Minute, MLOn},
		"empty tenant gets the default tier":       {"", "", "free", "", 60, 20, time.Minute, MLOn},
		"tier endpoint override":                   {"nobody", "POST /v1/messages", "free POST /v1/messages", "POST /v1/messages", 30, 10, time.Minute, MLOn},
		"method must match":                        {"nobody", "GET /v1/messages", "free", "", 60, 20, time.Minute, MLOn},
		"tenant rate without burst resets burst":   {"acme", "GET /v1/balance", "acme", "", 300, 300, time.Second, MLOff},
		"tenant endpoint beats tier endpoint":      {"acme", "POST /v1/payments", "acme POST /v1/payments", "POST /v1/payments", 200, 400, time.Second, MLOff},
		"query string ignored":                     {"acme", "POST /v1/payments?x=1", "acme POST /v1/payments", "POST /v1/payments", 200, 400, time.Second, MLOff},
		"longest prefix wins":                      {"acme", "GET /v1/reports/daily/2026", "acme GET /v1/reports/daily/*", "GET /v1/reports/daily/*", 20, 20, time.Second, MLOff},
		"named method beats any method":            {"acme", "GET /v1/reports/x", "acme GET /v1/reports/*", "GET /v1/reports/*", 10, 10, time.Second, MLOff},
		"any-method prefix":                        {"acme", "DELETE /v1/reports/x", "acme /v1/reports/*", "/v1/reports/*", 7, 7, time.Second, MLOff},
		"tenant inherits tier prefix override":     {"acme", "PUT /v1/files/a", "acme /v1/files/*", "/v1/files/*", 5, 5, time.Second, MLOff},
		"tenant without tier gets the default":     {"solo", "GET /", "solo", "", 5, 5, time.Minute, MLOn},
		"tenant endpoint inherits tenant settings": {"solo", "POST /v1/messages", "solo POST /v1/messages", "POST /v1/messages", 30, 10, time.Minute, MLOn},
	}
	for name, c := range cases {
		t.Run(name, func(t *testing.T) {
			r := s.Resolve(c.tenant, c.endpoint)
			if r.Name != c.name || r.Scope != c.scope || r.Limit.Rate != c.rate || r.Limit.Burst != c.burst || r.Limit.Period != c.period || r.ML != c.ml {
				t.Fatalf("got %+v", r)
			}
		})
	}
	if r := s.Resolve("acme", "GET /"); !r.Audit || r.Floor != 1 || r.Ceiling != 4 || r.Tier != "enterprise" || r.Tenant != "acme" || !r.Enterprise() {
		t.Fatalf("acme inherits enterprise's floor, ceiling, audit and class: %+v", r)
	}
}

// classes names its tiers in mixed case and sets classes both ways.
const classes = `
default_tier: FREE
tiers:
  Free: {rate: 10}
  Pro: {rate: 100}
  gold:
    rate: 100
    class: enterprise
    endpoints:
      "POST /v1/payments": {rate: 50}
  Enterprise: {rate: 1000, class: standard}
  ENTERPRISE-EU: {rate: 1000}
tenants:
  acme: {tier: GOLD}
  initech: {tier: enterprise}
  hooli: {tier: pRo}
`

// TestTierMatchIsCaseInsensitive: a tenant, default_tier and Set.Tier may
// name a tier in any case; rules carry the name as the tiers section
// spells it.
func TestTierMatchIsCaseInsensitive(t *testing.T) {
	s := compile(t, classes)
	resolved := map[string]struct{ tenant, tier string }{
		"upper-case tenant tier":  {"acme", "gold"},
		"lower-case tenant tier":  {"initech", "Enterprise"},
		"mixed-case tenant tier":  {"hooli", "Pro"},
		"upper-case default tier": {"nobody", "Free"},
	}
	for name, c := range resolved {
		t.Run(name, func(t *testing.T) {
			if r := s.Resolve(c.tenant, "GET /x"); r.Tier != c.tier {
				t.Fatalf("Resolve(%q).Tier = %q, want %q", c.tenant, r.Tier, c.tier)
			}
		})
	}
	looked := map[string]string{"free": "Free", "FREE": "Free", "Gold": "gold", "enterprise-eu": "ENTERPRISE-EU"}
	for name, want := range looked {
		t.Run("Tier("+name+")", func(t *testing.T) {
			if got, ok := s.Tier(name); !ok || got.Name != want {
				t.Fatalf("Tier(%q) = %+v, %v; want %q", name, got, ok, want)
			}
		})
	}
	if got, ok := s.Tier("platinum"); ok {
		t.Fatalf("Tier(platinum) = %+v, want none", got)
	}
	if n := testing.AllocsPerRun(100, func() { s.Tier("gold") }); n != 0 {
		t.Fatalf("Tier with a lower-case name allocates %.0f times", n)
	}
}

// TestTierClass: class defaults by name (enterprise in any case) and the
// file overrides it both ways; tenants and endpoint overrides carry it.
func TestTierClass(t *testing.T) {
	s := compile(t, classes)
	cases := map[string]struct {
		tenant, endpoint string
		class            Class
	}{
		"named free: standard":                {"nobody", "GET /", ClassStandard},
		"named pro: standard":                 {"hooli", "GET /", ClassStandard},
		"class enterprise overrides the name": {"acme", "GET /", ClassEnterprise},
		"an endpoint override has the class":  {"acme", "POST /v1/payments", ClassEnterprise},
		"class standard overrides the name":   {"initech", "GET /", ClassStandard},
	}
	for name, c := range cases {
		t.Run(name, func(t *testing.T) {
			r := s.Resolve(c.tenant, c.endpoint)
			if r.Class != c.class || r.Enterprise() != (c.class == ClassEnterprise) {
				t.Fatalf("Resolve(%q, %q): class %q, Enterprise %v; want %q", c.tenant, c.endpoint, r.Class, r.Enterprise(), c.class)
			}
		})
	}
	byName := map[string]bool{"free": false, "Pro": false, "GOLD": true, "enterprise": false, "enterprise-eu": false}
	for name, want := range byName {
		if got, _ := s.Tier(name); got.Enterprise() != want {
			t.Errorf("Tier(%q).Enterprise() = %v, want %v", name, got.Enterprise(), want)
		}
	}
	def := compile(t, "tiers:\n  free: {rate: 1}\n  ENTERPRISE: {rate: 5}\n")
	if got, _ := def.Tier("enterprise"); got.Class != ClassEnterprise {
		t.Errorf("a tier named ENTERPRISE without a class is %q, want enterprise", got.Class)
	}
}

// TestTierZeroClass: a Tier or Rule built without a class (in Go, or from a
// record written before classes) is classed by name.
func TestTierZeroClass(t *testing.T) {
	cases := map[string]struct {
		tier Tier
		want bool
	}{
		"enterprise by name":  {Tier{Name: "Enterprise"}, true},
		"other name":          {Tier{Name: "gold"}, false},
		"explicit class wins": {Tier{Name: "enterprise", Class: ClassStandard}, false},
		"explicit enterprise": {Tier{Name: "gold", Class: ClassEnterprise}, true},
	}
	for name, c := range cases {
		t.Run(name, func(t *testing.T) {
			r := Rule{Tier: c.tier.Name, Class: c.tier.Class}
			if c.tier.Enterprise() != c.want || r.Enterprise() != c.want {
				t.Fatalf("%+v: Tier.Enterprise %v, Rule.Enterprise %v; want %v", c.tier, c.tier.Enterprise(), r.Enterprise(), c.want)
			}
		})
	}
}

// FuzzCompile: any policies document compiles or fails with errors naming
// the file; a compiled set finds each of its tiers in any case, gives each
// a class, and resolves every tenant to a tier it defines, with that
// tier's class.
func FuzzCompile(f *testing.F) {
	for _, seed := range []string{doc, classes,
		"tiers:\n  free: {rate: 1, class: Enterprise}\n",
		"tiers:\n  a: {rate: 1}\n  A: {rate: 2}\ndefault_tier: a\n",
		"tiers:\n  free: {rate: 1}\ntenants:\n  t: {tier: FREE, class: standard}\n",
		"tiers:\n  free: {rate: 1, endpoints: {\"/x\": {rate: 1, class: enterprise}}}\n",
	} {
		f.Add([]byte(seed))
	}
	f.Fuzz(func(t *testing.T, data []byte) {
		var d Doc
		yd, err := yamlx.Decode("fuzz.yaml", data, &d)
		if err != nil {
			return
		}
		s, err := Compile(d, yd)
		if err != nil {
			if !strings.HasPrefix(err.Error(), "fuzz.yaml") {
				t.Fatalf("error does not name the file: %v", err)
			}
			return
		}
		classOf := map[string]Class{}
		for _, name := range s.Tiers() {
			tier, ok := s.Tier(strings.ToUpper(name))
			if !ok || tier.Name != name || (tier.Class != ClassStandard && tier.Class != ClassEnterprise) {
				t.Fatalf("Tier(%q) = %+v, %v", strings.ToUpper(name), tier, ok)
			}
			classOf[name] = tier.Class
		}
		for tenant := range d.Tenants {
			r := s.Resolve(tenant, "GET /")
			if c, ok := classOf[r.Tier]; !ok || c != r.Class {
				t.Fatalf("tenant %q resolves to tier %q class %q; the set's tiers: %v", tenant, r.Tier, r.Class, classOf)
			}
		}
	})
}

func TestBudgetClampsMultiplier(t *testing.T) {
	r := compile(t, doc).Resolve("", "")
	cases := map[string]struct{ m, want float64 }{
		"below floor": {0.1, 0.5}, "inside": {1.5, 1.5}, "above ceiling": {9, 2},
	}
	for name, c := range cases {
		t.Run(name, func(t *testing.T) {
			l, m := r.Budget(c.m)
			if m != c.want || l.Rate != int64(60*c.want+0.5) {
				t.Fatalf("Budget(%g) = %+v, %g", c.m, l, m)
			}
		})
	}
}

func TestLists(t *testing.T) {
	s := compile(t, doc)
	if !s.Denied("k_bad") || s.Denied("k_good") || !s.Allowed("k_good") || s.Allowed("k_bad") {
		t.Fatal("deny/allow lists wrong")
	}
}

func TestResolveDoesNotAllocate(t *testing.T) {
	s := compile(t, doc)
	if n := testing.AllocsPerRun(1000, func() {
		s.Resolve("acme", "GET /v1/reports/daily/2026?x=1")
		s.Resolve("nobody", "POST /v1/messages")
	}); n != 0 {
		t.Fatalf("Resolve allocates %.0f times", n)
	}
}

func BenchmarkResolve(b *testing.B) {
	s := compile(b, doc)
	b.ReportAllocs()
	for b.Loop() {
		s.Resolve("acme", "GET /v1/reports/daily/2026")
	}
}
