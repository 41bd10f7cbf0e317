package serving

import (
	"encoding/json"
	"fmt"
	"io"
	"math/rand/v2"
	"os"
	"path/filepath"
	"reflect"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/devflow/flowguard/bandit"
	"github.com/devflow/flowguard/features"
	"github.com/devflow/flowguard/internal/config"
	"github.com/devflow/flowguard/pipeline"
)

// mlPolicies exercises every ML mode: free (on, auto_block, floor 0.5),
// enterprise (on, floor 1), partner (shadow) and legacy (off).
const mlPolicies = `
ml:
  epoch: 60s
  deadline: 500ms # generous: the race detector and a busy CI box slow stage 2; TestDeadlineAndPanicFallBack sets 2ms
  block_threshold: 0.9
  max_model_age: 10m
policies:
  tiers:
    free: {rate: 100, period: 1s, burst: 100, floor: 0.5, ceiling: 2, ml: on, auto_block: true}
    enterprise: {rate: 100, period: 1s, burst: 100, floor: 1, ceiling: 4, ml: on, audit: true}
    partner: {rate: 100, period: 1s, burst: 100, floor: 0.25, ceiling: 4, ml: shadow}
    legacy: {rate: 100, period: 1s, burst: 100, floor: 0.25, ceiling: 4, ml: "off"}
  tenants:
    acme: {tier: enterprise}
    pshadow: {tier: partner}
    old: {tier: legacy}
  deny: [k_denied]
  allow: [k_allowed]
`

// startML starts a server on a real socket with options, after edit
// changes the parsed configuration.
func startML(t testing.TB, yaml string, opts Options, edit func(*config.Loaded)) *testServer {
	t.Helper()
	cfg := mustParse(t, yaml)
	if edit != nil {
		edit(cfg)
	}
	return startServerOpts(t, cfg, opts)
}

func decideAs(t testing.TB, ts *testServer, key, tenant string) wireDecision {
	t.Helper()
	resp, b := post(t, ts.URL+"/v1/decide", fmt.Sprintf(`{"key":%q,"tenant":%q,"endpoint":"GET /v1/things","client_ip":"198.51.100.7"}`, key, tenant))
	if resp.StatusCode != 200 {
		t.Fatalf("decide %s: %d %s", key, resp.StatusCode, b)
	}
	return decode[wireDecision](t, b)
}

// biasedModel returns a snapshot that learned, from made-up rewards, that
// the arm with the given multiplier is by far the best for every context.
func biasedModel(t testing.TB, pipe *pipeline.Pipeline, best float64, at time.Time) *bandit.Snapshot {
	t.Helper()
	arms := pipe.Arms()
	cfg := pipe.Model().Config()
	cfg.ModelID = fmt.Sprintf("prefers-x%v", best)
	l, err := bandit.NewLearner(cfg)
	if err != nil {
		t.Fatal(err)
	}
	r := rand.New(rand.NewPCG(1, 1))
	x := make([]float64, ctxDim)
	for i := 0; i < 3000; i++ {
		for j := range x {
			x[j] = r.Float64()
		}
		a := r.IntN(len(arms))
		rew := -1.0
		if arms[a].Multiplier == best {
			rew = 5
		}
		if err := l.Update(x, a, rew); err != nil {
			t.Fatal(err)
		}
	}
	snap, err := l.Snapshot(at)
	if err != nil {
		t.Fatal(err)
	}
	return snap
}

