package pipeline

import (
	"context"
	"hash/maphash"
	"log/slog"
	"strconv"
	"sync/atomic"
	"time"

	"github.com/devflow/flowguard/bandit"
	"github.com/devflow/flowguard/experiments"
	"github.com/devflow/flowguard/features"
	"github.com/devflow/flowguard/internal/config"
	"github.com/devflow/flowguard/limiter"
	"github.com/devflow/flowguard/policy"
	"github.com/devflow/flowguard/quotas"
	"github.com/devflow/flowguard/rewards"
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
	ReasonDenyList        = "deny_list"          // the key is deny-listed
	ReasonBudgetExhausted = "budget_exhausted"   // throttled: no budget left for this cost
	ReasonCostAboveBurst  = "cost_exceeds_burst" // throttled: the cost can never fit the burst
	ReasonInternalError   = "internal_error"     // a bug was caught; the decision is the in-memory one
	ReasonInvalidLimit    = "invalid_limit"      // the resolved limit could not be enforced
	ReasonRisk            = "risk"               // blocked: risk at or above ml.block_threshold
	ReasonDailyQuota      = "daily_quota"        // throttled: the rule's daily quota (× the multiplier) is spent
)

// Reasons a decision falls back to the deterministic budget because of the
// ML layer. Each is reported through Events.Fallback.
const (
	ReasonNoModel          = "no_model"           // no bandit snapshot yet
	ReasonStaleModel       = "stale_model"        // the snapshot is older than ml.max_model_age
	ReasonFeatureStoreDown = "feature_store_down" // the key's features cannot be tracked
	ReasonMLDeadline       = "ml_deadline"        // stage 2 did not finish within ml.deadline
	ReasonMLError          = "ml_error"           // stage 2 failed or panicked
	ReasonSchemaMismatch   = "schema_mismatch"    // a published model of another feature schema was refused (counted once per model)
	ReasonDrift            = "drift"              // the scored features drifted from what the model learned on (ml.drift)
)

// FallbackReasons are the ML fallback reasons, for metrics to pre-create.
var FallbackReasons = fallbackReasons[1:]

// Variants a decision reports when its unit is in no experiment.
const (
	VariantStatic = "static"
	VariantBandit = "bandit"
	VariantShadow = "shadow"
)

// Request is one decision request, parsed and validated.
type Request struct {
	Key      string // required
	Tenant   string // unknown or empty: the default tier
	Endpoint string // "METHOD /path"
	Cost     int64  // Default: 1
	Region   string
	ClientIP string
	// LastStatus is the HTTP status of this key's previous response, as the
	// gateway saw it (0: not reported). 5xx counts as an error, 401 and 403
	// as authentication failures, in the key's features.
	LastStatus int
}

// Outcome is the key's previous response as a feature observation.
func (r *Request) Outcome() features.Outcome {
	if r.LastStatus == 0 {
		return features.Outcome{}
	}
	o := features.Outcome{Requests: 1}
	switch {
	case r.LastStatus >= 500:
		o.Errors = 1
	case r.LastStatus == 401 || r.LastStatus == 403:
		o.AuthFailures = 1
	}
	return o
}

// Decision is the answer to one Request.
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

	At     time.Time // when the pipeline recorded it, by its clock
	Rule   *policy.Rule
	Budget limiter.Limit // what the limiter enforced
	// Daily is the daily window's quota after the multiplier (requests
	// per rolling 24 h), 0: the rule has none now.
	Daily  int64
	Source string // SourceML, SourceDeterministic or SourceFallback
	// Chosen says the key has an epoch choice (ML on or shadow); Risk and
	// FeaturesHash are then that choice's risk and the hash of its context.
	Chosen       bool
	Risk         float64
	FeaturesHash [8]byte
	plan         experiments.Plan
}

// Limiter is the deterministic limiter: *limiter.Resilient over Redis, or
// the in-memory store, under the region split if any.
type Limiter interface {
	Decide(ctx context.Context, key limiter.Key, l limiter.Limit, n int64) (limiter.Decision, error)
}

// DecisionLog receives decision and outcome records: the embedded
// learner's queue or the Kafka decision log. Log never blocks; it returns
// false when it dropped the record.
type DecisionLog interface {
	Log(rewards.Record) bool
}

// WaitingLog is a DecisionLog that can also wait for room: epoch outcomes,
// which the maintenance loop writes off the request path, wait up to
// outcomeWait for a learner that is catching up, so that a decision the
// log accepted gets its outcome (issue 19: a burst of new keys closes all
// their epochs at once).
type WaitingLog interface {
	DecisionLog
	LogWait(r rewards.Record, deadline time.Time) bool
}

