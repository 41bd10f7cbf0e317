package bandit

import (
	"errors"
	"fmt"
	"math"
	"time"
)

// A Snapshot is an immutable posterior: everything Choose needs, plus the
// sufficient statistics it was built from, so that a learner can restart
// from it. All methods are safe for concurrent use. Serving holds the
// current snapshot in a Current and swaps in new ones without locks.
type Snapshot struct {
	modelID   string
	schema    uint64
	version   uint64
	created   time.Time
	posterior Posterior
	dim       int
	intercept bool
	p         int
	lambda    float64
	scale     float64
	a0, b0    float64
	arms      ArmSet
	models    []*armModel
}

// armModel is one arm's statistics and what sampling needs from them.
type armModel struct {
	n     uint64
	gram  []float64 // Σ xxᵀ, packed lower, p(p+1)/2
	f     []float64 // Σ r·x, p
	sumR2 float64   // Σ r²

	mean []float64 // μ = B⁻¹f
	inv  []float64 // L⁻¹ for B = λI + Σxxᵀ = LLᵀ, packed lower

	// scale2 is the score variance per unit of xᵀB⁻¹x: v² (Gaussian) or
	// v²·bₙ/aₙ, the squared t scale (NormalInverseGamma).
	scale2 float64

	// Normal-inverse-gamma only.
	shape, rate float64 // aₙ = a₀ + n/2, bₙ = b₀ + (Σr² - fᵀμ)/2
	t           student // t with 2aₙ degrees of freedom
	tail        float64 // upper tailMass quantile of t
	gamma       gammaSampler
}

func newSnapshotShell(c Config, version uint64, created time.Time) *Snapshot {
	return &Snapshot{
		modelID:   c.ModelID,
		schema:    c.Schema,
		version:   version,
		created:   created,
		posterior: c.Posterior,
		dim:       c.Dim,
		intercept: !c.NoIntercept,
		p:         c.features(),
		lambda:    c.Lambda,
		scale:     c.Scale,
		a0:        c.PriorShape,
		b0:        c.PriorRate,
		arms:      c.Arms.clone(),
		models:    make([]*armModel, len(c.Arms)),
	}
}

var errNotPD = errors.New("precision matrix is not positive definite")

// buildArm factorizes one arm's statistics. gramC and fC are compensation
// terms added to gram and f (nil when there are none).
func (s *Snapshot) buildArm(n uint64, gram, gramC, f, fC []float64, sumR2 float64) (*armModel, error) {
	p := s.p
	m := packedLen(p)
	buf := make([]float64, 3*m+2*p)
	am := &armModel{
		n:     n,
		gram:  buf[:m:m],
		inv:   buf[m : 2*m : 2*m],
		f:     buf[3*m : 3*m+p : 3*m+p],
		mean:  buf[3*m+p:],
		sumR2: sumR2,
	}
	l := buf[2*m : 3*m : 3*m]
	copy(am.gram, gram)
	for i := range gramC {
		am.gram[i] += gramC[i]
	}
	copy(am.f, f)
	for i := range fC {
		am.f[i] += fC[i]
	}
	for _, v := range am.gram {
		if math.IsNaN(v) || math.IsInf(v, 0) {
			return nil, fmt.Errorf("%w: non-finite entry", errNotPD)
		}
	}
	for i, v := range am.f {
		if math.IsNaN(v) || math.IsInf(v, 0) {
			return nil, fmt.Errorf("reward sum %d is %v", i, v)
		}
	}
	if math.IsNaN(sumR2) || math.IsInf(sumR2, 0) || sumR2 < 0 {
		return nil, fmt.Errorf("sum of squared rewards is %v", sumR2)
	}
	if j := cholesky(l, am.gram, s.lambda, p); j >= 0 {
		return nil, fmt.Errorf("%w (pivot %d)", errNotPD, j)
	}
	invertLower(am.inv, l, p)
	solveCholesky(am.mean, l, am.f, p)
	for _, v := range am.inv {
		if math.IsNaN(v) || math.IsInf(v, 0) {
			return nil, fmt.Errorf("%w: inverse factor overflows", errNotPD)
		}
	}
	for _, v := range am.mean {
		if math.IsNaN(v) || math.IsInf(v, 0) {
			return nil, fmt.Errorf("posterior mean overflows")
		}
	}
	am.scale2 = s.scale * s.scale
	if s.posterior == NormalInverseGamma {
		fmu := 0.0
		for i, v := range am.f {
			fmu += v * am.mean[i]
		}
		// Σr² - fᵀμ is the ridge residual, ≥ 0 up to rounding.
		am.shape = s.a0 + float64(n)/2
		am.rate = s.b0 + 0.5*max(sumR2-fmu, 0)
		am.scale2 *= am.rate / am.shape
		am.t = newStudent(2 * am.shape)
		am.tail = am.t.quantile(tailMass)
		am.gamma = newGammaSampler(am.shape)
		if math.IsInf(am.scale2, 0) || math.IsInf(am.tail, 0) {
			return nil, fmt.Errorf("noise scale overflows")
		}
	}
	return am, nil
}

