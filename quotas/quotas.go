package quotas

// Static per-endpoint quotas ("seed 004"). A quota is a prediction: the
// p-th percentile (PERCENTILE_CONT) of legitimate users' daily requests on
// an endpoint, fitted on the days before a date. Fit and Backtest both get
// their quotas from one method, UsageSource.Quotas, so a backtest always
// checks exactly what fit would emit.
//
// Definitions used throughout:
//   - a user-day is one (endpoint, user, day); rows of the same user-day are
//     summed, and the user-day is malicious when any of its rows is;
//   - only non-malicious user-days are fitted on;
//   - a user-day is rate-limited when its requests are strictly above the
//     quota (a user exactly at the quota is served);
//   - a Window is the days d with After < d ≤ Through: the training window
//     of a fit until U with lookback L days is (U−L, U], the test window of
//     a backtest is (train-until, test-until]. Both ends are calendar days.

import (
	"context"
	"errors"
	"fmt"
	"math"
	"slices"
	"strings"
	"time"
)

// Day is a calendar day, counted in days since 1970-01-01.
type Day int32

const dayLayout = "2006-01-02"

// ParseDay parses a YYYY-MM-DD date.
func ParseDay(s string) (Day, error) {
	t, err := time.Parse(dayLayout, s)
	if err != nil || len(s) != len(dayLayout) {
		return 0, fmt.Errorf("%q is not a date (want YYYY-MM-DD)", s)
	}
	return DayOf(t), nil
}

// DayOf returns the calendar day of t in t's location.
func DayOf(t time.Time) Day {
	y, m, d := t.Date()
	return Day(time.Date(y, m, d, 0, 0, 0, 0, time.UTC).Unix() / 86400)
}

// String formats d as YYYY-MM-DD.
func (d Day) String() string {
	return time.Unix(int64(d)*86400, 0).UTC().Format(dayLayout)
}

// Window is the days d with After < d ≤ Through: the lower bound is
// exclusive, the upper inclusive, so consecutive windows never overlap.
type Window struct {
	After, Through Day
}

// WindowUntil returns the days days ending with until: (until−days, until].
func WindowUntil(until Day, days int) Window {
	return Window{After: until - Day(days), Through: until}
}

// Contains reports whether d is in w.
func (w Window) Contains(d Day) bool { return d > w.After && d <= w.Through }

// Days is the number of days in w.
func (w Window) Days() int { return max(0, int(w.Through-w.After)) }

// String describes w by its first and last day, both inclusive.
func (w Window) String() string {
	if w.Days() == 0 {
		return fmt.Sprintf("(%s, %s] (empty)", w.After, w.Through)
	}
	return fmt.Sprintf("%s..%s", w.After+1, w.Through)
}

// UsageRow is one row of usage: a user's requests on an endpoint on a day.
// Several rows of the same (Tier, Endpoint, User, Day) are parts of one
// user-day, for example one per region.
//
// Tier is optional. Quotas are fitted per (Tier, Endpoint): with Tier
// empty on every row, one quota per endpoint pooled over every tier (seed
// 004 as written); with the user's tier on each row, one per tier ×
// endpoint.
type UsageRow struct {
	Endpoint  string
	User      string
	Day       Day
	Requests  int64 // never negative
	Malicious bool
	Tier      string
}

// Quota is the fitted quota of one endpoint (of one tier, when the usage
// has tiers).
type Quota struct {
	Endpoint string
	// Quota is the PERCENTILE_CONT of the non-malicious daily requests. A
	// user-day above it is rate-limited.
	Quota float64
	// UserDays is how many non-malicious user-days it was fitted on.
	UserDays int64
	// Tier is the tier the quota is fitted for; "" when pooled.
	Tier string
}

