package quotas

import (
	"bufio"
	"bytes"
	"compress/gzip"
	"context"
	"fmt"
	"math"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"testing"
	"time"
)

const handCSV = "testdata/quotas/hand.csv"

func mustDay(t testing.TB, s string) Day {
	t.Helper()
	d, err := ParseDay(s)
	if err != nil {
		t.Fatal(err)
	}
	return d
}

func readHand(t testing.TB) *UsageTable {
	t.Helper()
	table, err := ReadUsageCSV(handCSV)
	if err != nil {
		t.Fatal(err)
	}
	return table
}

// The backtest of testdata/quotas/hand.csv, computed by hand.
//
// Training: train-until 2026-03-05, lookback 5 days → (02-28, 03-05], the
// days 03-01..03-05. Test: (03-05, 03-08], the days 03-06..03-08. The
// percentile is p = 15/16 = 0.9375, chosen so that p·(n−1) is exact in
// binary and the quotas below are exact.
//
// /v1/payments, training, non-malicious user-days:
//
//	03-01 u1 10, u2 20 · 03-02 u1 12, u3 30 · 03-03 u2 10+8 = 18 (two rows,
//	summed), u4 40 · 03-04 u1 11 · 03-05 u3 25, u6 50
//	(left out: u1 500 on 02-28, outside; u5 1000 on 03-04, malicious)
//	sorted: 10 11 12 18 20 25 30 40 50, n = 9
//	pos = 0.9375·8 = 7.5 → 40 + 0.5·(50−40) = 45
//
// test: 03-06 u1 44, u2 45 (= quota: served), u3 46 · 03-07 u1 100, u4 5 ·
// 03-08 u6 60 (left out: u1 999 on 03-09, outside), malicious u5 2000 on
// 03-08. Over 45: 46, 100, 60 → 3 of 6 = 0.5; malicious 1 of 1.
//
// /v1/messages, training: 03-01 u1 3 · 03-02 u2 7 · 03-04 u3 5 · 03-05 u4 1
// (u5 300 on 03-03 is malicious); sorted 1 3 5 7, n = 4,
// pos = 0.9375·3 = 2.8125 → 5 + 0.8125·(7−5) = 6.625.
// test: 6, 7, 6, 20, 0 (u1, u2, u3, u4, u6) → over 6.625: 7 and 20 → 2 of 5
// = 0.4; malicious u5 400 → 1 of 1.
//
// /v1/refunds: one training user-day, u2 4 on 03-02 → quota 4 (n = 1);
// no test usage.
// /v1/reports: only u1 9 on 03-07, in the test window → no quota, 1 user-day,
// none rate-limited.
//
// Training user-days: 9 + 4 + 1 = 14.
func TestQuotaBacktestHandComputed(t *testing.T) {
	got, err := Backtest(context.Background(), readHand(t), BacktestConfig{
		TrainUntil: mustDay(t, "2026-03-05"), TestUntil: mustDay(t, "2026-03-08"), Lookback: 5, Percentile: 0.9375,
	})
	if err != nil {
		t.Fatal(err)
	}
	q := func(v float64) *float64 { return &v }
	want := []EndpointBacktest{
		{Endpoint: "/v1/messages", Quota: q(6.625), TotalUsage: 5, NumRateLimited: 2, Fraction: 0.4, TrainUserDays: 4, MaliciousUsage: 1, MaliciousRateLimited: 1},
		{Endpoint: "/v1/payments", Quota: q(45), TotalUsage: 6, NumRateLimited: 3, Fraction: 0.5, TrainUserDays: 9, MaliciousUsage: 1, MaliciousRateLimited: 1},
		{Endpoint: "/v1/refunds", Quota: q(4), TrainUserDays: 1},
		{Endpoint: "/v1/reports", TotalUsage: 1},
	}
	checkBacktest(t, got.Endpoints, want, 0)
	if got.TrainUserDays != 14 {
		t.Errorf("training user-days %d, want 14", got.TrainUserDays)
	}
	if got.Train.String() != "2026-03-01..2026-03-05" || got.Test.String() != "2026-03-06..2026-03-08" {
		t.Errorf("windows %s, %s", got.Train, got.Test)
	}
	total := got.Total()
	if total.TotalUsage != 12 || total.NumRateLimited != 5 || total.MaliciousUsage != 2 || total.MaliciousRateLimited != 2 {
		t.Errorf("total %+v, want 12 user-days, 5 limited, 2 malicious, 2 limited", total)
	}

	alerts := got.Alerts(AlertThresholds{MaxFraction: 0.45, MinTrainUserDays: 15})
	wantAlerts := []string{
		"training window 2026-03-01..2026-03-05 has 14 non-malicious user-days, fewer than the expected minimum of 15",
		"/v1/payments: quota 45 rate-limited 3 of 6 legitimate user-days (50.00%), above 45.00%",
	}
	if strings.Join(alerts, "\n") != strings.Join(wantAlerts, "\n") {
		t.Errorf("alerts:\n%s\nwant:\n%s", strings.Join(alerts, "\n"), strings.Join(wantAlerts, "\n"))
	}
	if a := got.Alerts(AlertThresholds{MaxFraction: 0.5, MinTrainUserDays: 14}); len(a) != 0 {
		t.Errorf("thresholds at the values themselves raised %q", a)
	}
}

