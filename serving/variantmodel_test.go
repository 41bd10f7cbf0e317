package serving

import (
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/devflow/flowguard/bandit"
	"github.com/devflow/flowguard/experiments"
	"github.com/devflow/flowguard/internal/config"
	"github.com/devflow/flowguard/internal/testenv"
	"github.com/devflow/flowguard/internal/teststack"
	"github.com/devflow/flowguard/pipeline"
	"github.com/devflow/flowguard/rewards"
)

// variantModelPolicies has short epochs and a learner that publishes
// often, so that the embedded learner's models move within a test.
const variantModelPolicies = `
ml:
  deadline: 500ms
  epoch: 1s
  publish_every: 100ms
experiments:
  file: %s
  stop_log: %s
audit:
  file: %s
policies:
  tiers:
    free: {rate: 100, period: 1s, burst: 100, floor: 0.5, ceiling: 2, ml: on}
`

// Two bandit variants: "shared" has ml:'s settings and draws from the
// main model; "own" has arms ml.arms lacks (x1.25, x3) and a stronger
// prior, so it has a model of its own.
const ownModelExps = `
experiments:
  - name: exp
    salt: own-model-test
    variants:
      - {name: control, policy: static, weight: 0}
      - {name: shared, policy: bandit}
      - name: own
        policy: bandit
        bandit:
          lambda: 5
          arms: [{name: x1, multiplier: 1}, {name: x1.25, multiplier: 1.25}, {name: x3, multiplier: 3}]
`

// ownModelConfig writes ownModelExps and a configuration with
// variantModelPolicies naming it into a temporary directory, and returns
// the configuration (whose Path is set, for reloads) and the experiments
// file.
func ownModelConfig(t testing.TB) (cfg *config.Loaded, exps string) {
	t.Helper()
	dir := t.TempDir()
	exps = filepath.Join(dir, "experiments.yaml")
	if err := os.WriteFile(exps, []byte(ownModelExps), 0o644); err != nil {
		t.Fatal(err)
	}
	text := fmt.Sprintf(variantModelPolicies, exps, filepath.Join(dir, "stops.jsonl"), filepath.Join(dir, "audit.jsonl"))
	cfg = mustParse(t, text)
	cfg.Path = filepath.Join(dir, "flowguard.yaml")
	if err := os.WriteFile(cfg.Path, []byte(text), 0o644); err != nil {
		t.Fatal(err)
	}
	return cfg, exps
}

// armCounts returns the updates of each arm of s, by name.
func armCounts(t *testing.T, s *bandit.Snapshot) (map[string]uint64, uint64) {
	t.Helper()
	out := map[string]uint64{}
	var total uint64
	for a := range s.NumArms() {
		p, err := s.ArmPosterior(a)
		if err != nil {
			t.Fatal(err)
		}
		out[s.Arm(a).Name] = p.Count
		total += p.Count
	}
	return out, total
}

