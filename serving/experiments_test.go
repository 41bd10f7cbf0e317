package serving

import (
	"context"
	"fmt"
	"io"
	"math"
	"math/rand/v2"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/devflow/flowguard/bandit"
	"github.com/devflow/flowguard/experiments"
	"github.com/devflow/flowguard/internal/config"
	"github.com/devflow/flowguard/internal/devkafka"
	"github.com/devflow/flowguard/pipeline"
	"github.com/devflow/flowguard/rewards"
	"github.com/segmentio/kafka-go"
)

// expPolicies has an ML-on free tier, and an enterprise tier whose floor
// is deliberately low so that a harmful variant can throttle it. The shrink
// gate is off: it would keep a harmful variant from cutting keys the risk
// model does not suspect at all (pipeline TestStage2ShrinksOnlySuspectedKeys),
// and these tests check the variants' own policies over [floor, ceiling].
const expPolicies = `
ml:
  deadline: 500ms
  shrink_risk: -1
experiments:
  file: %s
  stop_log: %s
  guardrail_every: 100ms
  guardrail_window: 1m
audit:
  file: %s
policies:
  tiers:
    free: {rate: 100, period: 1s, burst: 100, floor: 0.5, ceiling: 2, ml: on}
    enterprise: {rate: 8, period: 1s, burst: 8, floor: 0.25, ceiling: 4, ml: on}
  tenants:
    acme: {tier: enterprise}
`

const threeVariants = `
experiments:
  - name: exp
    salt: serving-test
    variants:
      - {name: control, policy: static}
      - {name: lints, policy: bandit}
      - {name: shade, policy: shadow}
    guardrails:
      - {metric: complaints, max: 1}
`

const harmful = `
experiments:
  - name: harm
    salt: harm-test
    targeting: {tiers: [enterprise]}
    variants:
      - {name: control, policy: static}
      - {name: tight, policy: bandit}
    guardrails:
      - {metric: enterprise_throttle_rate, max: 0.05, min_requests: 100}
`

type expFiles struct{ dir, exps, stops, audit string }

func writeExpConfig(t *testing.T, dir, exps string) (*config.Loaded, expFiles) {
	t.Helper()
	f := expFiles{dir: dir, exps: filepath.Join(dir, "experiments.yaml"), stops: filepath.Join(dir, "stops.jsonl"),
		audit: filepath.Join(dir, "audit.jsonl")}
	if err := os.WriteFile(f.exps, []byte(exps), 0o644); err != nil {
		t.Fatal(err)
	}
	return mustParse(t, fmt.Sprintf(expPolicies, f.exps, f.stops, f.audit)), f
}

// expTeeLog keeps every decision-log record and passes it on.
type expTeeLog struct {
	next pipeline.DecisionLog
	mu   sync.Mutex
	recs []rewards.Record
}

func (l *expTeeLog) Log(r rewards.Record) bool {
	l.mu.Lock()
	l.recs = append(l.recs, r)
	l.mu.Unlock()
	return l.next == nil || l.next.Log(r)
}

func (l *expTeeLog) decisions(key string) []rewards.Record {
	l.mu.Lock()
	defer l.mu.Unlock()
	var out []rewards.Record
	for _, r := range l.recs {
		if r.Type == rewards.TypeDecision && r.Key == key {
			out = append(out, r)
		}
	}
	return out
}

// startExpTee starts a server on a real socket whose decision log is teed.
func startExpTee(t *testing.T, cfg *config.Loaded) (*testServer, *expTeeLog) {
	t.Helper()
	srv, err := New(cfg, Options{Seed: 7, AdminToken: testAdminToken})
	if err != nil {
		t.Fatal(err)
	}
	tee := &expTeeLog{next: srv.pipe.DecisionLog()}
	srv.pipe.SetDecisionLog(tee)
	return serveOn(t, srv), tee
}

func explainOf(t *testing.T, ts *testServer, key, tenant string) explanation {
	t.Helper()
	resp, err := client.Get(ts.URL + "/v1/keys/" + key + "/explain?tenant=" + tenant)
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	b, _ := io.ReadAll(resp.Body)
	if resp.StatusCode != 200 {
		t.Fatalf("explain %s: %d %s", key, resp.StatusCode, b)
	}
	return decode[explanation](t, b)
}

