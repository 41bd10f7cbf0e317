package serving

import (
	"context"
	"strconv"
	"sync/atomic"
	"time"

	"github.com/devflow/flowguard/features"
	"github.com/devflow/flowguard/limiter"
	"github.com/devflow/flowguard/policy"
)

// Actions.
const (
	ActionAllow    = "allow"
	ActionThrottle = "throttle"
	ActionBlock    = "block"
)

// Sources of a decision, as metric labels.
const (
	SourceML            = "ml"
	SourceDeterministic = "deterministic"
	SourceFallback      = "fallback"
)

// Reasons a decision gives, besides the limiter's fallback reasons.
const (
	ReasonDenyList         = "deny_list"          // the key is deny-listed
	ReasonBudgetExhausted  = "budget_exhausted"   // throttled: no budget left for this cost
	ReasonCostAboveBurst   = "cost_exceeds_burst" // throttled: the cost can never fit the burst
	ReasonInternalError    = "internal_error"     // a bug was caught; the decision is the in-memory one
	ReasonInvalidLimit     = "invalid_limit"      // the resolved limit could not be enforced
	variantStatic          = "static"
	defaultDecisionIDBytes = 40
)

// Decision is the answer to one DecideRequest, as on the wire.
type Decision struct {
	Action       string
	Limit        int64 // the budget's rate per period, after the multiplier
	Remaining    int64
	ResetMS      int64
	RetryAfterMS int64 // 0 when allowed, -1 when the cost can never pass
	Multiplier   float64
	Arm          string
	Propensity   float64
	Variant      string
	Experiment   string
	ModelVersion string
	DecisionID   string
	Fallback     bool
	Reason       string

	rule      *policy.Rule
	limit     limiter.Limit
	source    string
	choice    epochChoice // stage 2's choice, when hasChoice
	hasChoice bool
	exp       *expVariant // the unit's experiment variant; nil: none
}

// budgetLimiter is the deterministic limiter: *limiter.Resilient over Redis, or
// the in-memory store.
type budgetLimiter interface {
	Decide(ctx context.Context, key limiter.Key, l limiter.Limit, n int64) (limiter.Decision, error)
}

// decide runs the pipeline for one request. It does not fail: every path
// ends in a decision.
//
//	stage 1: a deny-listed key is blocked; an allow-listed key or ml: off
//	         gets the deterministic budget (base × 1, clamped).
//	step 5:  experiments assignment: the unit's variant may make the epoch
//	         static or shadow (serving/experiments.go).
//	stage 2: once per key per epoch, features → risk → bandit.Choose over
//	         the arms [floor, ceiling] allows, under ml.deadline.
//	stage 3: budget = base × multiplier clamped to [floor, ceiling], then
//	         the limiter; a key of an auto_block tenant whose risk reaches
//	         ml.block_threshold is blocked.
func (s *Server) decide(ctx context.Context, req *DecideRequest) (d Decision) {
	set := s.policies.Load()
	rule := set.Resolve(req.Tenant, req.Endpoint)
	limit, m := rule.Budget(1)
	d = Decision{
		Limit:      limit.Rate,
		Multiplier: m,
		Propensity: 1,
		Variant:    variantStatic,
		DecisionID: s.ids.next(),
		rule:       rule,
		limit:      limit,
		source:     SourceDeterministic,
	}
	defer func() {
		if p := recover(); p != nil {
			s.log.Error("decision pipeline panicked; answering from memory", "panic", p, "key_len", len(req.Key))
			s.metrics.panics.Inc()
			d = s.safeDecision(req, rule, limit, d)
		}
	}()
	if set.Denied(req.Key) {
		d.Action, d.Reason = ActionBlock, ReasonDenyList
		d.RetryAfterMS = -1
		s.afterDecision(req, &d)
		return d
	}
	mode := rule.ML
	if set.Allowed(req.Key) {
		mode = policy.MLOff
	}
	mlReason := ""
	if mode != policy.MLOff && s.ml != nil {
		p := s.exp.assign(req, rule, mode)
		c := s.ml.choose(req.Key, req.Tenant, rule, p)
		d.choice, d.hasChoice = c, true
		d.ModelVersion = modelVersion(c.model)
		switch {
		case p.v != nil:
			d.exp, d.Experiment, d.Variant = p.v, p.v.id.Experiment, p.v.id.Variant
		case p.shadow:
			d.Variant = variantShadow
		default:
			d.Variant = variantBandit
		}
		switch {
		case p.static:
			// The deterministic budget d already holds; no fallback.
		case c.fallback != 0:
			mlReason = fallbackReasons[c.fallback]
			d.Fallback, d.Reason, d.source = true, mlReason, SourceFallback
			s.metrics.mlFallbacks.WithLabelValues(mlReason).Inc()
		case p.shadow:
			s.metrics.shadowChoices.WithLabelValues(s.ml.armName(p, c.arm)).Inc()
		default:
			limit, m = rule.Budget(c.multiplier)
			d.Limit, d.Multiplier, d.limit = limit.Rate, m, limit
			d.Arm, d.Propensity, d.source = s.ml.armName(p, c.arm), c.propensity, SourceML
			if rule.AutoBlock && c.risk >= s.ml.cfg.BlockThreshold {
				d.Action, d.Reason, d.RetryAfterMS = ActionBlock, ReasonRisk, -1
				s.afterDecision(req, &d)
				return d
			}
		}
	}
	res, err := s.limiter.Decide(ctx, limiter.Key{Name: req.Key, Scope: rule.Scope}, limit, req.Cost)
	if err != nil {
		d.Action, d.Reason, d.RetryAfterMS = ActionThrottle, ReasonInvalidLimit, -1
		s.afterDecision(req, &d)
		return d
	}
	d.fill(res)
	if mlReason != "" && !res.Fallback {
		d.Fallback, d.Reason, d.source = true, mlReason, SourceFallback
	}
	s.afterDecision(req, &d)
	return d
}