// outcomeWait bounds how long one Sweep or CloseEpochs waits, in all, for
// room in a full decision log; the outcomes left after it are dropped and
// counted, as decisions are.
const outcomeWait = 5 * time.Second

// Events are what the pipeline reports as it decides; any may be nil.
type Events struct {
	Fallback func(reason string)     // a decision fell back because of the ML layer
	Shadow   func(arm string)        // a shadow epoch's would-be arm
	Panic    func(p any, keyLen int) // a bug was caught; the decision came from memory
	Stage2   func(time.Duration)     // how long a stage-2 run took
	Observed func(key string)        // the key's features changed
	LocalRun func(reason string)     // stage 2 ran on features this instance alone holds
	Local    func() (reason string)  // why features are local-only now; "": shared
	Decided  func(Request, Decision) // every decision, after its features were observed (by value: nothing escapes)
}

// Options configure a Pipeline.
type Options struct {
	ML     config.ML
	Region string // of the decision log's records
	Clock  func() time.Time
	// Seed seeds stage 2's draws: with the key and the epoch's start, the
	// same seed, requests and clock give the same choices.
	Seed uint64
	// Limiter enforces budgets. Memory, with Share, answers when the
	// pipeline caught a bug (this instance's share of the budget).
	Limiter Limiter
	Memory  Limiter
	Share   float64
	// Experiments is the experiments runtime; nil: none.
	Experiments *experiments.Runtime
	// IDs makes decision IDs.
	IDs func() string
	// Usage counts the requests of rules with a fitted daily quota, for
	// the refit; nil: not counted.
	Usage  *quotas.Recorder
	Events Events
	Logger *slog.Logger
}

// Pipeline runs stages 1–3 for one request at a time, for serving and, with
// the same stage 2 and limiter arithmetic, for the simulator.
type Pipeline struct {
	o        Options
	policies atomic.Pointer[policy.Set]
	log      *slog.Logger
	ev       Events

	// ML state: features, the risk model, the bandit snapshot, the variant
	// models and the per-key epoch choices.
	cfg   config.ML
	arms  bandit.ArmSet
	feats *features.Store
	risk  atomic.Pointer[features.Risk]
	model bandit.Current
	// variants are the variant models (rewards.VariantModel), by key; a
	// variant with a model of its own chooses from it alone.
	variants atomic.Pointer[map[string]*bandit.Snapshot]
	// fresh is when the remote learners last published (µs; 0: never, or
	// the embedded learner): with learner: remote, staleness counts from
	// their heartbeat, not from the last change of the model.
	fresh    atomic.Int64
	dlog     DecisionLog
	idBase   string
	idSeq    atomic.Uint64
	seed     maphash.Seed
	shards   [256]epochShard
	labelled labelledKeys
	daily    atomic.Pointer[map[dailyGroup]float64] // installed fitted daily quotas
	drift    *Drift                                 // nil with ml.drift.mode off
	draws    uint64
	now      func() time.Time
	hook     func(key string) // fault injection inside stage 2, for this package's tests
}

// New returns a pipeline deciding under set.
func New(set *policy.Set, o Options) (*Pipeline, error) {
	feats, err := features.NewStore(features.Config{IdleTTL: o.ML.IdleTTL, MaxKeys: o.ML.MaxKeys})
	if err != nil {
		return nil, err
	}
	risk, err := features.NewRisk(features.RiskConfig{Dim: features.Dim, Prior: o.ML.RiskPrior})
	if err != nil {
		return nil, err
	}
	if o.Clock == nil {
		o.Clock = time.Now
	}
	if o.Share == 0 {
		o.Share = 1
	}
	p := &Pipeline{o: o, log: o.Logger, ev: o.Events, cfg: o.ML, arms: o.ML.Arms, feats: feats,
		seed: maphash.MakeSeed(), idBase: newIDBase(), draws: o.Seed, now: o.Clock}
	if p.log == nil {
		p.log = slog.New(slog.DiscardHandler)
	}
	p.policies.Store(set)
	p.risk.Store(risk)
	p.labelled.init(o.ML.MaxLabelledKeys)
	p.drift = DriftFor(feats.Schema(), o.ML.Drift)
	for i := range p.shards {
		p.shards[i].choices = make(map[uint64]epochChoice)
		p.shards[i].inflight = make(map[uint64]chan struct{})
	}
	return p, nil
}

// Policies are the tenant policies in force.
func (p *Pipeline) Policies() *policy.Set { return p.policies.Load() }

// SetPolicies makes set the policies in force from the next request on.
func (p *Pipeline) SetPolicies(set *policy.Set) { p.policies.Store(set) }

// SetDecisionLog sets where decision and outcome records go (nil:
// nowhere). Call it before the first Decide.
func (p *Pipeline) SetDecisionLog(l DecisionLog) { p.dlog = l }

