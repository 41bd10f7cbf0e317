package serving

import (
	"context"
	"sync"
	"time"

	"github.com/devflow/flowguard/internal/config"
	"github.com/devflow/flowguard/rewards"
	"github.com/segmentio/kafka-go"
)

// followLabels acts on the labels produced straight to the labels topic
// (by fraud tooling, kcat, another instance) as POST /v1/labels does: each
// holds or releases its key (ml.label_action) and counts against its
// experiment variant, so that every instance sees every label, not only the
// ones posted to it. Holds live in memory: after a restart an instance
// holds only the keys labelled since. Each instance
// reads every partition from its end when it starts, outside any consumer
// group; label ids deduplicate the labels it posted itself. It returns
// when ctx is done.
func (s *Server) followLabels(ctx context.Context, k *config.Kafka) {
	tr, _, err := kafkaClients(k)
	if err != nil {
		s.log.Error("following the labels topic", "err", err)
		return
	}
	c := &kafka.Client{Addr: kafka.TCP(k.Brokers...), Timeout: 10 * time.Second}
	if tr != nil {
		c.Transport = tr
	}
	var parts []int
	for parts == nil {
		md, err := c.Metadata(ctx, &kafka.MetadataRequest{Topics: []string{k.Topics.Labels}})
		if err == nil && len(md.Topics) == 1 && md.Topics[0].Error == nil {
			parts = []int{}
			for _, p := range md.Topics[0].Partitions {
				parts = append(parts, p.ID)
			}
			break
		}
		select {
		case <-ctx.Done():
			return
		case <-time.After(5 * time.Second):
		}
	}
	var wg sync.WaitGroup
	for _, p := range parts {
		wg.Add(1)
		go func() {
			defer wg.Done()
			s.followLabelPartition(ctx, k, p)
		}()
	}
	wg.Wait()
}

func (s *Server) followLabelPartition(ctx context.Context, k *config.Kafka, p int) {
	r := kafka.NewReader(kafka.ReaderConfig{Brokers: k.Brokers, Topic: k.Topics.Labels, Partition: p,
		Dialer: s.kdialer, MaxWait: 500 * time.Millisecond})
	defer r.Close()
	if err := r.SetOffset(kafka.LastOffset); err != nil {
		s.log.Error("following the labels topic", "partition", p, "err", err)
		return
	}
	for {
		m, err := r.ReadMessage(ctx)
		if ctx.Err() != nil {
			return
		}
		if err != nil {
			s.log.Warn("reading the labels topic", "partition", p, "err", err)
			continue
		}
		if l, err := rewards.ParseLabel(m.Value); err == nil {
			s.applyLabels([]rewards.Label{l})
		} // a malformed label is the learner's to send to the DLQ
	}
}
