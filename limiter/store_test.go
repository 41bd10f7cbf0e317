package limiter

import (
	"context"
	"errors"
	"fmt"
	"math/rand/v2"
	"sync/atomic"
	"testing"
	"time"

	"github.com/devflow/flowguard/internal/testredis"
)

// fakeClock is an injected clock tests move by hand.
type fakeClock struct{ us atomic.Int64 }

func newFakeClock() *fakeClock {
	c := &fakeClock{}
	c.us.Store(time.Date(2026, 11, 23, 12, 0, 0, 0, time.UTC).UnixMicro())
	return c
}
func (c *fakeClock) Now() time.Time          { return time.UnixMicro(c.us.Load()) }
func (c *fakeClock) Advance(d time.Duration) { c.us.Add(d.Microseconds()) }

type allowFunc func(ctx context.Context, key Key, l Limit, n int64) (Result, error)

// storesUnderTest returns every store, all reading clock.
func storesUnderTest(t *testing.T, clock *fakeClock) map[string]allowFunc {
	t.Helper()
	mem := NewMemoryStore(MemoryOptions{Clock: clock.Now, SweepEvery: -1})
	srv := testredis.Start(t)
	rs := NewRedisStore(srv.Client(), RedisOptions{Clock: clock.Now, Timeout: time.Second})
	return map[string]allowFunc{"memory": mem.Allow, "redis": rs.Allow}
}

func TestStoresAgreeOnTable(t *testing.T) {
	l := Limit{Rate: 10, Burst: 5, Period: time.Second} // T = 100ms
	ms := time.Millisecond
	type step struct {
		advance time.Duration
		cost    int64
		want    Result
		wantErr error
	}
	cases := map[string][]step{
		"first request": {
			{cost: 1, want: Result{Allowed: 1, Remaining: 4, ResetAfter: 100 * ms}},
		},
		"burst then throttle": {
			{cost: 1, want: Result{Allowed: 1, Remaining: 4, ResetAfter: 100 * ms}},
			{cost: 1, want: Result{Allowed: 1, Remaining: 3, ResetAfter: 200 * ms}},
			{cost: 1, want: Result{Allowed: 1, Remaining: 2, ResetAfter: 300 * ms}},
			{cost: 1, want: Result{Allowed: 1, Remaining: 1, ResetAfter: 400 * ms}},
			{cost: 1, want: Result{Allowed: 1, Remaining: 0, ResetAfter: 500 * ms}},
			{cost: 1, want: Result{Remaining: 0, RetryAfter: 100 * ms, ResetAfter: 500 * ms}},
			{advance: 100 * ms, cost: 1, want: Result{Allowed: 1, Remaining: 0, ResetAfter: 500 * ms}},
		},
		"cost above one": {
			{cost: 3, want: Result{Allowed: 3, Remaining: 2, ResetAfter: 300 * ms}},
			{cost: 3, want: Result{Remaining: 2, RetryAfter: 100 * ms, ResetAfter: 300 * ms}},
			{advance: 100 * ms, cost: 3, want: Result{Allowed: 3, Remaining: 0, ResetAfter: 500 * ms}},
		},
		"cost above burst can never pass": {
			{cost: 6, want: Result{Remaining: 5, RetryAfter: -1}},
			{cost: 1, want: Result{Allowed: 1, Remaining: 4, ResetAfter: 100 * ms}},
		},
		"partial refill": {
			{cost: 5, want: Result{Allowed: 5, Remaining: 0, ResetAfter: 500 * ms}},
			{advance: 250 * ms, cost: 3, want: Result{Remaining: 2, RetryAfter: 50 * ms, ResetAfter: 250 * ms}},
			{advance: 50 * ms, cost: 3, want: Result{Allowed: 3, Remaining: 0, ResetAfter: 500 * ms}},
		},
		"idle key is whole again": {
			{cost: 5, want: Result{Allowed: 5, Remaining: 0, ResetAfter: 500 * ms}},
			{advance: time.Hour, cost: 1, want: Result{Allowed: 1, Remaining: 4, ResetAfter: 100 * ms}},
		},
		"zero cost is refused": {
			{cost: 0, wantErr: ErrInvalidCost},
		},
		"negative cost is refused": {
			{cost: -2, wantErr: ErrInvalidCost},
		},
	}
	clock := newFakeClock()
	for storeName, allow := range storesUnderTest(t, clock) {
		for name, steps := range cases {
			t.Run(storeName+"/"+name, func(t *testing.T) {
				key := Key{Name: "k_" + name, Scope: storeName}
				for i, s := range steps {
					clock.Advance(s.advance)
					got, err := allow(context.Background(), key, l, s.cost)
					if !errors.Is(err, s.wantErr) {
						t.Fatalf("step %d: err = %v, want %v", i, err, s.wantErr)
					}
					if got != s.want {
						t.Fatalf("step %d: got %+v, want %+v", i, got, s.want)
					}
				}
			})
		}
	}
}

