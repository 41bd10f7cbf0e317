package bandit

import (
	"math"
	"math/rand/v2"

	"gonum.org/v1/gonum/integrate/quad"
	"gonum.org/v1/gonum/mathext"
)

// This file holds the scalar distributions the sampler and the propensity
// quadrature need: a fast standard normal CDF, the Student-t CDF and density,
// a gamma sampler, and the quadrature rules, all computed once at package
// init and read-only afterwards.

// The standard normal CDF is read from a table of Φ and φ at a spacing of
// 1/64 over [-9, 9] and interpolated with a cubic Hermite polynomial. The
// interpolation error is at most h⁴/384·max|Φ⁗| ≈ 9e-11; outside the table
// Φ is 0 or 1 to within Φ(-9) ≈ 1.1e-19. A table lookup costs about a
// quarter of math.Erfc, and the propensity quadrature evaluates Φ a few
// hundred times per choice.
const (
	cdfTableMax   = 9.0
	cdfTableScale = 64.0
	cdfTableLen   = int(2*cdfTableMax*cdfTableScale) + 2
)

// cdfTable interleaves Φ(xᵢ) and φ(xᵢ)·h for xᵢ = -9 + i/64.
var cdfTable [2 * cdfTableLen]float64

// Quadrature rules (see propensity.go for how they are used).
const (
	legendreOrder = 8
	hermiteOrder  = 24
)

var (
	// legendreX and legendreW are the Gauss–Legendre nodes and weights on [0, 1].
	legendreX, legendreW [legendreOrder]float64
	// hermiteZ and hermiteW are the Gauss–Hermite nodes and weights for the
	// standard normal weight: Σ wᵢ g(zᵢ) ≈ E[g(Z)], Z ~ N(0, 1).
	hermiteZ, hermiteW [hermiteOrder]float64
)

func init() {
	h := 1 / cdfTableScale
	for i := 0; i < cdfTableLen; i++ {
		x := -cdfTableMax + float64(i)*h
		cdfTable[2*i] = 0.5 * math.Erfc(-x/math.Sqrt2)
		cdfTable[2*i+1] = math.Exp(-0.5*x*x) / math.Sqrt(2*math.Pi) * h
	}
	quad.Legendre{}.FixedLocations(legendreX[:], legendreW[:], 0, 1)
	quad.Hermite{}.FixedLocations(hermiteZ[:], hermiteW[:], math.Inf(-1), math.Inf(1))
	for i := range hermiteZ {
		// gonum uses the physicists' weight exp(-x²).
		hermiteZ[i] *= math.Sqrt2
		hermiteW[i] /= math.Sqrt(math.Pi)
	}
}

// normCDF returns Φ(x) with an absolute error below 1e-10. NaN gives 0.
func normCDF(x float64) float64 {
	if !(x > -cdfTableMax) {
		return 0
	}
	if x >= cdfTableMax {
		return 1
	}
	u := (x + cdfTableMax) * cdfTableScale
	i := int(u)
	t := u - float64(i)
	e := cdfTable[2*i : 2*i+4 : 2*i+4]
	y0, d0, y1, d1 := e[0], e[1], e[2], e[3]
	// Cubic Hermite interpolation in Horner form.
	dy := y1 - y0
	return y0 + t*(d0+t*(3*dy-2*d0-d1+t*(d0+d1-2*dy)))
}

// normPDF returns φ(x).
func normPDF(x float64) float64 {
	return math.Exp(-0.5*x*x) * (1 / math.Sqrt(2*math.Pi))
}

// hillMinDoF is the smallest number of degrees of freedom for which
// studentCDF uses Hill's normalizing transformation. Against the regularized
// incomplete beta function its absolute error is below 3e-9 at ν = 8,
// 1e-10 at ν = 12 and at rounding level from ν = 30 (see dist_test.go);
// below ν = 8 studentCDF uses the incomplete beta function, which is exact
// but about six times slower.
const hillMinDoF = 8

