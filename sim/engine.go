package sim

import (
	"context"
	"errors"
	"fmt"
	"math"
	"math/rand/v2"
	"runtime"
	"slices"
	"sort"
	"strconv"
	"sync"
	"time"

	"github.com/devflow/flowguard/bandit"
	"github.com/devflow/flowguard/experiments"
	"github.com/devflow/flowguard/features"
	"github.com/devflow/flowguard/limiter"
	"github.com/devflow/flowguard/pipeline"
	"github.com/devflow/flowguard/policy"
	"github.com/devflow/flowguard/quotas"
	"github.com/devflow/flowguard/rewards"
)

// Policies the simulator compares.
const (
	PolicyStaticP99     = "static-p99"      // seed 004: daily quotas per endpoint, pooled over tiers, refitted; a rolling 24h budget
	PolicyStaticP99Tier = "static-p99-tier" // the same fit per tier × endpoint
	PolicyStaticTier    = "static-tier"     // the tier's deterministic budget: base × 1 within [floor, ceiling]
	PolicyFloor         = "floor"           // sanity: every key at its floor
	PolicyCeiling       = "ceiling"         // sanity: every key at its ceiling
	PolicyLinTS         = "lints"           // Thompson sampling, provisional rewards and exact label corrections
	PolicyLinTSWait     = "lints-wait"      // Thompson sampling that learns a record only once it is final
	PolicyEpsGreedy     = "eps-greedy"      // ε-greedy on the same posterior means, provisional rewards
	PolicyOracle        = "oracle"          // hindsight bound: all legitimate demand, no abuse
)

// AllPolicies lists every policy, in report order.
var AllPolicies = []string{PolicyStaticP99, PolicyStaticP99Tier, PolicyStaticTier, PolicyFloor, PolicyCeiling,
	PolicyLinTS, PolicyLinTSWait, PolicyEpsGreedy, PolicyOracle}

// PolicyDefinitions say what each policy does, for the report.
var PolicyDefinitions = map[string]string{
	PolicyStaticP99: "seed 004 as written: per endpoint, PERCENTILE_CONT(0.99) of the non-malicious daily requests per key " +
		"over the training window, pooled over every tier, refitted on learning.refit_every, enforced by the limiter's GCRA " +
		"as a rolling 24h budget (rate = burst = the quota); no per-minute cap",
	PolicyStaticP99Tier: "static-p99 fitted per tier × endpoint: what a team would deploy",
	PolicyStaticTier:    "the tier's policy budget × 1 (clamped to [floor, ceiling]), through the limiter",
	PolicyFloor:         "sanity: every key's budget at its tier's floor",
	PolicyCeiling:       "sanity: every key's budget at its tier's ceiling",
	PolicyLinTS:         "the service's pipeline: features, risk, LinTS over the arms [floor, ceiling], provisional rewards with exact label corrections",
	PolicyLinTSWait:     "lints that learns a key-epoch only once its reward is final (after the attribution window)",
	PolicyEpsGreedy:     "ε-greedy on the same posterior means as lints, provisional rewards",
	PolicyOracle: "a hindsight bound, not a policy: it knows each key-epoch's legitimate and abusive demand, serves every " +
		"legitimate request and no abusive one, whatever the incidents; not even the ceiling caps it, because seed 004's " +
		"daily quotas (no per-minute cap) serve bursts above the ceiling and a capped oracle would not bound them",
}

// ErrUnknownPolicy is wrapped by Run's error for a policy name it does not know.
var ErrUnknownPolicy = errors.New("unknown policy")

// Options configures Run.
type Options struct {
	// Seed seeds the traffic, the labels and every policy's draws.
	// Default: 0.
	Seed uint64
	// Policies to run, by name (AllPolicies). Required.
	Policies []string
	// Workers is how many goroutines share a policy run's keys; it
	// changes the speed, never the results. Default: GOMAXPROCS.
	Workers int
	// Progress, when set, is called after every epoch with the key-epochs
	// done and the total over all policies. It runs on Run's goroutine.
	Progress func(done, total int64)
	// Clock measures wall_s. Default: time.Now.
	Clock func() time.Time

	// KeepUsage keeps the daily usage the static-p99 policies fitted on
	// (Results.WriteUsageCSV): the same rows flowguard quotas reads.
	KeepUsage bool

	// throttledOut keeps each key's throttled requests, for a trace replay.
	throttledOut bool
}

// shards is the fixed number of key shards. Each has its own random
// source and tallies, and keys never change shard, so the results do not
// depend on how many workers run the shards.
const shards = 16

// sharedRun is what every policy run of one Run reads: the population,
// the traffic shape and the labels that do not depend on the policy.
type sharedRun struct {
	s        *Scenario
	pop      *population
	epochs   int
	perDay   float64
	epochSec float64
	diurnal  [][]float64 // per tenant, per epoch of the day: mean 1
	growth   [][]float64 // per tenant, per day
	flash    [][]float64 // per tenant, per epoch: the flash crowd's factor; nil for a tenant without one
	labels   []pendingLabel
	history  []quotas.UsageRow
	arms     bandit.ArmSet
	allowed  []bandit.ArmRange // per tenant
	base     []bandit.ArmRange // per tenant: the allowed arms at or above ×1
	bucket   int               // epochs per series point
	buckets  int
	incident []incidentState // per epoch
	keys     []int           // per shard, the keys of the shard
	shardOf  [][]int
	// With an experiments file: each key's plan, as experiments.Runtime
	// assigns it, and the index of its variant in variants (-1: none).
	plans    []experiments.Plan
	variant  []int16
	variants []experiments.VariantID
	// tiers are the scenario's tier names, sorted; tierOf is each
	// tenant's index in it.
	tiers  []string
	tierOf []int
}

// assign runs experiments assignment for every key whose policy lets ML
// run, as serving does on a key's first request: the same runtime and hash.
// Assignment depends only on the unit, and the simulator runs no
// guardrails, so a key's plan holds for the whole run.
func (sr *sharedRun) assign() error {
	s := sr.s
	if s.exps == nil {
		return nil
	}
	rt, err := experiments.NewRuntime(experiments.RuntimeOptions{GuardrailEvery: time.Minute, GuardrailWindow: time.Minute,
		Arms: s.Arms, Exploration: s.Learning.Scale})
	if err != nil {
		return err
	}
	if err := rt.Install(s.exps); err != nil {
		return fmt.Errorf("sim: experiments: %w", err)
	}
	index := map[*experiments.LiveVariant]int16{}
	pop := sr.pop
	sr.plans, sr.variant = make([]experiments.Plan, len(pop.names)), make([]int16, len(pop.names))
	for k, name := range pop.names {
		sr.variant[k] = -1
		tn := &pop.tenants[pop.tenant[k]]
		if tn.rule.ML == policy.MLOff {
			continue
		}
		pl := rt.Assign(experiments.Unit{Key: name, Tenant: tn.name, Tier: tn.rule.Tier, Region: RegionName(int(pop.region[k]))},
			tn.rule.ML == policy.MLShadow)
		sr.plans[k] = pl
		if v := pl.Variant; v != nil {
			i, ok := index[v]
			if !ok {
				i = int16(len(sr.variants))
				index[v] = i
				sr.variants = append(sr.variants, v.ID)
			}
			sr.variant[k] = i
		}
	}
	return nil
}