// TestEnterpriseNeverBelowFloor is a property test: whatever the model
// prefers (the smallest arm, the largest, the prior), no enterprise
// decision gets a multiplier below the floor or a limit below the
// contract.
func TestEnterpriseNeverBelowFloor(t *testing.T) {
	now := time.Unix(1_800_000_000, 0)
	var mu sync.Mutex
	clock := func() time.Time { mu.Lock(); defer mu.Unlock(); return now }
	ts := startML(t, mlPolicies, Options{Clock: clock, Seed: 3}, nil)
	for _, prefer := range []float64{0.25, 0.5, 1, 4, 0} {
		if prefer > 0 {
			if err := ts.pipe.InstallBandit(biasedModel(t, ts.pipe, prefer, now)); err != nil {
				t.Fatal(err)
			}
		}
		arms := map[string]int{}
		for i := 0; i < 150; i++ {
			d := decideAs(t, ts, fmt.Sprintf("k_ent_%v_%d", prefer, i), "acme")
			if d.Multiplier < 1 || d.Limit < 100 {
				t.Fatalf("model preferring x%v: enterprise key got multiplier %v, limit %d (floor 1, base 100)", prefer, d.Multiplier, d.Limit)
			}
			if d.Variant != pipeline.VariantBandit || d.Fallback {
				t.Fatalf("enterprise decision not from the bandit: %+v", d)
			}
			arms[d.Arm]++
		}
		// Free keys, floor 0.5: the floor holds there too.
		for i := 0; i < 50; i++ {
			if d := decideAs(t, ts, fmt.Sprintf("k_free_%v_%d", prefer, i), ""); d.Multiplier < 0.5 || d.Multiplier > 2 {
				t.Fatalf("free key got multiplier %v outside [0.5, 2]", d.Multiplier)
			}
		}
		t.Logf("model preferring x%v: enterprise arms %v", prefer, arms)
		if prefer >= 1 && arms["x"+fmt.Sprint(prefer)] < 100 {
			t.Errorf("a model preferring x%v chose it only %d of 150 times", prefer, arms["x"+fmt.Sprint(prefer)])
		}
		mu.Lock()
		now = now.Add(2 * time.Minute) // a new epoch for the next model
		mu.Unlock()
	}
}

func TestShadowEnforcesTheDeterministicBudget(t *testing.T) {
	now := time.Unix(1_800_000_000, 0)
	ts := startML(t, mlPolicies, Options{Clock: func() time.Time { return now }, Seed: 5}, nil)
	if err := ts.pipe.InstallBandit(biasedModel(t, ts.pipe, 4, now)); err != nil {
		t.Fatal(err)
	}
	for i := 0; i < 50; i++ {
		d := decideAs(t, ts, fmt.Sprintf("k_shadow_%d", i), "pshadow")
		if d.Multiplier != 1 || d.Limit != 100 || d.Variant != pipeline.VariantShadow || d.Arm != "" {
			t.Fatalf("shadow decision enforced %+v, want multiplier 1, limit 100, variant shadow", d)
		}
	}
	// The choice was made and counted, mostly the arm the model prefers.
	if got := metricValue(t, ts, `flowguard_ml_shadow_choices_total{arm="x4"}`); got < 40 {
		t.Errorf("shadow choices of x4: %v of 50", got)
	}
	// ml: off and the allow list never consult the model.
	for _, tc := range []struct{ key, tenant string }{{"k_old", "old"}, {"k_allowed", "acme"}} {
		d := decideAs(t, ts, tc.key, tc.tenant)
		if d.Variant != pipeline.VariantStatic || d.Multiplier != 1 || d.Arm != "" {
			t.Errorf("%s: %+v, want the static deterministic budget", tc.key, d)
		}
	}
}

