package experiments

import (
	"errors"
	"fmt"
	"math"
	"sort"

	"github.com/cespare/xxhash/v2"
	"github.com/devflow/flowguard/bandit"
	"github.com/devflow/flowguard/rewards"
	"gonum.org/v1/gonum/mat"
)

// SRMAlpha is the p-value below which a report flags a sample-ratio
// mismatch.
const SRMAlpha = 0.001

// ReportOptions configures BuildReport.
type ReportOptions struct {
	// Weights is the reward objective of the off-policy estimates and of
	// each variant's mean reward. Default: rewards.DefaultWeights().
	Weights rewards.Weights
	// Labels judge keys abusive (severity) or clear them, as the learner
	// applies them; without labels every key counts as benign and abuse
	// rates are not reported. Default: none.
	Labels []rewards.Label
	// Ridge is the prior precision of the reward model (per-arm ridge
	// regression on the logged context) used by DR and the greedy
	// candidate. Default: 1.
	Ridge float64
}

// A Report is what `flowguard experiments report` prints: per experiment,
// per variant counts and rates with 95% confidence intervals, the
// sample-ratio check, and off-policy estimates of candidate policies.
type Report struct {
	// Decisions and Outcomes are the records read; Epochs the key-epochs
	// whose decision and outcome were both found. Open counts decisions
	// without an outcome yet (epochs still running when the log was cut),
	// Orphans outcomes without a decision. Unassigned counts epochs of
	// units in no experiment of the file.
	Decisions  int64 `json:"decisions"`
	Outcomes   int64 `json:"outcomes"`
	Epochs     int64 `json:"epochs"`
	Open       int64 `json:"open"`
	Orphans    int64 `json:"orphans"`
	Unassigned int64 `json:"unassigned"`
	// Labels is how many labels were applied (duplicates by label_id once).
	Labels      int                `json:"labels"`
	Experiments []ExperimentReport `json:"experiments"`
}

// ExperimentReport is one experiment's section of a Report.
type ExperimentReport struct {
	Name     string          `json:"name"`
	Control  string          `json:"control"`
	Variants []VariantReport `json:"variants"`
	SRM      SRMReport       `json:"srm"`
	// OPE are the off-policy estimates of each candidate policy from the
	// experiment's key-epochs whose enforced arm the bandit drew (records
	// with variant "bandit"): the only ones whose logging policy gives every
	// allowed arm a positive probability. Deterministic key-epochs (static
	// and shadow variants, stopped variants, fallbacks) support only the
	// deterministic arm; pooling them in with their propensity 1 would pull
	// IPS towards 0 for every other arm. Compare "static x1" with the
	// control's on-policy Reward.
	OPE []CandidateReport `json:"ope"`
	// OPEEpochs is how many key-epochs the estimates rest on.
	OPEEpochs int `json:"ope_epochs"`
	// Notes say what could not be computed, and why.
	Notes []string `json:"notes,omitempty"`
}

// VariantReport is one variant's results. Rates are ratios of sums over
// units (keys or tenants): their intervals come from the delta method over
// units, so the correlation of one key's requests is accounted for.
type VariantReport struct {
	Name   string  `json:"name"`
	Policy Policy  `json:"policy"`
	Weight float64 `json:"weight"`
	// Share is the variant's share of the experiment's buckets: what its
	// share of units should converge to.
	Share    float64 `json:"share"`
	Units    int64   `json:"units"`
	Epochs   int64   `json:"epochs"`
	Requests int64   `json:"requests"`
	// Throttled counts throttled and blocked requests.
	Throttled int64 `json:"throttled"`
	// ThrottleRate is Throttled / Requests; ThrottleDiff its difference
	// with the control's (nil for the control or without data).
	ThrottleRate *Interval `json:"throttle_rate"`
	ThrottleDiff *Interval `json:"throttle_diff_vs_control,omitempty"`
	// TierThrottleRate is the throttle rate of each tier seen;
	// EnterpriseThrottleRate that of the enterprise-class tiers together
	// (nil without enterprise traffic).
	TierThrottleRate       map[string]*Interval `json:"tier_throttle_rate"`
	EnterpriseThrottleRate *Interval            `json:"enterprise_throttle_rate,omitempty"`
	// AbuseRate is the share of served requests judged abusive by the
	// labels (severity-weighted); nil without labels.
	AbuseRate *Interval `json:"abuse_rate,omitempty"`
	AbuseDiff *Interval `json:"abuse_diff_vs_control,omitempty"`
	// Reward is the mean reward per key-epoch under Weights: the variant's
	// on-policy value, which the OPE estimates of its policy should match.
	Reward *Interval `json:"reward"`
}

