package main

import (
	"bytes"
	"context"
	"encoding/csv"
	"encoding/json"
	"os"
	"path/filepath"
	"regexp"
	"strings"
	"testing"
	"time"

	"github.com/devflow/flowguard/internal/config"
	"github.com/devflow/flowguard/internal/testpg"
	"github.com/devflow/flowguard/limiter"
	"github.com/devflow/flowguard/quotas"
	"github.com/jackc/pgx/v5"
)

// hand.csv's quotas and backtest are computed by hand in
// quotas/quotas_test.go (TestQuotaBacktestHandComputed and
// TestQuotaFitWindowBounds).
const (
	handCSV   = "../../quotas/testdata/quotas/hand.csv"
	accessLog = "../../features/testdata/apache_access_2015.log.gz"
)

func runQuotas(args ...string) (code int, stdout, stderr string) {
	var out, errOut bytes.Buffer
	code = run(append([]string{"quotas"}, args...), &out, &errOut)
	return code, out.String(), errOut.String()
}

func TestQuotasCLIErrors(t *testing.T) {
	backtest := []string{"backtest", "--usage", handCSV, "--train-until", "2026-03-05"}
	cases := map[string]struct {
		args   []string
		code   int
		stderr string
	}{
		"no verb":            {nil, 2, "usage: flowguard quotas fit"},
		"unknown verb":       {[]string{"predict"}, 2, "usage: flowguard quotas fit"},
		"fit help":           {[]string{"fit", "--help"}, 0, "-until DATE"},
		"fit no until":       {[]string{"fit", "--usage", handCSV}, 2, "flowguard quotas fit: --until DATE is required"},
		"fit bad date":       {[]string{"fit", "--usage", handCSV, "--until", "2026-13-01"}, 2, `invalid value "2026-13-01" for flag -until: "2026-13-01" is not a date (want YYYY-MM-DD)`},
		"fit bad percentile": {[]string{"fit", "--usage", handCSV, "--until", "2026-03-05", "--percentile", "99"}, 2, `invalid value "99" for flag -percentile: "99" is not a number between 0 and 1`},
		"fit bad lookback":   {[]string{"fit", "--usage", handCSV, "--until", "2026-03-05", "--lookback", "1w"}, 2, `"1w" is not a number of days between 1d and 3660d`},
		"fit no source":      {[]string{"fit", "--until", "2026-03-05"}, 2, "give one of --usage SRC and --access-log FILE"},
		"fit two sources":    {[]string{"fit", "--usage", handCSV, "--access-log", accessLog, "--until", "2026-03-05"}, 2, "give one of --usage SRC and --access-log FILE"},
		"fit bots with csv":  {[]string{"fit", "--usage", handCSV, "--bots-malicious", "--until", "2026-03-05"}, 2, "--bots-malicious goes with --access-log"},
		"fit stray argument": {[]string{"fit", "--usage", handCSV, "--until", "2026-03-05", "extra"}, 2, `unexpected argument "extra"`},
		"fit missing file":   {[]string{"fit", "--usage", "nope.csv", "--until", "2026-03-05"}, 1, "flowguard: nope.csv: cannot read: no such file or directory"},
		"fit bad csv": {[]string{"fit", "--usage", "../../quotas/testdata/quotas/bad_number.csv", "--until", "2026-03-05"}, 1,
			`bad_number.csv:3: column 3 (daily_requests): "12.5" is not a whole number`},
		"fit empty window": {[]string{"fit", "--usage", handCSV, "--until", "2025-01-01"}, 1,
			"quotas fit: no non-malicious user-days in the training window 2024-12-03..2025-01-01"},
		"backtest no test-until":  {backtest, 2, "--train-until DATE and --test-until DATE are required"},
		"backtest test too early": {append(backtest, "--test-until", "2026-03-05"), 2, "--test-until 2026-03-05 must be after --train-until 2026-03-05"},
		"backtest bad fraction":   {append(backtest, "--test-until", "2026-03-08", "--alert-fraction", "-1"), 2, `invalid value "-1" for flag -alert-fraction`},
		"backtest bad log": {[]string{"backtest", "--access-log", handCSV, "--train-until", "2026-03-05", "--test-until", "2026-03-08"}, 1,
			"hand.csv:1: no client address"},
	}
	for name, c := range cases {
		t.Run(name, func(t *testing.T) {
			code, _, stderr := runQuotas(c.args...)
			if code != c.code || !strings.Contains(stderr, c.stderr) {
				t.Fatalf("exit %d, want %d; stderr %q lacks %q", code, c.code, stderr, c.stderr)
			}
		})
	}
}