// checkBacktest compares reports, quotas to within tol.
func checkBacktest(t *testing.T, got, want []EndpointBacktest, tol float64) {
	t.Helper()
	if len(got) != len(want) {
		names := func(es []EndpointBacktest) (s []string) {
			for _, e := range es {
				s = append(s, e.Endpoint)
			}
			return s
		}
		t.Fatalf("endpoints %q, want %q", names(got), names(want))
	}
	for i := range want {
		g, w := got[i], want[i]
		switch {
		case (g.Quota == nil) != (w.Quota == nil):
			t.Errorf("%s: quota %v, want %v", w.Endpoint, fmtQuota(g.Quota), fmtQuota(w.Quota))
		case g.Quota != nil && math.Abs(*g.Quota-*w.Quota) > tol:
			t.Errorf("%s: quota %v, want %v", w.Endpoint, *g.Quota, *w.Quota)
		}
		g.Quota, w.Quota = nil, nil
		if g != w {
			t.Errorf("got  %+v\nwant %+v", g, w)
		}
	}
}

func fmtQuota(q *float64) string {
	if q == nil {
		return "none"
	}
	return FormatQuota(*q)
}

// A fit's window is (until − lookback, until]: one more day of lookback
// takes in u1's 500 on 02-28. Payments then has 10 values, sorted
// 10 11 12 18 20 25 30 40 50 500; pos = 0.9375·9 = 8.4375 →
// 50 + 0.4375·450 = 246.875. With the default p = 0.99 and 5 days:
// pos = 0.99·8 = 7.92 → 40 + 0.92·10 = 49.2; messages 0.99·3 = 2.97 →
// 5 + 0.97·2 = 6.94.
func TestQuotaFitWindowBounds(t *testing.T) {
	table := readHand(t)
	until := mustDay(t, "2026-03-05")
	fit, err := Fit(context.Background(), table, FitConfig{Until: until, Lookback: 6, Percentile: 0.9375})
	if err != nil {
		t.Fatal(err)
	}
	if q := fit.Quotas[1]; q.Endpoint != "/v1/payments" || q.Quota != 246.875 || q.UserDays != 10 {
		t.Errorf("6-day lookback: %+v, want /v1/payments 246.875 from 10 user-days", q)
	}
	fit, err = Fit(context.Background(), table, FitConfig{Until: until, Lookback: 5, Percentile: 0.99})
	if err != nil {
		t.Fatal(err)
	}
	want := []Quota{{"/v1/messages", 6.94, 4, ""}, {"/v1/payments", 49.2, 9, ""}, {"/v1/refunds", 4, 1, ""}}
	if len(fit.Quotas) != len(want) || fit.UserDays != 14 {
		t.Fatalf("quotas %+v from %d user-days", fit.Quotas, fit.UserDays)
	}
	for i, w := range want {
		g := fit.Quotas[i]
		if g.Endpoint != w.Endpoint || math.Abs(g.Quota-w.Quota) > 1e-9 || g.UserDays != w.UserDays {
			t.Errorf("quota %+v, want %+v", g, w)
		}
	}
	// The last day is in the window, the day before the first is not.
	fit, err = Fit(context.Background(), table, FitConfig{Until: mustDay(t, "2026-03-01"), Lookback: 1, Percentile: 1})
	if err != nil {
		t.Fatal(err)
	}
	if fit.UserDays != 3 || fit.Quotas[1].Quota != 20 {
		t.Errorf("03-01 alone: %+v, want 3 user-days, payments max 20", fit)
	}
}

