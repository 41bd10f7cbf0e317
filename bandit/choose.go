package bandit

import (
	"errors"
	"fmt"
	"math"
	"math/rand/v2"
)

// ErrNoArm means no arm is allowed: the floor and ceiling exclude every
// arm, or the ArmRange is empty. The caller falls back to the deterministic
// budget.
var ErrNoArm = errors.New("no arm allowed")

// errNoRand is returned when a nil random source is passed.
var errNoRand = errors.New("bandit: nil random source")

// MinPropensity is the smallest propensity a choice reports. A chosen arm's
// true probability is positive but can round to 0 (a draw beyond 6.5
// standard deviations); reporting at least MinPropensity keeps 1/propensity
// finite in off-policy estimators. Such choices happen with probability
// below MinPropensity, so the bias is negligible.
const MinPropensity = 1e-9

// minRelScale bounds a score's standard deviation below, relative to its
// mean: a posterior narrower than that is a point mass for all practical
// purposes, and the quadrature needs positive widths.
const minRelScale = 1e-9

// A Choice is the outcome of Choose.
type Choice struct {
	// Arm is the index of the chosen arm in the arm set.
	Arm int
	// Name and Multiplier describe the chosen arm.
	Name       string
	Multiplier float64
	// Score is the sampled score that won.
	Score float64
	// Propensity is the probability that the policy picks Arm for this
	// context and allowed range, in [MinPropensity, 1]. Log it with the
	// decision for off-policy evaluation.
	Propensity float64
	// Mean is the posterior mean reward of the chosen arm for the context,
	// and StdDev the standard deviation of its score distribution (+Inf for
	// a t score with 2 or fewer degrees of freedom).
	Mean, StdDev float64
}

// Choose picks an arm for context x among the allowed arms by Thompson
// sampling: it draws one score per allowed arm from its posterior
// predictive for x and returns the largest, with its exact propensity.
// Arms outside allowed are never chosen. The draws come from rng only, so
// the same snapshot, context, range and seed give the same choice.
//
// Choose does not allocate. It returns ErrNoArm for an empty range, and
// ErrDim, ErrBadValue or ErrUnknownArm (wrapped) for bad input.
func (s *Snapshot) Choose(x []float64, allowed ArmRange, rng *rand.Rand) (Choice, error) {
	return s.ChooseScaled(x, allowed, rng, 1)
}

// ChooseScaled is Choose with the exploration scale multiplied by factor:
// an experiment variant that explores more (factor > 1) or less than the
// model's configured scale, on the same posterior. The propensity is that
// of the scaled policy. factor must be positive and finite.
func (s *Snapshot) ChooseScaled(x []float64, allowed ArmRange, rng *rand.Rand, factor float64) (Choice, error) {
	if rng == nil {
		return Choice{}, errNoRand
	}
	if !(factor > 0) || math.IsInf(factor, 0) {
		return Choice{}, fmt.Errorf("bandit: %w: exploration factor %v", ErrBadValue, factor)
	}
	var buf [MaxArms]score
	sc, err := s.scores(buf[:], x, allowed)
	if err != nil {
		return Choice{}, err
	}
	if factor != 1 {
		for j := range sc {
			sc[j].scale *= factor
		}
	}
	best, bestScore := 0, math.Inf(-1)
	for j := range sc {
		m := s.models[allowed.Lo+j]
		var draw float64
		if sc[j].t == nil {
			draw = sc[j].mean + sc[j].scale*rng.NormFloat64()
		} else {
			// σ² ~ IG(aₙ, bₙ), then the score ~ N(xᵀμ, v²σ²·xᵀB⁻¹x). In
			// units of the t scale √(v²bₙ/aₙ·xᵀB⁻¹x) the standard deviation
			// is √(aₙ/G) with G ~ Gamma(aₙ, 1).
			g := m.gamma.sample(rng)
			draw = sc[j].mean + sc[j].scale*math.Sqrt(m.shape/g)*rng.NormFloat64()
		}
		if draw > bestScore || j == 0 {
			best, bestScore = j, draw
		}
	}
	p, err := propensity(best, sc)
	if err != nil {
		return Choice{}, err
	}
	a := allowed.Lo + best
	return Choice{
		Arm:        a,
		Name:       s.arms[a].Name,
		Multiplier: s.arms[a].Multiplier,
		Score:      bestScore,
		Propensity: p,
		Mean:       sc[best].mean,
		StdDev:     sc[best].stdDev(),
	}, nil
}

