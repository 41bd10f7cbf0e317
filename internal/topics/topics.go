// Package topics names flowguard's Kafka topics and the learners' consumer
// group: the defaults that serving, the learner, the configuration, the
// local broker (flowguard dev kafka) and the tools share. Each is spelled
// here once.
//
// It is a leaf package, importing nothing, so that every other package —
// including internal/devkafka, which rewards' tests start — may import it
// without a cycle.
package topics

// Default topic names.
const (
	// Decisions is the decision log: decision and outcome records
	// (rewards.Record), keyed by API key.
	Decisions = "flowguard.decisions"
	// Labels carries abuse labels (rewards.Label), keyed by API key.
	Labels = "flowguard.labels"
	// DLQ receives the labels and records the learner could not apply.
	DLQ = "flowguard.labels.dlq"
	// Models carries model parts; it is compacted.
	Models = "flowguard.models"
	// Audit is the hash-chained audit log of blocks and audited throttles.
	Audit = "flowguard.audit"
	// Regions carries region heartbeats; it has one partition, so that
	// every region reads them in the same order.
	Regions = "flowguard.regions"
)

// LearnerGroup is the learners' default consumer group.
const LearnerGroup = "flowguard-learner"
