package experiments

import (
	"bytes"
	"encoding/json"
	"fmt"
	"math"
	"math/rand/v2"
	"strings"
	"testing"
	"time"

	"github.com/devflow/flowguard/bandit"
	"github.com/devflow/flowguard/policy"
	"github.com/devflow/flowguard/rewards"
)

const reportYAML = `
experiments:
  - name: exp
    salt: report-test
    variants:
      - {name: control, weight: 1, policy: static}
      - {name: lints, weight: 1, policy: bandit}
`

// world is a synthetic key-epoch: a context of two features in [0, 1) and
// a demand (requests in the epoch) that grows with the first. A budget of
// multiplier m admits m × base requests; the rest are throttled.
type world struct {
	base float64
	arms bandit.ArmSet
}

func (w world) draw(r *rand.Rand) (x []float64, demand int64) {
	x = []float64{r.Float64(), r.Float64()}
	mean := w.base * (0.3 + 2.2*x[0])
	return x, int64(mean * (0.5 + r.Float64()))
}

func (w world) outcome(demand int64, m float64) (served, throttled int64) {
	capacity := int64(m * w.base)
	served = min(demand, capacity)
	return served, demand - served
}

// logging is the bandit variant's logging policy: a softmax over the arms
// that prefers large multipliers for high x[1].
func (w world) logging(x []float64) []float64 {
	p := make([]float64, len(w.arms))
	var sum float64
	for a := range p {
		p[a] = math.Exp(1.5 * x[1] * float64(a) / float64(len(p)-1))
		sum += p[a]
	}
	for a := range p {
		p[a] /= sum
	}
	return p
}

// truth is the mean reward per key-epoch of always using arm a, by Monte
// Carlo on a stream independent of the log.
func (w world) truth(a int, n int, weights rewards.Weights) float64 {
	r := rand.New(rand.NewPCG(99, uint64(a)))
	var sum float64
	m := w.arms[a].Multiplier
	for range n {
		_, d := w.draw(r)
		s, th := w.outcome(d, m)
		sum += weights.RewardFor(rewards.Outcome{Served: s, Throttled: th, Multiplier: m}, policy.Tier{Name: "free"}, w.base, 0)
	}
	return sum / float64(n)
}

// syntheticRecords logs epochsPerKey epochs for each of keys units,
// assigned by cfg; keep decides whether a unit's records are logged at
// all (to fake a logging bug).
func syntheticRecords(t *testing.T, cfg *Config, w world, seed uint64, keys, epochsPerKey int, keep func(variant string, r *rand.Rand) bool) []rewards.Record {
	t.Helper()
	a, err := NewAssigner(cfg)
	if err != nil {
		t.Fatal(err)
	}
	r := rand.New(rand.NewPCG(seed, 7))
	t0 := time.Date(2026, 11, 20, 0, 0, 0, 0, time.UTC)
	var recs []rewards.Record
	id := 0
	for k := range keys {
		key := fmt.Sprintf("k_%d", k)
		as, ok := a.Primary(Unit{Key: key, Tier: "free"})
		if !ok {
			t.Fatalf("%s in no experiment", key)
		}
		if !keep(as.Variant, r) {
			continue
		}
		for e := range epochsPerKey {
			x, demand := w.draw(r)
			d := rewards.Record{Type: rewards.TypeDecision, ID: fmt.Sprintf("d%d", id), Key: key, Tier: "free",
				At: t0.Add(time.Duration(e) * time.Minute), Experiment: "exp", Variant: as.Variant, Context: x,
				Floor: 0.25, Ceiling: 4, Base: w.base}
			m := 1.0
			if as.Policy == PolicyBandit {
				p := w.logging(x)
				arm := draw(r, p)
				m = w.arms[arm].Multiplier
				d.Policy, d.Arm, d.ArmName, d.Multiplier, d.Propensity = rewards.PolicyBandit, arm, w.arms[arm].Name, m, p[arm]
			} else {
				arm := w.arms.Nearest(1)
				d.Policy, d.Arm, d.ArmName, d.Multiplier, d.Propensity = rewards.PolicyStatic, arm, w.arms[arm].Name, 1, 1
			}
			s, th := w.outcome(demand, m)
			o := rewards.Record{Type: rewards.TypeOutcome, ID: d.ID, Key: key, At: d.At.Add(time.Minute), Served: s, Throttled: th}
			for _, rec := range []rewards.Record{d, o} {
				if err := rec.Validate(); err != nil {
					t.Fatal(err)
				}
			}
			recs = append(recs, d, o)
			id++
		}
	}
	return recs
}

