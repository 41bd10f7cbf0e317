package serving

import (
	"context"
	"encoding/json"
	"fmt"
	"net"
	"slices"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/devflow/flowguard/internal/config"
	"github.com/devflow/flowguard/internal/devkafka"
	"github.com/devflow/flowguard/internal/testenv"
	"github.com/devflow/flowguard/internal/teststack"
	"github.com/devflow/flowguard/rewards"
	"github.com/segmentio/kafka-go"
	"github.com/valyala/fasthttp"
)

// remotePolicies: serve with learner: remote, Kafka and Redis; 1 s epochs,
// a learner checkpointing and publishing every 200 ms.
func remotePolicies(brokers, redisAddr string) string {
	return fmt.Sprintf(`
kafka:
  brokers: [%q]
  batch_timeout: 10ms
redis:
  addrs: [%q]
ml:
  # What the learners learn from labels, alone: labels acting on keys would
  # hold the labelled keys at their floor whatever they learned
  # (TestLabelsActOnKeys tests that), and the risk gate would keep keys the
  # risk model does not suspect at ×1 or more (TestRiskGateKeepsBenignKeysAtBase).
  label_action: "off"
  shrink_risk: -1
  learner: remote
  model_poll: 200ms
  publish_every: 200ms
  epoch: 1s
  deadline: 500ms
  exploration: 0.3
policies:
  tiers:
    free: {rate: 100, period: 1s, burst: 100, floor: 0.25, ceiling: 4, ml: on}
  tenants:
    devco: {tier: free}
`, brokers, redisAddr)
}

// remoteStack is serve + learn + Kafka (kfake) + Redis, over real sockets.
type remoteStack struct {
	ts      *testServer
	learner *Learner
	brokers []string
	labels  *kafka.Writer
}

func startRemote(t testing.TB) *remoteStack {
	t.Helper()
	return startRemoteWith(t, remotePolicies)
}

// startRemoteWith starts the stack on the configuration policies returns
// for the brokers and the Redis address.
func startRemoteWith(t testing.TB, policies func(brokers, redisAddr string) string) *remoteStack {
	t.Helper()
	rs, brokers := teststack.Start(t)
	yaml := policies(brokers[0], rs.Addr())
	cfg, err := config.Parse("remote.yaml", []byte(yaml))
	if err != nil {
		t.Fatal(err)
	}
	l := runLearner(t, cfg)
	st := &remoteStack{ts: startML(t, yaml, Options{Seed: 7}, nil), learner: l, brokers: brokers,
		labels: &kafka.Writer{Addr: kafka.TCP(brokers...), Topic: "flowguard.labels", Balancer: &kafka.Murmur2Balancer{},
			BatchTimeout: time.Millisecond, RequiredAcks: kafka.RequireAll}}
	t.Cleanup(func() { st.labels.Close() })
	waitUntil(t, 30*time.Second, "the first model from the learner", func() bool {
		return metricValue(t, st.ts, "flowguard_model_installs_total") >= 1
	})
	return st
}

// runLearner starts `flowguard learn` on cfg until the test ends, with
// opts (Addr defaults to a free loopback port).
func runLearner(t testing.TB, cfg *config.Loaded, opts ...LearnerOptions) *Learner {
	t.Helper()
	o := LearnerOptions{}
	if len(opts) > 0 {
		o = opts[0]
	}
	if o.Addr == "" {
		o.Addr = "127.0.0.1:0"
	}
	l, err := NewLearner(cfg, o)
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan error, 1)
	go func() { done <- l.Run(ctx) }()
	t.Cleanup(func() {
		cancel()
		if err := <-done; err != nil {
			t.Errorf("learner: %v", err)
		}
	})
	return l
}

