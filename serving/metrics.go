package serving

import (
	"strconv"
	"sync"
	"sync/atomic"

	"github.com/devflow/flowguard/pipeline"
	"github.com/devflow/flowguard/rewards"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/collectors"

	"github.com/devflow/flowguard/limiter"
)

// metrics is the service's non-global registry. Every metric is named
// flowguard_*, Go and process metrics included.
type metrics struct {
	reg       *prometheus.Registry
	decisions *prometheus.CounterVec
	latency   prometheus.Histogram
	responses *prometheus.CounterVec
	reloads   *prometheus.CounterVec
	panics    prometheus.Counter

	mlFallbacks  *prometheus.CounterVec
	localOnly    *prometheus.CounterVec
	labels       *prometheus.CounterVec
	labelActions *prometheus.CounterVec
	// acceptFailures counts accepts that failed for lack of descriptors or
	// buffers and were retried.
	acceptFailures prometheus.Counter
	shadowChoices  *prometheus.CounterVec
	stage2         prometheus.Histogram
	auditRecords   prometheus.Counter
	auditDropped   prometheus.Counter
	auditErrors    prometheus.Counter
	// grpcRequests and grpcLatency are the gRPC API's (grpc.go), registered
	// by registerGRPC when it is on.
	grpcRequests *prometheus.CounterVec
	grpcLatency  prometheus.Histogram
	grpcCodes    sync.Map // code → prometheus.Counter

	// cache of decision counters by tier, so the hot path does no label
	// hashing; copy-on-write, since tiers only change on reload.
	mu        sync.Mutex
	cache     atomic.Pointer[map[string]*tierCounters]
	respCache atomic.Pointer[map[responseKey]prometheus.Counter]
}

var (
	actions = [...]string{pipeline.ActionAllow, pipeline.ActionThrottle, pipeline.ActionBlock}
	sources = [...]string{pipeline.SourceML, pipeline.SourceDeterministic, pipeline.SourceFallback, pipeline.SourceLabel}
)

// decisionBuckets are the latency buckets of a decision, over HTTP or
// gRPC: 5 µs to 25 ms.
var decisionBuckets = []float64{5e-6, 10e-6, 25e-6, 50e-6, 100e-6, 250e-6, 500e-6, 1e-3, 2.5e-3, 5e-3, 10e-3, 25e-3}

type tierCounters [len(actions)][len(sources)]prometheus.Counter

