package quotas

import (
	"context"
	"fmt"
)

// RefitConfig says how serving refits its daily quotas (issue 17): fit on
// the Lookback days before the last TestDays complete days, check that fit
// on them (Backtest), and only when it passes, fit again on the Lookback
// days through the last complete day and install that.
type RefitConfig struct {
	// Today is the day in progress; the complete days are before it.
	Today      Day
	Lookback   int // training days, at least 1
	TestDays   int // backtest days, at least 1
	Percentile float64
	// Thresholds refuse a fit: a backtest line rate-limiting more than
	// MaxFraction of its legitimate test user-days, or fewer than
	// MinTrainUserDays non-malicious training user-days.
	Thresholds AlertThresholds
}

// Reasons a refit is refused, as metric labels.
const (
	RefusedTooLittleData = "too_little_data" // below MinTrainUserDays, or no legitimate test user-day
	RefusedOverThreshold = "over_threshold"  // the backtest rate-limited more than MaxFraction somewhere
	RefitInstalled       = "installed"       // the fit passed and is the one to install
	RefitError           = "error"           // the usage could not be read
)

// RefitReasons are the outcomes of a refit, for metrics to pre-create.
var RefitReasons = []string{RefitInstalled, RefusedTooLittleData, RefusedOverThreshold, RefitError}

// RefitResult is the outcome of Refit.
type RefitResult struct {
	// Backtest is the check of the fit on the days before the test days.
	Backtest *BacktestReport
	// Fit is what to install; nil when refused.
	Fit *QuotaFit
	// Reason is RefitInstalled or why the fit was refused; Problems say
	// what, one line each (BacktestReport.Alerts).
	Reason   string
	Problems []string
}

// Refit backtests and, when the backtest passes, fits the quotas to
// install. The fit and its backtest are the same function, Fit.
func Refit(ctx context.Context, src UsageSource, c RefitConfig) (*RefitResult, error) {
	if c.TestDays < 1 {
		return nil, fmt.Errorf("quotas: test days %d must be at least 1", c.TestDays)
	}
	last := c.Today - 1
	bt, err := Backtest(ctx, src, BacktestConfig{TrainUntil: last - Day(c.TestDays), TestUntil: last,
		Lookback: c.Lookback, Percentile: c.Percentile})
	if err != nil {
		return nil, err
	}
	res := &RefitResult{Backtest: bt, Problems: bt.Alerts(c.Thresholds)}
	tot := bt.Total()
	switch {
	case bt.TrainUserDays < c.Thresholds.MinTrainUserDays:
		res.Reason = RefusedTooLittleData
	case tot.TotalUsage == 0:
		res.Reason = RefusedTooLittleData
		res.Problems = append(res.Problems, fmt.Sprintf("test window %s has no legitimate user-day", bt.Test))
	case len(res.Problems) > 0:
		res.Reason = RefusedOverThreshold
	}
	if res.Reason != "" {
		return res, nil
	}
	fit, err := Fit(ctx, src, FitConfig{Until: last, Lookback: c.Lookback, Percentile: c.Percentile})
	if err != nil {
		return nil, err
	}
	res.Fit, res.Reason = fit, RefitInstalled
	return res, nil
}
