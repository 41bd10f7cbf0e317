package pipeline

import (
	crand "crypto/rand"
	"crypto/sha256"
	"encoding/binary"
	"encoding/hex"
	"errors"
	"fmt"
	"math"
	"math/rand/v2"
	"slices"
	"strconv"
	"time"

	"github.com/devflow/flowguard/bandit"
	"github.com/devflow/flowguard/experiments"
	"github.com/devflow/flowguard/features"
	"github.com/devflow/flowguard/policy"
	"github.com/devflow/flowguard/rewards"
)

// ctxDim is the bandit's context: the feature vector, then the risk score.
const ctxDim = features.Dim + 1

// Features is the per-key feature store stage 2 reads and Decide updates.
func (p *Pipeline) Features() *features.Store { return p.feats }

// Risk is the risk model in use.
func (p *Pipeline) Risk() *features.Risk { return p.risk.Load() }

// Model is the main bandit snapshot in use; nil before the first.
func (p *Pipeline) Model() *bandit.Snapshot { return p.model.Load() }

// VariantModels are the variant models in use, by key.
func (p *Pipeline) VariantModels() map[string]*bandit.Snapshot {
	if vs := p.variants.Load(); vs != nil {
		return *vs
	}
	return nil
}

// Arms are ml.arms, the main model's arms.
func (p *Pipeline) Arms() bandit.ArmSet { return p.arms }

// Now is the pipeline's clock.
func (p *Pipeline) Now() time.Time { return p.now() }

// Install makes a newly published model current. The main bandit snapshot
// must be newer than the one in use, and the risk model goes with it; the
// variant models are installed either way, since they can change while
// the main model does not.
func (p *Pipeline) Install(model rewards.Model) error {
	if err := p.checkSchema(model.Bandit); err != nil {
		return err
	}
	for _, v := range model.Variants {
		if err := p.checkSchema(v); err != nil {
			return err
		}
	}
	vs := model.Variants
	p.variants.Store(&vs)
	if err := p.model.Store(model.Bandit); err != nil {
		return err
	}
	if model.Risk != nil {
		p.risk.Store(model.Risk)
	}
	return nil
}

// InstallBandit makes snap the main bandit model, the risk model and the
// variant models unchanged: a model from a file, or one a test trained.
func (p *Pipeline) InstallBandit(snap *bandit.Snapshot) error {
	if err := p.checkSchema(snap); err != nil {
		return err
	}
	return p.model.Store(snap)
}

// ErrSchemaMismatch is Install's refusal of a model trained on vectors of
// another feature schema: its scores would be meaningless here. The model
// in use, or the deterministic fallback before the first, stays.
var ErrSchemaMismatch = errors.New("model trained on another feature schema")

// checkSchema refuses snap if it names a feature schema other than the
// store's. A snapshot of schema 0 (format 1, written before snapshots
// carried it) is checked by dimension alone, when the bandit installs it.
func (p *Pipeline) checkSchema(snap *bandit.Snapshot) error {
	if snap == nil || snap.Schema() == 0 {
		return nil
	}
	if want := p.feats.Schema(); snap.Schema() != want.Fingerprint() {
		if p.ev.Fallback != nil {
			p.ev.Fallback(ReasonSchemaMismatch) // counted once per refused model
		}
		return fmt.Errorf("pipeline: %w: model %q version %d has schema %016x, this build's features are schema v%d %016x",
			ErrSchemaMismatch, snap.ModelID(), snap.Version(), snap.Schema(), want.Version(), want.Fingerprint())
	}
	return nil
}

// Heartbeat records that the remote learners were alive at t: with
// learner: remote, a model's staleness counts from their last heartbeat.
func (p *Pipeline) Heartbeat(t time.Time) { p.fresh.Store(t.UnixMicro()) }

// snapshotFor returns the bandit snapshot plan pl chooses from: its
// variant's own model, or the main one; nil when there is none yet.
func (p *Pipeline) snapshotFor(pl experiments.Plan) *bandit.Snapshot {
	if pl.Variant == nil || pl.Variant.Model == "" {
		return p.model.Load()
	}
	if vs := p.variants.Load(); vs != nil {
		return (*vs)[pl.Variant.Model]
	}
	return nil
}

// modelTime is when the model in use was last known current: its
// creation, or the remote learners' last heartbeat if later.
func (p *Pipeline) modelTime(snap *bandit.Snapshot) time.Time {
	if f := p.fresh.Load(); f > snap.Created().UnixMicro() {
		return time.UnixMicro(f)
	}
	return snap.Created()
}

// ModelAge is how old the main model is now; ok false before the first.
func (p *Pipeline) ModelAge() (time.Duration, bool) {
	s := p.model.Load()
	if s == nil {
		return 0, false
	}
	return p.now().Sub(p.modelTime(s)), true
}

