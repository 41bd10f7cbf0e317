package serving

import (
	crand "crypto/rand"
	"crypto/sha256"
	"encoding/binary"
	"encoding/hex"
	"errors"
	"fmt"
	"hash/maphash"
	"math"
	"math/rand/v2"
	"strconv"
	"sync"
	"sync/atomic"
	"time"

	"github.com/devflow/flowguard/bandit"
	"github.com/devflow/flowguard/features"
	"github.com/devflow/flowguard/internal/config"
	"github.com/devflow/flowguard/pipeline"
	"github.com/devflow/flowguard/policy"
	"github.com/devflow/flowguard/rewards"
)

// Reasons a decision falls back to the deterministic budget because of the
// ML layer. Each is counted in flowguard_ml_fallbacks_total.
const (
	ReasonNoModel          = "no_model"           // no bandit snapshot yet
	ReasonStaleModel       = "stale_model"        // the snapshot is older than ml.max_model_age
	ReasonFeatureStoreDown = "feature_store_down" // the key's features cannot be tracked
	ReasonMLDeadline       = "ml_deadline"        // stage 2 did not finish within ml.deadline
	ReasonMLError          = "ml_error"           // stage 2 failed or panicked
	ReasonRisk             = "risk"               // blocked: risk at or above ml.block_threshold
)

// Variants a decision reports.
const (
	variantBandit = "bandit"
	variantShadow = "shadow"
)

// ctxDim is the bandit's context: the feature vector, then the risk score.
const ctxDim = features.Dim + 1

// epochChoice is stage 2's outcome for one key, kept for its epoch, with
// the counts of what happened to the key's requests during it: the
// outcome the decision log reports when the epoch closes.
type epochChoice struct {
	key          string // for the outcome record; "" when nothing is logged
	id           uint64 // decision-log id; 0: not logged (fallbacks)
	started      int64  // µs
	served       uint32
	throttled    uint32
	blocked      uint32
	expires      int64 // µs
	model        uint64
	multiplier   float64
	propensity   float64
	risk         float64
	arm          int16 // -1: none
	fallback     uint8 // index into fallbackReasons; 0: none
	plan         plan  // the key's experiment variant and mode (serving/experiments.go)
	featuresHash [8]byte
}

var fallbackReasons = [...]string{"", ReasonNoModel, ReasonStaleModel, ReasonFeatureStoreDown, ReasonMLDeadline, ReasonMLError}

func fallbackIndex(reason string) uint8 {
	for i, r := range fallbackReasons {
		if r == reason {
			return uint8(i)
		}
	}
	return uint8(len(fallbackReasons) - 1)
}

// fallbackRetry is how long a fallback choice is kept before stage 2 is
// tried again: a failure should not pin a key to the fallback for a whole
// epoch.
const fallbackRetry = time.Second

type epochShard struct {
	mu       sync.Mutex
	choices  map[uint64]epochChoice
	inflight map[uint64]chan struct{}
}

// mlStage is stages 2 and 3's state: features, the risk model, the bandit
// snapshot, the per-key epoch choices and the recent decisions of each key.
type mlStage struct {
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
	fresh  atomic.Int64
	local  *rewards.Local // the in-process learner; nil with learner: remote
	queue  *rewards.Queue // its input
	dlog   decisionLog    // where decisions and outcomes go; nil: nowhere
	region string
	idBase string
	idSeq  atomic.Uint64
	seed   maphash.Seed
	shards [256]epochShard
	// draws seeds each stage-2 run's random source, with the key and the
	// epoch's start: the same seed, requests and clock give the same draws
	// whatever the order goroutines run in.
	draws  uint64
	recent *recentLog
	now    func() time.Time
	hook   func(key string) // test fault injection inside stage 2
	// localOnly reports why the features are this instance's alone ("" when
	// they are shared); each stage-2 run on local-only features is counted.
	localOnly     func() string
	localOnlyRuns func(reason string)
	timing        func(time.Duration)
}

// decisionLog receives decision and outcome records: the embedded
// learner's queue or the Kafka decision log. Log never blocks; it returns
// false when it dropped the record.
type decisionLog interface {
	Log(rewards.Record) bool
}

