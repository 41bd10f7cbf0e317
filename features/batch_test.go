package features

import (
	"math"
	"testing"
	"time"
)

// ObserveN must leave a key exactly where n Observe calls at the same
// instants leave it, up to float32 rounding.
func TestObserveNMatchesObserve(t *testing.T) {
	cases := map[string]struct {
		n    int64
		span time.Duration
		prev int // requests observed before, one a minute
	}{
		"one":              {n: 1, span: 5 * time.Minute},
		"spread":           {n: 300, span: 5 * time.Minute},
		"after history":    {n: 40, span: time.Minute, prev: 30},
		"all at once":      {n: 25, span: 0, prev: 3},
		"past the warm-up": {n: 5000, span: time.Hour, prev: 2},
	}
	for name, c := range cases {
		t.Run(name, func(t *testing.T) {
			one, many := newTestStore(t, Config{}), newTestStore(t, Config{})
			o := Observation{Endpoint: "GET /v1/x", ClientIP: "203.0.113.7", Tier: TierPro, BudgetUsed: 0.4, Throttled: true, Cost: 2}
			at := t0
			for i := 0; i < c.prev; i++ {
				one.Observe("k", o, at)
				many.Observe("k", o, at)
				at = at.Add(time.Minute)
			}
			end := at.Add(c.span)
			many.ObserveN("k", o, c.n, c.span, end)
			start := end.Add(-c.span)
			for i := int64(1); i <= c.n; i++ {
				one.Observe("k", o, start.Add(time.Duration(float64(c.span)*float64(i)/float64(c.n))))
			}
			later := end.Add(7 * time.Second)
			a, b := one.Vector("k", later, nil), many.Vector("k", later, nil)
			for i := range a {
				if math.Abs(a[i]-b[i]) > 1e-4*math.Max(1, math.Abs(a[i])) {
					t.Errorf("%s: ObserveN %v, Observe×%d %v", CurrentSchema().Feature(i).Name, b[i], c.n, a[i])
				}
			}
		})
	}
}

func TestObserveNNothing(t *testing.T) {
	s := newTestStore(t, Config{})
	s.ObserveN("k", Observation{}, 0, time.Minute, t0)
	if s.Len() != 0 {
		t.Fatalf("n = 0 stored a key")
	}
}

func BenchmarkObserveN(b *testing.B) {
	s := newTestStore(b, Config{})
	o := Observation{Endpoint: "GET /v1/x", Tier: TierFree}
	b.ReportAllocs()
	for i := 0; b.Loop(); i++ {
		s.ObserveN("k", o, 120, 5*time.Minute, t0.Add(time.Duration(i)*5*time.Minute))
	}
}