// A variant with a model of its own chooses among its own arms (within
// the rule's floor and ceiling) from that model alone; the embedded
// learner trains it on that variant's epochs only, and the main model on
// the others'. Over HTTP, with the decision log checked record by record.
// Changing the variant's prior in the experiments file starts a new model
// from its prior; decisions then carry the new model's key.
func TestVariantWithOwnModelLearnsApart(t *testing.T) {
	cfg, exps := ownModelConfig(t)
	vms := cfg.ML.VariantModels(cfg.ExperimentsConfig)
	if len(vms) != 1 || vms[0].ID != "exp/own" {
		t.Fatalf("variant models %+v, want exp/own alone", vms)
	}
	ownKey := vms[0].Key()
	ts, tee := startExpTee(t, cfg)
	pipe := ts.Server.pipe

	waitFor(t, "the variant's model to be published", func() bool { return modelOf(ts, variantOf(t, ts, "exp", "own")) != nil })
	keys := map[string][]string{}
	for i := 0; len(keys["own"]) < 15 || len(keys["shared"]) < 15; i++ {
		key := fmt.Sprintf("k_own_%d", i)
		d := decideAs(t, ts, key, "")
		keys[d.Variant] = append(keys[d.Variant], key)
		recs := tee.decisions(key)
		if len(recs) != 1 || recs[0].Policy != rewards.PolicyBandit {
			t.Fatalf("%s: records %+v", key, recs)
		}
		r := recs[0]
		switch d.Variant {
		case "own":
			if r.Model != ownKey || (r.ArmName != "x1" && r.ArmName != "x1.25") || d.Arm != r.ArmName ||
				r.Multiplier != map[string]float64{"x1": 1, "x1.25": 1.25}[r.ArmName] {
				t.Errorf("%s (own): model %q arm %q x%v, decision arm %q; want model %s and x1 or x1.25 (x3 is above the ceiling)",
					key, r.Model, r.ArmName, r.Multiplier, d.Arm, ownKey)
			}
		case "shared":
			if r.Model != "" || !pipe.Arms().Equal(pipe.Model().Arms()) {
				t.Errorf("%s (shared): model %q", key, r.Model)
			}
		default:
			t.Fatalf("%s: variant %q", key, d.Variant)
		}
	}
	e := explainOf(t, ts, keys["own"][0], "")
	if e.Model != ownKey || len(e.Arms) != 2 || e.Arms[0].Name != "x1" || e.Arms[1].Name != "x1.25" {
		t.Errorf("explain of an own-model key: model %q, arms %+v", e.Model, e.Arms)
	}
	// The shared model's arms x0.5 … x2, of which the risk gate (ml.shrink_risk)
	// leaves an unsuspected key those from x1.
	if e := explainOf(t, ts, keys["shared"][0], ""); e.Model != "" || len(e.Arms) != 3 || e.Arms[0].Name != "x1" {
		t.Errorf("explain of a shared-model key: model %q, arms %+v", e.Model, e.Arms)
	}

	// Close every epoch: its outcome reaches the learner, which trains
	// the model the decision was drawn from.
	all := append(append([]string(nil), keys["own"]...), keys["shared"]...)
	waitEpochsEnd(t, ts, all...)
	for _, k := range all {
		decideAs(t, ts, k, "")
	}
	// Each model's updates must equal, exactly, the closed epochs of the
	// decisions drawn from it, as the decision log shows them (epochs
	// keep closing for a while: wait until both sides agree).
	closed := func() map[string]uint64 {
		tee.mu.Lock()
		defer tee.mu.Unlock()
		model := map[string]string{}
		n := map[string]uint64{}
		for _, r := range tee.recs {
			switch {
			case r.Type == rewards.TypeDecision && r.Policy == rewards.PolicyBandit:
				model[r.ID] = r.Model
			case r.Type == rewards.TypeOutcome:
				if m, ok := model[r.ID]; ok {
					n[m]++
				}
			}
		}
		return n
	}
	var own, main map[string]uint64
	var want map[string]uint64
	waitFor(t, "each model to have learned exactly its variant's closed epochs", func() bool {
		want = closed()
		var nOwn, nMain uint64
		own, nOwn = armCounts(t, modelOf(ts, variantOf(t, ts, "exp", "own")))
		main, nMain = armCounts(t, ts.Server.pipe.Model())
		return nOwn == want[ownKey] && nMain == want[""]
	})
	if own["x3"] != 0 || want[ownKey] < uint64(len(keys["own"])) || want[""] < uint64(len(keys["shared"])) {
		t.Errorf("own model's updates %v, main model's %v, closed epochs %v", own, main, want)
	}
	series := `flowguard_ml_variant_model_updates{model="` + ownKey + `"}`
	if got := metricValue(t, ts, series); got < float64(want[ownKey]) {
		t.Errorf("%s = %v, want at least %d", series, got, want[ownKey])
	}

	// A new prior in the experiments file: a new model from its prior.
	changed := strings.Replace(ownModelExps, "lambda: 5", "lambda: 7", 1)
	if err := os.WriteFile(exps, []byte(changed), 0o644); err != nil {
		t.Fatal(err)
	}
	if err := ts.Server.Reload(); err != nil {
		t.Fatal(err)
	}
	next := ts.Server.current.Load().ML.VariantModels(ts.Server.current.Load().ExperimentsConfig)[0].Key()
	if next == ownKey {
		t.Fatal("a new lambda kept the model key")
	}
	v := variantOf(t, ts, "exp", "own")
	if v.Model != next {
		t.Fatalf("the variant draws from %q after the reload, want %q", v.Model, next)
	}
	waitFor(t, "the new model to be published", func() bool { return modelOf(ts, v) != nil })
	if _, n := armCounts(t, modelOf(ts, v)); n != 0 {
		t.Errorf("the new model starts with %d updates, want its prior", n)
	}
	if vs := pipe.VariantModels(); vs == nil || vs[ownKey] != nil {
		t.Errorf("the old model is still installed")
	}
	waitEpochsEnd(t, ts, keys["own"][0])
	decideAs(t, ts, keys["own"][0], "")
	recs := tee.decisions(keys["own"][0])
	if last := recs[len(recs)-1]; last.Model != next {
		t.Errorf("after the reload a decision carries model %q, want %q", last.Model, next)
	}
}