// RegionName is the name of simulated region i (from 0): region-1 … region-N.
func RegionName(i int) string { return "region-" + strconv.Itoa(i+1) }

// incidentState is what is broken during one epoch.
type incidentState struct {
	redisShare float64 // the limiter's share; 1 when Redis is up
	kafka      bool    // decisions lost, labels wait, no model published
	stale      bool    // stage 2 falls back
	region     int     // failed region, -1 none
}

type pendingLabel struct {
	at    int64 // arrival, µs
	key   int
	label rewards.Label
}

func newSharedRun(s *Scenario, seed uint64) (*sharedRun, error) {
	sr := &sharedRun{s: s, epochs: s.Epochs(), perDay: float64(24 * time.Hour / s.Epoch),
		epochSec: s.Epoch.Seconds(), arms: s.Arms}
	sr.pop = newPopulation(s, seed)
	days := int(math.Ceil(float64(sr.epochs)/sr.perDay)) + 1
	for _, t := range sr.pop.tenants {
		d := make([]float64, int(sr.perDay))
		for i := range d {
			h := (float64(i) + 0.5) * 24 / sr.perDay
			d[i] = 1 + t.diurnal*math.Cos(2*math.Pi*(h-t.peakHour)/24)
		}
		sr.diurnal = append(sr.diurnal, d)
		g := make([]float64, days)
		for i := range g {
			g[i] = math.Pow(1+t.growth, float64(i))
		}
		sr.growth = append(sr.growth, g)
		if b, err := s.Arms.Allowed(max(1, t.rule.Floor), t.rule.Ceiling); err == nil {
			sr.base = append(sr.base, b)
		} else {
			sr.base = append(sr.base, bandit.ArmRange{})
		}
		r, err := s.Arms.Allowed(t.rule.Floor, t.rule.Ceiling)
		if err != nil && !errors.Is(err, bandit.ErrNoArm) {
			return nil, fmt.Errorf("sim: tenant %s: %w", t.name, err)
		}
		sr.allowed = append(sr.allowed, r)
	}
	if err := sr.assign(); err != nil {
		return nil, err
	}
	for _, t := range sr.pop.tenants {
		if !slices.Contains(sr.tiers, t.rule.Tier) {
			sr.tiers = append(sr.tiers, t.rule.Tier)
		}
	}
	slices.Sort(sr.tiers)
	for _, t := range sr.pop.tenants {
		sr.tierOf = append(sr.tierOf, slices.Index(sr.tiers, t.rule.Tier))
	}
	sr.bucket = max(1, int(time.Hour/s.Epoch))
	for sr.epochs/sr.bucket > 500 {
		sr.bucket *= 2
	}
	sr.buckets = (sr.epochs + sr.bucket - 1) / sr.bucket
	sr.flash = make([][]float64, len(sr.pop.tenants))
	for _, in := range s.Incidents {
		if in.Kind != FlashCrowd {
			continue
		}
		ti := s.tenants[in.Tenant]
		if sr.flash[ti] == nil {
			sr.flash[ti] = make([]float64, sr.epochs)
			for e := range sr.flash[ti] {
				sr.flash[ti][e] = 1
			}
		}
		from := int(in.At / s.Epoch)
		to := min(sr.epochs, int((in.At+in.Duration+s.Epoch-1)/s.Epoch))
		for e := from; e < to; e++ {
			sr.flash[ti][e] *= in.Factor
		}
	}
	sr.incident = make([]incidentState, sr.epochs)
	for e := range sr.incident {
		sr.incident[e] = incidentState{redisShare: 1, region: -1}
	}
	for _, in := range s.Incidents {
		from := int(in.At / s.Epoch)
		to := min(sr.epochs, int((in.At+in.Duration+s.Epoch-1)/s.Epoch))
		for e := from; e < to; e++ {
			st := &sr.incident[e]
			switch in.Kind {
			case RedisOutage:
				st.redisShare = min(st.redisShare, in.Share)
			case KafkaOutage:
				st.kafka = true
			case StaleModel:
				st.stale = true
			case RegionOutage:
				st.region = in.Region
			}
		}
	}
	sr.shardOf = make([][]int, shards)
	for k := range sr.pop.names {
		sr.shardOf[k%shards] = append(sr.shardOf[k%shards], k)
	}
	if sr.pop.trace != nil {
		sr.traceLabels()
		return sr, nil
	}
	sr.makeLabels(seed)
	sr.makeHistory()
	return sr, nil
}

func (sr *sharedRun) micros(e int) int64 {
	return sr.s.start.Add(time.Duration(e) * sr.s.Epoch).UnixMicro()
}

// makeLabels draws the labels that do not depend on the policy: abuse
// found with the scenario's coverage and delay (then again every day the
// abuse goes on), and false abusive labels on legitimate keys.
func (sr *sharedRun) makeLabels(seed uint64) {
	s, pop := sr.s, sr.pop
	end := sr.micros(sr.epochs)
	hour := int64(time.Hour / time.Microsecond)
	day := 24 * hour
	id := 0
	add := func(k int, from, to, at int64, abusive bool, sev float64, source string) {
		if to <= from || at >= end {
			return
		}
		id++
		sr.labels = append(sr.labels, pendingLabel{at: at, key: k, label: rewards.Label{
			LabelID: "sim-" + strconv.Itoa(id), Key: pop.names[k], Tenant: pop.tenants[pop.tenant[k]].name,
			Abusive: abusive, From: time.UnixMicro(from).UTC(), To: time.UnixMicro(to).UTC(), Source: source, Severity: sev}})
	}
	for k := range pop.names {
		if pop.kind[k] == kindLegit || pop.kind[k] == kindSleeper || ownerStays(pop.kind[k]) {
			days := int(math.Ceil(float64(sr.epochs) / sr.perDay))
			for d := 0; d < days; d++ {
				if unit(hash3(seed, uint64(k), uint64(d)<<8|5)) < s.Labels.FalseRate {
					at := sr.micros(0) + int64(d)*day + int64(unit(hash3(seed, uint64(k), uint64(d)<<8|6))*float64(day))
					add(k, at-6*hour, at, at+sr.delay(seed, k, d), true, 1, "false-positive")
				}
			}
		}
		if pop.kind[k] == kindLegit || unit(hash3(seed, uint64(k), 7)) >= s.Labels.Coverage {
			continue
		}
		sev := 1.0
		if ownerStays(pop.kind[k]) {
			// The owner's own traffic is not abuse; the investigator
			// estimates the abusive share, with a lognormal error.
			sev = float64(pop.abuseDaily[k]) / float64(pop.abuseDaily[k]+pop.daily[k])
			sev = min(1, max(0.01, sev*noise(hash3(seed, uint64(k), 10), *s.Labels.SeverityNoise)))
		}
		// An investigation's verdict covers the key from the start of the
		// abuse on, as the investigator dates it (a gaussian error of
		// labels.interval_noise), for as long as a label may span (30
		// days): the key is known bad until someone clears it.
		truth := sr.micros(int(pop.abuseStart[k]))
		from := truth + int64(gauss(hash3(seed, uint64(k), 11))*float64(s.Labels.IntervalNoise.Microseconds()))
		from = max(sr.micros(0)-day, from)
		at := truth + sr.delay(seed, k, -1)
		const span = 29 * 24 * 3600e6
		for ; at < end; from, at = from+span, at+span {
			add(k, from, from+span, at, true, sev, "investigation")
		}
	}
	sort.SliceStable(sr.labels, func(i, j int) bool { return sr.labels[i].at < sr.labels[j].at })
}

