package experiments

import (
	"errors"
	"math"
	"math/rand/v2"
	"testing"
)

// A synthetic world with a known answer: two context types, three actions
// with Bernoulli rewards, a logging policy with known propensities and a
// different target policy.
var (
	contextP = []float64{0.6, 0.4}
	meanR    = [][]float64{{0.2, 0.5, 0.7}, {0.6, 0.3, 0.1}} // E[r | x, a]
	logging  = [][]float64{{0.5, 0.3, 0.2}, {0.2, 0.3, 0.5}} // μ(a | x)
	target   = [][]float64{{0.1, 0.2, 0.7}, {0.7, 0.2, 0.1}} // π(a | x)
	// A reward model that is wrong on purpose: DR must stay unbiased.
	model = [][]float64{{0.3, 0.6, 0.6}, {0.5, 0.35, 0.2}}
)

// trueValue is Σₓ P(x) Σₐ π(a|x) E[r|x,a] = 0.6·0.61 + 0.4·0.49.
const trueValue = 0.562

func draw(r *rand.Rand, p []float64) int {
	x := r.Float64()
	for i, q := range p {
		if x < q {
			return i
		}
		x -= q
	}
	return len(p) - 1
}

func syntheticLog(seed uint64, n int) []Sample {
	r := rand.New(rand.NewPCG(seed, 0x0e))
	log := make([]Sample, n)
	for i := range log {
		x := draw(r, contextP)
		a := draw(r, logging[x])
		var reward float64
		if r.Float64() < meanR[x][a] {
			reward = 1
		}
		log[i] = Sample{Action: a, Propensity: logging[x][a], Reward: reward, Target: target[x], RewardModel: model[x]}
	}
	return log
}

func TestTrueValue(t *testing.T) {
	var v float64
	for x := range contextP {
		for a := range target[x] {
			v += contextP[x] * target[x][a] * meanR[x][a]
		}
	}
	if !near(v, trueValue, 1e-12) {
		t.Fatalf("true value %v, constant says %v", v, trueValue)
	}
}

// TestOPECoverageAndBias: over 200 independent logs, each estimator's 95%
// interval holds the true value in at least 90% of runs, and the mean of
// its estimates is within 3 standard errors of the truth.
func TestOPECoverageAndBias(t *testing.T) {
	const runs, n = 200, 1000
	estimators := map[string]func([]Sample) (Estimate, error){"IPS": IPS, "SNIPS": SNIPS, "DR": DR}
	for name, estimate := range estimators {
		t.Run(name, func(t *testing.T) {
			covered := 0
			var sum, sum2 float64
			for seed := range uint64(runs) {
				e, err := estimate(syntheticLog(seed, n))
				if err != nil {
					t.Fatal(err)
				}
				if iv := e.Interval(Z95); iv.Lo <= trueValue && trueValue <= iv.Hi {
					covered++
				}
				if e.N != n || !(e.ESS > 0 && e.ESS <= n) {
					t.Fatalf("N %d, ESS %v", e.N, e.ESS)
				}
				sum += e.Value
				sum2 += e.Value * e.Value
			}
			mean := sum / runs
			se := math.Sqrt((sum2/runs - mean*mean) / (runs - 1))
			if c := float64(covered) / runs; c < 0.90 {
				t.Errorf("95%% interval covered the truth in %.3f of runs", c)
			}
			if math.Abs(mean-trueValue) > 3*se {
				t.Errorf("mean estimate %.4f, truth %.4f, standard error %.4f: biased", mean, trueValue, se)
			}
			t.Logf("coverage %.3f, mean %.4f ± %.4f (truth %.3f)", float64(covered)/runs, mean, se, trueValue)
		})
	}
}

// TestOPEOnPolicy: when the target is the logging policy, every weight is
// 1, IPS and SNIPS are the plain mean and the ESS is N.
func TestOPEOnPolicy(t *testing.T) {
	log := syntheticLog(1, 500)
	var mean float64
	for i := range log {
		x := 0
		if log[i].Propensity != logging[0][log[i].Action] {
			x = 1
		}
		log[i].Target = logging[x]
		mean += log[i].Reward / float64(len(log))
	}
	for name, f := range map[string]func([]Sample) (Estimate, error){"IPS": IPS, "SNIPS": SNIPS} {
		e, err := f(log)
		if err != nil || !near(e.Value, mean, 1e-12) || !near(e.ESS, 500, 1e-9) {
			t.Errorf("%s: %+v, %v; want the mean %v and ESS 500", name, e, err, mean)
		}
	}
}

func TestOPEBadInput(t *testing.T) {
	good := Sample{Action: 1, Propensity: 0.5, Reward: 1, Target: []float64{0.5, 0.5}, RewardModel: []float64{0, 1}}
	with := func(f func(*Sample)) []Sample {
		s := good
		s.Target = append([]float64(nil), good.Target...)
		f(&s)
		return []Sample{good, s}
	}
	cases := map[string][]Sample{
		"empty":                 nil,
		"zero propensity":       with(func(s *Sample) { s.Propensity = 0 }),
		"negative propensity":   with(func(s *Sample) { s.Propensity = -0.1 }),
		"propensity above one":  with(func(s *Sample) { s.Propensity = 1.01 }),
		"NaN propensity":        with(func(s *Sample) { s.Propensity = math.NaN() }),
		"NaN reward":            with(func(s *Sample) { s.Reward = math.NaN() }),
		"infinite reward":       with(func(s *Sample) { s.Reward = math.Inf(1) }),
		"action out of range":   with(func(s *Sample) { s.Action = 2 }),
		"negative action":       with(func(s *Sample) { s.Action = -1 }),
		"NaN target":            with(func(s *Sample) { s.Target[0] = math.NaN() }),
		"target does not sum 1": with(func(s *Sample) { s.Target[0] = 0.2 }),
	}
	for name, log := range cases {
		for est, f := range map[string]func([]Sample) (Estimate, error){"IPS": IPS, "SNIPS": SNIPS, "DR": DR} {
			if _, err := f(log); !errors.Is(err, ErrInvalidSample) {
				t.Errorf("%s, %s: err %v, want ErrInvalidSample", name, est, err)
			}
		}
	}
	noModel := with(func(s *Sample) { s.RewardModel = nil })
	if _, err := DR(noModel); !errors.Is(err, ErrInvalidSample) {
		t.Errorf("DR without a reward model: %v", err)
	}
	if _, err := IPS(noModel); err != nil {
		t.Errorf("IPS needs no reward model: %v", err)
	}
	never := []Sample{{Action: 0, Propensity: 0.5, Reward: 1, Target: []float64{0, 1}}}
	if _, err := SNIPS(never); !errors.Is(err, ErrInvalidSample) {
		t.Errorf("SNIPS with all weights 0: %v", err)
	}
}
