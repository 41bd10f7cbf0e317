package serving

import (
	"fmt"
	"strings"
	"testing"
	"time"

	"github.com/devflow/flowguard/internal/config"
	"github.com/devflow/flowguard/pipeline"
)

// Over sockets: when one feature's distribution shifts — every key's
// request cost jumps from 1 to 80, so cost_per_request leaves the bins the
// model learned on — ML decisions fall back to the deterministic budget
// with reason drift, and the metrics say so. Before the shift, with the
// same keys and traffic otherwise, nothing falls back.
func TestFeatureDriftFallsBack(t *testing.T) {
	ts := startML(t, mlPolicies, Options{}, func(c *config.Loaded) {
		c.ML.Epoch = time.Second
		c.ML.Drift = config.Drift{Mode: config.DriftFallback, Threshold: 0.25, Window: 2 * time.Second,
			Reference: time.Minute, MinSamples: 30, MinKeyAge: 2 * time.Second}
	})
	keys := make([]string, 40)
	for i := range keys {
		keys[i] = fmt.Sprintf("k_drift_%d", i)
	}
	round := func(cost int) (drift int) {
		for _, k := range keys {
			resp, b := post(t, ts.URL+"/v1/decide", fmt.Sprintf(`{"key":%q,"endpoint":"GET /v1/things","client_ip":"198.51.100.7","cost":%d}`, k, cost))
			if resp.StatusCode != 200 {
				t.Fatalf("decide %s: %d %s", k, resp.StatusCode, b)
			}
			if d := decode[wireDecision](t, b); d.Reason == pipeline.ReasonDrift {
				if !d.Fallback || d.Multiplier != 1 || d.Limit != 100 {
					t.Fatalf("a drift fallback that is not the deterministic budget: %+v", d)
				}
				drift++
			}
		}
		waitEpochsEnd(t, ts, keys...)
		return drift
	}
	for range 5 {
		if n := round(1); n != 0 {
			t.Fatalf("%d drift fallbacks before any shift", n)
		}
	}
	if v := metricValue(t, ts, "flowguard_drift_active"); v != 0 {
		t.Fatalf("flowguard_drift_active %v before any shift:\n%s", v, grepMetrics(t, ts, "flowguard_feature_drift_psi"))
	}
	t.Logf("before the shift:\n%s", grepMetrics(t, ts, "flowguard_feature_drift_psi"))
	shiftedAt := time.Now()
	waitUntil(t, 15*time.Second, "drift to be detected", func() bool {
		round(80)
		return metricValue(t, ts, "flowguard_drift_active") == 1
	})
	t.Logf("drift detected %v after the shift; cost_per_request PSI %.2f", time.Since(shiftedAt).Round(time.Millisecond),
		metricValue(t, ts, `flowguard_feature_drift_psi{feature="cost_per_request"}`))
	if n := round(80); n != len(keys) {
		t.Errorf("%d of %d keys fell back with reason drift in the epoch after detection", n, len(keys))
	}
	if v := metricValue(t, ts, `flowguard_ml_fallbacks_total{reason="drift"}`); v < float64(len(keys)) {
		t.Errorf("flowguard_ml_fallbacks_total{reason=\"drift\"} %v, want at least %d", v, len(keys))
	}
	if psi := metricValue(t, ts, `flowguard_feature_drift_psi{feature="cost_per_request"}`); psi <= 0.25 {
		t.Errorf("cost_per_request PSI %v, want past the threshold 0.25", psi)
	}
	if psi := metricValue(t, ts, `flowguard_feature_drift_psi{feature="tier_free"}`); psi > 0.1 {
		t.Errorf("tier_free PSI %v: a feature that did not move", psi)
	}
}

// grepMetrics returns the exposition lines of ts that start with prefix.
func grepMetrics(t testing.TB, ts *testServer, prefix string) string {
	var out []string
	for _, line := range strings.Split(scrape(t, ts.URL), "\n") {
		if strings.HasPrefix(line, prefix) {
			out = append(out, line)
		}
	}
	return strings.Join(out, "\n")
}
