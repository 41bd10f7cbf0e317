package experiments

import (
	"errors"
	"math"
	"math/rand/v2"
	"testing"

	"gonum.org/v1/gonum/stat/distuv"
)

func near(a, b, tol float64) bool { return math.Abs(a-b) <= tol }

// The published examples of Newcombe (1998): "Two-sided confidence
// intervals for the single proportion" and "Interval estimation for the
// difference between independent proportions" (method 10).
func TestWilsonAndNewcombe(t *testing.T) {
	wilson := map[string]struct {
		k, n   int64
		lo, hi float64
	}{
		"81/263": {81, 263, 0.2553, 0.3662},
		"0/10":   {0, 10, 0, 0.2775},
		"10/10":  {10, 10, 0.7225, 1},
	}
	for name, c := range wilson {
		iv, err := Wilson(c.k, c.n, Z95)
		if err != nil || !near(iv.Lo, c.lo, 5e-5) || !near(iv.Hi, c.hi, 5e-5) {
			t.Errorf("Wilson %s = %v, %v; want [%v, %v]", name, iv, err, c.lo, c.hi)
		}
	}
	diff := map[string]struct {
		k1, n1, k2, n2 int64
		lo, hi         float64
	}{
		"56/70-48/80": {56, 70, 48, 80, 0.0524, 0.3339},
		"9/10-3/10":   {9, 10, 3, 10, 0.1705, 0.8090},
		"5/56-0/29":   {5, 56, 0, 29, -0.0381, 0.1926},
	}
	for name, c := range diff {
		iv, err := DiffProportions(c.k1, c.n1, c.k2, c.n2, Z95)
		if err != nil || !near(iv.Lo, c.lo, 5e-5) || !near(iv.Hi, c.hi, 5e-5) {
			t.Errorf("DiffProportions %s = %v, %v; want [%v, %v]", name, iv, err, c.lo, c.hi)
		}
	}
	if iv, err := Wilson(0, 0, Z95); err != nil || iv.Lo != 0 || iv.Hi != 1 {
		t.Errorf("no trials: %v, %v", iv, err)
	}
	for name, f := range map[string]func() error{
		"more successes than trials": func() error { _, err := Wilson(3, 2, Z95); return err },
		"negative trials":            func() error { _, err := Wilson(0, -1, Z95); return err },
		"NaN z":                      func() error { _, err := Wilson(1, 2, math.NaN()); return err },
		"difference without trials":  func() error { _, err := DiffProportions(0, 0, 1, 2, Z95); return err },
	} {
		if err := f(); !errors.Is(err, ErrCounts) {
			t.Errorf("%s: %v, want ErrCounts", name, err)
		}
	}
}

// TestWilsonCoverage: the 95% interval holds the true rate in about 95% of
// samples, even for a small rate, which is where the normal approximation
// fails.
func TestWilsonCoverage(t *testing.T) {
	r := rand.New(rand.NewPCG(7, 7))
	const p, n, runs = 0.01, 500, 2000
	covered := 0
	for range runs {
		var k int64
		for range n {
			if r.Float64() < p {
				k++
			}
		}
		iv, _ := Wilson(k, n, Z95)
		if iv.Lo <= p && p <= iv.Hi {
			covered++
		}
	}
	if c := float64(covered) / runs; c < 0.92 {
		t.Errorf("coverage %.3f, want about 0.95", c)
	}
}

func TestSRM(t *testing.T) {
	weights := []float64{0.5, 0.3, 0.2}
	// A fair log: drawn from the weights.
	r := rand.New(rand.NewPCG(3, 4))
	fair := make([]int64, 3)
	for range 100_000 {
		x := r.Float64()
		switch {
		case x < 0.5:
			fair[0]++
		case x < 0.8:
			fair[1]++
		default:
			fair[2]++
		}
	}
	chi2, p := SRM(fair, weights)
	if p < 0.001 {
		t.Errorf("fair log %v flagged: χ² %.2f, p %.3g", fair, chi2, p)
	}
	if want := (distuv.ChiSquared{K: 2}).Survival(chi2); !near(p, want, 1e-12) {
		t.Errorf("p = %v, gonum's χ²(2) survival = %v", p, want)
	}
	// A skewed log: 5% of the third variant's units lost (a logging bug).
	skewed := []int64{50_000, 30_000, 19_000}
	if chi2, p := SRM(skewed, weights); p >= 0.001 {
		t.Errorf("skewed log %v not flagged: χ² %.2f, p %.3g", skewed, chi2, p)
	}
	// Weight 0: no degree of freedom, and any unit there is a mismatch.
	if _, p := SRM([]int64{500, 500, 0}, []float64{1, 1, 0}); p < 0.5 {
		t.Errorf("zero-weight variant with no units: p %v", p)
	}
	if chi2, p := SRM([]int64{500, 500, 1}, []float64{1, 1, 0}); !math.IsInf(chi2, 1) || p != 0 {
		t.Errorf("zero-weight variant with units: %v, %v", chi2, p)
	}
	for name, c := range map[string]struct {
		counts  []int64
		weights []float64
	}{
		"lengths differ":  {[]int64{1, 2}, []float64{1}},
		"negative count":  {[]int64{-1, 2}, []float64{1, 1}},
		"NaN weight":      {[]int64{1, 2}, []float64{math.NaN(), 1}},
		"one variant":     {[]int64{1, 2}, []float64{1, 0}},
		"no units":        {[]int64{0, 0}, []float64{1, 1}},
		"negative weight": {[]int64{1, 2}, []float64{-1, 1}},
	} {
		if chi2, p := SRM(c.counts, c.weights); !math.IsNaN(chi2) || !math.IsNaN(p) {
			t.Errorf("%s: %v, %v; want NaN", name, chi2, p)
		}
	}
}

// TestSRMOnAssignments: units assigned by an Assigner pass the SRM check
// against its Shares.
func TestSRMOnAssignments(t *testing.T) {
	a := mustAssigner(t, threeVariants)
	counts := make([]int64, 3)
	for i := range 200_000 {
		as, _ := a.Primary(Unit{Key: key(i)})
		counts[as.VariantIndex]++
	}
	if chi2, p := SRM(counts, a.Shares("e1")); p < 0.001 {
		t.Errorf("counts %v vs shares %v: χ² %.2f, p %.3g", counts, a.Shares("e1"), chi2, p)
	}
}