func newMetrics(remote *limiter.Resilient) *metrics {
	reg := prometheus.NewRegistry()
	m := &metrics{
		reg: reg,
		decisions: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "flowguard_decisions_total",
			Help: "Decisions made, by action (allow, throttle, block), tier and source (ml, deterministic, fallback).",
		}, []string{"action", "tier", "source"}),
		latency: prometheus.NewHistogram(prometheus.HistogramOpts{
			Name:    "flowguard_decision_duration_seconds",
			Help:    "Server-side time to decide one request, parse to response.",
			Buckets: decisionBuckets,
		}),
		responses: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "flowguard_http_responses_total",
			Help: "HTTP responses, by handler and status code.",
		}, []string{"handler", "code"}),
		reloads: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "flowguard_policy_reloads_total",
			Help: "Policy reloads, by result (success, error). On error the previous policy stays.",
		}, []string{"result"}),
		panics: prometheus.NewCounter(prometheus.CounterOpts{
			Name: "flowguard_pipeline_panics_total",
			Help: "Panics caught in the decision pipeline; each was answered from memory.",
		}),
	}
	m.mlFallbacks = prometheus.NewCounterVec(prometheus.CounterOpts{
		Name: "flowguard_ml_fallbacks_total",
		Help: "Decisions that got the deterministic budget because of the ML layer, by reason.",
	}, []string{"reason"})
	for _, r := range pipeline.FallbackReasons {
		m.mlFallbacks.WithLabelValues(r)
	}
	m.localOnly = prometheus.NewCounterVec(prometheus.CounterOpts{
		Name: "flowguard_features_local_only_total",
		Help: "Stage-2 runs that saw only this instance's features, by reason (no_redis, redis_down).",
	}, []string{"reason"})
	m.labels = prometheus.NewCounterVec(prometheus.CounterOpts{
		Name: "flowguard_labels_received_total",
		Help: "Labels received over POST /v1/labels, by result (accepted, invalid, unavailable).",
	}, []string{"result"})
	m.labelActions = prometheus.NewCounterVec(prometheus.CounterOpts{
		Name: "flowguard_label_actions_total",
		Help: "Labels that changed a key's hold (ml.label_action), by action: hold (an abusive label moved the key to its floor or a block), release (abusive: false cleared it), refused (ml.max_labelled_keys keys already held).",
	}, []string{"action"})
	for _, a := range []string{"hold", "release", "refused"} {
		m.labelActions.WithLabelValues(a)
	}
	m.shadowChoices = prometheus.NewCounterVec(prometheus.CounterOpts{
		Name: "flowguard_ml_shadow_choices_total",
		Help: "Decisions under ml: shadow, by the arm the bandit would have enforced.",
	}, []string{"arm"})
	m.stage2 = prometheus.NewHistogram(prometheus.HistogramOpts{
		Name:    "flowguard_ml_stage2_duration_seconds",
		Help:    "Time of stage 2 (features, risk, bandit choice), once per key per epoch.",
		Buckets: []float64{5e-6, 10e-6, 25e-6, 50e-6, 100e-6, 250e-6, 500e-6, 1e-3, 2e-3, 5e-3},
	})
	m.auditRecords = prometheus.NewCounter(prometheus.CounterOpts{
		Name: "flowguard_audit_records_total", Help: "Audit records queued (blocks and audited throttles).",
	})
	m.auditDropped = prometheus.NewCounter(prometheus.CounterOpts{
		Name: "flowguard_audit_dropped_total", Help: "Audit records dropped because the writer's queue was full.",
	})
	m.auditErrors = prometheus.NewCounter(prometheus.CounterOpts{
		Name: "flowguard_audit_write_errors_total", Help: "Failed writes or syncs of the audit file.",
	})
	m.acceptFailures = prometheus.NewCounter(prometheus.CounterOpts{Name: "flowguard_http_accept_failures_total",
		Help: "Accepts that failed for lack of descriptors or buffers (EMFILE, ENFILE, ENOBUFS, ENOMEM) and were retried after a pause: the server stays up."})
	reg.MustRegister(m.labelActions, m.acceptFailures)
	reg.MustRegister(m.decisions, m.latency, m.responses, m.reloads, m.panics,
		m.mlFallbacks, m.shadowChoices, m.stage2, m.auditRecords, m.auditDropped, m.auditErrors)
	m.reloads.WithLabelValues("success")
	m.reloads.WithLabelValues("error")
	prefixed := prometheus.WrapRegistererWithPrefix("flowguard_", reg)
	prefixed.MustRegister(collectors.NewGoCollector(), collectors.NewProcessCollector(collectors.ProcessCollectorOpts{}))
	empty := map[string]*tierCounters{}
	m.cache.Store(&empty)
	noResponses := map[responseKey]prometheus.Counter{}
	m.respCache.Store(&noResponses)

	if r := remote; r != nil {
		st := r.Stats()
		for kind, c := range map[string]*atomic.Int64{"timeout": &st.Timeouts, "error": &st.Errors} {
			reg.MustRegister(prometheus.NewCounterFunc(prometheus.CounterOpts{
				Name:        "flowguard_limiter_backend_errors_total",
				Help:        "Failed calls to the shared limiter store (Redis), by kind.",
				ConstLabels: prometheus.Labels{"backend": "redis", "kind": kind},
			}, func() float64 { return float64(c.Load()) }))
		}
		for reason, c := range st.FallbackByReason {
			reg.MustRegister(prometheus.NewCounterFunc(prometheus.CounterOpts{
				Name:        "flowguard_fallback_decisions_total",
				Help:        "Decisions answered from this instance's in-memory share because the shared store could not answer, by reason.",
				ConstLabels: prometheus.Labels{"reason": reason},
			}, func() float64 { return float64(c.Load()) }))
		}
		reg.MustRegister(prometheus.NewCounterFunc(prometheus.CounterOpts{
			Name: "flowguard_limiter_circuit_opens_total",
			Help: "Times the Redis circuit breaker opened.",
		}, func() float64 { return float64(st.CircuitOpens.Load()) }))
		reg.MustRegister(prometheus.NewCounterFunc(prometheus.CounterOpts{
			Name: "flowguard_limiter_leased_while_open_total",
			Help: "Decisions served from tokens already leased from Redis while the circuit was open (exact, not a fallback).",
		}, func() float64 { return float64(st.LeasedWhileOpen.Load()) }))
	}
	reg.MustRegister(prometheus.NewGaugeFunc(prometheus.GaugeOpts{
		Name: "flowguard_fallback_active",
		Help: "1 while decisions come from the in-memory fallback because the shared store is unavailable.",
	}, func() float64 {
		if r := remote; r != nil && r.FallbackActive() {
			return 1
		}
		return 0
	}))
	return m
}

