package bandit

import (
	"errors"
	"math"
	"math/rand/v2"
	"testing"
	"time"
)

// TestPropensityMatchesFrequency draws 100k choices for fixed contexts and
// compares each arm's empirical frequency with the propensity the policy
// reports for it.
func TestPropensityMatchesFrequency(t *testing.T) {
	const draws = 100_000
	gauss, lp := trainedSnapshot(t, Gaussian, 4, 5, 300, 3)
	nig, _ := trainedSnapshot(t, NormalInverseGamma, 4, 5, 300, 3)
	prior, _ := trainedSnapshot(t, Gaussian, 4, 5, 0, 3)
	policies := map[string]Policy{
		"lints trained":  gauss,
		"lints prior":    prior,
		"nig trained":    nig,
		"epsilon-greedy": EpsilonGreedy{Snapshot: gauss, Epsilon: 0.1},
		"lints ×3 scale": Scaled{Snapshot: gauss, Factor: 3},
		"nig ×0.3 scale": Scaled{Snapshot: nig, Factor: 0.3},
		"uniform":        Uniform{Arms: gauss.Arms()},
	}
	ranges := map[string]ArmRange{"all": {0, 5}, "middle three": {1, 4}, "one": {2, 3}}
	xs := benchContexts(lp, 2)
	for name, pol := range policies {
		for rname, allowed := range ranges {
			t.Run(name+"/"+rname, func(t *testing.T) {
				r := rand.New(rand.NewPCG(42, 43))
				for xi, x := range xs {
					var counts [5]int
					for i := 0; i < draws; i++ {
						c, err := pol.Choose(x, allowed, r)
						if err != nil {
							t.Fatal(err)
						}
						counts[c.Arm]++
						if i < 200 {
							want, _ := pol.Probability(x, allowed, c.Arm)
							if c.Propensity != max(want, MinPropensity) {
								t.Fatalf("choice reports propensity %v, Probability says %v", c.Propensity, want)
							}
						}
					}
					sum := 0.0
					for a := 0; a < 5; a++ {
						p, err := pol.Probability(x, allowed, a)
						if err != nil {
							t.Fatal(err)
						}
						sum += p
						freq := float64(counts[a]) / draws
						if math.Abs(freq-p) > 0.01 {
							t.Errorf("context %d arm %d: frequency %.4f, propensity %.4f", xi, a, freq, p)
						}
						if !allowed.Contains(a) && (p != 0 || counts[a] != 0) {
							t.Errorf("context %d arm %d outside the range: p=%v, chosen %d times", xi, a, p, counts[a])
						}
					}
					if math.Abs(sum-1) > 1e-5 {
						t.Errorf("context %d: propensities sum to %v", xi, sum)
					}
					if allowed.Len() == 1 {
						if p, _ := pol.Probability(x, allowed, allowed.Lo); p != 1 {
							t.Errorf("only arm allowed has propensity %v, want 1", p)
						}
					}
				}
			})
		}
	}
}

// regretCurve runs a policy built from each snapshot on a linear problem
// and returns the cumulative pseudo-regret (best expected reward minus the
// chosen arm's) after each step.
func regretCurve(t *testing.T, post Posterior, steps int, seed uint64) []float64 {
	t.Helper()
	r := rand.New(rand.NewPCG(seed, 99))
	lp := newLinearProblem(r, 4, 5, 0.5)
	l, err := NewLearner(Config{Arms: benchArms(5), Dim: 4, Posterior: post, Scale: 0.5})
	if err != nil {
		t.Fatal(err)
	}
	snap, _ := l.Snapshot(time.Time{})
	curve := make([]float64, steps)
	x := make([]float64, 4)
	total := 0.0
	for i := 0; i < steps; i++ {
		lp.context(r, x)
		c, err := snap.Choose(x, ArmRange{0, 5}, r)
		if err != nil {
			t.Fatal(err)
		}
		best := math.Inf(-1)
		for a := 0; a < 5; a++ {
			best = max(best, lp.mean(a, x))
		}
		total += best - lp.mean(c.Arm, x)
		curve[i] = total
		if err := l.Update(x, c.Arm, lp.reward(r, c.Arm, x)); err != nil {
			t.Fatal(err)
		}
		if i%10 == 9 {
			snap, _ = l.Snapshot(time.Time{})
		}
	}
	return curve
}

