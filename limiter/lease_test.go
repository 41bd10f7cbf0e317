package limiter

import (
	"context"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/devflow/flowguard/internal/testredis"
)

// countingRemote counts the calls that reach the real Redis store.
type countingRemote struct {
	*RedisStore
	calls atomic.Int64
}

func (c *countingRemote) takeBatch(ctx context.Context, reqs []takeReq) {
	c.calls.Add(int64(len(reqs)))
	c.RedisStore.takeBatch(ctx, reqs)
}

func TestLeasedInstancesNeverExceedTheSharedBudget(t *testing.T) {
	srv := testredis.Start(t)
	clock := newFakeClock() // frozen: no budget regenerates during the test
	remote := &countingRemote{RedisStore: NewRedisStore(srv.Client(), RedisOptions{Clock: clock.Now, Timeout: time.Second})}
	const instances, workers, perWorker = 4, 8, 200
	// Redis expires a bucket's key when, by the request clock, it would be
	// full again (SET … PX), but counts that time in its own, real clock.
	// With the test's clock frozen, a bucket that refills within the
	// test's wall time (500 at 10,000/s: 50 ms, under -race on a loaded
	// machine) would vanish mid-test and admit a second burst. A slow
	// bucket (one token per 100 ms: 50 s) and a wide lease window (31-token
	// leases, as at 10,000/s) keep the test's meaning without that race.
	l := Limit{Rate: 10_000, Burst: 500, Period: 1000 * time.Second}
	opts := LeaseOptions{Clock: clock.Now, Instances: instances, Window: 10 * time.Second}
	var admitted atomic.Int64
	var wg sync.WaitGroup
	for range instances {
		s := newLeasedStore(remote, opts)
		for range workers {
			wg.Add(1)
			go func() {
				defer wg.Done()
				for range perWorker {
					res, err := s.Allow(context.Background(), Key{Name: "hot"}, l, 1)
					if err != nil {
						t.Error(err)
						return
					}
					admitted.Add(res.Allowed)
				}
			}()
		}
	}
	wg.Wait()
	got := admitted.Load()
	// Each instance may strand at most one chunk (Rate·Window, capped) unspent.
	chunk := newLeasedStore(remote, opts).chunk(l)
	if chunk < 16 {
		t.Fatalf("leases of %d tokens: the test needs large ones", chunk)
	}
	if got > l.Burst || got < l.Burst-instances*chunk {
		t.Fatalf("admitted %d, want within [%d, %d]", got, l.Burst-instances*chunk, l.Burst)
	}
	tries := int64(instances * workers * perWorker)
	if calls := remote.calls.Load(); calls > tries/4 {
		t.Fatalf("%d remote calls for %d decisions: leases and refusal caching should save most", calls, tries)
	}
	t.Logf("admitted %d of burst %d with %d remote calls for %d decisions", got, l.Burst, remote.calls.Load(), tries)
}

func TestLeaseSlowKeyIsExact(t *testing.T) {
	srv := testredis.Start(t)
	clock := newFakeClock()
	remote := NewRedisStore(srv.Client(), RedisOptions{Clock: clock.Now, Timeout: time.Second})
	s := newLeasedStore(remote, LeaseOptions{Clock: clock.Now})
	l := Limit{Rate: 60, Burst: 3, Period: time.Minute}
	if c := s.chunk(l); c != 1 {
		t.Fatalf("a 1/s key leases %d tokens at a time, want 1", c)
	}
	var allowed int64
	for range 5 {
		res, err := s.Allow(context.Background(), Key{Name: "slow"}, l, 1)
		if err != nil {
			t.Fatal(err)
		}
		allowed += res.Allowed
	}
	if allowed != 3 {
		t.Fatalf("admitted %d, want the burst of 3", allowed)
	}
	res, _ := s.Allow(context.Background(), Key{Name: "slow"}, l, 1)
	if res.OK() || res.RetryAfter != time.Second {
		t.Fatalf("throttled decision = %+v, want retry after 1s", res)
	}
	clock.Advance(time.Second)
	if res, _ := s.Allow(context.Background(), Key{Name: "slow"}, l, 1); !res.OK() {
		t.Fatalf("after the retry-after the key must pass, got %+v", res)
	}
}

