package serving

// Experiments in serving: step 5 of the request path (assignment), the
// per-variant counters behind the experiment metrics and the guardrails,
// the guardrail loop that stops a harmful variant, and the attribution of
// labels to variants.
//
// Policy semantics. A unit's variant sets how stage 2 treats its key, but
// only where the tenant policy lets ML run (ml: on or shadow, key not
// allow- or deny-listed); elsewhere the unit is in no experiment. The more
// conservative of the policy and the variant wins:
//
//	variant static  → the deterministic budget (base × 1, clamped); no
//	                  bandit draw; logged (see below).
//	variant shadow  → the bandit's choice is computed and logged, the
//	                  deterministic budget enforced.
//	variant bandit  → as ml: on, the bandit's multiplier enforced; under a
//	                  policy with ml: shadow it stays shadow.
//
// A stopped variant's units get the control's policy (static) and stay
// attributed to the variant (intention to treat).
//
// Per-variant bandit settings. Exploration is applied per call
// (bandit.Snapshot.ChooseScaled, with exact propensities). A bandit
// variant whose lambda, posterior and reward_mode are ml:'s and whose arms
// are a contiguous run of ml.arms draws from the main model, among those
// arms only (within the rule's floor and ceiling). Any other bandit
// variant has a model of its own (config.ML.OwnModel, rewards.VariantModel):
// the learner trains it only on that variant's epochs, with the variant's
// arms, prior, posterior and reward mode, and its decisions are logged
// with the model's key. Until that model is published its units fall back
// (no_model) to the deterministic budget. Shadow variants enforce the
// deterministic budget, so there is nothing to train a model of their own
// on: they draw from the main model, and other settings are reported at
// start.
//
// Decision log. A unit in an experiment is logged with experiment and
// variant (the names) and policy, what was enforced: "bandit" (the logged
// arm was the bandit's and was enforced: the learner learns from it),
// "shadow" (the bandit's would-be arm and propensity, the deterministic
// budget enforced) or "static" (a static variant, a stopped one, or an ML
// fallback: the arm nearest the enforced multiplier, 1 clamped to [floor,
// ceiling], that multiplier, propensity 1 and the key's context — the
// enforced action and its probability, which is what off-policy
// evaluation and the report's control arm need).

import (
	"context"
	"errors"
	"hash/maphash"
	"slices"
	"sync"
	"sync/atomic"
	"time"

	"github.com/devflow/flowguard/bandit"
	"github.com/devflow/flowguard/experiments"
	"github.com/devflow/flowguard/internal/config"
	"github.com/devflow/flowguard/pipeline"
	"github.com/devflow/flowguard/policy"
	"github.com/devflow/flowguard/rewards"
	"github.com/prometheus/client_golang/prometheus"
)

// Complaint sources: a label with abusive: false whose source is one of
// these is a false-throttle complaint (counted per variant, and judged by
// the complaints guardrail). Other abusive: false labels only clear a key.
var complaintSources = []string{"complaint", "false_throttle", "customer_complaint"}

// isComplaint reports whether l is a false-throttle complaint.
func isComplaint(l rewards.Label) bool {
	return !l.Abusive && slices.Contains(complaintSources, l.Source)
}

// Tier slots of the per-variant counters.
const (
	tierFree = iota
	tierPro
	tierEnterprise
	tierOther
	numTiers
)

var tierNames = [numTiers]string{"free", "pro", "enterprise", "other"}

func tierSlot(tier string) int {
	switch tier {
	case "free":
		return tierFree
	case "pro":
		return tierPro
	case "enterprise":
		return tierEnterprise
	}
	return tierOther
}

// variantCounters are one variant's cumulative counts since start, kept by
// name across reloads. The request path only adds to them (atomics, no
// lock); the guardrail loop and /metrics read them.
type variantCounters struct {
	decisions      [numTiers]atomic.Int64
	throttled      [numTiers]atomic.Int64 // throttle or block
	legitRequests  atomic.Int64           // decisions for keys not labelled abusive
	legitThrottled atomic.Int64
	abuseServed    atomic.Int64 // allowed requests of keys labelled abusive
	abuseLabels    atomic.Int64
	complaints     atomic.Int64
	clears         atomic.Int64 // abusive: false labels that are not complaints
	_              [64]byte     // keep the next variant's counters off this cache line
}

