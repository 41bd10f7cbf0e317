// Package policy holds tenant policies: tiers, tenants, per-endpoint
// overrides, and the deny and allow lists of keys. It is stage 2 of the
// request path: [Set.Resolve] turns (tenant, endpoint) into the [Rule] that
// bounds a key's budget — base limit, floor and ceiling multipliers, ML
// mode, auto-block and audit.
//
// Tiers are the policy file's: their names match case-insensitively, and
// each has a [Class] (enterprise or standard, by default enterprise for a
// tier named enterprise). Callers read a rule's [Rule.Enterprise], or
// [Set.Tier] when they have only a tier's name, and never compare names.
//
// A [Set] is compiled once from YAML, validated strictly (every error names
// the file and line), and immutable afterwards: callers swap whole sets on
// reload and read them without locks. The package does no I/O beyond what
// its caller hands it.
package policy
