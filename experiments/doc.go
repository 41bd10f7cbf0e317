// Package experiments runs A/B experiments on rate-limit policies: it
// parses the experiments file, assigns units (API keys or tenants) to
// variants by hash, tells which variant fails a guardrail, keeps stopped
// variants stopped across restarts, and holds the statistics to read the
// results: sample-ratio mismatch, Wilson and Newcombe intervals, and
// off-policy estimates (IPS, SNIPS, DR) from logged propensities.
//
// A Config (Parse, Load, Default) declares an optional holdout, layers of
// mutually exclusive experiments, and experiments whose variants are
// static (the deterministic budget), bandit (the bandit chooses the
// multiplier) or shadow (the bandit's choice is logged, the deterministic
// budget enforced). An Assigner built from it maps a Unit to its
// Assignments; the same unit gets the same variant in every process, after
// every restart, and re-weighting a variant moves the fewest units.
//
// In the request path, step 5 (experiments.Assign) calls Assigner.Primary
// (or AssignAppend, to log every layer): a hash and a table lookup per
// layer, no allocation. The Assignment's Policy and Bandit tell step 6 how
// to set the epoch budget; its Experiment and Variant go into the decision
// log. Off the request path, the caller aggregates Counts per variant,
// calls CheckGuardrails, appends each Trip to a StopLog and then calls
// Assigner.Stop; on start and reload it applies StopLog.Active to the new
// Assigner.
//
// Concurrency: a Config is read-only once parsed. An Assigner is safe for
// concurrent use; its tables are immutable and its stop flags atomic, so
// a reload builds a new one and swaps it in. A StopLog is safe for
// concurrent use. Everything else is a pure function. The package reads
// no clock and uses no randomness; its only I/O is Load and the StopLog
// file.
package experiments
