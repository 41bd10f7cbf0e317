package limiter

import (
	"context"
	"sync"
	"time"
)

// remoteStore is what LeasedStore needs of the shared store: take up to upTo
// ≥ n when n fits. *RedisStore implements it.
type remoteStore interface {
	take(ctx context.Context, key Key, l Limit, n, upTo int64) (Result, error)
}

// LeaseOptions configures a LeasedStore.
type LeaseOptions struct {
	// Window sizes a lease: a key is lent what its rate earns in Window, so
	// a slow key leases one token at a time (every decision is exact) and a
	// hot key a chunk. Default: 50ms.
	Window time.Duration
	// TTL is how long leased tokens stay spendable; what is left then is
	// dropped. Default: 1s.
	TTL time.Duration
	// MaxChunk caps a lease. Default: 64.
	MaxChunk int64
	// Instances is how many instances lease from the same store. A lease
	// never exceeds Burst/(4·Instances), so all instances together hold at
	// most a quarter of any burst. Default: 1.
	Instances int
	// Clock returns the current time. Default: time.Now.
	Clock func() time.Time
}

// LeasedStore serves most decisions of hot keys from budget leased from a
// remote store in chunks, and remembers remote refusals until their
// retry-after passes, so a throttled key does not cost a round trip either.
//
// It never admits more than the remote store granted: every leased token
// was taken from the shared GCRA state first. Leased tokens are spent later
// than they were granted, so over any interval W one key is admitted at most
// Burst + Rate·W + N·chunk across N instances, where chunk ≤ min(Rate·Window,
// MaxChunk, Burst/(4N)): at most a quarter of the burst over the exact GCRA
// bound. The other side is under-admission: tokens still leased when the TTL
// ends are dropped, at most one chunk per instance per TTL, which only a
// key using less than Window/TTL of its budget can lose, and the Burst/(4N)
// cap leaves three quarters of every burst to whichever instance needs it.
//
// Concurrent misses of one key share one remote call. It is safe for
// concurrent use.
type LeasedStore struct {
	remote    remoteStore
	window    int64 // µs
	ttl       int64 // µs
	maxChunk  int64
	instances int64
	clock     func() time.Time
	shards    [256]leaseShard
}

type leaseShard struct {
	mu     sync.Mutex
	leases map[Key]*lease
}

type lease struct {
	limit       Limit
	tokens      int64 // leased, not yet spent
	expires     int64 // µs; tokens are void after it
	remaining   int64 // the remote store's remaining at the last grant
	resetAt     int64 // µs; the remote store's reset at the last grant
	deniedUntil int64 // µs; refused until then for costs ≥ deniedCost
	deniedCost  int64
	fetching    chan struct{} // non-nil while a remote call is in flight
}

// NewLeasedStore returns a LeasedStore in front of remote.
func NewLeasedStore(remote *RedisStore, opts LeaseOptions) *LeasedStore {
	return newLeasedStore(remote, opts)
}

func newLeasedStore(remote remoteStore, opts LeaseOptions) *LeasedStore {
	s := &LeasedStore{remote: remote, window: opts.Window.Microseconds(), ttl: opts.TTL.Microseconds(),
		maxChunk: opts.MaxChunk, instances: int64(opts.Instances), clock: opts.Clock}
	if s.window <= 0 {
		s.window = (50 * time.Millisecond).Microseconds()
	}
	if s.ttl <= 0 {
		s.ttl = time.Second.Microseconds()
	}
	if s.instances < 1 {
		s.instances = 1
	}
	if s.maxChunk <= 0 {
		s.maxChunk = 64
	}
	if s.clock == nil {
		s.clock = time.Now
	}
	for i := range s.shards {
		s.shards[i].leases = make(map[Key]*lease)
	}
	return s
}

// chunk is what one lease takes: the tokens l earns in the window, capped.
func (s *LeasedStore) chunk(l Limit) int64 {
	c := s.window / l.interval()
	return max(1, min(c, s.maxChunk, l.Burst/(4*s.instances)))
}

