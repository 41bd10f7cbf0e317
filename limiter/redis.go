package limiter

import (
	"context"
	_ "embed"
	"errors"
	"fmt"
	"time"

	"github.com/redis/go-redis/v9"
	"github.com/redis/go-redis/v9/maintnotifications"
)

//go:embed gcra.lua
var gcraLua string

var gcraScript = redis.NewScript(gcraLua)

// RedisOptions configures a RedisStore.
type RedisOptions struct {
	// Prefix starts every key. Default: "fg:".
	Prefix string
	// Timeout bounds each call. Default: 5ms.
	Timeout time.Duration
	// Clock supplies the decision time. Default: nil, meaning the Redis
	// server's clock, so instances with skewed clocks still agree.
	Clock func() time.Time
}

// RedisStore is the shared GCRA store: one EVALSHA per call, atomic on the
// server. It is safe for concurrent use.
type RedisStore struct {
	client  redis.Scripter // the only go-redis methods the store calls
	prefix  string
	timeout time.Duration
	clock   func() time.Time
}

// ErrRedisReply is returned when Redis answers with something the script
// cannot have produced.
var ErrRedisReply = errors.New("limiter: unexpected reply from redis")

// NewRedisStore returns a store over client: a *redis.Client, Ring,
// ClusterClient or any redis.UniversalClient.
func NewRedisStore(client redis.Scripter, opts RedisOptions) *RedisStore {
	s := &RedisStore{client: client, prefix: opts.Prefix, timeout: opts.Timeout, clock: opts.Clock}
	if s.prefix == "" {
		s.prefix = "fg:"
	}
	if s.timeout <= 0 {
		s.timeout = 5 * time.Millisecond
	}
	return s
}

// Load puts the script in Redis's script cache, so the first decision does
// not pay for it. Readiness checks call it. Cancelling ctx abandons the call.
func (s *RedisStore) Load(ctx context.Context) error {
	return gcraScript.Load(ctx, s.client).Err()
}

// Allow decides a request of cost n for key under limit l. The call is
// bounded by the store's Timeout; cancelling ctx abandons it. On any error
// nothing is known about the decision and the caller must fall back.
func (s *RedisStore) Allow(ctx context.Context, key Key, l Limit, n int64) (Result, error) {
	return s.take(ctx, key, l, n, n)
}

func (s *RedisStore) take(ctx context.Context, key Key, l Limit, n, upTo int64) (Result, error) {
	if err := l.Validate(); err != nil {
		return Result{}, err
	}
	if n < 1 {
		return Result{}, ErrInvalidCost
	}
	var now int64
	if s.clock != nil {
		now = s.clock().UnixMicro()
	}
	ctx, cancel := context.WithTimeout(ctx, s.timeout)
	defer cancel()
	v, err := gcraScript.Run(ctx, s.client, []string{key.redisKey(s.prefix)}, now, l.interval(), l.Burst, n, upTo).Int64Slice()
	if err != nil {
		return Result{}, err
	}
	if len(v) != 4 {
		return Result{}, fmt.Errorf("%w: %d values, want 4", ErrRedisReply, len(v))
	}
	retry := micros(v[2])
	if v[2] < 0 {
		retry = -1
	}
	return Result{Allowed: v[0], Remaining: v[1], RetryAfter: retry, ResetAfter: micros(v[3])}, nil
}

// TuneOptions sets the go-redis options a decision path needs on o: calls
// bounded by their context (so the store's Timeout holds, including while
// dialling), no retries (a retry would break the budget; the caller falls
// back instead) and a pool that fails fast rather than queueing.
func TuneOptions(o *redis.UniversalOptions, timeout time.Duration) {
	if timeout <= 0 {
		timeout = 5 * time.Millisecond
	}
	o.ContextTimeoutEnabled = true
	o.MaxRetries = -1
	o.DialerRetries = 1
	o.PoolTimeout = timeout
	if o.DialTimeout == 0 {
		o.DialTimeout = time.Second
	}
	o.MaintNotificationsConfig = &maintnotifications.Config{Mode: maintnotifications.ModeDisabled}
}
