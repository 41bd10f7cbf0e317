package serving

import (
	"context"
	"fmt"
	"math"
	"strings"
	"testing"
	"time"

	"github.com/devflow/flowguard/internal/config"
	"github.com/devflow/flowguard/internal/devkafka"
	"github.com/devflow/flowguard/internal/testenv"
	"github.com/devflow/flowguard/internal/testredis"
)

// The scaled-out mode on a real Redis Cluster (issue 19 item 2): three
// masters started with redis-server --cluster-enabled and joined by
// redis-cli --cluster create; redis.addrs lists them all. Two serve
// instances share each key's budget through the limiter, exchange
// features, and install the model `flowguard learn` publishes; learn
// checkpoints its partitions. Every key flowguard writes carries a hash
// tag, so a script's keys share a slot.
func TestScaledOutOnRedisCluster(t *testing.T) {
	testenv.SkipShort(t, "starts a 3-node Redis Cluster, Kafka, two serve and learn")
	cl := testredis.StartCluster(t, 3, 0)
	kc, err := devkafka.Start("127.0.0.1:0", devkafka.DefaultTopics())
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(kc.Close)
	addrs := `["` + strings.Join(cl.Addrs(), `", "`) + `"]`
	yaml := fmt.Sprintf(`
kafka:
  brokers: [%q]
  batch_timeout: 10ms
redis:
  addrs: %s
  instances: 2
ml:
  label_action: "off"
  learner: remote
  model_poll: 200ms
  publish_every: 200ms
  share_every: 1s
  deadline: 500ms
policies:
  tiers:
    free: {rate: 100, period: 1m, burst: 100, floor: 1, ceiling: 1, ml: on}
  tenants:
    devco: {tier: free}
`, kc.Addrs()[0], addrs)
	cfg, err := config.Parse("cluster.yaml", []byte(yaml))
	if err != nil {
		t.Fatal(err)
	}
	runLearner(t, cfg)
	a := startML(t, yaml, Options{Seed: 7, InstanceID: "a"}, nil)
	b := startML(t, yaml, Options{Seed: 8, InstanceID: "b"}, nil)

	// Model parts: each instance installs what learn published to the
	// cluster.
	for name, ts := range map[string]*testServer{"a": a, "b": b} {
		waitUntil(t, 30*time.Second, "instance "+name+"'s first model from the learner", func() bool {
			return metricValue(t, ts, "flowguard_model_installs_total") >= 1
		})
	}

	// The limiter: a key's budget of 100 a minute is shared, whichever
	// instance a request reaches.
	allowed := 0
	for i := range 300 {
		ts := a
		if i%2 == 1 {
			ts = b
		}
		resp, body := post(t, ts.URL+"/v1/decide", `{"key":"k_cluster_hot","tenant":"devco","endpoint":"GET /v1/things"}`)
		if resp.StatusCode != 200 {
			t.Fatalf("decide: %d %s", resp.StatusCode, body)
		}
		d := decode[wireDecision](t, body)
		if d.Fallback {
			t.Fatalf("request %d fell back with the cluster up: %s", i, body)
		}
		if d.Decision == "allow" {
			allowed++
		}
	}
	if allowed > 100 || allowed < 90 {
		t.Errorf("%d of 300 requests over two instances allowed, want the shared burst of 100 (at most, less only what a lease holds)", allowed)
	}

	// Features: the key's traffic split 3:1 over the instances, from
	// disjoint addresses; within 5 s both see all of it.
	sendFrom(t, a, "k-cluster-split", 300, 1, 30)
	sendFrom(t, b, "k-cluster-split", 100, 2, 10)
	var fa, fb map[string]float64
	deadline := time.Now().Add(5 * time.Second)
	for {
		fa, fb = explainFeatures(t, a, "k-cluster-split"), explainFeatures(t, b, "k-cluster-split")
		agree := true
		for _, name := range []string{"rate_10s", "rate_1m", "rate_10m", "rate_1h", "distinct_ips"} {
			if x, y := fa[name], fb[name]; math.Abs(x-y) > 0.05*max(x, y) {
				agree = false
			}
		}
		if agree {
			break
		}
		if time.Now().After(deadline) {
			t.Fatalf("the instances disagree 5 s after the traffic:\na=%v\nb=%v", fa, fb)
		}
		time.Sleep(100 * time.Millisecond)
	}
	// The sketch estimates a's 30 addresses alone as about 27 and the 40
	// of both as about 35.
	if fa["distinct_ips"] < 32 {
		t.Errorf("distinct_ips = %v on both, want the estimate of the 40 addresses of both instances", fa["distinct_ips"])
	}
	for name, ts := range map[string]*testServer{"a": a, "b": b} {
		if v := metricValue(t, ts, "flowguard_features_sync_failures_total"); v != 0 {
			t.Errorf("instance %s: %v feature sync failures on the cluster", name, v)
		}
	}

	// Checkpoints: learn stored one per partition it owns.
	rc := cl.Client()
	waitUntil(t, 30*time.Second, "a learner checkpoint in the cluster", func() bool {
		n, err := rc.Exists(context.Background(), "fg:{learner}:ckpt:0").Result()
		return err == nil && n == 1
	})
}