// variantOf returns the variant of the experiments file in force.
func variantOf(t testing.TB, ts *testServer, experiment, variant string) *experiments.LiveVariant {
	t.Helper()
	v := ts.Server.exp.Variant(experiments.VariantID{Experiment: experiment, Variant: variant})
	if v == nil {
		t.Fatalf("no variant %s/%s", experiment, variant)
	}
	return v
}

// modelOf is the variant's own model in use; nil: none yet.
func modelOf(ts *testServer, v *experiments.LiveVariant) *bandit.Snapshot {
	return ts.Server.pipe.VariantModels()[v.Model]
}

// Until a variant's own model is published its units get the
// deterministic budget, logged as static, and counted as no_model.
func TestVariantWithoutItsModelFallsBack(t *testing.T) {
	cfg, _ := ownModelConfig(t)
	ts, tee := startExpTee(t, cfg)
	// As if the learner had not published the variant's model yet.
	pipe := ts.Server.pipe
	if err := pipe.Install(rewards.Model{Bandit: pipe.Model(), Risk: pipe.Risk(), Variants: map[string]*bandit.Snapshot{}}); !errors.Is(err, bandit.ErrStaleSnapshot) {
		t.Fatalf("installing no variant models: %v", err)
	}
	for i := 0; ; i++ {
		key := fmt.Sprintf("k_nomodel_%d", i)
		d := decideAs(t, ts, key, "")
		if d.Variant != "own" {
			continue
		}
		recs := tee.decisions(key)
		if !d.Fallback || d.Reason != pipeline.ReasonNoModel || d.Multiplier != 1 || len(recs) != 1 || recs[0].Policy != rewards.PolicyStatic {
			t.Errorf("%s: decision %+v, records %+v; want the deterministic budget, no_model, logged static", key, d, recs)
		}
		break
	}
}

// Serving installs the variant models of every publication, also when the
// main model did not change (its version the same: a stale snapshot).
func TestInstallTakesVariantModelsWithAnUnchangedMainModel(t *testing.T) {
	cfg := mustParse(t, benchMLPolicies)
	ts := startServer(t, cfg)
	pipe := ts.Server.pipe
	main := pipe.Model()
	v := rewards.VariantModel{ID: "exp/own", Bandit: bandit.Config{Dim: ctxDim, Arms: bandit.ArmSet{{Name: "x1", Multiplier: 1}}, Scale: 1}}
	p, err := rewards.NewPartition(rewards.Config{Bandit: main.Config(), Risk: pipe.Risk().Config(), Variants: []rewards.VariantModel{v}})
	if err != nil {
		t.Fatal(err)
	}
	snap, err := p.VariantBandit(v.Key(), time.Now())
	if err != nil {
		t.Fatal(err)
	}
	err = pipe.Install(rewards.Model{Bandit: main, Variants: map[string]*bandit.Snapshot{v.Key(): snap}, Risk: pipe.Risk()})
	if !errors.Is(err, bandit.ErrStaleSnapshot) {
		t.Fatalf("install of the same main model: %v, want ErrStaleSnapshot", err)
	}
	if pipe.VariantModels()[v.Key()] != snap {
		t.Error("the variant model was not installed")
	}
}

