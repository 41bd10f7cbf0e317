// Package rewards turns late abuse labels into rewards for the bandit.
//
// Serving logs every key-epoch decision (its context, arm and propensity)
// and, when the epoch closes, its outcome: requests served, throttled and
// blocked. The learner joins the two. At the outcome it updates the bandit
// with a provisional reward that assumes the key is benign (the default
// reward of Azure Personalizer's reward wait). When a label arrives — hours
// or days later — it applies the exact correction: the bandit's statistics
// are linear in the reward, so the difference between the labelled and the
// provisional reward, summed over the key's decisions per arm and hour, is
// added with bandit.Learner.CorrectSum. After the attribution window
// (default 24 h) a record is final and dropped. ModeWait learns only then,
// for comparison.
//
// The logic (Reward, Label, Record, Partition, Learner) is pure: no I/O,
// no clock — time is the event time of the input, so the same input gives
// the same model, byte for byte, however often the process restarts. The
// Kafka adapters (kafka.go) and the in-memory queue (queue.go) are the
// edges. A Partition is not safe for concurrent use; the Learner
// serialises access to each.
//
// Where it sits: after stage 3 of the request path (DESIGN.md, "Learning
// loop"); its output, a model part per partition, goes back to serving.
package rewards