// afterDecision feeds the decision back: the key's features, its recent
// decisions and, for a block or an audited throttle, the audit log.
func (s *Server) afterDecision(req *DecideRequest, d *Decision) {
	if d.exp != nil {
		s.exp.count(d.exp, req.Key, d.rule.Tier, d.Action)
	}
	if s.ml == nil {
		return
	}
	now := s.ml.now()
	used := 1.0
	if b := d.limit.Burst; b > 0 && d.Action == ActionAllow {
		used = 1 - float64(d.Remaining)/float64(b)
	}
	s.ml.feats.Observe(req.Key, features.Observation{
		Endpoint: req.Endpoint, ClientIP: req.ClientIP, Cost: req.Cost, Tier: features.ParseTier(d.rule.Tier),
		Throttled: d.Action != ActionAllow, BudgetUsed: used, Outcome: req.outcome(),
	}, now)
	if s.fsync != nil {
		s.fsync.touch(req.Key)
	}
	if d.hasChoice && d.choice.id != 0 {
		s.ml.count(req.Key, d.Action)
	}
	s.ml.recent.add(req.Key, RecentDecision{
		Time: now.UTC(), DecisionID: d.DecisionID, Endpoint: req.Endpoint,
		Decision: d.Action, Reason: d.Reason, Limit: d.Limit, Remaining: d.Remaining,
		Multiplier: d.Multiplier, Arm: d.Arm, Fallback: d.Fallback,
	})
	if s.audit != nil && (d.Action == ActionBlock || d.Action == ActionThrottle && d.rule.Audit) {
		rec := AuditRecord{
			Time: now.UTC().Format("2006-01-02T15:04:05.000000Z"), Key: req.Key, Tenant: req.Tenant,
			Endpoint: req.Endpoint, Decision: d.Action, Reason: d.Reason, DecisionID: d.DecisionID,
			PolicyVersion: s.current.Load().Digest, ModelVersion: d.ModelVersion, Arm: d.Arm,
			Multiplier: d.Multiplier, Propensity: d.Propensity,
		}
		if d.hasChoice {
			rec.Risk, rec.FeaturesHash = d.choice.risk, hexHash(d.choice.featuresHash)
		}
		s.audit.Record(rec)
		s.metrics.auditRecords.Inc()
	}
}

// fill copies a limiter result into the decision.
func (d *Decision) fill(res limiter.Decision) {
	d.Remaining = res.Remaining
	d.ResetMS = ceilMillis(res.ResetAfter)
	switch {
	case res.OK():
		d.Action = ActionAllow
	case res.RetryAfter < 0:
		d.Action, d.Reason, d.RetryAfterMS = ActionThrottle, ReasonCostAboveBurst, -1
	default:
		d.Action, d.Reason, d.RetryAfterMS = ActionThrottle, ReasonBudgetExhausted, ceilMillis(res.RetryAfter)
	}
	if res.Fallback {
		d.Fallback, d.Reason, d.source = true, res.Reason, SourceFallback
	}
}

// safeDecision answers after a panic: the in-memory store with this
// instance's share, so even a bug never fails open without a bound.
func (s *Server) safeDecision(req *DecideRequest, rule *policy.Rule, limit limiter.Limit, d Decision) Decision {
	d.Fallback, d.source = true, SourceFallback
	res, err := s.local.Decide(context.Background(), limiter.Key{Name: req.Key, Scope: rule.Scope}, limit.Scale(s.share), req.Cost)
	if err != nil {
		d.Action, d.RetryAfterMS = ActionThrottle, -1
	} else {
		d.fill(res)
	}
	d.Fallback, d.Reason, d.source = true, ReasonInternalError, SourceFallback
	return d
}

func ceilMillis(d time.Duration) int64 {
	if d <= 0 {
		return 0
	}
	return int64((d + time.Millisecond - 1) / time.Millisecond)
}

// idSource makes decision IDs: an instance prefix and a counter, unique
// across instances and restarts without coordination.
type idSource struct {
	prefix string
	n      atomic.Uint64
}

func newIDSource(now time.Time, pid int) *idSource {
	prefix := "d" + strconv.FormatInt(now.UnixMilli(), 36) + strconv.FormatInt(int64(pid), 36) + "-"
	return &idSource{prefix: prefix}
}

func (g *idSource) next() string {
	var b [defaultDecisionIDBytes]byte
	out := append(b[:0], g.prefix...)
	out = strconv.AppendUint(out, g.n.Add(1), 36)
	return string(out)
}
