package limiter

import (
	"context"
	"math/rand/v2"
	"runtime"
	"strconv"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/devflow/flowguard/internal/testredis"
)

// saturate keeps every P busy until the returned stop is called: the CPU
// saturation wrk and the server cause on a 2-core machine, in-process.
func saturate() (stop func()) {
	var done atomic.Bool
	var wg sync.WaitGroup
	for range runtime.GOMAXPROCS(0) {
		wg.Add(1)
		go func() {
			defer wg.Done()
			x := uint64(1)
			for !done.Load() {
				for range 1000 {
					x = x*6364136223846793005 + 1442695040888963407
				}
			}
			_ = x
		}()
	}
	return func() { done.Store(true); wg.Wait() }
}

// driveDecisions makes decisions over keys random keys from workers
// goroutines until total decisions were made; it returns the fallbacks.
func driveDecisions(t *testing.T, r *Resilient, keys, workers, total int, seed uint64) (fallbacks int64) {
	t.Helper()
	names := make([]Key, keys)
	for i := range names {
		names[i] = Key{Name: "k_live_" + strconv.Itoa(i)}
	}
	l := Limit{Rate: 500, Burst: 500, Period: time.Second} // bench.yaml's enterprise tier
	var made, fb atomic.Int64
	var wg sync.WaitGroup
	for w := range workers {
		wg.Add(1)
		go func() {
			defer wg.Done()
			rng := rand.New(rand.NewPCG(seed, uint64(w)))
			for made.Add(1) <= int64(total) {
				d, err := r.Decide(context.Background(), names[rng.IntN(keys)], l, 1)
				if err != nil {
					t.Error(err)
					return
				}
				if d.Fallback {
					fb.Add(1)
				}
			}
		}()
	}
	wg.Wait()
	return fb.Load()
}

// TestSaturatedCPUHealthyRedisRarelyFallsBack is issue 19's bar: with every
// core busy and Redis healthy, at most 1% of the decisions fall back. The
// limiter is the one serving builds (leases in front of Redis, the default
// breaker and timeout); the assertion is on the fallback counter.
func TestSaturatedCPUHealthyRedisRarelyFallsBack(t *testing.T) {
	srv := testredis.Start(t)
	store := NewRedisStore(srv.Client(), RedisOptions{})
	if err := store.Load(context.Background()); err != nil {
		t.Fatal(err)
	}
	leased := NewLeasedStore(store, LeaseOptions{})
	r := NewResilient(leased, NewMemoryStore(MemoryOptions{}), ResilientOptions{})
	const keys, workers, total = 5_000, 64, 100_000
	stop := saturate()
	fallbacks := driveDecisions(t, r, keys, workers, total, 1)
	stop()
	st := r.Stats()
	share := float64(fallbacks) / total
	t.Logf("%d of %d decisions fell back (%.2f%%): circuit_open %d, timeout %d, error %d; the circuit opened %d times",
		fallbacks, total, 100*share, st.FallbackByReason[ReasonCircuitOpen].Load(),
		st.FallbackByReason[ReasonRedisTimeout].Load(), st.FallbackByReason[ReasonRedisError].Load(), st.CircuitOpens.Load())
	if share > 0.01 {
		t.Errorf("%.2f%% of decisions fell back with Redis healthy, want ≤ 1%%", 100*share)
	}
	if n := st.CircuitOpens.Load(); n != 0 {
		t.Errorf("the circuit opened %d times with Redis healthy, want 0", n)
	}
}

// TestBreakerOpensOnRedisOutageWithin100ms: with decisions flowing, a
// redis-server that hangs (SIGSTOP: connections open, nothing answers) or
// dies opens the circuit within 100 ms, however many decisions a lease
// answers without Redis.
func TestBreakerOpensOnRedisOutageWithin100ms(t *testing.T) {
	for name, outage := range map[string]func(*testredis.Server){
		"paused": (*testredis.Server).Pause,
		"killed": (*testredis.Server).Stop,
	} {
		t.Run(name, func(t *testing.T) {
			srv := testredis.Start(t)
			t.Cleanup(srv.Resume)
			store := NewRedisStore(srv.Client(), RedisOptions{})
			if err := store.Load(context.Background()); err != nil {
				t.Fatal(err)
			}
			r := NewResilient(NewLeasedStore(store, LeaseOptions{}), NewMemoryStore(MemoryOptions{}), ResilientOptions{})
			var made atomic.Int64
			var stop atomic.Bool
			var wg sync.WaitGroup
			l := Limit{Rate: 500, Burst: 500, Period: time.Second}
			for w := range 32 {
				wg.Add(1)
				go func() {
					defer wg.Done()
					rng := rand.New(rand.NewPCG(2, uint64(w)))
					for !stop.Load() {
						r.Decide(context.Background(), Key{Name: "k_live_" + strconv.Itoa(rng.IntN(2000))}, l, 1)
						made.Add(1)
					}
				}()
			}
			defer func() { stop.Store(true); wg.Wait() }()
			deadline := time.Now().Add(10 * time.Second)
			for made.Load() < 50_000 {
				if time.Now().After(deadline) {
					t.Fatalf("only %d decisions before the outage", made.Load())
				}
				time.Sleep(time.Millisecond)
			}
			if r.FallbackActive() {
				t.Fatal("the circuit is open with Redis healthy")
			}
			// How late this goroutine wakes under the same load: the
			// time it waits for a CPU is not the breaker's.
			var lag time.Duration
			for range 20 {
				t0 := time.Now()
				time.Sleep(time.Millisecond)
				lag = max(lag, time.Since(t0)-time.Millisecond)
			}
			start := time.Now()
			outage(srv)
			for !r.FallbackActive() {
				if time.Since(start) > 2*time.Second {
					t.Fatal("the circuit did not open in 2s of outage")
				}
				time.Sleep(100 * time.Microsecond)
			}
			took := time.Since(start)
			t.Logf("circuit open %s after the outage began (%d decisions before it; wake-up lag under this load %s)", took, made.Load(), lag)
			if took > 100*time.Millisecond+lag {
				t.Errorf("the circuit opened %s after the outage began, want ≤ 100ms (plus this machine's wake-up lag, %s)", took, lag)
			}
		})
	}
}
