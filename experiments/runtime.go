package experiments

// The experiments runtime: what a running service does with an experiments
// file. Assignment of a request's unit to its variant's plan (step 4 of the
// request path), the per-variant counters behind the experiment metrics
// and the guardrails, the guardrail loop that stops a harmful variant, the
// stop log, and the attribution of labels to variants. serving wires it;
// the simulator calls Assign the same way.
//
// Policy semantics. A unit's variant sets how stage 2 treats its key, but
// only where the tenant policy lets ML run (ml: on or shadow, key not
// allow- or deny-listed); elsewhere the unit is in no experiment. The more
// conservative of the policy and the variant wins:
//
//	variant static  → the deterministic budget (base × 1, clamped); no
//	                  bandit draw; logged.
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
// variant has a model of its own (RuntimeOptions.OwnModels): the learner
// trains it only on that variant's epochs, and its decisions are logged
// with the model's key. Until that model is published its units fall back
// (no_model) to the deterministic budget. Shadow variants enforce the
// deterministic budget, so there is nothing to train a model of their own
// on: they draw from the main model.

import (
	"context"
	"errors"
	"hash/maphash"
	"log/slog"
	"slices"
	"sync"
	"sync/atomic"
	"time"

	"github.com/prometheus/client_golang/prometheus"

	"github.com/devflow/flowguard/bandit"
	"github.com/devflow/flowguard/rewards"
)

// ComplaintSources are the label sources that make a label with abusive:
// false a false-throttle complaint (counted per variant, and judged by the
// complaints guardrail). Other abusive: false labels only clear a key.
var ComplaintSources = []string{"complaint", "false_throttle", "customer_complaint"}

// IsComplaint reports whether l is a false-throttle complaint.
func IsComplaint(l rewards.Label) bool {
	return !l.Abusive && slices.Contains(ComplaintSources, l.Source)
}

// RuntimeOptions configure a Runtime.
type RuntimeOptions struct {
	// GuardrailEvery is how often Run judges the guardrails; GuardrailWindow
	// is the sliding window they judge. Required, Window ≥ Every.
	GuardrailEvery, GuardrailWindow time.Duration
	// StopLog is the stop log's file; "": stops are held in memory only,
	// and a variant a guardrail stopped resumes after a restart.
	StopLog string
	// Arms and Exploration are the main model's (ml.arms, ml.exploration):
	// a variant's exploration is relative to the main model's.
	Arms        bandit.ArmSet
	Exploration float64
	// OwnModels returns, for a file, the model key of each variant that has
	// a model of its own (rewards.VariantModel.Key), by "experiment/variant".
	// nil: every variant draws from the main model.
	OwnModels func(*Config) map[string]string
	// Logger receives the stop lines. Default: discard.
	Logger *slog.Logger
}

// Runtime is the running experiments file. The request path calls Assign
// and Count, which take no lock; everything else takes mu.
type Runtime struct {
	o   RuntimeOptions
	log *slog.Logger
	cur atomic.Pointer[generation] // nil: experiments off

	ring int // snapshots in the guardrail window

	mu       sync.Mutex
	counters map[VariantID]*variantCounters
	stops    *StopLog // nil: stops held in memory only
	memStops map[VariantID]StopRecord
	window   []map[VariantID]Counts // oldest first

	abusive abusiveKeys
	seen    labelIDs

	trips        *prometheus.CounterVec
	unattributed prometheus.Counter
}

// LiveVariant is one variant of the file in force as the request path sees it.
// It is immutable; an Install builds new ones.
type LiveVariant struct {
	ID VariantID
	c  *variantCounters
	// Explore multiplies the model's exploration scale: the variant's
	// bandit.exploration over ml.exploration; 1 without bandit settings.
	Explore float64
	// Arms is the part of ml.arms the variant's bandit.arms names (a
	// contiguous run of them); Hi 0: all of them.
	Arms bandit.ArmRange
	// Model is the key of the variant's own model (rewards.VariantModel);
	// "": it draws from the main model. ArmSet is that model's arms.
	Model  string
	ArmSet bandit.ArmSet
}

// Plan is how stage 2 treats a key for its epoch. It is comparable: a key
// whose plan changes (a reload, a stopped variant) starts a new epoch.
type Plan struct {
	Shadow  bool         // compute and log the bandit's choice, enforce the deterministic budget
	Static  bool         // the deterministic budget, no bandit draw
	Variant *LiveVariant // nil: in no experiment
}

