package rewards

import (
	"errors"
	"fmt"
	"math"
	"sort"
	"strings"

	"github.com/devflow/flowguard/policy"
)

// Weights is the business objective the bandit maximises, per key-epoch:
//
//	reward = (Served·served_legit − throttle(tier)·throttled_legit − Abuse·served_abusive) / base
//	         + Headroom·multiplier·(1 − severity) − Deviation·|ln multiplier|
//
// where base is the requests the key's base budget admits in the epoch, so
// that keys of every size weigh alike. Blocked requests count as throttled.
// A key judged abusive with severity s has the share s of its traffic
// abusive. Throttling abusive traffic is neither a cost nor a value: the
// value is in not serving it.
//
// The headroom term pays for generosity alone: a benign key earns it for a
// multiplier it does not use. It is kept by default because, on the
// scenario pack, it measurably lowers legitimate throttling: the room it
// buys covers bursts that one epoch's outcome has not shown yet
// (docs/pipeline.md, "Rewards", has the table). With headroom 0, the
// Deviation term makes ×1 the choice when the outcomes cannot tell the
// arms apart (an uninformative context), so that the bandit moves a key
// off its base budget only where serving more of its legitimate traffic,
// or less abuse, pays for it.
type Weights struct {
	// Served is the value of a legitimate request served. Default: 1.
	Served float64 `yaml:"served"`
	// Throttle is the cost of throttling a legitimate request. Its
	// "enterprise" entry is the cost for every enterprise-class tier
	// (policy.Tier.Enterprise), whatever the tier's name, and the most
	// expensive; the other entries are standard-class tiers by name,
	// matched case-insensitively, and a standard tier not listed costs
	// Throttle["default"]. A standard tier named enterprise is not charged
	// the enterprise entry. Defaults: enterprise 20, free 0.5, pro 2,
	// default 1.
	Throttle map[string]float64 `yaml:"throttle"`
	// Abuse is the cost of an abusive request served. Default: 5.
	Abuse float64 `yaml:"abuse"`
	// Headroom is the value, per unit of multiplier, of the budget a
	// legitimate key holds, used or not. nil: the default, 0.25; 0 turns
	// it off.
	Headroom *float64 `yaml:"headroom"`
	// Deviation is the cost, per unit of |ln multiplier|, of moving a key
	// off its base budget: a tie-break toward ×1. nil: the default, 0.
	Deviation *float64 `yaml:"deviation"`
}

// Defaults of the Headroom and Deviation weights.
const (
	DefaultHeadroom  = 0.25
	DefaultDeviation = 0.0
)

// DefaultWeights returns the default objective.
func DefaultWeights() Weights {
	h, dev := DefaultHeadroom, DefaultDeviation
	return Weights{Served: 1, Abuse: 5, Headroom: &h, Deviation: &dev,
		Throttle: map[string]float64{string(policy.ClassEnterprise): 20, "free": 0.5, "pro": 2, "default": 1}}
}

// headroom and deviation are the weights, their defaults when unset.
func (w Weights) headroom() float64 {
	if w.Headroom == nil {
		return DefaultHeadroom
	}
	return *w.Headroom
}

func (w Weights) deviation() float64 {
	if w.Deviation == nil {
		return DefaultDeviation
	}
	return *w.Deviation
}

// WithDefaults fills the zero fields of w, and the Throttle entries w
// lacks (in any case) from DefaultWeights.
func (w Weights) WithDefaults() Weights {
	d := DefaultWeights()
	if w.Served == 0 {
		w.Served = d.Served
	}
	if w.Abuse == 0 {
		w.Abuse = d.Abuse
	}
	if w.Headroom == nil {
		w.Headroom = d.Headroom
	}
	if w.Deviation == nil {
		w.Deviation = d.Deviation
	}
	t := make(map[string]float64, len(d.Throttle)+len(w.Throttle))
	for k, v := range w.Throttle {
		t[k] = v
	}
	for k, v := range d.Throttle {
		if _, ok := lookupFold(w.Throttle, k); !ok {
			t[k] = v
		}
	}
	w.Throttle = t
	return w
}

// Validate reports the first invalid weight.
func (w Weights) Validate() error {
	ok := func(v float64) bool { return v >= 0 && v <= 1e6 } // NaN fails
	if !ok(w.Served) || !ok(w.Abuse) || !ok(w.headroom()) || !ok(w.deviation()) {
		return errors.New("rewards: served, abuse, headroom and deviation weights must be in [0, 1e6]")
	}
	tiers := make([]string, 0, len(w.Throttle))
	for tier := range w.Throttle {
		tiers = append(tiers, tier)
	}
	sort.Strings(tiers) // the first invalid weight is always the same one
	folded := make(map[string]string, len(tiers))
	for _, tier := range tiers {
		if v := w.Throttle[tier]; !ok(v) {
			return fmt.Errorf("rewards: throttle weight of %q is %v, must be in [0, 1e6]", tier, v)
		}
		if other, dup := folded[strings.ToLower(tier)]; dup {
			return fmt.Errorf("rewards: throttle weights %q and %q differ only in case: tiers match case-insensitively", other, tier)
		}
		folded[strings.ToLower(tier)] = tier
	}
	return nil
}