func TestModelFallbacks(t *testing.T) {
	t.Run("no model", func(t *testing.T) {
		ts := startML(t, mlPolicies, Options{}, func(c *config.Loaded) { c.ML.Learner = "remote" })
		if d := decideAs(t, ts, "k_1", "acme"); !d.Fallback || d.Reason != pipeline.ReasonNoModel || d.ModelVersion != "" {
			t.Fatalf("got %+v, want fallback no_model", d)
		}
	})
	t.Run("stale model", func(t *testing.T) {
		now := time.Unix(1_800_000_000, 0)
		var mu sync.Mutex
		clock := func() time.Time { mu.Lock(); defer mu.Unlock(); return now }
		ts := startML(t, mlPolicies, Options{Clock: clock}, nil)
		if d := decideAs(t, ts, "k_1", "acme"); d.Fallback {
			t.Fatalf("fresh model: %+v", d)
		}
		mu.Lock()
		now = now.Add(11 * time.Minute) // past max_model_age, and the maintain loop has not republished
		mu.Unlock()
		if d := decideAs(t, ts, "k_2", "acme"); !d.Fallback || d.Reason != pipeline.ReasonStaleModel {
			t.Fatalf("got %+v, want fallback stale_model", d)
		}
		if err := ts.learner.Publish(); err != nil { // the embedded learner republishes
			t.Fatal(err)
		}
		if d := decideAs(t, ts, "k_3", "acme"); d.Fallback {
			t.Fatalf("after republishing: %+v", d)
		}
	})
	t.Run("feature store full", func(t *testing.T) {
		ts := startML(t, mlPolicies, Options{}, func(c *config.Loaded) { c.ML.MaxKeys = 1 })
		var reasons []string
		for i := 0; i < 300; i++ { // 256 shards of one key each: some keys must be refused
			d := decideAs(t, ts, fmt.Sprintf("k_%d", i), "acme")
			if d.Fallback {
				reasons = append(reasons, d.Reason)
			}
		}
		if len(reasons) == 0 || reasons[0] != pipeline.ReasonFeatureStoreDown {
			t.Fatalf("fallbacks %v, want feature_store_down for keys beyond max_keys", reasons)
		}
	})
}

func TestRiskBlocksOnlyAutoBlockTenants(t *testing.T) {
	dir := t.TempDir()
	ts := startML(t, mlPolicies, Options{Seed: 9}, func(c *config.Loaded) { c.Audit.File = filepath.Join(dir, "audit.jsonl") })
	// Teach the risk model that this key's behaviour is abusive.
	for _, tenant := range []string{"", "acme"} {
		key := "k_abuser_" + tenant
		for i := 0; i < 30; i++ {
			post(t, ts.URL+"/v1/decide", fmt.Sprintf(`{"key":%q,"tenant":%q,"endpoint":"POST /login","last_status":401}`, key, tenant))
		}
		x := ts.pipe.Features().Vector(key, ts.pipe.Now(), nil)
		for i := 0; i < 3000; i++ {
			if err := ts.pipe.Risk().Learn(x, true); err != nil {
				t.Fatal(err)
			}
		}
		if r := ts.pipe.Risk().Score(x); r < 0.9 {
			t.Fatalf("risk after training %v", r)
		}
	}
	ts.pipe.CloseEpochs() // forget the epoch choices made before the model learned
	if d := decideAs(t, ts, "k_abuser_", ""); d.Decision != pipeline.ActionBlock || d.Reason != pipeline.ReasonRisk {
		t.Fatalf("free (auto_block) abuser: %+v, want block for risk", d)
	}
	if d := decideAs(t, ts, "k_abuser_acme", "acme"); d.Decision == pipeline.ActionBlock {
		t.Fatalf("enterprise (no auto_block) key was blocked: %+v", d)
	}
	ts.stop(t)
	ts.Close()
	sum, err := VerifyAuditFile(filepath.Join(dir, "audit.jsonl"))
	if err != nil || sum.Records != 1 {
		t.Fatalf("audit: %+v, %v; want the one block", sum, err)
	}
}

