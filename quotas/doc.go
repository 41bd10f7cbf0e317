// Package quotas is seed 004's static quota model: [Fit] computes
// per-endpoint daily quotas, the PERCENTILE_CONT of legitimate users' daily
// requests over a training window, and [Backtest] checks them on the days
// after it by calling Fit — one function for both, so the fit and its
// backtest cannot drift apart. A [UsageSource] is a CSV file, a
// combined-format access log, or PostgreSQL (the percentile computed in
// SQL). `flowguard quotas` and the simulator's static-p99 policy call it.
//
// Fit and Backtest are pure; only the PostgreSQL source does I/O.
package quotas
