// Package serving is flowguard's HTTP service: fasthttp handlers, the wire
// types, the staged decision pipeline, readiness and the metrics registry.
//
// A request is parsed and validated (bad input is a 4xx JSON error, never a
// 5xx or a panic), its tenant's policy resolved, the deny and allow lists
// applied, and the budget enforced by the deterministic limiter, which has
// the last word on every decision. The policy set is swapped atomically on
// reload, so handlers never lock to read it.
//
// A [Server] is safe for concurrent use; its handlers run on fasthttp's
// worker goroutines.
package serving
