package experiments

import (
	"errors"
	"fmt"
	"math"

	"gonum.org/v1/gonum/mathext"
)

// Z95 is the standard normal quantile of a two-sided 95% interval.
const Z95 = 1.959963984540054

// An Interval is an estimate with a confidence interval [Lo, Hi].
type Interval struct {
	Estimate float64 `json:"estimate"`
	Lo       float64 `json:"lo"`
	Hi       float64 `json:"hi"`
}

func (iv Interval) String() string {
	return fmt.Sprintf("%.4g [%.4g, %.4g]", iv.Estimate, iv.Lo, iv.Hi)
}

// ErrCounts is wrapped by the errors of Wilson and DiffProportions.
var ErrCounts = errors.New("invalid counts")

func checkCounts(successes, trials int64, z float64) error {
	if trials < 0 || successes < 0 || successes > trials {
		return fmt.Errorf("%w: %d successes in %d trials", ErrCounts, successes, trials)
	}
	if !(z > 0) || math.IsInf(z, 0) {
		return fmt.Errorf("%w: z %v must be finite and positive", ErrCounts, z)
	}
	return nil
}

// Wilson returns the proportion successes/trials with its Wilson score
// interval at normal quantile z (Z95 for 95%). Unlike the normal
// approximation it stays inside [0, 1] and is sound near 0, which is where
// throttle rates live. With no trials it returns [0, 1] around 0.
func Wilson(successes, trials int64, z float64) (Interval, error) {
	if err := checkCounts(successes, trials, z); err != nil {
		return Interval{}, err
	}
	if trials == 0 {
		return Interval{Estimate: 0, Lo: 0, Hi: 1}, nil
	}
	n := float64(trials)
	p := float64(successes) / n
	z2 := z * z
	denom := 1 + z2/n
	center := (p + z2/(2*n)) / denom
	half := z / denom * math.Sqrt(p*(1-p)/n+z2/(4*n*n))
	iv := Interval{Estimate: p, Lo: max(center-half, 0), Hi: min(center+half, 1)}
	if successes == 0 {
		iv.Lo = 0
	}
	if successes == trials {
		iv.Hi = 1
	}
	return iv, nil
}

// DiffProportions returns p₁ − p₂ = k1/n1 − k2/n2 (a variant's rate minus
// the control's) with Newcombe's hybrid score interval (Newcombe 1998,
// method 10), built from the two Wilson intervals at quantile z. Both n
// must be positive.
func DiffProportions(k1, n1, k2, n2 int64, z float64) (Interval, error) {
	a, err := Wilson(k1, n1, z)
	if err != nil {
		return Interval{}, err
	}
	b, err := Wilson(k2, n2, z)
	if err != nil {
		return Interval{}, err
	}
	if n1 == 0 || n2 == 0 {
		return Interval{}, fmt.Errorf("%w: a difference needs trials on both sides (%d and %d)", ErrCounts, n1, n2)
	}
	d := a.Estimate - b.Estimate
	return Interval{
		Estimate: d,
		Lo:       d - math.Hypot(a.Estimate-a.Lo, b.Hi-b.Estimate),
		Hi:       d + math.Hypot(a.Hi-a.Estimate, b.Estimate-b.Lo),
	}, nil
}

// SRM tests for a sample-ratio mismatch: Pearson's χ² of the observed unit
// counts per variant against the shares the weights imply, and its p-value
// with (variants − 1) degrees of freedom. A tiny p (say < 0.001) means the
// assignment or the logging is broken and the experiment's results cannot
// be trusted. Pass Assigner.Shares as the weights: over many units the
// counts follow the realized bucket shares, which differ slightly from the
// configured weights.
//
// A variant with weight 0 adds no degree of freedom; if it has units, χ²
// is +Inf and p is 0. Invalid input (lengths differ, a negative count, a
// negative, NaN or infinite weight, no positive weight, fewer than two
// variants with positive weight, or no units) gives NaN, NaN.
func SRM(counts []int64, weights []float64) (chi2, p float64) {
	nan := math.NaN()
	if len(counts) != len(weights) {
		return nan, nan
	}
	var total int64
	var wsum float64
	df := -1
	for i, c := range counts {
		w := weights[i]
		if c < 0 || !(w >= 0) || math.IsInf(w, 0) {
			return nan, nan
		}
		total += c
		wsum += w
		if w > 0 {
			df++
		}
	}
	if df < 1 || total == 0 {
		return nan, nan
	}
	for i, c := range counts {
		expected := float64(total) * weights[i] / wsum
		if expected == 0 {
			if c > 0 {
				return math.Inf(1), 0
			}
			continue
		}
		d := float64(c) - expected
		chi2 += d * d / expected
	}
	return chi2, chiSquareSurvival(chi2, float64(df))
}

// chiSquareSurvival returns P(X > x) for X ~ χ²(df).
func chiSquareSurvival(x, df float64) float64 {
	if x <= 0 {
		return 1
	}
	return mathext.GammaIncRegComp(df/2, x/2)
}