// The fit of hand.csv with the defaults (p = 0.99) over 5 days: payments
// 49.2 → rate 49, messages 6.94 → 6, refunds 4 → 4. The YAML goes under a
// tier's endpoints as it is, and the service then enforces it.
func TestQuotasFitCLI(t *testing.T) {
	code, out, stderr := runQuotas("fit", "--usage", handCSV, "--until", "2026-03-05", "--lookback", "5d")
	if code != 0 {
		t.Fatalf("exit %d: %s", code, stderr)
	}
	for _, want := range []string{
		"# source: usage CSV " + handCSV + "\n",
		"# until: 2026-03-05, lookback: 5d: training days 2026-03-01..2026-03-05 (both inclusive)\n",
		"# percentile: 0.99, PERCENTILE_CONT",
		"# user-days: 14 (non-malicious, in the training window)\n",
		"  # quota 49.2 from 9 user-days\n",
		"  # quota 4 from 1 user-day\n",
	} {
		if !strings.Contains(out, want) {
			t.Errorf("output lacks %q:\n%s", want, out)
		}
	}
	var cfg strings.Builder
	cfg.WriteString("policies:\n  tiers:\n    free:\n      rate: 60\n      period: 1m\n")
	for _, line := range strings.Split(strings.TrimSuffix(out, "\n"), "\n") {
		cfg.WriteString("      " + line + "\n")
	}
	loaded, err := config.Parse("with-quotas.yaml", []byte(cfg.String()))
	if err != nil {
		t.Fatalf("%v\n%s", err, cfg.String())
	}
	for endpoint, rate := range map[string]int64{"/v1/payments": 49, "/v1/messages": 6, "/v1/refunds": 4, "/v1/reports": 60} {
		l := loaded.Policies.Resolve("", "GET "+endpoint).Limit
		period := 24 * time.Hour
		if endpoint == "/v1/reports" { // no quota: the tier's budget
			period = time.Minute
		}
		if l != (limiter.Limit{Rate: rate, Burst: rate, Period: period}) {
			t.Errorf("%s: %+v, want %d per %s", endpoint, l, rate, period)
		}
	}

	// An endpoint the policy file cannot hold: the YAML is still written,
	// with a warning naming the problem.
	odd := filepath.Join(t.TempDir(), "odd.csv")
	os.WriteFile(odd, []byte(quotas.UsageCSVHeader+"\npayments,u1,10,2026-03-01,false\n"), 0o644)
	code, out2, stderr := runQuotas("fit", "--usage", odd, "--until", "2026-03-01")
	if code != 0 || !strings.Contains(out2, `"payments":`) ||
		!strings.Contains(stderr, `warning: the quotas do not load under a policy's endpoints: line 12: endpoints.payments: endpoint pattern must be "/path"`) {
		t.Errorf("bad endpoint: exit %d, stderr %q\n%s", code, stderr, out2)
	}

	path := filepath.Join(t.TempDir(), "quotas.yaml")
	code, stdout, stderr := runQuotas("fit", "--usage", handCSV, "--until", "2026-03-05", "--lookback", "5", "--out", path)
	written, _ := os.ReadFile(path)
	if code != 0 || stdout != "" || string(written) != out || !strings.Contains(stderr, "3 endpoint quotas from 14 user-days") {
		t.Fatalf("--out: exit %d, stdout %q, stderr %q, file:\n%s", code, stdout, stderr, written)
	}
}

