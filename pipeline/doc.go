// Package pipeline holds the decision logic that serving and the simulator
// share, so that what the simulator measures is what the service does:
// stage 2 (risk score, then the bandit's draw over the arms the rule's floor
// and ceiling allow), the budget stage 3 enforces for that draw, and the
// decision-log record of a key-epoch. Enforcement itself is the limiter's
// GCRA (package limiter), in serving per request and in the simulator over
// a key-epoch's arrivals (limiter.AdmitSpread).
//
// Everything here is pure: no I/O, no clock, no global state; the random
// source is the caller's. It is safe for concurrent use as long as each
// caller passes its own random source.
package pipeline