// TestDecisionsCarryExperimentAndVariant: over HTTP, every decision of a
// unit in the experiment names its experiment and variant, the one an
// independent Assigner on the same file gives; each policy is enforced as
// it says; the decision log and the metrics carry the variant.
func TestDecisionsCarryExperimentAndVariant(t *testing.T) {
	cfg, files := writeExpConfig(t, t.TempDir(), threeVariants)
	ts, tee := startExpTee(t, cfg)
	ecfg, err := experiments.Load(files.exps)
	if err != nil {
		t.Fatal(err)
	}
	a, err := experiments.NewAssigner(ecfg)
	if err != nil {
		t.Fatal(err)
	}
	seen := map[string]int{}
	for i := range 60 {
		key := fmt.Sprintf("k_exp_%d", i)
		want, ok := a.Primary(experiments.Unit{Key: key, Tier: "free"})
		if !ok {
			t.Fatalf("%s in no experiment", key)
		}
		d := decideAs(t, ts, key, "")
		if d.Experiment != "exp" || d.Variant != want.Variant {
			t.Fatalf("%s: experiment %q variant %q, want exp %q", key, d.Experiment, d.Variant, want.Variant)
		}
		seen[d.Variant]++
		switch d.Variant {
		case "control", "shade":
			if d.Multiplier != 1 || d.Propensity != 1 || d.Arm != "" || d.Fallback {
				t.Errorf("%s (%s): %+v, want the deterministic budget", key, d.Variant, d)
			}
		case "lints":
			if d.Arm == "" || d.Propensity <= 0 || d.Propensity > 1 {
				t.Errorf("%s (lints): %+v, want a bandit arm", key, d)
			}
		}
		recs := tee.decisions(key)
		if len(recs) != 1 {
			t.Fatalf("%s: %d decision records, want 1", key, len(recs))
		}
		r := recs[0]
		if r.Experiment != "exp" || r.Variant != want.Variant || r.Validate() != nil {
			t.Errorf("%s: record experiment %q variant %q (%v)", key, r.Experiment, r.Variant, r.Validate())
		}
		switch want.Variant {
		case "control":
			if r.Policy != rewards.PolicyStatic || r.Propensity != 1 || r.Multiplier != 1 || r.ArmName != "x1" {
				t.Errorf("control record %+v", r)
			}
		case "lints":
			if r.Policy != rewards.PolicyBandit || r.ArmName != d.Arm || r.Propensity != d.Propensity {
				t.Errorf("lints record %+v vs decision %+v", r, d)
			}
		case "shade":
			if r.Policy != rewards.PolicyShadow {
				t.Errorf("shade record %+v", r)
			}
		}
	}
	if len(seen) != 3 {
		t.Fatalf("variants seen %v, want all three", seen)
	}
	for v, n := range seen {
		if got := metricValue(t, ts, fmt.Sprintf(`flowguard_experiment_decisions_total{experiment="exp",tier="free",variant=%q}`, v)); got != float64(n) {
			t.Errorf("decisions metric of %s = %v, want %d", v, got, n)
		}
	}
	// Keys outside the experiment's tiers keep today's behaviour: none here
	// (no targeting), so the explain of a control key names the experiment.
	for i := range 60 {
		key := fmt.Sprintf("k_exp_%d", i)
		if as, _ := a.Primary(experiments.Unit{Key: key, Tier: "free"}); as.Variant == "control" {
			e := explainOf(t, ts, key, "")
			if e.Experiment != "exp" || e.Variant != "control" || e.VariantPolicy != "static" || e.VariantStopped {
				t.Errorf("explain %+v", e)
			}
			break
		}
	}
}