// countDecision counts d without allocating once its tier has been seen.
func (m *metrics) countDecision(d *Decision) {
	tier := d.Rule.Tier
	tc := (*m.cache.Load())[tier]
	if tc == nil {
		tc = m.addTier(tier)
	}
	tc[actionIndex(d.Action)][sourceIndex(d.Source)].Inc()
}

func (m *metrics) addTier(tier string) *tierCounters {
	m.mu.Lock()
	defer m.mu.Unlock()
	old := *m.cache.Load()
	if tc := old[tier]; tc != nil {
		return tc
	}
	tc := new(tierCounters)
	for i, a := range actions {
		for j, s := range sources {
			tc[i][j] = m.decisions.WithLabelValues(a, tier, s)
		}
	}
	next := make(map[string]*tierCounters, len(old)+1)
	for k, v := range old {
		next[k] = v
	}
	next[tier] = tc
	m.cache.Store(&next)
	return tc
}

func actionIndex(a string) int {
	switch a {
	case pipeline.ActionAllow:
		return 0
	case pipeline.ActionThrottle:
		return 1
	}
	return 2
}

func sourceIndex(s string) int {
	switch s {
	case pipeline.SourceML:
		return 0
	case pipeline.SourceDeterministic:
		return 1
	case pipeline.SourceLabel:
		return 3
	}
	return 2
}

type responseKey struct {
	handler string
	code    int
}

// response returns the response counter for handler and code, cached
// copy-on-write like the decision counters.
func (m *metrics) response(handler string, code int) prometheus.Counter {
	k := responseKey{handler, code}
	if c := (*m.respCache.Load())[k]; c != nil {
		return c
	}
	m.mu.Lock()
	defer m.mu.Unlock()
	old := *m.respCache.Load()
	if c := old[k]; c != nil {
		return c
	}
	c := m.responses.WithLabelValues(handler, strconv.Itoa(code))
	next := make(map[responseKey]prometheus.Counter, len(old)+1)
	for k, v := range old {
		next[k] = v
	}
	next[k] = c
	m.respCache.Store(&next)
	return c
}

// registerGRPC adds the gRPC API's metrics: calls by code, and their
// latency, decode to response.
func (m *metrics) registerGRPC() {
	m.grpcRequests = prometheus.NewCounterVec(prometheus.CounterOpts{
		Name: "flowguard_grpc_requests_total",
		Help: "ShouldRateLimit calls, by code: the response's overall code (OK, OVER_LIMIT) or, for a refused call, the gRPC status (InvalidArgument, ResourceExhausted, …).",
	}, []string{"code"})
	m.grpcLatency = prometheus.NewHistogram(prometheus.HistogramOpts{
		Name:    "flowguard_grpc_request_duration_seconds",
		Help:    "Server-side time of one ShouldRateLimit call, decode to response, all its descriptors decided.",
		Buckets: decisionBuckets,
	})
	for _, c := range []string{"OK", "OVER_LIMIT", "InvalidArgument"} {
		m.grpcRequest(c)
	}
	m.reg.MustRegister(m.grpcRequests, m.grpcLatency)
}

// grpcRequest returns the gRPC call counter of code, without label
// hashing once the code has been seen.
func (m *metrics) grpcRequest(code string) prometheus.Counter {
	if c, ok := m.grpcCodes.Load(code); ok {
		return c.(prometheus.Counter)
	}
	c, _ := m.grpcCodes.LoadOrStore(code, m.grpcRequests.WithLabelValues(code))
	return c.(prometheus.Counter)
}