// Policy is what the plan enforces, as a variant's policy.
func (p Plan) Policy() Policy {
	switch {
	case p.Static:
		return PolicyStatic
	case p.Shadow:
		return PolicyShadow
	}
	return PolicyBandit
}

// generation is one experiments file in force: its assigner (whose stop
// flags the guardrail loop sets) and its variants by index.
type generation struct {
	a        *Assigner
	variants [][]*LiveVariant // [experiment index][variant index]
}

// NewRuntime returns a runtime with no file installed, its stops loaded
// from o.StopLog.
func NewRuntime(o RuntimeOptions) (*Runtime, error) {
	if o.GuardrailEvery <= 0 || o.GuardrailWindow < o.GuardrailEvery {
		return nil, errors.New("experiments: guardrail_every must be positive and guardrail_window at least guardrail_every")
	}
	r := &Runtime{
		o:        o,
		log:      o.Logger,
		ring:     int(o.GuardrailWindow/o.GuardrailEvery) + 1,
		counters: map[VariantID]*variantCounters{},
		memStops: map[VariantID]StopRecord{},
		seen:     labelIDs{max: 1 << 17, ids: map[string]struct{}{}},
	}
	if r.log == nil {
		r.log = slog.New(slog.DiscardHandler)
	}
	r.abusive.init(1 << 20)
	if o.StopLog != "" {
		l, err := LoadStops(o.StopLog)
		if err != nil {
			return nil, err
		}
		r.stops = l
	}
	r.trips = prometheus.NewCounterVec(prometheus.CounterOpts{
		Name: "flowguard_experiment_guardrail_trips_total",
		Help: "Guardrails that tripped and stopped a variant, by experiment, variant and guardrail metric.",
	}, []string{"experiment", "variant", "guardrail"})
	r.unattributed = prometheus.NewCounter(prometheus.CounterOpts{
		Name: "flowguard_experiment_labels_unattributed_total",
		Help: "Labels whose key is in no experiment variant.",
	})
	return r, nil
}

// Collectors are the runtime's metrics, to register once.
func (r *Runtime) Collectors() []prometheus.Collector {
	return []prometheus.Collector{r.trips, r.unattributed, (*collector)(r)}
}

// ErrUnknownStops wraps the error Install returns when stop records name
// variants the new file lacks: the file is installed, and those records
// apply again if the variants come back.
var ErrUnknownStops = errors.New("stop records name variants the experiments file lacks")

// Install makes cfg the file in force (nil: experiments off), with the
// stops in force applied. The previous file's keys start a new epoch under
// their new plan on their next request. An error other than one wrapping
// ErrUnknownStops means nothing was installed.
func (r *Runtime) Install(cfg *Config) error {
	if cfg == nil {
		r.cur.Store(nil)
		return nil
	}
	a, err := NewAssigner(cfg)
	if err != nil {
		return err
	}
	g := &generation{a: a, variants: make([][]*LiveVariant, len(cfg.Experiments))}
	var own map[string]string
	if r.o.OwnModels != nil {
		own = r.o.OwnModels(cfg)
	}
	r.mu.Lock()
	defer r.mu.Unlock()
	for i, x := range cfg.Experiments {
		g.variants[i] = make([]*LiveVariant, len(x.Variants))
		for j, v := range x.Variants {
			id := VariantID{Experiment: x.Name, Variant: v.Name}
			c := r.counters[id]
			if c == nil {
				c = new(variantCounters)
				r.counters[id] = c
			}
			ev := &LiveVariant{ID: id, c: c, Explore: 1}
			switch {
			case v.Bandit == nil:
			case own[id.Experiment+"/"+id.Variant] != "":
				// The variant's model has exploration scale 1.
				ev.Model, ev.ArmSet, ev.Explore = own[id.Experiment+"/"+id.Variant], v.Bandit.Arms, v.Bandit.Exploration
			default:
				ev.Arms, _ = r.o.Arms.Run(v.Bandit.Arms)
				if v.Bandit.Exploration > 0 && r.o.Exploration > 0 {
					ev.Explore = v.Bandit.Exploration / r.o.Exploration
				}
			}
			g.variants[i][j] = ev
		}
	}
	// Stops are applied and the generation swapped in under mu, so that a
	// concurrent guardrail stop is not lost.
	err = a.ApplyStops(r.activeStopsLocked())
	r.cur.Store(g)
	if err != nil {
		return errors.Join(ErrUnknownStops, err)
	}
	return nil
}

