// Package limiter is flowguard's deterministic limiter: the line that never
// goes away. Every decision ends here, whether the budget came from the bandit
// or from the tenant's static policy, and every ML failure degrades to it.
//
// The algorithm is GCRA (the generic cell rate algorithm) over integer
// microseconds, so the in-memory store, the Redis Lua script and the
// simulator compute the same answers from one function ([AdmitSpread] is its
// form for arrivals spread over an interval, which the simulator uses for a
// key-epoch). Two stores implement it:
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
// All stores are safe for concurrent use.
package limiter
