package limiter

import (
	"context"
	"errors"
	"net"
	"sync/atomic"

	"github.com/redis/go-redis/v9"
)

// Fallback reasons, as they appear in decisions and metrics.
const (
	ReasonRedisTimeout = "redis_timeout"      // the call exceeded its timeout
	ReasonRedisError   = "redis_error"        // the call failed
	ReasonCircuitOpen  = "redis_circuit_open" // recent failures opened the breaker
)

// allower is a shared store: *RedisStore or *LeasedStore.
type allower interface {
	Allow(ctx context.Context, key Key, l Limit, n int64) (Result, error)
}

// leaseSpender is a remote store that can serve a request from tokens the
// shared store already granted this instance, without calling it.
type leaseSpender interface {
	SpendLeased(key Key, l Limit, n int64) (Result, bool)
}

// breakerFed is a remote store that reports the outcome of each call it
// makes to Redis to the breaker itself: only it knows which decisions
// called Redis (a lease answers most without a call) and which calls
// failed because of Redis.
type breakerFed interface {
	feed(*Breaker)
}

// keyedBreakers is a remote store whose keys live on several backends (the
// masters of a Redis Cluster), each judged by a breaker of its own.
type keyedBreakers interface {
	breakerFor(Key) *Breaker
	anyOpen() bool
}

// Decision is a Result and where it came from.
type Decision struct {
	Result
	// Fallback is true when the shared store could not answer and the
	// decision came from this instance's share of the budget.
	Fallback bool
	// Reason says why, when Fallback is true.
	Reason string
}

// ResilientOptions configures a Resilient limiter.
type ResilientOptions struct {
	// Share is the fraction of each budget this instance enforces on its own
	// while the shared store is unreachable: 1/N for N instances keeps the
	// total within the budget. Default: 1.
	Share float64
	// Breaker configures the circuit breaker.
	Breaker BreakerOptions
}

// Resilient decides against a shared store and never fails: when the store
// errs, times out or its breaker is open, it decides from an in-memory store
// with a per-instance share of the budget, says so in the Decision, and goes
// back to the shared store by itself once a probe succeeds. It is safe for
// concurrent use.
type Resilient struct {
	remote  allower
	fed     bool // remote reports to the breaker itself
	local   *MemoryStore
	breaker *Breaker
	share   float64
	stats   ResilientStats
}

// ResilientStats counts what happened; read it with Stats.
type ResilientStats struct {
	Timeouts         atomic.Int64 // shared-store calls that timed out
	Errors           atomic.Int64 // shared-store calls that failed otherwise
	CircuitOpens     atomic.Int64 // times the breaker opened
	LeasedWhileOpen  atomic.Int64 // decisions served from a live lease while the circuit was open
	FallbackByReason map[string]*atomic.Int64
}

// NewResilient returns a Resilient limiter over remote, falling back to local.
func NewResilient(remote allower, local *MemoryStore, opts ResilientOptions) *Resilient {
	if opts.Share <= 0 || opts.Share > 1 {
		opts.Share = 1
	}
	r := &Resilient{remote: remote, local: local, breaker: NewBreaker(opts.Breaker), share: opts.Share}
	r.breaker.opens = &r.stats.CircuitOpens
	if f, ok := remote.(breakerFed); ok {
		f.feed(r.breaker)
		r.fed = true
	}
	r.stats.FallbackByReason = map[string]*atomic.Int64{
		ReasonRedisTimeout: new(atomic.Int64),
		ReasonRedisError:   new(atomic.Int64),
		ReasonCircuitOpen:  new(atomic.Int64),
	}
	return r
}

// Decide decides a request of cost n for key under limit l. It returns an
// error only for an invalid limit or cost, never for a backend failure.
func (r *Resilient) Decide(ctx context.Context, key Key, l Limit, n int64) (Decision, error) {
	if err := l.Validate(); err != nil {
		return Decision{}, err
	}
	if n < 1 {
		return Decision{}, ErrInvalidCost
	}
	b := r.breaker
	if kb, ok := r.remote.(keyedBreakers); ok {
		if kb := kb.breakerFor(key); kb != nil {
			b = kb
		}
	}
	if !b.Allow() {
		// Tokens already leased from Redis are this instance's to spend:
		// spending them keeps the global budget exact while the circuit is
		// open, and keeps the keys that hold them from all calling Redis
		// at once when it closes.
		if ls, ok := r.remote.(leaseSpender); ok {
			if res, ok := ls.SpendLeased(key, l, n); ok {
				r.stats.LeasedWhileOpen.Add(1)
				return Decision{Result: res}, nil
			}
		}
		return r.fallback(key, l, n, ReasonCircuitOpen)
	}
	res, err := r.remote.Allow(ctx, key, l, n)
	if !r.fed {
		switch {
		case err == nil:
			r.breaker.Success()
		case redisFault(err):
			r.breaker.Failure()
		}
	}
	if err == nil {
		return Decision{Result: res}, nil
	}
	reason := ReasonRedisError
	if isTimeout(err) {
		reason = ReasonRedisTimeout
		r.stats.Timeouts.Add(1)
	} else {
		r.stats.Errors.Add(1)
	}
	return r.fallback(key, l, n, reason)
}

// isTimeout reports whether err means the call ran out of time: the
// context's deadline, a socket deadline, or no free connection in time.
func isTimeout(err error) bool {
	var ne net.Error
	return errors.Is(err, context.DeadlineExceeded) || errors.Is(err, redis.ErrPoolTimeout) ||
		(errors.As(err, &ne) && ne.Timeout())
}

func (r *Resilient) fallback(key Key, l Limit, n int64, reason string) (Decision, error) {
	r.stats.FallbackByReason[reason].Add(1)
	res, err := r.local.Allow(context.Background(), key, l.Scale(r.share), n)
	return Decision{Result: res, Fallback: true, Reason: reason}, err
}

// FallbackActive reports whether the breaker is open (on a Redis Cluster,
// any master's): decisions, or those of the keys on that master, come from
// the local share until a probe succeeds.
func (r *Resilient) FallbackActive() bool {
	if kb, ok := r.remote.(keyedBreakers); ok && kb.anyOpen() {
		return true
	}
	return r.breaker.Open()
}

// Stats returns live counters; they are safe to read concurrently.
func (r *Resilient) Stats() *ResilientStats { return &r.stats }
