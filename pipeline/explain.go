package pipeline

import (
	"math"

	"github.com/devflow/flowguard/experiments"
	"github.com/devflow/flowguard/policy"
)

// Explanation is why a key gets the budget it gets: the read-only form of
// Decide.
type Explanation struct {
	Key      string `json:"key"`
	Tenant   string `json:"tenant"`
	Endpoint string `json:"endpoint"`
	Tier     string `json:"tier"`
	Rule     string `json:"rule"`
	// ML is the mode in force for the key: on, shadow or off (allow-listed
	// keys are off), or "deny" for a deny-listed key.
	ML             string             `json:"ml"`
	FeaturesSchema int                `json:"features_schema"`
	Features       map[string]float64 `json:"features"`
	Risk           float64            `json:"risk"`
	BlockThreshold float64            `json:"block_threshold"`
	AutoBlock      bool               `json:"auto_block"`
	// Experiment and Variant are the key's experiment and variant, as its
	// decisions carry them; with no experiment, Variant is the ML mode:
	// static, bandit or shadow.
	Experiment string `json:"experiment"`
	Variant    string `json:"variant"`
	// VariantPolicy is what the variant enforces (static, bandit or
	// shadow); the control's policy when the variant is stopped. "" with no
	// experiment.
	VariantPolicy string `json:"variant_policy"`
	// VariantStopped says a guardrail or an operator stopped the variant.
	VariantStopped bool    `json:"variant_stopped"`
	Arm            string  `json:"arm"`
	Multiplier     float64 `json:"multiplier"`
	Propensity     float64 `json:"propensity"`
	Floor          float64 `json:"floor"`
	Ceiling        float64 `json:"ceiling"`
	BaseRate       int64   `json:"base_rate"`
	Limit          int64   `json:"limit"`
	// DailyQuota is the rule's daily quota before the multiplier (pinned,
	// or the installed fit); 0: no daily window now.
	DailyQuota float64 `json:"daily_quota"`
	// Model is the key of the variant's own model; "": the main model.
	Model          string  `json:"model,omitempty"`
	ModelVersion   string  `json:"model_version"`
	ModelAgeS      float64 `json:"model_age_s"`
	Fallback       bool    `json:"fallback"`
	FallbackReason string  `json:"fallback_reason"`
	// EpochExpiresMS is when the key's current multiplier expires, in ms
	// from now; 0 when the key has no current epoch choice.
	EpochExpiresMS int64            `json:"epoch_expires_ms"`
	Arms           []ArmExplanation `json:"arms"`
}

// ArmExplanation is one allowed arm's standing for the key's context now.
type ArmExplanation struct {
	Name        string  `json:"name"`
	Multiplier  float64 `json:"multiplier"`
	Mean        float64 `json:"mean"`
	StdDev      float64 `json:"stddev"`
	Updates     uint64  `json:"updates"`
	Probability float64 `json:"probability"`
}

// Explain runs Decide's stages 1–3 for req as a dry run: it reads the
// policies, the experiments assignment, the key's features, the model and
// its current epoch choice, and changes none of them. No feature is
// observed, no stage 2 runs and no limiter token is spent.
func (p *Pipeline) Explain(req *Request) Explanation {
	set := p.policies.Load()
	rule := set.Resolve(req.Tenant, req.Endpoint)
	now := p.now()
	base, m := rule.Budget(1)
	e := Explanation{
		Key: req.Key, Tenant: req.Tenant, Endpoint: req.Endpoint, Tier: rule.Tier, Rule: rule.Name, ML: string(rule.ML),
		FeaturesSchema: p.feats.Schema().Version(), Features: map[string]float64{},
		BlockThreshold: p.cfg.BlockThreshold, AutoBlock: rule.AutoBlock, Variant: VariantStatic,
		Multiplier: m, Propensity: 1, Floor: rule.Floor, Ceiling: rule.Ceiling,
		BaseRate: rule.Limit.Rate, Limit: base.Rate, DailyQuota: p.dailyQuota(rule), Arms: []ArmExplanation{},
	}

	// Stage 1.
	switch {
	case set.Denied(req.Key):
		e.ML = "deny"
	case set.Allowed(req.Key):
		e.ML = string(policy.MLOff)
	}
	mlRuns := e.ML == string(policy.MLOn) || e.ML == string(policy.MLShadow)

	// Experiments assignment.
	var pl experiments.Plan
	if mlRuns {
		pl = p.o.Experiments.Assign(experiments.Unit{Key: req.Key, Tenant: req.Tenant, Tier: rule.Tier, Region: req.Region},
			rule.ML == policy.MLShadow)
		if v := pl.Variant; v != nil {
			e.Experiment, e.Variant = v.ID.Experiment, v.ID.Variant
			e.VariantPolicy = string(pl.Policy())
			e.VariantStopped = p.o.Experiments.Stopped(v)
			e.Model = v.Model
		}
	}

	// Stage 2 as it would run now, without drawing.
	if vals, ok := p.feats.Snapshot(req.Key, now); ok {
		for _, v := range vals {
			e.Features[v.Name] = finite(v.Raw)
		}
	}
	x := p.feats.Vector(req.Key, now, make([]float64, 0, ctxDim))
	e.Risk = p.risk.Load().Score(x)
	x = append(x, e.Risk)
	snap := p.snapshotFor(pl)
	if snap != nil {
		e.ModelVersion = modelVersion(snap.Version())
		e.ModelAgeS = now.Sub(p.modelTime(snap)).Seconds()
		if allowed, err := snap.Allowed(rule.Floor, rule.Ceiling); err == nil {
			// The arms stage 2 would draw from: a key the risk model does
			// not suspect only those at or above ×1 (ml.shrink_risk).
			if base, err := snap.Allowed(max(1, rule.Floor), rule.Ceiling); err == nil {
				allowed = gateArms(allowed, base, ShrinkRisk(p.cfg.ShrinkRisk), e.Risk)
			}
			if ex, err := snap.Explain(x, allowed); err == nil {
				for _, a := range ex {
					e.Arms = append(e.Arms, ArmExplanation{Name: a.Name, Multiplier: a.Multiplier, Mean: finite(a.Mean),
						StdDev: finite(a.StdDev), Updates: a.Count, Probability: a.Probability})
				}
			}
		}
	}

	// Stage 3: what the key's current epoch enforces.
	switch c, ok := p.current(req.Key); {
	case ok && mlRuns:
		e.EpochExpiresMS = (c.expires - now.UnixMicro()) / 1000
		e.ModelVersion = modelVersion(c.model)
		if c.plan.Variant == nil {
			e.Variant = VariantBandit
			if c.plan.Shadow {
				e.Variant = VariantShadow
			}
		}
		switch {
		case c.plan.Static:
		case c.fallback != 0:
			e.Fallback, e.FallbackReason = true, fallbackReasons[c.fallback]
		default:
			e.Arm, e.Risk = p.armName(c.plan, c.arm), c.risk
			if !c.plan.Shadow {
				lim, m := rule.Budget(c.multiplier)
				e.Multiplier, e.Propensity, e.Limit = m, c.propensity, lim.Rate
			}
		}
	case pl.Static:
		// a static variant needs no model
	case snap == nil && mlRuns:
		e.Fallback, e.FallbackReason = true, ReasonNoModel
	case snap != nil && now.Sub(p.modelTime(snap)) > p.cfg.MaxModelAge:
		e.Fallback, e.FallbackReason = true, ReasonStaleModel
	}
	return e
}

func finite(v float64) float64 {
	if math.IsNaN(v) || math.IsInf(v, 0) {
		return 0
	}
	return v
}