func (r *Runtime) activeStopsLocked() []StopRecord {
	if r.stops != nil {
		return r.stops.Active()
	}
	recs := make([]StopRecord, 0, len(r.memStops))
	for _, rec := range r.memStops {
		recs = append(recs, rec)
	}
	return recs
}

// Config is the file in force; nil: experiments off.
func (r *Runtime) Config() *Config {
	if g := r.cur.Load(); g != nil {
		return g.a.Config()
	}
	return nil
}

// Stopped reports whether v is stopped in the file in force.
func (r *Runtime) Stopped(v *LiveVariant) bool {
	g := r.cur.Load()
	return g != nil && g.a.Stopped(v.ID.Experiment, v.ID.Variant)
}

// Variant returns the variant id names in the file in force; nil: none.
func (r *Runtime) Variant(id VariantID) *LiveVariant {
	if g := r.cur.Load(); g != nil {
		for _, vs := range g.variants {
			for _, v := range vs {
				if v.ID == id {
					return v
				}
			}
		}
	}
	return nil
}

// StoppedVariants are the variants of the file in force that are stopped.
func (r *Runtime) StoppedVariants() []VariantID {
	g := r.cur.Load()
	if g == nil {
		return nil
	}
	var out []VariantID
	for _, vs := range g.variants {
		for _, v := range vs {
			if g.a.Stopped(v.ID.Experiment, v.ID.Variant) {
				out = append(out, v.ID)
			}
		}
	}
	return out
}

// Assign returns the unit's plan for stage 2, given the ML mode the policy
// allows: shadow, or on. It does not allocate.
func (r *Runtime) Assign(u Unit, shadow bool) Plan {
	p := Plan{Shadow: shadow}
	if r == nil {
		return p
	}
	g := r.cur.Load()
	if g == nil {
		return p
	}
	as, ok := g.a.Primary(u)
	if !ok {
		return p
	}
	p.Variant = g.variants[as.ExperimentIndex][as.VariantIndex]
	switch as.Policy {
	case PolicyStatic:
		p.Static, p.Shadow = true, false
	case PolicyShadow:
		p.Shadow = true
	}
	return p
}

// Count adds one decision of key, in tier (enterprise-class or not), to
// v's counters.
func (r *Runtime) Count(v *LiveVariant, key, tier string, enterprise, throttled bool) {
	c := v.c
	t := c.tier(tier, enterprise)
	t.decisions.Add(1)
	if throttled {
		t.throttled.Add(1)
	}
	switch {
	case !r.abusive.has(key):
		c.legitRequests.Add(1)
		if throttled {
			c.legitThrottled.Add(1)
		}
	case !throttled:
		c.abuseServed.Add(1)
	}
}

// variantCounters are one variant's cumulative counts since start, kept by
// name across installs. The request path only adds to them (atomics, no
// lock); the guardrail loop and /metrics read them.
type variantCounters struct {
	tiers          sync.Map // tier name → *tierCounts
	legitRequests  atomic.Int64
	legitThrottled atomic.Int64
	abuseServed    atomic.Int64 // allowed requests of keys labelled abusive
	abuseLabels    atomic.Int64
	complaints     atomic.Int64
	clears         atomic.Int64 // abusive: false labels that are not complaints
	_              [64]byte     // keep the next variant's counters off this cache line
}

type tierCounts struct {
	enterprise bool
	decisions  atomic.Int64
	throttled  atomic.Int64 // throttle or block
}

func (c *variantCounters) tier(name string, enterprise bool) *tierCounts {
	if t, ok := c.tiers.Load(name); ok {
		return t.(*tierCounts)
	}
	t, _ := c.tiers.LoadOrStore(name, &tierCounts{enterprise: enterprise})
	return t.(*tierCounts)
}

// counts returns the guardrail view of the counters.
func (c *variantCounters) counts() Counts {
	var n Counts
	c.tiers.Range(func(_, v any) bool {
		t := v.(*tierCounts)
		d, th := t.decisions.Load(), t.throttled.Load()
		n.Requests += d
		n.Throttled += th
		if t.enterprise {
			n.EnterpriseRequests += d
			n.EnterpriseThrottled += th
		}
		return true
	})
	n.LegitRequests = c.legitRequests.Load()
	n.LegitThrottled = c.legitThrottled.Load()
	n.Complaints = c.complaints.Load()
	return n
}