// run is stage 2 for a key's epoch under its plan: the static path or
// the bandit.
func (p *Pipeline) run(key string, rule *policy.Rule, pl experiments.Plan) epochChoice {
	if !pl.Static {
		return p.stage2(key, rule, pl)
	}
	start := p.now()
	c := epochChoice{started: start.UnixMicro(), expires: start.Add(p.cfg.Epoch).UnixMicro(), multiplier: 1,
		propensity: 1, arm: -1, plan: pl}
	return p.logDeterministic(key, rule, c)
}

// stage2 scores the key and draws its multiplier under the deadline. The
// work runs on its own goroutine so that a slow or stuck model costs the
// request the deadline, not more; a panic there becomes an ml_error.
func (p *Pipeline) stage2(key string, rule *policy.Rule, pl experiments.Plan) epochChoice {
	start := p.now()
	fail := func(reason string) epochChoice {
		keep := min(fallbackRetry, p.cfg.Epoch)
		if reason == ReasonDrift {
			keep = p.cfg.Epoch // drift lasts; its monitor counts each key once an epoch
		}
		return p.logDeterministic(key, rule, epochChoice{started: start.UnixMicro(),
			expires: start.Add(keep).UnixMicro(), multiplier: 1,
			propensity: 1, arm: -1, fallback: fallbackIndex(reason), plan: pl})
	}
	snap := p.snapshotFor(pl)
	if snap == nil {
		return fail(ReasonNoModel)
	}
	if start.Sub(p.modelTime(snap)) > p.cfg.MaxModelAge {
		return fail(ReasonStaleModel)
	}
	type result struct {
		c   epochChoice
		rec *rewards.Record // the decision record, logged only if the choice is made in time
		err error
	}
	out := make(chan result, 1)
	go func() {
		var r result
		defer func() {
			if v := recover(); v != nil {
				r.err = fmt.Errorf("panic: %v", v)
			}
			out <- r
		}()
		r.c, r.rec, r.err = p.score(key, rule, snap, start, pl)
	}()
	timer := time.NewTimer(p.cfg.Deadline)
	defer timer.Stop()
	select {
	case r := <-out:
		if p.ev.Stage2 != nil {
			p.ev.Stage2(p.now().Sub(start))
		}
		if r.err != nil {
			if errors.Is(r.err, errUntracked) {
				return fail(ReasonFeatureStoreDown)
			}
			if errors.Is(r.err, errDrift) {
				return fail(ReasonDrift)
			}
			return fail(ReasonMLError)
		}
		r.c.plan = pl
		// Logged here, not in score: a choice past the deadline is not
		// enforced, and a record of it would leave the learner a decision
		// whose outcome never comes.
		if r.rec != nil && !p.dlog.Log(*r.rec) {
			// Shed (counted by the log): the epoch is not learned from,
			// and its outcome would only be an orphan taking room.
			r.c.key, r.c.id = "", 0
		}
		return r.c
	case <-timer.C:
		return fail(ReasonMLDeadline)
	}
}

var (
	errUntracked = errors.New("the feature store cannot track this key")
	errDrift     = errors.New("the features drifted from what the model learned on")
)

// Drift is the feature-drift monitor; nil with ml.drift.mode off.
func (p *Pipeline) Drift() *Drift { return p.drift }

// score is stage 2 proper: features → risk → bandit.Choose over the arms
// the rule's [floor, ceiling] allows.
func (p *Pipeline) score(key string, rule *policy.Rule, snap *bandit.Snapshot, now time.Time, pl experiments.Plan) (epochChoice, *rewards.Record, error) {
	if p.hook != nil {
		p.hook(key)
	}
	var buf [ctxDim]float64
	x, tracked := p.feats.VectorTracked(key, now, buf[:0])
	if !tracked {
		return epochChoice{}, nil, errUntracked
	}
	if p.drift != nil {
		p.drift.Observe(x)
		if p.drift.Drifting() {
			return epochChoice{}, nil, errDrift
		}
	}
	if p.ev.Local != nil && p.ev.LocalRun != nil {
		if why := p.ev.Local(); why != "" {
			p.ev.LocalRun(why)
		}
	}
	allowed, err := snap.Allowed(rule.Floor, rule.Ceiling)
	if err != nil {
		return epochChoice{}, nil, err
	}
	in := Stage2Input{Features: x, Risk: p.risk.Load(), Model: snap, Allowed: allowed, ShrinkRisk: ShrinkRisk(p.cfg.ShrinkRisk),
		Store: p.feats, At: now}
	if in.ShrinkRisk > 0 {
		if base, err := snap.Allowed(max(1, rule.Floor), rule.Ceiling); err == nil {
			in.Base = base
		}
	}
	if v := pl.Variant; v != nil {
		in.Model = Explored{Snapshot: snap, Factor: v.Explore}
		if v.Model == "" {
			in.Variant = v.Arms
		}
	}
	r, err := Stage2(in, rand.New(rand.NewPCG(p.draws, keyEpochSeed(key, now))))
	if err != nil {
		return epochChoice{}, nil, err
	}
	c := r.Choice
	ec := epochChoice{started: now.UnixMicro(), expires: now.Add(p.cfg.Epoch).UnixMicro(), model: snap.Version(),
		multiplier: c.Multiplier, propensity: c.Propensity, risk: r.Risk, arm: int16(c.Arm), featuresHash: hashVector(r.Context)}
	if p.dlog != nil {
		ec.key, ec.id = key, p.idSeq.Add(1)
		e := p.keyEpoch(key, rule, now, p.cfg.Epoch, pl, ec.id)
		e.Policy, e.Arm, e.ArmName, e.Multiplier, e.Propensity = rewards.PolicyBandit, c.Arm, c.Name, c.Multiplier, c.Propensity
		if pl.Shadow {
			e.Policy = rewards.PolicyShadow
		}
		// The context lives in this call's buffer; the log keeps the record.
		e.ModelVersion, e.Context = snap.Version(), slices.Clone(r.Context)
		rec := DecisionRecord(e)
		return ec, &rec, nil
	}
	return ec, nil, nil
}

