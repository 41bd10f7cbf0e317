package serving

import (
	"encoding/json"
	"math"
	"strings"

	"github.com/devflow/flowguard/experiments"
	"github.com/devflow/flowguard/policy"
	"github.com/valyala/fasthttp"
)

// Explanation answers GET /v1/keys/{key}/explain: why the key gets the
// budget it gets.
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
	// Model is the key of the variant's own model; "": the main model.
	Model          string  `json:"model,omitempty"`
	ModelVersion   string  `json:"model_version"`
	ModelAgeS      float64 `json:"model_age_s"`
	Fallback       bool    `json:"fallback"`
	FallbackReason string  `json:"fallback_reason"`
	// EpochExpiresMS is when the key's current multiplier expires, in ms
	// from now; 0 when the key has no current epoch choice.
	EpochExpiresMS  int64            `json:"epoch_expires_ms"`
	Arms            []ArmExplanation `json:"arms"`
	RecentDecisions []RecentDecision `json:"recent_decisions"`
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

// handleExplain serves GET /v1/keys/{key}/explain?tenant=…&endpoint=…&region=….
// It reads state and changes none: no stage-2 run, no feature update.
func (s *Server) handleExplain(ctx *fasthttp.RequestCtx, key string) {
	if key == "" || len(key) > maxKeyLen {
		s.writeError(ctx, badRequest("invalid_key", "the key in /v1/keys/{key}/explain must be 1 to 256 bytes"))
		return
	}
	args := ctx.QueryArgs()
	tenant, endpoint, region := string(args.Peek("tenant")), string(args.Peek("endpoint")), string(args.Peek("region"))
	set := s.policies.Load()
	rule := set.Resolve(tenant, endpoint)
	ml := s.ml
	now := ml.now()
	base, m := rule.Budget(1)
	e := Explanation{
		Key: key, Tenant: tenant, Endpoint: endpoint, Tier: rule.Tier, Rule: rule.Name, ML: string(rule.ML),
		FeaturesSchema: ml.feats.Schema().Version(), Features: map[string]float64{},
		BlockThreshold: ml.cfg.BlockThreshold, AutoBlock: rule.AutoBlock, Variant: variantStatic,
		Multiplier: m, Propensity: 1, Floor: rule.Floor, Ceiling: rule.Ceiling,
		BaseRate: rule.Limit.Rate, Limit: base.Rate, Arms: []ArmExplanation{},
		RecentDecisions: ml.recent.get(key),
	}
	switch {
	case set.Denied(key):
		e.ML = "deny"
	case set.Allowed(key):
		e.ML = string(policy.MLOff)
	}
	var p plan
	if mode := policy.MLMode(e.ML); mode == policy.MLOn || mode == policy.MLShadow {
		p = s.exp.assign(&DecideRequest{Key: key, Tenant: tenant, Region: region}, rule, mode)
		if p.v != nil {
			e.Experiment, e.Variant = p.v.id.Experiment, p.v.id.Variant
			e.VariantPolicy = string(experiments.PolicyBandit)
			switch {
			case p.static:
				e.VariantPolicy = string(experiments.PolicyStatic)
			case p.shadow:
				e.VariantPolicy = string(experiments.PolicyShadow)
			}
			if g := s.exp.cur.Load(); g != nil {
				e.VariantStopped = g.a.Stopped(p.v.id.Experiment, p.v.id.Variant)
			}
		}
	}
	if vals, ok := ml.feats.Snapshot(key, now); ok {
		for _, v := range vals {
			e.Features[v.Name] = finite(v.Raw)
		}
	}
	x := ml.feats.Vector(key, now, make([]float64, 0, ctxDim))
	e.Risk = ml.risk.Load().Score(x)
	x = append(x, e.Risk)
	snap := ml.snapshotFor(p)
	if p.v != nil {
		e.Model = p.v.model
	}
	if snap != nil {
		e.ModelVersion = modelVersion(snap.Version())
		e.ModelAgeS = now.Sub(ml.modelTime(snap)).Seconds()
		if allowed, err := snap.Allowed(rule.Floor, rule.Ceiling); err == nil {
			if ex, err := snap.Explain(x, allowed); err == nil {
				for _, a := range ex {
					e.Arms = append(e.Arms, ArmExplanation{Name: a.Name, Multiplier: a.Multiplier, Mean: finite(a.Mean),
						StdDev: finite(a.StdDev), Updates: a.Count, Probability: a.Probability})
				}
			}
		}
	}
	if c, ok := ml.current(key); ok && e.ML != string(policy.MLOff) && e.ML != "deny" {
		e.EpochExpiresMS = (c.expires - now.UnixMicro()) / 1000
		e.ModelVersion = modelVersion(c.model)
		if c.plan.v == nil {
			e.Variant = variantBandit
			if c.plan.shadow {
				e.Variant = variantShadow
			}
		}
		switch {
		case c.plan.static:
		case c.fallback != 0:
			e.Fallback, e.FallbackReason = true, fallbackReasons[c.fallback]
		default:
			e.Arm, e.Risk = ml.armName(c.plan, c.arm), c.risk
			if !c.plan.shadow {
				lim, m := rule.Budget(c.multiplier)
				e.Multiplier, e.Propensity, e.Limit = m, c.propensity, lim.Rate
			}
		}
	} else if p.static {
		// a static variant needs no model
	} else if snap == nil && e.ML != string(policy.MLOff) && e.ML != "deny" {
		e.Fallback, e.FallbackReason = true, ReasonNoModel
	} else if snap != nil && now.Sub(ml.modelTime(snap)) > ml.cfg.MaxModelAge {
		e.Fallback, e.FallbackReason = true, ReasonStaleModel
	}
	body, err := json.Marshal(e)
	if err != nil {
		s.writeError(ctx, &apiError{status: 500, code: "internal", message: err.Error()})
		return
	}
	ctx.SetContentType("application/json")
	ctx.SetBody(body)
}

// current returns key's epoch choice if it has one that has not expired.
func (m *mlStage) current(key string) (epochChoice, bool) {
	h := hashKey(m, key)
	sh := &m.shards[h&255]
	sh.mu.Lock()
	c, ok := sh.choices[h]
	sh.mu.Unlock()
	return c, ok && m.now().UnixMicro() < c.expires
}

// explainKey returns the key of a /v1/keys/{key}/explain path.
func explainKey(path string) (string, bool) {
	rest, ok := strings.CutPrefix(path, "/v1/keys/")
	if !ok {
		return "", false
	}
	return strings.CutSuffix(rest, "/explain")
}

func finite(v float64) float64 {
	if math.IsNaN(v) || math.IsInf(v, 0) {
		return 0
	}
	return v
}