// newMLStage returns stages 2 and 3 for cfg; learn configures the embedded
// learner (with learner: embedded), its variant models included.
func newMLStage(cfg config.ML, learn rewards.Config, region string, now func() time.Time, seed uint64, hook func(string)) (*mlStage, error) {
	feats, err := features.NewStore(features.Config{IdleTTL: cfg.IdleTTL, MaxKeys: cfg.MaxKeys})
	if err != nil {
		return nil, err
	}
	risk, err := features.NewRisk(features.RiskConfig{Dim: features.Dim, Prior: cfg.RiskPrior})
	if err != nil {
		return nil, err
	}
	var idb [4]byte
	_, _ = crand.Read(idb[:])
	m := &mlStage{cfg: cfg, arms: cfg.Arms, feats: feats, seed: maphash.MakeSeed(), region: region,
		idBase: hex.EncodeToString(idb[:]) + "-", recent: newRecentLog(cfg.RecentDecisions, 65536), now: now, hook: hook}
	m.risk.Store(risk)
	for i := range m.shards {
		m.shards[i].choices = make(map[uint64]epochChoice)
		m.shards[i].inflight = make(map[uint64]chan struct{})
	}
	m.draws = seed
	if cfg.Learner == "embedded" {
		m.queue = rewards.NewQueue(cfg.LogBuffer)
		m.dlog = m.queue
		m.local, err = rewards.NewLocal(learn, m.queue, m.install, rewards.LocalOptions{
			PublishEvery: cfg.PublishEvery, Now: now, CheckpointFile: cfg.CheckpointFile})
		if err != nil {
			return nil, err
		}
	}
	return m, nil
}

// install makes a newly published model current. The main bandit snapshot
// must be newer than the one in use, and the risk model goes with it; the
// variant models are installed either way, since they can change while
// the main model does not.
func (m *mlStage) install(model rewards.Model) error {
	vs := model.Variants
	m.variants.Store(&vs)
	if err := m.model.Store(model.Bandit); err != nil {
		return err
	}
	m.risk.Store(model.Risk)
	return nil
}

// snapshotFor returns the bandit snapshot plan p chooses from: its
// variant's own model, or the main one; nil when there is none yet.
func (m *mlStage) snapshotFor(p plan) *bandit.Snapshot {
	if p.v == nil || p.v.model == "" {
		return m.model.Load()
	}
	if vs := m.variants.Load(); vs != nil {
		return (*vs)[p.v.model]
	}
	return nil
}

// modelTime is when the model in use was last known current: its
// creation, or the remote learners' last heartbeat if later.
func (m *mlStage) modelTime(snap *bandit.Snapshot) time.Time {
	if f := m.fresh.Load(); f > snap.Created().UnixMicro() {
		return time.UnixMicro(f)
	}
	return snap.Created()
}

// choose returns key's epoch choice under rule and plan, running stage 2
// on a miss or when the key's plan changed. Concurrent requests of one key
// share one stage-2 run.
func (m *mlStage) choose(key, tenant string, rule *policy.Rule, p plan) epochChoice {
	h := hashKey(m, key)
	sh := &m.shards[h&255]
	for {
		now := m.now().UnixMicro()
		sh.mu.Lock()
		c, ok := sh.choices[h]
		if ok && now < c.expires && c.plan == p {
			sh.mu.Unlock()
			return c
		}
		if wait, ok := sh.inflight[h]; ok {
			sh.mu.Unlock()
			<-wait
			continue
		}
		done := make(chan struct{})
		sh.inflight[h] = done
		if ok {
			delete(sh.choices, h)
		}
		sh.mu.Unlock()
		if ok {
			m.closeEpoch(c, now)
		}

		c = m.run(key, rule, p)
		sh.mu.Lock()
		sh.choices[h] = c
		delete(sh.inflight, h)
		close(done)
		sh.mu.Unlock()
		return c
	}
}

// stage2 scores the key and draws its multiplier under the deadline. The
// work runs on its own goroutine so that a slow or stuck model costs the
// request the deadline, not more; a panic there becomes an ml_error.
func (m *mlStage) stage2(key string, rule *policy.Rule, p plan) epochChoice {
	start := m.now()
	fail := func(reason string) epochChoice {
		return m.logDeterministic(key, rule, epochChoice{started: start.UnixMicro(),
			expires: start.Add(min(fallbackRetry, m.cfg.Epoch)).UnixMicro(), multiplier: 1,
			propensity: 1, arm: -1, fallback: fallbackIndex(reason), plan: p})
	}
	snap := m.snapshotFor(p)
	if snap == nil {
		return fail(ReasonNoModel)
	}
	if start.Sub(m.modelTime(snap)) > m.cfg.MaxModelAge {
		return fail(ReasonStaleModel)
	}
	type result struct {
		c   epochChoice
		err error
	}
	out := make(chan result, 1)
	go func() {
		var r result
		defer func() {
			if p := recover(); p != nil {
				r.err = fmt.Errorf("panic: %v", p)
			}
			out <- r
		}()
		r.c, r.err = m.score(key, rule, snap, start, p)
	}()
	timer := time.NewTimer(m.cfg.Deadline)
	defer timer.Stop()
	select {
	case r := <-out:
		if m.timing != nil {
			m.timing(m.now().Sub(start))
		}
		if r.err != nil {
			if errors.Is(r.err, errUntracked) {
				return fail(ReasonFeatureStoreDown)
			}
			return fail(ReasonMLError)
		}
		r.c.plan = p
		return r.c
	case <-timer.C:
		return fail(ReasonMLDeadline)
	}
}

