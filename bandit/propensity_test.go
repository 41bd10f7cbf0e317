package bandit

import (
	"math"
	"math/rand/v2"
	"slices"
	"testing"

	"gonum.org/v1/gonum/integrate/quad"
	"gonum.org/v1/gonum/mathext"
)

// referencePropensity integrates P(score a is the largest) with far more
// panels than the production rule, exact CDFs (math.Erfc, the incomplete
// beta function) and wider truncation. It is slow and only for tests.
func referencePropensity(a int, sc []score) float64 {
	type fn struct {
		cdf, pdf func(z float64) float64
		lo, hi   float64 // standardized truncation points
		knots    []float64
	}
	mk := func(s score) fn {
		if s.t == nil {
			var knots []float64
			for z := -10.0; z <= 10; z += 0.25 {
				knots = append(knots, z)
			}
			return fn{
				cdf: func(z float64) float64 { return 0.5 * math.Erfc(-z/math.Sqrt2) },
				pdf: func(z float64) float64 { return math.Exp(-z*z/2) / math.Sqrt(2*math.Pi) },
				lo:  -10, hi: 10, knots: knots,
			}
		}
		nu := s.t.nu
		cdf := func(z float64) float64 {
			tail := 0.5 * mathext.RegIncBeta(nu/2, 0.5, nu/(nu+z*z))
			if z > 0 {
				return 1 - tail
			}
			return tail
		}
		q := s.t.quantile(1e-15)
		var knots []float64
		for z := 0.0; z <= 4; z += 0.125 {
			knots = append(knots, z, -z)
		}
		for z := 4.0; z < q; z *= 1.1 {
			knots = append(knots, z, -z)
		}
		return fn{cdf: cdf, pdf: s.t.pdf, lo: -q, hi: q, knots: knots}
	}
	fs := make([]fn, len(sc))
	for j := range sc {
		fs[j] = mk(sc[j])
	}
	lo, hi := sc[a].mean+fs[a].lo*sc[a].scale, sc[a].mean+fs[a].hi*sc[a].scale
	for b := range sc {
		if b != a {
			lo = max(lo, sc[b].mean+fs[b].lo*sc[b].scale)
		}
	}
	if lo >= hi {
		return 0
	}
	pts := []float64{lo, hi}
	for j := range sc {
		for _, z := range fs[j].knots {
			if x := sc[j].mean + z*sc[j].scale; x > lo && x < hi {
				pts = append(pts, x)
			}
		}
	}
	slices.Sort(pts)
	var xs, ws [20]float64
	quad.Legendre{}.FixedLocations(xs[:], ws[:], 0, 1)
	sum := 0.0
	for i := 0; i+1 < len(pts); i++ {
		l, r := pts[i], pts[i+1]
		const sub = 2
		h := (r - l) / sub
		for s := 0; s < sub; s++ {
			for g := range xs {
				x := l + float64(s)*h + xs[g]*h
				f := fs[a].pdf((x-sc[a].mean)/sc[a].scale) / sc[a].scale * ws[g] * h
				for b := range sc {
					if b != a && f != 0 {
						f *= fs[b].cdf((x - sc[b].mean) / sc[b].scale)
					}
				}
				sum += f
			}
		}
	}
	return sum
}

// randomScores returns a configuration of 2 to 7 scores in one of several
// regimes; nu > 0 makes them t scores with about nu degrees of freedom.
func randomScores(r *rand.Rand, regime int, tScores bool) []score {
	k := 2 + r.IntN(6)
	sc := make([]score, k)
	for j := range sc {
		switch regime {
		case 0: // similar scales
			sc[j] = score{mean: r.NormFloat64(), scale: 0.5 + r.Float64()}
		case 1: // scales and means over six orders of magnitude
			sc[j] = score{mean: r.NormFloat64() * math.Pow(10, -2+4*r.Float64()), scale: math.Pow(10, -3+6*r.Float64())}
		case 2: // near-ties, narrow against wide
			sc[j] = score{mean: 0.01 * r.NormFloat64(), scale: math.Pow(10, -2+3*r.Float64())}
		case 3: // one dominated arm or more
			sc[j] = score{mean: 3 * r.NormFloat64(), scale: math.Pow(10, -1+2*r.Float64())}
		}
		if tScores {
			nus := []float64{2.5, 4, 7.5, 12, 13, 20, 50, 200, 5000}
			st := newStudent(nus[r.IntN(len(nus))])
			sc[j].t = &st
			sc[j].tail = st.quantile(tailMass)
		}
	}
	return sc
}

func TestPropensityAccuracy(t *testing.T) {
	tests := map[string]struct {
		t     bool
		cases int
		tol   float64
	}{
		"normal":    {t: false, cases: 120, tol: 1e-6},
		"student-t": {t: true, cases: 40, tol: 1e-6},
	}
	for name, tc := range tests {
		t.Run(name, func(t *testing.T) {
			if testing.Short() {
				tc.cases /= 4
			}
			r := rand.New(rand.NewPCG(7, 11))
			worst := 0.0
			for i := 0; i < tc.cases; i++ {
				sc := randomScores(r, i%4, tc.t)
				sum := 0.0
				for a := range sc {
					var got float64
					if tc.t {
						got = studentPropensity(a, sc)
					} else {
						got = normalPropensity(a, sc)
					}
					want := referencePropensity(a, sc)
					worst = max(worst, math.Abs(got-want))
					if !(math.Abs(got-want) <= tc.tol) {
						t.Errorf("case %d arm %d: got %.10f, reference %.10f (scores %+v)", i, a, got, want, sc)
					}
					sum += got
				}
				if math.Abs(sum-1) > float64(len(sc))*tc.tol {
					t.Errorf("case %d: propensities sum to %.10f", i, sum)
				}
			}
			t.Logf("largest error %.2g", worst)
		})
	}
}

func TestPropensityTwoArmsClosedForm(t *testing.T) {
	// With two normal scores P(a) = Φ((mₐ - m_b)/√(cₐ² + c_b²)).
	r := rand.New(rand.NewPCG(1, 2))
	for i := 0; i < 2000; i++ {
		sc := []score{
			{mean: r.NormFloat64(), scale: math.Pow(10, -2+4*r.Float64())},
			{mean: r.NormFloat64(), scale: math.Pow(10, -2+4*r.Float64())},
		}
		want := 0.5 * math.Erfc(-(sc[0].mean-sc[1].mean)/math.Hypot(sc[0].scale, sc[1].scale)/math.Sqrt2)
		if got := normalPropensity(0, sc); math.Abs(got-want) > 1e-6 {
			t.Fatalf("scores %+v: got %.10f, want %.10f", sc, got, want)
		}
	}
}
