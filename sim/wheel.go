package sim

import (
	"errors"
	"fmt"
	"io"
	"math"
	"math/rand/v2"
	"time"

	"github.com/devflow/flowguard/bandit"
)

// The wheel bandit of Riquelme, Tucker & Snoek, "Deep Bayesian Bandits
// Showdown" (ICLR 2018), section 4: contexts are uniform in the unit disk
// and there are five arms. Arm 0 pays N(1.2, σ²) everywhere; arms 1-4 pay
// N(1, σ²), except that outside radius δ the arm of the context's quadrant
// pays N(50, σ²). The larger δ, the rarer and more valuable exploration
// outside the inner disk is, and a linear model in (x₁, x₂) cannot describe
// the rewards at all: the benchmark shows how a policy copes with a model
// that is wrong.
const (
	wheelArms      = 5
	wheelMeanSmall = 1.0
	wheelMeanBest  = 1.2
	wheelMeanLarge = 50.0
)

// WheelConfig configures RunWheel. Zero values take the defaults.
type WheelConfig struct {
	// Deltas are the radii δ to run. Default: 0.5, 0.7, 0.9, 0.95, 0.99.
	Deltas []float64
	// Steps is the number of contexts per run. Default: 2000.
	Steps int
	// Runs is the number of independent runs per δ, each with its own
	// seed; results are averaged. Default: 10.
	Runs int
	// Seed seeds the first run; run i uses Seed+i. Default: 0.
	Seed uint64
	// Sigma is the reward noise σ. Default: 0.01, as in the paper.
	Sigma float64
	// Epsilon is the exploration probability of the ε-greedy baseline.
	// Default: 0.05.
	Epsilon float64
}

// Wheel policies, in table order.
var wheelPolicies = []string{"LinTS", "LinTS-NIG", "epsilon-greedy", "Uniform"}

// WheelRow is the outcome for one δ.
type WheelRow struct {
	Delta float64
	// Regret is the mean cumulative expected regret of each policy over
	// the runs: the sum over steps of the best arm's mean reward minus the
	// chosen arm's.
	Regret map[string]float64
	// StdErr is the standard error of Regret over the runs.
	StdErr map[string]float64
	// Normalized is Regret relative to Uniform's, ×100.
	Normalized map[string]float64
	// UniformExpected is Uniform's expected cumulative regret,
	// Steps·(δ²·0.16 + (1-δ²)·39.16).
	UniformExpected float64
}

func (c WheelConfig) withDefaults() WheelConfig {
	if c.Deltas == nil {
		c.Deltas = []float64{0.5, 0.7, 0.9, 0.95, 0.99}
	}
	if c.Steps == 0 {
		c.Steps = 2000
	}
	if c.Runs == 0 {
		c.Runs = 10
	}
	if c.Sigma == 0 {
		c.Sigma = 0.01
	}
	if c.Epsilon == 0 {
		c.Epsilon = 0.05
	}
	return c
}

// Validate reports the first invalid field, after defaults are applied.
func (c WheelConfig) Validate() error {
	c = c.withDefaults()
	for _, d := range c.Deltas {
		if !(d > 0 && d < 1) {
			return fmt.Errorf("wheel: δ %v outside (0, 1)", d)
		}
	}
	switch {
	case c.Steps < 1 || c.Steps > 10_000_000:
		return fmt.Errorf("wheel: steps %d outside 1..10000000", c.Steps)
	case c.Runs < 1 || c.Runs > 10_000:
		return fmt.Errorf("wheel: runs %d outside 1..10000", c.Runs)
	case !(c.Sigma > 0) || math.IsInf(c.Sigma, 0):
		return fmt.Errorf("wheel: sigma %v must be finite and positive", c.Sigma)
	case !(c.Epsilon > 0 && c.Epsilon <= 1):
		return fmt.Errorf("wheel: epsilon %v outside (0, 1]", c.Epsilon)
	}
	return nil
}

// UniformWheelRegret returns the expected regret per step of the uniform
// policy: inside radius δ the best arm pays 1.2 against a mean of
// (1.2+4)/5 = 1.04; outside it pays 50 against (1.2+50+3)/5 = 10.84.
func UniformWheelRegret(delta float64) float64 {
	return delta*delta*0.16 + (1-delta*delta)*39.16
}

// RunWheel runs every policy on the wheel bandit for each δ and returns
// one row per δ. The same configuration gives the same rows.
func RunWheel(cfg WheelConfig) ([]WheelRow, error) {
	if err := cfg.Validate(); err != nil {
		return nil, err
	}
	cfg = cfg.withDefaults()
	rows := make([]WheelRow, 0, len(cfg.Deltas))
	for _, delta := range cfg.Deltas {
		row := WheelRow{Delta: delta, Regret: map[string]float64{}, StdErr: map[string]float64{},
			Normalized: map[string]float64{}, UniformExpected: float64(cfg.Steps) * UniformWheelRegret(delta)}
		for _, name := range wheelPolicies {
			var sum, sum2 float64
			for run := 0; run < cfg.Runs; run++ {
				r, err := wheelRun(cfg, name, delta, cfg.Seed+uint64(run))
				if err != nil {
					return nil, fmt.Errorf("wheel: %s, δ=%v, run %d: %w", name, delta, run, err)
				}
				sum += r
				sum2 += r * r
			}
			n := float64(cfg.Runs)
			mean := sum / n
			row.Regret[name] = mean
			if cfg.Runs > 1 {
				row.StdErr[name] = math.Sqrt(max(sum2/n-mean*mean, 0) * n / (n - 1) / n)
			}
		}
		for _, name := range wheelPolicies {
			row.Normalized[name] = 100 * row.Regret[name] / row.Regret["Uniform"]
		}
		rows = append(rows, row)
	}
	return rows, nil
}