var errUntracked = errors.New("the feature store cannot track this key")

// score is stage 2 proper: features → risk → bandit.Choose over the arms
// the rule's [floor, ceiling] allows.
func (m *mlStage) score(key string, rule *policy.Rule, snap *bandit.Snapshot, now time.Time, p plan) (epochChoice, error) {
	if m.hook != nil {
		m.hook(key)
	}
	var buf [ctxDim]float64
	x, tracked := m.feats.VectorTracked(key, now, buf[:0])
	if !tracked {
		return epochChoice{}, errUntracked
	}
	if m.localOnly != nil && m.localOnlyRuns != nil {
		if why := m.localOnly(); why != "" {
			m.localOnlyRuns(why)
		}
	}
	allowed, err := snap.Allowed(rule.Floor, rule.Ceiling)
	if err != nil {
		return epochChoice{}, err
	}
	in := pipeline.Stage2Input{Features: x, Risk: m.risk.Load(), Model: snap, Allowed: allowed}
	if p.v != nil {
		in.Model = pipeline.Explored{Snapshot: snap, Factor: p.v.explore}
		if p.v.model == "" {
			in.Variant = p.v.arms
		}
	}
	r, err := pipeline.Stage2(in, rand.New(rand.NewPCG(m.draws, keyEpochSeed(key, now))))
	if err != nil {
		return epochChoice{}, err
	}
	c := r.Choice
	ec := epochChoice{started: now.UnixMicro(), expires: now.Add(m.cfg.Epoch).UnixMicro(), model: snap.Version(),
		multiplier: c.Multiplier, propensity: c.Propensity, risk: r.Risk, arm: int16(c.Arm), featuresHash: hashVector(r.Context)}
	if m.dlog != nil {
		ec.key, ec.id = key, m.idSeq.Add(1)
		e := m.keyEpoch(key, rule, now, m.cfg.Epoch, p, ec.id)
		e.Policy, e.Arm, e.ArmName, e.Multiplier, e.Propensity = rewards.PolicyBandit, c.Arm, c.Name, c.Multiplier, c.Propensity
		if p.shadow {
			e.Policy = rewards.PolicyShadow
		}
		e.ModelVersion, e.Context = snap.Version(), r.Context
		m.dlog.Log(pipeline.DecisionRecord(e))
	}
	return ec, nil
}

// keyEpoch is the decision-log entry of key's epoch under plan p, with
// its id, rule, time and variant filled in.
func (m *mlStage) keyEpoch(key string, rule *policy.Rule, start time.Time, length time.Duration, p plan, id uint64) pipeline.KeyEpoch {
	e := pipeline.KeyEpoch{ID: m.idBase + strconv.FormatUint(id, 36), Key: key, Rule: rule, Region: m.region,
		Start: start, Length: length}
	if p.v != nil {
		e.Experiment, e.Variant, e.Model = p.v.id.Experiment, p.v.id.Variant, p.v.model
	}
	return e
}

// closeEpoch logs the outcome of a logged epoch that ended.
func (m *mlStage) closeEpoch(c epochChoice, now int64) {
	if c.id == 0 || m.dlog == nil {
		return
	}
	m.dlog.Log(rewards.Record{Type: rewards.TypeOutcome, ID: m.idBase + strconv.FormatUint(c.id, 36), Key: c.key,
		At: time.UnixMicro(min(now, c.expires)).UTC(), Served: int64(c.served), Throttled: int64(c.throttled),
		Blocked: int64(c.blocked)})
}

// count adds one decision to the outcome of key's current epoch.
func (m *mlStage) count(key, action string) {
	h := hashKey(m, key)
	sh := &m.shards[h&255]
	sh.mu.Lock()
	if c, ok := sh.choices[h]; ok && c.id != 0 {
		switch action {
		case ActionAllow:
			c.served++
		case ActionThrottle:
			c.throttled++
		default:
			c.blocked++
		}
		sh.choices[h] = c
	}
	sh.mu.Unlock()
}

// hashVector returns the first 8 bytes of the SHA-256 of x's float bits.
func hashVector(x []float64) [8]byte {
	var b [ctxDim * 8]byte
	for i, v := range x {
		binary.LittleEndian.PutUint64(b[i*8:], math.Float64bits(v))
	}
	sum := sha256.Sum256(b[:len(x)*8])
	var out [8]byte
	copy(out[:], sum[:8])
	return out
}