// Usage is what a backtest counts on one endpoint in its test window.
type Usage struct {
	Tier     string
	Endpoint string
	// UserDays are the non-malicious user-days; OverQuota those of them with
	// more requests than the endpoint's quota (0 when it has none).
	UserDays, OverQuota int64
	// MaliciousUserDays and MaliciousOverQuota are the same for malicious
	// user-days.
	MaliciousUserDays, MaliciousOverQuota int64
}

// UsageSource is where usage lives: a CSV file or access log held in
// memory ([UsageTable]) or a PostgreSQL table ([PostgresSource]). Fit and
// Backtest call its Quotas, so the quotas a backtest checks are the ones
// fit emits.
type UsageSource interface {
	// Quotas returns, sorted by endpoint, the quota of every endpoint with
	// a non-malicious user-day in w: the PERCENTILE_CONT(p) of the
	// non-malicious user-days' requests.
	Quotas(ctx context.Context, w Window, p float64) ([]Quota, error)
	// Usage returns, sorted by endpoint, the user-days of every endpoint
	// with a user-day in w, and how many are above the endpoint's quota in
	// quotas. An endpoint without a quota has none over it.
	Usage(ctx context.Context, w Window, quotas []Quota) ([]Usage, error)
}

// PercentileCont is PostgreSQL's percentile_cont: the value at position
// p·(n−1) of sorted (ascending), interpolating linearly between the two
// values around it. It returns NaN when sorted is empty or p is outside
// [0, 1].
func PercentileCont(sorted []float64, p float64) float64 {
	n := len(sorted)
	if n == 0 || !(p >= 0 && p <= 1) {
		return math.NaN()
	}
	// The same arithmetic as PostgreSQL's percentile_cont_final_common and
	// float8_lerp, so that both give the same float64.
	pos := p * float64(n-1)
	lo, hi := math.Floor(pos), math.Ceil(pos)
	a, b := sorted[int(lo)], sorted[int(hi)]
	return a + (b-a)*(pos-lo)
}

// ErrPercentile is returned for a percentile outside [0, 1].
var ErrPercentile = errors.New("quotas: percentile must be between 0 and 1")

func checkPercentile(p float64) error {
	if !(p >= 0 && p <= 1) {
		return fmt.Errorf("%w: got %g", ErrPercentile, p)
	}
	return nil
}

// UsageTable is usage held in memory, one row per user-day. It computes
// quotas and counts in Go; it is immutable and safe for concurrent use.
type UsageTable struct {
	rows []UsageRow
}

// NewUsageTable merges rows into user-days: the requests of rows with the
// same (Endpoint, User, Day) are summed, and the user-day is malicious when
// any of them is. It fails on a negative count, an empty endpoint or user,
// or a sum past the int64 range.
func NewUsageTable(rows []UsageRow) (*UsageTable, error) {
	b := newUsageBuilder(len(rows))
	for _, r := range rows {
		if err := b.add(r); err != nil {
			return nil, err
		}
	}
	return b.table(), nil
}

// Rows returns the user-days, one row each, in the order first seen.
func (t *UsageTable) Rows() []UsageRow { return slices.Clone(t.rows) }

// Quotas fits the quotas in Go; see [UsageSource].
func (t *UsageTable) Quotas(_ context.Context, w Window, p float64) ([]Quota, error) {
	if err := checkPercentile(p); err != nil {
		return nil, err
	}
	byEndpoint := make(map[group][]float64)
	for i := range t.rows {
		r := &t.rows[i]
		if r.Malicious || !w.Contains(r.Day) {
			continue
		}
		g := group{r.Tier, r.Endpoint}
		byEndpoint[g] = append(byEndpoint[g], float64(r.Requests))
	}
	quotas := make([]Quota, 0, len(byEndpoint))
	for g, v := range byEndpoint {
		slices.Sort(v)
		quotas = append(quotas, Quota{Tier: g.tier, Endpoint: g.endpoint, Quota: PercentileCont(v, p), UserDays: int64(len(v))})
	}
	slices.SortFunc(quotas, func(a, b Quota) int { return group{a.Tier, a.Endpoint}.compare(group{b.Tier, b.Endpoint}) })
	return quotas, nil
}

