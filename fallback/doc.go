// Package fallback is flowguard's deterministic limiter: the line that never
// goes away. Every decision ends here, whether the budget came from the bandit
// or from the tenant's static policy, and every ML failure degrades to it.
//
// The algorithm is GCRA (the generic cell rate algorithm) over integer
// microseconds, so the in-memory store and the Redis Lua script compute
// bit-identical answers. Two stores implement it:
//
//   - [MemoryStore]: sharded, in-process, about 30 bytes per key, idle keys
//     evicted (a key whose theoretical arrival time has passed carries no
//     information, so dropping it changes no decision).
//   - [RedisStore]: one EVALSHA per call against any redis.UniversalClient, so
//     a single node, a Ring or a Cluster all work; keys carry hash tags.
//
// [LeasedStore] sits in front of Redis and serves most decisions from budget
// leased in small chunks, and [Resilient] wraps a remote store with a per-call
// timeout and a circuit breaker, answering from a per-instance share of the
// budget in memory while Redis is down or slow.
//
// Static quotas (seed 004) live here too: [Fit] computes per-endpoint quotas,
// the PERCENTILE_CONT of legitimate users' daily requests over a training
// window, and [Backtest] checks them on the days after it by calling Fit —
// one function for both, so the fit and its backtest cannot drift apart.
// A [UsageSource] is a CSV file, a combined-format access log, or
// PostgreSQL (the percentile computed in SQL).
//
// All stores are safe for concurrent use.
package fallback