// TestLabelsCountPerVariantAndComplaintsStop: complaints over POST
// /v1/labels count against the key's variant once per label_id, abusive
// labels make later allowed requests count as abuse served, and the
// complaints guardrail stops the variant.
func TestLabelsCountPerVariantAndComplaintsStop(t *testing.T) {
	cfg, files := writeExpConfig(t, t.TempDir(), threeVariants)
	ts, _ := startExpTee(t, cfg)
	a, _ := experiments.NewAssigner(cfg.ExperimentsConfig)
	var lintsKey string
	for i := 0; lintsKey == ""; i++ {
		key := fmt.Sprintf("k_lab_%d", i)
		if as, _ := a.Primary(experiments.Unit{Key: key, Tier: "free"}); as.Variant == "lints" {
			lintsKey = key
		}
	}
	decideAs(t, ts, lintsKey, "")
	label := func(id string, abusive bool, source string) {
		t.Helper()
		// Severity 0.5: the label holds the key at its floor (it would
		// block it from 0.8), so its requests are still served.
		resp, b := post(t, ts.URL+"/v1/labels", fmt.Sprintf(`{"label_id":%q,"key":%q,"abusive":%v,"severity":0.5,"from":"2026-11-20T00:00:00Z","to":"2026-11-21T00:00:00Z","source":%q}`,
			id, lintsKey, abusive, source))
		if resp.StatusCode != 202 {
			t.Fatalf("labels: %d %s", resp.StatusCode, b)
		}
	}
	label("abuse-1", true, "chargeback")
	for range 3 {
		decideAs(t, ts, lintsKey, "")
	}
	if got := metricValue(t, ts, `flowguard_experiment_abuse_served_total{experiment="exp",variant="lints"}`); got != 3 {
		t.Errorf("abuse served %v, want 3", got)
	}
	label("c-1", false, "complaint")
	label("c-1", false, "complaint") // a duplicate: no effect
	if got := metricValue(t, ts, `flowguard_experiment_complaints_total{experiment="exp",variant="lints"}`); got != 1 {
		t.Fatalf("complaints %v, want 1", got)
	}
	label("c-2", false, "false_throttle")
	// max: 1 complaint: the second trips the guardrail on the next tick.
	waitFor(t, "the complaints guardrail to stop lints", func() bool {
		return metricValue(t, ts, `flowguard_experiment_guardrail_trips_total{experiment="exp",guardrail="complaints",variant="lints"}`) == 1
	})
	if d := decideAs(t, ts, lintsKey, ""); d.Variant != "lints" || d.Arm != "" || d.Multiplier != 1 {
		t.Errorf("stopped variant's key: %+v, want the control's static budget", d)
	}
	stops, err := experiments.LoadStops(files.stops)
	if err != nil || !stops.IsStopped(experiments.VariantID{Experiment: "exp", Variant: "lints"}) {
		t.Fatalf("stop log: %v %v", stops.Active(), err)
	}
}