// The backtest of hand.csv at p = 0.9375 (by hand in fallback's
// TestQuotaBacktestHandComputed): messages 6.625, 2 of 5; payments 45, 3
// of 6; refunds 4, no test usage; reports no quota, 1 user-day.
func TestQuotasBacktestCLI(t *testing.T) {
	args := []string{"backtest", "--usage", handCSV, "--train-until", "2026-03-05", "--test-until", "2026-03-08",
		"--lookback", "5d", "--percentile", "0.9375"}
	code, out, stderr := runQuotas(append(args, "--json")...)
	if code != 3 {
		t.Fatalf("exit %d, want 3 (alerts): %s", code, stderr)
	}
	wantAlerts := "ALERT: training window 2026-03-01..2026-03-05 has 14 non-malicious user-days, fewer than the expected minimum of 100\n" +
		"ALERT: /v1/messages: quota 6.625 rate-limited 2 of 5 legitimate user-days (40.00%), above 3.00%\n" +
		"ALERT: /v1/payments: quota 45 rate-limited 3 of 6 legitimate user-days (50.00%), above 3.00%\n"
	if stderr != wantAlerts {
		t.Errorf("stderr:\n%s\nwant:\n%s", stderr, wantAlerts)
	}
	// The first five fields, in this order, are the contract.
	keys := regexp.MustCompile(`(?s)\{\s*"endpoint_url": [^,]+,\s*"quota": [^,]+,\s*"total_usage": \d+,\s*"num_rate_limited": \d+,\s*"fraction": [^,]+,`)
	if n := len(keys.FindAllString(out, -1)); n != 4 {
		t.Errorf("%d objects start with the five fields in order, want 4:\n%s", n, out)
	}
	type row struct {
		Endpoint       string   `json:"endpoint_url"`
		Quota          *float64 `json:"quota"`
		TotalUsage     int64    `json:"total_usage"`
		NumRateLimited int64    `json:"num_rate_limited"`
		Fraction       float64  `json:"fraction"`
	}
	var rows []row
	if err := json.Unmarshal([]byte(out), &rows); err != nil {
		t.Fatal(err)
	}
	f := func(v float64) *float64 { return &v }
	want := []row{
		{"/v1/messages", f(6.625), 5, 2, 0.4},
		{"/v1/payments", f(45), 6, 3, 0.5},
		{"/v1/refunds", f(4), 0, 0, 0},
		{"/v1/reports", nil, 1, 0, 0},
	}
	if len(rows) != len(want) {
		t.Fatalf("rows %+v", rows)
	}
	for i, w := range want {
		g := rows[i]
		if g.Endpoint != w.Endpoint || (g.Quota == nil) != (w.Quota == nil) || (g.Quota != nil && *g.Quota != *w.Quota) ||
			g.TotalUsage != w.TotalUsage || g.NumRateLimited != w.NumRateLimited || g.Fraction != w.Fraction {
			t.Errorf("row %+v, want %+v", g, w)
		}
	}

	// Thresholds at the values themselves: no alert, exit 0; the table.
	code, out, stderr = runQuotas(append(args, "--alert-fraction", "0.5", "--min-train-user-days", "14")...)
	if code != 0 || stderr != "" {
		t.Fatalf("exit %d: %s", code, stderr)
	}
	lines := strings.Split(strings.TrimSuffix(out, "\n"), "\n")
	wantRows := []string{
		"endpoint_url quota total_usage num_rate_limited fraction train_user_days malicious_usage malicious_rate_limited",
		"/v1/messages 6.625 5 2 0.4000 4 1 1",
		"/v1/payments 45 6 3 0.5000 9 1 1",
		"/v1/refunds 4 0 0 0.0000 1 0 0",
		"/v1/reports - 1 0 0.0000 0 0 0",
		"TOTAL - 12 5 0.4167 14 2 2",
	}
	if len(lines) != 2+len(wantRows) {
		t.Fatalf("table:\n%s", out)
	}
	col := strings.Index(lines[2], "quota")
	for i, w := range wantRows {
		l := lines[2+i]
		if strings.Join(strings.Fields(l), " ") != w {
			t.Errorf("line %q, want %q", l, w)
		}
		if l[col-2:col] != "  " || l[col] == ' ' {
			t.Errorf("line %q: quota column not at %d", l, col)
		}
	}
}

// The real log: train on 17–18 May 2015, test on 19–20 May. Every alert
// names an endpoint whose JSON fraction is above the threshold, and only
// those.
func TestQuotasAccessLogCLI(t *testing.T) {
	code, out, stderr := runQuotas("backtest", "--access-log", accessLog, "--train-until", "2015-05-18",
		"--test-until", "2015-05-20", "--lookback", "2d", "--json", "--bots-malicious", "--alert-fraction", "0.05")
	if code != 0 && code != 3 {
		t.Fatalf("exit %d: %s", code, stderr)
	}
	var rows []quotas.EndpointBacktest
	if err := json.Unmarshal([]byte(out), &rows); err != nil {
		t.Fatal(err)
	}
	var above []string
	for _, r := range rows {
		if !(r.Fraction >= 0 && r.Fraction <= 1) || r.NumRateLimited > r.TotalUsage {
			t.Errorf("%+v", r)
		}
		if r.Fraction > 0.05 {
			above = append(above, r.Endpoint)
		}
	}
	var alerted []string
	for _, l := range strings.Split(strings.TrimSpace(stderr), "\n") {
		if ep, ok := strings.CutPrefix(l, "ALERT: "); ok {
			ep, _, _ = strings.Cut(ep, ":")
			alerted = append(alerted, ep)
		}
	}
	if strings.Join(alerted, " ") != strings.Join(above, " ") || (code == 3) != (len(above) > 0) {
		t.Errorf("exit %d, alerts for %q, fractions above 5%% for %q", code, alerted, above)
	}
}

