package serving

import (
	"fmt"
	"io"
	"math"
	"net/http"
	"testing"
	"time"

	"github.com/devflow/flowguard/internal/testredis"
)

// sharedConfig is two instances' configuration over one Redis.
func sharedConfig(addr string) string {
	return fmt.Sprintf(`
redis:
  addrs: [%q]
  instances: 2
  prefix: "fs:"
ml:
  share_every: 1s
  deadline: 500ms
policies:
  tiers:
    free: {rate: 100000, period: 1s, burst: 100000, ml: on}
`, addr)
}

func explainFeatures(t *testing.T, ts *testServer, key string) map[string]float64 {
	t.Helper()
	resp, b := get(t, ts.URL+"/v1/keys/"+key+"/explain")
	if resp.StatusCode != 200 {
		t.Fatalf("explain %s: %d %s", key, resp.StatusCode, b)
	}
	return decode[explanation](t, b).Features
}

func sendFrom(t *testing.T, ts *testServer, key string, n, ipBase, ips int) {
	t.Helper()
	for i := range n {
		body := fmt.Sprintf(`{"key":%q,"endpoint":"GET /v1/things","client_ip":"198.51.%d.%d"}`, key, ipBase, i%ips)
		if resp, b := post(t, ts.URL+"/v1/decide", body); resp.StatusCode != 200 {
			t.Fatalf("decide: %d %s", resp.StatusCode, b)
		}
	}
}

func TestFeaturesAgreeAcrossInstancesWithin5s(t *testing.T) {
	rs := testredis.Start(t)
	a := startServerOpts(t, mustParse(t, sharedConfig(rs.Addr())), Options{InstanceID: "a"})
	b := startServerOpts(t, mustParse(t, sharedConfig(rs.Addr())), Options{InstanceID: "b"})

	// The key's traffic is split 3:1 over the instances, from disjoint IPs.
	sendFrom(t, a, "k-split", 300, 1, 30)
	sendFrom(t, b, "k-split", 100, 2, 10)
	sent := time.Now()
	var fa, fb map[string]float64
	agree := func() bool {
		fa, fb = explainFeatures(t, a, "k-split"), explainFeatures(t, b, "k-split")
		for _, name := range []string{"rate_10s", "rate_1m", "rate_10m", "rate_1h", "distinct_ips"} {
			x, y := fa[name], fb[name]
			if math.Abs(x-y) > 0.05*max(x, y) {
				return false
			}
		}
		return true
	}
	for !agree() {
		if time.Since(sent) > 5*time.Second {
			t.Fatalf("instances disagree 5 s after the traffic:\na=%v\nb=%v", fa, fb)
		}
		time.Sleep(100 * time.Millisecond)
	}
	t.Logf("agreed after %v: rate_1m a=%.1f b=%.1f, distinct_ips a=%.1f b=%.1f",
		time.Since(sent).Round(10*time.Millisecond), fa["rate_1m"], fb["rate_1m"], fa["distinct_ips"], fb["distinct_ips"])

	// They agree on the whole key, not on either half: one instance that
	// served all of the key's traffic itself sees the same. The merged IP
	// sketch equals the sketch of the union exactly.
	one := startServer(t, mustParse(t, mlPolicies))
	sendFrom(t, one, "k-split", 300, 1, 30)
	sendFrom(t, one, "k-split", 100, 2, 10)
	whole := explainFeatures(t, one, "k-split")
	if got, want := fb["distinct_ips"], whole["distinct_ips"]; got != want {
		t.Errorf("distinct_ips = %v shared, %v when one instance saw every IP", got, want)
	}
	if got, want := fb["rate_1h"], whole["rate_1h"]; math.Abs(got-want) > 0.05*want {
		t.Errorf("rate_1h = %v shared, %v when one instance served everything", got, want)
	}
	if v := metricValue(t, a, "flowguard_features_shared"); v != 1 {
		t.Errorf("flowguard_features_shared = %v, want 1", v)
	}
	if v := metricValue(t, a, "flowguard_features_sync_failures_total"); v != 0 {
		t.Errorf("sync failures = %v with redis up", v)
	}
}