func keepAll(string, *rand.Rand) bool { return true }

// TestReportOPECoversTruth: on a log whose true policy values are known,
// every estimator's interval of every static candidate holds the truth.
// The check uses 3.29 standard errors (99.9%): eighteen intervals at 95%
// would miss about once per run by chance alone.
func TestReportOPECoversTruth(t *testing.T) {
	cfg, err := Parse("report.yaml", []byte(reportYAML))
	if err != nil {
		t.Fatal(err)
	}
	w := world{base: 100, arms: bandit.DefaultArms()}
	recs := syntheticRecords(t, cfg, w, 1, 3000, 4, keepAll)
	rep, err := BuildReport(cfg, recs, ReportOptions{})
	if err != nil {
		t.Fatal(err)
	}
	if rep.Epochs != 12000 || rep.Open != 0 || rep.Orphans != 0 || rep.Unassigned != 0 {
		t.Fatalf("report counts %+v", rep)
	}
	x := rep.Experiments[0]
	weights := rewards.DefaultWeights()
	for a, arm := range w.arms {
		truth := w.truth(a, 400_000, weights)
		var c *CandidateReport
		for i := range x.OPE {
			if x.OPE[i].Name == "static "+arm.Name {
				c = &x.OPE[i]
			}
		}
		if c == nil {
			t.Fatalf("no candidate for %s in %+v", arm.Name, x.OPE)
		}
		for name, e := range map[string]*EstimateOut{"IPS": c.IPS, "SNIPS": c.SNIPS, "DR": c.DR} {
			if e == nil {
				t.Errorf("%s %s: no estimate", c.Name, name)
				continue
			}
			if math.Abs(e.Value-truth) > 3.29*e.StdErr {
				t.Errorf("%s %s = %.4f ± %.4f, truth %.4f: outside 3.29 standard errors", c.Name, name, e.Value, e.StdErr, truth)
			}
		}
		t.Logf("%s: truth %.4f, IPS %s, SNIPS %s, DR %s", c.Name, truth, est(c.IPS), est(c.SNIPS), est(c.DR))
	}
	// The control enforced x1: its on-policy mean reward is the x1 truth.
	ctl := x.Variants[0]
	if truth := w.truth(w.arms.Nearest(1), 400_000, weights); math.Abs(ctl.Reward.Estimate-truth) > 3.29*(ctl.Reward.Hi-ctl.Reward.Lo)/(2*Z95) {
		t.Errorf("control reward %v, x1 truth %.4f", ctl.Reward, truth)
	}
	if x.SRM.Mismatch {
		t.Errorf("SRM flagged on an unskewed log: p = %v", *x.SRM.P)
	}
	if greedy := x.OPE[len(x.OPE)-1]; greedy.Name != "greedy" || greedy.DR == nil {
		t.Errorf("no greedy estimate: %+v", greedy)
	}
}

// TestReportDetectsSRM drops a fifth of one variant's units from the log,
// as a logging bug would, and expects the mismatch to be flagged.
func TestReportDetectsSRM(t *testing.T) {
	cfg, err := Parse("report.yaml", []byte(reportYAML))
	if err != nil {
		t.Fatal(err)
	}
	w := world{base: 100, arms: bandit.DefaultArms()}
	skewed := syntheticRecords(t, cfg, w, 2, 4000, 1, func(v string, r *rand.Rand) bool {
		return v != "lints" || r.Float64() >= 0.2
	})
	rep, err := BuildReport(cfg, skewed, ReportOptions{})
	if err != nil {
		t.Fatal(err)
	}
	s := rep.Experiments[0].SRM
	if s.P == nil || !s.Mismatch || *s.P >= SRMAlpha {
		t.Fatalf("skewed log: SRM %+v, want a mismatch", s)
	}
	var out bytes.Buffer
	if err := rep.WriteText(&out); err != nil {
		t.Fatal(err)
	}
	if !strings.Contains(out.String(), "SAMPLE-RATIO MISMATCH") {
		t.Errorf("text report does not flag the mismatch:\n%s", out.String())
	}
	if _, err := json.Marshal(rep); err != nil {
		t.Errorf("JSON: %v", err)
	}
}