// throttle is the cost of throttling a legitimate request of tier t.
func (w Weights) throttle(t policy.Tier) float64 {
	key := t.Name
	switch {
	case t.Enterprise():
		key = string(policy.ClassEnterprise)
	case strings.EqualFold(key, string(policy.ClassEnterprise)):
		key = "default" // a standard tier named enterprise
	}
	if v, ok := lookupFold(w.Throttle, key); ok {
		return v
	}
	v, _ := lookupFold(w.Throttle, "default")
	return v
}

// lookupFold returns m's entry for key, matched case-insensitively. The
// exact key is tried first, so the usual lookup does not scan.
func lookupFold(m map[string]float64, key string) (float64, bool) {
	if v, ok := m[key]; ok {
		return v, true
	}
	for k, v := range m {
		if strings.EqualFold(k, key) {
			return v, true
		}
	}
	return 0, false
}

// Outcome is what happened to a key's requests during one epoch, under
// the multiplier its budget had.
type Outcome struct {
	Served, Throttled, Blocked int64
	Multiplier                 float64
}

// RewardFor is the objective for one key-epoch of a key in tier t whose
// traffic has the share severity judged abusive (0: benign, the
// provisional assumption). Record.PolicyTier gives a record's tier.
func (w Weights) RewardFor(o Outcome, t policy.Tier, base, severity float64) float64 {
	b, k := w.benign(o, t, base), w.slope(o, t, base)
	return b + severity*k
}

// Terms are a key-epoch's reward split into what each part of the
// objective contributes; their sum is RewardFor.
type Terms struct {
	Served    float64 `json:"served"`    // + served weight × legitimate share of the served requests
	Throttled float64 `json:"throttled"` // − tier's throttle weight × legitimate share of the refused requests
	Abuse     float64 `json:"abuse"`     // − abuse weight × abusive share of the served requests
	Headroom  float64 `json:"headroom"`  // + headroom weight × multiplier × legitimate share: pays for generosity alone
	Deviation float64 `json:"deviation"` // − deviation weight × |ln multiplier|: the tie-break toward ×1
}

// Sum is the reward the terms make up.
func (t Terms) Sum() float64 { return t.Served + t.Throttled + t.Abuse + t.Headroom + t.Deviation }

// Add adds u's terms to t's.
func (t *Terms) Add(u Terms) {
	t.Served, t.Throttled, t.Abuse, t.Headroom = t.Served+u.Served, t.Throttled+u.Throttled, t.Abuse+u.Abuse, t.Headroom+u.Headroom
	t.Deviation += u.Deviation
}

// TermsFor is RewardFor split into its terms.
func (w Weights) TermsFor(o Outcome, t policy.Tier, base, severity float64) Terms {
	legit := 1 - severity
	return Terms{
		Served:    w.Served * legit * float64(o.Served) / base,
		Throttled: -w.throttle(t) * legit * float64(o.Throttled+o.Blocked) / base,
		Abuse:     -w.Abuse * severity * float64(o.Served) / base,
		Headroom:  w.headroom() * o.Multiplier * legit,
		Deviation: -w.deviation() * absLog(o.Multiplier),
	}
}

// absLog is |ln m|, 0 for a multiplier that is not positive and finite.
func absLog(m float64) float64 {
	if !(m > 0) || math.IsInf(m, 1) {
		return 0
	}
	return math.Abs(math.Log(m))
}

// benign is the reward of a benign key-epoch.
func (w Weights) benign(o Outcome, t policy.Tier, base float64) float64 {
	return (w.Served*float64(o.Served)-w.throttle(t)*float64(o.Throttled+o.Blocked))/base + w.headroom()*o.Multiplier -
		w.deviation()*absLog(o.Multiplier)
}

// slope is d reward / d severity: the reward changes linearly with the
// judged share of abuse, so a label's correction is slope × Δseverity.
func (w Weights) slope(o Outcome, t policy.Tier, base float64) float64 {
	return (-(w.Abuse+w.Served)*float64(o.Served)+w.throttle(t)*float64(o.Throttled+o.Blocked))/base - w.headroom()*o.Multiplier
}

// NormBase guards the normalisation of rewards by the epoch's base
// budget: a base below one request (or not finite) counts as one, so a
// tiny budget cannot blow rewards up. Callers of Weights.Reward pass it.
func NormBase(base float64) float64 {
	if !(base >= 1) || math.IsInf(base, 0) {
		return 1
	}
	return base
}
