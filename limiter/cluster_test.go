package limiter

import (
	"context"
	"math/rand/v2"
	"strconv"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/devflow/flowguard/internal/testredis"
)

// On a real Redis Cluster (3 masters from redis-server --cluster-enabled,
// joined by redis-cli --cluster create), two instances share each key's
// budget exactly, one call at a time and in the pipelined batches leases
// use, with keys on every master (the hash tag routes a key's state to one
// slot), and after the script cache is flushed on every node.
func TestRedisClusterSharesBudgets(t *testing.T) {
	cl := testredis.StartCluster(t, 3, 0)
	admin := cl.Client()
	a := NewRedisStore(cl.Client(), RedisOptions{Timeout: time.Second})
	b := NewRedisStore(cl.Client(), RedisOptions{Timeout: time.Second})
	ctx := context.Background()
	if err := a.Load(ctx); err != nil {
		t.Fatal(err)
	}
	const keys, burst = 60, 5
	l := Limit{Rate: 1, Period: time.Hour, Burst: burst}
	masters := map[int]int{}
	for i := range keys {
		masters[cl.MasterOf(0, Key{Name: "k_" + strconv.Itoa(i)}.redisKey("fg:"))]++
	}
	if len(masters) != 3 {
		t.Fatalf("the keys are on %d masters (%v), want all 3", len(masters), masters)
	}
	for i := range keys {
		k := Key{Name: "k_" + strconv.Itoa(i)}
		allowed := 0
		for j := range 2 * burst {
			s := a
			if j%2 == 1 {
				s = b
			}
			r, err := s.Allow(ctx, k, l, 1)
			if err != nil {
				t.Fatalf("key %d, call %d: %v", i, j, err)
			}
			if r.Allowed > 0 {
				allowed++
			}
		}
		if allowed != burst {
			t.Fatalf("key %d: %d of %d calls from two instances allowed, want the burst, %d", i, allowed, 2*burst, burst)
		}
	}
	// A batch spans every master in one pipeline call; a flushed script
	// cache (a node restarted) is reloaded on every node and the batch
	// sent again.
	if err := admin.ScriptFlush(ctx).Err(); err != nil { // every master's
		t.Fatal(err)
	}
	reqs := make([]takeReq, keys)
	for i := range reqs {
		reqs[i] = takeReq{key: Key{Name: "batch_" + strconv.Itoa(i)}, l: l, n: 3, upTo: 3}
	}
	b.takeBatch(ctx, reqs)
	a.takeBatch(ctx, reqs)
	for i, r := range reqs {
		if r.err != nil {
			t.Fatalf("batch item %d: %v", i, r.err)
		}
		if r.res.Allowed != 0 || r.res.Remaining != burst-3 {
			// The second instance's take of 3 more is over the burst of 5.
			t.Fatalf("batch item %d after two takes of 3: %+v, want refused with %d remaining", i, r.res, burst-3)
		}
	}
}

// One master of a 3-master cluster with a replica each is killed under
// load (issue 19): decisions go on, none fails and none waits for the dead
// master; only the keys of its slots fall back to the local share (its own
// breaker opens, the others' stay closed) until its replica takes over;
// after the failover the client finds the new master and the fallback
// share is back under 1%.
func TestRedisClusterMasterKilledUnderLoad(t *testing.T) {
	cl := testredis.StartCluster(t, 3, 1)
	// As serving builds it: no Load, so the store reads the slot map on
	// its own before it judges keys by their master.
	store := NewRedisStore(cl.Client(), RedisOptions{})
	r := NewResilient(NewLeasedStore(store, LeaseOptions{}), NewMemoryStore(MemoryOptions{}), ResilientOptions{})
	const keys = 2000
	names := make([]Key, keys)
	for i := range names {
		names[i] = Key{Name: "k_live_" + strconv.Itoa(i)}
	}
	l := Limit{Rate: 500, Burst: 500, Period: time.Second}
	var made, fellBack atomic.Int64
	var stop atomic.Bool
	var wg sync.WaitGroup
	for w := range 16 {
		wg.Go(func() {
			rng := rand.New(rand.NewPCG(3, uint64(w)))
			for !stop.Load() {
				d, err := r.Decide(context.Background(), names[rng.IntN(keys)], l, 1)
				if err != nil {
					t.Error(err)
					return
				}
				made.Add(1)
				if d.Fallback {
					fellBack.Add(1)
				}
			}
		})
	}
	defer func() { stop.Store(true); wg.Wait() }()
	// waitFor polls until ok holds, for at most limit.
	waitFor := func(what string, limit time.Duration, ok func() bool) {
		t.Helper()
		for deadline := time.Now().Add(limit); !ok(); time.Sleep(time.Millisecond) {
			if time.Now().After(deadline) {
				t.Fatalf("%s: not within %v", what, limit)
			}
		}
	}
	// window counts the fallbacks among the next want decisions.
	window := func(what string, want int64) (n, fb int64) {
		t.Helper()
		m0, f0 := made.Load(), fellBack.Load()
		waitFor(what, 30*time.Second, func() bool { return made.Load()-m0 >= want })
		return made.Load() - m0, fellBack.Load() - f0
	}
	if n, fb := window("50,000 decisions before the kill", 50_000); float64(fb) > 0.01*float64(n) {
		t.Fatalf("before the kill: %d of %d decisions fell back", fb, n)
	}
	onDead := 0
	for _, k := range names {
		if cl.MasterOf(1, k.redisKey("fg:")) == 0 {
			onDead++
		}
	}
	share := float64(onDead) / keys
	m0, f0 := made.Load(), fellBack.Load()
	cl.Kill(0)
	took := cl.WaitFailover(0)
	n, fb := made.Load()-m0, fellBack.Load()-f0
	st := r.Stats()
	t.Logf("master killed; its replica took over in %v: %d decisions meanwhile, %d (%.1f%%) fell back (circuit_open %d, timeout %d, error %d); circuit opened %d times",
		took.Round(time.Millisecond), n, fb, 100*float64(fb)/float64(max(n, 1)), st.FallbackByReason[ReasonCircuitOpen].Load(),
		st.FallbackByReason[ReasonRedisTimeout].Load(), st.FallbackByReason[ReasonRedisError].Load(), st.CircuitOpens.Load())
	if n < 10_000 {
		t.Fatalf("%d decisions while the master was down: decisions waited for it", n)
	}
	// Each master has a breaker of its own: only the dead one's keys fall
	// back, not every key.
	if got := float64(fb) / float64(n); got > share+0.05 {
		t.Errorf("%.1f%% of decisions fell back while one master was down; %.1f%% of the keys are on it", 100*got, 100*share)
	}
	// The client finds the new master on its next slot refresh; the
	// circuit, if it opened, closes through its half-open ramp.
	waitFor("every master's circuit closed after the failover", 20*time.Second, func() bool { return !r.FallbackActive() })
	n, fb = window("200,000 decisions after the failover", 200_000)
	t.Logf("after the failover: %d of %d decisions fell back (%.2f%%)", fb, n, 100*float64(fb)/float64(max(n, 1)))
	if float64(fb) > 0.01*float64(n) {
		t.Errorf("after the failover %d of %d decisions fell back, want ≤ 1%%", fb, n)
	}
}