// Usage counts in Go; see [UsageSource].
func (t *UsageTable) Usage(_ context.Context, w Window, quotas []Quota) ([]Usage, error) {
	quota := make(map[group]float64, len(quotas))
	for _, q := range quotas {
		quota[group{q.Tier, q.Endpoint}] = q.Quota
	}
	byEndpoint := make(map[group]*Usage)
	for i := range t.rows {
		r := &t.rows[i]
		if !w.Contains(r.Day) {
			continue
		}
		g := group{r.Tier, r.Endpoint}
		u := byEndpoint[g]
		if u == nil {
			u = &Usage{Tier: r.Tier, Endpoint: r.Endpoint}
			byEndpoint[g] = u
		}
		q, ok := quota[g]
		over := ok && float64(r.Requests) > q
		if r.Malicious {
			u.MaliciousUserDays++
			if over {
				u.MaliciousOverQuota++
			}
		} else {
			u.UserDays++
			if over {
				u.OverQuota++
			}
		}
	}
	out := make([]Usage, 0, len(byEndpoint))
	for _, u := range byEndpoint {
		out = append(out, *u)
	}
	slices.SortFunc(out, func(a, b Usage) int { return group{a.Tier, a.Endpoint}.compare(group{b.Tier, b.Endpoint}) })
	return out, nil
}

// group is what a quota is fitted for: an endpoint, of a tier or of all.
type group struct{ tier, endpoint string }

// compare orders groups by endpoint, then tier.
func (g group) compare(o group) int {
	if c := strings.Compare(g.endpoint, o.endpoint); c != 0 {
		return c
	}
	return strings.Compare(g.tier, o.tier)
}

// usageBuilder merges rows into user-days as they are read.
type usageBuilder struct {
	index map[userDayKey]int
	rows  []UsageRow
}

type userDayKey struct {
	endpoint, user string
	day            Day
	tier           string
}

func newUsageBuilder(n int) *usageBuilder {
	return &usageBuilder{index: make(map[userDayKey]int, n), rows: make([]UsageRow, 0, n)}
}

func (b *usageBuilder) add(r UsageRow) error {
	switch {
	case r.Endpoint == "":
		return errors.New("empty endpoint")
	case r.User == "":
		return errors.New("empty user")
	case r.Requests < 0:
		return fmt.Errorf("negative requests %d", r.Requests)
	}
	k := userDayKey{r.Endpoint, r.User, r.Day, r.Tier}
	i, ok := b.index[k]
	if !ok {
		b.index[k] = len(b.rows)
		b.rows = append(b.rows, r)
		return nil
	}
	m := &b.rows[i]
	if m.Requests > math.MaxInt64-r.Requests {
		return fmt.Errorf("requests of %s %s %s add up past %d", r.Endpoint, r.User, r.Day, int64(math.MaxInt64))
	}
	m.Requests += r.Requests
	m.Malicious = m.Malicious || r.Malicious
	return nil
}

func (b *usageBuilder) table() *UsageTable {
	b.index = nil
	return &UsageTable{rows: slices.Clip(b.rows)}
}

// FitConfig says what to fit. It has no defaults: the command line
// supplies them (percentile 0.99, lookback 30 days).
type FitConfig struct {
	// Until is the last training day; the training window is
	// (Until−Lookback, Until].
	Until Day
	// Lookback is the training window's length in days, at least 1.
	Lookback int
	// Percentile is p in [0, 1].
	Percentile float64
}

// Validate reports whether c can be fitted.
func (c FitConfig) Validate() error {
	if c.Lookback < 1 {
		return fmt.Errorf("quotas: lookback %d days must be at least 1", c.Lookback)
	}
	return checkPercentile(c.Percentile)
}