// delay draws a label delay, lognormal with the scenario's median and
// sigma, in µs.
func (sr *sharedRun) delay(seed uint64, k, n int) int64 {
	l := sr.s.Labels
	g := gauss(hash3(seed, uint64(k), uint64(int64(n))<<8|8))
	return int64(float64(l.DelayMedian.Microseconds()) * math.Exp(l.DelaySigma*g))
}

// makeHistory generates HistoryDays of legitimate usage before the run,
// for static-p99's first fit.
func (sr *sharedRun) makeHistory() {
	first := quotas.DayOf(sr.s.start)
	for d := -sr.s.Learning.HistoryDays; d < 0; d++ {
		for k := range sr.pop.names {
			if v := sr.pop.dailyLegit(k, d); v > 0 {
				t := &sr.pop.tenants[sr.pop.tenant[k]]
				sr.history = append(sr.history, quotas.UsageRow{Endpoint: t.endpoint,
					User: sr.pop.names[k], Day: first + quotas.Day(d), Requests: int64(v), Tier: t.rule.Tier})
			}
		}
	}
}

// Run simulates every policy of o on the scenario and returns their
// results. The same scenario, seed and policies give the same results,
// byte for byte, except the measured wall_s. ctx cancels the run between
// epochs.
func Run(ctx context.Context, s *Scenario, o Options) (*Results, error) {
	if len(o.Policies) == 0 {
		return nil, errors.New("sim: no policy to run")
	}
	for _, p := range o.Policies {
		if !slices.Contains(AllPolicies, p) {
			return nil, fmt.Errorf("sim: %w %q (want one of %v)", ErrUnknownPolicy, p, AllPolicies)
		}
	}
	if o.Workers <= 0 {
		o.Workers = runtime.GOMAXPROCS(0)
	}
	if o.Clock == nil {
		o.Clock = time.Now
	}
	sr, err := newSharedRun(s, o.Seed)
	if err != nil {
		return nil, err
	}
	// The oracle runs first, requested or not: every other policy's
	// regret is measured against it.
	order := []string{PolicyOracle}
	for _, p := range o.Policies {
		if p != PolicyOracle && !slices.Contains(order, p) {
			order = append(order, p)
		}
	}
	res := &Results{Scenario: s.Name, Seed: o.Seed, Policies: map[string]PolicyResult{}, scenario: s,
		Series: map[string]*Series{}, Details: map[string]*Details{}, Epoch: s.Epoch, BucketEpochs: sr.bucket,
		Start: s.start}
	for _, p := range AllPolicies {
		if slices.Contains(o.Policies, p) {
			res.Order = append(res.Order, p)
		}
	}
	total := int64(len(order)) * int64(sr.epochs) * int64(len(sr.pop.names))
	var done int64
	var oracle *Series
	for _, name := range order {
		start := o.Clock()
		pr, err := newPolicyRun(sr, name, o)
		if err != nil {
			return nil, err
		}
		for e := 0; e < sr.epochs; e++ {
			if err := ctx.Err(); err != nil {
				return nil, err
			}
			if err := pr.epoch(e); err != nil {
				return nil, fmt.Errorf("sim: %s, epoch %d: %w", name, e, err)
			}
			done += int64(len(sr.pop.names))
			if o.Progress != nil {
				o.Progress(done, total)
			}
		}
		r, series, details := pr.finish()
		r.WallS = math.Round(o.Clock().Sub(start).Seconds()*1000) / 1000
		if name == PolicyOracle {
			oracle = series
		}
		series.regret(oracle)
		r.RegretVsOracle = round6(oracle.CumReward[len(oracle.CumReward)-1] - series.CumReward[len(series.CumReward)-1])
		if slices.Contains(o.Policies, name) {
			res.Policies[name], res.Series[name], res.Details[name] = r, series, details
			if o.KeepUsage && pr.quota != nil {
				if res.usage == nil {
					res.usage = map[string][]quotas.UsageRow{}
				}
				res.usage[name] = pr.usage
			}
			if o.throttledOut {
				if res.throttledPerKey == nil {
					res.throttledPerKey = map[string][]float64{}
				}
				res.throttledPerKey[name] = pr.keyThrottled
			}
		}
	}
	return res, nil
}

// policyRun is one policy's pass over the scenario.
type policyRun struct {
	sr   *sharedRun
	name string
	o    Options
	ml   bool

	// Per key, parallel arrays.
	tat          []int64   // the limiter's state per key: GCRA's theoretical arrival time, µs
	lastUsed     []float32 // share of the budget used last epoch
	lastThr      []bool
	probe        []float32 // adaptive prober's aim, requests per epoch
	dayReq       []float32 // static-p99: requested today, for the usage history
	dayActive    []int32   // the last day (+1) a legitimate key had demand
	dayThr       []int32   // the last day (+1) a legitimate key was throttled
	throttled    []bool    // a legitimate request of the key was ever throttled
	complain     []int32   // last day the key complained, +1
	keyThrottled []float64 // per key, requests throttled or blocked (trace replay only)

	feats    *features.Store
	cold     *features.Store // region outage: the instances the failed region's keys move to
	part     *rewards.Partition
	model    *bandit.Snapshot
	risk     *features.Risk
	drift    *pipeline.Drift // nil with learning.drift.mode off
	lastPub  int
	labelPos int
	extra    []pendingLabel // complaints, sorted by arrival

	// static-p99
	quota    []float64 // per tenant, daily; +Inf before any fit
	byTier   bool      // static-p99-tier: fitted per tier × endpoint
	usage    []quotas.UsageRow
	known    map[int][]rewards.Label // labels received, per key
	labelSev []float32               // the learning policies: the severity of the abusive label holding each key; 0: none
	lastFit  int64
	daily    bool    // lints with learning.daily_quota fitted: the quota is a second window
	tatDay   []int64 // its GCRA state per key
	fits     int
	quotaLog []string

	sh []shardState
}

