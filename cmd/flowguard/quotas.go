package main

import (
	"bytes"
	"cmp"
	"context"
	"encoding/json"
	"errors"
	"flag"
	"fmt"
	"io"
	"math"
	"net/url"
	"os"
	"os/signal"
	"slices"
	"strconv"
	"strings"
	"syscall"
	"text/tabwriter"

	"github.com/devflow/flowguard/internal/config"
	"github.com/devflow/flowguard/internal/yamlx"
	"github.com/devflow/flowguard/quotas"
	"gopkg.in/yaml.v3"
)

const quotasUsage = `usage: flowguard quotas fit      (--usage SRC | --access-log FILE) --until DATE [--percentile P] [--lookback Nd] [--out FILE]
       flowguard quotas backtest (--usage SRC | --access-log FILE) --train-until DATE --test-until DATE
                                 [--percentile P] [--lookback Nd] [--json] [--alert-fraction F] [--min-train-user-days N]
SRC is a usage CSV file (endpoint_url,user_id,daily_requests,date,malicious[,tier]; may be gzipped;
with the tier column, quotas are fitted per tier × endpoint)
or a postgres:// DSN (table endpoint_usage). Exit status 3: the backtest raised an alert.
`

// errAlert means a backtest crossed a threshold: its ALERT lines are
// printed and the exit status is 3.
var errAlert = errors.New("alert")

// quotasCmd fits static per-endpoint quotas or backtests them (seed 004).
func quotasCmd(args []string, stdout, stderr io.Writer) error {
	if len(args) == 0 || (args[0] != "fit" && args[0] != "backtest") {
		fmt.Fprint(stderr, quotasUsage)
		return errUsage
	}
	ctx, stop := signal.NotifyContext(context.Background(), syscall.SIGTERM, os.Interrupt)
	defer stop()
	if args[0] == "fit" {
		return quotasFit(ctx, args[1:], stdout, stderr)
	}
	return quotasBacktest(ctx, args[1:], stdout, stderr)
}

// sourceFlags select and open a UsageSource.
type sourceFlags struct {
	usage, accessLog string
	bots             bool
}

func (s *sourceFlags) register(fs *flag.FlagSet) {
	fs.StringVar(&s.usage, "usage", "", "usage `SRC`: a CSV file (gzipped or not) or a postgres:// DSN")
	fs.StringVar(&s.accessLog, "access-log", "", "derive usage from a common/combined access log `FILE` (gzipped or not): user = client address, endpoint = first path segment")
	fs.BoolVar(&s.bots, "bots-malicious", false, "with --access-log: user-days with a bot, crawler or spider user agent are malicious (not fitted on)")
}

// open returns the source, its description and a function closing it.
func (s *sourceFlags) open(ctx context.Context, stderr io.Writer) (quotas.UsageSource, string, func(), error) {
	switch {
	case quotas.IsPostgresDSN(s.usage):
		pg, err := quotas.OpenPostgres(ctx, s.usage)
		if err != nil {
			return nil, "", nil, err
		}
		return pg, "PostgreSQL " + redactDSN(s.usage) + ", table " + quotas.UsageTableName,
			func() { pg.Close(context.Background()) }, nil
	case s.usage != "":
		t, err := quotas.ReadUsageCSV(s.usage)
		if err != nil {
			return nil, "", nil, err
		}
		return t, "usage CSV " + s.usage, func() {}, nil
	default:
		t, stats, err := quotas.ReadAccessLog(s.accessLog, quotas.AccessLogOptions{BotsMalicious: s.bots})
		if err != nil {
			return nil, "", nil, err
		}
		if stats.Skipped > 0 {
			fmt.Fprintf(stderr, "%s: skipped %d requests with no path\n", s.accessLog, stats.Skipped)
		}
		desc := "access log " + s.accessLog + " (user = client address, endpoint = first path segment, "
		if s.bots {
			desc += "bot/crawler/spider user agents malicious)"
		} else {
			desc += "no user-day malicious)"
		}
		return t, desc, func() {}, nil
	}
}

// check reports a missing or doubled source.
func (s *sourceFlags) check() error {
	switch {
	case (s.usage == "") == (s.accessLog == ""):
		return errors.New("give one of --usage SRC and --access-log FILE")
	case s.bots && s.accessLog == "":
		return errors.New("--bots-malicious goes with --access-log")
	}
	return nil
}

// dayFlag is a YYYY-MM-DD flag.
type dayFlag struct {
	day quotas.Day
	set bool
}

func (d *dayFlag) String() string {
	if !d.set {
		return ""
	}
	return d.day.String()
}