// QuotaFit is the outcome of Fit.
type QuotaFit struct {
	Window     Window
	Percentile float64
	// UserDays is the number of non-malicious user-days fitted on.
	UserDays int64
	// Quotas are sorted by endpoint.
	Quotas []Quota
}

// Fit fits the quotas of every endpoint on the training window of c.
// ctx bounds the source's I/O.
func Fit(ctx context.Context, src UsageSource, c FitConfig) (*QuotaFit, error) {
	if err := c.Validate(); err != nil {
		return nil, err
	}
	w := WindowUntil(c.Until, c.Lookback)
	quotas, err := src.Quotas(ctx, w, c.Percentile)
	if err != nil {
		return nil, err
	}
	f := &QuotaFit{Window: w, Percentile: c.Percentile, Quotas: quotas}
	for _, q := range quotas {
		f.UserDays += q.UserDays
	}
	return f, nil
}

// BacktestConfig says what to backtest: quotas fitted as by
// FitConfig{TrainUntil, Lookback, Percentile}, checked on the days
// (TrainUntil, TestUntil].
type BacktestConfig struct {
	TrainUntil, TestUntil Day
	Lookback              int     // training days, at least 1
	Percentile            float64 // in [0, 1]
}

// Validate reports whether c can be backtested.
func (c BacktestConfig) Validate() error {
	if c.TestUntil <= c.TrainUntil {
		return fmt.Errorf("quotas: test-until %s must be after train-until %s", c.TestUntil, c.TrainUntil)
	}
	return FitConfig{Until: c.TrainUntil, Lookback: c.Lookback, Percentile: c.Percentile}.Validate()
}

// EndpointBacktest is one endpoint's line of a backtest. Its first five
// fields are the JSON report's contract.
type EndpointBacktest struct {
	Endpoint string `json:"endpoint_url"`
	// Tier is the tier the quota is fitted for; "" when pooled.
	Tier string `json:"tier,omitempty"`
	// Quota is nil for an endpoint with no non-malicious training user-day:
	// it has no quota, and nothing is rate-limited on it.
	Quota *float64 `json:"quota"`
	// TotalUsage is the non-malicious test user-days; NumRateLimited those
	// above the quota; Fraction their ratio (0 with no usage).
	TotalUsage     int64   `json:"total_usage"`
	NumRateLimited int64   `json:"num_rate_limited"`
	Fraction       float64 `json:"fraction"`
	// TrainUserDays is the non-malicious user-days the quota was fitted on.
	TrainUserDays int64 `json:"train_user_days"`
	// MaliciousUsage and MaliciousRateLimited count malicious test
	// user-days, which Fraction leaves out.
	MaliciousUsage       int64 `json:"malicious_usage"`
	MaliciousRateLimited int64 `json:"malicious_rate_limited"`
}

// BacktestReport is the outcome of Backtest.
type BacktestReport struct {
	Train, Test Window
	Percentile  float64
	// TrainUserDays is the non-malicious user-days fitted on, overall.
	TrainUserDays int64
	// Endpoints holds, sorted, every endpoint with a quota or with a test
	// user-day (malicious or not).
	Endpoints []EndpointBacktest
}

