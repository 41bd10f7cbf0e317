package serving

import (
	"bytes"
	"encoding/json"
	"flag"
	"fmt"
	"math/rand/v2"
	"os"
	"path/filepath"
	"runtime/debug"
	"sync"
	"testing"
	"time"

	"github.com/devflow/flowguard/bandit"
	"github.com/devflow/flowguard/internal/config"
)

var updateGolden = flag.Bool("update-golden", false, "rewrite testdata/golden_decisions.jsonl from this run")

// goldenPolicies covers every branch of the pipeline: each ML mode, the
// deny and allow lists, auto_block, an audited tier and an experiment with
// static, bandit and shadow variants. The embedded learner publishes only
// hourly, so the model the test installs is the one every draw uses.
const goldenPolicies = `
ml:
  epoch: 10s
  deadline: 1s
  block_threshold: 0.9
  # The decisions were recorded before ml.shrink_risk existed: off, as it
  # then was, so that the replay still pins everything else.
  shrink_risk: -1
  max_model_age: 1h
  publish_every: 1h
experiments:
  file: %s
  guardrail_every: 10m
  guardrail_window: 1h
policies:
  tiers:
    free: {rate: 20, period: 1s, burst: 10, floor: 0.5, ceiling: 2, ml: on, auto_block: true}
    pro: {rate: 50, period: 1s, burst: 25, floor: 0.5, ceiling: 4, ml: on}
    enterprise: {rate: 100, period: 1s, burst: 50, floor: 1, ceiling: 4, ml: on, audit: true}
    partner: {rate: 30, period: 1s, burst: 10, floor: 0.25, ceiling: 4, ml: shadow}
    legacy: {rate: 5, period: 1s, burst: 5, floor: 0.25, ceiling: 4, ml: "off"}
  tenants:
    acme: {tier: enterprise, endpoints: {"POST /v1/payments": {rate: 10, period: 1s, burst: 5}}}
    probe: {tier: pro}
    pshadow: {tier: partner}
    old: {tier: legacy}
  deny: [k_denied]
  allow: [k_allowed]
`

const goldenExperiments = `
experiments:
  - name: golden
    salt: golden-replay
    targeting: {tiers: [pro]}
    variants:
      - {name: control, policy: static}
      - {name: lints, policy: bandit}
      - {name: shade, policy: shadow}
`

// TestGoldenReplay feeds a fixed request sequence, with a fixed clock,
// seed and model, through /v1/decide and compares every decision with the
// recorded ones. It pins the pipeline's behaviour across refactors: the
// golden file was recorded before the pipeline moved out of serving, and
// rerecorded for feature schema v2 (issue 17): its longer context moves
// the draws, so 1135 of the 1500 propensities and 37 arms (29 limits)
// changed; every status, action, reason and variant stayed as recorded.
func TestGoldenReplay(t *testing.T) {
	// The bandit's random sources live in a sync.Pool, which a collection
	// may empty: with none, the same seed gives the same draws.
	defer debug.SetGCPercent(debug.SetGCPercent(-1))
	dir := t.TempDir()
	exps := filepath.Join(dir, "experiments.yaml")
	if err := os.WriteFile(exps, []byte(goldenExperiments), 0o644); err != nil {
		t.Fatal(err)
	}
	cfg := mustParse(t, fmt.Sprintf(goldenPolicies, exps))
	now := time.Unix(1_800_000_000, 0)
	var mu sync.Mutex
	clock := func() time.Time { mu.Lock(); defer mu.Unlock(); return now }
	ts := startServerOpts(t, cfg, Options{Clock: clock, Seed: 42})
	installGoldenModel(t, ts, cfg, now)

	var got bytes.Buffer
	for i, req := range goldenRequests() {
		resp, b := post(t, ts.URL+"/v1/decide", req)
		d := decode[wireDecision](t, b)
		d.DecisionID = ""
		line, err := json.Marshal(struct {
			Status int `json:"status"`
			wireDecision
		}{resp.StatusCode, d})
		if err != nil {
			t.Fatal(err)
		}
		fmt.Fprintf(&got, "%d %s\n", i, line)
		mu.Lock()
		now = now.Add(10 * time.Millisecond)
		mu.Unlock()
	}
	path := filepath.Join("testdata", "golden_decisions.jsonl")
	if *updateGolden {
		if err := os.WriteFile(path, got.Bytes(), 0o644); err != nil {
			t.Fatal(err)
		}
	}
	want, err := os.ReadFile(path)
	if err != nil {
		t.Fatal(err)
	}
	if !bytes.Equal(got.Bytes(), want) {
		gl, wl := bytes.Split(got.Bytes(), []byte("\n")), bytes.Split(want, []byte("\n"))
		for i := 0; i < min(len(gl), len(wl)); i++ {
			if !bytes.Equal(gl[i], wl[i]) {
				t.Fatalf("decision differs from the golden file at line %d:\n got %s\nwant %s", i+1, gl[i], wl[i])
			}
		}
		t.Fatalf("got %d lines, the golden file has %d", len(gl), len(wl))
	}
}

// goldenRequests is the fixed sequence: steady keys of every tenant, hot
// keys that run out of budget, listed keys, costs and reported statuses.
func goldenRequests() []string {
	r := rand.New(rand.NewPCG(9, 9))
	tenants := []string{"", "acme", "probe", "pshadow", "old", "nobody"}
	endpoints := []string{"GET /v1/things", "POST /v1/payments", "GET /v1/reports"}
	statuses := []int{0, 0, 0, 200, 500, 401}
	var out []string
	for i := 0; i < 1500; i++ {
		key := fmt.Sprintf("k_%02d", r.IntN(40))
		tenant := tenants[r.IntN(len(tenants))]
		switch {
		case i%3 == 0:
			key, tenant = "k_hot_free", ""
		case i%5 == 0:
			key, tenant = "k_hot_acme", "acme"
		case i%97 == 0:
			key = "k_denied"
		case i%89 == 0:
			key = "k_allowed"
		}
		cost := 1 + r.IntN(3)/2
		status := ""
		if st := statuses[r.IntN(len(statuses))]; st != 0 {
			status = fmt.Sprintf(`,"last_status":%d`, st)
		}
		out = append(out, fmt.Sprintf(`{"key":%q,"tenant":%q,"endpoint":%q,"cost":%d,"client_ip":"198.51.100.%d"%s}`,
			key, tenant, endpoints[r.IntN(len(endpoints))], cost, r.IntN(8), status))
	}
	return out
}

// installGoldenModel installs a model trained on made-up rewards that
// favour different arms in different contexts, so that draws vary.
func installGoldenModel(t *testing.T, ts *testServer, cfg *config.Loaded, at time.Time) {
	t.Helper()
	bc := cfg.ML.RewardsConfig().Bandit
	bc.ModelID = "golden"
	l, err := bandit.NewLearner(bc)
	if err != nil {
		t.Fatal(err)
	}
	r := rand.New(rand.NewPCG(1, 1))
	x := make([]float64, ctxDim)
	for i := 0; i < 2000; i++ {
		for j := range x {
			x[j] = r.Float64()
		}
		a := r.IntN(len(cfg.ML.Arms))
		if err := l.Update(x, a, x[a%len(x)]*cfg.ML.Arms[a].Multiplier-1); err != nil {
			t.Fatal(err)
		}
	}
	snap, err := l.Snapshot(at)
	if err != nil {
		t.Fatal(err)
	}
	if err := ts.pipe.InstallBandit(snap); err != nil {
		t.Fatal(err)
	}
}