// ModelID returns the model's name.
func (s *Snapshot) ModelID() string { return s.modelID }

// Schema is the fingerprint of the feature schema the model's contexts
// come from (Config.Schema); 0 when unknown.
func (s *Snapshot) Schema() uint64 { return s.schema }

// Version returns the snapshot's version; a learner numbers its snapshots
// 1, 2, 3, ...
func (s *Snapshot) Version() uint64 { return s.version }

// Created returns the creation time the learner was given.
func (s *Snapshot) Created() time.Time { return s.created }

// Kind returns the posterior model.
func (s *Snapshot) Kind() Posterior { return s.posterior }

// Dim returns the number of context features.
func (s *Snapshot) Dim() int { return s.dim }

// Arms returns a copy of the arm set.
func (s *Snapshot) Arms() ArmSet { return s.arms.clone() }

// NumArms returns the number of arms.
func (s *Snapshot) NumArms() int { return len(s.arms) }

// Arm returns arm i. It returns the zero Arm for an unknown index.
func (s *Snapshot) Arm(i int) Arm {
	if i < 0 || i >= len(s.arms) {
		return Arm{}
	}
	return s.arms[i]
}

// Allowed returns the range of arms with floor ≤ multiplier ≤ ceiling; see
// ArmSet.Allowed.
func (s *Snapshot) Allowed(floor, ceiling float64) (ArmRange, error) {
	return s.arms.Allowed(floor, ceiling)
}

// Config returns the configuration the snapshot was built with.
func (s *Snapshot) Config() Config {
	return Config{
		ModelID:     s.modelID,
		Schema:      s.schema,
		Arms:        s.arms.clone(),
		Dim:         s.dim,
		NoIntercept: !s.intercept,
		Posterior:   s.posterior,
		Lambda:      s.lambda,
		Scale:       s.scale,
		PriorShape:  s.a0,
		PriorRate:   s.b0,
	}
}

// ArmPosterior describes one arm's posterior, for explanations and tests.
// Vectors and matrices are over the model's features: the context features
// followed, unless Config.NoIntercept, by the intercept.
type ArmPosterior struct {
	// Count is the number of updates.
	Count uint64
	// Mean is μₐ = Bₐ⁻¹fₐ.
	Mean []float64
	// Precision is Bₐ = λI + Σxxᵀ, row-major p×p.
	Precision []float64
	// Covariance is the covariance of the sampled coefficients, row-major
	// p×p: v²Bₐ⁻¹ (Gaussian), or v²·bₙ/(aₙ-1)·Bₐ⁻¹ (NormalInverseGamma,
	// +Inf entries when aₙ ≤ 1).
	Covariance []float64
	// Shape and Rate are aₙ and bₙ of the noise variance's inverse-gamma
	// posterior (NormalInverseGamma only).
	Shape, Rate float64
}

// ArmPosterior returns the posterior of arm a.
func (s *Snapshot) ArmPosterior(a int) (ArmPosterior, error) {
	if a < 0 || a >= len(s.models) {
		return ArmPosterior{}, fmt.Errorf("bandit: %w: arm %d, have %d arms", ErrUnknownArm, a, len(s.models))
	}
	m := s.models[a]
	p := s.p
	out := ArmPosterior{
		Count:      m.n,
		Mean:       append([]float64(nil), m.mean...),
		Precision:  make([]float64, p*p),
		Covariance: make([]float64, p*p),
		Shape:      m.shape,
		Rate:       m.rate,
	}
	k := s.scale * s.scale
	if s.posterior == NormalInverseGamma {
		k *= m.rate / (m.shape - 1)
		if m.shape <= 1 {
			k = math.Inf(1)
		}
	}
	for i := 0; i < p; i++ {
		for j := 0; j <= i; j++ {
			b := row(m.gram, i)[j]
			if i == j {
				b += s.lambda
			}
			out.Precision[i*p+j], out.Precision[j*p+i] = b, b
			// (B⁻¹)ᵢⱼ = Σₖ (L⁻¹)ₖᵢ (L⁻¹)ₖⱼ over k ≥ max(i, j) = i.
			c := 0.0
			for r := i; r < p; r++ {
				ri := row(m.inv, r)
				c += ri[i] * ri[j]
			}
			out.Covariance[i*p+j], out.Covariance[j*p+i] = k*c, k*c
		}
	}
	return out, nil
}
