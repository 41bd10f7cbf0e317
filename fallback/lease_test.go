package fallback

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

func (c *countingRemote) take(ctx context.Context, key Key, l Limit, n, upTo int64) (Result, error) {
	c.calls.Add(1)
	return c.RedisStore.take(ctx, key, l, n, upTo)
}

func TestLeasedInstancesNeverExceedTheSharedBudget(t *testing.T) {
	srv := testredis.Start(t)
	clock := newFakeClock() // frozen: no budget regenerates during the test
	remote := &countingRemote{RedisStore: NewRedisStore(srv.Client(), RedisOptions{Clock: clock.Now, Timeout: time.Second})}
	const instances, workers, perWorker = 4, 8, 200
	l := Limit{Rate: 10_000, Burst: 500, Period: time.Second}
	var admitted atomic.Int64
	var wg sync.WaitGroup
	for range instances {
		s := newLeasedStore(remote, LeaseOptions{Clock: clock.Now})
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
	chunk := newLeasedStore(remote, LeaseOptions{}).chunk(l)
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
	s := newLeasedStore(remote, LeaseOptions{Clock: clock.Now, Window: 50 * time.Millisecond})
	l := Limit{Rate: 1000, Burst: 1000, Period: time.Second}
	for range 2 {
		if _, err := s.Allow(context.Background(), Key{Name: "k"}, l, 1); err != nil {
			t.Fatal(err)
		}
	}
	if c := remote.calls.Load(); c != 1 {
		t.Fatalf("remote calls = %d, want 1 (second decision from the lease)", c)
	}
	clock.Advance(51 * time.Millisecond)
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