// registerML adds gauges read from the ML stage at scrape time.
func (m *metrics) registerML(p *pipeline.Pipeline) {
	m.reg.MustRegister(
		prometheus.NewGaugeFunc(prometheus.GaugeOpts{
			Name: "flowguard_ml_model_version", Help: "Version of the bandit snapshot in use; 0 before the first.",
		}, func() float64 {
			if s := p.Model(); s != nil {
				return float64(s.Version())
			}
			return 0
		}),
		prometheus.NewGaugeFunc(prometheus.GaugeOpts{
			Name: "flowguard_ml_model_age_seconds", Help: "Age of the bandit snapshot in use; -1 before the first.",
		}, func() float64 {
			if age, ok := p.ModelAge(); ok {
				return age.Seconds()
			}
			return -1
		}),
		variantModelCollector{p},
		driftCollector{p.Drift()},
		prometheus.NewGaugeFunc(prometheus.GaugeOpts{
			Name: "flowguard_features_keys", Help: "Keys whose features this instance holds.",
		}, func() float64 { return float64(p.Features().Len()) }),
		prometheus.NewCounterFunc(prometheus.CounterOpts{
			Name: "flowguard_features_rejected_total", Help: "Feature updates refused because ml.max_keys keys are held.",
		}, func() float64 { return float64(p.Features().Stats().Rejected) }),
	)
}

// registerFeatureSync adds the metrics of feature sharing; with fs nil
// (no redis) only the local-only counter exists.
func (m *metrics) registerFeatureSync(fs *featureSync) {
	m.reg.MustRegister(m.localOnly, m.labels)
	if fs == nil {
		return
	}
	counter := func(name, help string, v *atomic.Int64) prometheus.Collector {
		return prometheus.NewCounterFunc(prometheus.CounterOpts{Name: name, Help: help},
			func() float64 { return float64(v.Load()) })
	}
	m.reg.MustRegister(
		counter("flowguard_features_sync_rounds_total", "Rounds of exchanging features with the other instances through Redis.", &fs.rounds),
		counter("flowguard_features_sync_failures_total", "Feature exchange rounds that failed; their keys wait for the next round.", &fs.failures),
		counter("flowguard_features_sync_written_total", "Key records written to Redis.", &fs.written),
		counter("flowguard_features_sync_read_total", "Key records read back from Redis.", &fs.read),
		counter("flowguard_features_sync_dropped_total", "Served keys left out of the exchange because ml.max_keys keys were already tracked.", &fs.dropped),
		counter("flowguard_features_sync_bad_records_total", "Records read from Redis that failed to decode or validate, ignored.", &fs.badRecords),
		prometheus.NewGaugeFunc(prometheus.GaugeOpts{
			Name: "flowguard_features_shared", Help: "1 when the last feature exchange through Redis succeeded, else 0.",
		}, func() float64 {
			if fs.healthy.Load() {
				return 1
			}
			return 0
		}),
		prometheus.NewGaugeFunc(prometheus.GaugeOpts{
			Name: "flowguard_features_sync_round_seconds", Help: "Duration of the last feature exchange round.",
		}, func() float64 { return float64(fs.lastRoundUS.Load()) / 1e6 }),
	)
}