// Probability returns the probability that Choose picks arm a for context x
// among the allowed arms: 0 if a is outside allowed. It is the propensity
// Choose reports when it picks a, computed without drawing, e.g. to
// evaluate this snapshot offline on decisions logged by another policy.
func (s *Snapshot) Probability(x []float64, allowed ArmRange, a int) (float64, error) {
	return s.ProbabilityScaled(x, allowed, a, 1)
}

// ProbabilityScaled is Probability for ChooseScaled with factor.
func (s *Snapshot) ProbabilityScaled(x []float64, allowed ArmRange, a int, factor float64) (float64, error) {
	if !(factor > 0) || math.IsInf(factor, 0) {
		return 0, fmt.Errorf("bandit: %w: exploration factor %v", ErrBadValue, factor)
	}
	var buf [MaxArms]score
	sc, err := s.scores(buf[:], x, allowed)
	if err != nil {
		return 0, err
	}
	if factor != 1 {
		for j := range sc {
			sc[j].scale *= factor
		}
	}
	if a < 0 || a >= len(s.arms) {
		return 0, fmt.Errorf("bandit: %w: arm %d, have %d arms", ErrUnknownArm, a, len(s.arms))
	}
	if !allowed.Contains(a) {
		return 0, nil
	}
	return propensity(a-allowed.Lo, sc)
}

// An ArmScore explains one arm's part in a choice.
type ArmScore struct {
	Arm         int
	Name        string
	Multiplier  float64
	Mean        float64 // posterior mean reward for the context
	StdDev      float64 // standard deviation of the sampled score
	Count       uint64  // updates of the arm
	Probability float64 // probability that Choose picks the arm
}

// Explain returns, for each allowed arm, its posterior mean, score spread,
// update count and probability of being chosen for context x.
func (s *Snapshot) Explain(x []float64, allowed ArmRange) ([]ArmScore, error) {
	var buf [MaxArms]score
	sc, err := s.scores(buf[:], x, allowed)
	if err != nil {
		return nil, err
	}
	out := make([]ArmScore, len(sc))
	for j := range sc {
		a := allowed.Lo + j
		p, err := propensity(j, sc)
		if err != nil {
			return nil, err
		}
		out[j] = ArmScore{
			Arm: a, Name: s.arms[a].Name, Multiplier: s.arms[a].Multiplier,
			Mean: sc[j].mean, StdDev: sc[j].stdDev(), Count: s.models[a].n, Probability: p,
		}
	}
	return out, nil
}

// scores checks x and allowed and fills buf with the score distribution of
// each allowed arm.
func (s *Snapshot) scores(buf []score, x []float64, allowed ArmRange) ([]score, error) {
	if allowed.Len() == 0 {
		return nil, fmt.Errorf("bandit: %w: empty arm range [%d, %d)", ErrNoArm, allowed.Lo, allowed.Hi)
	}
	if allowed.Lo < 0 || allowed.Hi > len(s.arms) {
		return nil, fmt.Errorf("bandit: %w: arm range [%d, %d) outside the %d arms", ErrUnknownArm, allowed.Lo, allowed.Hi, len(s.arms))
	}
	if err := checkContext(x, s.dim); err != nil {
		return nil, err
	}
	sc := buf[:allowed.Len()]
	for j := range sc {
		m := s.models[allowed.Lo+j]
		mean := dot(m.mean, x, s.intercept)
		scale := math.Sqrt(m.scale2 * quadForm(m.inv, x, s.p, s.intercept))
		scale = max(scale, minRelScale*max(1, math.Abs(mean)))
		sc[j] = score{mean: mean, scale: scale}
		if s.posterior == NormalInverseGamma {
			sc[j].t = &m.t
			sc[j].tail = m.tail
		}
	}
	return sc, nil
}

func (sc *score) stdDev() float64 {
	if sc.t == nil {
		return sc.scale
	}
	if sc.t.nu <= 2 {
		return math.Inf(1)
	}
	return sc.scale * math.Sqrt(sc.t.nu/(sc.t.nu-2))
}

// propensity returns the clamped probability that score a is the largest.
func propensity(a int, sc []score) (float64, error) {
	var p float64
	if sc[0].t == nil {
		p = normalPropensity(a, sc)
	} else {
		p = studentPropensity(a, sc)
	}
	if math.IsNaN(p) {
		return 0, errors.New("bandit: propensity quadrature failed")
	}
	return min(max(p, MinPropensity), 1), nil
}
