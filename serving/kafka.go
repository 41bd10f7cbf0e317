package serving

import (
	"context"
	"crypto/tls"
	"fmt"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/segmentio/kafka-go"
	"github.com/segmentio/kafka-go/sasl"
	"github.com/segmentio/kafka-go/sasl/plain"
	"github.com/segmentio/kafka-go/sasl/scram"

	"github.com/devflow/flowguard/internal/config"
	"github.com/devflow/flowguard/pipeline"
	"github.com/devflow/flowguard/rewards"
)

// KafkaTransport returns kafka-go's transport for the configured TLS and
// SASL settings, or nil for kafka-go's default.
func KafkaTransport(k *config.Kafka) (*kafka.Transport, error) {
	if !k.TLS && k.SASL == nil {
		return nil, nil
	}
	t := &kafka.Transport{DialTimeout: 5 * time.Second}
	if k.TLS {
		t.TLS = &tls.Config{MinVersion: tls.VersionTLS12}
	}
	if s := k.SASL; s != nil {
		var m sasl.Mechanism
		var err error
		switch s.Mechanism {
		case "plain":
			m = plain.Mechanism{Username: s.Username, Password: s.Password()}
		case "scram-sha-256":
			m, err = scram.Mechanism(scram.SHA256, s.Username, s.Password())
		case "scram-sha-512":
			m, err = scram.Mechanism(scram.SHA512, s.Username, s.Password())
		}
		if err != nil {
			return nil, fmt.Errorf("kafka sasl: %w", err)
		}
		t.SASL = m
	}
	return t, nil
}

// KafkaDialer returns kafka-go's dialer (readers and consumer groups) for
// the configured TLS and SASL settings, or nil for kafka-go's default.
func KafkaDialer(k *config.Kafka) (*kafka.Dialer, error) {
	t, err := KafkaTransport(k)
	if err != nil || t == nil {
		return nil, err
	}
	return &kafka.Dialer{Timeout: 10 * time.Second, DualStack: true, TLS: t.TLS, SASLMechanism: t.SASL}, nil
}

// kafkaClients returns the transport (writers, clients) and the dialer
// (readers, consumer groups) for the configured TLS and SASL settings.
func kafkaClients(k *config.Kafka) (*kafka.Transport, *kafka.Dialer, error) {
	tr, err := KafkaTransport(k)
	if err != nil {
		return nil, nil, err
	}
	dialer, err := KafkaDialer(k)
	return tr, dialer, err
}

// teeLog sends each record to every log. It reports the record dropped
// only when every log dropped it: an epoch one of them accepted still
// gets its outcome (the others count an orphan).
type teeLog []pipeline.DecisionLog

func (t teeLog) Log(r rewards.Record) bool {
	ok := false
	for _, l := range t {
		ok = l.Log(r) || ok
	}
	return ok
}

// LogWait waits for room in the logs that can wait (the embedded
// learner's queue) and writes to the others as Log does.
func (t teeLog) LogWait(r rewards.Record, deadline time.Time) bool {
	ok := false
	for _, l := range t {
		if w, can := l.(pipeline.WaitingLog); can {
			ok = w.LogWait(r, deadline) || ok
		} else {
			ok = l.Log(r) || ok
		}
	}
	return ok
}

// teeLabels sends labels to every sink; the first error wins.
type teeLabels []labelSink

func (t teeLabels) Send(ctx context.Context, labels []rewards.Label, at time.Time) error {
	for _, s := range t {
		if err := s.Send(ctx, labels, at); err != nil {
			return err
		}
	}
	return nil
}

// startKafka connects the decision log and label intake to Kafka.
func (s *Server) startKafka(k *config.Kafka) error {
	tr, err := KafkaTransport(k)
	if err != nil {
		return err
	}
	s.klog = rewards.NewKafkaLog(rewards.KafkaLogOptions{Brokers: k.Brokers, Topic: k.Topics.Decisions,
		Buffer: s.cfg.ML.LogBuffer, BatchSize: k.BatchSize, BatchTimeout: k.BatchTimeout, Transport: tr})
	s.klabels = rewards.NewKafkaLabels(k.Brokers, k.Topics.Labels, tr)
	s.kaudit = rewards.NewKafkaLog(rewards.KafkaLogOptions{Brokers: k.Brokers, Topic: k.Topics.Audit,
		Buffer: 8192, BatchSize: k.BatchSize, BatchTimeout: k.BatchTimeout, Transport: tr})
	if s.kdialer, err = KafkaDialer(k); err != nil {
		return err
	}
	if l := s.pipe.DecisionLog(); l != nil {
		s.pipe.SetDecisionLog(teeLog{s.klog, l})
	} else {
		s.pipe.SetDecisionLog(s.klog)
	}
	if s.labels != nil {
		s.labels = teeLabels{s.klabels, s.labels} // Kafka first: durable before acknowledged
	} else {
		s.labels = s.klabels
	}
	l := s.klog
	s.metrics.reg.MustRegister(
		prometheus.NewCounterFunc(prometheus.CounterOpts{Name: "flowguard_decision_log_kafka_dropped_total",
			Help: "Decision-log records dropped because the Kafka buffer (ml.log_buffer) was full: Kafka slow or down."},
			func() float64 { return float64(l.Dropped()) }),
		prometheus.NewCounterFunc(prometheus.CounterOpts{Name: "flowguard_decision_log_kafka_failed_total",
			Help: "Decision-log records Kafka refused after retries."},
			func() float64 { return float64(l.Failed()) }),
		prometheus.NewCounterFunc(prometheus.CounterOpts{Name: "flowguard_decision_log_kafka_written_total",
			Help: "Decision-log records written to Kafka."},
			func() float64 { return float64(l.Written()) }),
		prometheus.NewCounterFunc(prometheus.CounterOpts{Name: "flowguard_audit_kafka_dropped_total",
			Help: "Audit records not copied to the Kafka audit topic: its buffer was full or Kafka refused them (the file keeps them)."},
			func() float64 { return float64(s.kaudit.Dropped() + s.kaudit.Failed()) }),
		prometheus.NewCounterFunc(prometheus.CounterOpts{Name: "flowguard_audit_kafka_written_total",
			Help: "Audit records copied to the Kafka audit topic."},
			func() float64 { return float64(s.kaudit.Written()) }),
	)
	return nil
}
