package devkafka

import (
	"context"
	"testing"
	"time"

	"github.com/segmentio/kafka-go"
)

// kafka-go, the client flowguard uses, sees the topics and can produce and
// consume through the local broker.
func TestTopicsOverTheWireProtocol(t *testing.T) {
	c, err := Start("127.0.0.1:0", DefaultTopics())
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	conn, err := kafka.Dial("tcp", c.Addrs()[0])
	if err != nil {
		t.Fatal(err)
	}
	defer conn.Close()
	parts, err := conn.ReadPartitions()
	if err != nil {
		t.Fatal(err)
	}
	n := map[string]int{}
	for _, p := range parts {
		n[p.Topic]++
	}
	for _, topic := range DefaultTopics() {
		if n[topic.Name] != int(topic.Partitions) {
			t.Errorf("%s has %d partitions, want %d", topic.Name, n[topic.Name], topic.Partitions)
		}
	}
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	w := &kafka.Writer{Addr: kafka.TCP(c.Addrs()...), Topic: "flowguard.labels", Balancer: &kafka.Murmur2Balancer{}}
	defer w.Close()
	if err := w.WriteMessages(ctx, kafka.Message{Key: []byte("k1"), Value: []byte(`{"label_id":"x"}`)}); err != nil {
		t.Fatal(err)
	}
	var got int
	for p := range 4 {
		r := kafka.NewReader(kafka.ReaderConfig{Brokers: c.Addrs(), Topic: "flowguard.labels", Partition: p, MaxWait: 50 * time.Millisecond})
		rctx, rcancel := context.WithTimeout(ctx, 500*time.Millisecond)
		if m, err := r.ReadMessage(rctx); err == nil && string(m.Key) == "k1" {
			got++
		}
		rcancel()
		r.Close()
	}
	if got != 1 {
		t.Errorf("the label was read from %d partitions, want exactly 1", got)
	}
}

func TestStartRejectsBadAddress(t *testing.T) {
	for _, addr := range []string{"nonsense", "127.0.0.1:99999"} {
		if _, err := Start(addr, nil); err == nil {
			t.Errorf("Start(%q) succeeded", addr)
		}
	}
}
