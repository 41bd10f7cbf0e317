package config

import (
	"os"
	"time"

	"github.com/devflow/flowguard/internal/topics"
	"github.com/devflow/flowguard/internal/yamlx"
)

// Kafka connects serving and the learner to Kafka (scaled-out mode).
// Without it, the embedded default runs the learner in-process.
type Kafka struct {
	// Brokers are the seed brokers, host:port. Required.
	Brokers []string `yaml:"brokers"`
	// Topics names the topics. Defaults: DefaultTopics().
	Topics Topics `yaml:"topics"`
	// Group is the learners' consumer group. Default: flowguard-learner
	// (topics.LearnerGroup).
	Group string `yaml:"group"`
	// BatchSize and BatchTimeout batch the decision log's writes.
	// Defaults: 1000 and 100ms.
	BatchSize    int           `yaml:"batch_size"`
	BatchTimeout time.Duration `yaml:"batch_timeout"`
	// TLS turns on TLS to the brokers, verified against the system roots.
	TLS bool `yaml:"tls"`
	// SASL authenticates to the brokers: mechanism plain, scram-sha-256 or
	// scram-sha-512; the password is read from the environment variable
	// PasswordEnv, never from the file. Default: none.
	SASL *SASL `yaml:"sasl"`
}

// Topics are the Kafka topics; the defaults are package topics' names.
type Topics struct {
	Decisions string `yaml:"decisions"` // Default: flowguard.decisions
	Labels    string `yaml:"labels"`    // Default: flowguard.labels
	DLQ       string `yaml:"dlq"`       // Default: flowguard.labels.dlq
	Models    string `yaml:"models"`    // Default: flowguard.models (compacted)
	Audit     string `yaml:"audit"`     // Default: flowguard.audit
}

// SASL is the brokers' authentication.
type SASL struct {
	Mechanism   string `yaml:"mechanism"`
	Username    string `yaml:"username"`
	PasswordEnv string `yaml:"password_env"`
}

// Password returns the SASL password from the environment.
func (s *SASL) Password() string { return os.Getenv(s.PasswordEnv) }

// DefaultTopics returns the default topic names (package topics).
func DefaultTopics() Topics {
	return Topics{Decisions: topics.Decisions, Labels: topics.Labels, DLQ: topics.DLQ,
		Models: topics.Models, Audit: topics.Audit}
}

func (k *Kafka) defaults() {
	d := DefaultTopics()
	for _, f := range []struct {
		v *string
		d string
	}{{&k.Topics.Decisions, d.Decisions}, {&k.Topics.Labels, d.Labels},
		{&k.Topics.DLQ, d.DLQ}, {&k.Topics.Models, d.Models}, {&k.Topics.Audit, d.Audit}} {
		if *f.v == "" {
			*f.v = f.d
		}
	}
	if k.Group == "" {
		k.Group = topics.LearnerGroup
	}
	if k.BatchSize == 0 {
		k.BatchSize = 1000
	}
	if k.BatchTimeout == 0 {
		k.BatchTimeout = 100 * time.Millisecond
	}
}

func (k *Kafka) validate(d *yamlx.Doc) yamlx.Errors {
	var errs yamlx.Errors
	bad := func(field, format string, args ...any) {
		errs = append(errs, d.Errorf([]string{"kafka", field}, format, args...))
	}
	if len(k.Brokers) == 0 {
		bad("brokers", "at least one broker is required")
	}
	if k.BatchSize < 1 || k.BatchSize > 100000 {
		bad("batch_size", "%d must be between 1 and 100000", k.BatchSize)
	}
	if k.BatchTimeout < time.Millisecond || k.BatchTimeout > 10*time.Second {
		bad("batch_timeout", "%s must be between 1ms and 10s", k.BatchTimeout)
	}
	if s := k.SASL; s != nil {
		switch s.Mechanism {
		case "plain", "scram-sha-256", "scram-sha-512":
		default:
			bad("sasl", "mechanism %q, want plain, scram-sha-256 or scram-sha-512", s.Mechanism)
		}
		if s.PasswordEnv == "" {
			bad("sasl", "password_env is required: the password comes from the environment")
		}
	}
	return errs
}