func TestQuotaConfigErrors(t *testing.T) {
	table := readHand(t)
	ctx := context.Background()
	d := mustDay(t, "2026-03-05")
	cases := map[string]struct {
		err func() error
		msg string
	}{
		"percentile above 1": {func() error { _, err := Fit(ctx, table, FitConfig{Until: d, Lookback: 5, Percentile: 1.5}); return err },
			"quotas: percentile must be between 0 and 1: got 1.5"},
		"percentile NaN": {func() error {
			_, err := Fit(ctx, table, FitConfig{Until: d, Lookback: 5, Percentile: math.NaN()})
			return err
		}, "quotas: percentile must be between 0 and 1: got NaN"},
		"zero lookback": {func() error { _, err := Fit(ctx, table, FitConfig{Until: d, Lookback: 0, Percentile: 0.5}); return err },
			"quotas: lookback 0 days must be at least 1"},
		"test before train": {func() error {
			_, err := Backtest(ctx, table, BacktestConfig{TrainUntil: d, TestUntil: d, Lookback: 5, Percentile: 0.5})
			return err
		}, "quotas: test-until 2026-03-05 must be after train-until 2026-03-05"},
	}
	for name, c := range cases {
		t.Run(name, func(t *testing.T) {
			if err := c.err(); err == nil || err.Error() != c.msg {
				t.Fatalf("error %v, want %q", err, c.msg)
			}
		})
	}
}

func TestQuotaPercentileCont(t *testing.T) {
	cases := map[string]struct {
		sorted []float64
		p      float64
		want   float64
	}{
		"n=1 p=0":                {[]float64{7}, 0, 7},
		"n=1 p=0.5":              {[]float64{7}, 0.5, 7},
		"n=1 p=1":                {[]float64{7}, 1, 7},
		"p=0 is the minimum":     {[]float64{1, 2, 10}, 0, 1},
		"p=1 is the maximum":     {[]float64{1, 2, 10}, 1, 10},
		"median of odd n":        {[]float64{1, 2, 10}, 0.5, 2},
		"median of even n":       {[]float64{1, 2, 10, 20}, 0.5, 6},        // pos 1.5: 2 + 0.5·8
		"quarter way":            {[]float64{0, 100}, 0.25, 25},            // pos 0.25
		"three quarters of gaps": {[]float64{10, 20, 30, 40, 50}, 0.8, 42}, // pos 3.2: 40 + 0.2·10
		"ties":                   {[]float64{5, 5, 5, 9}, 0.5, 5},          // pos 1.5 between two 5s
		"p=0.99 of 1..100":       {seq(1, 100), 0.99, 99.01},               // pos 98.01: 99 + 0.01·1
		"p=0.9 of 0..10":         {seq(0, 10), 0.9, 9},                     // pos 9
	}
	for name, c := range cases {
		t.Run(name, func(t *testing.T) {
			if got := PercentileCont(c.sorted, c.p); math.Abs(got-c.want) > 1e-9 {
				t.Fatalf("PercentileCont(%v, %g) = %v, want %v", c.sorted, c.p, got, c.want)
			}
		})
	}
	for _, bad := range []struct {
		sorted []float64
		p      float64
	}{{nil, 0.5}, {[]float64{1}, -0.1}, {[]float64{1}, 1.01}, {[]float64{1}, math.NaN()}} {
		if got := PercentileCont(bad.sorted, bad.p); !math.IsNaN(got) {
			t.Errorf("PercentileCont(%v, %g) = %v, want NaN", bad.sorted, bad.p, got)
		}
	}
}

func seq(from, to int) []float64 {
	var s []float64
	for i := from; i <= to; i++ {
		s = append(s, float64(i))
	}
	return s
}