// SRMReport is the sample-ratio check of an experiment: units per
// variant against the variants' bucket shares (which follow the weights).
type SRMReport struct {
	Units  []int64   `json:"units"`
	Shares []float64 `json:"shares"`
	// Chi2 and P are nil when the test cannot run (fewer than two
	// variants with units, or no units).
	Chi2 *float64 `json:"chi2"`
	P    *float64 `json:"p"`
	// Mismatch is P < SRMAlpha: the assignment or the logging is broken and
	// the other numbers of the experiment cannot be trusted.
	Mismatch bool `json:"mismatch"`
}

// CandidateReport is the off-policy value of one candidate policy: its
// mean reward per key-epoch, by three estimators with 95% intervals.
type CandidateReport struct {
	Name string `json:"name"`
	// Description says what the policy does.
	Description string       `json:"description"`
	IPS         *EstimateOut `json:"ips"`
	SNIPS       *EstimateOut `json:"snips"`
	DR          *EstimateOut `json:"dr"`
	// Support is the share of key-epochs on which the candidate takes the
	// logged action; near 0, every estimate rests on few samples.
	Support float64 `json:"support"`
}

// EstimateOut is an Estimate with its 95% interval.
type EstimateOut struct {
	Value  float64 `json:"value"`
	Lo     float64 `json:"lo"`
	Hi     float64 `json:"hi"`
	StdErr float64 `json:"stderr"`
	ESS    float64 `json:"ess"`
	N      int     `json:"n"`
}

func estimateOut(e Estimate, err error) *EstimateOut {
	if err != nil || math.IsNaN(e.Value) || math.IsNaN(e.StdErr) {
		return nil
	}
	iv := e.Interval(Z95)
	return &EstimateOut{Value: e.Value, Lo: iv.Lo, Hi: iv.Hi, StdErr: e.StdErr, ESS: e.ESS, N: e.N}
}

// epoch is one joined key-epoch.
type epoch struct {
	key, tenant, tier string
	enterprise        bool // the tier is enterprise-class
	exp, variant      string
	at                int64 // µs
	action            int   // enforced arm
	propensity        float64
	multiplier        float64 // enforced
	allowed           bandit.ArmRange
	context           []float64
	served, throttled int64 // throttled includes blocked
	severity          float64
	reward            float64
	deterministic     bool // the enforced budget was the deterministic one
}