// DecisionLog is where decision and outcome records go; nil: nowhere.
func (p *Pipeline) DecisionLog() DecisionLog { return p.dlog }

// Decide runs the pipeline for one request. It does not fail: every path
// ends in a decision.
//
//	stage 1: a deny-listed key is blocked; a key an abusive label holds
//	         gets its floor, or a block (labels.go); an allow-listed key or
//	         ml: off gets the deterministic budget (base × 1, clamped).
//	step 4:  experiments assignment: the unit's variant may make the epoch
//	         static or shadow.
//	stage 2: once per key per epoch, features → risk → bandit.Choose over
//	         the arms [floor, ceiling] and the variant allow, under
//	         ml.deadline, every failure a fallback reason (epochs.go, ml.go).
//	stage 3: budget = base × multiplier clamped to [floor, ceiling], then
//	         the limiter; a key of an auto_block tenant whose risk reaches
//	         ml.block_threshold is blocked.
//	record:  the key's features, its epoch's outcome counts and its
//	         variant's counters; then Events.Decided.
func (p *Pipeline) Decide(ctx context.Context, req *Request) (d Decision) {
	set := p.policies.Load()
	rule := set.Resolve(req.Tenant, req.Endpoint)
	limit, m := rule.Budget(1)
	d = Decision{
		Limit:      limit.Rate,
		Multiplier: m,
		Propensity: 1,
		Variant:    VariantStatic,
		Rule:       rule,
		Budget:     limit,
		Source:     SourceDeterministic,
	}
	if p.o.IDs != nil {
		d.DecisionID = p.o.IDs()
	}
	defer func() {
		if r := recover(); r != nil {
			if p.ev.Panic != nil {
				p.ev.Panic(r, len(req.Key))
			}
			d = p.safeDecision(req, rule, limit, d)
		}
	}()

	// Stage 1.
	if set.Denied(req.Key) {
		d.Action, d.Reason, d.RetryAfterMS = ActionBlock, ReasonDenyList, -1
		p.record(req, &d)
		return d
	}
	allowed := set.Allowed(req.Key)

	// A key an abusive label holds: its floor, or a block; no stage 2.
	labelled := false
	if p.cfg.LabelAction != config.LabelActionOff && !allowed {
		var sev float64
		if sev, labelled = p.labelled.get(req.Key); labelled {
			block, mult := LabelAction(rule, sev, p.cfg.LabelBlockSeverity)
			d.Source = SourceLabel
			if rule.ML != policy.MLOff {
				// The unit stays in its experiment variant (intention to
				// treat): the hold applies to every variant alike.
				d.plan = p.o.Experiments.Assign(experiments.Unit{Key: req.Key, Tenant: req.Tenant, Tier: rule.Tier, Region: req.Region},
					rule.ML == policy.MLShadow)
				if v := d.plan.Variant; v != nil {
					d.Experiment, d.Variant = v.ID.Experiment, v.ID.Variant
				}
			}
			if block {
				d.Action, d.Reason, d.RetryAfterMS = ActionBlock, ReasonLabel, -1
				p.record(req, &d)
				return d
			}
			limit, m = rule.Budget(mult)
			d.Limit, d.Multiplier, d.Budget, d.Reason = limit.Rate, m, limit, ReasonLabel
		}
	}
	mode := rule.ML
	if allowed || labelled {
		mode = policy.MLOff
	}

	// Experiments assignment and stage 2, once per key-epoch.
	mlReason := ""
	if mode != policy.MLOff {
		pl := p.o.Experiments.Assign(experiments.Unit{Key: req.Key, Tenant: req.Tenant, Tier: rule.Tier, Region: req.Region},
			mode == policy.MLShadow)
		c := p.choose(req.Key, rule, pl)
		d.plan, d.Chosen = pl, true
		d.Risk, d.FeaturesHash = c.risk, c.featuresHash
		d.ModelVersion = modelVersion(c.model)
		switch {
		case pl.Variant != nil:
			d.Experiment, d.Variant = pl.Variant.ID.Experiment, pl.Variant.ID.Variant
		case pl.Shadow:
			d.Variant = VariantShadow
		default:
			d.Variant = VariantBandit
		}
		switch {
		case pl.Static:
			// The deterministic budget d already holds; no fallback.
		case c.fallback != 0:
			mlReason = fallbackReasons[c.fallback]
			d.Fallback, d.Reason, d.Source = true, mlReason, SourceFallback
			if p.ev.Fallback != nil {
				p.ev.Fallback(mlReason)
			}
		case pl.Shadow:
			if p.ev.Shadow != nil {
				p.ev.Shadow(p.armName(pl, c.arm))
			}
		default:
			// Stage 3: the multiplier, and auto_block on risk.
			limit, m = rule.Budget(c.multiplier)
			d.Limit, d.Multiplier, d.Budget = limit.Rate, m, limit
			d.Arm, d.Propensity, d.Source = p.armName(pl, c.arm), c.propensity, SourceML
			if rule.AutoBlock && c.risk >= p.cfg.BlockThreshold {
				d.Action, d.Reason, d.RetryAfterMS = ActionBlock, ReasonRisk, -1
				p.record(req, &d)
				return d
			}
		}
	}

	// Stage 3: the limiter.
	res, err := p.o.Limiter.Decide(ctx, limiter.Key{Name: req.Key, Scope: rule.Scope}, limit, req.Cost)
	if err != nil {
		d.Action, d.Reason, d.RetryAfterMS = ActionThrottle, ReasonInvalidLimit, -1
		p.record(req, &d)
		return d
	}
	d.fill(res)
	var daily limiter.Limit
	if q := p.dailyQuota(rule); q > 0 {
		daily = policy.DailyLimit(q, m)
		d.Daily = daily.Rate
	}
	if d.Daily > 0 && res.OK() {
		// The second window, after the first so that a request the rate
		// refuses does not spend the day's budget.
		day, err := p.o.Limiter.Decide(ctx, limiter.Key{Name: req.Key, Scope: rule.DailyScope}, daily, req.Cost)
		if err == nil && !day.OK() {
			d.Action, d.Reason, d.Remaining = ActionThrottle, ReasonDailyQuota, 0
			d.RetryAfterMS, d.ResetMS = ceilMillis(day.RetryAfter), ceilMillis(day.ResetAfter)
			if day.RetryAfter < 0 {
				d.RetryAfterMS = -1
			}
		}
		if day.Fallback && !res.Fallback {
			d.Fallback, d.Source = true, SourceFallback
			if d.Action == ActionAllow {
				d.Reason = day.Reason
			}
		}
	}
	if mlReason != "" && !res.Fallback {
		d.Fallback, d.Reason, d.Source = true, mlReason, SourceFallback
	}
	p.record(req, &d)
	return d
}