func TestAuditChainDetectsTampering(t *testing.T) {
	dir := t.TempDir()
	path := filepath.Join(dir, "audit.jsonl")
	ts := startML(t, mlPolicies, Options{}, func(c *config.Loaded) { c.Audit.File = path })
	for i := 0; i < 5; i++ {
		decideAs(t, ts, "k_denied", "") // a block: always audited
	}
	for i := 0; i < 250; i++ { // acme has audit: true; its throttles are audited, its allows not
		// k_allowed gets the deterministic budget (burst 100), so most of these throttle.
		post(t, ts.URL+"/v1/decide", `{"key":"k_allowed","tenant":"acme"}`)
	}
	ts.stop(t)
	ts.Close()
	sum, err := VerifyAuditFile(path)
	if err != nil {
		t.Fatal(err)
	}
	if sum.Records < 6 {
		t.Fatalf("%d records, want 5 blocks and some throttles", sum.Records)
	}
	data, _ := os.ReadFile(path)
	lines := strings.SplitAfter(strings.TrimSuffix(string(data), "\n"), "\n")
	var first AuditRecord
	json.Unmarshal([]byte(lines[0]), &first)
	if first.Decision != pipeline.ActionBlock || first.Reason != pipeline.ReasonDenyList || first.PolicyVersion == "" || first.Key != "k_denied" {
		t.Fatalf("first record %+v", first)
	}
	tampered := map[string]string{
		"edited":    strings.Join(lines[:2], "") + strings.Replace(lines[2], `"k_denied"`, `"k_other"`, 1) + strings.Join(lines[3:], ""),
		"deleted":   strings.Join(lines[:2], "") + strings.Join(lines[3:], ""),
		"inserted":  strings.Join(lines[:3], "") + lines[1] + strings.Join(lines[3:], ""),
		"reordered": lines[1] + lines[0] + strings.Join(lines[2:], ""),
		"first cut": strings.Join(lines[1:], ""),
		"garbage":   strings.Join(lines[:2], "") + "not json\n" + strings.Join(lines[2:], ""),
	}
	for name, content := range tampered {
		t.Run(name, func(t *testing.T) {
			if _, err := VerifyAudit(strings.NewReader(content)); err == nil {
				t.Fatal("tampering not detected")
			} else {
				t.Log(err)
			}
		})
	}
	// A restart continues the chain.
	ts2 := startML(t, mlPolicies, Options{}, func(c *config.Loaded) { c.Audit.File = path })
	decideAs(t, ts2, "k_denied", "")
	ts2.stop(t)
	ts2.Close()
	if sum2, err := VerifyAuditFile(path); err != nil || sum2.Records != sum.Records+1 {
		t.Fatalf("after restart: %+v, %v", sum2, err)
	}
}

func TestExplainReturnsEveryField(t *testing.T) {
	ts := startML(t, mlPolicies, Options{Seed: 2}, nil)
	for i := 0; i < 12; i++ {
		decideAs(t, ts, "k_explained", "acme")
	}
	resp, err := client.Get(ts.URL + "/v1/keys/k_explained/explain?tenant=acme&endpoint=GET%20/v1/things")
	if err != nil {
		t.Fatal(err)
	}
	b, _ := io.ReadAll(resp.Body)
	resp.Body.Close()
	if resp.StatusCode != 200 {
		t.Fatalf("%d %s", resp.StatusCode, b)
	}
	var raw map[string]json.RawMessage
	if err := json.Unmarshal(b, &raw); err != nil {
		t.Fatal(err)
	}
	for _, f := range []string{"features", "risk", "variant", "arm", "multiplier", "floor", "ceiling", "model_version",
		"fallback", "fallback_reason", "recent_decisions", "propensity", "arms", "epoch_expires_ms"} {
		if _, ok := raw[f]; !ok {
			t.Errorf("explain lacks %q", f)
		}
	}
	e := decode[explanation](t, b)
	if len(e.Features) != features.Dim || e.Features["rate_10s"] <= 0 {
		t.Errorf("features %v", e.Features)
	}
	if e.Variant != pipeline.VariantBandit || e.Arm == "" || e.Multiplier < 1 || e.Floor != 1 || e.Ceiling != 4 || e.ModelVersion == "" || len(e.Arms) != 4 {
		t.Errorf("explanation %+v", e)
	}
	if len(e.RecentDecisions) != 10 || e.RecentDecisions[0].Endpoint != "GET /v1/things" {
		t.Errorf("recent decisions %+v", e.RecentDecisions)
	}
	resp, _ = client.Get(ts.URL + "/v1/keys/" + strings.Repeat("k", 300) + "/explain")
	if resp.StatusCode != 400 {
		t.Errorf("300-byte key: %d", resp.StatusCode)
	}
	resp.Body.Close()
	resp, _ = client.Post(ts.URL+"/v1/keys/k/explain", "application/json", nil)
	if resp.StatusCode != 405 {
		t.Errorf("POST explain: %d", resp.StatusCode)
	}
	resp.Body.Close()
}