func TestQuotaUsageTableMergesUserDays(t *testing.T) {
	d := mustDay(t, "2026-03-01")
	table, err := NewUsageTable([]UsageRow{
		{Endpoint: "/a", User: "u1", Day: d, Requests: 3},
		{Endpoint: "/a", User: "u1", Day: d, Requests: 4, Malicious: true}, // same user-day: 7, malicious
		{Endpoint: "/a", User: "u1", Day: d + 1, Requests: 5},              // another day
		{Endpoint: "/b", User: "u1", Day: d, Requests: 6},                  // another endpoint
		{Endpoint: "/a", User: "u2", Day: d, Requests: 0},
	})
	if err != nil {
		t.Fatal(err)
	}
	want := []UsageRow{
		{Endpoint: "/a", User: "u1", Day: d, Requests: 7, Malicious: true},
		{Endpoint: "/a", User: "u1", Day: d + 1, Requests: 5},
		{Endpoint: "/b", User: "u1", Day: d, Requests: 6},
		{Endpoint: "/a", User: "u2", Day: d, Requests: 0},
	}
	got := table.Rows()
	if len(got) != len(want) {
		t.Fatalf("rows %+v", got)
	}
	for i := range want {
		if got[i] != want[i] {
			t.Errorf("row %d: %+v, want %+v", i, got[i], want[i])
		}
	}
	for name, row := range map[string]UsageRow{
		"negative requests": {Endpoint: "/a", User: "u", Requests: -1},
		"empty endpoint":    {User: "u"},
		"empty user":        {Endpoint: "/a"},
	} {
		if _, err := NewUsageTable([]UsageRow{row}); err == nil {
			t.Errorf("%s: no error", name)
		}
	}
}

func TestQuotaCSVErrors(t *testing.T) {
	cases := map[string]string{
		"bad_header.csv":        `testdata/quotas/bad_header.csv:1: header is "endpoint_url,user,daily_requests,date,malicious", want "endpoint_url,user_id,daily_requests,date,malicious" or "endpoint_url,user_id,daily_requests,date,malicious,tier"`,
		"bad_number.csv":        `testdata/quotas/bad_number.csv:3: column 3 (daily_requests): "12.5" is not a whole number`,
		"bad_quoted_number.csv": `testdata/quotas/bad_quoted_number.csv:3: column 3 (daily_requests): "ten" is not a whole number`,
		"bad_date.csv":          `testdata/quotas/bad_date.csv:3: column 4 (date): "2026-02-30" is not a date (want YYYY-MM-DD)`,
		"bad_negative.csv":      `testdata/quotas/bad_negative.csv:4: column 3 (daily_requests): -4 is negative`,
		"bad_malicious.csv":     `testdata/quotas/bad_malicious.csv:2: column 5 (malicious): "maybe" is not a boolean (want true or false)`,
		"bad_fields.csv":        `testdata/quotas/bad_fields.csv:3: 4 fields, want 5 (endpoint_url,user_id,daily_requests,date,malicious)`,
		"bad_empty_user.csv":    `testdata/quotas/bad_empty_user.csv:2: column 2 (user_id): empty`,
		"bad_overflow.csv":      `testdata/quotas/bad_overflow.csv:3: requests of /v1/payments u1 2026-03-01 add up past 9223372036854775807`,
		"missing.csv":           `testdata/quotas/missing.csv: cannot read: no such file or directory`,
	}
	for file, want := range cases {
		t.Run(file, func(t *testing.T) {
			_, err := ReadUsageCSV("testdata/quotas/" + file)
			if err == nil || err.Error() != want {
				t.Fatalf("error:\n%v\nwant:\n%s", err, want)
			}
		})
	}
	for name, c := range map[string]struct{ data, want string }{
		"empty":           {"", "x.csv: empty, want the header \"endpoint_url,user_id,daily_requests,date,malicious\""},
		"short header":    {"endpoint_url,user_id\n", `x.csv:1: header is "endpoint_url,user_id", want "endpoint_url,user_id,daily_requests,date,malicious" or "endpoint_url,user_id,daily_requests,date,malicious,tier"`},
		"empty tier":      {UsageCSVTierHeader + "\n/a,u,1,2026-03-01,f,\n", `x.csv:2: column 6 (tier): empty`},
		"no tier column":  {UsageCSVTierHeader + "\n/a,u,1,2026-03-01,f\n", `x.csv:2: 5 fields, want 6 (endpoint_url,user_id,daily_requests,date,malicious,tier)`},
		"plus sign":       {UsageCSVHeader + "\n/a,u,+5,2026-03-01,f\n", `x.csv:2: column 3 (daily_requests): "+5" is not a whole number`},
		"out of range":    {UsageCSVHeader + "\n/a,u,99999999999999999999,2026-03-01,f\n", `x.csv:2: column 3 (daily_requests): 99999999999999999999 is out of range`},
		"short date":      {UsageCSVHeader + "\n/a,u,1,2026-3-01,f\n", `x.csv:2: column 4 (date): "2026-3-01" is not a date (want YYYY-MM-DD)`},
		"bare quote":      {UsageCSVHeader + "\n/a,u\"x,1,2026-03-01,f\n", `x.csv:2:5: bare " in non-quoted-field`},
		"empty endpoint":  {UsageCSVHeader + "\n,u,1,2026-03-01,f\n", `x.csv:2: column 1 (endpoint_url): empty`},
		"space in number": {UsageCSVHeader + "\n/a,u, 1,2026-03-01,f\n", `x.csv:2: column 3 (daily_requests): " 1" is not a whole number`},
	} {
		t.Run(name, func(t *testing.T) {
			_, err := ParseUsageCSV("x.csv", strings.NewReader(c.data))
			if err == nil || err.Error() != c.want {
				t.Fatalf("error:\n%v\nwant:\n%s", err, c.want)
			}
		})
	}
}