func (d *dayFlag) Set(s string) error {
	day, err := quotas.ParseDay(s)
	d.day, d.set = day, err == nil
	return err
}

// lookbackFlag is a number of days, written Nd (or N).
type lookbackFlag int

func (l *lookbackFlag) String() string { return strconv.Itoa(int(*l)) + "d" }

func (l *lookbackFlag) Set(s string) error {
	n, err := strconv.Atoi(strings.TrimSuffix(s, "d"))
	if err != nil || n < 1 || n > 3660 {
		return fmt.Errorf("%q is not a number of days between 1d and 3660d", s)
	}
	*l = lookbackFlag(n)
	return nil
}

// fractionFlag is a number in [0, 1].
type fractionFlag float64

func (f *fractionFlag) String() string { return strconv.FormatFloat(float64(*f), 'g', -1, 64) }

func (f *fractionFlag) Set(s string) error {
	v, err := strconv.ParseFloat(s, 64)
	if err != nil || !(v >= 0 && v <= 1) {
		return fmt.Errorf("%q is not a number between 0 and 1", s)
	}
	*f = fractionFlag(v)
	return nil
}

// newQuotasFlags makes a subcommand's flag set with the flags fit and
// backtest share.
func newQuotasFlags(name string, stderr io.Writer, src *sourceFlags, p *fractionFlag, lookback *lookbackFlag) *flag.FlagSet {
	fs := flag.NewFlagSet("quotas "+name, flag.ContinueOnError)
	fs.SetOutput(stderr)
	fs.Usage = func() {
		fmt.Fprint(stderr, quotasUsage)
		fs.PrintDefaults()
	}
	src.register(fs)
	*p, *lookback = 0.99, 30
	fs.Var(p, "percentile", "the quota is this PERCENTILE_CONT `P` of non-malicious daily requests")
	fs.Var(lookback, "lookback", "training window length `Nd`, in days, ending with the until date (inclusive)")
	return fs
}

// badFlags prints a flag problem the flag package cannot see.
func badFlags(fs *flag.FlagSet, stderr io.Writer, err error) error {
	fmt.Fprintf(stderr, "flowguard %s: %v\n", fs.Name(), err)
	return errUsage
}

func quotasFit(ctx context.Context, args []string, stdout, stderr io.Writer) error {
	var (
		src      sourceFlags
		p        fractionFlag
		lookback lookbackFlag
		until    dayFlag
	)
	fs := newQuotasFlags("fit", stderr, &src, &p, &lookback)
	fs.Var(&until, "until", "last training `DATE` (YYYY-MM-DD, inclusive)")
	out := fs.String("out", "", "write the YAML to `FILE` instead of stdout")
	if err := parseFlags(fs, args); err != nil {
		return err
	}
	switch {
	case fs.NArg() > 0:
		return badFlags(fs, stderr, fmt.Errorf("unexpected argument %q", fs.Arg(0)))
	case !until.set:
		return badFlags(fs, stderr, errors.New("--until DATE is required"))
	}
	if err := src.check(); err != nil {
		return badFlags(fs, stderr, err)
	}
	source, desc, closeSource, err := src.open(ctx, stderr)
	if err != nil {
		return err
	}
	defer closeSource()
	fit, err := quotas.Fit(ctx, source, quotas.FitConfig{Until: until.day, Lookback: int(lookback), Percentile: float64(p)})
	if err != nil {
		return err
	}
	if fit.UserDays == 0 {
		return fmt.Errorf("quotas fit: no non-malicious user-days in the training window %s of %s", fit.Window, desc)
	}
	yml, err := quotasYAML(fit, desc)
	if err != nil {
		return err
	}
	if err := checkLoads(yml); err != nil {
		fmt.Fprintf(stderr, "flowguard quotas fit: warning: the quotas do not load under a policy's endpoints: %v\n", err)
	}
	if *out == "" {
		_, err = stdout.Write(yml)
		return err
	}
	if err := os.WriteFile(*out, yml, 0o644); err != nil {
		return err
	}
	fmt.Fprintf(stderr, "%s: %d endpoint quotas from %d user-days\n", *out, len(fit.Quotas), fit.UserDays)
	return nil
}

