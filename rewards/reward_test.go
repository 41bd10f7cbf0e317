package rewards

import (
	"math"
	"strings"
	"testing"

	"github.com/devflow/flowguard/policy"
)

// TestThrottleWeightByClass: enterprise-class tiers cost the enterprise
// weight whatever their name; standard tiers cost their own weight, by
// name in any case, or the default — a standard tier named enterprise too.
func TestThrottleWeightByClass(t *testing.T) {
	cases := map[string]struct {
		tier policy.Tier
		want float64
	}{
		"free":                             {policy.Tier{Name: "free", Class: policy.ClassStandard}, 0.5},
		"free in another case":             {policy.Tier{Name: "Free", Class: policy.ClassStandard}, 0.5},
		"pro":                              {policy.Tier{Name: "PRO", Class: policy.ClassStandard}, 2},
		"enterprise-class of another name": {policy.Tier{Name: "gold", Class: policy.ClassEnterprise}, 20},
		"enterprise-class named free":      {policy.Tier{Name: "free", Class: policy.ClassEnterprise}, 20},
		"standard tier named enterprise":   {policy.Tier{Name: "Enterprise", Class: policy.ClassStandard}, 1},
		"unlisted standard tier":           {policy.Tier{Name: "gold", Class: policy.ClassStandard}, 1},
		"no class, named enterprise":       {policy.Tier{Name: "ENTERPRISE"}, 20},
		"no class, another name":           {policy.Tier{Name: "gold"}, 1},
	}
	w := DefaultWeights()
	// Ten throttled requests on a base of ten at multiplier 0: the reward
	// is minus the throttle weight.
	o := Outcome{Throttled: 10}
	for name, c := range cases {
		t.Run(name, func(t *testing.T) {
			if got := -w.RewardFor(o, c.tier, 10, 0); got != c.want {
				t.Fatalf("throttle weight of %+v = %v, want %v", c.tier, got, c.want)
			}
		})
	}
}

func TestThrottleWeightsInAnyCase(t *testing.T) {
	w := Weights{Throttle: map[string]float64{"Pro": 3, "Enterprise": 50}}.WithDefaults()
	if err := w.Validate(); err != nil {
		t.Fatal(err)
	}
	o := Outcome{Throttled: 10}
	cases := map[string]struct {
		tier policy.Tier
		want float64
	}{
		"overridden in another case": {policy.Tier{Name: "pro", Class: policy.ClassStandard}, 3},
		"enterprise overridden":      {policy.Tier{Name: "gold", Class: policy.ClassEnterprise}, 50},
		"default kept":               {policy.Tier{Name: "free", Class: policy.ClassStandard}, 0.5},
	}
	for name, c := range cases {
		t.Run(name, func(t *testing.T) {
			if got := -w.RewardFor(o, c.tier, 10, 0); got != c.want {
				t.Fatalf("throttle weight of %+v = %v, want %v", c.tier, got, c.want)
			}
		})
	}
	if len(w.Throttle) != 4 {
		t.Errorf("throttle weights %v: a default entry was added beside the one overriding it in another case", w.Throttle)
	}
	dup := Weights{Throttle: map[string]float64{"Pro": 3, "pro": 4}}.WithDefaults()
	if err := dup.Validate(); err == nil || !strings.Contains(err.Error(), `throttle weights "Pro" and "pro" differ only in case`) {
		t.Errorf("err = %v", err)
	}
}

// The terms add up to the reward, for any severity.
func TestTermsSumToReward(t *testing.T) {
	w := DefaultWeights()
	for _, tier := range []policy.Tier{{Name: "free"}, {Name: "gold", Class: policy.ClassEnterprise}} {
		for _, sev := range []float64{0, 0.3, 1} {
			o := Outcome{Served: 70, Throttled: 20, Blocked: 10, Multiplier: 1.5}
			terms, r := w.TermsFor(o, tier, 50, sev), w.RewardFor(o, tier, 50, sev)
			if math.Abs(terms.Sum()-r) > 1e-9 {
				t.Errorf("%s, severity %v: terms %+v sum to %v, reward %v", tier.Name, sev, terms, terms.Sum(), r)
			}
			if sev == 1 && (terms.Served != 0 || terms.Headroom != 0 || terms.Abuse >= 0) {
				t.Errorf("all abuse: terms %+v, want only the abuse and throttle terms", terms)
			}
		}
	}
}