// wheelRun plays one policy for cfg.Steps contexts and returns its
// cumulative expected regret. Contexts come from a stream seeded by seed
// alone, so every policy of a run sees the same contexts; the policy's own
// draws and the reward noise use a second stream.
func wheelRun(cfg WheelConfig, name string, delta float64, seed uint64) (float64, error) {
	contexts := rand.New(rand.NewPCG(seed, 0x77686565))
	rng := rand.New(rand.NewPCG(seed, 0x706f6c69))
	arms := make(bandit.ArmSet, wheelArms)
	for i := range arms {
		arms[i] = bandit.Arm{Name: fmt.Sprintf("a%d", i+1), Multiplier: float64(i + 1)}
	}
	lcfg := bandit.Config{ModelID: "wheel", Arms: arms, Dim: 2}
	if name == "LinTS-NIG" {
		lcfg.Posterior = bandit.NormalInverseGamma
	}
	learner, err := bandit.NewLearner(lcfg)
	if err != nil {
		return 0, err
	}
	snap, err := learner.Snapshot(time.Time{})
	if err != nil {
		return 0, err
	}
	var policy bandit.Policy
	all := arms.All()
	x := make([]float64, 2)
	regret := 0.0
	for step := 0; step < cfg.Steps; step++ {
		// Uniform in the disk: radius √U, angle 2πU.
		rad, ang := math.Sqrt(contexts.Float64()), 2*math.Pi*contexts.Float64()
		x[0], x[1] = rad*math.Cos(ang), rad*math.Sin(ang)
		switch name {
		case "Uniform":
			policy = bandit.Uniform{Arms: arms}
		case "epsilon-greedy":
			policy = bandit.EpsilonGreedy{Snapshot: snap, Epsilon: cfg.Epsilon}
		default:
			policy = snap
		}
		c, err := policy.Choose(x, all, rng)
		if err != nil {
			return 0, err
		}
		means := wheelMeans(x, delta)
		best := max(means[0], means[1], means[2], means[3], means[4])
		regret += best - means[c.Arm]
		if name == "Uniform" {
			continue
		}
		if err := learner.Update(x, c.Arm, means[c.Arm]+cfg.Sigma*rng.NormFloat64()); err != nil {
			return 0, err
		}
		if snap, err = learner.Snapshot(time.Time{}); err != nil {
			return 0, err
		}
	}
	return regret, nil
}

// wheelMeans returns each arm's mean reward for context x.
func wheelMeans(x []float64, delta float64) [wheelArms]float64 {
	m := [wheelArms]float64{wheelMeanBest, wheelMeanSmall, wheelMeanSmall, wheelMeanSmall, wheelMeanSmall}
	if math.Hypot(x[0], x[1]) > delta {
		q := 1 // x₁ > 0, x₂ > 0
		switch {
		case x[0] > 0 && x[1] <= 0:
			q = 2
		case x[0] <= 0 && x[1] > 0:
			q = 3
		case x[0] <= 0 && x[1] <= 0:
			q = 4
		}
		m[q] = wheelMeanLarge
	}
	return m
}

// WriteWheelTable prints rows as a table of cumulative regret normalised
// so that Uniform = 100, with Uniform's measured and expected regret as a
// sanity check.
func WriteWheelTable(w io.Writer, cfg WheelConfig, rows []WheelRow) error {
	if len(rows) == 0 {
		return errors.New("wheel: no rows")
	}
	cfg = cfg.withDefaults()
	ew := &errWriter{w: w}
	ew.printf("== wheel bandit (Riquelme, Tucker & Snoek 2018): cumulative regret, Uniform = 100\n")
	ew.printf("   %d steps, mean of %d runs (± standard error), σ = %v, ε = %v\n", cfg.Steps, cfg.Runs, cfg.Sigma, cfg.Epsilon)
	ew.printf("%-16s", "policy")
	for _, r := range rows {
		ew.printf(" %15s", fmt.Sprintf("δ=%v", r.Delta))
	}
	ew.printf("\n")
	for _, name := range wheelPolicies {
		ew.printf("%-16s", name)
		for _, r := range rows {
			se := 0.0
			if u := r.Regret["Uniform"]; u > 0 {
				se = 100 * r.StdErr[name] / u
			}
			ew.printf(" %15s", fmt.Sprintf("%.2f ± %.2f", r.Normalized[name], se))
		}
		ew.printf("\n")
	}
	ew.printf("%-16s", "Uniform measured")
	for _, r := range rows {
		ew.printf(" %15.1f", r.Regret["Uniform"])
	}
	ew.printf("\n%-16s", "Uniform expected")
	for _, r := range rows {
		ew.printf(" %15.1f", r.UniformExpected)
	}
	ew.printf("\n")
	return ew.err
}

type errWriter struct {
	w   io.Writer
	err error
}

func (e *errWriter) printf(format string, args ...any) {
	if e.err == nil {
		_, e.err = fmt.Fprintf(e.w, format, args...)
	}
}
