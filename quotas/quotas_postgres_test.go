package quotas

import (
	"context"
	"encoding/csv"
	"math"
	"os"
	"testing"
	"time"

	"github.com/devflow/flowguard/internal/testpg"
	"github.com/jackc/pgx/v5"
)

// The PostgreSQL source, computing in SQL, gives the quotas (to 1e-9) and
// the backtests the CSV source computes in Go, on the same rows: the hand
// CSV (with its duplicate rows loaded as they are), synthetic usage with
// many duplicates, and the real access log.
func TestQuotaPostgresMatchesCSV(t *testing.T) {
	srv := testpg.Start(t)
	ctx := context.Background()
	conn := srv.Conn(ctx)
	if _, err := conn.Exec(ctx, `CREATE TABLE endpoint_usage (endpoint_url text NOT NULL, user_id text NOT NULL,
		daily_requests bigint NOT NULL, date date NOT NULL, malicious boolean NOT NULL)`); err != nil {
		t.Fatal(err)
	}
	pg, err := OpenPostgres(ctx, srv.DSN())
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { pg.Close(context.Background()) })

	logTable, _, err := ReadAccessLog(realLog, AccessLogOptions{BotsMalicious: true})
	if err != nil {
		t.Fatal(err)
	}
	datasets := map[string]struct {
		rows      []UsageRow
		backtests []BacktestConfig
	}{
		"hand": {rawCSVRows(t, handCSV), []BacktestConfig{
			{TrainUntil: mustDay(t, "2026-03-05"), TestUntil: mustDay(t, "2026-03-08"), Lookback: 5, Percentile: 0.9375},
			{TrainUntil: mustDay(t, "2026-03-05"), TestUntil: mustDay(t, "2026-03-09"), Lookback: 6, Percentile: 0.99},
			{TrainUntil: mustDay(t, "2026-03-03"), TestUntil: mustDay(t, "2026-03-06"), Lookback: 30, Percentile: 0},
			{TrainUntil: mustDay(t, "2026-03-07"), TestUntil: mustDay(t, "2026-03-30"), Lookback: 2, Percentile: 1},
		}},
		"synthetic": {syntheticUsage(usageShape{rows: 20_000, endpoints: 7, users: 300, days: 20, seed: 2}), []BacktestConfig{
			{TrainUntil: 20454 + 13, TestUntil: 20454 + 19, Lookback: 14, Percentile: 0.99},
			{TrainUntil: 20454 + 9, TestUntil: 20454 + 12, Lookback: 3, Percentile: 0.5},
			{TrainUntil: 20454 + 9, TestUntil: 20454 + 30, Lookback: 1, Percentile: 0.123},
		}},
		"access log": {logTable.Rows(), []BacktestConfig{
			{TrainUntil: mustDay(t, "2015-05-18"), TestUntil: mustDay(t, "2015-05-20"), Lookback: 2, Percentile: 0.99},
			{TrainUntil: mustDay(t, "2015-05-17"), TestUntil: mustDay(t, "2015-05-18"), Lookback: 30, Percentile: 0.9},
		}},
	}
	for name, ds := range datasets {
		t.Run(name, func(t *testing.T) {
			load(t, conn, ds.rows)
			mem, err := NewUsageTable(ds.rows)
			if err != nil {
				t.Fatal(err)
			}
			if name != "access log" && len(mem.Rows()) == len(ds.rows) {
				t.Fatal("no two rows of one user-day: the SQL merge goes untested")
			}
			for _, c := range ds.backtests {
				train := WindowUntil(c.TrainUntil, c.Lookback)
				want, err := mem.Quotas(ctx, train, c.Percentile)
				if err != nil {
					t.Fatal(err)
				}
				got, err := pg.Quotas(ctx, train, c.Percentile)
				if err != nil {
					t.Fatal(err)
				}
				if len(got) != len(want) || len(want) == 0 {
					t.Fatalf("%+v: %d quotas from postgres, %d from memory", c, len(got), len(want))
				}
				for i := range want {
					g, w := got[i], want[i]
					if g.Endpoint != w.Endpoint || g.UserDays != w.UserDays || math.Abs(g.Quota-w.Quota) > 1e-9 {
						t.Errorf("%+v: postgres %+v, memory %+v", c, g, w)
					}
				}
				wantReport, err := Backtest(ctx, mem, c)
				if err != nil {
					t.Fatal(err)
				}
				gotReport, err := Backtest(ctx, pg, c)
				if err != nil {
					t.Fatal(err)
				}
				if gotReport.TrainUserDays != wantReport.TrainUserDays {
					t.Errorf("%+v: %d training user-days from postgres, %d from memory", c, gotReport.TrainUserDays, wantReport.TrainUserDays)
				}
				checkBacktest(t, gotReport.Endpoints, wantReport.Endpoints, 1e-9)
			}
		})
	}
}

// rawCSVRows reads a usage CSV's rows as they are, duplicates unmerged.
func rawCSVRows(t *testing.T, path string) []UsageRow {
	f, err := os.Open(path)
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	recs, err := csv.NewReader(f).ReadAll()
	if err != nil {
		t.Fatal(err)
	}
	var rows []UsageRow
	for _, rec := range recs[1:] {
		r, _, err := parseUsageRecord(rec)
		if err != nil {
			t.Fatal(err)
		}
		rows = append(rows, r)
	}
	return rows
}

func load(t *testing.T, conn *pgx.Conn, rows []UsageRow) {
	ctx := context.Background()
	if _, err := conn.Exec(ctx, "TRUNCATE endpoint_usage"); err != nil {
		t.Fatal(err)
	}
	n, err := conn.CopyFrom(ctx, pgx.Identifier{"endpoint_usage"},
		[]string{"endpoint_url", "user_id", "daily_requests", "date", "malicious"},
		pgx.CopyFromSlice(len(rows), func(i int) ([]any, error) {
			r := rows[i]
			return []any{r.Endpoint, r.User, r.Requests, time.Unix(int64(r.Day)*86400, 0).UTC(), r.Malicious}, nil
		}))
	if err != nil || n != int64(len(rows)) {
		t.Fatalf("copied %d of %d rows: %v", n, len(rows), err)
	}
}