// counts returns the guardrail view of the counters.
func (c *variantCounters) counts() experiments.Counts {
	var n experiments.Counts
	for t := range numTiers {
		n.Requests += c.decisions[t].Load()
		n.Throttled += c.throttled[t].Load()
	}
	n.EnterpriseRequests = c.decisions[tierEnterprise].Load()
	n.EnterpriseThrottled = c.throttled[tierEnterprise].Load()
	n.LegitRequests = c.legitRequests.Load()
	n.LegitThrottled = c.legitThrottled.Load()
	n.Complaints = c.complaints.Load()
	return n
}

// expVariant is one variant of the running experiments file as the
// request path sees it. It is immutable; a reload builds new ones.
type expVariant struct {
	id experiments.VariantID
	c  *variantCounters
	// explore multiplies the model's exploration scale: the variant's
	// bandit.exploration over ml.exploration; 1 without bandit settings.
	explore float64
	// arms is the part of ml.arms the variant's bandit.arms names (a
	// contiguous run of them); Hi 0: all of them.
	arms bandit.ArmRange
	// model is the key of the variant's own model (rewards.VariantModel);
	// "": it draws from the main model. armSet is that model's arms.
	model  string
	armSet bandit.ArmSet
}

// plan is how stage 2 treats a key for its epoch. It is comparable: a key
// whose plan changes (a reload, a stopped variant) starts a new epoch.
type plan struct {
	shadow bool        // compute and log the bandit's choice, enforce the deterministic budget
	static bool        // the deterministic budget, no bandit draw
	v      *expVariant // nil: in no experiment
}

// expGen is one experiments file in force: its assigner (whose stop flags
// the guardrail loop sets) and its variants by index.
type expGen struct {
	a        *experiments.Assigner
	variants [][]*expVariant // [experiment index][variant index]
}

// expRuntime is the serving side of experiments. The request path reads
// cur and adds to counters without locks; everything else takes mu.
type expRuntime struct {
	cur   atomic.Pointer[expGen] // nil: experiments off
	every time.Duration
	// ml is the main model's settings: variants' exploration is relative
	// to its, and whether a variant has a model of its own depends on it.
	ml   config.ML
	ring int // snapshots in the guardrail window

	mu       sync.Mutex
	counters map[experiments.VariantID]*variantCounters
	stops    *experiments.StopLog // nil: stops held in memory only
	memStops map[experiments.VariantID]experiments.StopRecord
	window   []map[experiments.VariantID]experiments.Counts // oldest first

	abusive abusiveKeys
	seen    labelIDs

	trips        *prometheus.CounterVec
	unattributed prometheus.Counter
}

func newExpRuntime(cfg config.Experiments, m *metrics, ml config.ML) (*expRuntime, error) {
	e := &expRuntime{
		ml:       ml,
		every:    cfg.GuardrailEvery,
		ring:     int(cfg.GuardrailWindow/cfg.GuardrailEvery) + 1,
		counters: map[experiments.VariantID]*variantCounters{},
		memStops: map[experiments.VariantID]experiments.StopRecord{},
		seen:     labelIDs{max: 1 << 17, ids: map[string]struct{}{}},
	}
	e.abusive.init(1 << 20)
	if cfg.StopLog != "" {
		l, err := experiments.LoadStops(cfg.StopLog)
		if err != nil {
			return nil, err
		}
		e.stops = l
	}
	e.trips = prometheus.NewCounterVec(prometheus.CounterOpts{
		Name: "flowguard_experiment_guardrail_trips_total",
		Help: "Guardrails that tripped and stopped a variant, by experiment, variant and guardrail metric.",
	}, []string{"experiment", "variant", "guardrail"})
	e.unattributed = prometheus.NewCounter(prometheus.CounterOpts{
		Name: "flowguard_experiment_labels_unattributed_total",
		Help: "Labels over POST /v1/labels whose key is in no experiment variant.",
	})
	m.reg.MustRegister(e.trips, e.unattributed, (*expCollector)(e))
	return e, nil
}