func TestInvalidLimits(t *testing.T) {
	cases := map[string]Limit{
		"zero rate":      {Rate: 0, Burst: 1, Period: time.Second},
		"negative burst": {Rate: 1, Burst: -1, Period: time.Second},
		"zero period":    {Rate: 1, Burst: 1},
		"too fast":       {Rate: 2_000_000, Burst: 1, Period: time.Second},
	}
	clock := newFakeClock()
	for storeName, allow := range storesUnderTest(t, clock) {
		for name, l := range cases {
			t.Run(storeName+"/"+name, func(t *testing.T) {
				if _, err := allow(context.Background(), Key{Name: "k"}, l, 1); !errors.Is(err, ErrInvalidLimit) {
					t.Fatalf("err = %v, want ErrInvalidLimit", err)
				}
			})
		}
	}
}

// TestStoresAgreeOnRandomTraffic drives both stores with the same random
// limits, costs and gaps and demands identical answers at every step.
// Redis expires a bucket's key when, by the request clock, it would be full
// again, but counts that time in its own real clock: a bucket that refills
// within the test's wall time would vanish between steps on a loaded
// machine (1000/s with a burst of 50 refilled in 50 ms and did). Every
// limit here refills in at least a second of real time.
func TestStoresAgreeOnRandomTraffic(t *testing.T) {
	clock := newFakeClock()
	stores := storesUnderTest(t, clock)
	rng := rand.New(rand.NewPCG(4, 2))
	limits := []Limit{
		{Rate: 3, Burst: 1, Period: time.Second},
		{Rate: 100, Burst: 20, Period: time.Minute},
		{Rate: 7, Burst: 7, Period: 1500 * time.Millisecond},
		{Rate: 1000, Burst: 50, Period: 100 * time.Second},
	}
	for i := range 2000 {
		l := limits[rng.IntN(len(limits))]
		key := Key{Name: fmt.Sprintf("k%d", rng.IntN(5)), Scope: fmt.Sprint(l.Rate)}
		n := 1 + rng.Int64N(l.Burst+2)
		clock.Advance(time.Duration(rng.Int64N(int64(l.Period) / l.Rate * 2)))
		mem, errM := stores["memory"](context.Background(), key, l, n)
		red, errR := stores["redis"](context.Background(), key, l, n)
		if errM != nil || errR != nil {
			t.Fatalf("step %d: errors %v / %v", i, errM, errR)
		}
		if mem != red {
			t.Fatalf("step %d (%v, %+v, n=%d): memory %+v, redis %+v", i, key, l, n, mem, red)
		}
	}
}

func TestRedisKeysShareHashTag(t *testing.T) {
	k := Key{Name: "k_live_1", Scope: "POST /v1/payments"}
	if got, want := k.redisKey("fg:"), "fg:{k_live_1}:POST /v1/payments"; got != want {
		t.Fatalf("redisKey = %q, want %q", got, want)
	}
}