// shardState is one shard's random source, tallies and learner records
// for the current epoch.
type shardState struct {
	idx     int // this shard's index in policyRun.sh
	rng     *rand.Rand
	tally   tally
	series  []tally
	recs    []learnRecord
	ctx     []float64 // contexts of recs, Dim+1 each
	buf     []float64
	exc     []pendingLabel
	choiceE error
	// variants are the tallies of each experiment variant's keys
	// (sharedRun.variants).
	variants []tally
	// tiers are the tallies per tier (sharedRun.tiers); epoch is the
	// current epoch's, per tier.
	tiers, epoch []tally
	// foldX are the vectors stage 2 scored this epoch, Dim each, and
	// foldStore their stores: folded into the cohorts after the epoch.
	foldX     []float64
	foldStore []*features.Store
}

type learnRecord struct {
	key                        int
	arm                        int
	mult, prop, base           float64
	served, throttled, blocked int64
	variant                    string
}

// tally sums what happened; one per shard, per series point.
type tally struct {
	legitReq, legitThr, abuseReq, abuseServed float64
	entReq, entThr                            float64
	reward                                    float64
	terms                                     rewards.Terms
	fallback, keyEpochs, blockedEpochs        int64
	drift                                     int64 // of fallback: ml.drift
	decisions                                 int64
	floorViolations                           int64
	entKeyEpochs                              int64 // legitimate enterprise key-epochs with demand
	legitKeyDays, legitKeyDaysThr             int64 // legitimate keys' days with demand, and with a throttle
	kindReq, kindServed                       [numKinds]float64
}

func (t *tally) add(o *tally) {
	t.legitReq += o.legitReq
	t.legitThr += o.legitThr
	t.abuseReq += o.abuseReq
	t.abuseServed += o.abuseServed
	t.entReq += o.entReq
	t.entThr += o.entThr
	t.reward += o.reward
	t.terms.Add(o.terms)
	t.fallback += o.fallback
	t.drift += o.drift
	t.keyEpochs += o.keyEpochs
	t.blockedEpochs += o.blockedEpochs
	t.decisions += o.decisions
	t.floorViolations += o.floorViolations
	t.entKeyEpochs += o.entKeyEpochs
	t.legitKeyDays += o.legitKeyDays
	t.legitKeyDaysThr += o.legitKeyDaysThr
	for i := range t.kindReq {
		t.kindReq[i] += o.kindReq[i]
		t.kindServed[i] += o.kindServed[i]
	}
}

func newPolicyRun(sr *sharedRun, name string, o Options) (*policyRun, error) {
	n := len(sr.pop.names)
	pr := &policyRun{sr: sr, name: name, o: o,
		tat: make([]int64, n), lastUsed: make([]float32, n), lastThr: make([]bool, n),
		probe: make([]float32, n), throttled: make([]bool, n), complain: make([]int32, n),
		dayActive: make([]int32, n), dayThr: make([]int32, n), sh: make([]shardState, shards)}
	if o.throttledOut {
		pr.keyThrottled = make([]float64, n)
	}
	for k := range pr.probe {
		pr.probe[k] = float32(sr.pop.tenants[sr.pop.tenant[k]].base) // an adaptive prober starts at its base budget
	}
	for i := range pr.sh {
		pr.sh[i].idx = i
		pr.sh[i].rng = rand.New(rand.NewPCG(o.Seed, 0x73696d00|uint64(i)))
		pr.sh[i].series = make([]tally, sr.buckets)
		pr.sh[i].buf = make([]float64, 0, features.Dim+1)
		pr.sh[i].variants = make([]tally, len(sr.variants))
		pr.sh[i].tiers, pr.sh[i].epoch = make([]tally, len(sr.tiers)), make([]tally, len(sr.tiers))
	}
	switch name {
	case PolicyLinTS, PolicyLinTSWait, PolicyEpsGreedy:
		pr.ml = true
		if sr.s.Learning.LabelAction == "on" {
			pr.labelSev = make([]float32, n)
		}
		var err error
		if pr.feats, err = features.NewStore(features.Config{IdleTTL: 24 * time.Hour}); err != nil {
			return nil, err
		}
		pr.drift = pipeline.DriftFor(pr.feats.Schema(), sr.s.Learning.Drift)
		mode := rewards.ModeProvisional
		if name == PolicyLinTSWait {
			mode = rewards.ModeWait
		}
		l := sr.s.Learning
		cfg := rewards.Config{Bandit: bandit.Config{ModelID: "sim-" + name, Arms: sr.arms, Dim: features.Dim + 1, Schema: features.CurrentSchema().Fingerprint(), Scale: l.Scale},
			Risk: features.RiskConfig{Dim: features.Dim, Prior: l.RiskPrior}, Weights: sr.s.Rewards,
			Window: l.AttributionWindow, Mode: mode}
		if pr.part, err = rewards.NewPartition(cfg); err != nil {
			return nil, err
		}
		if err := pr.publish(0); err != nil {
			return nil, err
		}
		if l.DailyQuota == DailyQuotaFitted {
			// The deterministic base's second window: seed 004's quota per
			// tier × endpoint, fitted as static-p99-tier fits it, scaled by
			// the multiplier like the per-minute budget.
			pr.daily = true
			if err := pr.initQuotas(true); err != nil {
				return nil, err
			}
			pr.tatDay = make([]int64, n)
		}
	case PolicyStaticP99, PolicyStaticP99Tier:
		if err := pr.initQuotas(name == PolicyStaticP99Tier); err != nil {
			return nil, err
		}
	}
	return pr, nil
}

// initQuotas sets up the seed-004 quota fit: per tier × endpoint, or
// pooled over the tiers; the first fit is on the history before the run.
func (pr *policyRun) initQuotas(byTier bool) error {
	sr, n := pr.sr, len(pr.sr.pop.names)
	pr.dayReq = make([]float32, n)
	pr.quota = make([]float64, len(sr.pop.tenants))
	for i := range pr.quota {
		pr.quota[i] = math.Inf(1)
	}
	pr.known = map[int][]rewards.Label{}
	pr.usage = slices.Clone(sr.history)
	pr.byTier = byTier
	if !pr.byTier {
		for i := range pr.usage {
			pr.usage[i].Tier = "" // one quota per endpoint, pooled over the tiers
		}
	}
	return pr.refit(0)
}

