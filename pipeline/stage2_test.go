package pipeline

import (
	"math/rand/v2"
	"reflect"
	"testing"
	"time"

	"github.com/devflow/flowguard/bandit"
	"github.com/devflow/flowguard/features"
	"github.com/devflow/flowguard/limiter"
	"github.com/devflow/flowguard/policy"
	"github.com/devflow/flowguard/rewards"
)

func testModel(t *testing.T) (*bandit.Snapshot, *features.Risk) {
	t.Helper()
	l, err := bandit.NewLearner(bandit.Config{Dim: 3})
	if err != nil {
		t.Fatal(err)
	}
	snap, err := l.Snapshot(time.Unix(0, 0))
	if err != nil {
		t.Fatal(err)
	}
	risk, err := features.NewRisk(features.RiskConfig{Dim: 2, Prior: 0.01})
	if err != nil {
		t.Fatal(err)
	}
	return snap, risk
}

// TestStage2StaysWithinTheArmsAllowed draws many times for each case and
// checks every draw against the arms the floor, ceiling and variant allow.
func TestStage2StaysWithinTheArmsAllowed(t *testing.T) {
	snap, risk := testModel(t)
	arms := bandit.DefaultArms() // x0.25 x0.5 x1 x1.5 x2 x4
	cases := map[string]struct {
		floor, ceiling float64
		variant        bandit.ArmRange
		lo, hi         float64
	}{
		"floor and ceiling":          {1, 4, bandit.ArmRange{}, 1, 4},
		"variant inside the rule":    {0.25, 4, bandit.ArmRange{Lo: 1, Hi: 3}, 0.5, 1},
		"variant overlapping":        {1, 4, bandit.ArmRange{Lo: 0, Hi: 4}, 1, 1.5},
		"variant outside: rule wins": {2, 4, bandit.ArmRange{Lo: 0, Hi: 2}, 2, 4},
	}
	for name, c := range cases {
		t.Run(name, func(t *testing.T) {
			allowed, err := snap.Allowed(c.floor, c.ceiling)
			if err != nil {
				t.Fatal(err)
			}
			rng := rand.New(rand.NewPCG(1, 2))
			seen := map[string]bool{}
			for i := 0; i < 200; i++ {
				r, err := Stage2(Stage2Input{Features: []float64{rng.Float64(), rng.Float64()}, Risk: risk, Model: snap,
					Allowed: allowed, Variant: c.variant}, rng)
				if err != nil {
					t.Fatal(err)
				}
				m := arms[r.Choice.Arm].Multiplier
				if m < c.lo || m > c.hi {
					t.Fatalf("drew %s, outside [%v, %v]", r.Choice.Name, c.lo, c.hi)
				}
				if len(r.Context) != 3 || r.Context[2] != r.Risk {
					t.Fatalf("context %v does not end with the risk %v", r.Context, r.Risk)
				}
				seen[r.Choice.Name] = true
			}
			if len(seen) < 2 {
				t.Fatalf("the prior drew only %v in 200 tries", seen)
			}
		})
	}
}

func TestEnforced(t *testing.T) {
	r := Stage2Result{Risk: 0.95, Choice: bandit.Choice{Multiplier: 2}}
	auto := &policy.Rule{AutoBlock: true, Floor: 0.5, Ceiling: 4}
	cases := map[string]struct {
		rule   *policy.Rule
		shadow bool
		res    Stage2Result
		m      float64
		block  bool
	}{
		"shadow enforces x1":           {auto, true, r, 1, false},
		"risk past the threshold":      {auto, false, r, 2, true},
		"no auto_block: never blocked": {&policy.Rule{Floor: 0.5, Ceiling: 4}, false, r, 2, false},
		"risk below the threshold":     {auto, false, Stage2Result{Risk: 0.5, Choice: r.Choice}, 2, false},
	}
	for name, c := range cases {
		t.Run(name, func(t *testing.T) {
			m, block := Enforced(c.rule, c.shadow, c.res, 0.9)
			if m != c.m || block != c.block {
				t.Fatalf("got (%v, %v), want (%v, %v)", m, block, c.m, c.block)
			}
		})
	}
}