// epoch sends one epoch of traffic: abusive keys hammer many endpoints
// from many IPs, benign keys make a few payments, then the epoch ends.
func (st *remoteStack) epoch(t testing.TB, e int, bad, good []string) {
	for _, k := range bad {
		for i := range 80 {
			post(t, st.ts.URL+"/v1/decide", fmt.Sprintf(`{"key":%q,"tenant":"devco","endpoint":"GET /v1/items/%d","client_ip":"203.0.%d.%d"}`, k, i%7, e%200, i))
		}
	}
	for _, k := range good {
		for range 5 {
			post(t, st.ts.URL+"/v1/decide", fmt.Sprintf(`{"key":%q,"tenant":"devco","endpoint":"POST /v1/payments","client_ip":"198.51.100.1"}`, k))
		}
	}
	waitEpochsEnd(t, st.ts, append(slices.Clone(bad), good...)...)
}

// produceLabels sends one abusive label per key to flowguard.labels, as a
// fraud system would.
func (st *remoteStack) produceLabels(t testing.TB, keys []string, from time.Time, run int) {
	t.Helper()
	msgs := make([]kafka.Message, len(keys))
	for i, k := range keys {
		v, _ := json.Marshal(rewards.Label{LabelID: fmt.Sprintf("inv-%d-%d", run, i), Key: k, Tenant: "devco", Abusive: true,
			From: from.Add(-time.Minute).UTC(), To: time.Now().UTC(), Source: "chargeback", Severity: 1})
		msgs[i] = kafka.Message{Key: []byte(k), Value: v}
	}
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	if err := st.labels.WriteMessages(ctx, msgs...); err != nil {
		t.Fatal(err)
	}
}

func meanExpected(t testing.TB, ts *testServer, keys []string) float64 {
	s := 0.0
	for _, k := range keys {
		s += expectedMultiplier(t, ts, k)
	}
	return s / float64(len(keys))
}

// The scaled-out learning loop end to end: serve logs decisions and
// outcomes to Kafka, `learn` consumes them with labels that arrive on
// flowguard.labels after a delay, publishes its model to Redis, and serve
// hot-swaps it. Within a few epochs of the labels the abusive keys'
// multiplier drops; the benign keys of the same tenant keep theirs.
func TestRemoteLearnerLowersAbusiveMultipliers(t *testing.T) {
	testenv.SkipShort(t, "starts Kafka, Redis, serve and learn")
	st := startRemote(t)
	bad := []string{"bad-0", "bad-1", "bad-2", "bad-3"}
	good := []string{"good-0", "good-1", "good-2", "good-3"}
	start := time.Now()
	for e := range 4 {
		st.epoch(t, e, bad, good)
	}
	badBefore, goodBefore := meanExpected(t, st.ts, bad), meanExpected(t, st.ts, good)
	st.produceLabels(t, bad, start, 0)
	st.produceLabels(t, bad, start, 0) // resent: no effect
	labelled := time.Now()
	var visible time.Duration
	for e := 4; e < 9; e++ {
		st.epoch(t, e, bad, good)
		if visible == 0 && meanExpected(t, st.ts, bad) <= 0.6*badBefore {
			visible = time.Since(labelled)
		}
	}
	badAfter, goodAfter := meanExpected(t, st.ts, bad), meanExpected(t, st.ts, good)
	t.Logf("expected multiplier: abusive %.2f → %.2f, benign %.2f → %.2f; the drop was visible %v after the labels",
		badBefore, badAfter, goodBefore, goodAfter, visible)
	if badAfter > 0.6*badBefore {
		t.Errorf("abusive keys' multiplier %.2f → %.2f: did not drop by 40%%", badBefore, badAfter)
	}
	// Benign keys stay far above the abusive keys. Their own level is not
	// asserted: Thompson sampling on nine epochs of eight keys moved it
	// between 0.8 and 4 from run to run (CI, under load, saw 2.16
	// → 0.82 with the abusive keys at 0.25). The embedded test,
	// TestLabelsLowerAbusiveMultipliers, holds them to their base budget on
	// more data; this test is about the scaled-out loop carrying labels to
	// serving.
	if goodAfter < 3*badAfter {
		_, b := get(t, st.ts.URL+"/v1/keys/good-0/explain?tenant=devco")
		t.Errorf("benign keys' multiplier %.2f → %.2f (abusive %.2f): the labels of other keys cost them; explain good-0: %s", goodBefore, goodAfter, badAfter, b)
	}
	var applied, dups int64
	for _, p := range st.learner.kl.Stats().Partitions {
		applied += p.Labels
		dups += p.Duplicates
	}
	if applied != int64(len(bad)) || dups != int64(len(bad)) {
		t.Errorf("labels applied %d, duplicates %d; want %d and %d", applied, dups, len(bad), len(bad))
	}
	if !strings.Contains(scrape(t, st.ts.URL), "flowguard_model_parts 4") {
		t.Errorf("serving does not hold the 4 partitions' model parts")
	}
}