func TestLeaseExpires(t *testing.T) {
	srv := testredis.Start(t)
	clock := newFakeClock()
	remote := &countingRemote{RedisStore: NewRedisStore(srv.Client(), RedisOptions{Clock: clock.Now, Timeout: time.Second})}
	s := newLeasedStore(remote, LeaseOptions{Clock: clock.Now, Window: 50 * time.Millisecond, TTL: 100 * time.Millisecond})
	l := Limit{Rate: 1000, Burst: 1000, Period: time.Second}
	for range 2 {
		if _, err := s.Allow(context.Background(), Key{Name: "k"}, l, 1); err != nil {
			t.Fatal(err)
		}
	}
	if c := remote.calls.Load(); c != 1 {
		t.Fatalf("remote calls = %d, want 1 (second decision from the lease)", c)
	}
	clock.Advance(101 * time.Millisecond)
	if _, err := s.Allow(context.Background(), Key{Name: "k"}, l, 1); err != nil {
		t.Fatal(err)
	}
	if c := remote.calls.Load(); c != 2 {
		t.Fatalf("remote calls = %d, want 2 (lease expired)", c)
	}
	if n := s.Sweep(); n != 0 {
		t.Fatalf("swept a live lease")
	}
	clock.Advance(time.Second)
	if n := s.Sweep(); n != 1 {
		t.Fatalf("swept %d expired leases, want 1", n)
	}
}

// gatedRemote holds every call until the test opens the gate.
type gatedRemote struct {
	*RedisStore
	gate  chan struct{}
	calls atomic.Int64
}

func (g *gatedRemote) takeBatch(ctx context.Context, reqs []takeReq) {
	if g.calls.Add(int64(len(reqs))) > 1 {
		<-g.gate
	}
	g.RedisStore.takeBatch(ctx, reqs)
}

// TestLeaseRefillsInBackground: a key with steady traffic tops its lease up
// while it still has tokens, so its decisions do not wait on Redis.
func TestLeaseRefillsInBackground(t *testing.T) {
	srv := testredis.Start(t)
	clock := newFakeClock()
	remote := &gatedRemote{RedisStore: NewRedisStore(srv.Client(), RedisOptions{Clock: clock.Now, Timeout: time.Second}), gate: make(chan struct{})}
	s := newLeasedStore(remote, LeaseOptions{Clock: clock.Now})
	l := Limit{Rate: 1000, Burst: 1000, Period: time.Second} // chunk = 50
	if c := s.chunk(l); c != 50 {
		t.Fatalf("chunk = %d, want 50", c)
	}
	// The first call leases 50; spending past half of them starts a refill
	// that blocks at the gate, yet the remaining tokens keep answering.
	for i := range 50 {
		res, err := s.Allow(context.Background(), Key{Name: "steady"}, l, 1)
		if err != nil || !res.OK() {
			t.Fatalf("decision %d: %+v %v", i, res, err)
		}
	}
	deadline := time.Now().Add(5 * time.Second)
	for remote.calls.Load() != 2 {
		if time.Now().After(deadline) {
			t.Fatalf("remote calls = %d, want the first lease and one background refill", remote.calls.Load())
		}
		time.Sleep(time.Millisecond)
	}
	close(remote.gate)
	// The 51st decision waits for the refill in flight rather than making
	// a call of its own, and is served from it.
	if res, err := s.Allow(context.Background(), Key{Name: "steady"}, l, 1); err != nil || !res.OK() {
		t.Fatalf("after the refill: %+v %v", res, err)
	}
	if c := remote.calls.Load(); c != 2 {
		t.Fatalf("remote calls = %d: decisions went to Redis instead of the refilled lease", c)
	}
}