// registerLearner adds the embedded learner's metrics.
func (m *metrics) registerLearner(q *rewards.Queue, l *rewards.Local) {
	if l == nil {
		return
	}
	stat := func(name, help string, get func(s rewardsStats) int64) prometheus.Collector {
		return prometheus.NewCounterFunc(prometheus.CounterOpts{Name: name, Help: help},
			func() float64 { return float64(get(l.Stats())) })
	}
	m.reg.MustRegister(
		prometheus.NewCounterFunc(prometheus.CounterOpts{
			Name: "flowguard_decision_log_dropped_total", Help: "Decision-log records dropped because the learner's queue (ml.log_buffer) was full.",
		}, func() float64 { return float64(q.Dropped()) }),
		prometheus.NewGaugeFunc(prometheus.GaugeOpts{
			Name: "flowguard_learner_queue_length", Help: "Records and labels waiting for the embedded learner.",
		}, func() float64 { return float64(q.Len()) }),
		stat("flowguard_learner_decisions_total", "Decision records the embedded learner applied.", func(s rewardsStats) int64 { return s.Decisions }),
		stat("flowguard_learner_outcomes_total", "Epoch outcomes the embedded learner applied, orphans included.", func(s rewardsStats) int64 { return s.Outcomes }),
		stat("flowguard_learner_pending_dropped_total", "Decisions dropped unjoined because more than the learner's pending limit waited for their outcomes.", func(s rewardsStats) int64 { return s.PendingDropped }),
		stat("flowguard_learner_updates_total", "Bandit updates from closed epochs.", func(s rewardsStats) int64 { return s.Updates }),
		stat("flowguard_learner_corrections_total", "Exact reward corrections applied for late labels (per key, arm and hour).", func(s rewardsStats) int64 { return s.Corrections }),
		stat("flowguard_learner_labels_applied_total", "Labels applied.", func(s rewardsStats) int64 { return s.Labels }),
		stat("flowguard_learner_labels_duplicate_total", "Labels whose label_id was already applied: no effect.", func(s rewardsStats) int64 { return s.Duplicates }),
		stat("flowguard_learner_labels_unknown_key_total", "Labels for a key with no records yet, kept for the attribution window.", func(s rewardsStats) int64 { return s.UnknownKey }),
		stat("flowguard_learner_late_total", "Labels and outcomes that arrived after the attribution window.", func(s rewardsStats) int64 { return s.Late }),
		stat("flowguard_learner_late_risk_total", "Kept final hours that abusive labels past the attribution window taught the risk model as abusive.", func(s rewardsStats) int64 { return s.LateRisk }),
		stat("flowguard_learner_orphan_outcomes_total", "Epoch outcomes whose decision record never arrived.", func(s rewardsStats) int64 { return s.Orphans }),
	)
}

type rewardsStats = rewards.Stats

var (
	descVariantModelVersion = prometheus.NewDesc("flowguard_ml_variant_model_version",
		"Version of each experiment variant's own bandit model in use, by model key (EXPERIMENT/VARIANT@digest).", []string{"model"}, nil)
	descVariantModelUpdates = prometheus.NewDesc("flowguard_ml_variant_model_updates",
		"Updates (closed epochs learned) of each experiment variant's own bandit model in use, by model key.", []string{"model"}, nil)
)

// variantModelCollector reports the variant models installed.
type variantModelCollector struct{ p *pipeline.Pipeline }

func (c variantModelCollector) Describe(ch chan<- *prometheus.Desc) {
	ch <- descVariantModelVersion
	ch <- descVariantModelUpdates
}

func (c variantModelCollector) Collect(ch chan<- prometheus.Metric) {
	for key, s := range c.p.VariantModels() {
		if s == nil {
			continue
		}
		var n uint64
		for a := range s.NumArms() {
			if p, err := s.ArmPosterior(a); err == nil {
				n += p.Count
			}
		}
		ch <- prometheus.MustNewConstMetric(descVariantModelVersion, prometheus.GaugeValue, float64(s.Version()), key)
		ch <- prometheus.MustNewConstMetric(descVariantModelUpdates, prometheus.GaugeValue, float64(n), key)
	}
}

var (
	descDriftPSI = prometheus.NewDesc("flowguard_feature_drift_psi",
		"Population stability index of each watched feature: the scored vectors of the last ml.drift.window against those of ml.drift.reference (what the model learned on).",
		[]string{"feature"}, nil)
	descDriftActive = prometheus.NewDesc("flowguard_drift_active",
		"1 while the features have drifted past ml.drift.threshold; with ml.drift.mode fallback, ML decisions then get deterministic budgets (reason drift).",
		nil, nil)
)

// driftCollector exports the drift monitor's last evaluation; nothing
// with ml.drift.mode off.
type driftCollector struct{ d *pipeline.Drift }

func (c driftCollector) Describe(ch chan<- *prometheus.Desc) {
	ch <- descDriftPSI
	ch <- descDriftActive
}

func (c driftCollector) Collect(ch chan<- prometheus.Metric) {
	if c.d == nil {
		return
	}
	for name, v := range c.d.PSI() {
		ch <- prometheus.MustNewConstMetric(descDriftPSI, prometheus.GaugeValue, v, name)
	}
	active := 0.0
	if c.d.Active() {
		active = 1
	}
	ch <- prometheus.MustNewConstMetric(descDriftActive, prometheus.GaugeValue, active)
}
