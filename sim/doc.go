// Package sim evaluates rate-limit policies offline, before they meet
// traffic: would the bandit have beaten static quotas, for good customers
// and against abusers, and by how much against an oracle?
//
// A [Scenario] (strict YAML, [ParseScenario]) describes the world: tiers,
// tenants and their legitimate keys (daily volume, diurnal shape,
// burstiness, growth), abusers by kind (scraper, credential stuffing,
// adaptive prober, sleeper, key sharing), the label process (coverage,
// lognormal delay, false labels, complaints) and incidents (Redis, Kafka,
// stale model, region). [Run] drives the real pipeline in virtual time at
// key-epoch granularity, without HTTP: policy.Set.Resolve and Rule.Budget
// for floors and ceilings, features.Store (ObserveN, Vector) and the risk
// model, bandit snapshots and Choose, rewards.Partition fed with decision
// and outcome records built as serving builds them (and the labels as they
// arrive), and the limiter's budget arithmetic over each epoch. static-p99
// refits seed-004 quotas with quotas.Fit. [ReplayTrace] runs an access
// log through the same code. Results are written as results.json (the
// DESIGN.md contract), details.json, report.md and PNG plots.
//
// Traffic is a pure function of (seed, key, epoch), so every policy sees
// the same demand; keys are split over 16 fixed shards, each with its own
// seeded random source, so the results do not depend on the number of
// workers: the same seed gives the same files, byte for byte, except the
// measured wall_s. The serving side of a key-epoch does not allocate.
//
// It also holds the wheel bandit of Riquelme, Tucker & Snoek 2018, the
// published benchmark the bandit package is checked against (RunWheel).
//
// Run, ReplayTrace and RunWheel are safe to call concurrently with each
// other; a Scenario must not be changed while a run uses it.
package sim