// BenchmarkLabelToMultiplier measures, over real sockets, the time from
// labels produced to flowguard.labels to the changed multiplier visible
// on a serving instance (explain's expected multiplier of the labelled
// keys dropping by 40%): the learner's apply, checkpoint and publish
// (every 200 ms here), and serving's poll (every 200 ms). One op is one
// such round trip on a fresh stack, so b.N is 1 at any -benchtime.
func BenchmarkLabelToMultiplier(b *testing.B) {
	var total time.Duration
	for i := range b.N {
		b.StopTimer()
		st := startRemote(b)
		bad := []string{fmt.Sprintf("bad-%d-0", i), fmt.Sprintf("bad-%d-1", i)}
		good := []string{fmt.Sprintf("good-%d-0", i)}
		start := time.Now()
		for e := range 4 {
			st.epoch(b, e, bad, good)
		}
		before := meanExpected(b, st.ts, bad)
		b.StartTimer()
		sent := time.Now()
		st.produceLabels(b, bad, start, i)
		for meanExpected(b, st.ts, bad) > 0.6*before {
			if time.Since(sent) > 60*time.Second {
				b.Fatalf("the labelled keys' multiplier stayed at %.2f for 60 s", meanExpected(b, st.ts, bad))
			}
			time.Sleep(10 * time.Millisecond)
		}
		total += time.Since(sent)
	}
	b.ReportMetric(total.Seconds()/float64(b.N), "s/label-to-multiplier")
}

// BenchmarkDecideKafkaDown is the ML-on decide handler where every call
// starts a key-epoch (so it logs a decision record), with no Kafka, with
// Kafka (kfake) up, and with Kafka unreachable: the request path must not
// notice Kafka's state. Compare the sub-benchmarks' ns/op.
func BenchmarkDecideKafkaDown(b *testing.B) {
	kc, err := devkafka.Start("127.0.0.1:0", devkafka.DefaultTopics())
	if err != nil {
		b.Fatal(err)
	}
	defer kc.Close()
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		b.Fatal(err)
	}
	dead := ln.Addr().String()
	ln.Close()
	const ml = `
ml:
  epoch: 1h
  deadline: 500ms
  log_buffer: 65536
policies:
  tiers:
    free: {rate: 1000, period: 1s, burst: 1000, ml: on}
`
	cases := []struct{ name, yaml string }{
		{"no-kafka", ml},
		{"kafka-up", fmt.Sprintf("kafka:\n  brokers: [%q]\n", kc.Addrs()[0]) + ml},
		{"kafka-down", fmt.Sprintf("kafka:\n  brokers: [%q]\n", dead) + ml},
	}
	for _, c := range cases {
		b.Run(c.name, func(b *testing.B) {
			srv, err := New(mustParse(b, c.yaml), Options{Seed: 1})
			if err != nil {
				b.Fatal(err)
			}
			defer srv.Close()
			h := srv.Handler()
			var ctx fasthttp.RequestCtx
			b.ReportAllocs()
			for i := 0; b.Loop(); i++ {
				ctx.Request.Reset()
				ctx.Response.Reset()
				ctx.Request.Header.SetMethod("POST")
				ctx.Request.SetRequestURI("/v1/decide")
				ctx.Request.SetBody([]byte(`{"key":"k_` + strconv.Itoa(i) + `","endpoint":"GET /v1/items","client_ip":"203.0.113.7"}`))
				h(&ctx)
				if ctx.Response.StatusCode() != 200 {
					b.Fatalf("status %d", ctx.Response.StatusCode())
				}
			}
		})
	}
}