// Allow decides a request of cost n for key under limit l, from a lease
// when it can and from the remote store when it must. Cancelling ctx
// abandons a remote call or the wait for another caller's.
func (s *LeasedStore) Allow(ctx context.Context, key Key, l Limit, n int64) (Result, error) {
	if err := l.Validate(); err != nil {
		return Result{}, err
	}
	if n < 1 {
		return Result{}, ErrInvalidCost
	}
	sh := &s.shards[fnv32(key.Name)&255]
	for {
		now := s.clock().UnixMicro()
		sh.mu.Lock()
		le := sh.leases[key]
		if le == nil || le.limit != l {
			le = &lease{limit: l}
			sh.leases[key] = le
		}
		if now >= le.expires {
			le.tokens = 0
		}
		if le.tokens >= n {
			le.tokens -= n
			res := Result{Allowed: n, Remaining: le.tokens + le.remaining, ResetAfter: micros(max(le.resetAt-now, 0))}
			if le.fetching == nil && (le.tokens < s.chunk(l)/2 || now > le.expires-s.ttl/4) {
				// Running low or old: top up in the background, so a key
				// with steady traffic never waits on Redis.
				done := make(chan struct{})
				le.fetching = done
				go s.refill(sh, key, le, l, done)
			}
			sh.mu.Unlock()
			return res, nil
		}
		if now < le.deniedUntil && n >= le.deniedCost {
			res := Result{Remaining: le.tokens, RetryAfter: micros(le.deniedUntil - now), ResetAfter: micros(max(le.resetAt-now, 0))}
			sh.mu.Unlock()
			return res, nil
		}
		if wait := le.fetching; wait != nil {
			sh.mu.Unlock()
			select {
			case <-wait:
				continue
			case <-ctx.Done():
				return Result{}, ctx.Err()
			}
		}
		done := make(chan struct{})
		le.fetching = done
		held := le.tokens // reserved for this request while the call is out
		le.tokens = 0
		sh.mu.Unlock()

		need := n - held
		res, err := s.remote.take(ctx, key, l, need, max(need, s.chunk(l)))

		sh.mu.Lock()
		le.fetching = nil
		close(done)
		if err != nil {
			le.tokens += held
			sh.mu.Unlock()
			return Result{}, err
		}
		now = s.clock().UnixMicro()
		le.resetAt = now + res.ResetAfter.Microseconds()
		le.remaining = res.Remaining
		if res.Allowed == 0 {
			if res.RetryAfter > 0 {
				le.deniedUntil, le.deniedCost = now+res.RetryAfter.Microseconds(), n
			}
			le.tokens += held
			res.Remaining += le.tokens
			sh.mu.Unlock()
			return res, nil
		}
		le.deniedUntil = 0
		le.tokens += held + res.Allowed - n
		le.expires = now + s.ttl
		out := Result{Allowed: n, Remaining: le.tokens + res.Remaining, ResetAfter: res.ResetAfter}
		sh.mu.Unlock()
		return out, nil
	}
}

// SpendLeased serves a request of cost n from key's lease alone, without
// any call to the remote store, and reports whether it could: the lease
// must be live and hold n tokens. Resilient uses it while its circuit is
// open.
func (s *LeasedStore) SpendLeased(key Key, l Limit, n int64) (Result, bool) {
	if n < 1 {
		return Result{}, false
	}
	sh := &s.shards[fnv32(key.Name)&255]
	now := s.clock().UnixMicro()
	sh.mu.Lock()
	defer sh.mu.Unlock()
	le := sh.leases[key]
	if le == nil || le.limit != l || now >= le.expires || le.tokens < n {
		return Result{}, false
	}
	le.tokens -= n
	return Result{Allowed: n, Remaining: le.tokens + le.remaining, ResetAfter: micros(max(le.resetAt-now, 0))}, true
}

// refill tops a lease up with one chunk. A failure is not reported: the
// next decision that finds the lease empty calls the store itself and sees
// the error.
func (s *LeasedStore) refill(sh *leaseShard, key Key, le *lease, l Limit, done chan struct{}) {
	res, err := s.remote.take(context.Background(), key, l, 1, s.chunk(l))
	sh.mu.Lock()
	defer sh.mu.Unlock()
	le.fetching = nil
	close(done)
	if err != nil || res.Allowed == 0 {
		return
	}
	now := s.clock().UnixMicro()
	if now >= le.expires {
		le.tokens = 0
	}
	le.tokens += res.Allowed
	le.expires = now + s.ttl
	le.remaining = res.Remaining
	le.resetAt = now + res.ResetAfter.Microseconds()
}

// Sweep drops leases that are spent or expired and have no call in flight.
func (s *LeasedStore) Sweep() int {
	now := s.clock().UnixMicro()
	dropped := 0
	for i := range s.shards {
		sh := &s.shards[i]
		sh.mu.Lock()
		for k, le := range sh.leases {
			if le.fetching == nil && now >= le.expires && now >= le.deniedUntil {
				delete(sh.leases, k)
				dropped++
			}
		}
		sh.mu.Unlock()
	}
	return dropped
}

// fnv32 is FNV-1a; it picks a shard without allocating.
func fnv32(s string) uint32 {
	h := uint32(2166136261)
	for i := 0; i < len(s); i++ {
		h ^= uint32(s[i])
		h *= 16777619
	}
	return h
}