// TestRegretIsSublinear checks that Thompson sampling learns: over 4T steps
// regret grows far slower than linearly, regret(4T)/regret(T) < 2.5 (a
// linear policy has 4).
func TestRegretIsSublinear(t *testing.T) {
	const T, seeds = 1000, 6
	for _, post := range []Posterior{Gaussian, NormalInverseGamma} {
		t.Run(post.String(), func(t *testing.T) {
			var atT, at4T float64
			for s := uint64(1); s <= seeds; s++ {
				c := regretCurve(t, post, 4*T, s)
				atT += c[T-1]
				at4T += c[4*T-1]
			}
			ratio := at4T / atT
			t.Logf("mean regret over %d seeds: %.1f at T=%d, %.1f at 4T; ratio %.2f", seeds, atT/seeds, T, at4T/seeds, ratio)
			if !(ratio < 2.5) {
				t.Errorf("regret(4T)/regret(T) = %.2f, want < 2.5", ratio)
			}
		})
	}
}

// TestChoiceStaysWithinBounds checks, over random floors, ceilings and
// contexts (extreme ones included), that no policy picks an arm outside
// [floor, ceiling].
func TestChoiceStaysWithinBounds(t *testing.T) {
	snap, _ := trainedSnapshot(t, Gaussian, 3, 6, 200, 8)
	nig, _ := trainedSnapshot(t, NormalInverseGamma, 3, 6, 200, 8)
	arms := snap.Arms() // multipliers 1..6
	r := rand.New(rand.NewPCG(8, 8))
	policies := []Policy{snap, nig, EpsilonGreedy{Snapshot: snap, Epsilon: 0.5}, Uniform{Arms: arms}}
	for i := 0; i < 20000; i++ {
		floor := r.Float64() * 7
		ceiling := floor + r.Float64()*4
		allowed, err := arms.Allowed(floor, ceiling)
		if err != nil {
			if !errors.Is(err, ErrNoArm) {
				t.Fatal(err)
			}
			for _, a := range arms {
				if a.Multiplier >= floor && a.Multiplier <= ceiling {
					t.Fatalf("[%v, %v]: ErrNoArm, but %s fits", floor, ceiling, a.Name)
				}
			}
			continue
		}
		x := []float64{r.NormFloat64() * math.Pow(10, float64(r.IntN(7))), r.NormFloat64(), -r.Float64() * 1e3}
		c, err := policies[i%len(policies)].Choose(x, allowed, r)
		if err != nil {
			t.Fatal(err)
		}
		if c.Multiplier < floor || c.Multiplier > ceiling || !allowed.Contains(c.Arm) {
			t.Fatalf("policy %d chose %s (x%v) outside [%v, %v]", i%len(policies), c.Name, c.Multiplier, floor, ceiling)
		}
		if !(c.Propensity > 0 && c.Propensity <= 1) {
			t.Fatalf("propensity %v", c.Propensity)
		}
	}
	if _, err := snap.Choose([]float64{0, 0, 0}, ArmRange{}, r); !errors.Is(err, ErrNoArm) {
		t.Errorf("empty range: %v, want ErrNoArm", err)
	}
	if _, err := snap.Choose([]float64{0, 0, 0}, ArmRange{4, 9}, r); !errors.Is(err, ErrUnknownArm) {
		t.Errorf("range past the arms: %v, want ErrUnknownArm", err)
	}
	if _, err := arms.Allowed(3, 2); err == nil {
		t.Error("floor above ceiling accepted")
	}
	if _, err := arms.Allowed(math.NaN(), 2); err == nil {
		t.Error("NaN floor accepted")
	}
}

func TestSameSeedSameChoices(t *testing.T) {
	run := func(seed uint64) []int {
		r := rand.New(rand.NewPCG(seed, seed))
		lp := newLinearProblem(rand.New(rand.NewPCG(1, 1)), 3, 4, 0.2)
		l, _ := NewLearner(Config{Arms: benchArms(4), Dim: 3, Posterior: NormalInverseGamma})
		snap, _ := l.Snapshot(time.Time{})
		var arms []int
		x := make([]float64, 3)
		for i := 0; i < 2000; i++ {
			lp.context(r, x)
			c, err := snap.Choose(x, ArmRange{0, 4}, r)
			if err != nil {
				t.Fatal(err)
			}
			arms = append(arms, c.Arm)
			l.Update(x, c.Arm, lp.reward(r, c.Arm, x))
			if i%20 == 19 {
				snap, _ = l.Snapshot(time.Time{})
			}
		}
		return arms
	}
	a, b, c := run(7), run(7), run(8)
	differ := 0
	for i := range a {
		if a[i] != b[i] {
			t.Fatalf("seed 7 twice: choice %d differs (%d vs %d)", i, a[i], b[i])
		}
		if a[i] != c[i] {
			differ++
		}
	}
	if differ == 0 {
		t.Fatal("seeds 7 and 8 gave the same 2000 choices")
	}
}