// publish makes the learner's current model the one serving chooses
// with: a bandit snapshot and a copy of the risk model, as the learner
// publishes them every publish_every.
func (pr *policyRun) publish(e int) error {
	created := time.UnixMicro(pr.sr.micros(e)).UTC()
	snap, err := pr.part.Bandit(created)
	if err != nil {
		return err
	}
	b, err := pr.part.Risk().MarshalBinary()
	if err != nil {
		return err
	}
	risk, err := features.DecodeRisk(b)
	if err != nil {
		return err
	}
	pr.model, pr.risk, pr.lastPub = snap, risk, e
	return nil
}

// epoch runs one epoch: labels that arrived, a model publish if due, the
// keys (in parallel over shards), then the learner.
func (pr *policyRun) epoch(e int) error {
	sr := pr.sr
	inc := sr.incident[e]
	now := sr.micros(e)
	if err := pr.deliverLabels(now, inc.kafka); err != nil {
		return err
	}
	if pr.ml && !inc.kafka && e > 0 && time.Duration(e-pr.lastPub)*sr.s.Epoch >= sr.s.Learning.PublishEvery {
		if err := pr.publish(e); err != nil {
			return err
		}
	}
	if pr.dayReq != nil && e > 0 && e%int(sr.perDay) == 0 {
		if err := pr.closeDay(e); err != nil {
			return err
		}
	}
	if pr.drift != nil {
		pr.drift.Evaluate(time.UnixMicro(now))
	}
	if pr.ml {
		if inc.region >= 0 && pr.cold == nil {
			pr.cold, _ = features.NewStore(features.Config{IdleTTL: 24 * time.Hour})
		} else if inc.region < 0 {
			pr.cold = nil
		}
	}
	var wg sync.WaitGroup
	next := make(chan int, shards)
	for i := 0; i < shards; i++ {
		next <- i
	}
	close(next)
	for w := 0; w < min(pr.o.Workers, shards); w++ {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for i := range next {
				pr.runShard(i, e, inc)
			}
		}()
	}
	wg.Wait()
	for i := range pr.sh {
		sh := &pr.sh[i]
		for j, st := range sh.foldStore {
			st.Fold(sh.foldX[j*features.Dim:(j+1)*features.Dim], time.UnixMicro(now))
		}
		sh.foldX, sh.foldStore = sh.foldX[:0], sh.foldStore[:0]
		if sh.choiceE != nil {
			return sh.choiceE
		}
		if err := pr.learn(sh, e); err != nil {
			return err
		}
		if len(sh.exc) > 0 {
			pr.extra = append(pr.extra, sh.exc...)
			sh.exc = sh.exc[:0]
		}
	}
	if len(pr.extra) > 0 {
		sort.SliceStable(pr.extra, func(i, j int) bool { return pr.extra[i].at < pr.extra[j].at })
	}
	return nil
}

// deliverLabels applies every label that has arrived by now, static and
// complaints merged in arrival order. During a Kafka outage labels wait.
func (pr *policyRun) deliverLabels(now int64, kafka bool) error {
	if kafka {
		return nil
	}
	ls := pr.sr.labels
	for {
		var l pendingLabel
		switch {
		case pr.labelPos < len(ls) && ls[pr.labelPos].at <= now &&
			(len(pr.extra) == 0 || ls[pr.labelPos].at <= pr.extra[0].at):
			l = ls[pr.labelPos]
			pr.labelPos++
		case len(pr.extra) > 0 && pr.extra[0].at <= now:
			l = pr.extra[0]
			pr.extra = pr.extra[1:]
		default:
			return nil
		}
		if pr.feats != nil {
			pr.feats.Label(l.label.Key, l.label.Abusive, l.label.Severity, time.UnixMicro(now).UTC())
		}
		if pr.labelSev != nil {
			switch sev := float32(l.label.Severity); {
			case !l.label.Abusive:
				pr.labelSev[l.key] = 0
			case sev > pr.labelSev[l.key]:
				pr.labelSev[l.key] = sev
			}
		}
		switch {
		case pr.part != nil:
			if err := pr.part.Label(l.label, time.UnixMicro(now).UTC()); err != nil {
				return err
			}
		}
		if pr.known != nil {
			pr.known[l.key] = append(pr.known[l.key], l.label)
		}
	}
}

// learn hands a shard's records of the epoch to the learner, in key
// order: a decision, then its outcome, as serving logs them.
func (pr *policyRun) learn(sh *shardState, e int) error {
	if pr.part == nil || len(sh.recs) == 0 {
		sh.recs, sh.ctx = sh.recs[:0], sh.ctx[:0]
		return nil
	}
	sr := pr.sr
	at := time.UnixMicro(sr.micros(e)).UTC()
	end := time.UnixMicro(sr.micros(e + 1)).UTC()
	d := features.Dim + 1
	for i, r := range sh.recs {
		t := &sr.pop.tenants[sr.pop.tenant[r.key]]
		name := sr.pop.names[r.key]
		// The key is the record id: a key has one epoch open at a time,
		// and its decision and outcome are applied back to back.
		dec := pipeline.DecisionRecord(pipeline.KeyEpoch{ID: name, Key: name, Rule: t.rule, Start: at,
			Length: sr.s.Epoch, Policy: r.variant, Arm: r.arm, ArmName: sr.arms[r.arm].Name, Multiplier: r.mult,
			Propensity: r.prop, ModelVersion: pr.model.Version(), Context: sh.ctx[i*d : (i+1)*d]})
		if err := pr.part.Record(dec); err != nil {
			return err
		}
		out := rewards.Record{Type: rewards.TypeOutcome, ID: name, Key: name, At: end,
			Served: r.served, Throttled: r.throttled, Blocked: r.blocked}
		if err := pr.part.Record(out); err != nil {
			return err
		}
	}
	sh.recs, sh.ctx = sh.recs[:0], sh.ctx[:0]
	return nil
}

// runShard runs epoch e for the keys of shard i. It touches only the
// shard's keys and state, the concurrency-safe feature store and the
// immutable model, so shards run in parallel.
func (pr *policyRun) runShard(i, e int, inc incidentState) {
	sh := &pr.sh[i]
	sr := pr.sr
	series := &sh.series[e/sr.bucket]
	clear(sh.epoch)
	for _, k := range sr.shardOf[i] {
		if err := pr.step(sh, &sh.epoch[sr.tierOf[sr.pop.tenant[k]]], k, e, inc); err != nil && sh.choiceE == nil {
			sh.choiceE = err
		}
	}
	for j := range sh.epoch {
		t := &sh.epoch[j]
		sh.tiers[j].add(t)
		sh.tally.add(t)
		series.add(t)
	}
}