func TestFeaturesLocalOnlyWhileRedisIsDown(t *testing.T) {
	rs := testredis.Start(t)
	ts := startServerOpts(t, mustParse(t, sharedConfig(rs.Addr())), Options{InstanceID: "solo"})
	sendFrom(t, ts, "k-before", 5, 1, 1)
	waitUntil(t, 5*time.Second, "the first exchange", func() bool {
		return metricValue(t, ts, "flowguard_features_shared") == 1
	})

	rs.Stop()
	sendFrom(t, ts, "k-during", 5, 1, 1)
	waitUntil(t, 5*time.Second, "the exchange to fail", func() bool {
		return metricValue(t, ts, "flowguard_features_shared") == 0
	})
	resp, body := get(t, ts.URL+"/readyz")
	if resp.StatusCode != 200 {
		t.Fatalf("readyz during the outage: %d %s (a feature outage must not make the service unready)", resp.StatusCode, body)
	}
	ready := decode[struct {
		Status     string                     `json:"status"`
		Components map[string]componentStatus `json:"components"`
	}](t, body)
	if f := ready.Components["features"]; f.Status != "degraded" {
		t.Errorf("readyz features = %+v, want degraded", f)
	}
	// A key scored now sees local features only, and that is counted.
	before := metricValue(t, ts, `flowguard_features_local_only_total{reason="redis_down"}`)
	if d := decideAs(t, ts, "k-new-during-outage", ""); d.Decision != "allow" {
		t.Errorf("decision during the outage: %+v", d)
	}
	if after := metricValue(t, ts, `flowguard_features_local_only_total{reason="redis_down"}`); after <= max(before, 0) {
		t.Errorf("local_only{redis_down} %v → %v: not counted", before, after)
	}

	rs.Restart()
	waitUntil(t, 10*time.Second, "sharing to resume", func() bool {
		return metricValue(t, ts, "flowguard_features_shared") == 1
	})
	// The keys of the failed rounds were kept and written once Redis came back.
	c := rs.Client()
	waitUntil(t, 5*time.Second, "k-during's record in redis", func() bool {
		n, err := c.HLen(t.Context(), "fs:feat:k-during").Result()
		return err == nil && n == 1
	})
}

func TestFeaturesLocalOnlyWithoutRedis(t *testing.T) {
	ts := startServer(t, mustParse(t, mlPolicies))
	decideAs(t, ts, "k-embedded", "")
	if v := metricValue(t, ts, `flowguard_features_local_only_total{reason="no_redis"}`); v < 1 {
		t.Errorf("local_only{no_redis} = %v, want ≥ 1", v)
	}
	if v := metricValue(t, ts, "flowguard_features_shared"); v != -1 {
		t.Errorf("flowguard_features_shared exported without redis: %v", v)
	}
}

// A record another instance wrote that does not decode is ignored and
// counted; the key's features stay this instance's own.
func TestFeaturesBadRemoteRecordIgnored(t *testing.T) {
	rs := testredis.Start(t)
	ts := startServerOpts(t, mustParse(t, sharedConfig(rs.Addr())), Options{InstanceID: "good"})
	c := rs.Client()
	if err := c.HSet(t.Context(), "fs:feat:k-bad", "evil", "not a record").Err(); err != nil {
		t.Fatal(err)
	}
	sendFrom(t, ts, "k-bad", 10, 1, 1)
	waitUntil(t, 5*time.Second, "the bad record to be counted", func() bool {
		return metricValue(t, ts, "flowguard_features_sync_bad_records_total") >= 1
	})
	if f := explainFeatures(t, ts, "k-bad"); !(f["rate_1h"] > 0) {
		t.Errorf("features after a bad remote record: %v", f)
	}
}

func get(t testing.TB, url string) (*http.Response, []byte) {
	t.Helper()
	resp, err := client.Get(url)
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	b, err := io.ReadAll(resp.Body)
	if err != nil {
		t.Fatal(err)
	}
	return resp, b
}

// waitUntil polls ok until it holds or limit passes.
func waitUntil(t testing.TB, limit time.Duration, what string, ok func() bool) {
	t.Helper()
	deadline := time.Now().Add(limit)
	for !ok() {
		if time.Now().After(deadline) {
			t.Fatalf("timed out after %v waiting for %s", limit, what)
		}
		time.Sleep(50 * time.Millisecond)
	}
}