// BuildReport reads the decision log's records (decisions and outcomes, in
// any order) against the experiments file cfg and computes the report.
//
// The log's conventions are serving's (serving/experiments.go): a
// decision's experiment field is "EXPERIMENT/VARIANT"; variant "bandit"
// means the logged arm and propensity were enforced; "shadow" means the
// enforced budget was the deterministic one, 1 clamped to [floor,
// ceiling], with probability 1 (static variants, stopped ones, ML
// fallbacks, shadow variants). Arms are the experiment's bandit arms (the
// first bandit or shadow variant's; default bandit.DefaultArms()); a
// bandit record whose multiplier is not its arm's is an error.
//
// Candidate policies, evaluated on every variant's logged key-epochs:
//
//   - "static <arm>" for each arm: always that multiplier, clamped to the
//     key's [floor, ceiling] (the nearest allowed arm);
//   - "greedy": the allowed arm with the highest predicted reward under a
//     reward model (per-arm ridge regression of the reward on the logged
//     context) fitted on the log itself, cross-fitted over two folds of
//     keys so that no key-epoch is judged by a model that saw it; DR uses
//     the same cross-fitted model.
func BuildReport(cfg *Config, records []rewards.Record, opts ReportOptions) (*Report, error) {
	if cfg == nil {
		return nil, errors.New("experiments: report: nil config")
	}
	a, err := NewAssigner(cfg)
	if err != nil {
		return nil, err
	}
	if opts.Weights.Throttle == nil {
		opts.Weights = rewards.DefaultWeights()
	}
	if err := opts.Weights.Validate(); err != nil {
		return nil, err
	}
	if opts.Ridge == 0 {
		opts.Ridge = 1
	}
	rep := &Report{}
	sev := newSeverities(opts.Labels)
	rep.Labels = sev.n

	decisions := map[string]rewards.Record{}
	outcomes := map[string]rewards.Record{}
	for _, r := range records {
		switch r.Type {
		case rewards.TypeDecision:
			rep.Decisions++
			decisions[r.ID] = r
		case rewards.TypeOutcome:
			rep.Outcomes++
			outcomes[r.ID] = r
		}
	}
	for id := range outcomes {
		if _, ok := decisions[id]; !ok {
			rep.Orphans++
		}
	}
	byExp := map[string][]epoch{}
	ids := make([]string, 0, len(decisions))
	for id := range decisions {
		ids = append(ids, id)
	}
	sort.Strings(ids) // deterministic output
	for _, id := range ids {
		d := decisions[id]
		o, ok := outcomes[id]
		if !ok {
			rep.Open++
			continue
		}
		rep.Epochs++
		exp, variant := d.Experiment, d.Variant
		x := cfg.Experiment(exp)
		if x == nil || x.Variant(variant) == nil {
			rep.Unassigned++
			continue
		}
		arms := experimentArms(x)
		ep, err := joinEpoch(d, o, arms)
		if err != nil {
			return nil, err
		}
		ep.exp, ep.variant = exp, variant
		ep.severity = sev.at(d.Key, d.At.UnixMicro())
		ep.reward = opts.Weights.RewardFor(rewards.Outcome{Served: o.Served, Throttled: o.Throttled, Blocked: o.Blocked,
			Multiplier: ep.multiplier}, d.PolicyTier(), rewards.NormBase(d.Base), ep.severity)
		byExp[exp] = append(byExp[exp], ep)
	}
	for i := range cfg.Experiments {
		x := &cfg.Experiments[i]
		rep.Experiments = append(rep.Experiments, experimentReport(x, a.Shares(x.Name), byExp[x.Name], len(opts.Labels) > 0, opts.Ridge))
	}
	return rep, nil
}

// experimentArms returns the arms of an experiment's bandit variants.
func experimentArms(x *Experiment) bandit.ArmSet {
	for _, v := range x.Variants {
		if v.Bandit != nil && len(v.Bandit.Arms) > 0 {
			return v.Bandit.Arms
		}
	}
	return bandit.DefaultArms()
}

func joinEpoch(d, o rewards.Record, arms bandit.ArmSet) (epoch, error) {
	floor, ceiling := d.Floor, d.Ceiling
	if ceiling == 0 {
		ceiling = math.Inf(1)
	}
	if floor > ceiling {
		return epoch{}, fmt.Errorf("decision %s: floor %v above ceiling %v", d.ID, d.Floor, d.Ceiling)
	}
	ep := epoch{key: d.Key, tenant: d.Tenant, tier: d.Tier, enterprise: d.PolicyTier().Enterprise(), at: d.At.UnixMicro(), context: d.Context,
		served: o.Served, throttled: o.Throttled + o.Blocked}
	allowed, err := arms.Allowed(floor, ceiling)
	if err != nil {
		// No arm inside the bounds: the only action is the deterministic one.
		i := arms.Nearest(min(max(1, floor), ceiling))
		allowed = bandit.ArmRange{Lo: i, Hi: i + 1}
	}
	ep.allowed = allowed
	if d.Policy == rewards.PolicyBandit {
		if d.Arm >= len(arms) || math.Abs(arms[d.Arm].Multiplier-d.Multiplier) > 1e-9 {
			return epoch{}, fmt.Errorf("decision %s: arm %d with multiplier %v is not an arm of the experiment (%d arms)",
				d.ID, d.Arm, d.Multiplier, len(arms))
		}
		ep.action, ep.propensity, ep.multiplier = d.Arm, d.Propensity, d.Multiplier
		return ep, nil
	}
	ep.multiplier = min(max(1, floor), ceiling)
	ep.action, ep.propensity, ep.deterministic = arms.Nearest(ep.multiplier), 1, true
	return ep, nil
}

