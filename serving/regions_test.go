package serving

import (
	"context"
	"fmt"
	"math"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/devflow/flowguard/internal/devkafka"
	"github.com/devflow/flowguard/internal/testenv"
	"github.com/devflow/flowguard/internal/testredis"
	"github.com/devflow/flowguard/pipeline"
)

// regionYAML is one region of three: its own Redis, the shared Kafka,
// heartbeats every 200 ms, dead after 1 s. No ML: budgets are
// deterministic, so admissions can be counted against them.
func regionYAML(region, brokers, redisAddr string, peers []string) string {
	return fmt.Sprintf(`
server: {region: %s}
kafka: {brokers: [%q], batch_timeout: 10ms}
redis: {addrs: [%q], lease_window: 0s, timeout: 50ms}
regions: {peers: [%s], heartbeat_every: 200ms, dead_after: 1s, min_share: 0.05, window: 1s}
policies:
  tiers:
    free: {rate: 100, period: 1s, burst: 100}
`, region, brokers, redisAddr, strings.Join(peers, ", "))
}

type regionRig struct {
	names []string
	redis []*testredis.Server
	srv   []*testServer
	kafka *devkafka.Cluster
}

func startRegions(t *testing.T) *regionRig {
	t.Helper()
	kc, err := devkafka.Start("127.0.0.1:0", devkafka.DefaultTopics())
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(kc.Close)
	rig := &regionRig{names: []string{"us-east-1", "eu-west-1", "ap-south-1"}, kafka: kc}
	for i, name := range rig.names {
		var peers []string
		for j, p := range rig.names {
			if j != i {
				peers = append(peers, p)
			}
		}
		rs := testredis.Start(t)
		rig.redis = append(rig.redis, rs)
		rig.srv = append(rig.srv, startServerOpts(t, mustParse(t, regionYAML(name, kc.Addrs()[0], rs.Addr(), peers)),
			Options{InstanceID: name + "-0"}))
	}
	for i, ts := range rig.srv {
		waitUntil(t, 20*time.Second, rig.names[i]+" hears all three regions", func() bool {
			tab := ts.regions.table.Load()
			return tab.Live == 3
		})
	}
	return rig
}

// drive sends key's requests to region i at rate per second until stop,
// counting what was admitted.
func drive(t *testing.T, ts *testServer, key string, rate int, stop <-chan struct{}, admitted, errs *atomic.Int64, wg *sync.WaitGroup) {
	wg.Add(1)
	go func() {
		defer wg.Done()
		tick := time.NewTicker(time.Second / time.Duration(rate))
		defer tick.Stop()
		body := fmt.Sprintf(`{"key":%q,"endpoint":"GET /v1/things"}`, key)
		for {
			select {
			case <-stop:
				return
			case <-tick.C:
			}
			resp, err := client.Post(ts.URL+"/v1/decide", "application/json", strings.NewReader(body))
			if err != nil {
				errs.Add(1)
				continue
			}
			b := make([]byte, 4096)
			n, _ := resp.Body.Read(b)
			resp.Body.Close()
			if resp.StatusCode >= 500 {
				errs.Add(1)
			}
			if strings.Contains(string(b[:n]), `"decision":"allow"`) {
				admitted.Add(1)
			}
		}
	}()
}

// Three regions, each with its own Redis, share one key's budget by
// traffic share through heartbeats on Kafka; when one region dies the
// other two take its share over within dead_after and a tick; the total
// admitted stays within the documented bound.
func TestRegionsShareBudgetAndTakeOverDeadRegion(t *testing.T) {
	testenv.SkipShort(t, "starts Kafka and three redis-servers")
	rig := startRegions(t)
	stop := make(chan struct{})
	var wg sync.WaitGroup
	var admitted, errs atomic.Int64
	// 60/30/10 of 300 req/s: three times the budget of 100/s.
	for i, rate := range []int{180, 90, 30} {
		drive(t, rig.srv[i], "k_hot", rate, stop, &admitted, &errs, &wg)
	}
	// Heartbeat ticks are the region split's clock: wait 10 of them (2 s)
	// for the counts' window (1 s) to fill and the shares to settle, then
	// count what is admitted over 15 more (3 s).
	tick := func() int64 { return rig.srv[0].regions.table.Load().Tick }
	waitTicks := func(n int64, what string) {
		from := tick()
		waitUntil(t, 20*time.Second, what, func() bool { return tick() >= from+n })
	}
	waitTicks(10, "the shares to settle")
	start, before := time.Now(), admitted.Load()
	waitTicks(15, "15 heartbeat ticks of traffic")
	got, window := admitted.Load()-before, time.Since(start)
	shares := make([]float64, 3)
	sum := 0.0
	for i, ts := range rig.srv {
		shares[i] = ts.regions.share("k_hot")
		sum += shares[i]
	}
	t.Logf("shares %.3f %.3f %.3f (sum %.3f); admitted %d in %v", shares[0], shares[1], shares[2], sum, got, window)
	if math.Abs(sum-1) > 0.03 {
		t.Errorf("shares sum to %.3f, want 1", sum)
	}
	// The traffic-weighted shares: 0.05 + 0.85·(0.6, 0.3, 0.1).
	for i, want := range []float64{0.56, 0.305, 0.135} {
		if math.Abs(shares[i]-want) > 0.05 {
			t.Errorf("%s: share %.3f, want about %.3f", rig.names[i], shares[i], want)
		}
	}
	bound := 100*window.Seconds() + 3*100 + 3
	if float64(got) > bound {
		t.Errorf("admitted %d in %v, above the bound (1+0)·Rate·W + R·Burst + R = %.0f", got, window, bound)
	}

	// ap-south-1 dies: its server and its Redis.
	dead := rig.srv[2]
	lastTick := dead.regions.table.Load().Tick
	dead.stop(t)
	rig.redis[2].Stop()
	died := time.Now()
	var tookOver [2]int64
	for i := range 2 {
		ts := rig.srv[i]
		waitUntil(t, 20*time.Second, rig.names[i]+" takes the dead region's share over", func() bool {
			tab := ts.regions.table.Load()
			if tab.Live == 2 {
				tookOver[i] = tab.Tick
				return true
			}
			return false
		})
	}
	wall := time.Since(died)
	a, b := rig.srv[0].regions.share("k_hot"), rig.srv[1].regions.share("k_hot")
	deadTicks := rig.srv[0].regions.deadTicks
	t.Logf("takeover after %v (ticks %d, %d after the dead region's last %d); shares now %.3f + %.3f", wall,
		tookOver[0]-lastTick, tookOver[1]-lastTick, lastTick, a, b)
	for i, k := range tookOver {
		// The last heartbeat (tick lastTick or lastTick+1) keeps the region
		// live for deadTicks ticks; the next recomputation drops it.
		if k-lastTick > deadTicks+2 {
			t.Errorf("%s took over %d ticks after the last heartbeat, want at most dead_after/every + 2 = %d",
				rig.names[i], k-lastTick, deadTicks+2)
		}
	}
	if math.Abs(a+b-1) > 0.03 {
		t.Errorf("after the takeover the two live regions' shares sum to %.3f, want 1", a+b)
	}
	close(stop)
	wg.Wait()
	if e := errs.Load(); e > 0 {
		// Requests in flight to the stopped region fail; none may be a 5xx
		// from a live region.
		t.Logf("%d requests failed (sent to the region being stopped)", e)
	}
}

