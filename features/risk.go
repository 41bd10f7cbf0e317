package features

import (
	"errors"
	"fmt"
	"math"
	"sync"
	"sync/atomic"
)

// MaxRiskDim is the largest RiskConfig.Dim.
const MaxRiskDim = 1024

// maxRiskValue bounds the magnitude of a feature the risk model accepts.
// Store vectors lie within [-1, 1].
const maxRiskValue = 1e6

// Errors of Risk.Learn, wrapped with the detail.
var (
	// ErrRiskDim means a vector does not have RiskConfig.Dim elements.
	ErrRiskDim = errors.New("features: vector has the wrong dimension")
	// ErrBadValue means a vector element is NaN, infinite or larger in
	// magnitude than 1e6.
	ErrBadValue = errors.New("features: vector element is not finite or out of range")
)

// RiskConfig configures a Risk model. Zero values take the documented
// defaults.
type RiskConfig struct {
	// Dim is the number of features, 1 to MaxRiskDim; CurrentSchema().Dim() for
	// a Store's vectors. Required.
	Dim int
	// Alpha and Beta set coordinate i's learning rate α/(β+√nᵢ), where nᵢ
	// is the sum of its squared gradients so far: each coordinate slows
	// down as its evidence grows. A larger Alpha learns faster and
	// noisier. Defaults: 0.1 and 1.
	Alpha, Beta float64
	// L1 and L2 are the regularisation strengths λ₁ and λ₂ of the weights;
	// L1 holds weights with weak evidence at exactly 0. The bias gets L2
	// only, which shrinks it toward Prior. Defaults: 0 and 0.
	L1, L2 float64
	// Prior is the probability an untrained model returns for every
	// vector: the base rate of abuse assumed before any label. 0 < Prior <
	// 1. Default: 0.01.
	Prior float64
}

// Defaults of RiskConfig.
const (
	DefaultRiskAlpha = 0.1
	DefaultRiskBeta  = 1.0
	DefaultRiskPrior = 0.01
)

func (c RiskConfig) withDefaults() RiskConfig {
	if c.Alpha == 0 {
		c.Alpha = DefaultRiskAlpha
	}
	if c.Beta == 0 {
		c.Beta = DefaultRiskBeta
	}
	if c.Prior == 0 {
		c.Prior = DefaultRiskPrior
	}
	return c
}

// Validate reports the first invalid field of c, naming it. Zero fields
// are valid: they take their defaults.
func (c RiskConfig) Validate() error {
	finite := func(v float64) bool { return !math.IsNaN(v) && !math.IsInf(v, 0) }
	switch {
	case c.Dim < 1 || c.Dim > MaxRiskDim:
		return fmt.Errorf("features: RiskConfig.Dim must be 1 to %d, got %d", MaxRiskDim, c.Dim)
	case !finite(c.Alpha) || c.Alpha < 0:
		return fmt.Errorf("features: RiskConfig.Alpha must be positive, got %v", c.Alpha)
	case !finite(c.Beta) || c.Beta < 0:
		return fmt.Errorf("features: RiskConfig.Beta must be positive, got %v", c.Beta)
	case !finite(c.L1) || c.L1 < 0:
		return fmt.Errorf("features: RiskConfig.L1 must not be negative, got %v", c.L1)
	case !finite(c.L2) || c.L2 < 0:
		return fmt.Errorf("features: RiskConfig.L2 must not be negative, got %v", c.L2)
	case !(c.Prior >= 0 && c.Prior < 1): // NaN fails
		return fmt.Errorf("features: RiskConfig.Prior must be between 0 and 1, got %v", c.Prior)
	}
	return nil
}

// Risk is an online logistic regression estimating P(abusive | features),
// trained by FTRL-Proximal with per-coordinate learning rates (McMahan et
// al., "Ad click prediction: a view from the trenches", KDD 2013). Its
// logit is
//
//	logit(Prior) + b + w·x
//
// so an untrained model (b = 0, w = 0) returns Prior, and L2 shrinks the
// learned bias b toward it.
//
// Score is safe for concurrent use with everything, Learn included: it
// reads an immutable snapshot of the weights through an atomic pointer,
// which each Learn replaces. Learn calls are serialised by a mutex; they
// are meant to come from one learner goroutine.
type Risk struct {
	cfg     RiskConfig
	offset  float64
	mu      sync.Mutex
	z, n    []float64 // FTRL state per coordinate; index Dim is the bias
	weights atomic.Pointer[[]float64]
	learned atomic.Int64
}

