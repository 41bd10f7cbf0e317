package limiter

import (
	"context"
	"sync"
	"sync/atomic"
	"time"
)

// remoteStore is what LeasedStore needs of the shared store: run a batch of
// takes, each of up to upTo ≥ n when n fits, in one round trip. *RedisStore
// implements it.
type remoteStore interface {
	takeBatch(ctx context.Context, reqs []takeReq)
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
	// MaxBatch caps how many keys one pipeline leases for. Leases are
	// fetched by one goroutine, one pipeline at a time, the keys a decision
	// waits for first: a rush of expired leases (at start, or when the
	// circuit closes) becomes a queue drained at a pipeline per round trip
	// rather than a round trip per key. Default: 128.
	MaxBatch int
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
// Concurrent misses of one key share one remote call, and the calls of all
// keys are batched. A decision waits for its key's first lease at most the
// remote store's timeout. Leases expire with a per-key jitter of up to a
// quarter of the TTL, so leases granted together are not renewed together.
// It is safe for concurrent use.
type LeasedStore struct {
	remote    remoteStore
	window    int64 // µs
	ttl       int64 // µs
	maxChunk  int64
	instances int64
	maxBatch  int
	wait      time.Duration // longest a decision waits for a lease: 4× the remote's timeout
	clock     func() time.Time
	shards    [256]leaseShard

	qmu      sync.Mutex
	urgent   []*leaseReq // a decision waits for these
	refills  []*leaseReq // top-ups nobody waits for
	flushers int         // goroutines sending batches, at most maxFlushers
}

// maxFlushers is how many pipelines can be in flight at once: enough that
// one slow round trip does not hold every lease up, few enough that a rush
// is a queue.
const maxFlushers = 8

// leaseReq is a lease asked of the batcher: a first lease (or one after a
// refusal or expiry) for a waiting decision of cost n that reserved held
// tokens, or a background top-up (n = 0).
type leaseReq struct {
	sh    *leaseShard
	key   Key
	le    *lease
	l     Limit
	n     int64
	held  int64
	state atomic.Int32 // reqWaiting, reqServed, reqAbandoned
	res   Result
	err   error
}

const (
	reqWaiting int32 = iota
	reqServed
	reqAbandoned
)

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
		maxChunk: opts.MaxChunk, instances: int64(opts.Instances), maxBatch: opts.MaxBatch, clock: opts.Clock,
		wait: 20 * 5 * time.Millisecond}
	if rs, ok := remote.(interface{ storeTimeout() time.Duration }); ok {
		s.wait = 20 * rs.storeTimeout()
	}
	if s.maxBatch <= 0 {
		s.maxBatch = 512
	}
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
				le.fetching = make(chan struct{})
				s.enqueue(&leaseReq{sh: sh, key: key, le: le, l: l}, false)
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
			timer := time.NewTimer(s.wait)
			select {
			case <-wait:
				timer.Stop()
				continue
			case <-timer.C:
				return Result{}, errLeaseWait
			case <-ctx.Done():
				timer.Stop()
				return Result{}, ctx.Err()
			}
		}
		req := &leaseReq{sh: sh, key: key, le: le, l: l, n: n, held: le.tokens}
		le.tokens = 0 // reserved for this request while the call is out
		le.fetching = make(chan struct{})
		done := le.fetching
		sh.mu.Unlock()
		s.enqueue(req, true)

		timer := time.NewTimer(s.wait)
		select {
		case <-done:
		case <-timer.C:
		case <-ctx.Done():
		}
		timer.Stop()
		if req.state.CompareAndSwap(reqWaiting, reqAbandoned) {
			// The batch will credit the lease with what it brings; this
			// decision falls back.
			if err := ctx.Err(); err != nil {
				return Result{}, err
			}
			return Result{}, errLeaseWait
		}
		<-done
		return req.res, req.err
	}
}