// install builds the generation for cfg (nil: experiments off), applies
// the stops in force and makes it current. The previous generation's
// keys start a new epoch under the new plan on their next request.
func (e *expRuntime) install(cfg *experiments.Config) (*expGen, error) {
	if cfg == nil {
		e.cur.Store(nil)
		return nil, nil
	}
	a, err := experiments.NewAssigner(cfg)
	if err != nil {
		return nil, err
	}
	g := &expGen{a: a, variants: make([][]*expVariant, len(cfg.Experiments))}
	own := map[string]string{} // variant model id → key
	for _, vm := range e.ml.VariantModels(cfg) {
		own[vm.ID] = vm.Key()
	}
	e.mu.Lock()
	for i, x := range cfg.Experiments {
		g.variants[i] = make([]*expVariant, len(x.Variants))
		for j, v := range x.Variants {
			id := experiments.VariantID{Experiment: x.Name, Variant: v.Name}
			c := e.counters[id]
			if c == nil {
				c = new(variantCounters)
				e.counters[id] = c
			}
			ev := &expVariant{id: id, c: c, explore: 1}
			switch {
			case v.Bandit == nil:
			case own[id.Experiment+"/"+id.Variant] != "":
				// The variant's model has exploration scale 1.
				ev.model, ev.armSet, ev.explore = own[id.Experiment+"/"+id.Variant], v.Bandit.Arms, v.Bandit.Exploration
			default:
				ev.arms, _ = e.ml.Arms.Run(v.Bandit.Arms)
				if v.Bandit.Exploration > 0 && e.ml.Exploration > 0 {
					ev.explore = v.Bandit.Exploration / e.ml.Exploration
				}
			}
			g.variants[i][j] = ev
		}
	}
	defer e.mu.Unlock()
	// Records of variants this file lacks are kept in the log and apply
	// again if the variant comes back. Stops are applied and the generation
	// swapped in under mu, so that a concurrent guardrail stop is not lost.
	err = a.ApplyStops(e.activeStopsLocked())
	e.cur.Store(g)
	return g, err
}

func (e *expRuntime) activeStopsLocked() []experiments.StopRecord {
	if e.stops != nil {
		return e.stops.Active()
	}
	recs := make([]experiments.StopRecord, 0, len(e.memStops))
	for _, r := range e.memStops {
		recs = append(recs, r)
	}
	return recs
}

// assign is step 5: the unit's plan for stage 2, given the ML mode the
// policy allows (on or shadow). It does not allocate.
func (e *expRuntime) assign(req *DecideRequest, rule *policy.Rule, mode policy.MLMode) plan {
	p := plan{shadow: mode == policy.MLShadow}
	g := e.cur.Load()
	if g == nil {
		return p
	}
	as, ok := g.a.Primary(experiments.Unit{Key: req.Key, Tenant: req.Tenant, Tier: rule.Tier, Region: req.Region})
	if !ok {
		return p
	}
	p.v = g.variants[as.ExperimentIndex][as.VariantIndex]
	switch as.Policy {
	case experiments.PolicyStatic:
		p.static, p.shadow = true, false
	case experiments.PolicyShadow:
		p.shadow = true
	}
	return p
}

// count adds one decision to its variant's counters.
func (e *expRuntime) count(v *expVariant, key, tier, action string) {
	c := v.c
	t := tierSlot(tier)
	c.decisions[t].Add(1)
	throttled := action != ActionAllow
	if throttled {
		c.throttled[t].Add(1)
	}
	switch {
	case !e.abusive.has(key):
		c.legitRequests.Add(1)
		if throttled {
			c.legitThrottled.Add(1)
		}
	case !throttled:
		c.abuseServed.Add(1)
	}
}