// A gzipped copy reads the same, whatever its name; a BOM and CRLF line
// ends (a spreadsheet's export) are accepted; booleans may be t/f.
func TestQuotaCSVGzipAndVariants(t *testing.T) {
	plain, err := os.ReadFile(handCSV)
	if err != nil {
		t.Fatal(err)
	}
	var gz bytes.Buffer
	zw := gzip.NewWriter(&gz)
	zw.Write(plain)
	zw.Close()
	path := filepath.Join(t.TempDir(), "usage.csv") // no .gz: detected by content
	if err := os.WriteFile(path, gz.Bytes(), 0o644); err != nil {
		t.Fatal(err)
	}
	zipped, err := ReadUsageCSV(path)
	if err != nil {
		t.Fatal(err)
	}
	variant := "\ufeff" + strings.ReplaceAll(strings.ReplaceAll(strings.ReplaceAll(string(plain), "\n", "\r\n"), ",false", ",f"), ",true", ",t")
	varied, err := ParseUsageCSV("variant.csv", strings.NewReader(variant))
	if err != nil {
		t.Fatal(err)
	}
	want := readHand(t).Rows()
	for name, table := range map[string]*UsageTable{"gzip": zipped, "variant": varied} {
		got := table.Rows()
		if len(got) != len(want) || len(want) != 32 { // 33 rows, one user-day in two
			t.Fatalf("%s: %d user-days, want %d and 32", name, len(got), len(want))
		}
		for i := range want {
			if got[i] != want[i] {
				t.Errorf("%s: row %d %+v, want %+v", name, i, got[i], want[i])
			}
		}
	}
}

