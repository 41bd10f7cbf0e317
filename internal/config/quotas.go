package config

import (
	"time"

	"github.com/devflow/flowguard/internal/yamlx"
)

// Quotas configures the refit of the fitted daily quotas (seed 004's
// model, built in; docs/quotas.md#in-serving): the rules with
// daily_quota: fitted get, as a second window beside their rate, the
// PERCENTILE_CONT(percentile) of the daily requests of the keys of their
// tier × endpoint that no abusive label holds, over the last
// lookback_days complete days, refitted every refit_every. A fit is
// installed only when its backtest on the last test_days passes.
type Quotas struct {
	// RefitEvery is how often the quotas are refitted. Default: 24h.
	RefitEvery time.Duration `yaml:"refit_every"`
	// LookbackDays is the training window. Default: 14.
	LookbackDays int `yaml:"lookback_days"`
	// TestDays is the backtest window: the fit on the days before it is
	// checked on it. Default: 1.
	TestDays int `yaml:"test_days"`
	// Percentile is the quota's percentile of legitimate user-days.
	// Default: 0.99.
	Percentile float64 `yaml:"percentile"`
	// MaxThrottledFraction refuses a fit whose backtest rate-limits a
	// larger fraction of some tier × endpoint's legitimate test user-days.
	// Default: 0.03.
	MaxThrottledFraction float64 `yaml:"max_throttled_fraction"`
	// MinUserDays refuses a fit on fewer legitimate training user-days.
	// Default: 1000.
	MinUserDays int64 `yaml:"min_user_days"`
	// MaxUserDaysPerDay caps the user-days kept per day; past it keys are
	// sampled by a hash of the key. About 40 bytes each. Default: 50000.
	MaxUserDaysPerDay int `yaml:"max_user_days_per_day"`
	// ShareEvery is how often, with redis:, each instance writes its
	// usage to Redis, where every instance's refit reads all of them: each
	// instance counts only its share of a key's requests. Default: 10m.
	ShareEvery time.Duration `yaml:"share_every"`
	// StateFile keeps the usage and the installed quotas across restarts:
	// written after every refit and at shutdown, read at start. "": kept
	// in memory only. Default: "".
	StateFile string `yaml:"state_file"`
}

func (q *Quotas) defaults() {
	if q.RefitEvery == 0 {
		q.RefitEvery = 24 * time.Hour
	}
	if q.LookbackDays == 0 {
		q.LookbackDays = 14
	}
	if q.TestDays == 0 {
		q.TestDays = 1
	}
	if q.Percentile == 0 {
		q.Percentile = 0.99
	}
	if q.MaxThrottledFraction == 0 {
		q.MaxThrottledFraction = 0.03
	}
	if q.MinUserDays == 0 {
		q.MinUserDays = 1000
	}
	if q.MaxUserDaysPerDay == 0 {
		q.MaxUserDaysPerDay = 50_000
	}
	if q.ShareEvery == 0 {
		q.ShareEvery = 10 * time.Minute
	}
}

func (q *Quotas) validate(d *yamlx.Doc) yamlx.Errors {
	var errs yamlx.Errors
	bad := func(field, format string, args ...any) {
		errs = append(errs, d.Errorf([]string{"quotas", field}, format, args...))
	}
	if q.RefitEvery < time.Minute || q.RefitEvery > 31*24*time.Hour {
		bad("refit_every", "%s must be between 1m0s and 744h0m0s", q.RefitEvery)
	}
	if q.LookbackDays < 1 || q.LookbackDays > 90 {
		bad("lookback_days", "%d must be between 1 and 90", q.LookbackDays)
	}
	if q.TestDays < 1 || q.TestDays > 30 {
		bad("test_days", "%d must be between 1 and 30", q.TestDays)
	}
	if !(q.Percentile > 0 && q.Percentile <= 1) {
		bad("percentile", "%v must be in (0, 1]", q.Percentile)
	}
	if !(q.MaxThrottledFraction > 0 && q.MaxThrottledFraction < 1) {
		bad("max_throttled_fraction", "%v must be in (0, 1)", q.MaxThrottledFraction)
	}
	if q.MinUserDays < 1 {
		bad("min_user_days", "%d must be at least 1", q.MinUserDays)
	}
	if q.ShareEvery < time.Second || q.ShareEvery > 24*time.Hour {
		bad("share_every", "%s must be between 1s and 24h0m0s", q.ShareEvery)
	}
	if q.MaxUserDaysPerDay < 64 || q.MaxUserDaysPerDay > 10_000_000 {
		bad("max_user_days_per_day", "%d must be between 64 and 10000000", q.MaxUserDaysPerDay)
	}
	return errs
}

// RecorderDays is how many days of usage the refit needs: the lookback,
// the test days and today.
func (q *Quotas) RecorderDays() int { return q.LookbackDays + q.TestDays + 1 }
