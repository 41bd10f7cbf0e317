package limiter

import (
	"context"
	"hash/maphash"
	"sync"
	"time"
)

// memoryShards is a power of two so a shard is picked with a mask. 1024
// shards keep a shard's map small (8M keys → 8K a shard), so eviction and
// growth hold a lock only briefly.
const memoryShards = 1024

// MemoryStore is the in-process GCRA store. A key's whole state is its
// theoretical arrival time, kept in a map keyed by a 64-bit hash of the key:
// no string is stored, an insert does not allocate, and the map costs about
// 30 bytes a key (measured by BenchmarkMemoryStoreBytesPerKey). Two keys
// whose hashes collide would share a budget; with 8M keys the chance of any
// collision is about 2e-6.
//
// It is safe for concurrent use. Call Close to stop its eviction loop.
type MemoryStore struct {
	clock  func() time.Time
	seed   maphash.Seed
	shards [memoryShards]memoryShard
	stop   chan struct{}
	done   chan struct{}
}

type memoryShard struct {
	mu   sync.Mutex
	tats map[uint64]int64
	_    [48]byte // a shard fills its own 64-byte cache line
}

// MemoryOptions configures a MemoryStore.
type MemoryOptions struct {
	// Clock returns the current time. Default: time.Now.
	Clock func() time.Time
	// SweepEvery is how often idle keys are evicted. A key is idle once its
	// budget is whole again; forgetting it changes no decision.
	// Default: 1s. Negative disables the background sweep (call Sweep).
	SweepEvery time.Duration
}

// NewMemoryStore returns an empty store and starts its eviction loop.
func NewMemoryStore(opts MemoryOptions) *MemoryStore {
	s := &MemoryStore{clock: opts.Clock, seed: maphash.MakeSeed(), stop: make(chan struct{}), done: make(chan struct{})}
	if s.clock == nil {
		s.clock = time.Now
	}
	for i := range s.shards {
		s.shards[i].tats = make(map[uint64]int64)
	}
	every := opts.SweepEvery
	if every == 0 {
		every = time.Second
	}
	if every < 0 {
		close(s.done)
		return s
	}
	go s.sweepLoop(every)
	return s
}

// Allow decides a request of cost n for key under limit l. The error is
// non-nil only for an invalid limit or cost; ctx is unused and present so
// every store has the same shape.
func (s *MemoryStore) Allow(_ context.Context, key Key, l Limit, n int64) (Result, error) {
	return s.take(key, l, n, n)
}

// Decide is Allow in the shape of Resilient.Decide, for a process with no
// shared store: its decisions are never fallbacks.
func (s *MemoryStore) Decide(ctx context.Context, key Key, l Limit, n int64) (Decision, error) {
	res, err := s.take(key, l, n, n)
	return Decision{Result: res}, err
}

func (s *MemoryStore) take(key Key, l Limit, n, upTo int64) (Result, error) {
	if err := l.Validate(); err != nil {
		return Result{}, err
	}
	if n < 1 {
		return Result{}, ErrInvalidCost
	}
	now := s.clock().UnixMicro()
	h := key.hash(s.seed)
	sh := &s.shards[h&(memoryShards-1)]
	sh.mu.Lock()
	tat, res := gcra(sh.tats[h], now, l, n, upTo)
	if res.Allowed > 0 {
		sh.tats[h] = tat
	}
	sh.mu.Unlock()
	return res, nil
}

// Len returns the number of keys held.
func (s *MemoryStore) Len() int {
	n := 0
	for i := range s.shards {
		sh := &s.shards[i]
		sh.mu.Lock()
		n += len(sh.tats)
		sh.mu.Unlock()
	}
	return n
}

// Sweep evicts every idle key and returns how many it dropped. It takes one
// shard's lock at a time.
func (s *MemoryStore) Sweep() int {
	now := s.clock().UnixMicro()
	dropped := 0
	for i := range s.shards {
		sh := &s.shards[i]
		sh.mu.Lock()
		for h, tat := range sh.tats {
			if tat <= now {
				delete(sh.tats, h)
				dropped++
			}
		}
		if len(sh.tats) == 0 {
			sh.tats = make(map[uint64]int64) // give a once-large map's memory back
		}
		sh.mu.Unlock()
	}
	return dropped
}

func (s *MemoryStore) sweepLoop(every time.Duration) {
	defer close(s.done)
	t := time.NewTicker(every)
	defer t.Stop()
	for {
		select {
		case <-s.stop:
			return
		case <-t.C:
			s.Sweep()
		}
	}
}

// Close stops the eviction loop. The store still answers afterwards.
func (s *MemoryStore) Close() error {
	select {
	case <-s.stop:
	default:
		close(s.stop)
	}
	<-s.done
	return nil
}