// TestGuardrailStopsHarmfulVariantAcrossRestart runs a deliberately
// harmful variant (a model that prefers x0.25 for enterprise keys) through
// the server: the enterprise throttle guardrail stops it, an audit record
// and the stop log say why, its keys get the control's budget, and a
// restart with the same stop log keeps it stopped.
func TestGuardrailStopsHarmfulVariantAcrossRestart(t *testing.T) {
	dir := t.TempDir()
	cfg, files := writeExpConfig(t, dir, harmful)
	ts, _ := startExpTee(t, cfg)
	if err := ts.pipe.InstallBandit(biasedModel(t, ts.pipe, 0.25, time.Now())); err != nil {
		t.Fatal(err)
	}
	a, _ := experiments.NewAssigner(cfg.ExperimentsConfig)
	var tight []string
	for i := 0; len(tight) < 30; i++ {
		key := fmt.Sprintf("k_ent_%d", i)
		if as, _ := a.Primary(experiments.Unit{Key: key, Tenant: "acme", Tier: "enterprise"}); as.Variant == "tight" {
			tight = append(tight, key)
		}
	}
	// Free keys are not targeted: no experiment, today's behaviour.
	if d := decideAs(t, ts, "k_free_1", ""); d.Experiment != "" || d.Variant != pipeline.VariantBandit {
		t.Errorf("untargeted key: %+v", d)
	}
	var arms = map[string]int{}
	stopped := func() bool {
		return metricValue(t, ts, `flowguard_experiment_guardrail_trips_total{experiment="harm",guardrail="enterprise_throttle_rate",variant="tight"}`) == 1
	}
	for round := 0; round < 20 && !stopped(); round++ {
		for _, key := range tight {
			for range 8 {
				d := decideAs(t, ts, key, "acme")
				if d.Experiment != "harm" || d.Variant != "tight" {
					t.Fatalf("%s: %+v", key, d)
				}
				arms[d.Arm]++
			}
		}
	}
	waitFor(t, "the enterprise throttle guardrail to stop tight", stopped)
	t.Logf("arms enforced for tight keys before the stop: %v", arms)
	if arms["x0.25"] == 0 {
		t.Errorf("the harmful model never enforced x0.25: %v", arms)
	}
	d := decideAs(t, ts, tight[0], "acme")
	if d.Variant != "tight" || d.Multiplier != 1 || d.Arm != "" || d.Propensity != 1 {
		t.Errorf("after the stop: %+v, want the control's static budget", d)
	}
	e := explainOf(t, ts, tight[0], "acme")
	if !e.VariantStopped || e.VariantPolicy != "static" {
		t.Errorf("explain after the stop: %+v", e)
	}
	// The stop log and the audit log say why.
	data, err := os.ReadFile(files.stops)
	if err != nil || !strings.Contains(string(data), `"op":"stop","experiment":"harm","variant":"tight","metric":"enterprise_throttle_rate"`) {
		t.Fatalf("stop log: %s %v", data, err)
	}
	waitFor(t, "the audit record", func() bool {
		b, _ := os.ReadFile(files.audit)
		return strings.Contains(string(b), `"decision":"experiment_stop"`) && strings.Contains(string(b), "harm/tight")
	})
	if _, err := VerifyAuditFile(files.audit); err != nil {
		t.Errorf("audit chain: %v", err)
	}

	// Restart with the same files: still stopped, without a new trip.
	ts.stop(t)
	ts.Close()
	cfg2, err := config.Parse("test.yaml", []byte(fmt.Sprintf(expPolicies, files.exps, files.stops, files.audit)))
	if err != nil {
		t.Fatal(err)
	}
	ts2, _ := startExpTee(t, cfg2)
	if err := ts2.pipe.InstallBandit(biasedModel(t, ts2.pipe, 0.25, time.Now())); err != nil {
		t.Fatal(err)
	}
	for _, key := range tight[:5] {
		if d := decideAs(t, ts2, key, "acme"); d.Variant != "tight" || d.Multiplier != 1 || d.Arm != "" {
			t.Errorf("after restart %s: %+v, want the control's static budget", key, d)
		}
	}
	if got := metricValue(t, ts2, `flowguard_experiment_variant_stopped{experiment="harm",variant="tight"}`); got != 1 {
		t.Errorf("stopped gauge after restart = %v", got)
	}
}

// TestExperimentsReload: rewriting the experiments file reloads it (here:
// all weight to the control), and a stop in force stays applied.
func TestExperimentsReload(t *testing.T) {
	dir := t.TempDir()
	cfg, files := writeExpConfig(t, dir, threeVariants)
	cfg.Server.ReloadEvery = 50 * time.Millisecond
	cfg.Path = filepath.Join(dir, "flowguard.yaml")
	if err := os.WriteFile(cfg.Path, []byte(fmt.Sprintf(expPolicies, files.exps, files.stops, files.audit)), 0o644); err != nil {
		t.Fatal(err)
	}
	ts, _ := startExpTee(t, cfg)
	allControl := strings.Replace(strings.Replace(threeVariants, "{name: lints, policy: bandit}", "{name: lints, weight: 0, policy: bandit}", 1),
		"{name: shade, policy: shadow}", "{name: shade, weight: 0, policy: shadow}", 1)
	if err := os.WriteFile(files.exps, []byte(allControl), 0o644); err != nil {
		t.Fatal(err)
	}
	waitFor(t, "the experiments file to reload", func() bool {
		for i := range 20 {
			if d := decideAs(t, ts, fmt.Sprintf("k_rl_%d", i), ""); d.Variant != "control" {
				return false
			}
		}
		return true
	})
}