// Scaled out: serving logs an own-model variant's decisions to Kafka with
// the model's key, `flowguard learn` trains that model from them, and
// serving installs it from the learner's model parts in Redis: every
// closed epoch of the variant is in it, and none in the main model.
func TestRemoteLearnerTrainsVariantModels(t *testing.T) {
	testenv.SkipShort(t, "starts Kafka, Redis, a learner and a server")
	exps := filepath.Join(t.TempDir(), "experiments.yaml")
	if err := os.WriteFile(exps, []byte(ownModelExps), 0o644); err != nil {
		t.Fatal(err)
	}
	st := startRemoteWith(t, func(brokers, redisAddr string) string {
		return remotePolicies(brokers, redisAddr) + "experiments:\n  file: " + exps + "\n"
	})
	ts := st.ts
	v := variantOf(t, ts, "exp", "own")
	waitFor(t, "the variant model from the learner", func() bool { return modelOf(ts, v) != nil })

	var own, shared []string
	for i := 0; len(own) < 10 || len(shared) < 10; i++ {
		key := fmt.Sprintf("k_remote_own_%d", i)
		switch d := decideAs(t, ts, key, "devco"); d.Variant {
		case "own":
			own = append(own, key)
		case "shared":
			shared = append(shared, key)
		}
	}
	all := append(append([]string(nil), own...), shared...)
	waitEpochsEnd(t, ts, all...)
	for _, k := range all {
		decideAs(t, ts, k, "devco") // closes the first epoch: its outcome goes to Kafka
	}
	waitUntil(t, 30*time.Second, "the learner's models in serving", func() bool {
		_, n := armCounts(t, modelOf(ts, v))
		_, nMain := armCounts(t, ts.Server.pipe.Model())
		return n >= uint64(len(own)) && nMain >= uint64(len(shared))
	})
	if _, nMain := armCounts(t, ts.Server.pipe.Model()); nMain > uint64(2*len(shared)) {
		t.Errorf("main model's updates %d: more than the shared keys' %d epochs", nMain, 2*len(shared))
	}
	counts, n := armCounts(t, modelOf(ts, v))
	if n > uint64(2*len(own)) || len(counts) != 3 || counts["x3"]+counts["x1.25"]+counts["x1"] != n {
		t.Errorf("variant model's updates %v: not the variant's arms, or more than the own keys' %d epochs", counts, 2*len(own))
	}
	if dlq := st.learner.kl.Stats().DLQ; dlq != 0 {
		t.Errorf("the learner sent %d records to the DLQ: it does not know the variant's model", dlq)
	}
}

// A reload names the sections whose changes wait for a restart, ml: among
// them (variant model keys derive from the ml: serving started with).
func TestRestartSectionsAreNamed(t *testing.T) {
	cur, _ := ownModelConfig(t)
	next, _ := ownModelConfig(t)
	next.Experiments.StopLog = cur.Experiments.StopLog
	next.Audit = cur.Audit
	if got := restartSections(cur, next); len(got) != 0 {
		t.Fatalf("the same settings: %v", got)
	}
	next.ML.Lambda = 3
	next.Server.MaxCost = 7
	if got := restartSections(cur, next); !slices.Equal(got, []string{"server", "ml"}) {
		t.Errorf("changed sections %v, want [server ml]", got)
	}
}

// flowguard learn follows the experiments file: a variant given settings
// of its own there becomes a model the learner trains, without a restart;
// an invalid version keeps the models in force.
func TestLearnerReloadsExperimentsFile(t *testing.T) {
	testenv.SkipShort(t, "starts Kafka, Redis and a learner")
	rs, brokers := teststack.Start(t)
	dir := t.TempDir()
	exps := filepath.Join(dir, "experiments.yaml")
	shared := strings.Replace(ownModelExps, "lambda: 5\n          arms: [{name: x1, multiplier: 1}, {name: x1.25, multiplier: 1.25}, {name: x3, multiplier: 3}]",
		"exploration: 0.3", 1)
	if err := os.WriteFile(exps, []byte(shared), 0o644); err != nil {
		t.Fatal(err)
	}
	path := filepath.Join(dir, "flowguard.yaml")
	text := remotePolicies(brokers[0], rs.Addr()) + "server:\n  reload_every: 50ms\nexperiments:\n  file: " + exps + "\n"
	if err := os.WriteFile(path, []byte(text), 0o644); err != nil {
		t.Fatal(err)
	}
	cfg, err := config.Load(path)
	if err != nil {
		t.Fatal(err)
	}
	l := runLearner(t, cfg)
	if vs := l.kl.Variants(); len(vs) != 0 {
		t.Fatalf("variant models %+v: every variant shares the main model", vs)
	}

	// Invalid first: nothing changes.
	if err := os.WriteFile(exps, []byte("experiments: [\n"), 0o644); err != nil {
		t.Fatal(err)
	}
	time.Sleep(300 * time.Millisecond)
	if vs := l.kl.Variants(); len(vs) != 0 {
		t.Fatalf("an invalid file changed the variant models: %+v", vs)
	}
	if err := os.WriteFile(exps, []byte(ownModelExps), 0o644); err != nil {
		t.Fatal(err)
	}
	want := cfg.ML.VariantModels(mustParse(t, text).ExperimentsConfig)
	waitFor(t, "the learner to take the variant's own model", func() bool {
		vs := l.kl.Variants()
		return len(vs) == 1 && len(want) == 1 && vs[0].Key() == want[0].Key()
	})
}