// snapshot returns every variant's cumulative counts.
func (e *expRuntime) snapshot() map[experiments.VariantID]experiments.Counts {
	e.mu.Lock()
	defer e.mu.Unlock()
	out := make(map[experiments.VariantID]experiments.Counts, len(e.counters))
	for id, c := range e.counters {
		out[id] = c.counts()
	}
	return out
}

// windowCounts records the cumulative counts now and returns the counts of
// the sliding window: now minus the oldest snapshot kept (zero at start).
func (e *expRuntime) windowCounts() map[experiments.VariantID]experiments.Counts {
	now := e.snapshot()
	e.mu.Lock()
	defer e.mu.Unlock()
	var oldest map[experiments.VariantID]experiments.Counts
	if len(e.window) == e.ring {
		oldest = e.window[0]
		e.window = e.window[1:]
	}
	e.window = append(e.window, now)
	out := make(map[experiments.VariantID]experiments.Counts, len(now))
	for id, c := range now {
		o := oldest[id]
		out[id] = experiments.Counts{
			Requests: c.Requests - o.Requests, Throttled: c.Throttled - o.Throttled,
			EnterpriseRequests: c.EnterpriseRequests - o.EnterpriseRequests, EnterpriseThrottled: c.EnterpriseThrottled - o.EnterpriseThrottled,
			LegitRequests: c.LegitRequests - o.LegitRequests, LegitThrottled: c.LegitThrottled - o.LegitThrottled,
			Complaints: c.Complaints - o.Complaints,
		}
	}
	return out
}

// startExperiments sets up experiments for a new Server.
func (s *Server) startExperiments(cfg *config.Loaded) error {
	e, err := newExpRuntime(cfg.Experiments, s.metrics, cfg.ML)
	if err != nil {
		return err
	}
	s.exp = e
	if cfg.Experiments.StopLog == "" && cfg.ExperimentsConfig != nil {
		s.log.Warn("experiments.stop_log is not set: a variant a guardrail stops resumes after a restart")
	}
	return s.installExperiments(cfg)
}

// installExperiments makes cfg's experiments current (start and reload).
func (s *Server) installExperiments(cfg *config.Loaded) error {
	g, err := s.exp.install(cfg.ExperimentsConfig)
	if g == nil && err != nil {
		return err
	}
	if err != nil {
		s.log.Warn("stop records name variants the experiments file lacks; they apply if those variants return", "err", err)
	}
	if s.ml != nil && s.ml.local != nil {
		// The embedded learner trains the variant models of this file from
		// now on; ones it already had keep what they learned.
		ch, err := s.ml.local.SetVariants(s.exp.ml.VariantModels(cfg.ExperimentsConfig))
		if err != nil {
			return err
		}
		if !ch.Empty() {
			s.log.Info("variant models changed", "added", ch.Added, "dropped", ch.Removed)
		}
	}
	if g == nil {
		return nil
	}
	ec := g.a.Config()
	for _, x := range ec.Experiments {
		for _, v := range x.Variants {
			if v.Policy == experiments.PolicyShadow && s.exp.ml.OwnModel(v.Bandit) {
				s.log.Warn("shadow variant's lambda, posterior or reward_mode differ from ml:, or its arms are not a run of ml.arms: a shadow variant enforces the deterministic budget, so nothing could train a model of its own; it draws from the main model",
					"experiment", x.Name, "variant", v.Name)
			}
			if g.a.Stopped(x.Name, v.Name) {
				s.log.Warn("experiment variant stopped: its units get the control's policy until `flowguard experiments resume`",
					"experiment", x.Name, "variant", v.Name)
			}
		}
	}
	s.log.Info("experiments loaded", "file", ec.Name, "digest", ec.Digest, "experiments", len(ec.Experiments))
	return nil
}

// runGuardrails evaluates the guardrails every experiments.guardrail_every
// until ctx is cancelled.
func (s *Server) runGuardrails(ctx context.Context) {
	t := time.NewTicker(s.exp.every)
	defer t.Stop()
	for {
		select {
		case <-ctx.Done():
			return
		case <-t.C:
			s.checkGuardrails(time.Now())
		}
	}
}

