package bandit

import (
	"fmt"
	"math"
)

// MaxDim is the largest context dimension.
const MaxDim = 255

// Posterior selects the per-arm reward model.
type Posterior uint8

const (
	// Gaussian is linear Thompson sampling (Agrawal & Goyal 2013): the
	// score of arm a for context x is drawn from N(xᵀμₐ, v²·xᵀBₐ⁻¹x), with
	// the exploration scale v fixed by Config.Scale.
	Gaussian Posterior = iota
	// NormalInverseGamma also learns each arm's noise variance σₐ², like
	// LinFullPost in Riquelme, Tucker & Snoek 2018: σₐ² ~ IG(aₙ, bₙ), then
	// θₐ ~ N(μₐ, σₐ²Bₐ⁻¹). The score xᵀθₐ is then a Student-t with 2aₙ
	// degrees of freedom. It costs more per choice than Gaussian.
	NormalInverseGamma
)

func (p Posterior) String() string {
	switch p {
	case Gaussian:
		return "gaussian"
	case NormalInverseGamma:
		return "normal-inverse-gamma"
	}
	return fmt.Sprintf("Posterior(%d)", uint8(p))
}

// Config configures a Learner. Zero values take the documented defaults.
type Config struct {
	// ModelID names the model; snapshots carry it, and Current refuses a
	// snapshot of the same model that is not newer than the one it holds.
	// At most 255 bytes. Default: "default".
	ModelID string
	// Arms are the arms to choose from. Default: DefaultArms().
	Arms ArmSet
	// Schema is the fingerprint of the feature schema the contexts come
	// from (features.Schema.Fingerprint): snapshots carry it, so that a
	// model trained on one schema is not used to score another. 0 means
	// unknown; Merge refuses parts of different schemas.
	Schema uint64
	// Dim is the number of context features, 1 to MaxDim. Required.
	Dim int
	// NoIntercept turns off the constant feature 1 the model appends to
	// every context, so that each arm has its own bias term. Turn it off
	// only if the context already holds a constant feature.
	// Default: false (an intercept is added).
	NoIntercept bool
	// Posterior selects the reward model. Default: Gaussian.
	Posterior Posterior
	// Lambda is the prior precision λ of the coefficients: Bₐ starts at λI.
	// Larger values shrink estimates harder toward zero. Default: 1.
	Lambda float64
	// Scale is the exploration scale v: the standard deviation of each
	// sampled score is multiplied by it. For Gaussian it stands in for the
	// reward noise; set it near the noise standard deviation of your reward.
	// Default: 1.
	Scale float64
	// PriorShape and PriorRate are the inverse-gamma prior a₀, b₀ of the
	// noise variance for NormalInverseGamma; the prior mean of σ² is
	// b₀/(a₀-1). Defaults: 6 and 6, as in Riquelme et al. 2018.
	PriorShape float64
	PriorRate  float64
}

// Defaults of Config.
const (
	DefaultModelID    = "default"
	DefaultLambda     = 1.0
	DefaultScale      = 1.0
	DefaultPriorShape = 6.0
	DefaultPriorRate  = 6.0
)

// withDefaults returns c with zero fields set to their defaults.
func (c Config) withDefaults() Config {
	if c.ModelID == "" {
		c.ModelID = DefaultModelID
	}
	if c.Arms == nil {
		c.Arms = DefaultArms()
	}
	if c.Lambda == 0 {
		c.Lambda = DefaultLambda
	}
	if c.Scale == 0 {
		c.Scale = DefaultScale
	}
	if c.PriorShape == 0 {
		c.PriorShape = DefaultPriorShape
	}
	if c.PriorRate == 0 {
		c.PriorRate = DefaultPriorRate
	}
	return c
}

// Validate reports the first invalid field, after defaults are applied.
func (c Config) Validate() error {
	c = c.withDefaults()
	if len(c.ModelID) > 255 {
		return fmt.Errorf("bandit: model id is %d bytes, at most 255", len(c.ModelID))
	}
	if err := c.Arms.Validate(); err != nil {
		return fmt.Errorf("bandit: %w", err)
	}
	if c.Dim < 1 || c.Dim > MaxDim {
		return fmt.Errorf("bandit: dim %d outside 1..%d", c.Dim, MaxDim)
	}
	if c.Posterior != Gaussian && c.Posterior != NormalInverseGamma {
		return fmt.Errorf("bandit: unknown posterior %v", c.Posterior)
	}
	for _, p := range []struct {
		name string
		v    float64
	}{{"lambda", c.Lambda}, {"scale", c.Scale}, {"prior shape", c.PriorShape}, {"prior rate", c.PriorRate}} {
		if !(p.v > 0) || math.IsInf(p.v, 0) {
			return fmt.Errorf("bandit: %s must be finite and positive, got %v", p.name, p.v)
		}
	}
	return nil
}

// features returns the model dimension p: Dim, plus one for the intercept.
func (c Config) features() int {
	if c.NoIntercept {
		return c.Dim
	}
	return c.Dim + 1
}