func TestQuotaAccessLogLine(t *testing.T) {
	combined := `83.149.9.216 - - [17/May/2015:10:05:03 +0000] "GET /presentations/logstash-monitorama-2013/images/kibana-search.png HTTP/1.1" 200 203023 "http://semicomplete.com/presentations/logstash-monitorama-2013/" "Mozilla/5.0 (Macintosh)"`
	cases := map[string]struct {
		line           string
		client, ep, ua string
		day            string
		err            string
	}{
		"combined":           {line: combined, client: "83.149.9.216", ep: "/presentations", ua: "Mozilla/5.0 (Macintosh)", day: "2015-05-17"},
		"common":             {line: `10.0.0.1 - frank [10/Oct/2000:13:55:36 -0700] "GET /apache_pb.gif HTTP/1.0" 200 2326`, client: "10.0.0.1", ep: "/apache_pb.gif", day: "2000-10-10"},
		"root":               {line: `1.2.3.4 - - [17/May/2015:10:05:03 +0000] "GET / HTTP/1.1" 200 1 "-" "curl"`, client: "1.2.3.4", ep: "/", ua: "curl", day: "2015-05-17"},
		"query on root":      {line: `1.2.3.4 - - [17/May/2015:10:05:03 +0000] "GET /?p=1 HTTP/1.1" 200 1 "-" "curl"`, client: "1.2.3.4", ep: "/", ua: "curl", day: "2015-05-17"},
		"query on segment":   {line: `1.2.3.4 - - [17/May/2015:10:05:03 +0000] "GET /blog?tag=x HTTP/1.1" 200 1 "-" "curl"`, client: "1.2.3.4", ep: "/blog", ua: "curl", day: "2015-05-17"},
		"absolute form":      {line: `1.2.3.4 - - [17/May/2015:10:05:03 +0000] "GET http://example.com/files/a HTTP/1.1" 200 1 "-" "x"`, client: "1.2.3.4", ep: "/files", ua: "x", day: "2015-05-17"},
		"no path":            {line: `1.2.3.4 - - [17/May/2015:10:05:03 +0000] "OPTIONS * HTTP/1.1" 200 1 "-" "x"`, client: "1.2.3.4", ep: "", ua: "x", day: "2015-05-17"},
		"dash request":       {line: `1.2.3.4 - - [17/May/2015:10:05:03 +0000] "-" 408 0 "-" "-"`, client: "1.2.3.4", ep: "", ua: "-", day: "2015-05-17"},
		"UTC day":            {line: `1.2.3.4 - - [17/May/2015:23:30:00 -0200] "GET /a HTTP/1.1" 200 1`, client: "1.2.3.4", ep: "/a", day: "2015-05-18"},
		"escaped quote":      {line: `1.2.3.4 - - [17/May/2015:10:05:03 +0000] "GET /a HTTP/1.1" 200 1 "-" "say \"bot\""`, client: "1.2.3.4", ep: "/a", ua: `say \"bot\"`, day: "2015-05-17"},
		"cut-off user agent": {line: `46.118.127.106 - - [20/May/2015:12:05:17 +0000] "GET /scripts/x.py HTTP/1.1" 200 235 "-" "Mozilla/5.0 (compatible; Googlebot/2.1`, client: "46.118.127.106", ep: "/scripts", ua: "Mozilla/5.0 (compatible; Googlebot/2.1", day: "2015-05-20"},
		"no timestamp":       {line: `1.2.3.4 - - "GET / HTTP/1.1" 200 1`, err: "no [timestamp]"},
		"bad timestamp":      {line: `1.2.3.4 - - [17/Mai/2015:10:05:03 +0000] "GET / HTTP/1.1" 200 1`, err: `timestamp "17/Mai/2015:10:05:03 +0000", want like [17/May/2015:10:05:03 +0000]`},
		"no request":         {line: `1.2.3.4 - - [17/May/2015:10:05:03 +0000] 200 1`, err: `no "request" after the timestamp`},
		"open request":       {line: `1.2.3.4 - - [17/May/2015:10:05:03 +0000] "GET / HTTP/1.1 200 1`, err: "request has no closing quote"},
		"no status":          {line: `1.2.3.4 - - [17/May/2015:10:05:03 +0000] "GET / HTTP/1.1"`, err: "no status and size after the request"},
		"no client":          {line: ` - - [17/May/2015:10:05:03 +0000] "GET / HTTP/1.1" 200 1`, err: "no client address"},
	}
	for name, c := range cases {
		t.Run(name, func(t *testing.T) {
			e, err := ParseAccessLogLine(c.line)
			if c.err != "" {
				if err == nil || err.Error() != c.err {
					t.Fatalf("error %v, want %q", err, c.err)
				}
				return
			}
			if err != nil {
				t.Fatal(err)
			}
			if e.Client != c.client || e.Endpoint != c.ep || e.UserAgent != c.ua || DayOf(e.Time.UTC()).String() != c.day {
				t.Fatalf("got %+v (day %s), want client %q endpoint %q ua %q day %s", e, DayOf(e.Time.UTC()), c.client, c.ep, c.ua, c.day)
			}
		})
	}
	if !IsBot("Mozilla/5.0 (compatible; Googlebot/2.1)") || !IsBot("Baiduspider") || !IsBot("SomeCrawler/1") || IsBot("Mozilla/5.0 (Macintosh)") {
		t.Error("IsBot")
	}
	_, _, err := ParseAccessLog("x.log", strings.NewReader(combined+"\n\nnot a log line\n"), AccessLogOptions{})
	if err == nil || err.Error() != "x.log:3: no [timestamp]" {
		t.Errorf("error %v, want x.log:3: no [timestamp]", err)
	}
}

const realLog = "../features/testdata/apache_access_2015.log.gz"

// logTriple is one user-day of the real log, found by a parse that shares
// no code with ParseAccessLog.
type logTriple struct{ ip, endpoint, day string }

func independentParse(t *testing.T) (reqs map[logTriple]int64, bot map[logTriple]bool, lines int) {
	f, err := os.Open(realLog)
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	zr, err := gzip.NewReader(f)
	if err != nil {
		t.Fatal(err)
	}
	reqs, bot = make(map[logTriple]int64), make(map[logTriple]bool)
	sc := bufio.NewScanner(zr)
	for sc.Scan() {
		line := sc.Text()
		f := strings.Fields(line)
		ts, err := time.Parse("[02/Jan/2006", f[3][:12])
		if err != nil {
			t.Fatal(err)
		}
		path, _, _ := strings.Cut(f[6], "?")
		k := logTriple{f[0], "/" + strings.Split(path, "/")[1], ts.Format("2006-01-02")}
		reqs[k]++
		ua := strings.ToLower(strings.Split(line, `"`)[5])
		bot[k] = bot[k] || strings.Contains(ua, "bot") || strings.Contains(ua, "crawler") || strings.Contains(ua, "spider")
		lines++
	}
	return reqs, bot, lines
}