// benchMLPolicies is an ML-on tier for the hot-path benchmark.
const benchMLPolicies = `
ml:
  deadline: 500ms
policies:
  tiers:
    free: {rate: 1000000, period: 1s, burst: 1000000, floor: 0.5, ceiling: 2, ml: on}
`

// BenchmarkDecideMLOn is one ML-on decision without HTTP, for 1000 keys
// in their epoch (stage 2 cached), without experiments and with the
// embedded example (every key in bandit-vs-static but the 5% holdout).
func BenchmarkDecideMLOn(b *testing.B) {
	for name, exps := range map[string]string{"no_experiments": "", "embedded_experiments": "experiments: {file: embedded}\n"} {
		b.Run(name, func(b *testing.B) {
			srv, err := New(mustParse(b, exps+benchMLPolicies), Options{Seed: 1})
			if err != nil {
				b.Fatal(err)
			}
			defer srv.Close()
			reqs := make([]DecideRequest, 1000)
			for i := range reqs {
				reqs[i] = DecideRequest{Key: fmt.Sprintf("k_live_%d", i), Endpoint: "GET /v1/balance", Cost: 1}
				srv.decide(context.Background(), &reqs[i])
			}
			b.ReportAllocs()
			b.ResetTimer()
			for i := 0; b.Loop(); i++ {
				srv.decide(context.Background(), &reqs[i%len(reqs)])
			}
		})
	}
}

// A variant's own exploration scale is applied per call: its logged
// propensities are those of the scaled policy, not the model's own.
func TestVariantExplorationIsApplied(t *testing.T) {
	const exps = `
experiments:
  - name: explore
    salt: explore-test
    variants:
      - {name: control, policy: static, weight: 0}
      - {name: wide, policy: bandit, bandit: {exploration: 4}}
`
	cfg, _ := writeExpConfig(t, t.TempDir(), exps)
	ts, tee := startExpTee(t, cfg)
	factor := 4 / cfg.ML.Exploration
	// A weakly trained model: arms' scores overlap, so the exploration
	// scale changes the choice probabilities.
	pipe := ts.Server.pipe
	bcfg := pipe.Model().Config()
	bcfg.ModelID = "weak"
	l, err := bandit.NewLearner(bcfg)
	if err != nil {
		t.Fatal(err)
	}
	r := rand.New(rand.NewPCG(3, 3))
	x := make([]float64, ctxDim)
	for i := range 60 {
		for j := range x {
			x[j] = r.Float64()
		}
		if err := l.Update(x, i%len(pipe.Arms()), 0.1*float64(i%len(pipe.Arms()))+r.NormFloat64()); err != nil {
			t.Fatal(err)
		}
	}
	weak, err := l.Snapshot(time.Now())
	if err != nil {
		t.Fatal(err)
	}
	if err := pipe.InstallBandit(weak); err != nil {
		t.Fatal(err)
	}
	differs := 0
	for i := range 40 {
		key := fmt.Sprintf("k_wide_%d", i)
		if d := decideAs(t, ts, key, ""); d.Variant != "wide" {
			t.Fatalf("%s: variant %q, want wide", key, d.Variant)
		}
		recs := tee.decisions(key)
		if len(recs) != 1 || recs[0].Policy != rewards.PolicyBandit {
			t.Fatalf("%s: records %+v", key, recs)
		}
		r := recs[0]
		snap := ts.Server.pipe.Model()
		if snap.Version() != r.ModelVersion {
			continue // the learner published in between
		}
		allowed, err := snap.Allowed(r.Floor, r.Ceiling)
		if err != nil {
			t.Fatal(err)
		}
		scaled, _ := snap.ProbabilityScaled(r.Context, allowed, r.Arm, factor)
		own, _ := snap.Probability(r.Context, allowed, r.Arm)
		if math.Abs(scaled-r.Propensity) > 1e-9 {
			t.Errorf("%s: logged propensity %v, the scaled policy's %v (the model's own %v)", key, r.Propensity, scaled, own)
		}
		if math.Abs(own-r.Propensity) > 1e-6 {
			differs++
		}
	}
	if differs == 0 {
		t.Errorf("no logged propensity differs from the unscaled policy's: the variant's exploration was not applied")
	}
}