// snapshot returns every variant's cumulative counts.
func (r *Runtime) snapshot() map[VariantID]Counts {
	r.mu.Lock()
	defer r.mu.Unlock()
	out := make(map[VariantID]Counts, len(r.counters))
	for id, c := range r.counters {
		out[id] = c.counts()
	}
	return out
}

// windowCounts records the cumulative counts now and returns the counts of
// the sliding window: now minus the oldest snapshot kept (zero at start).
func (r *Runtime) windowCounts() map[VariantID]Counts {
	now := r.snapshot()
	r.mu.Lock()
	defer r.mu.Unlock()
	var oldest map[VariantID]Counts
	if len(r.window) == r.ring {
		oldest = r.window[0]
		r.window = r.window[1:]
	}
	r.window = append(r.window, now)
	out := make(map[VariantID]Counts, len(now))
	for id, c := range now {
		o := oldest[id]
		out[id] = Counts{
			Requests: c.Requests - o.Requests, Throttled: c.Throttled - o.Throttled,
			EnterpriseRequests: c.EnterpriseRequests - o.EnterpriseRequests, EnterpriseThrottled: c.EnterpriseThrottled - o.EnterpriseThrottled,
			LegitRequests: c.LegitRequests - o.LegitRequests, LegitThrottled: c.LegitThrottled - o.LegitThrottled,
			Complaints: c.Complaints - o.Complaints,
		}
	}
	return out
}

// Stop is a variant a guardrail stopped.
type Stop struct {
	Trip
	// Digest is the experiments file's digest the stop was recorded under.
	Digest string
	At     time.Time
	// PersistErr, when set, says the stop applies but was not written to
	// the stop log: a restart would resume the variant.
	PersistErr error
}

// Run judges the guardrails every GuardrailEvery until ctx is cancelled,
// calling onStop for each variant it stops.
func (r *Runtime) Run(ctx context.Context, onStop func(Stop)) {
	t := time.NewTicker(r.o.GuardrailEvery)
	defer t.Stop()
	for {
		select {
		case <-ctx.Done():
			return
		case <-t.C:
			for _, s := range r.Check(time.Now()) {
				if onStop != nil {
					onStop(s)
				}
			}
		}
	}
}

// Check judges the window's counts now and stops every variant that
// trips a guardrail; it returns the stops it made.
func (r *Runtime) Check(now time.Time) []Stop {
	counts := r.windowCounts()
	g := r.cur.Load()
	if g == nil {
		return nil
	}
	trips, err := CheckGuardrails(g.a.Config(), counts)
	if err != nil {
		r.log.Error("guardrail counts are inconsistent; those guardrails were skipped", "err", err)
	}
	var out []Stop
	for _, t := range trips {
		if g.a.Stopped(t.Experiment, t.Variant) {
			continue
		}
		if s, ok := r.stop(g, t, now); ok {
			out = append(out, s)
		}
	}
	return out
}

// stop persists the stop, applies it, and says why: log line and metric.
// The stop applies even if it cannot be persisted: harm stops now, and the
// error says a restart would resume it.
func (r *Runtime) stop(g *generation, t Trip, now time.Time) (Stop, bool) {
	s := Stop{Trip: t, Digest: g.a.Config().Digest, At: now}
	rec := t.StopRecord(s.Digest, now)
	r.mu.Lock()
	if r.stops != nil {
		s.PersistErr = r.stops.Append(rec)
		if errors.Is(s.PersistErr, ErrAlreadyStopped) {
			s.PersistErr = nil
		}
	} else {
		r.memStops[rec.ID()] = rec
	}
	if cur := r.cur.Load(); cur != nil {
		g = cur // an Install may have swapped in a new generation
	}
	err := g.a.Stop(t.Experiment, t.Variant)
	r.mu.Unlock()
	if err != nil {
		r.log.Error("cannot stop experiment variant", "experiment", t.Experiment, "variant", t.Variant, "err", err)
		return s, false
	}
	r.trips.WithLabelValues(t.Experiment, t.Variant, string(t.Metric)).Inc()
	r.log.Warn("guardrail tripped: experiment variant stopped, its units get the control's policy",
		"experiment", t.Experiment, "variant", t.Variant, "guardrail", string(t.Metric),
		"value", t.Value, "threshold", t.Threshold, "reason", t.Reason)
	if s.PersistErr != nil {
		r.log.Error("the stop could not be written to the stop log: a restart would resume the variant", "err", s.PersistErr)
	}
	return s, true
}