// checkGuardrails judges the window's counts and stops every variant that
// trips a guardrail.
func (s *Server) checkGuardrails(now time.Time) {
	counts := s.exp.windowCounts()
	g := s.exp.cur.Load()
	if g == nil {
		return
	}
	trips, err := experiments.CheckGuardrails(g.a.Config(), counts)
	if err != nil {
		s.log.Error("guardrail counts are inconsistent; those guardrails were skipped", "err", err)
	}
	for _, t := range trips {
		if !g.a.Stopped(t.Experiment, t.Variant) {
			s.stopVariant(g, t, now)
		}
	}
}

// stopVariant persists the stop, applies it, and says why: log line,
// audit record and metric. The stop applies even if it cannot be
// persisted: harm stops now, and the error says a restart would resume it.
func (s *Server) stopVariant(g *expGen, t experiments.Trip, now time.Time) {
	digest := g.a.Config().Digest
	rec := t.StopRecord(digest, now)
	s.exp.mu.Lock()
	var perr error
	if s.exp.stops != nil {
		perr = s.exp.stops.Append(rec)
		if errors.Is(perr, experiments.ErrAlreadyStopped) {
			perr = nil
		}
	} else {
		s.exp.memStops[rec.ID()] = rec
	}
	if cur := s.exp.cur.Load(); cur != nil {
		g = cur // a reload may have swapped in a new generation
	}
	err := g.a.Stop(t.Experiment, t.Variant)
	s.exp.mu.Unlock()
	if err != nil {
		s.log.Error("cannot stop experiment variant", "experiment", t.Experiment, "variant", t.Variant, "err", err)
		return
	}
	s.exp.trips.WithLabelValues(t.Experiment, t.Variant, string(t.Metric)).Inc()
	s.log.Warn("guardrail tripped: experiment variant stopped, its units get the control's policy",
		"experiment", t.Experiment, "variant", t.Variant, "guardrail", string(t.Metric),
		"value", t.Value, "threshold", t.Threshold, "reason", t.Reason)
	if perr != nil {
		s.log.Error("the stop could not be written to the stop log: a restart would resume the variant", "err", perr)
	}
	if s.audit != nil {
		s.audit.Record(AuditRecord{
			Time: now.UTC().Format("2006-01-02T15:04:05.000000Z"), Decision: "experiment_stop",
			Endpoint: t.Experiment + "/" + t.Variant, PolicyVersion: digest,
			Reason: "guardrail " + string(t.Metric) + ": " + t.Reason,
		})
		s.metrics.auditRecords.Inc()
	}
}

// attributeLabels counts accepted labels against the variant of their key
// and keeps the set of keys labelled abusive. A label_id seen before is
// not counted again.
func (s *Server) attributeLabels(labels []rewards.Label) {
	for _, l := range labels {
		if !s.exp.seen.add(l.LabelID) {
			continue
		}
		if l.Abusive {
			s.exp.abusive.add(l.Key)
		} else {
			s.exp.abusive.remove(l.Key)
		}
		v := s.labelVariant(l)
		if v == nil {
			s.exp.unattributed.Inc()
			continue
		}
		switch {
		case l.Abusive:
			v.c.abuseLabels.Add(1)
		case isComplaint(l):
			v.c.complaints.Add(1)
		default:
			v.c.clears.Add(1)
		}
	}
}

// labelVariant finds the variant of a label's key: the one of its current
// epoch, else its assignment with the tier of the label's tenant. A label
// carries no region, so a key of a region-targeted experiment whose epoch
// has ended is not attributed.
func (s *Server) labelVariant(l rewards.Label) *expVariant {
	if c, ok := s.ml.current(l.Key); ok && c.plan.v != nil {
		return c.plan.v
	}
	rule := s.policies.Load().Resolve(l.Tenant, "")
	if rule.ML == policy.MLOff {
		return nil
	}
	return s.exp.assign(&DecideRequest{Key: l.Key, Tenant: l.Tenant}, rule, rule.ML).v
}