// A variant whose arms are a run of ml.arms chooses among those only:
// with arms x1.5 and x2 (inside the free tier's [0.5, 2]), every logged
// bandit choice is one of them.
func TestVariantArmsRestrictTheChoice(t *testing.T) {
	const exps = `
experiments:
  - name: arms
    salt: arms-test
    variants:
      - {name: control, policy: static, weight: 0}
      - name: generous
        policy: bandit
        bandit: {arms: [{name: x1.5, multiplier: 1.5}, {name: x2, multiplier: 2}]}
`
	cfg, _ := writeExpConfig(t, t.TempDir(), exps)
	ts, tee := startExpTee(t, cfg)
	seen := map[string]int{}
	for i := range 40 {
		key := fmt.Sprintf("k_gen_%d", i)
		d := decideAs(t, ts, key, "")
		recs := tee.decisions(key)
		if d.Variant != "generous" || len(recs) != 1 {
			t.Fatalf("%s: %+v, %d records", key, d, len(recs))
		}
		seen[recs[0].ArmName]++
		if d.Multiplier != 1.5 && d.Multiplier != 2 {
			t.Errorf("%s: multiplier %v outside the variant's arms", key, d.Multiplier)
		}
	}
	if len(seen) != 2 {
		t.Errorf("arms chosen %v, want both x1.5 and x2", seen)
	}
}

// Labels produced straight to the labels topic, not posted to this
// instance, are attributed to variants too: a complaint sent with kcat
// counts against the variant of its key.
func TestKafkaLabelsAreAttributed(t *testing.T) {
	kc, err := devkafka.Start("127.0.0.1:0", devkafka.DefaultTopics())
	if err != nil {
		t.Fatal(err)
	}
	defer kc.Close()
	dir := t.TempDir()
	f := filepath.Join(dir, "experiments.yaml")
	if err := os.WriteFile(f, []byte(threeVariants), 0o644); err != nil {
		t.Fatal(err)
	}
	yaml := fmt.Sprintf("kafka:\n  brokers: [%q]\n", kc.Addrs()[0]) +
		fmt.Sprintf(expPolicies, f, filepath.Join(dir, "stops.jsonl"), filepath.Join(dir, "audit.jsonl"))
	ts := startServer(t, mustParse(t, yaml))
	ecfg, err := experiments.Load(f)
	if err != nil {
		t.Fatal(err)
	}
	a, err := experiments.NewAssigner(ecfg)
	if err != nil {
		t.Fatal(err)
	}
	key := ""
	for i := 0; key == ""; i++ {
		if as, _ := a.Primary(experiments.Unit{Key: fmt.Sprintf("k_kl_%d", i), Tier: "free"}); as.Variant == "lints" {
			key = fmt.Sprintf("k_kl_%d", i)
		}
	}
	decideAs(t, ts, key, "")
	w := &kafka.Writer{Addr: kafka.TCP(kc.Addrs()...), Topic: "flowguard.labels", Balancer: &kafka.Murmur2Balancer{}, BatchTimeout: time.Millisecond}
	defer w.Close()
	series := `flowguard_experiment_complaints_total{experiment="exp",variant="lints"}`
	// The instance reads from the topic's end once it has found it; resend
	// under new ids until one lands after that.
	for i := 0; metricValue(t, ts, series) == 0; i++ {
		if i == 100 {
			t.Fatalf("no complaint from the labels topic was attributed")
		}
		v := fmt.Sprintf(`{"label_id":"complaint-%d","key":%q,"abusive":false,"from":"2026-11-20T00:00:00Z","to":"2026-11-21T00:00:00Z","source":"complaint"}`, i, key)
		if err := w.WriteMessages(context.Background(), kafka.Message{Key: []byte(key), Value: []byte(v)}); err != nil {
			t.Fatal(err)
		}
		time.Sleep(100 * time.Millisecond)
	}
}
