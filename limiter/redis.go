package limiter

import (
	"context"
	_ "embed"
	"errors"
	"fmt"
	"slices"
	"sync"
	"sync/atomic"
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
	pipe    pipeliner      // nil when client cannot pipeline: batches go one call at a time
	prefix  string
	timeout time.Duration
	clock   func() time.Time
	breaker atomic.Pointer[Breaker] // fed with every call's outcome, when set
	// cluster is client as a Redis Cluster client, else nil; its slot map
	// is reloaded after a fault (reloadSlots), so that a replica that took
	// over a dead master's slots is found at once, not at go-redis's next
	// periodic reload.
	cluster    clusterReloader
	lastReload atomic.Int64 // unix ns of the last reload started
	// slotsRead is set once the store has read the slot map; until then
	// every key is judged by the breaker fed (looking a key's master up
	// could wait for the network).
	slotsRead atomic.Bool
	nodes     sync.Map // cluster: master address → *Breaker, each fed its own calls
}

// pipeliner is the go-redis method batches use.
type pipeliner interface {
	Pipelined(ctx context.Context, fn func(redis.Pipeliner) error) ([]redis.Cmder, error)
}

// ErrRedisReply is returned when Redis answers with something the script
// cannot have produced.
var ErrRedisReply = errors.New("limiter: unexpected reply from redis")

// NewRedisStore returns a store over client: a *redis.Client, Ring,
// ClusterClient or any redis.UniversalClient.
func NewRedisStore(client redis.Scripter, opts RedisOptions) *RedisStore {
	s := &RedisStore{client: client, prefix: opts.Prefix, timeout: opts.Timeout, clock: opts.Clock}
	s.pipe, _ = client.(pipeliner)
	s.cluster, _ = client.(clusterReloader)
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
	if s.cluster != nil {
		s.readMasters(ctx)
	}
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
	ctx, cancel := context.WithTimeout(ctx, s.timeout)
	defer cancel()
	v, err := gcraScript.Run(ctx, s.client, []string{key.redisKey(s.prefix)}, s.args(l, n, upTo)...).Int64Slice()
	s.reportTo(s.breakerFor(key), err, 1)
	if err != nil {
		return Result{}, err
	}
	return parseGCRA(v)
}

// takeReq is one key's take in a batch.
type takeReq struct {
	key     Key
	l       Limit
	n, upTo int64
	res     Result
	err     error
}

// takeBatch runs every take of reqs in one pipeline, one round trip, and
// sets each one's res or err. Its I/O is bounded by the connection's read
// and write timeouts (twice the store's Timeout, from TuneOptions), which
// go-redis sets just before each read and write; the whole call, waiting
// for a CPU, a connection or a dial included, by 20 times the Timeout.
// Cancelling ctx abandons it.
func (s *RedisStore) takeBatch(ctx context.Context, reqs []takeReq) {
	if s.pipe == nil {
		for i := range reqs {
			r := &reqs[i]
			r.res, r.err = s.take(ctx, r.key, r.l, r.n, r.upTo)
		}
		return
	}
	ctx, cancel := context.WithTimeout(ctx, 20*s.timeout)
	defer cancel()
	cmds := make([]*redis.Cmd, len(reqs))
	run := func(only func(i int) bool) {
		_, _ = s.pipe.Pipelined(ctx, func(p redis.Pipeliner) error {
			for i := range reqs {
				if only(i) {
					cmds[i] = gcraScript.EvalSha(ctx, p, []string{reqs[i].key.redisKey(s.prefix)}, s.args(reqs[i].l, reqs[i].n, reqs[i].upTo)...)
				}
			}
			return nil
		})
	}
	run(func(int) bool { return true })
	noScript := func(i int) bool { return cmds[i] != nil && redis.HasErrorPrefix(cmds[i].Err(), "NOSCRIPT") }
	if slicesContainsFunc(len(reqs), noScript) {
		// Redis lost its script cache (a restart): load it and send again
		// only the commands that did not run.
		if err := gcraScript.Load(ctx, s.client).Err(); err == nil {
			run(noScript)
		}
	}
	// The breaker counts round trips: on one Redis the pipeline is one
	// call, failed when any of its commands failed because of Redis. A
	// cluster client splits it into one round trip per master, so each
	// master it touched counts, failed when one of its commands did: a
	// dead master of three fails only the calls for its slots, which does
	// not open the circuit for the keys of the other two.
	var fault error
	for i := range reqs {
		r := &reqs[i]
		v, err := cmds[i].Int64Slice()
		if err == nil {
			r.res, r.err = parseGCRA(v)
			continue
		}
		r.err = err
		if fault == nil && redisFault(err) {
			fault = err
		}
	}
	if s.cluster == nil {
		s.report(fault, 1)
		return
	}
	if fault != nil {
		s.reloadSlots()
	}
	// One round trip per master touched, to that master's breaker.
	type trip struct {
		b      *Breaker
		failed bool
	}
	var trips []trip
	for i := range reqs {
		b := s.breakerFor(reqs[i].key)
		j := slices.IndexFunc(trips, func(t trip) bool { return t.b == b })
		if j < 0 {
			trips = append(trips, trip{b: b})
			j = len(trips) - 1
		}
		trips[j].failed = trips[j].failed || reqs[i].err != nil && redisFault(reqs[i].err)
	}
	for _, t := range trips {
		switch {
		case t.b == nil: // no breaker fed
		case t.failed:
			t.b.Record(0, 1)
		default:
			t.b.Record(1, 0)
		}
	}
}

func slicesContainsFunc(n int, f func(int) bool) bool {
	for i := range n {
		if f(i) {
			return true
		}
	}
	return false
}