// severities answers which share of a key's traffic the labels judge
// abusive at a time: the last label (in input order) whose [From, To)
// holds the time decides; an abusive: false label clears.
type severities struct {
	byKey map[string][]rewards.Label
	n     int
}

func newSeverities(labels []rewards.Label) severities {
	s := severities{byKey: map[string][]rewards.Label{}}
	seen := map[string]bool{}
	for _, l := range labels {
		if seen[l.LabelID] {
			continue
		}
		seen[l.LabelID] = true
		s.byKey[l.Key] = append(s.byKey[l.Key], l)
		s.n++
	}
	return s
}

func (s severities) at(key string, t int64) float64 {
	sev := 0.0
	for _, l := range s.byKey[key] {
		if t >= l.From.UnixMicro() && t < l.To.UnixMicro() {
			sev = 0
			if l.Abusive {
				sev = l.Severity
			}
		}
	}
	return sev
}

// unitStats sums a metric's numerator and denominator per unit.
type unitStats map[string]*[2]float64

func (u unitStats) add(unit string, num, den float64) {
	p := u[unit]
	if p == nil {
		p = new([2]float64)
		u[unit] = p
	}
	p[0] += num
	p[1] += den
}

// ratio returns Σnum/Σden over units with its delta-method 95% interval
// (clipped to [lo, hi]); nil with fewer than two units or a denominator
// of 0.
func (u unitStats) ratio(lo, hi float64) *Interval {
	if len(u) < 2 {
		return nil
	}
	var sy, sn float64
	for _, p := range u {
		sy += p[0]
		sn += p[1]
	}
	if sn == 0 {
		return nil
	}
	r := sy / sn
	se := u.stderr(r)
	return &Interval{Estimate: r, Lo: max(r-Z95*se, lo), Hi: min(r+Z95*se, hi)}
}

// stderr is the delta-method standard error of the ratio r.
func (u unitStats) stderr(r float64) float64 {
	n := float64(len(u))
	var sn, ss, mean float64
	for _, p := range u {
		sn += p[1]
		mean += p[0] - r*p[1]
	}
	mean /= n
	for _, p := range u {
		d := p[0] - r*p[1] - mean
		ss += d * d
	}
	nbar := sn / n
	return math.Sqrt(ss/(n-1)/n) / nbar
}

func diff(a, b unitStats) *Interval {
	ra, rb := a.ratio(math.Inf(-1), math.Inf(1)), b.ratio(math.Inf(-1), math.Inf(1))
	if ra == nil || rb == nil {
		return nil
	}
	d := ra.Estimate - rb.Estimate
	se := math.Hypot(a.stderr(ra.Estimate), b.stderr(rb.Estimate))
	return &Interval{Estimate: d, Lo: d - Z95*se, Hi: d + Z95*se}
}

type variantStats struct {
	units                       map[string]bool
	epochs, requests, throttled int64
	throttle, abuse, reward     unitStats
	tiers                       map[string]unitStats
	enterprise                  unitStats
}

