// Package policy holds tenant policies: tiers, tenants, per-endpoint
// overrides, and the deny and allow lists of keys. It is stage 2 of the
// request path: [Set.Resolve] turns (tenant, endpoint) into the [Rule] that
// bounds a key's budget — base limit, floor and ceiling multipliers, ML
// mode, auto-block and audit.
//
// A [Set] is compiled once from YAML, validated strictly (every error names
// the file and line), and immutable afterwards: callers swap whole sets on
// reload and read them without locks. The package does no I/O beyond what
// its caller hands it.
package policy
