package quotas

import (
	"context"
	"math"
	"math/rand/v2"
	"strconv"
	"strings"
	"testing"
)

// usageShape sizes synthetic usage.
type usageShape struct {
	rows, endpoints, users, days int
	seed                         uint64
}

// syntheticUsage draws rows of usage: log-normal daily requests (median
// about 20), 2% of rows malicious with 50 times the requests. Rows may
// repeat a (endpoint, user, day), as regions' exports do. Day 1 is
// 2026-01-01.
func syntheticUsage(s usageShape) []UsageRow {
	rng := rand.New(rand.NewPCG(s.seed, 4))
	first := Day(20454) // 2026-01-01
	endpoints := make([]string, s.endpoints)
	for i := range endpoints {
		endpoints[i] = "/v1/e" + strconv.Itoa(i)
	}
	users := make([]string, s.users)
	for i := range users {
		users[i] = "u" + strconv.Itoa(i)
	}
	rows := make([]UsageRow, s.rows)
	for i := range rows {
		r := UsageRow{
			Endpoint: endpoints[rng.IntN(s.endpoints)],
			User:     users[rng.IntN(s.users)],
			Day:      first + Day(rng.IntN(s.days)),
			Requests: int64(math.Exp(3 + rng.NormFloat64())),
		}
		if rng.IntN(50) == 0 {
			r.Malicious, r.Requests = true, r.Requests*50
		}
		rows[i] = r
	}
	return rows
}

// BenchmarkQuotaFit fits 20 endpoints on 1M user-days (30 days of 50k
// users): the figure to watch is ns/row.
func BenchmarkQuotaFit(b *testing.B) {
	table, err := NewUsageTable(syntheticUsage(usageShape{rows: 1_000_000, endpoints: 20, users: 50_000, days: 30, seed: 1}))
	if err != nil {
		b.Fatal(err)
	}
	n := len(table.rows)
	cfg := FitConfig{Until: 20454 + 29, Lookback: 30, Percentile: 0.99}
	ctx := context.Background()
	b.ReportAllocs()
	b.ResetTimer()
	for b.Loop() {
		if _, err := Fit(ctx, table, cfg); err != nil {
			b.Fatal(err)
		}
	}
	b.ReportMetric(float64(b.Elapsed().Nanoseconds())/float64(b.N)/float64(n), "ns/row")
}

// BenchmarkQuotaReadCSV parses and merges 1M CSV rows.
func BenchmarkQuotaReadCSV(b *testing.B) {
	rows := syntheticUsage(usageShape{rows: 1_000_000, endpoints: 20, users: 50_000, days: 30, seed: 1})
	var sb strings.Builder
	sb.WriteString(UsageCSVHeader + "\n")
	for _, r := range rows {
		sb.WriteString(r.Endpoint + "," + r.User + "," + strconv.FormatInt(r.Requests, 10) + "," + r.Day.String() + "," + strconv.FormatBool(r.Malicious) + "\n")
	}
	data := sb.String()
	b.SetBytes(int64(len(data)))
	b.ReportAllocs()
	b.ResetTimer()
	for b.Loop() {
		if _, err := ParseUsageCSV("bench.csv", strings.NewReader(data)); err != nil {
			b.Fatal(err)
		}
	}
	b.ReportMetric(float64(b.Elapsed().Nanoseconds())/float64(b.N)/float64(len(rows)), "ns/row")
}