// The real log (17–20 May 2015): train on 17–18 May, test on 19–20 May.
func TestQuotaAccessLogBacktest(t *testing.T) {
	reqs, bot, lines := independentParse(t)
	const p = 0.99
	for _, bots := range []bool{false, true} {
		table, stats, err := ReadAccessLog(realLog, AccessLogOptions{BotsMalicious: bots})
		if err != nil {
			t.Fatal(err)
		}
		if stats.Requests != lines || stats.Skipped != 0 || len(table.Rows()) != len(reqs) {
			t.Fatalf("%+v, %d user-days; the log has %d lines, %d distinct (ip, segment, day)", stats, len(table.Rows()), lines, len(reqs))
		}
		r, err := Backtest(context.Background(), table, BacktestConfig{
			TrainUntil: mustDay(t, "2015-05-18"), TestUntil: mustDay(t, "2015-05-20"), Lookback: 2, Percentile: p,
		})
		if err != nil {
			t.Fatal(err)
		}
		// What the report should say, from the independent parse.
		type expect struct {
			train          []float64 // non-malicious training user-days' requests
			test, testBots []int64   // test user-days' requests
		}
		want := make(map[string]*expect)
		var trainTotal int64
		for k, n := range reqs {
			malicious := bots && bot[k]
			train := k.day == "2015-05-17" || k.day == "2015-05-18"
			if train && malicious {
				continue // neither fitted on nor tested
			}
			e := want[k.endpoint]
			if e == nil {
				e = &expect{}
				want[k.endpoint] = e
			}
			switch {
			case train && !malicious:
				e.train = append(e.train, float64(n))
				trainTotal++
			case !train && !malicious:
				e.test = append(e.test, n)
			case !train && malicious:
				e.testBots = append(e.testBots, n)
			}
		}
		if r.TrainUserDays != trainTotal {
			t.Errorf("bots %v: %d training user-days, want %d", bots, r.TrainUserDays, trainTotal)
		}
		if len(r.Endpoints) != len(want) {
			t.Errorf("bots %v: %d endpoints, want %d", bots, len(r.Endpoints), len(want))
		}
		for _, e := range r.Endpoints {
			w := want[e.Endpoint]
			if w == nil {
				t.Errorf("unexpected endpoint %q", e.Endpoint)
				continue
			}
			if !(e.Fraction >= 0 && e.Fraction <= 1) || e.NumRateLimited > e.TotalUsage {
				t.Errorf("%s: %d of %d, fraction %g", e.Endpoint, e.NumRateLimited, e.TotalUsage, e.Fraction)
			}
			if e.TotalUsage != int64(len(w.test)) || e.MaliciousUsage != int64(len(w.testBots)) || e.TrainUserDays != int64(len(w.train)) {
				t.Errorf("%s: usage %d/%d, training %d; want %d/%d, %d", e.Endpoint, e.TotalUsage, e.MaliciousUsage, e.TrainUserDays, len(w.test), len(w.testBots), len(w.train))
			}
			if (e.Quota == nil) != (len(w.train) == 0) {
				t.Errorf("%s: quota %s with %d training user-days", e.Endpoint, fmtQuota(e.Quota), len(w.train))
			}
			if e.Quota == nil {
				if e.NumRateLimited != 0 || e.MaliciousRateLimited != 0 {
					t.Errorf("%s: no quota, yet %d rate-limited", e.Endpoint, e.NumRateLimited)
				}
				continue
			}
			// A PERCENTILE_CONT lies between the smallest and the largest
			// value, and at most n−1−⌊p(n−1)⌋ values are above it.
			q, n := *e.Quota, len(w.train)
			lo, hi, above := math.Inf(1), math.Inf(-1), 0
			for _, v := range w.train {
				lo, hi = min(lo, v), max(hi, v)
				if v > q {
					above++
				}
			}
			if q < lo || q > hi || above > n-1-int(math.Floor(p*float64(n-1))) {
				t.Errorf("%s: quota %g outside [%g, %g] or %d of %d training values above it", e.Endpoint, q, lo, hi, above, n)
			}
			count := func(vs []int64) (over int64) {
				for _, v := range vs {
					if float64(v) > q {
						over++
					}
				}
				return over
			}
			if e.NumRateLimited != count(w.test) || e.MaliciousRateLimited != count(w.testBots) {
				t.Errorf("%s: %d and %d malicious rate-limited, want %d and %d", e.Endpoint, e.NumRateLimited, e.MaliciousRateLimited, count(w.test), count(w.testBots))
			}
		}
	}
}