// AttributeLabels counts accepted labels against the variant variantOf
// finds for each (nil: none), and keeps the set of keys labelled abusive
// that Count reads. A label_id seen before is not counted again.
func (r *Runtime) AttributeLabels(labels []rewards.Label, variantOf func(rewards.Label) *LiveVariant) {
	for _, l := range labels {
		if !r.seen.add(l.LabelID) {
			continue
		}
		if l.Abusive {
			r.abusive.add(l.Key)
		} else {
			r.abusive.remove(l.Key)
		}
		v := variantOf(l)
		if v == nil {
			r.unattributed.Inc()
			continue
		}
		switch {
		case l.Abusive:
			v.c.abuseLabels.Add(1)
		case IsComplaint(l):
			v.c.complaints.Add(1)
		default:
			v.c.clears.Add(1)
		}
	}
}

// Close closes the stop log.
func (r *Runtime) Close() error {
	if r == nil || r.stops == nil {
		return nil
	}
	return r.stops.Close()
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

// collector exposes the per-variant counters at scrape time.
type collector Runtime

var (
	descExpDecisions = prometheus.NewDesc("flowguard_experiment_decisions_total",
		"Decisions for units in an experiment, by experiment, variant and tier (the policy file's tier names).",
		[]string{"experiment", "variant", "tier"}, nil)
	descExpThrottles = prometheus.NewDesc("flowguard_experiment_throttles_total",
		"Decisions that throttled or blocked a unit in an experiment, by experiment, variant and tier.",
		[]string{"experiment", "variant", "tier"}, nil)
	descExpAbuseServed = prometheus.NewDesc("flowguard_experiment_abuse_served_total",
		"Requests allowed for keys labelled abusive (after the label arrived), by experiment and variant.",
		[]string{"experiment", "variant"}, nil)
	descExpLabels = prometheus.NewDesc("flowguard_experiment_labels_total",
		"Labels attributed to a variant, by kind: abusive, complaint (abusive: false with a complaint source) or clear.",
		[]string{"experiment", "variant", "kind"}, nil)
	descExpComplaints = prometheus.NewDesc("flowguard_experiment_complaints_total",
		"False-throttle complaints (labels with abusive: false and source complaint, false_throttle or customer_complaint), by experiment and variant.",
		[]string{"experiment", "variant"}, nil)
	descExpStopped = prometheus.NewDesc("flowguard_experiment_variant_stopped",
		"1 while a variant of the experiments file in force is stopped (its units get the control's policy).",
		[]string{"experiment", "variant"}, nil)
)

func (c *collector) Describe(ch chan<- *prometheus.Desc) {
	for _, d := range []*prometheus.Desc{descExpDecisions, descExpThrottles, descExpAbuseServed, descExpLabels, descExpComplaints, descExpStopped} {
		ch <- d
	}
}

func (c *collector) Collect(ch chan<- prometheus.Metric) {
	r := (*Runtime)(c)
	r.mu.Lock()
	ids := make([]VariantID, 0, len(r.counters))
	for id := range r.counters {
		ids = append(ids, id)
	}
	counters := make([]*variantCounters, len(ids))
	for i, id := range ids {
		counters[i] = r.counters[id]
	}
	r.mu.Unlock()
	counter := func(d *prometheus.Desc, v int64, labels ...string) {
		ch <- prometheus.MustNewConstMetric(d, prometheus.CounterValue, float64(v), labels...)
	}
	for i, id := range ids {
		vc := counters[i]
		x, v := id.Experiment, id.Variant
		vc.tiers.Range(func(name, t any) bool {
			tc := t.(*tierCounts)
			counter(descExpDecisions, tc.decisions.Load(), x, v, name.(string))
			counter(descExpThrottles, tc.throttled.Load(), x, v, name.(string))
			return true
		})
		counter(descExpAbuseServed, vc.abuseServed.Load(), x, v)
		counter(descExpLabels, vc.abuseLabels.Load(), x, v, "abusive")
		counter(descExpLabels, vc.complaints.Load(), x, v, "complaint")
		counter(descExpLabels, vc.clears.Load(), x, v, "clear")
		counter(descExpComplaints, vc.complaints.Load(), x, v)
	}
	if g := r.cur.Load(); g != nil {
		for _, vs := range g.variants {
			for _, v := range vs {
				stopped := 0.0
				if g.a.Stopped(v.ID.Experiment, v.ID.Variant) {
					stopped = 1
				}
				ch <- prometheus.MustNewConstMetric(descExpStopped, prometheus.GaugeValue, stopped, v.ID.Experiment, v.ID.Variant)
			}
		}
	}
}
