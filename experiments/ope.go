package experiments

import (
	"errors"
	"fmt"
	"math"
)

// A Sample is one logged decision, for off-policy evaluation: the action
// the logging policy took, the probability it had of taking it, the reward
// that followed, and what the target policy (and, for DR, a reward model)
// says about every action in the same context.
type Sample struct {
	// Action is the index of the logged action (the arm).
	Action int
	// Propensity is the logging policy's probability of Action, in (0, 1];
	// the decision log records it (bandit.Choose returns it).
	Propensity float64
	// Reward is the observed reward; finite.
	Reward float64
	// Target is π(a|x), the target policy's probability of each action in
	// this context; each in [0, 1], summing to 1.
	Target []float64
	// RewardModel is q̂(x, a), a model's expected reward of each action in
	// this context, one per action. DR needs it; IPS and SNIPS ignore it.
	RewardModel []float64
}

// An Estimate is an off-policy estimate of a target policy's mean reward
// per decision.
type Estimate struct {
	// Value is the estimate.
	Value float64
	// StdErr is its standard error (see each estimator for how).
	StdErr float64
	// ESS is the effective sample size of the importance weights w,
	// (Σw)² / Σw²: how many on-policy samples the log is worth. Far below N,
	// the estimate rests on a few samples.
	ESS float64
	// N is the number of samples.
	N int
}

// Interval returns Value ± z·StdErr (z = Z95 for a 95% interval).
func (e Estimate) Interval(z float64) Interval {
	return Interval{Estimate: e.Value, Lo: e.Value - z*e.StdErr, Hi: e.Value + z*e.StdErr}
}

// ErrInvalidSample is wrapped by the errors of IPS, SNIPS and DR.
var ErrInvalidSample = errors.New("invalid sample")

// weights checks the log and returns each sample's importance weight
// w = π(a_logged) / p_logged.
func weights(log []Sample, needModel bool) ([]float64, error) {
	if len(log) == 0 {
		return nil, fmt.Errorf("%w: empty log", ErrInvalidSample)
	}
	w := make([]float64, len(log))
	for i, s := range log {
		bad := func(format string, args ...any) error {
			return fmt.Errorf("%w %d: %s", ErrInvalidSample, i, fmt.Sprintf(format, args...))
		}
		if !(s.Propensity > 0 && s.Propensity <= 1) {
			return nil, bad("propensity %v must be in (0, 1]", s.Propensity)
		}
		if math.IsNaN(s.Reward) || math.IsInf(s.Reward, 0) {
			return nil, bad("reward %v must be finite", s.Reward)
		}
		if s.Action < 0 || s.Action >= len(s.Target) {
			return nil, bad("action %d outside the %d target probabilities", s.Action, len(s.Target))
		}
		var sum float64
		for a, p := range s.Target {
			if !(p >= 0 && p <= 1) {
				return nil, bad("target probability %v of action %d must be in [0, 1]", p, a)
			}
			sum += p
		}
		if math.Abs(sum-1) > 1e-6 {
			return nil, bad("target probabilities sum to %v, not 1", sum)
		}
		if needModel {
			if len(s.RewardModel) != len(s.Target) {
				return nil, bad("%d reward-model values for %d actions", len(s.RewardModel), len(s.Target))
			}
			for a, q := range s.RewardModel {
				if math.IsNaN(q) || math.IsInf(q, 0) {
					return nil, bad("reward-model value %v of action %d must be finite", q, a)
				}
			}
		}
		w[i] = s.Target[s.Action] / s.Propensity
	}
	return w, nil
}

// meanEstimate returns the mean of per-sample values with the standard
// error of the mean.
func meanEstimate(xs, w []float64) Estimate {
	n := float64(len(xs))
	var sum float64
	for _, x := range xs {
		sum += x
	}
	mean := sum / n
	var ss float64
	for _, x := range xs {
		ss += (x - mean) * (x - mean)
	}
	e := Estimate{Value: mean, ESS: ess(w), N: len(xs)}
	if len(xs) > 1 {
		e.StdErr = math.Sqrt(ss / (n - 1) / n)
	}
	return e
}

func ess(w []float64) float64 {
	var s, s2 float64
	for _, x := range w {
		s += x
		s2 += x * x
	}
	if s2 == 0 {
		return 0
	}
	return s * s / s2
}

// IPS is the inverse propensity score estimate: the mean of w·r. It is
// unbiased when every propensity is right and every action the target
// policy takes had a positive propensity. StdErr is the standard error of
// the mean of the per-sample terms w·r.
func IPS(log []Sample) (Estimate, error) {
	w, err := weights(log, false)
	if err != nil {
		return Estimate{}, err
	}
	terms := make([]float64, len(log))
	for i, s := range log {
		terms[i] = w[i] * s.Reward
	}
	return meanEstimate(terms, w), nil
}

// SNIPS is the self-normalized IPS estimate Σ w·r / Σ w: slightly biased,
// much less variable than IPS when weights are large. StdErr comes from the
// delta method: the standard error of the mean of w·(r − V̂) / mean(w).
// With every weight 0 (the target never takes a logged action) it returns
// an error.
func SNIPS(log []Sample) (Estimate, error) {
	w, err := weights(log, false)
	if err != nil {
		return Estimate{}, err
	}
	var sw, swr float64
	for i, s := range log {
		sw += w[i]
		swr += w[i] * s.Reward
	}
	if sw == 0 {
		return Estimate{}, fmt.Errorf("%w: every importance weight is 0: the target policy never takes a logged action", ErrInvalidSample)
	}
	v := swr / sw
	meanW := sw / float64(len(log))
	infl := make([]float64, len(log))
	for i, s := range log {
		infl[i] = w[i] * (s.Reward - v) / meanW
	}
	e := meanEstimate(infl, w)
	e.Value = v
	return e, nil
}

// DR is the doubly robust estimate: the mean of
// Σₐ π(a)·q̂(a) + w·(r − q̂(a_logged)). It is unbiased when either the
// propensities or the reward model are right, and less variable than IPS
// when the model is good. Every sample needs RewardModel. StdErr is the
// standard error of the mean of the per-sample terms.
func DR(log []Sample) (Estimate, error) {
	w, err := weights(log, true)
	if err != nil {
		return Estimate{}, err
	}
	terms := make([]float64, len(log))
	for i, s := range log {
		var direct float64
		for a, p := range s.Target {
			direct += p * s.RewardModel[a]
		}
		terms[i] = direct + w[i]*(s.Reward-s.RewardModel[s.Action])
	}
	return meanEstimate(terms, w), nil
}