// Backtest fits quotas with Fit and counts, on the test window, how many
// legitimate user-days they would have rate-limited. ctx bounds the
// source's I/O.
func Backtest(ctx context.Context, src UsageSource, c BacktestConfig) (*BacktestReport, error) {
	if err := c.Validate(); err != nil {
		return nil, err
	}
	fit, err := Fit(ctx, src, FitConfig{Until: c.TrainUntil, Lookback: c.Lookback, Percentile: c.Percentile})
	if err != nil {
		return nil, err
	}
	test := Window{After: c.TrainUntil, Through: c.TestUntil}
	usage, err := src.Usage(ctx, test, fit.Quotas)
	if err != nil {
		return nil, err
	}
	r := &BacktestReport{Train: fit.Window, Test: test, Percentile: c.Percentile, TrainUserDays: fit.UserDays}
	byEndpoint := make(map[group]*EndpointBacktest)
	line := func(tier, ep string) *EndpointBacktest {
		if e := byEndpoint[group{tier, ep}]; e != nil {
			return e
		}
		e := &EndpointBacktest{Tier: tier, Endpoint: ep}
		byEndpoint[group{tier, ep}] = e
		return e
	}
	for _, q := range fit.Quotas {
		e := line(q.Tier, q.Endpoint)
		e.Quota = &q.Quota
		e.TrainUserDays = q.UserDays
	}
	for _, u := range usage {
		e := line(u.Tier, u.Endpoint)
		e.TotalUsage, e.NumRateLimited = u.UserDays, u.OverQuota
		e.MaliciousUsage, e.MaliciousRateLimited = u.MaliciousUserDays, u.MaliciousOverQuota
		if e.Quota == nil && (u.OverQuota > 0 || u.MaliciousOverQuota > 0) {
			return nil, fmt.Errorf("quotas: source counted user-days over a quota endpoint %q does not have", u.Endpoint)
		}
	}
	for _, e := range byEndpoint {
		if e.TotalUsage > 0 {
			e.Fraction = float64(e.NumRateLimited) / float64(e.TotalUsage)
		}
		r.Endpoints = append(r.Endpoints, *e)
	}
	slices.SortFunc(r.Endpoints, func(a, b EndpointBacktest) int {
		return group{a.Tier, a.Endpoint}.compare(group{b.Tier, b.Endpoint})
	})
	return r, nil
}

// Total sums the report over endpoints; its Quota is nil.
func (r *BacktestReport) Total() EndpointBacktest {
	t := EndpointBacktest{Endpoint: "TOTAL", TrainUserDays: r.TrainUserDays}
	for _, e := range r.Endpoints {
		t.TotalUsage += e.TotalUsage
		t.NumRateLimited += e.NumRateLimited
		t.MaliciousUsage += e.MaliciousUsage
		t.MaliciousRateLimited += e.MaliciousRateLimited
	}
	if t.TotalUsage > 0 {
		t.Fraction = float64(t.NumRateLimited) / float64(t.TotalUsage)
	}
	return t
}

// AlertThresholds say when a backtest needs a human.
type AlertThresholds struct {
	// MaxFraction: an endpoint rate-limiting a larger fraction of its
	// legitimate test user-days raises an alert.
	MaxFraction float64
	// MinTrainUserDays: fewer non-malicious training user-days overall
	// raise an alert (the quotas are fitted on too little data).
	MinTrainUserDays int64
}

// Alerts returns one message per threshold crossed, in a stable order.
func (r *BacktestReport) Alerts(th AlertThresholds) []string {
	var alerts []string
	if r.TrainUserDays < th.MinTrainUserDays {
		alerts = append(alerts, fmt.Sprintf("training window %s has %d non-malicious user-days, fewer than the expected minimum of %d",
			r.Train, r.TrainUserDays, th.MinTrainUserDays))
	}
	for _, e := range r.Endpoints {
		if e.Quota != nil && e.Fraction > th.MaxFraction {
			name := e.Endpoint
			if e.Tier != "" {
				name = e.Tier + " " + e.Endpoint
			}
			alerts = append(alerts, fmt.Sprintf("%s: quota %s rate-limited %d of %d legitimate user-days (%.2f%%), above %.2f%%",
				name, FormatQuota(*e.Quota), e.NumRateLimited, e.TotalUsage, 100*e.Fraction, 100*th.MaxFraction))
		}
	}
	return alerts
}

// FormatQuota formats a quota with up to 4 decimals, without trailing zeros.
func FormatQuota(q float64) string {
	s := fmt.Sprintf("%.4f", q)
	s = strings.TrimRight(s, "0")
	return strings.TrimSuffix(s, ".")
}