// A region whose Redis the learners do not write to follows the models
// topic (ml.model_source: kafka). When Kafka goes away it keeps deciding
// on the last model; once that is older than ml.max_model_age, decisions
// get the deterministic budget (stale_model).
func TestRegionModelsFromKafkaThenStaleWithoutKafka(t *testing.T) {
	testenv.SkipShort(t, "starts Kafka, Redis, serve and learn")
	rs := testredis.Start(t)
	kc, err := devkafka.Start("127.0.0.1:0", devkafka.DefaultTopics())
	if err != nil {
		t.Fatal(err)
	}
	closed := false
	t.Cleanup(func() {
		if !closed {
			kc.Close()
		}
	})
	learnerYAML := remotePolicies(kc.Addrs()[0], rs.Addr())
	l, err := NewLearner(mustParse(t, learnerYAML), LearnerOptions{Addr: "127.0.0.1:0"})
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan error, 1)
	go func() { done <- l.Run(ctx) }()
	t.Cleanup(func() { cancel(); <-done })

	// This region has a Redis of its own (another one), which no learner
	// writes: models must come from the topic.
	own := testredis.Start(t)
	yaml := strings.Replace(remotePolicies(kc.Addrs()[0], own.Addr()), "  learner: remote\n",
		"  learner: remote\n  model_source: kafka\n  max_model_age: 3s\n", 1)
	ts := startML(t, yaml, Options{Seed: 3}, nil)
	waitUntil(t, 30*time.Second, "a model from the models topic", func() bool {
		return metricValue(t, ts, "flowguard_model_installs_total") >= 1
	})
	d := decideAs(t, ts, "k_region_1", "devco")
	if d.ModelVersion == "" || d.Reason == pipeline.ReasonNoModel || d.Reason == pipeline.ReasonStaleModel {
		t.Fatalf("with a fresh model: fallback %v (%s), model %q", d.Fallback, d.Reason, d.ModelVersion)
	}
	kc.Close() // Kafka is gone: no more parts, no more heartbeats of the learner
	closed = true
	cut := time.Now()
	d = decideAs(t, ts, "k_region_2", "devco")
	if d.ModelVersion == "" || d.Reason == pipeline.ReasonStaleModel {
		t.Errorf("right after Kafka went away: fallback %s, want the last model", d.Reason)
	}
	var staleAfter time.Duration
	waitUntil(t, 30*time.Second, "decisions falling back as stale_model", func() bool {
		d = decideAs(t, ts, fmt.Sprintf("k_region_%d", time.Now().UnixNano()), "devco")
		if d.Fallback && d.Reason == pipeline.ReasonStaleModel {
			staleAfter = time.Since(cut)
			return true
		}
		switch d.Reason {
		case pipeline.ReasonNoModel, pipeline.ReasonMLDeadline, pipeline.ReasonMLError, pipeline.ReasonFeatureStoreDown:
			// The model's fallbacks; a limiter fallback (a slow Redis call
			// on a loaded machine) says nothing about the model.
			t.Fatalf("fallback %s before the model is stale", d.Reason)
		}
		return false
	})
	t.Logf("stale_model %v after Kafka went away (max_model_age 3s, counted from the last part's publication)", staleAfter)
	if staleAfter > 3*time.Second+2*time.Second {
		t.Errorf("stale after %v: later than max_model_age plus two polls", staleAfter)
	}
	if d.Decision != "allow" {
		t.Errorf("a stale model's deterministic budget should admit a first request, got %s", d.Decision)
	}
}