func (s *RedisStore) args(l Limit, n, upTo int64) []any {
	var now int64
	if s.clock != nil {
		now = s.clock().UnixMicro()
	}
	return []any{now, l.interval(), l.Burst, n, upTo}
}

// report feeds the breaker, when set, with the outcome of calls round
// trips that ended in err.
func (s *RedisStore) report(err error, calls int) { s.reportTo(s.breaker.Load(), err, calls) }

// reportTo feeds b, when set, as report does.
func (s *RedisStore) reportTo(b *Breaker, err error, calls int) {
	if err != nil && s.cluster != nil && redisFault(err) {
		s.reloadSlots()
	}
	switch {
	case b == nil:
	case err == nil:
		b.Record(calls, 0)
	case redisFault(err):
		b.Record(0, calls)
	}
}

func (s *RedisStore) storeTimeout() time.Duration { return s.timeout }

// clusterReloader is the go-redis ClusterClient methods that re-read the
// slot map, find a key's master and visit the masters.
type clusterReloader interface {
	ReloadState(ctx context.Context)
	MasterForKey(ctx context.Context, key string) (*redis.Client, error)
	ForEachMaster(ctx context.Context, fn func(ctx context.Context, client *redis.Client) error) error
}

// readMasters reads the masters from the cluster client's slot map and
// forgets the breakers of addresses that are masters no more: a master
// whose replica took over its slots gets no calls, so its breaker would
// stay open and keep FallbackActive true.
func (s *RedisStore) readMasters(ctx context.Context) {
	var mu sync.Mutex
	current := map[string]bool{}
	err := s.cluster.ForEachMaster(ctx, func(_ context.Context, c *redis.Client) error {
		mu.Lock()
		current[c.Options().Addr] = true
		mu.Unlock()
		return nil
	})
	if err != nil || len(current) == 0 {
		return
	}
	s.nodes.Range(func(addr, _ any) bool {
		if !current[addr.(string)] {
			s.nodes.Delete(addr)
		}
		return true
	})
	s.slotsRead.Store(true)
}

// reloadMinGap spaces slot-map reloads: one CLUSTER SLOTS round trip at
// most this often, however many calls fail.
const reloadMinGap = 200 * time.Millisecond

// reloadSlots re-reads the cluster's slot map in the background, at most
// once per reloadMinGap: a call failed, perhaps because its master died
// and a replica now serves the slot.
func (s *RedisStore) reloadSlots() {
	now := time.Now().UnixNano()
	last := s.lastReload.Load()
	if now-last < int64(reloadMinGap) || !s.lastReload.CompareAndSwap(last, now) {
		return
	}
	go func() {
		ctx, cancel := context.WithTimeout(context.Background(), time.Second)
		defer cancel()
		s.cluster.ReloadState(ctx)
		s.readMasters(ctx)
	}()
}

// feed makes the store report every call's outcome to b; on a cluster, to
// a breaker per master made with b's settings, whose openings b counts.
func (s *RedisStore) feed(b *Breaker) { s.breaker.Store(b) }

// breakerFor is the breaker that judges the calls for key: on a Redis
// Cluster the breaker of the master serving its slot, so that a dead
// master opens the circuit for its own keys only; else the one fed.
func (s *RedisStore) breakerFor(key Key) *Breaker {
	fed := s.breaker.Load()
	if s.cluster == nil || fed == nil {
		return fed
	}
	if !s.slotsRead.Load() {
		s.reloadSlots() // in the background; the fed breaker judges meanwhile
		return fed
	}
	c, err := s.cluster.MasterForKey(context.Background(), key.redisKey(s.prefix))
	if err != nil {
		return fed
	}
	addr := c.Options().Addr
	if b, ok := s.nodes.Load(addr); ok {
		return b.(*Breaker)
	}
	nb := NewBreaker(fed.opts)
	nb.opens = fed.opens
	b, _ := s.nodes.LoadOrStore(addr, nb)
	return b.(*Breaker)
}

// anyOpen reports whether a master's circuit is open, on a cluster.
func (s *RedisStore) anyOpen() bool {
	open := false
	s.nodes.Range(func(_, b any) bool {
		open = b.(*Breaker).Open()
		return !open
	})
	return open
}

func parseGCRA(v []int64) (Result, error) {
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
// dialling), each read and write bounded by twice timeout from when it
// starts (so time spent before the I/O does not eat the I/O's budget), no
// retries (a retry would break the budget; the caller falls back instead),
// a pool that fails fast rather than queueing, and, unless o
// has a Dialer of its own, connections that tell a slow Redis from a
// timeout the client caused (see redisFault): only the first is a failure
// for the breaker.
func TuneOptions(o *redis.UniversalOptions, timeout time.Duration) {
	if timeout <= 0 {
		timeout = 5 * time.Millisecond
	}
	o.ContextTimeoutEnabled = true
	o.MaxRetries = -1
	// On a cluster: follow one MOVED (a slot a replica took over, before
	// the slot map is reloaded), retry at once rather than after a
	// backoff the timeout could not hold, and so fail fast on a dead
	// master, whose breaker then opens for its keys alone.
	o.MaxRedirects = 1
	o.MinRetryBackoff, o.MaxRetryBackoff = -1, -1
	o.DialerRetries = 1
	o.PoolTimeout = timeout
	o.ReadTimeout = 2 * timeout
	o.WriteTimeout = 2 * timeout
	if o.DialTimeout == 0 {
		o.DialTimeout = time.Second
	}
	o.MaintNotificationsConfig = &maintnotifications.Config{Mode: maintnotifications.ModeDisabled}
	if o.Dialer == nil {
		o.Dialer = watchedDialer(o, timeout)
	}
}
