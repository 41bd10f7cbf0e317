package limiter

import (
	"context"
	"testing"
	"time"

	"github.com/devflow/flowguard/internal/testredis"
)

func TestBreakerOpensOnFailureRateAndRampsBack(t *testing.T) {
	clock := newFakeClock()
	b := NewBreaker(BreakerOptions{FailureRate: 0.5, MinCalls: 8, Window: time.Second, OpenFor: time.Second, Clock: clock.Now})
	// Below MinCalls nothing opens it, however many fail.
	for i := range 7 {
		if !b.Allow() || b.Failure() {
			t.Fatalf("failure %d of 7 opened the breaker below MinCalls", i+1)
		}
	}
	clock.Advance(1100 * time.Millisecond) // those leave the window
	// Under the failure rate it stays closed: 3 failures in 10 calls.
	for i := range 10 {
		if i%3 == 0 {
			b.Failure()
		} else {
			b.Success()
		}
	}
	if b.Open() {
		t.Fatal("30% failures opened a breaker set at 50%")
	}
	for !b.Failure() {
		if b.Open() {
			t.Fatal("opened without Failure saying so")
		}
	}
	if b.Allow() {
		t.Fatal("open breaker let a call through")
	}
	clock.Advance(time.Second)
	// Half-open: 1 call in 8, then 4, then 2; each step closes on 2
	// successes (MinCalls/4).
	for _, every := range []int{8, 4, 2} {
		allowed := 0
		for range 2 * every {
			if b.Allow() {
				allowed++
			}
		}
		if allowed != 2 {
			t.Fatalf("ramp step 1/%d let %d of %d calls through, want 2", every, allowed, 2*every)
		}
		if !b.Open() {
			t.Fatal("closed before the ramp ended")
		}
		b.Success()
		b.Success()
	}
	if b.Open() || !b.Allow() {
		t.Fatal("a ramp whose calls all succeeded must close the breaker")
	}

	// A failing ramp reopens, for twice as long.
	for !b.Failure() {
	}
	clock.Advance(time.Second)
	for !b.Allow() {
	}
	b.Failure()
	b.Failure()
	clock.Advance(1500 * time.Millisecond)
	if b.Allow() {
		t.Fatal("backoff did not double after a failed ramp")
	}
	clock.Advance(500 * time.Millisecond)
	if !b.Allow() {
		t.Fatal("no ramp after the doubled backoff")
	}
}

func TestResilientFallsBackAndRecovers(t *testing.T) {
	srv := testredis.Start(t)
	mem := NewMemoryStore(MemoryOptions{SweepEvery: -1})
	// A generous timeout: the first call dials and loads the script, which
	// can take longer than the 5ms default on a busy CI box under -race.
	r := NewResilient(NewRedisStore(srv.Client(), RedisOptions{Timeout: 100 * time.Millisecond}), mem, ResilientOptions{
		Share:   0.5,
		Breaker: BreakerOptions{MinCalls: 2, OpenFor: 20 * time.Millisecond, MaxOpenFor: 20 * time.Millisecond},
	})
	l := Limit{Rate: 100, Burst: 10, Period: time.Second}
	ctx := context.Background()
	d, err := r.Decide(ctx, Key{Name: "k"}, l, 1)
	if err != nil || d.Fallback || !d.OK() {
		t.Fatalf("healthy decision = %+v, %v", d, err)
	}

	srv.Stop()
	var reasons []string
	for range 4 {
		d, err := r.Decide(ctx, Key{Name: "k2"}, l, 1)
		if err != nil || !d.Fallback {
			t.Fatalf("decision during outage = %+v, %v; want a fallback", d, err)
		}
		reasons = append(reasons, d.Reason)
	}
	// A killed server refuses connections; go-redis may report that as an
	// error or run out the call's timeout redialling.
	if (reasons[0] != ReasonRedisError && reasons[0] != ReasonRedisTimeout) || reasons[3] != ReasonCircuitOpen {
		t.Fatalf("reasons = %v, want redis_error or redis_timeout first and redis_circuit_open once the breaker opened", reasons)
	}
	if !r.FallbackActive() {
		t.Fatal("FallbackActive = false during outage")
	}
	// The fallback share is half the budget: 5 of burst 10.
	var admitted int64
	for range 20 {
		d, _ := r.Decide(ctx, Key{Name: "share"}, l, 1)
		admitted += d.Allowed
	}
	if admitted != 5 {
		t.Fatalf("fallback admitted %d, want the instance share of 5", admitted)
	}

	srv.Restart()
	deadline := time.Now().Add(5 * time.Second)
	for {
		// The half-open ramp lets a growing share of the calls through;
		// the circuit closes once they succeed.
		d, _ := r.Decide(ctx, Key{Name: "k3"}, l, 1)
		if !d.Fallback && !r.FallbackActive() {
			break
		}
		if time.Now().After(deadline) {
			t.Fatal("never returned to Redis after it came back")
		}
		time.Sleep(5 * time.Millisecond)
	}
	if r.FallbackActive() {
		t.Fatal("FallbackActive still true after recovery")
	}
	st := r.Stats()
	if st.Errors.Load()+st.Timeouts.Load() < 1 || st.CircuitOpens.Load() < 1 || st.FallbackByReason[ReasonCircuitOpen].Load() < 1 {
		t.Fatalf("stats errors=%d opens=%d", st.Errors.Load(), st.CircuitOpens.Load())
	}
}