// step is one key-epoch: stage 2 picks the multiplier (or the policy's
// rule does), the limiter admits what the budget allows, the features see
// the traffic, and the outcome is tallied and logged for the learner.
func (pr *policyRun) step(sh *shardState, t *tally, k, e int, inc incidentState) error {
	sr, pop := pr.sr, pr.sr.pop
	ti := pop.tenant[k]
	tn := &pop.tenants[ti]
	rule := tn.rule
	legit, abuse := pop.demand(sr, k, e, float64(pr.probe[k]))
	n := legit + abuse
	sev := 0.0
	if n > 0 {
		sev = abuse / n
	}
	t.keyEpochs++
	if n == 0 {
		// No request, no decide call: serving runs no stage 2 and logs
		// nothing. The limiter's bucket refills as time passes.
		pr.lastThr[k], pr.lastUsed[k] = false, 0
		return nil
	}
	t.decisions++
	now := time.UnixMicro(sr.micros(e))
	store := pr.feats
	if pr.cold != nil && int(pop.region[k]) == inc.region {
		store = pr.cold
	}

	m, block, fb := 1.0, false, false
	arm, prop, variant := -1, 1.0, ""
	var x []float64
	allowed := sr.allowed[ti]
	switch {
	case pr.name == PolicyOracle, pr.name == PolicyCeiling:
		m = rule.Ceiling
	case pr.name == PolicyFloor:
		m = rule.Floor
	case pr.labelSev != nil && pr.labelSev[k] > 0:
		// A key an abusive label holds: its floor, or a block (as
		// serving's pipeline does), and no stage 2.
		block, m = pipeline.LabelAction(rule, float64(pr.labelSev[k]), sr.s.Learning.LabelBlockSeverity)
	case pr.ml && rule.ML != policy.MLOff:
		pl := experiments.Plan{Shadow: rule.ML != policy.MLOn}
		if sr.plans != nil {
			pl = sr.plans[k]
		}
		if pl.Static {
			break // the deterministic budget, no draw; serving logs it static, which no model learns from
		}
		if inc.stale || allowed.Len() == 0 {
			fb = true
			break
		}
		fv := store.Vector(pop.names[k], now, sh.buf[:0])
		if pr.drift != nil {
			pr.drift.ObserveIn(uint(sh.idx), fv)
			if pr.drift.Drifting() {
				fb = true
				t.drift++
				break
			}
		}
		in := pipeline.Stage2Input{Features: fv, Risk: pr.risk, Model: pr.model, Allowed: allowed, Base: sr.base[ti], ShrinkRisk: pipeline.ShrinkRisk(sr.s.Learning.ShrinkRisk)}
		switch v := pl.Variant; {
		case pr.name == PolicyEpsGreedy:
			in.Model = bandit.EpsilonGreedy{Snapshot: pr.model, Epsilon: sr.s.Learning.Epsilon}
		case v != nil:
			in.Model, in.Variant = pipeline.Explored{Snapshot: pr.model, Factor: v.Explore}, v.Arms
		}
		r, err := pipeline.Stage2(in, sh.rng)
		if err != nil {
			return err
		}
		// The cohorts take the vector after the epoch, in shard order
		// (epoch), so that a run does not depend on the shards' schedule.
		sh.foldX, sh.foldStore = append(sh.foldX, fv[:features.Dim]...), append(sh.foldStore, store)
		x = r.Context
		arm, prop, variant = r.Choice.Arm, r.Choice.Propensity, rewards.PolicyBandit
		if pl.Shadow {
			variant = rewards.PolicyShadow
		}
		m, block = pipeline.Enforced(rule, pl.Shadow, r, sr.s.Learning.BlockThreshold)
	}
	limit, m := rule.Budget(m)
	if inc.redisShare < 1 && pr.name != PolicyOracle {
		limit, fb = limit.Scale(inc.redisShare), true
	}
	if fb {
		t.fallback++
	}
	// The epoch's arrivals go through the limiter's GCRA, spread over the
	// epoch; avail is what it would admit of an unbounded demand.
	start, span := sr.micros(e), sr.micros(e+1)-sr.micros(e)
	_, capacity := limiter.AdmitSpread(pr.tat[k], start, span, limit, math.MaxInt64)
	avail := float64(capacity)
	var served, blocked, legitServed, abuseServed float64
	switch {
	case pr.name == PolicyOracle:
		// Every legitimate request is served and no abusive one. Not
		// even the ceiling caps it: seed 004's daily quotas have no
		// per-minute cap and serve bursts above the ceiling, so an
		// oracle held to the ceiling would not bound them.
		served, legitServed = legit, legit
	case block:
		blocked = n // a blocked request spends no budget
	case pr.daily:
		// Two windows: the per-minute budget, then the fitted daily
		// quota, both scaled by the multiplier. A request the daily
		// window refuses has spent its per-minute token. (Serving has no
		// daily window yet; learning.daily_quota is off by default.)
		pr.dayReq[k] += float32(n)
		var admitted int64
		pr.tat[k], admitted = limiter.AdmitSpread(pr.tat[k], start, span, limit, int64(n))
		if q := pr.quota[ti]; !math.IsInf(q, 1) && admitted > 0 {
			pr.tatDay[k], admitted = limiter.AdmitSpread(pr.tatDay[k], start, span, dailyLimit(q*m), admitted)
		}
		served = float64(admitted)
	case pr.quota != nil:
		// Seed 004, today's static system: the fitted daily quota is the
		// key's whole budget, a rolling 24h GCRA window. It predates
		// tiers' floors and per-minute budgets, and that is what it is
		// compared as.
		pr.dayReq[k] += float32(n)
		if q := pr.quota[ti]; math.IsInf(q, 1) {
			served = n // no fit yet: no quota
		} else {
			var admitted int64
			pr.tat[k], admitted = limiter.AdmitSpread(pr.tat[k], start, span, dailyLimit(q), int64(n))
			served = float64(admitted)
		}
	default:
		var admitted int64
		pr.tat[k], admitted = limiter.AdmitSpread(pr.tat[k], start, span, limit, int64(n))
		served = float64(admitted)
	}
	if pr.name != PolicyOracle {
		// The limiter cannot tell a key's requests apart: what it serves
		// is legitimate and abusive in the epoch's proportions.
		legitServed, abuseServed = served*(1-sev), served*sev
	}
	throttled := n - served - blocked
	if pr.keyThrottled != nil {
		pr.keyThrottled[k] += throttled + blocked
	}
	legitThr := math.Max(0, legit-legitServed) // rounding must not make it negative

	t.legitReq += legit
	t.legitThr += legitThr
	t.abuseReq += abuse
	t.abuseServed += abuseServed
	if sr.variant != nil && sr.variant[k] >= 0 {
		v := &sh.variants[sr.variant[k]]
		v.keyEpochs++
		v.legitReq += legit
		v.legitThr += legitThr
		v.abuseReq += abuse
		v.abuseServed += abuseServed
		if tn.enterprise {
			v.entReq += legit
			v.entThr += legitThr
		}
	}
	kind := pop.kind[k]
	t.kindReq[kind] += abuse
	t.kindServed[kind] += abuseServed
	if block {
		t.blockedEpochs++
	}
	if tn.enterprise {
		t.entReq += legit
		t.entThr += legitThr
		if sev == 0 {
			t.entKeyEpochs++
			if throttled+blocked > 0 && served < math.Min(n, math.Floor(tn.floorAllow))-0.5 {
				t.floorViolations++
			}
		}
	}
	if kind := pop.kind[k]; kind == kindLegit && legit > 0 {
		day := int32(e/int(sr.perDay)) + 1
		if pr.dayActive[k] != day {
			pr.dayActive[k] = day
			t.legitKeyDays++
		}
		if legitThr > 0 && pr.dayThr[k] != day {
			pr.dayThr[k] = day
			t.legitKeyDaysThr++
		}
	}
	o := rewards.Outcome{Served: int64(served), Throttled: int64(throttled), Blocked: int64(blocked), Multiplier: m}
	terms := sr.s.Rewards.TermsFor(o, policy.Tier{Name: rule.Tier, Class: rule.Class}, math.Max(1, tn.base), sev)
	t.reward += terms.Sum()
	t.terms.Add(terms)

	if legitThr > 0 {
		if kind == kindLegit {
			pr.throttled[k] = true
		}
		pr.maybeComplain(sh, k, e)
	}
	if kind == kindAdaptive && abuse > 0 {
		// It aims at target × what got through when it hit the limit, and
		// probes 10% higher while it does not.
		if throttled+blocked > 0 {
			pr.probe[k] = float32(math.Max(1, float64(pop.target[k])*served))
		} else {
			pr.probe[k] *= 1.1
		}
	}
	if pr.ml {
		pr.observe(store, k, tn, n, served, throttled+blocked, abuse, avail, time.UnixMicro(sr.micros(e+1)))
		if arm >= 0 && pop.learn[k] && !inc.kafka {
			sh.recs = append(sh.recs, learnRecord{key: k, arm: arm, mult: m, prop: prop, base: tn.base,
				served: int64(served), throttled: int64(throttled), blocked: int64(blocked), variant: variant})
			sh.ctx = append(sh.ctx, x...)
		}
	}
	pr.lastThr[k] = throttled+blocked > 0
	if avail > 0 {
		pr.lastUsed[k] = float32(math.Min(1, n/avail))
	}
	return nil
}

