package quotas

import (
	"context"
	"fmt"
	"slices"
	"strings"

	"github.com/jackc/pgx/v5"
)

// UsageTableName is the PostgreSQL table a PostgresSource reads:
//
//	CREATE TABLE endpoint_usage (endpoint_url text, user_id text,
//	    daily_requests bigint, date date, malicious boolean)
//
// Rows with a NULL endpoint_url, user_id, date or daily_requests are
// ignored; a NULL malicious counts as false (not labelled).
const UsageTableName = "endpoint_usage"

// PostgresSource is usage in a PostgreSQL table, with quotas and counts
// computed in SQL (percentile_cont) rather than by reading the rows out.
// It gives the same answers as a UsageTable holding the same rows. It
// holds one connection and is not safe for concurrent use.
type PostgresSource struct {
	conn *pgx.Conn
}

// IsPostgresDSN reports whether src names a PostgreSQL database
// (postgres:// or postgresql://) rather than a file.
func IsPostgresDSN(src string) bool {
	return strings.HasPrefix(src, "postgres://") || strings.HasPrefix(src, "postgresql://")
}

// OpenPostgres connects to the database dsn names. ctx bounds the
// connection attempt only.
func OpenPostgres(ctx context.Context, dsn string) (*PostgresSource, error) {
	conn, err := pgx.Connect(ctx, dsn)
	if err != nil {
		return nil, fmt.Errorf("quotas: connect to postgres: %w", err)
	}
	return &PostgresSource{conn: conn}, nil
}

// Close closes the connection.
func (s *PostgresSource) Close(ctx context.Context) error { return s.conn.Close(ctx) }

// userDaysSQL merges the rows of each user-day in the window ($1, $2], as
// NewUsageTable does.
const userDaysSQL = `WITH user_days AS (
	SELECT endpoint_url, sum(daily_requests)::float8 AS requests, coalesce(bool_or(malicious), false) AS malicious
	FROM ` + UsageTableName + `
	WHERE date > $1::date AND date <= $2::date
	  AND endpoint_url IS NOT NULL AND user_id IS NOT NULL AND daily_requests IS NOT NULL
	GROUP BY endpoint_url, user_id, date
)
`

const quotasSQL = userDaysSQL + `SELECT endpoint_url, percentile_cont($3::float8) WITHIN GROUP (ORDER BY requests), count(*)
FROM user_days
WHERE NOT malicious
GROUP BY endpoint_url`

const usageSQL = userDaysSQL + `SELECT d.endpoint_url,
	count(*) FILTER (WHERE NOT d.malicious),
	count(*) FILTER (WHERE NOT d.malicious AND d.requests > q.quota),
	count(*) FILTER (WHERE d.malicious),
	count(*) FILTER (WHERE d.malicious AND d.requests > q.quota)
FROM user_days d
LEFT JOIN unnest($3::text[], $4::float8[]) AS q(endpoint_url, quota) ON q.endpoint_url = d.endpoint_url
GROUP BY d.endpoint_url`

// Quotas fits the quotas in SQL; see [UsageSource].
func (s *PostgresSource) Quotas(ctx context.Context, w Window, p float64) ([]Quota, error) {
	if err := checkPercentile(p); err != nil {
		return nil, err
	}
	rows, err := s.conn.Query(ctx, quotasSQL, w.After.String(), w.Through.String(), p)
	if err != nil {
		return nil, fmt.Errorf("quotas: quotas query: %w", err)
	}
	quotas, err := pgx.CollectRows(rows, func(r pgx.CollectableRow) (Quota, error) {
		var q Quota
		err := r.Scan(&q.Endpoint, &q.Quota, &q.UserDays)
		return q, err
	})
	if err != nil {
		return nil, fmt.Errorf("quotas: quotas query: %w", err)
	}
	// Sorted here, not by ORDER BY: the database's collation is not Go's.
	slices.SortFunc(quotas, func(a, b Quota) int { return strings.Compare(a.Endpoint, b.Endpoint) })
	return quotas, nil
}

// Usage counts in SQL; see [UsageSource].
func (s *PostgresSource) Usage(ctx context.Context, w Window, quotas []Quota) ([]Usage, error) {
	endpoints := make([]string, len(quotas))
	values := make([]float64, len(quotas))
	for i, q := range quotas {
		endpoints[i], values[i] = q.Endpoint, q.Quota
	}
	rows, err := s.conn.Query(ctx, usageSQL, w.After.String(), w.Through.String(), endpoints, values)
	if err != nil {
		return nil, fmt.Errorf("quotas: usage query: %w", err)
	}
	usage, err := pgx.CollectRows(rows, func(r pgx.CollectableRow) (Usage, error) {
		var u Usage
		err := r.Scan(&u.Endpoint, &u.UserDays, &u.OverQuota, &u.MaliciousUserDays, &u.MaliciousOverQuota)
		return u, err
	})
	if err != nil {
		return nil, fmt.Errorf("quotas: usage query: %w", err)
	}
	slices.SortFunc(usage, func(a, b Usage) int { return strings.Compare(a.Endpoint, b.Endpoint) })
	return usage, nil
}