func TestMemoryStoreEvictsIdleKeys(t *testing.T) {
	clock := newFakeClock()
	mem := NewMemoryStore(MemoryOptions{Clock: clock.Now, SweepEvery: -1})
	l := PerSecond(10)
	for i := range 1000 {
		if _, err := mem.Allow(context.Background(), Key{Name: fmt.Sprint(i)}, l, 1); err != nil {
			t.Fatal(err)
		}
	}
	if n := mem.Len(); n != 1000 {
		t.Fatalf("Len = %d, want 1000", n)
	}
	clock.Advance(50 * time.Millisecond) // not yet idle: each key's tat is 100ms ahead
	if n := mem.Sweep(); n != 0 {
		t.Fatalf("swept %d busy keys", n)
	}
	clock.Advance(50 * time.Millisecond)
	if n := mem.Sweep(); n != 1000 {
		t.Fatalf("swept %d, want 1000", n)
	}
	if n := mem.Len(); n != 0 {
		t.Fatalf("Len after sweep = %d", n)
	}
}

func TestMemoryStoreBackgroundSweep(t *testing.T) {
	mem := NewMemoryStore(MemoryOptions{SweepEvery: 5 * time.Millisecond})
	defer mem.Close()
	if _, err := mem.Allow(context.Background(), Key{Name: "k"}, Limit{Rate: 1000, Burst: 1, Period: time.Second}, 1); err != nil {
		t.Fatal(err)
	}
	deadline := time.Now().Add(5 * time.Second)
	for mem.Len() != 0 {
		if time.Now().After(deadline) {
			t.Fatal("idle key was never evicted")
		}
		time.Sleep(time.Millisecond)
	}
}

// TestAdmitSpreadIsGCRAPerArrival checks AdmitSpread against gcra called
// once per arrival, the arrivals spread evenly over the span: the two admit
// the same count (within the one request the fluid limit rounds) and end
// with the same budget.
func TestAdmitSpreadIsGCRAPerArrival(t *testing.T) {
	cases := map[string]struct {
		l      Limit
		n      int64
		span   int64
		tat0   int64 // relative to start
		budget int64 // tolerance on the admitted count
	}{
		"under the rate":        {PerSecond(100), 50, 1e6, 0, 1},
		"over the rate":         {Limit{Rate: 10, Burst: 5, Period: time.Second}, 500, 10e6, 0, 1},
		"bucket half spent":     {Limit{Rate: 10, Burst: 20, Period: time.Second}, 80, 5e6, 1e6, 1},
		"all at once":           {Limit{Rate: 10, Burst: 20, Period: time.Second}, 30, 0, 0, 0},
		"long idle epoch start": {PerMinute(60), 3, 60e6, -3600e6, 1},
	}
	for name, c := range cases {
		t.Run(name, func(t *testing.T) {
			const start = int64(1_800_000_000_000_000)
			tat, got := AdmitSpread(start+c.tat0, start, c.span, c.l, c.n)
			ref, want := start+c.tat0, int64(0)
			for i := int64(0); i < c.n; i++ {
				at := start
				if c.n > 1 {
					at += c.span * i / (c.n - 1)
				}
				var res Result
				ref, res = gcra(ref, at, c.l, 1, 1)
				want += res.Allowed
			}
			if d := got - want; d < -c.budget || d > c.budget {
				t.Fatalf("AdmitSpread admitted %d, gcra per arrival %d", got, want)
			}
			end := start + c.span
			_, left := gcra(tat, end, c.l, 1, 1)
			_, refLeft := gcra(ref, end, c.l, 1, 1)
			if d := left.Remaining - refLeft.Remaining; d < -c.budget || d > c.budget {
				t.Fatalf("budget left at the end: %d, per arrival %d", left.Remaining, refLeft.Remaining)
			}
		})
	}
}