func TestBurstShowsInFeaturesWithinASecond(t *testing.T) {
	ts := startML(t, mlPolicies, Options{}, nil)
	rate := func() float64 {
		resp, err := client.Get(ts.URL + "/v1/keys/k_burst/explain")
		if err != nil {
			t.Fatal(err)
		}
		defer resp.Body.Close()
		b, _ := io.ReadAll(resp.Body)
		return decode[explanation](t, b).Features["rate_10s"]
	}
	before := rate()
	start := time.Now()
	for i := 0; i < 50; i++ {
		post(t, ts.URL+"/v1/decide", `{"key":"k_burst"}`)
	}
	after := rate()
	if time.Since(start) < time.Second && !(after > before+2) {
		t.Fatalf("rate_10s %v before a burst of 50, %v after", before, after)
	}
}

func TestOutcomesEndpoint(t *testing.T) {
	ts := startML(t, mlPolicies, Options{}, nil)
	tests := map[string]struct {
		body string
		code int
	}{
		"ok":              {`{"key":"k1","requests":10,"errors":3,"auth_failures":2}`, 200},
		"no key":          {`{"requests":1}`, 400},
		"negative":        {`{"key":"k1","requests":-1}`, 400},
		"errors > total":  {`{"key":"k1","requests":1,"errors":2}`, 400},
		"not json":        {`{`, 400},
		"float count":     {`{"key":"k1","requests":1.5}`, 400},
		"bad last_status": {`{"key":"k1","last_status":42}`, 400},
	}
	for name, tc := range tests {
		t.Run(name, func(t *testing.T) {
			url := ts.URL + "/v1/outcomes"
			if strings.Contains(tc.body, "last_status") {
				url = ts.URL + "/v1/decide"
			}
			resp, b := post(t, url, tc.body)
			if resp.StatusCode != tc.code {
				t.Fatalf("%d %s", resp.StatusCode, b)
			}
		})
	}
	v, _ := ts.pipe.Features().Snapshot("k1", ts.pipe.Now())
	if f, ok := v.Get("error_rate"); !ok || f.Raw <= 0 {
		t.Errorf("error_rate after reporting errors: %+v", f)
	}
}

// metricValue scrapes /metrics and returns the sample named by series
// (name{labels} exactly as exposed), or -1 when absent.
func metricValue(t testing.TB, ts *testServer, series string) float64 {
	t.Helper()
	for _, line := range strings.Split(scrape(t, ts.URL), "\n") {
		if rest, ok := strings.CutPrefix(line, series+" "); ok {
			var v float64
			fmt.Sscan(rest, &v)
			return v
		}
	}
	return -1
}

// TestExplainChangesNothing calls explain between decisions with a frozen
// clock: the key's budget left, its features and the stage-2 runs are the
// same as without the explain calls.
func TestExplainChangesNothing(t *testing.T) {
	now := time.Unix(1_800_000_000, 0)
	ts := startML(t, mlPolicies, Options{Clock: func() time.Time { return now }, Seed: 4}, nil)
	first := decideAs(t, ts, "k_quiet", "acme")
	feats := func() map[string]float64 {
		v, _ := ts.pipe.Features().Snapshot("k_quiet", now)
		out := map[string]float64{}
		for _, f := range v {
			out[f.Name] = f.Raw
		}
		return out
	}
	runs := func() float64 { return metricValue(t, ts, "flowguard_ml_stage2_duration_seconds_count") }
	beforeFeats, beforeRuns := feats(), runs()
	for i := 0; i < 5; i++ {
		resp, b := get(t, ts.URL+"/v1/keys/k_quiet/explain?tenant=acme&endpoint=GET%20/v1/things")
		if resp.StatusCode != 200 {
			t.Fatalf("explain: %d %s", resp.StatusCode, b)
		}
	}
	if got := feats(); !reflect.DeepEqual(got, beforeFeats) {
		t.Fatalf("explain changed the features:\n got %v\nwant %v", got, beforeFeats)
	}
	if got := runs(); got != beforeRuns {
		t.Fatalf("explain ran stage 2: %v runs, %v before", got, beforeRuns)
	}
	second := decideAs(t, ts, "k_quiet", "acme")
	if second.Remaining != first.Remaining-1 {
		t.Fatalf("remaining went from %d to %d over one decision and five explains", first.Remaining, second.Remaining)
	}
}