// student describes a location-scale Student-t distribution with the
// constants its CDF and density need, precomputed.
type student struct {
	nu      float64 // degrees of freedom
	hillA   float64 // ν - 1/2
	hillB   float64 // 48·(ν - 1/2)²
	logNorm float64 // log Γ((ν+1)/2) - log Γ(ν/2) - log √(νπ)
	expo    float64 // -(ν+1)/2
}

func newStudent(nu float64) student {
	lg1, _ := math.Lgamma((nu + 1) / 2)
	lg2, _ := math.Lgamma(nu / 2)
	a := nu - 0.5
	return student{
		nu:      nu,
		hillA:   a,
		hillB:   48 * a * a,
		logNorm: lg1 - lg2 - 0.5*math.Log(nu*math.Pi),
		expo:    -(nu + 1) / 2,
	}
}

// cdf returns P(T ≤ z) for the standard t distribution.
func (s *student) cdf(z float64) float64 {
	if math.IsNaN(z) {
		return 0
	}
	if s.nu >= hillMinDoF {
		// G. W. Hill, Algorithm 395: Student's t-distribution, CACM 13(10),
		// 1970: the asymptotic series that maps t to a normal deviate y with
		// P(|T| > |t|) = 2Φ(-y).
		y := s.hillA * math.Log1p(z*z/s.nu)
		y = (((((-0.4*y-3.3)*y-24.0)*y-85.5)/(0.8*y*y+100.0+s.hillB)+y+3.0)/s.hillB + 1.0) * math.Sqrt(y)
		if z > 0 {
			return normCDF(y)
		}
		return normCDF(-y)
	}
	if math.IsInf(z, 0) {
		if z > 0 {
			return 1
		}
		return 0
	}
	tail := 0.5 * mathext.RegIncBeta(s.nu/2, 0.5, s.nu/(s.nu+z*z))
	if z > 0 {
		return 1 - tail
	}
	return tail
}

// pdf returns the density of the standard t distribution at z.
func (s *student) pdf(z float64) float64 {
	return math.Exp(s.logNorm + s.expo*math.Log1p(z*z/s.nu))
}

// quantile returns the upper quantile z with P(T > z) = p, for 0 < p < 1/2,
// by bisection on cdf. It is used when a snapshot is built, not per choice.
func (s *student) quantile(p float64) float64 {
	lo, hi := 0.0, 1.0
	for 1-s.cdf(hi) > p && hi < 1e300 {
		lo, hi = hi, hi*2
	}
	for i := 0; i < 200 && hi-lo > 1e-12*hi; i++ {
		mid := 0.5 * (lo + hi)
		if 1-s.cdf(mid) > p {
			lo = mid
		} else {
			hi = mid
		}
	}
	return hi
}

// gammaSampler draws from Gamma(shape, 1) by Marsaglia and Tsang's method
// (ACM TOMS 26(3), 2000), boosting shapes below 1 by U^(1/shape).
type gammaSampler struct {
	shape float64
	d, c  float64 // d = a - 1/3 and c = 1/√(9d) for a = max(shape, shape+1)
	boost bool    // shape < 1
}

func newGammaSampler(shape float64) gammaSampler {
	a := shape
	boost := shape < 1
	if boost {
		a++
	}
	d := a - 1.0/3
	return gammaSampler{shape: shape, d: d, c: 1 / math.Sqrt(9*d), boost: boost}
}

func (g *gammaSampler) sample(rng *rand.Rand) float64 {
	var x float64
	for {
		z := rng.NormFloat64()
		v := 1 + g.c*z
		if v <= 0 {
			continue
		}
		v = v * v * v
		u := rng.Float64()
		if u < 1-0.0331*z*z*z*z || math.Log(u) < 0.5*z*z+g.d*(1-v+math.Log(v)) {
			x = g.d * v
			break
		}
	}
	if g.boost {
		u := rng.Float64()
		for u == 0 {
			u = rng.Float64()
		}
		x *= math.Pow(u, 1/g.shape)
	}
	return x
}