func TestChooseDoesNotAllocate(t *testing.T) {
	for _, post := range []Posterior{Gaussian, NormalInverseGamma} {
		snap, lp := trainedSnapshot(t, post, 16, 7, 500, 1)
		x := benchContexts(lp, 1)[0]
		r := rand.New(rand.NewPCG(1, 1))
		all := snap.arms.All()
		if n := testing.AllocsPerRun(200, func() { snap.Choose(x, all, r) }); n != 0 {
			t.Errorf("%v: Choose allocates %v times", post, n)
		}
		eg := EpsilonGreedy{Snapshot: snap, Epsilon: 0.1}
		if n := testing.AllocsPerRun(200, func() { eg.Choose(x, all, r) }); n != 0 {
			t.Errorf("epsilon-greedy allocates %v times", n)
		}
	}
}

func TestExplain(t *testing.T) {
	snap, lp := trainedSnapshot(t, Gaussian, 4, 5, 400, 2)
	x := benchContexts(lp, 1)[0]
	ex, err := snap.Explain(x, ArmRange{1, 5})
	if err != nil {
		t.Fatal(err)
	}
	if len(ex) != 4 {
		t.Fatalf("%d arms explained, want 4", len(ex))
	}
	sum := 0.0
	for _, e := range ex {
		sum += e.Probability
		post, _ := snap.ArmPosterior(e.Arm)
		if e.Count != post.Count || e.Name != snap.Arm(e.Arm).Name {
			t.Errorf("arm %d: %+v", e.Arm, e)
		}
		if want := lp.mean(e.Arm, x); post.Count > 50 && math.Abs(e.Mean-want) > 0.3 {
			t.Errorf("arm %d: posterior mean %.3f after %d updates, true mean %.3f", e.Arm, e.Mean, post.Count, want)
		}
	}
	if math.Abs(sum-1) > 1e-6 {
		t.Errorf("probabilities sum to %v", sum)
	}
}

func TestCurrentRefusesOlderSnapshots(t *testing.T) {
	l, _ := NewLearner(Config{Dim: 1, ModelID: "m"})
	s1, _ := l.Snapshot(time.Time{})
	s2, _ := l.Snapshot(time.Time{})
	other, _ := NewLearner(Config{Dim: 1, ModelID: "other"})
	o1, _ := other.Snapshot(time.Time{})
	var c Current
	if c.Load() != nil {
		t.Fatal("zero Current holds a snapshot")
	}
	if err := c.Store(s2); err != nil {
		t.Fatal(err)
	}
	if err := c.Store(s1); !errors.Is(err, ErrStaleSnapshot) || c.Load() != s2 {
		t.Fatalf("older version: %v, holding v%d", err, c.Load().Version())
	}
	if err := c.Store(s2); !errors.Is(err, ErrStaleSnapshot) {
		t.Fatalf("same version: %v", err)
	}
	if err := c.Store(o1); err != nil || c.Load() != o1 {
		t.Fatalf("another model: %v", err)
	}
	if err := c.Store(nil); err == nil {
		t.Fatal("nil accepted")
	}

	// Readers never see a torn or older snapshot while a writer swaps.
	var cur Current
	done := make(chan struct{})
	go func() {
		defer close(done)
		for i := 0; i < 200; i++ {
			s, _ := l.Snapshot(time.Time{})
			if err := cur.Store(s); err != nil {
				t.Error(err)
				return
			}
		}
	}()
	last := uint64(0)
	for {
		select {
		case <-done:
			return
		default:
		}
		if s := cur.Load(); s != nil {
			if s.Version() < last {
				t.Fatalf("version went back from %d to %d", last, s.Version())
			}
			last = s.Version()
			if _, err := s.Choose([]float64{1}, s.arms.All(), rand.New(rand.NewPCG(1, 1))); err != nil {
				t.Fatal(err)
			}
		}
	}
}
