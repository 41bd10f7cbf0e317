package serving

import (
	"context"
	"fmt"
	"net"
	"testing"
	"time"

	"github.com/devflow/flowguard/internal/devkafka"
	"github.com/devflow/flowguard/rewards"
	"github.com/segmentio/kafka-go"
)

func kafkaPolicies(brokers string) string {
	return fmt.Sprintf(`
kafka:
  brokers: [%q]
  batch_timeout: 10ms
ml:
  epoch: 1s
  deadline: 500ms
  log_buffer: 1000
policies:
  tiers:
    free: {rate: 1000, period: 1s, burst: 1000, ml: on}
`, brokers)
}

// readAll reads every record of topic's partitions until quiet.
func readAll(t *testing.T, brokers []string, topic string, partitions int) []kafka.Message {
	t.Helper()
	var out []kafka.Message
	for p := range partitions {
		r := kafka.NewReader(kafka.ReaderConfig{Brokers: brokers, Topic: topic, Partition: p, MaxWait: 50 * time.Millisecond})
		for {
			ctx, cancel := context.WithTimeout(context.Background(), 700*time.Millisecond)
			m, err := r.ReadMessage(ctx)
			cancel()
			if err != nil {
				break
			}
			out = append(out, m)
		}
		r.Close()
	}
	return out
}

// Decisions and epoch outcomes reach flowguard.decisions over the Kafka
// protocol, keyed by API key; a label posted over HTTP reaches
// flowguard.labels before it is acknowledged.
func TestDecisionLogAndLabelsReachKafka(t *testing.T) {
	kc, err := devkafka.Start("127.0.0.1:0", devkafka.DefaultTopics())
	if err != nil {
		t.Fatal(err)
	}
	defer kc.Close()
	ts := startML(t, kafkaPolicies(kc.Addrs()[0]), Options{}, nil)
	for i := range 3 {
		decideAs(t, ts, fmt.Sprintf("k-%d", i), "")
	}
	waitEpochsEnd(t, ts, "k-0", "k-1", "k-2") // the epochs end…
	for i := range 3 {
		decideAs(t, ts, fmt.Sprintf("k-%d", i), "") // …and the next request closes it
	}
	resp, b := post(t, ts.URL+"/v1/labels", `{"label_id":"inv-1","key":"k-0","abusive":true,"from":"2026-11-20T00:00:00Z","to":"2026-11-21T00:00:00Z"}`)
	if resp.StatusCode != 202 {
		t.Fatalf("labels: %d %s", resp.StatusCode, b)
	}
	waitUntil(t, 10*time.Second, "the decision log to flush", func() bool {
		return metricValue(t, ts, "flowguard_decision_log_kafka_written_total") >= 9
	})
	msgs := readAll(t, kc.Addrs(), "flowguard.decisions", 4)
	types := map[string]int{}
	for _, m := range msgs {
		r, err := rewards.ParseRecord(m.Value)
		if err != nil {
			t.Fatalf("a logged record does not parse: %v\n%s", err, m.Value)
		}
		if string(m.Key) != r.Key {
			t.Errorf("message key %q, record key %q", m.Key, r.Key)
		}
		types[r.Type]++
	}
	if types[rewards.TypeDecision] < 6 || types[rewards.TypeOutcome] < 3 {
		t.Errorf("records by type %v, want ≥ 6 decisions and ≥ 3 outcomes", types)
	}
	labels := readAll(t, kc.Addrs(), "flowguard.labels", 4)
	if len(labels) != 1 {
		t.Fatalf("%d labels in the topic, want 1", len(labels))
	}
	if l, err := rewards.ParseLabel(labels[0].Value); err != nil || l.LabelID != "inv-1" {
		t.Errorf("label in the topic: %+v %v", l, err)
	}
}

// With Kafka unreachable, decisions go on and the dropped records are
// counted; labels are refused (503) rather than lost.
func TestKafkaDownNeverSlowsDecisions(t *testing.T) {
	ln, err := net.Listen("tcp", "127.0.0.1:0") // a port with nothing speaking Kafka behind it
	if err != nil {
		t.Fatal(err)
	}
	addr := ln.Addr().String()
	ln.Close()
	ts := startML(t, kafkaPolicies(addr), Options{}, nil)
	for i := range 3000 {
		decideAs(t, ts, fmt.Sprintf("k-%d", i), "")
	}
	// Every record is lost and counted: dropped when the buffer is full,
	// failed when Kafka refused a batch.
	lost := func() float64 {
		return metricValue(t, ts, "flowguard_decision_log_kafka_dropped_total") +
			metricValue(t, ts, "flowguard_decision_log_kafka_failed_total")
	}
	waitUntil(t, 30*time.Second, "the lost records to be counted", func() bool { return lost() >= 3000 })
	if v := metricValue(t, ts, "flowguard_decision_log_kafka_written_total"); v != 0 {
		t.Errorf("written = %v with no Kafka", v)
	}
	resp, b := post(t, ts.URL+"/v1/labels", `{"label_id":"inv-1","key":"k-0","abusive":true,"from":"2026-11-20T00:00:00Z","to":"2026-11-21T00:00:00Z"}`)
	if resp.StatusCode != 503 {
		t.Errorf("a label with Kafka down: %d %s, want 503 so the sender retries", resp.StatusCode, b)
	}
}

// With Kafka down, /readyz shows it: the kafka component is degraded, and
// the instance stays ready, since decisions never wait on Kafka.
func TestReadyzShowsKafka(t *testing.T) {
	kc, err := devkafka.Start("127.0.0.1:0", devkafka.DefaultTopics())
	if err != nil {
		t.Fatal(err)
	}
	ts := startML(t, kafkaPolicies(kc.Addrs()[0]), Options{}, nil)
	ready := func() (int, map[string]componentStatus) {
		resp, err := client.Get(ts.URL + "/readyz")
		if err != nil {
			t.Fatal(err)
		}
		var body struct {
			Components map[string]componentStatus `json:"components"`
		}
		if err := decodeBody(resp, &body); err != nil {
			t.Fatal(err)
		}
		return resp.StatusCode, body.Components
	}
	if code, c := ready(); code != 200 || c["kafka"].Status != "ok" {
		t.Fatalf("Kafka up: %d %+v, want ready with kafka ok", code, c)
	}
	kc.Close()
	waitUntil(t, 30*time.Second, "the kafka component to degrade", func() bool {
		for i := range 200 {
			post(t, ts.URL+"/v1/decide", fmt.Sprintf(`{"key":"k_ready_%d"}`, i))
		}
		code, c := ready()
		return code == 200 && c["kafka"].Status == "degraded"
	})
}