// FuzzQuotaUsageCSV: any input parses or fails with an error naming the
// input; what parses is one row per user-day, with valid fields.
func FuzzQuotaUsageCSV(f *testing.F) {
	if data, err := os.ReadFile(handCSV); err == nil {
		f.Add(data)
	}
	f.Fuzz(func(t *testing.T, data []byte) {
		table, err := ParseUsageCSV("fuzz.csv", bytes.NewReader(data))
		if err != nil {
			if !strings.HasPrefix(err.Error(), "fuzz.csv:") {
				t.Fatalf("error does not name the input: %v", err)
			}
			return
		}
		seen := make(map[userDayKey]bool)
		for _, r := range table.Rows() {
			k := userDayKey{r.Endpoint, r.User, r.Day, r.Tier}
			if r.Endpoint == "" || r.User == "" || r.Requests < 0 || seen[k] {
				t.Fatalf("bad or repeated user-day %+v", r)
			}
			seen[k] = true
		}
	})
}

// FuzzQuotaAccessLogLine: any line parses or fails; an endpoint is "" or
// one path segment.
func FuzzQuotaAccessLogLine(f *testing.F) {
	f.Add(`83.149.9.216 - - [17/May/2015:10:05:03 +0000] "GET /presentations/x.png HTTP/1.1" 200 203023 "-" "Mozilla/5.0"`)
	f.Fuzz(func(t *testing.T, line string) {
		e, err := ParseAccessLogLine(line)
		if err != nil {
			return
		}
		if e.Client == "" || strings.Contains(e.Client, " ") {
			t.Fatalf("client %q", e.Client)
		}
		if ep := e.Endpoint; ep != "" && (ep[0] != '/' || strings.ContainsAny(ep[1:], "/?#")) {
			t.Fatalf("endpoint %q from target %q", ep, e.Target)
		}
	})
}

// Quotas per tier × endpoint: the same fit, grouped by the tier column;
// WriteUsageCSV writes what ParseUsageCSV reads back.
func TestQuotasPerTier(t *testing.T) {
	day, _ := ParseDay("2026-03-01")
	var rows []UsageRow
	for i := range 10 {
		rows = append(rows,
			UsageRow{Endpoint: "/a", User: fmt.Sprintf("f%d", i), Day: day, Requests: int64(10 + i), Tier: "free"},
			UsageRow{Endpoint: "/a", User: fmt.Sprintf("e%d", i), Day: day, Requests: int64(1000 + 100*i), Tier: "enterprise"})
	}
	var buf bytes.Buffer
	if err := WriteUsageCSV(&buf, rows); err != nil {
		t.Fatal(err)
	}
	if !strings.HasPrefix(buf.String(), UsageCSVTierHeader+"\n") {
		t.Fatalf("written without the tier header:\n%s", buf.String())
	}
	table, err := ParseUsageCSV("tiers.csv", &buf)
	if err != nil {
		t.Fatal(err)
	}
	fit, err := Fit(context.Background(), table, FitConfig{Until: day, Lookback: 1, Percentile: 0.5})
	if err != nil {
		t.Fatal(err)
	}
	want := []Quota{{"/a", 1450, 10, "enterprise"}, {"/a", 14.5, 10, "free"}}
	if !slices.Equal(fit.Quotas, want) {
		t.Fatalf("quotas %+v, want %+v", fit.Quotas, want)
	}
	pooled := slices.Clone(rows)
	for i := range pooled {
		pooled[i].Tier = ""
	}
	pt, _ := NewUsageTable(pooled)
	pf, err := Fit(context.Background(), pt, FitConfig{Until: day, Lookback: 1, Percentile: 0.5})
	if err != nil || len(pf.Quotas) != 1 || pf.Quotas[0].Quota != 509.5 {
		t.Fatalf("pooled quotas %+v (%v), want one of 509.5", pf, err)
	}
	rows[0].Tier = ""
	if err := WriteUsageCSV(&bytes.Buffer{}, rows); err == nil {
		t.Error("a row without a tier among rows with tiers was written")
	}
}