// quotasYAML renders a fit as an `endpoints:` block of the policy file:
// one rule per endpoint, rate requests per 24h.
func quotasYAML(fit *quotas.QuotaFit, desc string) ([]byte, error) {
	endpoints := &yaml.Node{Kind: yaml.MappingNode}
	// With tiers in the usage, one endpoints: block per tier, under tiers:.
	tiers := &yaml.Node{Kind: yaml.MappingNode}
	byTier := map[string]*yaml.Node{}
	for _, q := range fit.Quotas {
		eps := endpoints
		if q.Tier != "" {
			if eps = byTier[q.Tier]; eps == nil {
				eps = &yaml.Node{Kind: yaml.MappingNode}
				byTier[q.Tier] = eps
				tiers.Content = append(tiers.Content, &yaml.Node{Kind: yaml.ScalarNode, Value: q.Tier},
					&yaml.Node{Kind: yaml.MappingNode, Content: []*yaml.Node{{Kind: yaml.ScalarNode, Value: "endpoints"}, eps}})
			}
		}
		rate := max(1, int64(math.Floor(q.Quota)))
		key := &yaml.Node{Kind: yaml.ScalarNode, Style: yaml.DoubleQuotedStyle, Value: q.Endpoint,
			HeadComment: fmt.Sprintf("quota %s from %d user-day%s", quotas.FormatQuota(q.Quota), q.UserDays, plural(q.UserDays))}
		scalar := func(v string) *yaml.Node { return &yaml.Node{Kind: yaml.ScalarNode, Value: v} }
		r := strconv.FormatInt(rate, 10)
		rule := &yaml.Node{Kind: yaml.MappingNode, Content: []*yaml.Node{
			scalar("rate"), scalar(r), scalar("period"), scalar("24h"), scalar("burst"), scalar(r),
		}}
		eps.Content = append(eps.Content, key, rule)
	}
	header := []string{
		"Static per-endpoint quotas, written by `flowguard quotas fit`.",
		"source: " + desc,
		fmt.Sprintf("until: %s, lookback: %dd: training days %s (both inclusive)", fit.Window.Through, fit.Window.Days(), fit.Window),
		fmt.Sprintf("percentile: %s, PERCENTILE_CONT (linear interpolation) of each endpoint's non-malicious daily requests per user",
			strconv.FormatFloat(fit.Percentile, 'g', -1, 64)),
		fmt.Sprintf("user-days: %d (non-malicious, in the training window)", fit.UserDays),
		"A user-day is over quota when its requests are above the quota: rate is the quota rounded down",
		"(at least 1), per 24h, burst = rate; the limiter enforces it as a rolling 24h budget (GCRA), not",
		"per calendar day. Paste under a tier's or tenant's `endpoints:` in the policy file.",
	}
	doc := &yaml.Node{Kind: yaml.MappingNode, HeadComment: strings.Join(header, "\n"), Content: []*yaml.Node{
		{Kind: yaml.ScalarNode, Value: "endpoints"}, endpoints,
	}}
	if len(byTier) > 0 {
		header[len(header)-1] = "per calendar day. Each tier's block goes under that tier in the policy file's tiers:."
		doc = &yaml.Node{Kind: yaml.MappingNode, HeadComment: strings.Join(header, "\n"), Content: []*yaml.Node{
			{Kind: yaml.ScalarNode, Value: "tiers"}, tiers,
		}}
	}
	if len(fit.Quotas) == 0 {
		endpoints.Style = yaml.FlowStyle
	}
	var buf bytes.Buffer
	enc := yaml.NewEncoder(&buf)
	enc.SetIndent(2)
	if err := enc.Encode(doc); err != nil {
		return nil, err
	}
	if err := enc.Close(); err != nil {
		return nil, err
	}
	return buf.Bytes(), nil
}

// checkLoads loads the quotas the way the service would: under a tier of
// a minimal configuration. Its errors name lines of the fragment.
func checkLoads(fragment []byte) error {
	const wrapper = "policies:\n  tiers:\n    free:\n      rate: 1\n"
	var cfg strings.Builder
	cfg.WriteString(wrapper)
	for _, line := range strings.SplitAfter(string(fragment), "\n") {
		if line != "" {
			cfg.WriteString("      " + line)
		}
	}
	_, err := config.Parse("quotas", []byte(cfg.String()))
	var errs yamlx.Errors
	if !errors.As(err, &errs) {
		return err
	}
	lines := make([]string, len(errs))
	for i, e := range errs {
		lines[i] = fmt.Sprintf("line %d: %s", e.Line-strings.Count(wrapper, "\n"), strings.TrimPrefix(e.Msg, "policies.tiers.free."))
	}
	return errors.New(strings.Join(lines, "; "))
}

func plural(n int64) string {
	if n == 1 {
		return ""
	}
	return "s"
}

// redactDSN hides a DSN's password.
func redactDSN(dsn string) string {
	u, err := url.Parse(dsn)
	if err != nil {
		return "(unparsable DSN)"
	}
	return u.Redacted()
}

