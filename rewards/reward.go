package rewards

import (
	"errors"
	"fmt"
	"math"
)

// Weights is the business objective the bandit maximises, per key-epoch:
//
//	reward = (Served·served_legit − Throttle[tier]·throttled_legit − Abuse·served_abusive) / base
//	         + Headroom·multiplier·(1 − severity)
//
// where base is the requests the key's base budget admits in the epoch, so
// that keys of every size weigh alike. Blocked requests count as throttled.
// A key judged abusive with severity s has the share s of its traffic
// abusive. Throttling abusive traffic is neither a cost nor a value: the
// value is in not serving it.
type Weights struct {
	// Served is the value of a legitimate request served. Default: 1.
	Served float64 `yaml:"served"`
	// Throttle is the cost of throttling a legitimate request, per tier:
	// enterprise is the most expensive. A tier not listed costs
	// Throttle["default"]. Defaults: free 0.5, pro 2, enterprise 20,
	// default 1.
	Throttle map[string]float64 `yaml:"throttle"`
	// Abuse is the cost of an abusive request served. Default: 5.
	Abuse float64 `yaml:"abuse"`
	// Headroom is the value, per unit of multiplier, of the budget a
	// legitimate key holds: a key that is never throttled still gains from
	// room for its next burst, so the bandit keeps benign keys generous
	// instead of shrinking everyone to the floor. Default: 0.25.
	Headroom float64 `yaml:"headroom"`
}

// DefaultWeights returns the default objective.
func DefaultWeights() Weights {
	return Weights{Served: 1, Abuse: 5, Headroom: 0.25,
		Throttle: map[string]float64{"free": 0.5, "pro": 2, "enterprise": 20, "default": 1}}
}

// WithDefaults fills the zero fields of w.
func (w Weights) WithDefaults() Weights {
	d := DefaultWeights()
	if w.Served == 0 {
		w.Served = d.Served
	}
	if w.Abuse == 0 {
		w.Abuse = d.Abuse
	}
	if w.Headroom == 0 {
		w.Headroom = d.Headroom
	}
	t := make(map[string]float64, len(d.Throttle))
	for k, v := range d.Throttle {
		t[k] = v
	}
	for k, v := range w.Throttle {
		t[k] = v
	}
	w.Throttle = t
	return w
}

// Validate reports the first invalid weight.
func (w Weights) Validate() error {
	ok := func(v float64) bool { return v >= 0 && v <= 1e6 } // NaN fails
	if !ok(w.Served) || !ok(w.Abuse) || !ok(w.Headroom) {
		return errors.New("rewards: served, abuse and headroom weights must be in [0, 1e6]")
	}
	for tier, v := range w.Throttle {
		if !ok(v) {
			return fmt.Errorf("rewards: throttle weight of %q is %v, must be in [0, 1e6]", tier, v)
		}
	}
	return nil
}

func (w Weights) throttle(tier string) float64 {
	if v, ok := w.Throttle[tier]; ok {
		return v
	}
	return w.Throttle["default"]
}

// Outcome is what happened to a key's requests during one epoch, under
// the multiplier its budget had.
type Outcome struct {
	Served, Throttled, Blocked int64
	Multiplier                 float64
}

// Reward is the objective for one key-epoch whose traffic has the share
// severity judged abusive (0: benign, the provisional assumption).
func (w Weights) Reward(o Outcome, tier string, base, severity float64) float64 {
	b, k := w.benign(o, tier, base), w.slope(o, tier, base)
	return b + severity*k
}

// benign is the reward of a benign key-epoch.
func (w Weights) benign(o Outcome, tier string, base float64) float64 {
	return (w.Served*float64(o.Served)-w.throttle(tier)*float64(o.Throttled+o.Blocked))/base + w.Headroom*o.Multiplier
}

// slope is d reward / d severity: the reward changes linearly with the
// judged share of abuse, so a label's correction is slope × Δseverity.
func (w Weights) slope(o Outcome, tier string, base float64) float64 {
	return (-(w.Abuse+w.Served)*float64(o.Served)+w.throttle(tier)*float64(o.Throttled+o.Blocked))/base - w.Headroom*o.Multiplier
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