// keyEpoch is the decision-log entry of key's epoch under plan pl, with
// its id, rule, time and variant filled in.
func (p *Pipeline) keyEpoch(key string, rule *policy.Rule, start time.Time, length time.Duration, pl experiments.Plan, id uint64) KeyEpoch {
	e := KeyEpoch{ID: p.idBase + strconv.FormatUint(id, 36), Key: key, Rule: rule, Region: p.o.Region,
		Start: start, Length: length}
	if v := pl.Variant; v != nil {
		e.Experiment, e.Variant, e.Model = v.ID.Experiment, v.ID.Variant, v.Model
	}
	return e
}

// logDeterministic logs a key-epoch of an experiment unit whose enforced
// budget is the deterministic one (static variant or ML fallback): the arm
// nearest the enforced multiplier with propensity 1, as policy static (not
// learned from). Units in no experiment, and keys the feature store
// cannot track, are not logged.
func (p *Pipeline) logDeterministic(key string, rule *policy.Rule, c epochChoice) epochChoice {
	if c.plan.Variant == nil || p.dlog == nil || len(p.arms) == 0 {
		return c
	}
	if c.started == 0 {
		c.started = p.now().UnixMicro()
	}
	at := time.UnixMicro(c.started)
	var buf [ctxDim]float64
	x, tracked := p.feats.VectorTracked(key, at, buf[:0])
	if !tracked {
		return c
	}
	risk := p.risk.Load().Score(x)
	x = append(x, risk)
	_, mult := rule.Budget(1)
	arm := p.arms.Nearest(mult)
	c.key, c.id = key, p.idSeq.Add(1)
	c.risk, c.featuresHash = risk, hashVector(x)
	e := p.keyEpoch(key, rule, at, time.Duration(c.expires-c.started)*time.Microsecond, c.plan, c.id)
	e.Model = "" // the deterministic budget, drawn from no model
	e.Policy, e.Arm, e.ArmName, e.Multiplier, e.Propensity, e.Context = rewards.PolicyStatic, arm, p.arms[arm].Name, mult, 1, slices.Clone(x)
	if snap := p.model.Load(); snap != nil {
		e.ModelVersion = snap.Version()
	}
	if !p.dlog.Log(DecisionRecord(e)) {
		c.key, c.id = "", 0 // shed, as in stage2
	}
	return c
}

// armName returns the name of arm i under plan pl (a variant with a model
// of its own has its own arms), or "" for none.
func (p *Pipeline) armName(pl experiments.Plan, i int16) string {
	arms := p.arms
	if v := pl.Variant; v != nil && v.Model != "" {
		arms = v.ArmSet
	}
	if i < 0 || int(i) >= len(arms) {
		return ""
	}
	return arms[i].Name
}

// LabelVariant finds the variant of a label's key: the one of its current
// epoch, else its assignment with the tier of the label's tenant. A label
// carries no region, so a key of a region-targeted experiment whose epoch
// has ended is not attributed.
func (p *Pipeline) LabelVariant(l rewards.Label) *experiments.LiveVariant {
	if c, ok := p.current(l.Key); ok && c.plan.Variant != nil {
		return c.plan.Variant
	}
	rule := p.policies.Load().Resolve(l.Tenant, "")
	if rule.ML == policy.MLOff {
		return nil
	}
	return p.o.Experiments.Assign(experiments.Unit{Key: l.Key, Tenant: l.Tenant, Tier: rule.Tier}, rule.ML == policy.MLShadow).Variant
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

// keyEpochSeed is the FNV-1a hash of key, mixed with the epoch's start:
// a stable stream per key-epoch, unlike maphash, whose seed is random.
func keyEpochSeed(key string, start time.Time) uint64 {
	h := uint64(14695981039346656037)
	for i := 0; i < len(key); i++ {
		h = (h ^ uint64(key[i])) * 1099511628211
	}
	return h ^ uint64(start.UnixMicro())*0x9e3779b97f4a7c15
}

// newIDBase is this pipeline's decision-log id prefix: random, so that
// ids are unique across instances and restarts.
func newIDBase() string {
	var b [4]byte
	_, _ = crand.Read(b[:])
	return hex.EncodeToString(b[:]) + "-"
}