func quotasBacktest(ctx context.Context, args []string, stdout, stderr io.Writer) error {
	var (
		src                   sourceFlags
		p, alertFraction      fractionFlag
		lookback              lookbackFlag
		trainUntil, testUntil dayFlag
	)
	fs := newQuotasFlags("backtest", stderr, &src, &p, &lookback)
	fs.Var(&trainUntil, "train-until", "last training `DATE` (YYYY-MM-DD, inclusive)")
	fs.Var(&testUntil, "test-until", "last test `DATE` (inclusive); the test starts the day after --train-until")
	asJSON := fs.Bool("json", false, "print a JSON array instead of a table")
	alertFraction = 0.03
	fs.Var(&alertFraction, "alert-fraction", "alert (exit 3) when an endpoint rate-limits more than this `F`raction of its legitimate test user-days")
	minTrain := fs.Int64("min-train-user-days", 100, "alert (exit 3) when the training window has fewer than `N` non-malicious user-days in all")
	if err := parseFlags(fs, args); err != nil {
		return err
	}
	switch {
	case fs.NArg() > 0:
		return badFlags(fs, stderr, fmt.Errorf("unexpected argument %q", fs.Arg(0)))
	case !trainUntil.set || !testUntil.set:
		return badFlags(fs, stderr, errors.New("--train-until DATE and --test-until DATE are required"))
	case testUntil.day <= trainUntil.day:
		return badFlags(fs, stderr, fmt.Errorf("--test-until %s must be after --train-until %s", testUntil.day, trainUntil.day))
	case *minTrain < 0:
		return badFlags(fs, stderr, fmt.Errorf("--min-train-user-days %d must not be negative", *minTrain))
	}
	if err := src.check(); err != nil {
		return badFlags(fs, stderr, err)
	}
	source, desc, closeSource, err := src.open(ctx, stderr)
	if err != nil {
		return err
	}
	defer closeSource()
	r, err := quotas.Backtest(ctx, source, quotas.BacktestConfig{
		TrainUntil: trainUntil.day, TestUntil: testUntil.day, Lookback: int(lookback), Percentile: float64(p),
	})
	if err != nil {
		return err
	}
	if *asJSON {
		err = writeBacktestJSON(stdout, r)
	} else {
		err = writeBacktestTable(stdout, r, desc)
	}
	if err != nil {
		return err
	}
	alerts := r.Alerts(quotas.AlertThresholds{MaxFraction: float64(alertFraction), MinTrainUserDays: *minTrain})
	for _, a := range alerts {
		fmt.Fprintln(stderr, "ALERT:", a)
	}
	if len(alerts) > 0 {
		return errAlert
	}
	return nil
}

func writeBacktestJSON(w io.Writer, r *quotas.BacktestReport) error {
	endpoints := r.Endpoints
	if endpoints == nil {
		endpoints = []quotas.EndpointBacktest{}
	}
	b, err := json.MarshalIndent(endpoints, "", "  ")
	if err != nil {
		return err
	}
	_, err = w.Write(append(b, '\n'))
	return err
}

func writeBacktestTable(w io.Writer, r *quotas.BacktestReport, desc string) error {
	fmt.Fprintf(w, "# source: %s\n", desc)
	fmt.Fprintf(w, "# training %s (%d non-malicious user-days), test %s, percentile %s; quota \"-\": not in training\n",
		r.Train, r.TrainUserDays, r.Test, strconv.FormatFloat(r.Percentile, 'g', -1, 64))
	tw := tabwriter.NewWriter(w, 0, 0, 2, ' ', 0)
	tiered := slices.ContainsFunc(r.Endpoints, func(e quotas.EndpointBacktest) bool { return e.Tier != "" })
	if tiered {
		fmt.Fprint(tw, "tier\t")
	}
	fmt.Fprintln(tw, "endpoint_url\tquota\ttotal_usage\tnum_rate_limited\tfraction\ttrain_user_days\tmalicious_usage\tmalicious_rate_limited")
	for _, e := range append(slices.Clip(r.Endpoints), r.Total()) {
		quota := "-"
		if e.Quota != nil {
			quota = quotas.FormatQuota(*e.Quota)
		}
		if tiered {
			fmt.Fprintf(tw, "%s\t", cmp.Or(e.Tier, "-"))
		}
		fmt.Fprintf(tw, "%s\t%s\t%d\t%d\t%.4f\t%d\t%d\t%d\n", e.Endpoint, quota, e.TotalUsage, e.NumRateLimited,
			e.Fraction, e.TrainUserDays, e.MaliciousUsage, e.MaliciousRateLimited)
	}
	return tw.Flush()
}