// TestReportRatesAndLabels checks counts, throttle rates and the abuse
// rate against sums done by hand over the same records.
func TestReportRatesAndLabels(t *testing.T) {
	cfg, err := Parse("report.yaml", []byte(reportYAML))
	if err != nil {
		t.Fatal(err)
	}
	w := world{base: 100, arms: bandit.DefaultArms()}
	recs := syntheticRecords(t, cfg, w, 3, 400, 3, keepAll)
	t0 := time.Date(2026, 11, 20, 0, 0, 0, 0, time.UTC)
	labels := []rewards.Label{
		{LabelID: "l1", Key: "k_1", Abusive: true, From: t0, To: t0.Add(time.Hour), Severity: 1},
		{LabelID: "l1", Key: "k_2", Abusive: true, From: t0, To: t0.Add(time.Hour), Severity: 1}, // duplicate id: ignored
		{LabelID: "l2", Key: "k_3", Abusive: true, From: t0, To: t0.Add(time.Hour), Severity: 0.5},
		{LabelID: "l3", Key: "k_3", Abusive: false, From: t0.Add(time.Minute), To: t0.Add(time.Hour), Source: "complaint"},
	}
	rep, err := BuildReport(cfg, recs, ReportOptions{Labels: labels})
	if err != nil {
		t.Fatal(err)
	}
	type sums struct{ req, thr, served, abusive float64 }
	want := map[string]*sums{"control": {}, "lints": {}}
	dec := map[string]rewards.Record{}
	for _, r := range recs {
		if r.Type == rewards.TypeDecision {
			dec[r.ID] = r
			continue
		}
		d := dec[r.ID]
		s := want[d.Variant]
		s.req += float64(r.Served + r.Throttled)
		s.thr += float64(r.Throttled)
		s.served += float64(r.Served)
		switch {
		case d.Key == "k_1":
			s.abusive += float64(r.Served)
		case d.Key == "k_3" && d.At.Equal(t0): // the clear covers later epochs
			s.abusive += 0.5 * float64(r.Served)
		}
	}
	for _, v := range rep.Experiments[0].Variants {
		s := want[v.Name]
		if float64(v.Requests) != s.req || float64(v.Throttled) != s.thr {
			t.Errorf("%s: requests %d throttled %d, want %v %v", v.Name, v.Requests, v.Throttled, s.req, s.thr)
		}
		if got := v.ThrottleRate.Estimate; math.Abs(got-s.thr/s.req) > 1e-12 || v.ThrottleRate.Lo > got || v.ThrottleRate.Hi < got {
			t.Errorf("%s: throttle rate %v, want %v", v.Name, v.ThrottleRate, s.thr/s.req)
		}
		if v.AbuseRate == nil || math.Abs(v.AbuseRate.Estimate-s.abusive/s.served) > 1e-12 {
			t.Errorf("%s: abuse rate %v, want %v", v.Name, v.AbuseRate, s.abusive/s.served)
		}
	}
	if rep.Labels != 3 {
		t.Errorf("labels %d, want 3 (one duplicate)", rep.Labels)
	}
	if lints := rep.Experiments[0].Variants[1]; lints.ThrottleDiff == nil {
		t.Error("no throttle difference vs control")
	}
}

func TestReportBadArm(t *testing.T) {
	cfg, _ := Parse("report.yaml", []byte(reportYAML))
	at := time.Date(2026, 11, 20, 0, 0, 0, 0, time.UTC)
	recs := []rewards.Record{
		{Type: rewards.TypeDecision, ID: "d1", Key: "k", At: at, Experiment: "exp", Variant: "lints", Policy: rewards.PolicyBandit,
			Arm: 2, Multiplier: 3, Propensity: 0.5, Context: []float64{1}, Base: 10, Ceiling: 4},
		{Type: rewards.TypeOutcome, ID: "d1", Key: "k", At: at, Served: 1},
	}
	_, err := BuildReport(cfg, recs, ReportOptions{})
	if err == nil || err.Error() != "decision d1: arm 2 with multiplier 3 is not an arm of the experiment (6 arms)" {
		t.Fatalf("err = %v", err)
	}
}