// dailyLimit is a daily quota as serving enforces it (policy.DailyLimit).
func dailyLimit(q float64) limiter.Limit { return policy.DailyLimit(q, 1) }

// observe feeds the epoch's requests to the feature store as serving's
// step 4 would, spread over the epoch, over up to four of the key's
// client addresses; the throttled ones last.
func (pr *policyRun) observe(store *features.Store, k int, tn *tenantInfo, n, served, refused, abuse, avail float64, end time.Time) {
	if n <= 0 {
		return
	}
	pop := pr.sr.pop
	parts := int(min(pop.ips[k], 4))
	if refused > 0 && served > 0 {
		parts = max(parts, 2)
	}
	ips := max(1, pop.ips[k])
	h := hash3(pop.seed, uint64(k), uint64(end.UnixMicro()))
	legitServed, abuseServed := served*(1-abuse/n), served*(abuse/n)
	// Both populations make errors and fail authentication, at their own
	// rates: neither signal alone gives the abuse away.
	h2 := mix(h)
	o := features.Observation{Endpoint: tn.endpoint, Tier: tn.ftier,
		BudgetUsed: float64(pr.lastUsed[k]),
		Outcome: features.Outcome{Requests: int64(served),
			Errors:       int64(count(legitServed*tn.errorRate+abuseServed*float64(pop.abuseErr[k]), unit(h2))),
			AuthFailures: int64(count(legitServed*tn.authFailRate+abuseServed*float64(pop.authFail[k]), unit(mix(h2))))}}
	span := pr.sr.s.Epoch / time.Duration(parts)
	left := int64(n)
	for j := 0; j < parts; j++ {
		cnt := left / int64(parts-j)
		left -= cnt
		ip := (uint64(pop.ipBase[k]) + (h+uint64(j))%uint64(ips)) % ipPoolSize
		o.ClientIP = pr.sr.pop.ipPool[ip]
		o.Throttled = float64(j) >= float64(parts)*served/n
		store.ObserveN(pop.names[k], o, cnt, span, end.Add(-time.Duration(parts-1-j)*span))
		o.Outcome = features.Outcome{}
	}
	_ = avail
}

// maybeComplain: a legitimate customer throttled may complain, at most
// once a day, which sends an abusive:false label an hour later.
func (pr *policyRun) maybeComplain(sh *shardState, k, e int) {
	sr := pr.sr
	day := int32(e/int(sr.perDay)) + 1
	if pr.complain[k] == day || unit(hash3(sr.pop.seed, uint64(k), uint64(e)<<8|9)) >= sr.s.Labels.ComplaintRate {
		return
	}
	pr.complain[k] = day
	from, to := sr.micros(e)-3600e6, sr.micros(e+1)
	sh.exc = append(sh.exc, pendingLabel{at: to + 3600e6, key: k, label: rewards.Label{
		LabelID: "complaint-" + sr.pop.names[k] + "-" + strconv.Itoa(int(day)), Key: sr.pop.names[k],
		Tenant: sr.pop.tenants[sr.pop.tenant[k]].name, Abusive: false,
		From: time.UnixMicro(from).UTC(), To: time.UnixMicro(to).UTC(), Source: "complaint", Severity: 1}})
}

// closeDay is static-p99's day boundary: yesterday's usage joins the
// history, and the quotas are refitted when due.
func (pr *policyRun) closeDay(e int) error {
	sr := pr.sr
	day := quotas.DayOf(time.UnixMicro(sr.micros(e - 1)).UTC())
	for k := range pr.dayReq {
		if v := pr.dayReq[k]; v > 0 {
			t := &sr.pop.tenants[sr.pop.tenant[k]]
			row := quotas.UsageRow{Endpoint: t.endpoint, User: sr.pop.names[k], Day: day, Requests: int64(v), Malicious: pr.judged(k, day)}
			if pr.byTier {
				row.Tier = t.rule.Tier
			}
			pr.usage = append(pr.usage, row)
		}
		pr.dayReq[k] = 0
	}
	if time.Duration(sr.micros(e)-pr.lastFit)*time.Microsecond >= sr.s.Learning.RefitEvery {
		return pr.refit(e)
	}
	return nil
}

