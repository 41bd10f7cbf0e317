package bandit

import "math"

// Propensity by one-dimensional quadrature.
//
// Thompson sampling draws one score sⱼ per allowed arm, independently, and
// picks the largest. The probability that arm a wins is
//
//	P(a) = ∫ fₐ(s) ∏_{b≠a} F_b(s) ds
//
// where fₐ is the density of arm a's score and F_b the CDF of arm b's. The
// scores are normal (Gaussian posterior) or location-scale Student-t
// (Normal-inverse-gamma posterior).
//
// Truncation. The integral runs over [lo, hi]: hi is arm a's upper tail
// point and lo the largest of the arms' lower tail points (below it some
// F_b is negligible). An arm whose upper tail point is below lo has F_b ≈ 1
// on the whole range and is dropped. Tail points sit 6.5 standard deviations
// out for normal scores (Φ(-6.5) = 4e-11) and at the 1-1e-11 quantile for
// t scores, so truncation changes P(a) by at most (k+1)·4e-11.
//
// Rules. When no other arm's score is narrower than arm a's, the integrand
// is smooth on the scale of arm a and a 24-point Gauss–Hermite rule in arm
// a's standardized score is used. Otherwise (a narrow arm makes F_b a steep
// step) the range is cut into panels no wider than 3.25 local scale units of
// the narrowest function still varying on it, and each panel gets an
// 8-point Gauss–Legendre rule; a panel ends where the narrowest function
// stops varying. For t scores the local scale unit grows with the distance
// from the center, s·√(1+z²/ν), which keeps the number of panels in the
// heavy tails logarithmic.
//
// Error. Over the randomized and adversarial configurations of
// propensity_test.go (2 to 7 arms, scales spread over six orders of
// magnitude, near-ties, dominated arms) the largest absolute error against
// a fine reference integration is below 1e-6 for normal scores and below
// 2e-6 for t scores, and the tests assert these bounds. The issue asks for
// 0.01.
const (
	tailSigmas     = 6.5
	tailMass       = 1e-11
	panelUnits     = 3.25
	tPanelUnits    = 2.5
	maxPanelSplits = 8
	maxPanels      = 4096
)

// score is one arm's score distribution for one context: location mean,
// scale, and for t scores the distribution and the standardized tail point.
type score struct {
	mean  float64
	scale float64
	t     *student // nil for a normal score
	tail  float64  // tail point in scale units
}

// normalPropensity returns P(arm a has the largest score) when every score
// is normal. scores must have at least one element; scales must be positive.
func normalPropensity(a int, scores []score) float64 {
	k := len(scores)
	if k == 1 {
		return 1
	}
	ma, ca := scores[a].mean, scores[a].scale
	lo, hi := ma-tailSigmas*ca, ma+tailSigmas*ca
	for b := range scores {
		if b != a {
			if l := scores[b].mean - tailSigmas*scores[b].scale; l > lo {
				lo = l
			}
		}
	}
	if !(lo < hi) {
		return 0
	}
	// Factors that still vary on [lo, hi]: mean, 1/scale, scale, end.
	var fm, fi, fc, fe [MaxArms]float64
	n := 0
	narrow := false
	for b := range scores {
		if b == a {
			continue
		}
		sb := &scores[b]
		e := sb.mean + tailSigmas*sb.scale
		if e <= lo {
			continue
		}
		fm[n], fi[n], fc[n], fe[n] = sb.mean, 1/sb.scale, sb.scale, e
		if sb.scale < ca {
			narrow = true
		}
		n++
	}
	ia := 1 / ca
	if n == 0 {
		return normCDF((hi-ma)*ia) - normCDF((lo-ma)*ia)
	}
	if !narrow {
		// Gauss–Hermite in z = (s - ma)/ca. Nodes below lo contribute less
		// than Φ(-6.5) each and are skipped.
		zlo := (lo - ma) * ia
		sum := 0.0
		for i, z := range hermiteZ {
			if z < zlo {
				continue
			}
			s := ma + ca*z
			f := hermiteW[i]
			for j := 0; j < n; j++ {
				f *= normCDF((s - fm[j]) * fi[j])
			}
			sum += f
		}
		return sum
	}
	sum := 0.0
	s := lo
	for panels := 0; s < hi; panels++ {
		if panels > maxPanels {
			return math.NaN()
		}
		// The panel ends where the narrowest varying function stops varying.
		unit, end := ca, hi
		for j := 0; j < n; j++ {
			if fe[j] > s && fc[j] < unit {
				unit, end = fc[j], fe[j]
			}
		}
		if end > hi {
			end = hi
		}
		w := end - s
		splits := int(math.Ceil(w / (panelUnits * unit)))
		splits = min(max(splits, 1), maxPanelSplits)
		h := w / float64(splits)
		for p := 0; p < splits; p++ {
			left := s + float64(p)*h
			part := 0.0
			for g, u := range legendreX {
				x := left + u*h
				z := (x - ma) * ia
				f := legendreW[g] * math.Exp(-0.5*z*z)
				for j := 0; j < n; j++ {
					if x < fe[j] {
						f *= normCDF((x - fm[j]) * fi[j])
					}
				}
				part += f
			}
			sum += part * h
		}
		s = end
	}
	return sum * ia * (1 / math.Sqrt(2*math.Pi))
}

