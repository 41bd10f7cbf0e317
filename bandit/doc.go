// Package bandit chooses each key's budget multiplier by linear Thompson
// sampling and logs the probability of every choice.
//
// An ArmSet names the multipliers (x0.25 … x4). A Learner keeps, per arm, the
// sufficient statistics of a Bayesian linear regression of reward on the
// key's context, Bₐ = λI + Σxxᵀ and fₐ = Σ r·x, and turns them into immutable
// Snapshots. Snapshot.Choose draws one score per arm allowed by the key's
// [floor, ceiling] and returns the best arm with its exact propensity,
// computed by one-dimensional quadrature. A late abuse label corrects fₐ
// only (Learner.Correct), which is exact because the statistics are sums.
// Snapshots are versioned and encode with a CRC-32C checksum
// (AppendBinary, DecodeSnapshot) for distribution and warm restarts.
// EpsilonGreedy and Uniform are baselines with exact propensities.
//
// In the request path, stage 2 (once per key per epoch) calls Choose on the
// snapshot held in a Current; the learner (rewards) calls Update and Correct
// and publishes new snapshots.
//
// Concurrency: Snapshots and Current are safe for concurrent use and Choose
// takes no lock; a Learner is not safe for concurrent use. The package does
// no I/O, reads no clock and takes its randomness from the *rand.Rand it is
// given, so the same seed gives the same choices.
package bandit