func TestResilientTimesOutSlowRedis(t *testing.T) {
	srv := testredis.Start(t)
	client := srv.Client()
	r := NewResilient(NewRedisStore(client, RedisOptions{Timeout: 5 * time.Millisecond}), NewMemoryStore(MemoryOptions{SweepEvery: -1}), ResilientOptions{})
	// DEBUG SLEEP blocks the server, so the script call must time out.
	go client.Do(context.Background(), "DEBUG", "SLEEP", "0.3")
	time.Sleep(20 * time.Millisecond)
	start := time.Now()
	d, err := r.Decide(context.Background(), Key{Name: "k"}, PerSecond(10), 1)
	if err != nil || !d.Fallback || d.Reason != ReasonRedisTimeout {
		t.Fatalf("decision = %+v, %v; want a redis_timeout fallback", d, err)
	}
	if el := time.Since(start); el > 200*time.Millisecond {
		t.Fatalf("decision took %s: the timeout did not bound the call", el)
	}
}

// While the circuit is open, tokens already leased from Redis are still
// spent, exactly: they are this instance's share of the global budget.
// Only what no live lease covers falls back.
func TestLeasesAreSpentWhileTheCircuitIsOpen(t *testing.T) {
	srv := testredis.Start(t)
	clock := newFakeClock()
	remote := NewRedisStore(srv.Client(), RedisOptions{Clock: clock.Now, Timeout: 100 * time.Millisecond})
	leased := newLeasedStore(remote, LeaseOptions{Clock: clock.Now, Instances: 1, TTL: time.Second})
	r := NewResilient(leased, NewMemoryStore(MemoryOptions{SweepEvery: -1, Clock: clock.Now}), ResilientOptions{
		Share:   0.5,
		Breaker: BreakerOptions{MinCalls: 2, OpenFor: time.Hour, MaxOpenFor: time.Hour},
	})
	l := Limit{Rate: 1000, Burst: 200, Period: time.Second}
	chunk := leased.chunk(l)
	ctx := context.Background()
	if d, err := r.Decide(ctx, Key{Name: "hot"}, l, 1); err != nil || d.Fallback || !d.OK() {
		t.Fatalf("healthy decision = %+v, %v", d, err)
	}
	srv.Stop()
	for !r.FallbackActive() {
		if d, _ := r.Decide(ctx, Key{Name: "cold"}, l, 1); !d.Fallback {
			t.Fatalf("a key without a lease was decided by a stopped Redis: %+v", d)
		}
	}
	for i := int64(1); i < chunk; i++ {
		d, err := r.Decide(ctx, Key{Name: "hot"}, l, 1)
		if err != nil || d.Fallback || !d.OK() {
			t.Fatalf("leased token %d of %d while open: %+v, %v; want it spent, not a fallback", i, chunk, d, err)
		}
	}
	if d, _ := r.Decide(ctx, Key{Name: "hot"}, l, 1); !d.Fallback || d.Reason != ReasonCircuitOpen {
		t.Fatalf("past the lease: %+v, want a circuit-open fallback", d)
	}
	if got := r.Stats().LeasedWhileOpen.Load(); got != chunk-1 {
		t.Errorf("LeasedWhileOpen = %d, want %d", got, chunk-1)
	}
	// An exhausted, an expired, or another limit's lease spends nothing.
	if _, ok := leased.SpendLeased(Key{Name: "hot"}, l, 1); ok {
		t.Error("an exhausted lease spent a token")
	}
	clock.Advance(2 * time.Second)
	if _, ok := leased.SpendLeased(Key{Name: "hot"}, l, 1); ok {
		t.Error("an expired lease spent a token")
	}
	if _, ok := leased.SpendLeased(Key{Name: "hot"}, Limit{Rate: 5, Burst: 5, Period: time.Second}, 1); ok {
		t.Error("a lease of another limit spent a token")
	}
}
