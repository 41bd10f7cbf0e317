// Package features turns each API key's traffic into the numbers the ML
// layer decides on: streaming per-key features, the one versioned schema of
// the feature vector, and a risk model over it.
//
// In the request path, step 4 calls [Store.Observe] (or
// [Store.ObserveAndVector]) for every decide call; on an epoch-budget cache
// miss, stage 2 takes the key's vector from [Store.Vector], scores it with
// [Risk.Score] and hands both to the bandit. The simulator calls the same
// functions with its virtual clock, so training and serving see the same
// features. [CurrentSchema] names, orders and scales every vector element; each
// is finite and within its feature's bounds (all within [-1, 1]), so a
// linear model can use the vector as it is.
//
// Per key the store keeps exponentially decayed counters (request rates
// with 10 s, 1 min, 10 min and 1 h time constants; the endpoint mix;
// throttled, error and authentication-failure shares; budget used; cost),
// inter-arrival gap statistics, a 64-register HyperLogLog of client IPs,
// the first-seen time and the tenant tier, all in 160 bytes; with its
// index entry a key costs about 230 bytes of heap (measured by
// BenchmarkStoreBytesPerKey). Updates are synchronous, so a burst shows in
// the next vector. [Store.Sweep] drops keys idle for Config.IdleTTL.
// Instances share request counts and IP sketches through [Record]s; see
// [Store.Merge].
//
// The package is pure: every call takes the current time, nothing reads a
// clock, logs, does I/O or starts a goroutine.
//
// Concurrency: a [Store] is safe for concurrent use; keys are spread over
// shards, each with its own mutex, and a call locks one shard. A [Risk]
// model's Score is safe for concurrent use with everything, Learn included;
// Learn is meant for a single learner goroutine.
package features