// closeExperiments closes the stop log.
func (s *Server) closeExperiments() {
	if s.exp != nil && s.exp.stops != nil {
		if err := s.exp.stops.Close(); err != nil {
			s.log.Error("closing the stop log", "err", err)
		}
	}
}

// run is stage 2 for a key's epoch under its plan: the static path or
// the bandit.
func (m *mlStage) run(key string, rule *policy.Rule, p plan) epochChoice {
	if !p.static {
		return m.stage2(key, rule, p)
	}
	start := m.now()
	c := epochChoice{started: start.UnixMicro(), expires: start.Add(m.cfg.Epoch).UnixMicro(), multiplier: 1,
		propensity: 1, arm: -1, plan: p}
	return m.logDeterministic(key, rule, c)
}

// logDeterministic logs a key-epoch of an experiment unit whose enforced
// budget is the deterministic one (static variant or ML fallback): the arm
// nearest the enforced multiplier with propensity 1, as variant "shadow"
// (not learned from). Units in no experiment, and keys the feature store
// cannot track, are not logged.
func (m *mlStage) logDeterministic(key string, rule *policy.Rule, c epochChoice) epochChoice {
	if c.plan.v == nil || m.dlog == nil || len(m.arms) == 0 {
		return c
	}
	if c.started == 0 {
		c.started = m.now().UnixMicro()
	}
	at := time.UnixMicro(c.started)
	var buf [ctxDim]float64
	x, tracked := m.feats.VectorTracked(key, at, buf[:0])
	if !tracked {
		return c
	}
	risk := m.risk.Load().Score(x)
	x = append(x, risk)
	_, mult := rule.Budget(1)
	arm := m.arms.Nearest(mult)
	c.key, c.id = key, m.idSeq.Add(1)
	c.risk, c.featuresHash = risk, hashVector(x)
	e := m.keyEpoch(key, rule, at, time.Duration(c.expires-c.started)*time.Microsecond, c.plan, c.id)
	e.Model = "" // the deterministic budget, drawn from no model
	e.Policy, e.Arm, e.ArmName, e.Multiplier, e.Propensity, e.Context = rewards.PolicyStatic, arm, m.arms[arm].Name, mult, 1, x
	if snap := m.model.Load(); snap != nil {
		e.ModelVersion = snap.Version()
	}
	m.dlog.Log(pipeline.DecisionRecord(e))
	return c
}

// abusiveKeys is the set of keys labelled abusive (and not cleared since),
// sharded; has is lock-free while the set is empty.
type abusiveKeys struct {
	n      atomic.Int64
	max    int64
	seed   maphash.Seed
	shards [64]struct {
		mu   sync.RWMutex
		keys map[string]struct{}
	}
}

func (a *abusiveKeys) init(max int64) {
	a.max, a.seed = max, maphash.MakeSeed()
	for i := range a.shards {
		a.shards[i].keys = map[string]struct{}{}
	}
}

func (a *abusiveKeys) shard(key string) int { return int(maphash.String(a.seed, key) & 63) }

func (a *abusiveKeys) has(key string) bool {
	if a.n.Load() == 0 {
		return false
	}
	sh := &a.shards[a.shard(key)]
	sh.mu.RLock()
	_, ok := sh.keys[key]
	sh.mu.RUnlock()
	return ok
}

// add adds key unless the set is full.
func (a *abusiveKeys) add(key string) {
	sh := &a.shards[a.shard(key)]
	sh.mu.Lock()
	if _, ok := sh.keys[key]; !ok && a.n.Load() < a.max {
		sh.keys[key] = struct{}{}
		a.n.Add(1)
	}
	sh.mu.Unlock()
}

func (a *abusiveKeys) remove(key string) {
	sh := &a.shards[a.shard(key)]
	sh.mu.Lock()
	if _, ok := sh.keys[key]; ok {
		delete(sh.keys, key)
		a.n.Add(-1)
	}
	sh.mu.Unlock()
}

// labelIDs remembers the last max label ids, to count each label once.
type labelIDs struct {
	mu    sync.Mutex
	max   int
	ids   map[string]struct{}
	order []string
}