func experimentReport(x *Experiment, shares []float64, eps []epoch, haveLabels bool, ridge float64) ExperimentReport {
	er := ExperimentReport{Name: x.Name, Control: x.Control}
	stats := make([]*variantStats, len(x.Variants))
	index := map[string]int{}
	for j, v := range x.Variants {
		index[v.Name] = j
		stats[j] = &variantStats{units: map[string]bool{}, throttle: unitStats{}, abuse: unitStats{}, reward: unitStats{}, enterprise: unitStats{},
			tiers: map[string]unitStats{}}
	}
	for _, ep := range eps {
		st := stats[index[ep.variant]]
		unit := ep.key
		if x.Unit == UnitTenant {
			unit = ep.tenant
		}
		st.units[unit] = true
		st.epochs++
		req := ep.served + ep.throttled
		st.requests += req
		st.throttled += ep.throttled
		st.throttle.add(unit, float64(ep.throttled), float64(req))
		st.abuse.add(unit, ep.severity*float64(ep.served), float64(ep.served))
		st.reward.add(unit, ep.reward, 1)
		if st.tiers[ep.tier] == nil {
			st.tiers[ep.tier] = unitStats{}
		}
		st.tiers[ep.tier].add(unit, float64(ep.throttled), float64(req))
		if ep.enterprise {
			st.enterprise.add(unit, float64(ep.throttled), float64(req))
		}
	}
	control := stats[index[x.Control]]
	units := make([]int64, len(x.Variants))
	for j, v := range x.Variants {
		st := stats[j]
		units[j] = int64(len(st.units))
		vr := VariantReport{Name: v.Name, Policy: v.Policy, Weight: v.Weight, Share: shares[j], Units: units[j],
			Epochs: st.epochs, Requests: st.requests, Throttled: st.throttled,
			ThrottleRate: st.throttle.ratio(0, 1), Reward: st.reward.ratio(math.Inf(-1), math.Inf(1)),
			TierThrottleRate: map[string]*Interval{}}
		for tier, u := range st.tiers {
			vr.TierThrottleRate[tier] = u.ratio(0, 1)
		}
		if len(st.enterprise) > 0 {
			vr.EnterpriseThrottleRate = st.enterprise.ratio(0, 1)
		}
		if haveLabels {
			vr.AbuseRate = st.abuse.ratio(0, 1)
		}
		if v.Name != x.Control {
			vr.ThrottleDiff = diff(st.throttle, control.throttle)
			if haveLabels {
				vr.AbuseDiff = diff(st.abuse, control.abuse)
			}
		}
		er.Variants = append(er.Variants, vr)
	}
	er.SRM = SRMReport{Units: units, Shares: shares}
	if chi2, p := SRM(units, shares); !math.IsNaN(p) {
		er.SRM.Chi2, er.SRM.P, er.SRM.Mismatch = &chi2, &p, p < SRMAlpha
	} else {
		er.Notes = append(er.Notes, "SRM: not enough units in at least two variants to test")
	}
	if !haveLabels {
		er.Notes = append(er.Notes, "no labels given (--labels): abuse rates are not reported and every key counts as benign in rewards")
	}
	var drawn []epoch
	for _, ep := range eps {
		if !ep.deterministic {
			drawn = append(drawn, ep)
		}
	}
	er.OPEEpochs = len(drawn)
	if len(drawn) < 2 {
		er.Notes = append(er.Notes, "off-policy estimates: fewer than 2 key-epochs whose arm the bandit drew")
		return er
	}
	er.OPE = offPolicy(experimentArms(x), drawn, ridge)
	return er
}

