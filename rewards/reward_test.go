package rewards

import (
	"math"
	"math/rand/v2"
	"strings"
	"testing"
	"time"

	"github.com/devflow/flowguard/bandit"
	"github.com/devflow/flowguard/policy"

	"gopkg.in/yaml.v3"
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

// With a context that tells the arms nothing — a benign key that uses a
// third of its base budget and is never throttled at ×1 — headroom 0 and
// a deviation cost make ×1 the bandit's choice: no term pays for a
// multiplier the key does not use. The default weights keep headroom
// (0.25, measured on the pack to lower legitimate throttling), and under
// them the same bandit prefers the largest arm: generosity for its own
// sake, which is what the headroom term buys.
func TestUninformativeContextChoosesBase(t *testing.T) {
	arms := bandit.DefaultArms()
	run := func(w Weights) (best string, share float64) {
		// Scale 0.5 is ml.exploration's default.
		l, err := bandit.NewLearner(bandit.Config{ModelID: "u", Arms: arms, Dim: 2, Scale: 0.5})
		if err != nil {
			t.Fatal(err)
		}
		r := rand.New(rand.NewPCG(3, 4))
		x := []float64{0.5, 0.5} // the same context for every epoch
		counts := map[string]int{}
		const base, steps = 100.0, 3000
		for i := range steps {
			snap, err := l.Snapshot(time.Unix(int64(i), 0))
			if err != nil {
				t.Fatal(err)
			}
			c, err := snap.Choose(x, snap.Config().Arms.All(), r)
			if err != nil {
				t.Fatal(err)
			}
			demand := math.Round(base / 3 * math.Exp(0.3*r.NormFloat64()))
			served := math.Min(demand, math.Floor(base*c.Multiplier))
			o := Outcome{Served: int64(served), Throttled: int64(demand - served), Multiplier: c.Multiplier}
			if err := l.Update(x, c.Arm, w.RewardFor(o, policy.Tier{Name: "free"}, base, 0)); err != nil {
				t.Fatal(err)
			}
			if i >= steps-1000 {
				counts[c.Name]++
			}
		}
		// The arm of the highest posterior mean reward at x (x, then the
		// intercept), and how often it was chosen at the end.
		snap, _ := l.Snapshot(time.Unix(steps, 0))
		top := math.Inf(-1)
		for a := range snap.NumArms() {
			p, _ := snap.ArmPosterior(a)
			if m := p.Mean[0]*x[0] + p.Mean[1]*x[1] + p.Mean[2]; m > top {
				top, best = m, arms[a].Name
			}
		}
		return best, float64(counts[best]) / 1000
	}
	zero, dev := 0.0, 0.05
	outcomes := DefaultWeights()
	outcomes.Headroom, outcomes.Deviation = &zero, &dev
	best, share := run(outcomes)
	if best != "x1" || share < 0.3 {
		t.Errorf("headroom 0, deviation 0.05: the best arm is %s, chosen %.0f%% of the last 1000 epochs; want x1, and chosen more than any arm by chance (17%%)", best, 100*share)
	}
	t.Logf("headroom 0, deviation 0.05: x1 best, chosen in %.0f%% of the last 1000 epochs", 100*share)
	if best, share := run(DefaultWeights()); best != "x4" {
		t.Errorf("default weights (headroom 0.25): the best arm is %s (%.0f%%); the test no longer shows what headroom pays for", best, 100*share)
	}
}

// headroom: 0 in YAML turns the term off; before, a zero meant "the
// default" and the term could not be turned off.
func TestHeadroomZeroIsOff(t *testing.T) {
	var w Weights
	if err := yaml.Unmarshal([]byte("headroom: 0\n"), &w); err != nil {
		t.Fatal(err)
	}
	w = w.WithDefaults()
	o := Outcome{Served: 10, Multiplier: 2}
	if got := w.TermsFor(o, policy.Tier{Name: "free"}, 10, 0).Headroom; got != 0 {
		t.Errorf("headroom term %v with headroom: 0, want 0", got)
	}
	var d Weights
	d = d.WithDefaults()
	if got := d.TermsFor(o, policy.Tier{Name: "free"}, 10, 0).Headroom; got != DefaultHeadroom*2 {
		t.Errorf("headroom term %v when unset, want the default %v × 2", got, DefaultHeadroom)
	}
}
