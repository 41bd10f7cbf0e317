// Package envoyimport turns an envoyproxy/ratelimit configuration file
// into flowguard policies: the migration `flowguard import envoy-ratelimit`
// runs. It reads the file strictly (every error names the file and line),
// maps each descriptor chain that ends in a rate_limit onto a tier, tenant
// or endpoint rule, and lists what flowguard cannot express instead of
// guessing: descriptor keys with no flowguard meaning, shadow and quota
// mode, replaces, metric options, units longer than flowguard's 31-day
// period.
//
// It is off the request path: a one-shot conversion, no I/O beyond the
// bytes its caller hands it, safe for concurrent use.
package envoyimport
