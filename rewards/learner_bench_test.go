package rewards

import (
	"context"
	"encoding/json"
	"fmt"
	"log/slog"
	"strconv"
	"testing"
	"time"

	"github.com/devflow/flowguard/internal/teststack"
	"github.com/segmentio/kafka-go"
)

// BenchmarkLearnerLabelIngest measures one learner consuming labels from
// Kafka (kfake, over the wire) and applying them, with checkpoints to a
// real redis-server every second: one op is 100,000 labels, read from the
// start of the topic by a new consumer group. Reported: labels/s.
func BenchmarkLearnerLabelIngest(b *testing.B) {
	const n = 100_000
	rs, brokers := teststack.Start(b)
	w := &kafka.Writer{Addr: kafka.TCP(brokers...), Topic: "flowguard.labels", Balancer: &kafka.Murmur2Balancer{},
		BatchSize: 5000, BatchBytes: 16 << 20, BatchTimeout: time.Millisecond}
	msgs := make([]kafka.Message, 0, 5000)
	at := t0.Add(time.Hour)
	for i := range n {
		key := "k_live_" + strconv.Itoa(i%20000)
		v, _ := json.Marshal(Label{LabelID: fmt.Sprintf("inv-%07d", i), Key: key, Tenant: "acme", Abusive: i%5 != 0,
			From: t0, To: at, Source: "chargeback", Severity: 1})
		msgs = append(msgs, kafka.Message{Key: []byte(key), Value: v, Time: at})
		if len(msgs) == cap(msgs) {
			if err := w.WriteMessages(context.Background(), msgs...); err != nil {
				b.Fatal(err)
			}
			msgs = msgs[:0]
		}
	}
	w.Close()
	b.ResetTimer()
	for i := range b.N {
		// The clock starts at the first label applied: joining the group
		// is not ingest.
		b.StopTimer()
		l := newBenchLearner(b, brokers, rs.Addr(), fmt.Sprintf("bench%d:", i), fmt.Sprintf("bench-%d", i))
		ctx, cancel := context.WithCancel(context.Background())
		done := make(chan error, 1)
		go func() { done <- l.Run(ctx) }()
		for l.Stats().Messages == 0 {
			time.Sleep(time.Millisecond)
		}
		b.StartTimer()
		for l.Stats().Messages < n {
			time.Sleep(time.Millisecond)
		}
		b.StopTimer()
		cancel()
		if err := <-done; err != nil {
			b.Fatal(err)
		}
		b.StartTimer()
	}
	b.ReportMetric(float64(n)*float64(b.N)/b.Elapsed().Seconds(), "labels/s")
}

func newBenchLearner(b *testing.B, brokers []string, redisAddr, prefix, group string) *KafkaLearner {
	l := newTestLearner(b, brokers, redisAddr, prefix, group)
	l.o.CheckpointEvery = time.Second
	l.o.Logger = slog.New(slog.DiscardHandler)
	return l
}