// add reports whether id is new.
func (l *labelIDs) add(id string) bool {
	l.mu.Lock()
	defer l.mu.Unlock()
	if _, ok := l.ids[id]; ok {
		return false
	}
	if len(l.order) >= l.max {
		delete(l.ids, l.order[0])
		l.order = l.order[1:]
	}
	l.ids[id] = struct{}{}
	l.order = append(l.order, id)
	return true
}

// expCollector exposes the per-variant counters at scrape time.
type expCollector expRuntime

var (
	descExpDecisions = prometheus.NewDesc("flowguard_experiment_decisions_total",
		"Decisions for units in an experiment, by experiment, variant and tier (free, pro, enterprise, other).",
		[]string{"experiment", "variant", "tier"}, nil)
	descExpThrottles = prometheus.NewDesc("flowguard_experiment_throttles_total",
		"Decisions that throttled or blocked a unit in an experiment, by experiment, variant and tier.",
		[]string{"experiment", "variant", "tier"}, nil)
	descExpAbuseServed = prometheus.NewDesc("flowguard_experiment_abuse_served_total",
		"Requests allowed for keys labelled abusive (after the label arrived), by experiment and variant.",
		[]string{"experiment", "variant"}, nil)
	descExpLabels = prometheus.NewDesc("flowguard_experiment_labels_total",
		"Labels over POST /v1/labels attributed to a variant, by kind: abusive, complaint (abusive: false with a complaint source) or clear.",
		[]string{"experiment", "variant", "kind"}, nil)
	descExpComplaints = prometheus.NewDesc("flowguard_experiment_complaints_total",
		"False-throttle complaints (labels with abusive: false and source complaint, false_throttle or customer_complaint), by experiment and variant.",
		[]string{"experiment", "variant"}, nil)
	descExpStopped = prometheus.NewDesc("flowguard_experiment_variant_stopped",
		"1 while a variant of the experiments file in force is stopped (its units get the control's policy).",
		[]string{"experiment", "variant"}, nil)
)

func (c *expCollector) Describe(ch chan<- *prometheus.Desc) {
	for _, d := range []*prometheus.Desc{descExpDecisions, descExpThrottles, descExpAbuseServed, descExpLabels, descExpComplaints, descExpStopped} {
		ch <- d
	}
}

func (c *expCollector) Collect(ch chan<- prometheus.Metric) {
	e := (*expRuntime)(c)
	e.mu.Lock()
	ids := make([]experiments.VariantID, 0, len(e.counters))
	for id := range e.counters {
		ids = append(ids, id)
	}
	counters := make([]*variantCounters, len(ids))
	for i, id := range ids {
		counters[i] = e.counters[id]
	}
	e.mu.Unlock()
	counter := func(d *prometheus.Desc, v int64, labels ...string) {
		ch <- prometheus.MustNewConstMetric(d, prometheus.CounterValue, float64(v), labels...)
	}
	for i, id := range ids {
		vc := counters[i]
		x, v := id.Experiment, id.Variant
		for t := range numTiers {
			counter(descExpDecisions, vc.decisions[t].Load(), x, v, tierNames[t])
			counter(descExpThrottles, vc.throttled[t].Load(), x, v, tierNames[t])
		}
		counter(descExpAbuseServed, vc.abuseServed.Load(), x, v)
		counter(descExpLabels, vc.abuseLabels.Load(), x, v, "abusive")
		counter(descExpLabels, vc.complaints.Load(), x, v, "complaint")
		counter(descExpLabels, vc.clears.Load(), x, v, "clear")
		counter(descExpComplaints, vc.complaints.Load(), x, v)
	}
	if g := e.cur.Load(); g != nil {
		for _, vs := range g.variants {
			for _, v := range vs {
				stopped := 0.0
				if g.a.Stopped(v.id.Experiment, v.id.Variant) {
					stopped = 1
				}
				ch <- prometheus.MustNewConstMetric(descExpStopped, prometheus.GaugeValue, stopped, v.id.Experiment, v.id.Variant)
			}
		}
	}
}