// studentPropensity returns P(arm a has the largest score) when every score
// is a location-scale t. Each score's t and tail must be set.
func studentPropensity(a int, scores []score) float64 {
	k := len(scores)
	if k == 1 {
		return 1
	}
	sa := &scores[a]
	ma, ca := sa.mean, sa.scale
	lo, hi := ma-sa.tail*ca, ma+sa.tail*ca
	for b := range scores {
		if b != a {
			if l := scores[b].mean - scores[b].tail*scores[b].scale; l > lo {
				lo = l
			}
		}
	}
	if !(lo < hi) {
		return 0
	}
	var idx [MaxArms]int
	var fe [MaxArms]float64
	n := 0
	for b := range scores {
		if b == a {
			continue
		}
		e := scores[b].mean + scores[b].tail*scores[b].scale
		if e <= lo {
			continue
		}
		idx[n], fe[n] = b, e
		n++
	}
	ia := 1 / ca
	if n == 0 {
		return sa.t.cdf((hi-ma)*ia) - sa.t.cdf((lo-ma)*ia)
	}
	sum := 0.0
	s := lo
	for panels := 0; s < hi; panels++ {
		if panels > maxPanels {
			return math.NaN()
		}
		g := panelStep(sa, s)
		for j := 0; j < n; j++ {
			if fe[j] > s {
				g = min(g, panelStep(&scores[idx[j]], s))
			}
		}
		end := min(s+g, hi)
		w := end - s
		part := 0.0
		for q, u := range legendreX {
			x := s + u*w
			f := legendreW[q] * sa.t.pdf((x-ma)*ia)
			for j := 0; j < n; j++ {
				if x < fe[j] {
					sb := &scores[idx[j]]
					f *= sb.t.cdf((x - sb.mean) / sb.scale)
				}
			}
			part += f
		}
		sum += part * w
		s = end
	}
	return sum * ia
}

// panelStep returns the widest panel [x, x+h] over which t score sc varies
// by at most tPanelUnits local units, its local unit at z standard units from
// the center being √(1+z²/ν): the distance to the density's complex poles
// ±i√ν, in units of √ν. The local unit shrinks toward the center, so when
// the center is ahead h solves h = tPanelUnits·unit(x+h).
func panelStep(sc *score, x float64) float64 {
	u := tPanelUnits
	y := (sc.mean - x) / sc.scale // distance to the center, in scale units
	nu := sc.t.nu
	if y <= u {
		// The center is behind or within reach, where the unit is smallest.
		return u * sc.scale * math.Sqrt(1+max(-y, 0)*max(-y, 0)/nu)
	}
	// Root in [0, y] of (1-u²/ν)k² + (2u²y/ν)k - u²(1+y²/ν) = 0, written to
	// stay accurate for either sign of the leading coefficient.
	a := 1 - u*u/nu
	b := 2 * u * u * y / nu
	c := -u * u * (1 + y*y/nu)
	k := -2 * c / (b + math.Sqrt(max(b*b-4*a*c, 0)))
	return sc.scale * min(k, y)
}

func clamp(v, lo, hi float64) float64 {
	return min(max(v, lo), hi)
}