func TestDecisionRecord(t *testing.T) {
	rule := &policy.Rule{Tenant: "acme", Tier: "enterprise", Floor: 1, Ceiling: 4,
		Limit: limiter.Limit{Rate: 60, Burst: 60, Period: time.Minute}}
	ctx := []float64{0.1, 0.2, 0.3}
	rec := DecisionRecord(KeyEpoch{ID: "d1", Key: "k", Rule: rule, Start: time.Unix(100, 0), Length: 10 * time.Second,
		Policy: rewards.PolicyBandit, Arm: 3, ArmName: "x1.5", Multiplier: 1.5, Propensity: 0.4, ModelVersion: 7,
		Context: ctx, Experiment: "e", Variant: "v", Model: "e/v@abc"})
	ctx[0] = 9 // the record shares the context: the simulator's learner copies it, serving passes a copy
	want := rewards.Record{Type: rewards.TypeDecision, ID: "d1", Key: "k", Tenant: "acme", Tier: "enterprise",
		At: time.Unix(100, 0).UTC(), Policy: rewards.PolicyBandit, Arm: 3, ArmName: "x1.5", Multiplier: 1.5,
		Propensity: 0.4, ModelVersion: 7, Floor: 1, Ceiling: 4, Base: 10, Experiment: "e", Variant: "v", Model: "e/v@abc"}
	if rec.Context[0] != 9 || len(rec.Context) != 3 {
		t.Fatalf("context %v", rec.Context)
	}
	rec.Context = nil
	if !rec.At.Equal(want.At) {
		t.Fatalf("at %v, want %v", rec.At, want.At)
	}
	rec.At, want.At = time.Time{}, time.Time{}
	if !reflect.DeepEqual(rec, want) {
		t.Fatalf("got %+v\nwant %+v", rec, want)
	}
}

// Below ShrinkRisk only the arms at or above ×1 are drawn, with exact
// propensities over them; at or above it (a suspected key), and with the
// gate off, the arms below ×1 are drawn too.
func TestStage2ShrinksOnlySuspectedKeys(t *testing.T) {
	snap, benign := testModel(t) // risk 0.01 for every vector
	suspect, err := features.NewRisk(features.RiskConfig{Dim: 2, Prior: 0.9})
	if err != nil {
		t.Fatal(err)
	}
	allowed, err := snap.Allowed(0.25, 4)
	if err != nil {
		t.Fatal(err)
	}
	base, err := snap.Allowed(1, 4)
	if err != nil {
		t.Fatal(err)
	}
	arms := bandit.DefaultArms()
	cases := map[string]struct {
		risk       *features.Risk
		shrink     float64
		belowOneOK bool
	}{
		"unsuspected key":      {benign, 0.5, false},
		"suspected key":        {suspect, 0.5, true},
		"gate off (-1 is 0)":   {benign, ShrinkRisk(-1), true},
		"threshold under risk": {benign, 0.005, true},
	}
	for name, c := range cases {
		t.Run(name, func(t *testing.T) {
			rng := rand.New(rand.NewPCG(3, 4))
			below := 0
			for range 2000 {
				r, err := Stage2(Stage2Input{Features: []float64{rng.Float64(), rng.Float64()}, Risk: c.risk, Model: snap,
					Allowed: allowed, Base: base, ShrinkRisk: c.shrink}, rng)
				if err != nil {
					t.Fatal(err)
				}
				if arms[r.Choice.Arm].Multiplier < 1 {
					below++
				}
				if p := r.Choice.Propensity; !(p > 0 && p <= 1) {
					t.Fatalf("propensity %v", p)
				}
			}
			if c.belowOneOK && below == 0 {
				t.Errorf("no draw below ×1 in 2000, want some: the floor is 0.25")
			}
			if !c.belowOneOK && below > 0 {
				t.Errorf("%d of 2000 draws below ×1 for a key the risk model does not suspect", below)
			}
		})
	}
}