// sweep drops expired epoch choices and idle features.
func (m *mlStage) sweep() (choices, keys int) {
	now := m.now()
	t := now.UnixMicro()
	for i := range m.shards {
		sh := &m.shards[i]
		sh.mu.Lock()
		var closed []epochChoice
		for h, c := range sh.choices {
			if t >= c.expires {
				delete(sh.choices, h)
				choices++
				if c.id != 0 {
					closed = append(closed, c)
				}
			}
		}
		sh.mu.Unlock()
		for _, c := range closed {
			m.closeEpoch(c, t)
		}
	}
	return choices, m.feats.Sweep(now)
}

// armName returns the name of arm i under plan p (a variant with a model
// of its own has its own arms), or "" for none.
func (m *mlStage) armName(p plan, i int16) string {
	arms := m.arms
	if p.v != nil && p.v.model != "" {
		arms = p.v.armSet
	}
	if i < 0 || int(i) >= len(arms) {
		return ""
	}
	return arms[i].Name
}

func modelVersion(v uint64) string {
	if v == 0 {
		return ""
	}
	return "v" + strconv.FormatUint(v, 10)
}

// recentLog keeps the last n decisions of up to maxKeys keys, dropping the
// key seen least recently when full: bounded memory for explain.
type recentLog struct {
	mu      sync.Mutex
	n       int
	maxKeys int
	keys    map[string]*recentRing
	order   []string // FIFO of keys, for eviction
}

type recentRing struct {
	items []RecentDecision
	next  int
}

// RecentDecision is one decision as explain shows it.
type RecentDecision struct {
	Time       time.Time `json:"time"`
	DecisionID string    `json:"decision_id"`
	Endpoint   string    `json:"endpoint"`
	Decision   string    `json:"decision"`
	Reason     string    `json:"reason"`
	Limit      int64     `json:"limit"`
	Remaining  int64     `json:"remaining"`
	Multiplier float64   `json:"multiplier"`
	Arm        string    `json:"arm"`
	Fallback   bool      `json:"fallback"`
}

func newRecentLog(n, maxKeys int) *recentLog {
	return &recentLog{n: n, maxKeys: maxKeys, keys: make(map[string]*recentRing)}
}

func (l *recentLog) add(key string, d RecentDecision) {
	l.mu.Lock()
	defer l.mu.Unlock()
	r := l.keys[key]
	if r == nil {
		if len(l.keys) >= l.maxKeys {
			old := l.order[0]
			l.order = l.order[1:]
			delete(l.keys, old)
		}
		r = &recentRing{items: make([]RecentDecision, 0, l.n)}
		l.keys[key] = r
		l.order = append(l.order, key)
	}
	if len(r.items) < l.n {
		r.items = append(r.items, d)
		return
	}
	r.items[r.next] = d
	r.next = (r.next + 1) % l.n
}

// get returns key's recent decisions, newest first.
func (l *recentLog) get(key string) []RecentDecision {
	l.mu.Lock()
	defer l.mu.Unlock()
	r := l.keys[key]
	if r == nil {
		return []RecentDecision{}
	}
	out := make([]RecentDecision, 0, len(r.items))
	for i := 0; i < len(r.items); i++ {
		j := (r.next - 1 - i + 2*len(r.items)) % len(r.items)
		if len(r.items) < l.n {
			j = len(r.items) - 1 - i
		}
		out = append(out, r.items[j])
	}
	return out
}

func hexHash(h [8]byte) string { return hex.EncodeToString(h[:]) }

func hashKey(m *mlStage, key string) uint64 { return maphash.String(m.seed, key) }

// keyEpochSeed is the FNV-1a hash of key, mixed with the epoch's start:
// a stable stream per key-epoch, unlike maphash, whose seed is random.
func keyEpochSeed(key string, start time.Time) uint64 {
	h := uint64(14695981039346656037)
	for i := 0; i < len(key); i++ {
		h = (h ^ uint64(key[i])) * 1099511628211
	}
	return h ^ uint64(start.UnixMicro())*0x9e3779b97f4a7c15
}

// sweepAll forgets every epoch choice, so that every key runs stage 2 again.
func (m *mlStage) sweepAll() {
	for i := range m.shards {
		sh := &m.shards[i]
		sh.mu.Lock()
		old := sh.choices
		sh.choices = make(map[uint64]epochChoice)
		sh.mu.Unlock()
		for _, c := range old {
			m.closeEpoch(c, m.now().UnixMicro())
		}
	}
}
