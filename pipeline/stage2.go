package pipeline

import (
	"math/rand/v2"
	"time"

	"github.com/devflow/flowguard/bandit"
	"github.com/devflow/flowguard/features"
	"github.com/devflow/flowguard/policy"
)

// Chooser draws an arm for a context among the allowed arms: a bandit
// snapshot, or the simulator's ε-greedy baseline (bandit.EpsilonGreedy).
type Chooser interface {
	Choose(x []float64, allowed bandit.ArmRange, rng *rand.Rand) (bandit.Choice, error)
}

// Explored is a snapshot whose Thompson draws have their exploration scaled
// by Factor: an experiment variant's bandit.exploration over ml.exploration.
// The propensities stay exact.
type Explored struct {
	*bandit.Snapshot
	Factor float64
}

// Choose draws with the scaled exploration.
func (e Explored) Choose(x []float64, allowed bandit.ArmRange, rng *rand.Rand) (bandit.Choice, error) {
	return e.ChooseScaled(x, allowed, rng, e.Factor)
}

// Stage2Input is what stage 2 needs for one key-epoch.
type Stage2Input struct {
	// Features is the key's feature vector (features.Dim values). Stage 2
	// appends the risk score to it; give it capacity for one more to spare
	// an allocation.
	Features []float64
	Risk     *features.Risk
	Model    Chooser
	// Allowed are the arms the rule's [floor, ceiling] allows.
	Allowed bandit.ArmRange
	// Variant is an experiment variant's run of arms; Hi 0: none. Where it
	// misses Allowed, the floor and ceiling win.
	Variant bandit.ArmRange
	// Base are the allowed arms at or above ×1 (Hi 0: none), and
	// ShrinkRisk the risk below which only they are drawn: a key the risk
	// model does not suspect keeps at least its base budget (0: off).
	Base       bandit.ArmRange
	ShrinkRisk float64
	// Store, when set, is the store Features came from: stage 2 folds the
	// vector into its tier cohorts (features.Store.Fold) at At.
	Store *features.Store
	At    time.Time
}

// Stage2Result is stage 2's outcome.
type Stage2Result struct {
	// Context is the bandit's context: the features, then the risk score.
	Context []float64
	Risk    float64
	Choice  bandit.Choice
}

// Stage2 scores the key's abuse risk and draws its multiplier: features →
// risk → bandit over the arms the rule and the variant allow.
func Stage2(in Stage2Input, rng *rand.Rand) (Stage2Result, error) {
	risk := in.Risk.Score(in.Features)
	x := append(in.Features, risk)
	allowed := gateArms(in.Allowed, in.Base, in.ShrinkRisk, risk)
	if in.Variant.Hi > 0 {
		if both := (bandit.ArmRange{Lo: max(allowed.Lo, in.Variant.Lo), Hi: min(allowed.Hi, in.Variant.Hi)}); both.Len() > 0 {
			allowed = both
		}
	}
	c, err := in.Model.Choose(x, allowed, rng)
	if in.Store != nil {
		in.Store.Fold(x, in.At)
	}
	return Stage2Result{Context: x, Risk: risk, Choice: c}, err
}

// gateArms is the arms drawn from for a key of this risk: below shrink
// (when set), only those of allowed at or above ×1 (base).
func gateArms(allowed, base bandit.ArmRange, shrink, risk float64) bandit.ArmRange {
	if shrink > 0 && risk < shrink && base.Len() > 0 {
		if both := (bandit.ArmRange{Lo: max(allowed.Lo, base.Lo), Hi: min(allowed.Hi, base.Hi)}); both.Len() > 0 {
			return both
		}
	}
	return allowed
}

// ShrinkRisk is ml.shrink_risk as Stage2Input takes it: -1 (off) is 0.
func ShrinkRisk(v float64) float64 { return max(v, 0) }

// Enforced is the multiplier stage 3 enforces for a stage-2 result, and
// whether the key is blocked: under shadow the deterministic ×1, else the
// draw's multiplier, and a block for an auto_block rule whose risk reaches
// blockThreshold. The limiter's budget is then rule.Budget(multiplier),
// which clamps it to [floor, ceiling].
func Enforced(rule *policy.Rule, shadow bool, r Stage2Result, blockThreshold float64) (multiplier float64, block bool) {
	if shadow {
		return 1, false
	}
	return r.Choice.Multiplier, rule.AutoBlock && r.Risk >= blockThreshold
}
