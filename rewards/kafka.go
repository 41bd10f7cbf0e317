package rewards

import (
	"context"
	"encoding/json"
	"sync"
	"sync/atomic"
	"time"

	"github.com/segmentio/kafka-go"
)

// KafkaLog writes decision-log records to Kafka (flowguard.decisions),
// keyed by API key with the murmur2 partitioner (Kafka's Java default), so
// that a key's decisions, outcomes and labels share a partition number.
//
// Log never blocks the request path: records go into a bounded buffer that
// one goroutine drains in batches through kafka-go's Writer. When Kafka is
// slow or down and the buffer is full, records are dropped and counted
// (Dropped) — not spilled to disk: a lost decision costs the learner one
// example, and an outcome whose decision was dropped is counted as an
// orphan by the learner. Safe for concurrent use.
type KafkaLog struct {
	w       *kafka.Writer
	ch      chan logItem
	batch   int
	dropped atomic.Int64
	written atomic.Int64
	failed  atomic.Int64
	lastErr atomic.Pointer[string]
	done    chan struct{}
	once    sync.Once
}

// KafkaLogOptions configures NewKafkaLog.
type KafkaLogOptions struct {
	Brokers []string
	Topic   string
	// Buffer bounds the records waiting to be written. Default: 65536.
	Buffer int
	// BatchSize and BatchTimeout bound one write. Defaults: 1000, 100ms.
	BatchSize    int
	BatchTimeout time.Duration
	// Transport carries TLS and SASL settings. Default: kafka-go's.
	Transport *kafka.Transport
}

// NewKafkaLog starts the writer goroutine. Close flushes and stops it.
func NewKafkaLog(o KafkaLogOptions) *KafkaLog {
	if o.Buffer <= 0 {
		o.Buffer = 65536
	}
	if o.BatchSize <= 0 {
		o.BatchSize = 1000
	}
	if o.BatchTimeout <= 0 {
		o.BatchTimeout = 100 * time.Millisecond
	}
	w := &kafka.Writer{Addr: kafka.TCP(o.Brokers...), Topic: o.Topic, Balancer: &kafka.Murmur2Balancer{},
		BatchSize: o.BatchSize, BatchTimeout: o.BatchTimeout, RequiredAcks: kafka.RequireAll,
		WriteTimeout: 5 * time.Second, MaxAttempts: 3, AllowAutoTopicCreation: false}
	if o.Transport != nil {
		w.Transport = o.Transport
	}
	l := &KafkaLog{w: w, ch: make(chan logItem, o.Buffer), batch: o.BatchSize, done: make(chan struct{})}
	go l.run()
	return l
}

// logItem is a record to encode on the writer's goroutine (off the
// request path), or a message already encoded.
type logItem struct {
	rec        Record
	key, value []byte
}

// Log queues r, or drops and counts it when the buffer is full.
func (l *KafkaLog) Log(r Record) bool { return l.queue(logItem{rec: r}) }

// LogJSON queues a message already encoded, such as an audit record, on
// the same terms as Log.
func (l *KafkaLog) LogJSON(key string, value []byte) bool {
	return l.queue(logItem{key: []byte(key), value: value})
}

func (l *KafkaLog) queue(it logItem) bool {
	select {
	case l.ch <- it:
		return true
	default:
		l.dropped.Add(1)
		return false
	}
}

func (l *KafkaLog) run() {
	defer close(l.done)
	msgs := make([]kafka.Message, 0, l.batch)
	for r := range l.ch {
		msgs = append(msgs[:0], message(r))
	fill:
		for len(msgs) < l.batch {
			select {
			case r, ok := <-l.ch:
				if !ok {
					break fill
				}
				msgs = append(msgs, message(r))
			default:
				break fill
			}
		}
		ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
		err := l.w.WriteMessages(ctx, msgs...)
		cancel()
		if err != nil {
			l.failed.Add(int64(len(msgs)))
			msg := err.Error()
			l.lastErr.Store(&msg)
			continue
		}
		l.written.Add(int64(len(msgs)))
		l.lastErr.Store(nil)
	}
}

func message(it logItem) kafka.Message {
	if it.value != nil {
		return kafka.Message{Key: it.key, Value: it.value}
	}
	v, _ := json.Marshal(it.rec) // a Record always marshals
	return kafka.Message{Key: []byte(it.rec.Key), Value: v}
}

// Dropped counts records dropped because the buffer was full; Failed those
// Kafka refused after retries; Written those written.
func (l *KafkaLog) Dropped() int64 { return l.dropped.Load() }
func (l *KafkaLog) Failed() int64  { return l.failed.Load() }
func (l *KafkaLog) Written() int64 { return l.written.Load() }

// Len returns the records waiting.
func (l *KafkaLog) Len() int { return len(l.ch) }

// Cap is the buffer's size (log_buffer).
func (l *KafkaLog) Cap() int { return cap(l.ch) }

// LastError returns the last write error, or "" after a success.
func (l *KafkaLog) LastError() string {
	if e := l.lastErr.Load(); e != nil {
		return *e
	}
	return ""
}

// Close writes what is buffered (within ctx) and stops. Log must not be
// called after Close.
func (l *KafkaLog) Close(ctx context.Context) error {
	l.once.Do(func() { close(l.ch) })
	select {
	case <-l.done:
	case <-ctx.Done():
	}
	return l.w.Close()
}

// KafkaLabels sends labels to the labels topic, synchronously: a label
// is only acknowledged to its sender once Kafka has it.
type KafkaLabels struct{ w *kafka.Writer }

// NewKafkaLabels returns a label producer.
func NewKafkaLabels(brokers []string, topic string, transport *kafka.Transport) *KafkaLabels {
	w := &kafka.Writer{Addr: kafka.TCP(brokers...), Topic: topic, Balancer: &kafka.Murmur2Balancer{},
		RequiredAcks: kafka.RequireAll, WriteTimeout: 5 * time.Second, BatchTimeout: time.Millisecond}
	if transport != nil {
		w.Transport = transport
	}
	return &KafkaLabels{w: w}
}

// Send writes labels, keyed by API key; the error is Kafka's.
func (k *KafkaLabels) Send(ctx context.Context, labels []Label, _ time.Time) error {
	msgs := make([]kafka.Message, len(labels))
	for i, l := range labels {
		v, err := json.Marshal(l)
		if err != nil {
			return err
		}
		msgs[i] = kafka.Message{Key: []byte(l.Key), Value: v}
	}
	return k.w.WriteMessages(ctx, msgs...)
}

// Close releases the producer.
func (k *KafkaLabels) Close() error { return k.w.Close() }