// Through the command line too, a PostgreSQL source gives what the CSV
// source gives on the same rows.
func TestQuotasPostgresCLI(t *testing.T) {
	srv := testpg.Start(t)
	ctx := context.Background()
	conn := srv.Conn(ctx)
	if _, err := conn.Exec(ctx, `CREATE TABLE endpoint_usage (endpoint_url text, user_id text, daily_requests bigint, date date, malicious boolean)`); err != nil {
		t.Fatal(err)
	}
	f, err := os.Open(handCSV)
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	recs, err := csv.NewReader(f).ReadAll()
	if err != nil {
		t.Fatal(err)
	}
	var rows [][]any
	for _, r := range recs[1:] { // text to the table's types, by PostgreSQL
		rows = append(rows, []any{r[0], r[1], r[2], r[3], r[4]})
	}
	if _, err := conn.CopyFrom(ctx, pgx.Identifier{"endpoint_usage"}, recs[0], pgx.CopyFromRows(rows)); err != nil {
		t.Fatal(err)
	}
	dsn := srv.DSN()
	for name, args := range map[string][]string{
		"fit":      {"fit", "--until", "2026-03-05", "--lookback", "5d"},
		"backtest": {"backtest", "--train-until", "2026-03-05", "--test-until", "2026-03-08", "--lookback", "5d", "--json"},
	} {
		t.Run(name, func(t *testing.T) {
			codeCSV, outCSV, errCSV := runQuotas(append(args, "--usage", handCSV)...)
			codePG, outPG, errPG := runQuotas(append(args, "--usage", dsn)...)
			source := regexp.MustCompile(`(?m)^# source: .*\n`)
			if codeCSV != codePG || errCSV != errPG || source.ReplaceAllString(outCSV, "") != source.ReplaceAllString(outPG, "") {
				t.Errorf("CSV: exit %d\n%s%s\nPostgreSQL: exit %d\n%s%s", codeCSV, outCSV, errCSV, codePG, outPG, errPG)
			}
			if name == "fit" && !strings.Contains(outPG, "# source: PostgreSQL postgres://postgres@127.0.0.1:") {
				t.Errorf("source line:\n%s", outPG)
			}
		})
	}
}

// A usage file with a tier column gets quotas per tier × endpoint: one
// endpoints: block per tier in the fit, a tier column in the backtest.
func TestQuotasPerTierCLI(t *testing.T) {
	day, _ := quotas.ParseDay("2026-03-01")
	var rows []quotas.UsageRow
	for d := range quotas.Day(3) {
		for i := range 5 {
			rows = append(rows,
				quotas.UsageRow{Endpoint: "/a", User: "f" + string(rune('0'+i)), Day: day + d, Requests: int64(10 + i), Tier: "free"},
				quotas.UsageRow{Endpoint: "/a", User: "e" + string(rune('0'+i)), Day: day + d, Requests: int64(1000 + i), Tier: "enterprise"})
		}
	}
	path := filepath.Join(t.TempDir(), "tiers.csv")
	var buf bytes.Buffer
	if err := quotas.WriteUsageCSV(&buf, rows); err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(path, buf.Bytes(), 0o644); err != nil {
		t.Fatal(err)
	}
	out := filepath.Join(t.TempDir(), "quotas.yaml")
	if code, _, stderr := runQuotas("fit", "--usage", path, "--until", "2026-03-02", "--lookback", "2d", "--out", out); code != 0 {
		t.Fatalf("fit: %d %s", code, stderr)
	}
	y, _ := os.ReadFile(out)
	for _, want := range []string{"tiers:\n", "  enterprise:\n    endpoints:\n", "  free:\n    endpoints:\n", `"/a":`, "rate: 1004", "rate: 14"} {
		if !strings.Contains(string(y), want) {
			t.Errorf("fit output lacks %q:\n%s", want, y)
		}
	}
	code, stdout, stderr := runQuotas("backtest", "--usage", path, "--train-until", "2026-03-02", "--test-until", "2026-03-03", "--lookback", "2d")
	if code != 0 && code != 3 {
		t.Fatalf("backtest: %d %s", code, stderr)
	}
	if !strings.Contains(stdout, "tier  ") || !strings.Contains(stdout, "enterprise") || !strings.Contains(stdout, "free") {
		t.Errorf("backtest table has no tier column:\n%s", stdout)
	}
}