// offPolicy evaluates the candidate policies on the experiment's epochs.
func offPolicy(arms bandit.ArmSet, eps []epoch, ridge float64) []CandidateReport {
	k := len(arms)
	models := fitCrossModels(arms, eps, ridge)
	q := make([][]float64, len(eps))
	for i, ep := range eps {
		q[i] = models[1-fold(ep.key)].predict(ep.context)
	}
	type candidate struct {
		name, desc string
		target     func(i int) int // the action the policy takes on epoch i
	}
	var cands []candidate
	for a := range arms {
		m := arms[a].Multiplier
		cands = append(cands, candidate{"static " + arms[a].Name,
			fmt.Sprintf("always multiplier %g, clamped to the key's floor and ceiling", m),
			func(i int) int {
				r := eps[i].allowed
				j := arms[r.Lo:r.Hi].Nearest(m)
				return r.Lo + j
			}})
	}
	cands = append(cands, candidate{"greedy",
		"the allowed arm of highest predicted reward under a ridge reward model fitted on the log (2-fold cross-fitted by key)",
		func(i int) int {
			r := eps[i].allowed
			best := r.Lo
			for a := r.Lo; a < r.Hi; a++ {
				if q[i][a] > q[i][best] {
					best = a
				}
			}
			return best
		}})
	out := make([]CandidateReport, 0, len(cands))
	for _, c := range cands {
		samples := make([]Sample, len(eps))
		var hits int
		for i, ep := range eps {
			t := make([]float64, k)
			a := c.target(i)
			t[a] = 1
			if a == ep.action {
				hits++
			}
			samples[i] = Sample{Action: ep.action, Propensity: ep.propensity, Reward: ep.reward, Target: t, RewardModel: q[i]}
		}
		cr := CandidateReport{Name: c.name, Description: c.desc, Support: float64(hits) / float64(len(eps))}
		cr.IPS = estimateOut(IPS(samples))
		cr.SNIPS = estimateOut(SNIPS(samples))
		cr.DR = estimateOut(DR(samples))
		out = append(out, cr)
	}
	return out
}

func fold(key string) int { return int(xxhash.Sum64String(key) & 1) }

// rewardModel is a per-arm ridge regression of the reward on the context
// (with an intercept), shrunk towards the mean reward of its fold.
type rewardModel struct {
	mean float64
	beta [][]float64 // per arm; nil: no data, predict the mean
}

func (m rewardModel) predict(x []float64) []float64 {
	out := make([]float64, len(m.beta))
	for a, b := range m.beta {
		out[a] = m.mean
		if b == nil || len(b) != len(x)+1 {
			continue
		}
		v := b[0]
		for i, xi := range x {
			v += b[i+1] * xi
		}
		out[a] += v
	}
	return out
}

// fitCrossModels fits one reward model per fold of keys.
func fitCrossModels(arms bandit.ArmSet, eps []epoch, ridge float64) [2]rewardModel {
	var models [2]rewardModel
	for f := range 2 {
		var sum float64
		var n int
		for _, ep := range eps {
			if fold(ep.key) == f {
				sum += ep.reward
				n++
			}
		}
		m := rewardModel{beta: make([][]float64, len(arms))}
		if n > 0 {
			m.mean = sum / float64(n)
		}
		for a := range arms {
			var xs [][]float64
			var ys []float64
			for _, ep := range eps {
				if fold(ep.key) == f && ep.action == a {
					xs = append(xs, ep.context)
					ys = append(ys, ep.reward-m.mean)
				}
			}
			m.beta[a] = ridgeFit(xs, ys, ridge)
		}
		models[f] = m
	}
	return models
}

// ridgeFit solves (XᵀX + λI)β = Xᵀy with an intercept column; nil when
// there is no data or the contexts disagree in length.
func ridgeFit(xs [][]float64, ys []float64, lambda float64) []float64 {
	if len(xs) == 0 {
		return nil
	}
	d := len(xs[0]) + 1
	a := mat.NewSymDense(d, nil)
	b := mat.NewVecDense(d, nil)
	row := make([]float64, d)
	for i, x := range xs {
		if len(x)+1 != d {
			return nil
		}
		row[0] = 1
		copy(row[1:], x)
		for p := range d {
			b.SetVec(p, b.AtVec(p)+row[p]*ys[i])
			for q := p; q < d; q++ {
				a.SetSym(p, q, a.At(p, q)+row[p]*row[q])
			}
		}
	}
	for p := range d {
		a.SetSym(p, p, a.At(p, p)+lambda)
	}
	var ch mat.Cholesky
	if !ch.Factorize(a) {
		return nil
	}
	var beta mat.VecDense
	if err := ch.SolveVecTo(&beta, b); err != nil {
		return nil
	}
	return beta.RawVector().Data
}