// record feeds the decision back: the key's variant counters, its
// features and its epoch's outcome counts; then Events.Decided.
func (p *Pipeline) record(req *Request, d *Decision) {
	if v := d.plan.Variant; v != nil {
		p.o.Experiments.Count(v, req.Key, d.Rule.Tier, d.Rule.Enterprise(), d.Action != ActionAllow)
	}
	used := 1.0
	if b := d.Budget.Burst; b > 0 && d.Action == ActionAllow {
		used = 1 - float64(d.Remaining)/float64(b)
	}
	d.At = p.now()
	p.feats.Observe(req.Key, features.Observation{
		Endpoint: req.Endpoint, ClientIP: req.ClientIP, Cost: req.Cost, Tier: features.TierOf(d.Rule.Tier, d.Rule.Enterprise()),
		Throttled: d.Action != ActionAllow, BudgetUsed: used, Outcome: req.Outcome(),
	}, d.At)
	if p.ev.Observed != nil {
		p.ev.Observed(req.Key)
	}
	if d.Rule.DailyFitted && p.o.Usage != nil && d.Reason != ReasonLabel && d.Reason != ReasonDenyList {
		// Demand, as seed 004's usage table holds it: what the key asked
		// for, served or not; a key a label holds is malicious anyway.
		p.o.Usage.Record(d.Rule.Tier, d.Rule.Scope, req.Key, req.Cost, d.At)
	}
	if d.Chosen {
		p.count(req.Key, d.Action)
	}
	if p.ev.Decided != nil {
		p.ev.Decided(*req, *d)
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
		d.Fallback, d.Reason, d.Source = true, res.Reason, SourceFallback
	}
}

// safeDecision answers after a panic: the in-memory store with this
// instance's share, so even a bug never fails open without a bound.
func (p *Pipeline) safeDecision(req *Request, rule *policy.Rule, limit limiter.Limit, d Decision) Decision {
	if p.o.Memory == nil {
		d.Action, d.RetryAfterMS = ActionThrottle, -1
	} else if res, err := p.o.Memory.Decide(context.Background(), limiter.Key{Name: req.Key, Scope: rule.Scope}, limit.Scale(p.o.Share), req.Cost); err != nil {
		d.Action, d.RetryAfterMS = ActionThrottle, -1
	} else {
		d.fill(res)
	}
	d.Fallback, d.Reason, d.Source = true, ReasonInternalError, SourceFallback
	return d
}

func ceilMillis(d time.Duration) int64 {
	if d <= 0 {
		return 0
	}
	return int64((d + time.Millisecond - 1) / time.Millisecond)
}

func modelVersion(v uint64) string {
	if v == 0 {
		return ""
	}
	return "v" + strconv.FormatUint(v, 10)
}
