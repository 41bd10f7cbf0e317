package policy

import (
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
	if r := s.Resolve("acme", "GET /"); !r.Audit || r.Floor != 1 || r.Ceiling != 4 || r.Tier != "enterprise" || r.Tenant != "acme" {
		t.Fatalf("acme inherits enterprise's floor, ceiling and audit: %+v", r)
	}
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