// NewRisk returns an untrained model, or the error of cfg.Validate.
func NewRisk(cfg RiskConfig) (*Risk, error) {
	if err := cfg.Validate(); err != nil {
		return nil, err
	}
	cfg = cfg.withDefaults()
	r := &Risk{
		cfg:    cfg,
		offset: math.Log(cfg.Prior / (1 - cfg.Prior)),
		z:      make([]float64, cfg.Dim+1),
		n:      make([]float64, cfg.Dim+1),
	}
	w := make([]float64, cfg.Dim+1)
	r.weights.Store(&w)
	return r, nil
}

// Config returns the model's configuration, defaults filled in.
func (r *Risk) Config() RiskConfig { return r.cfg }

// Score returns P(abusive | x), from 0 to 1. It never fails:
// elements beyond Dim are ignored, missing and non-finite ones count as 0,
// and elements are clamped to ±1e6. It does not allocate.
func (r *Risk) Score(x []float64) float64 {
	w := *r.weights.Load()
	d := len(w) - 1
	logit := r.offset + w[d]
	x = x[:min(len(x), d)]
	w = w[:len(x)]
	for i, v := range x {
		switch {
		case v >= -maxRiskValue && v <= maxRiskValue:
			logit += w[i] * v
		case v > maxRiskValue:
			logit += w[i] * maxRiskValue
		case v < -maxRiskValue:
			logit -= w[i] * maxRiskValue
		} // NaN counts as 0
	}
	return sigmoid(logit)
}

// Learn updates the model with one labelled vector. The error wraps
// ErrRiskDim or ErrBadValue; the model is then unchanged.
func (r *Risk) Learn(x []float64, abusive bool) error {
	if len(x) != r.cfg.Dim {
		return fmt.Errorf("%w: got %d elements, want %d", ErrRiskDim, len(x), r.cfg.Dim)
	}
	for i, v := range x {
		if !(v >= -maxRiskValue && v <= maxRiskValue) { // NaN fails both
			return fmt.Errorf("%w: element %d is %v", ErrBadValue, i, v)
		}
	}
	r.mu.Lock()
	defer r.mu.Unlock()
	cur := *r.weights.Load()
	d := r.cfg.Dim
	logit := r.offset + cur[d]
	for i, v := range x {
		logit += cur[i] * v
	}
	g := sigmoid(logit) // gradient of the log-loss w.r.t. the logit: p - y
	if abusive {
		g--
	}
	next := make([]float64, d+1)
	for i := range next {
		v, l1 := 1.0, 0.0 // the bias: a constant feature, no L1
		if i < d {
			v, l1 = x[i], r.cfg.L1
		}
		if v == 0 {
			next[i] = cur[i]
			continue
		}
		gi := g * v
		n := r.n[i] + gi*gi
		sigma := (math.Sqrt(n) - math.Sqrt(r.n[i])) / r.cfg.Alpha
		r.z[i] += gi - sigma*cur[i]
		r.n[i] = n
		next[i] = r.weight(r.z[i], n, l1)
	}
	r.weights.Store(&next)
	r.learned.Add(1)
	return nil
}

// weight is FTRL-Proximal's closed-form weight for one coordinate.
func (r *Risk) weight(z, n, l1 float64) float64 {
	if math.Abs(z) <= l1 {
		return 0
	}
	return -(z - math.Copysign(l1, z)) / ((r.cfg.Beta+math.Sqrt(n))/r.cfg.Alpha + r.cfg.L2)
}

// Weights returns a copy of the coefficients w and the intercept
// logit(Prior) + b: the model's logit is intercept + w·x.
func (r *Risk) Weights() (w []float64, intercept float64) {
	cur := *r.weights.Load()
	d := len(cur) - 1
	return append([]float64(nil), cur[:d]...), r.offset + cur[d]
}

// Learned returns the number of Learn calls that updated the model.
func (r *Risk) Learned() int64 { return r.learned.Load() }

func sigmoid(z float64) float64 {
	if z >= 0 {
		return 1 / (1 + math.Exp(-z))
	}
	e := math.Exp(z)
	return e / (1 + e)
}
