package experiments

import (
	"path/filepath"
	"strings"
	"testing"
	"time"
)

func TestCheckGuardrails(t *testing.T) {
	c, err := Default() // guardrails: enterprise max 0.001 (min 1000), ratio 1.5 (min 1000), complaints 3
	if err != nil {
		t.Fatal(err)
	}
	const e = "bandit-vs-static"
	healthy := Counts{Requests: 50_000, Throttled: 500, EnterpriseRequests: 5_000, EnterpriseThrottled: 0, LegitRequests: 45_000, LegitThrottled: 450, Complaints: 1}
	cases := map[string]struct {
		variant, control Counts
		want             []Metric // trips of lints
	}{
		"healthy": {healthy, healthy, nil},
		"throttles enterprise at 5%": {
			Counts{Requests: 50_000, EnterpriseRequests: 2_000, EnterpriseThrottled: 100, LegitRequests: 45_000, LegitThrottled: 450},
			healthy, []Metric{MetricEnterpriseThrottleRate},
		},
		"enterprise at 5% but too few requests": {
			Counts{Requests: 500, EnterpriseRequests: 500, EnterpriseThrottled: 25},
			healthy, nil,
		},
		// 0.12% is above the 0.1% max, but 1 in 800 cannot show it.
		"enterprise slightly above max, noisy": {
			Counts{Requests: 50_000, EnterpriseRequests: 1_600, EnterpriseThrottled: 2, LegitRequests: 45_000, LegitThrottled: 450},
			healthy, nil,
		},
		"legit throttled 3× control": {
			Counts{Requests: 50_000, EnterpriseRequests: 5_000, LegitRequests: 45_000, LegitThrottled: 1_350},
			healthy, []Metric{MetricLegitThrottleRatio},
		},
		// 1.6× on small samples: the interval ratio stays under 1.5.
		"legit 1.6× control, noisy": {
			Counts{Requests: 2_000, EnterpriseRequests: 5_000, LegitRequests: 2_000, LegitThrottled: 32},
			Counts{LegitRequests: 2_000, LegitThrottled: 20}, nil,
		},
		"legit 3× control but control too small": {
			Counts{Requests: 50_000, EnterpriseRequests: 5_000, LegitRequests: 45_000, LegitThrottled: 1_350},
			Counts{LegitRequests: 999, LegitThrottled: 10}, nil,
		},
		"complaints": {
			Counts{Requests: 50_000, EnterpriseRequests: 5_000, LegitRequests: 45_000, LegitThrottled: 450, Complaints: 4},
			healthy, []Metric{MetricComplaints},
		},
	}
	for name, tc := range cases {
		t.Run(name, func(t *testing.T) {
			counts := map[VariantID]Counts{{e, "control"}: tc.control, {e, "lints"}: tc.variant, {e, "lints-shadow"}: healthy}
			trips, err := CheckGuardrails(c, counts)
			if err != nil {
				t.Fatal(err)
			}
			var got []Metric
			for _, tr := range trips {
				if tr.Variant != "lints" || tr.Experiment != e {
					t.Errorf("unexpected trip %+v", tr)
				}
				if !(tr.Value > tr.Threshold) || tr.Reason == "" {
					t.Errorf("trip %+v: value not above threshold, or no reason", tr)
				}
				got = append(got, tr.Metric)
			}
			if len(got) != len(tc.want) || (len(got) > 0 && got[0] != tc.want[0]) {
				t.Fatalf("trips %v, want %v (%+v)", got, tc.want, trips)
			}
		})
	}
}

func TestControlNeverTrips(t *testing.T) {
	c, _ := Default()
	bad := Counts{Requests: 50_000, EnterpriseRequests: 2_000, EnterpriseThrottled: 100, LegitRequests: 45_000, LegitThrottled: 4500, Complaints: 50}
	trips, err := CheckGuardrails(c, map[VariantID]Counts{{"bandit-vs-static", "control"}: bad})
	if err != nil || len(trips) != 0 {
		t.Fatalf("trips %+v, err %v", trips, err)
	}
}

func TestImpossibleCounts(t *testing.T) {
	c, _ := Default()
	_, err := CheckGuardrails(c, map[VariantID]Counts{{"bandit-vs-static", "lints"}: {EnterpriseRequests: 10, EnterpriseThrottled: 11}})
	if err == nil || !strings.Contains(err.Error(), "bandit-vs-static/lints enterprise_throttle_rate: invalid counts: 11 successes in 10 trials") {
		t.Fatalf("err = %v", err)
	}
}

// TestHarmfulVariantIsStopped runs the whole loop: a variant that throttles
// enterprise traffic at 5% trips, the stop is logged, its units get the
// control's policy, and a restart (reloading the stop file into a new
// Assigner) keeps it stopped.
func TestHarmfulVariantIsStopped(t *testing.T) {
	c, err := Default()
	if err != nil {
		t.Fatal(err)
	}
	a, err := NewAssigner(c)
	if err != nil {
		t.Fatal(err)
	}
	var units []Unit // units of lints
	for i := 0; len(units) < 50; i++ {
		u := Unit{Key: key(i), Tier: "pro"}
		if as, ok := a.Primary(u); ok && as.Variant == "lints" {
			if as.Policy != PolicyBandit || as.Bandit == nil {
				t.Fatalf("before the stop: %+v", as)
			}
			units = append(units, u)
		}
	}
	counts := map[VariantID]Counts{
		{"bandit-vs-static", "control"}: {Requests: 40_000, EnterpriseRequests: 4_000, EnterpriseThrottled: 0, LegitRequests: 36_000, LegitThrottled: 360},
		{"bandit-vs-static", "lints"}:   {Requests: 40_000, EnterpriseRequests: 4_000, EnterpriseThrottled: 200, LegitRequests: 36_000, LegitThrottled: 380},
	}
	trips, err := CheckGuardrails(c, counts)
	if err != nil || len(trips) != 1 || trips[0].Metric != MetricEnterpriseThrottleRate {
		t.Fatalf("trips %+v, err %v", trips, err)
	}

	path := filepath.Join(t.TempDir(), "stops.jsonl")
	log, err := LoadStops(path)
	if err != nil {
		t.Fatal(err)
	}
	now := time.Date(2026, 11, 23, 10, 0, 0, 0, time.UTC)
	if err := log.Append(trips[0].StopRecord(c.Digest, now)); err != nil {
		t.Fatal(err)
	}
	if err := a.Stop(trips[0].Experiment, trips[0].Variant); err != nil {
		t.Fatal(err)
	}
	checkStopped := func(a *Assigner) {
		t.Helper()
		for _, u := range units {
			as, _ := a.Primary(u)
			if as.Variant != "lints" || !as.Stopped || as.Policy != PolicyStatic || as.Bandit != nil {
				t.Fatalf("%s after the stop: %+v", u.Key, as)
			}
		}
	}
	checkStopped(a)
	log.Close()

	// Restart.
	log, err = LoadStops(path)
	if err != nil {
		t.Fatal(err)
	}
	defer log.Close()
	c2, _ := Default()
	a2, _ := NewAssigner(c2)
	if err := a2.ApplyStops(log.Active()); err != nil {
		t.Fatal(err)
	}
	checkStopped(a2)
	if got := log.Active(); len(got) != 1 || got[0].ConfigDigest != c.Digest || !got[0].Time.Equal(now) || got[0].Value != trips[0].Value {
		t.Fatalf("reloaded stops: %+v", got)
	}
}