// judged reports whether the labels received so far call key k's usage
// on day d abusive: the last label covering the day decides, as in the
// learner.
func (pr *policyRun) judged(k int, d quotas.Day) bool {
	ls := pr.known[k]
	for i := len(ls) - 1; i >= 0; i-- {
		if quotas.DayOf(ls[i].From) <= d && d <= quotas.DayOf(ls[i].To.Add(-time.Microsecond)) {
			return ls[i].Abusive
		}
	}
	return false
}

// refit fits the quotas with quotas.Fit on the usage up to yesterday:
// the same function `flowguard quotas fit` runs.
func (pr *policyRun) refit(e int) error {
	sr := pr.sr
	pr.lastFit = sr.micros(e)
	if len(pr.usage) == 0 {
		return nil
	}
	table, err := quotas.NewUsageTable(pr.usage)
	if err != nil {
		return err
	}
	until := quotas.DayOf(time.UnixMicro(sr.micros(e)).UTC()) - 1
	fit, err := quotas.Fit(context.Background(), table, quotas.FitConfig{Until: until,
		Lookback: sr.s.Learning.LookbackDays, Percentile: sr.s.Learning.Percentile})
	if err != nil {
		return err
	}
	pr.fits++
	for i, t := range sr.pop.tenants {
		pr.quota[i] = math.Inf(1)
		for _, q := range fit.Quotas {
			if q.Endpoint == t.endpoint && (!pr.byTier || q.Tier == t.rule.Tier) {
				pr.quota[i] = q.Quota
			}
		}
	}
	for _, q := range fit.Quotas {
		line := fmt.Sprintf("%s %s %s", until, q.Endpoint, quotas.FormatQuota(q.Quota))
		if q.Tier != "" {
			line = fmt.Sprintf("%s %s %s %s", until, q.Tier, q.Endpoint, quotas.FormatQuota(q.Quota))
		}
		pr.quotaLog = append(pr.quotaLog, line)
	}
	return nil
}

// finish turns the tallies into results.
func (pr *policyRun) finish() (PolicyResult, *Series, *Details) {
	var t tally
	for i := range pr.sh {
		t.add(&pr.sh[i].tally)
	}
	legitKeys, throttledKeys := 0, 0
	for k, kind := range pr.sr.pop.kind {
		if kind == kindLegit {
			legitKeys++
			if pr.throttled[k] {
				throttledKeys++
			}
		}
	}
	r := PolicyResult{
		LegitRequests:                 int64(t.legitReq),
		LegitThrottled:                int64(math.Round(t.legitThr)),
		LegitThrottledFraction:        round6(frac(t.legitThr, t.legitReq)),
		LegitKeysThrottledFraction:    round6(frac(float64(throttledKeys), float64(legitKeys))),
		LegitKeyDaysThrottledFraction: round6(frac(float64(t.legitKeyDaysThr), float64(t.legitKeyDays))),
		EnterpriseThrottledFraction:   round6(frac(t.entThr, t.entReq)),
		EnterpriseKeyEpochsBelowFloor: t.floorViolations,
		EnterpriseKeyEpochs:           t.entKeyEpochs,
		AbuseRequests:                 int64(t.abuseReq),
		AbuseServedFraction:           round6(frac(t.abuseServed, t.abuseReq)),
		Reward:                        round6(t.reward),
		RewardTerms: rewards.Terms{Served: round6(t.terms.Served), Throttled: round6(t.terms.Throttled),
			Abuse: round6(t.terms.Abuse), Headroom: round6(t.terms.Headroom)},
		FallbackEpochs: t.fallback,
		DriftEpochs:    t.drift,
		KeyEpochs:      t.keyEpochs,
		Tiers:          map[string]TierResult{},
	}
	for j, name := range pr.sr.tiers {
		var tt tally
		for i := range pr.sh {
			tt.add(&pr.sh[i].tiers[j])
		}
		r.Tiers[name] = TierResult{LegitRequests: int64(tt.legitReq), LegitThrottledFraction: round6(frac(tt.legitThr, tt.legitReq)),
			LegitKeyDaysThrottledFraction: round6(frac(float64(tt.legitKeyDaysThr), float64(tt.legitKeyDays))),
			KeyEpochsBelowFloor:           tt.floorViolations, AbuseRequests: int64(tt.abuseReq),
			AbuseServedFraction: round6(frac(tt.abuseServed, tt.abuseReq))}
	}
	if len(pr.sr.variants) > 0 {
		r.Variants = map[string]VariantResult{}
		for i, id := range pr.sr.variants {
			var v tally
			for j := range pr.sh {
				v.add(&pr.sh[j].variants[i])
			}
			r.Variants[id.Experiment+"/"+id.Variant] = VariantResult{KeyEpochs: v.keyEpochs,
				LegitRequests: int64(v.legitReq), LegitThrottledFraction: round6(frac(v.legitThr, v.legitReq)),
				EnterpriseThrottledFraction: round6(frac(v.entThr, v.entReq)),
				AbuseRequests:               int64(v.abuseReq), AbuseServedFraction: round6(frac(v.abuseServed, v.abuseReq))}
		}
	}
	s := &Series{}
	var cum float64
	for b := 0; b < pr.sr.buckets; b++ {
		var bt tally
		for i := range pr.sh {
			bt.add(&pr.sh[i].series[b])
		}
		cum += bt.reward
		s.LegitThrottleRate = append(s.LegitThrottleRate, frac(bt.legitThr, bt.legitReq))
		s.AbuseServed = append(s.AbuseServed, frac(bt.abuseServed, bt.abuseReq))
		s.CumReward = append(s.CumReward, cum)
	}
	d := &Details{AbuseServedByKind: map[string]float64{}, AbuseRequestsByKind: map[string]int64{},
		EnterpriseFloorViolations: t.floorViolations, BlockedKeyEpochs: t.blockedEpochs, QuotaFits: pr.fits,
		LegitKeys: legitKeys, LegitKeysThrottled: throttledKeys, Decisions: t.decisions}
	for name, kind := range kindOf {
		if t.kindReq[kind] > 0 {
			d.AbuseRequestsByKind[name] = int64(t.kindReq[kind])
			d.AbuseServedByKind[name] = round6(t.kindServed[kind] / t.kindReq[kind])
		}
	}
	if pr.part != nil {
		st := pr.part.Stats()
		d.Learner = &st
	}
	if len(pr.quotaLog) > 0 {
		d.Quotas = pr.quotaLog
	}
	return r, s, d
}

func frac(a, b float64) float64 {
	if b <= 0 {
		return 0
	}
	return a / b
}

// round6 keeps six significant decimals, so that results print the same
// on every platform.
func round6(v float64) float64 {
	if v == 0 || math.IsNaN(v) || math.IsInf(v, 0) {
		return v
	}
	return math.Round(v*1e6) / 1e6
}