// enqueue hands req to the batcher, starting it when it is idle.
func (s *LeasedStore) enqueue(req *leaseReq, urgent bool) {
	s.qmu.Lock()
	if urgent {
		s.urgent = append(s.urgent, req)
	} else {
		s.refills = append(s.refills, req)
	}
	start := s.flushers < maxFlushers
	if start {
		s.flushers++
	}
	s.qmu.Unlock()
	if start {
		go s.flush()
	}
}

// flush sends the queued leases, urgent ones first, MaxBatch per pipeline,
// one pipeline at a time, until the queue is empty. Up to maxFlushers run.
func (s *LeasedStore) flush() {
	var batch []*leaseReq
	var reqs []takeReq
	for {
		batch = batch[:0]
		s.qmu.Lock()
		k := min(len(s.urgent), s.maxBatch)
		batch = append(batch, s.urgent[:k]...)
		s.urgent = s.urgent[k:]
		k = min(len(s.refills), s.maxBatch-len(batch))
		batch = append(batch, s.refills[:k]...)
		s.refills = s.refills[k:]
		if len(batch) == 0 {
			s.flushers--
			if s.flushers == 0 {
				s.urgent, s.refills = nil, nil
			}
			s.qmu.Unlock()
			return
		}
		s.qmu.Unlock()

		reqs = reqs[:0]
		for _, r := range batch {
			chunk := s.chunk(r.l)
			need := max(1, r.n-r.held)
			reqs = append(reqs, takeReq{key: r.key, l: r.l, n: need, upTo: max(need, chunk)})
		}
		s.remote.takeBatch(context.Background(), reqs)
		for i, r := range batch {
			s.apply(r, reqs[i].res, reqs[i].err)
		}
	}
}

// apply credits r's lease with what the remote store granted and answers
// r's decision, if it still waits.
func (s *LeasedStore) apply(r *leaseReq, res Result, err error) {
	sh, le := r.sh, r.le
	sh.mu.Lock()
	defer sh.mu.Unlock()
	done := le.fetching
	le.fetching = nil
	defer close(done)
	// A decision still waiting gets the answer; one that gave up has
	// fallen back, so nothing is spent for it.
	serve := r.n > 0 && r.state.CompareAndSwap(reqWaiting, reqServed)
	le.tokens += r.held
	if err != nil {
		r.err = err
		return
	}
	now := s.clock().UnixMicro()
	le.resetAt = now + res.ResetAfter.Microseconds()
	le.remaining = res.Remaining
	if res.Allowed == 0 {
		if r.n > 0 && res.RetryAfter > 0 {
			le.deniedUntil, le.deniedCost = now+res.RetryAfter.Microseconds(), r.n
		}
		res.Remaining += le.tokens
		r.res = res
		return
	}
	le.deniedUntil = 0
	if now >= le.expires {
		le.tokens = r.held
	}
	le.tokens += res.Allowed
	le.expires = now + s.ttl - s.jitter(r.key)
	if serve {
		le.tokens -= r.n
		r.res = Result{Allowed: r.n, Remaining: le.tokens + res.Remaining, ResetAfter: res.ResetAfter}
	}
}

// jitter shortens a key's leases by up to a quarter of the TTL, the same for
// every lease of the key, so keys leased at once do not expire at once.
func (s *LeasedStore) jitter(key Key) int64 {
	return int64(fnv32(key.Name)>>8) % (s.ttl/4 + 1)
}

// breakerFor is the remote store's breaker for key, nil when it has none
// per key (the Resilient's own then judges).
func (s *LeasedStore) breakerFor(key Key) *Breaker {
	if kb, ok := s.remote.(keyedBreakers); ok {
		return kb.breakerFor(key)
	}
	return nil
}

// anyOpen is the remote store's.
func (s *LeasedStore) anyOpen() bool {
	kb, ok := s.remote.(keyedBreakers)
	return ok && kb.anyOpen()
}

// feed makes the remote store report every call's outcome to b.
func (s *LeasedStore) feed(b *Breaker) {
	if f, ok := s.remote.(breakerFed); ok {
		f.feed(b)
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
