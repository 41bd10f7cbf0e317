package bandit

import (
	"errors"
	"fmt"
	"math"
	"math/rand/v2"
)

// A Policy picks an arm for a context among the allowed arms and knows the
// probability of each of its picks. *Snapshot (Thompson sampling),
// EpsilonGreedy and Uniform are Policies; the simulator and off-policy
// evaluation use them interchangeably.
type Policy interface {
	// Choose picks an arm, reporting its propensity.
	Choose(x []float64, allowed ArmRange, rng *rand.Rand) (Choice, error)
	// Probability returns the probability that Choose picks arm a.
	Probability(x []float64, allowed ArmRange, a int) (float64, error)
}

// Scaled is Thompson sampling on Snapshot with its exploration scale
// multiplied by Factor: how an experiment variant explores more or less
// than the model it shares.
type Scaled struct {
	Snapshot *Snapshot
	Factor   float64 // > 0; 1 is the snapshot's own scale
}

// Choose is Snapshot.ChooseScaled.
func (p Scaled) Choose(x []float64, allowed ArmRange, rng *rand.Rand) (Choice, error) {
	return p.Snapshot.ChooseScaled(x, allowed, rng, p.Factor)
}

// Probability is Snapshot.ProbabilityScaled.
func (p Scaled) Probability(x []float64, allowed ArmRange, a int) (float64, error) {
	return p.Snapshot.ProbabilityScaled(x, allowed, a, p.Factor)
}

var (
	_ Policy = Scaled{}
	_ Policy = (*Snapshot)(nil)
	_ Policy = EpsilonGreedy{}
	_ Policy = Uniform{}
)

// Uniform picks every allowed arm with the same probability. It is the
// baseline that explores the most and learns nothing.
type Uniform struct {
	// Arms is the arm set the ranges refer to.
	Arms ArmSet
}

// Choose picks an allowed arm uniformly at random; its propensity is 1/k
// for k allowed arms. The context is not used, but must be finite.
func (u Uniform) Choose(x []float64, allowed ArmRange, rng *rand.Rand) (Choice, error) {
	if rng == nil {
		return Choice{}, errNoRand
	}
	if err := checkRange(allowed, len(u.Arms)); err != nil {
		return Choice{}, err
	}
	if err := checkFinite(x); err != nil {
		return Choice{}, err
	}
	k := allowed.Len()
	a := allowed.Lo + rng.IntN(k)
	return Choice{Arm: a, Name: u.Arms[a].Name, Multiplier: u.Arms[a].Multiplier,
		Propensity: 1 / float64(k), Mean: math.NaN(), StdDev: math.NaN()}, nil
}

// Probability returns 1/k for an allowed arm and 0 otherwise.
func (u Uniform) Probability(x []float64, allowed ArmRange, a int) (float64, error) {
	if err := checkRange(allowed, len(u.Arms)); err != nil {
		return 0, err
	}
	if a < 0 || a >= len(u.Arms) {
		return 0, fmt.Errorf("bandit: %w: arm %d, have %d arms", ErrUnknownArm, a, len(u.Arms))
	}
	if !allowed.Contains(a) {
		return 0, nil
	}
	return 1 / float64(allowed.Len()), nil
}

// EpsilonGreedy picks, with probability 1-Epsilon, the allowed arm with the
// highest posterior mean reward for the context (the lowest such index on a
// tie), and otherwise an allowed arm uniformly at random. The propensity of
// arm a is Epsilon/k, plus 1-Epsilon if a is the greedy arm.
type EpsilonGreedy struct {
	// Snapshot supplies the posterior means.
	Snapshot *Snapshot
	// Epsilon is the exploration probability, in [0, 1].
	Epsilon float64
}

// Choose picks an arm as described on EpsilonGreedy. It does not allocate.
func (e EpsilonGreedy) Choose(x []float64, allowed ArmRange, rng *rand.Rand) (Choice, error) {
	if rng == nil {
		return Choice{}, errNoRand
	}
	greedy, means, err := e.greedy(x, allowed)
	if err != nil {
		return Choice{}, err
	}
	a := greedy
	if e.Epsilon > 0 && rng.Float64() < e.Epsilon {
		a = allowed.Lo + rng.IntN(allowed.Len())
	}
	s := e.Snapshot
	return Choice{Arm: a, Name: s.arms[a].Name, Multiplier: s.arms[a].Multiplier,
		Score: means[a-allowed.Lo], Propensity: e.prob(a, greedy, allowed),
		Mean: means[a-allowed.Lo], StdDev: 0}, nil
}

// Probability returns the probability that Choose picks arm a.
func (e EpsilonGreedy) Probability(x []float64, allowed ArmRange, a int) (float64, error) {
	greedy, _, err := e.greedy(x, allowed)
	if err != nil {
		return 0, err
	}
	if a < 0 || a >= len(e.Snapshot.arms) {
		return 0, fmt.Errorf("bandit: %w: arm %d, have %d arms", ErrUnknownArm, a, len(e.Snapshot.arms))
	}
	if !allowed.Contains(a) {
		return 0, nil
	}
	return e.prob(a, greedy, allowed), nil
}

func (e EpsilonGreedy) prob(a, greedy int, allowed ArmRange) float64 {
	p := e.Epsilon / float64(allowed.Len())
	if a == greedy {
		p += 1 - e.Epsilon
	}
	return p
}

// greedy returns the allowed arm with the highest posterior mean, and the
// means of the allowed arms.
func (e EpsilonGreedy) greedy(x []float64, allowed ArmRange) (int, [MaxArms]float64, error) {
	var means [MaxArms]float64
	s := e.Snapshot
	if s == nil {
		return 0, means, errors.New("bandit: epsilon-greedy without a snapshot")
	}
	if !(e.Epsilon >= 0 && e.Epsilon <= 1) {
		return 0, means, fmt.Errorf("bandit: epsilon %v outside [0, 1]", e.Epsilon)
	}
	if err := checkRange(allowed, len(s.arms)); err != nil {
		return 0, means, err
	}
	if err := checkContext(x, s.dim); err != nil {
		return 0, means, err
	}
	best := allowed.Lo
	for a := allowed.Lo; a < allowed.Hi; a++ {
		m := dot(s.models[a].mean, x, s.intercept)
		means[a-allowed.Lo] = m
		if m > means[best-allowed.Lo] {
			best = a
		}
	}
	return best, means, nil
}

// checkRange checks that allowed is a non-empty range of n arms.
func checkRange(allowed ArmRange, n int) error {
	if allowed.Len() == 0 {
		return fmt.Errorf("bandit: %w: empty arm range [%d, %d)", ErrNoArm, allowed.Lo, allowed.Hi)
	}
	if allowed.Lo < 0 || allowed.Hi > n {
		return fmt.Errorf("bandit: %w: arm range [%d, %d) outside the %d arms", ErrUnknownArm, allowed.Lo, allowed.Hi, n)
	}
	return nil
}

func checkFinite(x []float64) error {
	for i, v := range x {
		if !(math.Abs(v) <= MaxValue) {
			return fmt.Errorf("bandit: %w: feature %d is %v", ErrBadValue, i, v)
		}
	}
	return nil
}
