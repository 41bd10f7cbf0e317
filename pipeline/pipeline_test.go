package pipeline

import (
	"context"
	"errors"
	"fmt"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/devflow/flowguard/bandit"
	"github.com/devflow/flowguard/experiments"
	"github.com/devflow/flowguard/internal/config"
	"github.com/devflow/flowguard/limiter"
	"github.com/devflow/flowguard/rewards"
)

const testConfig = `
ml:
  epoch: 60s
  deadline: 500ms
  block_threshold: 0.9
  max_model_age: 10m
policies:
  tiers:
    free: {rate: 100, period: 1s, burst: 100, floor: 0.5, ceiling: 2, ml: on, auto_block: true}
    enterprise: {rate: 100, period: 1s, burst: 100, floor: 1, ceiling: 4, ml: on, audit: true}
  tenants:
    acme: {tier: enterprise}
`

// testPipeline is a pipeline over the in-memory limiter with a fresh
// model, after edit changes the parsed configuration. fallbacks counts the
// ML fallbacks it reports, by reason.
type testPipeline struct {
	*Pipeline
	mu        sync.Mutex
	fallbacks map[string]int
}

func newTestPipeline(t testing.TB, edit func(*config.Loaded)) *testPipeline {
	t.Helper()
	cfg, err := config.Parse("test.yaml", []byte(testConfig))
	if err != nil {
		t.Fatal(err)
	}
	if edit != nil {
		edit(cfg)
	}
	mem := limiter.NewMemoryStore(limiter.MemoryOptions{})
	t.Cleanup(func() { mem.Close() })
	tp := &testPipeline{fallbacks: map[string]int{}}
	var ids atomic.Uint64
	tp.Pipeline, err = New(cfg.Policies, Options{ML: cfg.ML, Seed: 1, Limiter: mem, Memory: mem,
		IDs: func() string { return fmt.Sprint(ids.Add(1)) },
		Events: Events{Fallback: func(reason string) {
			tp.mu.Lock()
			tp.fallbacks[reason]++
			tp.mu.Unlock()
		}}})
	if err != nil {
		t.Fatal(err)
	}
	l, err := bandit.NewLearner(cfg.LearnerConfig().Bandit)
	if err != nil {
		t.Fatal(err)
	}
	snap, err := l.Snapshot(time.Now())
	if err != nil {
		t.Fatal(err)
	}
	if err := tp.InstallBandit(snap); err != nil {
		t.Fatal(err)
	}
	return tp
}

// A stage 2 that is slow or panics costs the request the deadline at most
// and falls back to the deterministic budget, with its reason reported;
// concurrent requests of the key share the fallback.
func TestDeadlineAndPanicFallBack(t *testing.T) {
	tests := map[string]struct {
		hook   func(string)
		reason string
	}{
		"slow model":        {func(string) { time.Sleep(50 * time.Millisecond) }, ReasonMLDeadline},
		"panicking model":   {func(string) { panic("model exploded") }, ReasonMLError},
		"slow, then panics": {func(string) { time.Sleep(30 * time.Millisecond); panic("late") }, ReasonMLDeadline},
	}
	for name, tc := range tests {
		t.Run(name, func(t *testing.T) {
			deadline := 2 * time.Millisecond
			if tc.reason != ReasonMLDeadline {
				deadline = time.Second // the panic is immediate; a busy CI box must not turn it into a deadline
			}
			p := newTestPipeline(t, func(c *config.Loaded) { c.ML.Deadline = deadline })
			p.hook = tc.hook
			start := time.Now()
			d := p.Decide(context.Background(), &Request{Key: "k_1", Tenant: "acme", Endpoint: "GET /v1/things", Cost: 1})
			took := time.Since(start)
			if !d.Fallback || d.Reason != tc.reason || d.Action != ActionAllow || d.Multiplier != 1 || d.Limit != 100 || d.Source != SourceFallback {
				t.Fatalf("got %+v, want an allowed fallback with reason %s and the deterministic budget", d, tc.reason)
			}
			if tc.reason == ReasonMLDeadline && took > 40*time.Millisecond {
				t.Errorf("the request waited %v for a 50ms model; the deadline is 2ms", took)
			}
			if got := p.fallbacks[tc.reason]; got != 1 {
				t.Errorf("%d %s fallbacks reported, want 1", got, tc.reason)
			}
			// Concurrent requests of one key share the fallback.
			var wg sync.WaitGroup
			for range 20 {
				wg.Add(1)
				go func() {
					defer wg.Done()
					if d := p.Decide(context.Background(), &Request{Key: "k_2", Tenant: "acme", Cost: 1}); d.Reason != tc.reason {
						t.Errorf("concurrent request: reason %q, want %q", d.Reason, tc.reason)
					}
				}()
			}
			wg.Wait()
			p.mu.Lock()
			defer p.mu.Unlock()
			if got := p.fallbacks[tc.reason]; got != 21 {
				t.Errorf("%d %s fallbacks reported after 21 requests, want 21", got, tc.reason)
			}
		})
	}
}

// A model trained on vectors of another feature schema is refused, main
// or variant, and the refusal is reported as a schema_mismatch fallback;
// the model in use stays. A model of this build's schema installs.
func TestModelOfAnotherSchemaIsRefused(t *testing.T) {
	p := newTestPipeline(t, nil)
	cfg, _ := config.Parse("test.yaml", []byte(testConfig))
	inUse := p.Model()
	if inUse.Schema() != p.Features().Schema().Fingerprint() {
		t.Fatalf("the configured learner's snapshots carry schema %x, the store's is %x", inUse.Schema(), p.Features().Schema().Fingerprint())
	}
	other := cfg.LearnerConfig().Bandit
	other.Schema ^= 1
	l, err := bandit.NewLearner(other)
	if err != nil {
		t.Fatal(err)
	}
	snap, _ := l.Snapshot(time.Now().Add(time.Second))
	if err := p.InstallBandit(snap); !errors.Is(err, ErrSchemaMismatch) {
		t.Fatalf("InstallBandit of another schema: err = %v, want ErrSchemaMismatch", err)
	}
	same, _ := bandit.NewLearner(cfg.LearnerConfig().Bandit)
	_, _ = same.Snapshot(time.Now()) // the next is version 2: newer than the one in use
	good, _ := same.Snapshot(time.Now().Add(time.Second))
	if err := p.Install(rewards.Model{Bandit: good, Variants: map[string]*bandit.Snapshot{"v": snap}}); !errors.Is(err, ErrSchemaMismatch) {
		t.Fatalf("Install with a variant of another schema: err = %v, want ErrSchemaMismatch", err)
	}
	if p.Model() != inUse {
		t.Error("a refused model replaced the one in use")
	}
	if got := p.fallbacks[ReasonSchemaMismatch]; got != 2 {
		t.Errorf("%d schema_mismatch fallbacks reported, want 2", got)
	}
	if err := p.Install(rewards.Model{Bandit: good}); err != nil {
		t.Fatalf("a model of this schema: %v", err)
	}
}

// A panic in the pipeline outside stage 2 answers from the in-memory
// store, as an internal_error fallback, and is reported.
func TestPanicAnswersFromMemory(t *testing.T) {
	p := newTestPipeline(t, nil)
	var panics atomic.Int64
	p.ev.Panic = func(any, int) { panics.Add(1) }
	p.ev.Decided = func(Request, Decision) { panic("recording exploded") }
	d := p.Decide(context.Background(), &Request{Key: "k_panic", Tenant: "acme", Cost: 1})
	// The limiter spent a token before the panic, the answer from memory
	// (the same store here) another.
	if d.Reason != ReasonInternalError || !d.Fallback || d.Action != ActionAllow || d.Remaining != d.Limit-2 {
		t.Fatalf("got %+v, want an allowed internal_error fallback from memory with limit-2 left", d)
	}
	if panics.Load() != 1 {
		t.Errorf("%d panics reported, want 1", panics.Load())
	}
}

// BenchmarkStage2 is one stage-2 run (features, risk, the bandit draw and
// the decision record) of a key in no experiment.
func BenchmarkStage2(b *testing.B) {
	p := newTestPipeline(b, nil)
	rule := p.Policies().Resolve("", "GET /v1/things")
	keys := make([]string, 1024)
	for i := range keys {
		keys[i] = fmt.Sprintf("k_bench_%d", i)
	}
	b.ReportAllocs()
	for i := 0; b.Loop(); i++ {
		if c := p.stage2(keys[i%len(keys)], rule, experiments.Plan{}); c.fallback != 0 {
			b.Fatalf("fallback %s", fallbackReasons[c.fallback])
		}
	}
}

// A burst of new keys fills the decision log (issue 19): decisions past
// its room are shed and counted, and their epochs are not logged; every
// decision the log accepted gets its outcome when its epoch closes, even
// though the log is full when they close — Sweep waits for the learner,
// here a reader that starts late and reads slowly.
func TestBurstShedsDecisionsButKeepsAcceptedOutcomes(t *testing.T) {
	const room, keys = 32, 100
	p := newTestPipeline(t, func(c *config.Loaded) { c.ML.Epoch = 50 * time.Millisecond })
	q := rewards.NewQueue(room)
	p.SetDecisionLog(q)
	for i := range keys {
		d := p.Decide(context.Background(), &Request{Key: fmt.Sprintf("k_burst_%d", i), Tenant: "acme", Cost: 1})
		if d.Fallback || d.Action != ActionAllow {
			t.Fatalf("key %d: %+v, want an allowed ML decision", i, d)
		}
	}
	if got := q.Dropped(); got != keys-room {
		t.Fatalf("%d records dropped after %d decisions into a log of %d, want %d", got, keys, room, keys-room)
	}
	time.Sleep(60 * time.Millisecond) // every epoch has expired
	decisions, outcomes := map[string]bool{}, map[string]bool{}
	read := make(chan struct{})
	go func() {
		defer close(read)
		time.Sleep(50 * time.Millisecond) // Sweep finds the log full
		for len(outcomes) < room {
			ev := <-q.Events()
			switch r := ev.Record; {
			case r == nil:
				t.Errorf("a label in the decision log: %+v", ev)
				return
			case r.Type == rewards.TypeDecision:
				decisions[r.ID] = true
			case !decisions[r.ID]:
				t.Errorf("outcome %s of a decision the log never held", r.ID)
				return
			default:
				outcomes[r.ID] = true
			}
			time.Sleep(200 * time.Microsecond)
		}
	}()
	if closed, _ := p.Sweep(); closed != keys {
		t.Errorf("Sweep closed %d epochs, want %d", closed, keys)
	}
	select {
	case <-read:
	case <-time.After(10 * time.Second):
		t.Fatalf("%d of %d outcomes arrived", len(outcomes), room)
	}
	if len(decisions) != room || len(outcomes) != room {
		t.Errorf("%d decisions and %d outcomes read, want %d of each", len(decisions), len(outcomes), room)
	}
	if got := q.Dropped(); got != keys-room {
		t.Errorf("%d records dropped in all, want the %d shed decisions only", got, keys-room)
	}
	if n := q.Len(); n != 0 {
		t.Errorf("%d records left in the log: outcomes of shed decisions were logged", n)
	}
}

// A stage 2 that finishes after the deadline was not enforced: the key got
// the fallback, so its choice is not logged — a record of it would leave
// the learner a decision whose outcome never comes (it was 27 of 310,000
// decisions in a burst; make bench-mem). A choice made in time is logged.
func TestLateStage2IsNotLogged(t *testing.T) {
	p := newTestPipeline(t, func(c *config.Loaded) { c.ML.Deadline = 2 * time.Millisecond })
	q := rewards.NewQueue(16)
	p.SetDecisionLog(q)
	var slow atomic.Bool
	slow.Store(true)
	finished := make(chan struct{}, 1)
	p.hook = func(string) {
		if slow.Load() {
			time.Sleep(30 * time.Millisecond)
			defer func() { finished <- struct{}{} }()
		}
	}
	if d := p.Decide(context.Background(), &Request{Key: "k_late", Tenant: "acme", Cost: 1}); d.Reason != ReasonMLDeadline {
		t.Fatalf("got %+v, want an ml_deadline fallback", d)
	}
	<-finished
	time.Sleep(10 * time.Millisecond) // the late run has returned its choice
	if n := q.Len(); n != 0 {
		ev := <-q.Events()
		t.Fatalf("%d records logged for a choice past the deadline: %+v", n, ev.Record)
	}
	slow.Store(false)
	p.cfg.Deadline = time.Second // nothing runs stage 2 now
	if d := p.Decide(context.Background(), &Request{Key: "k_in_time", Tenant: "acme", Cost: 1}); d.Fallback {
		t.Fatalf("got %+v, want an ML decision", d)
	}
	if n := q.Len(); n != 1 {
		t.Fatalf("%d records for a choice made in time, want its decision", n)
	}
	if r := (<-q.Events()).Record; r == nil || r.Type != rewards.TypeDecision || r.Key != "k_in_time" {
		t.Fatalf("logged %+v, want k_in_time's decision", r)
	}
}

// A shard whose map fell below a quarter of its peak is rebuilt at its
// size (a Go map keeps its peak's memory), with every choice it holds.
func TestEpochShardShrinksAfterABurst(t *testing.T) {
	sh := epochShard{choices: map[uint64]epochChoice{}}
	for h := range uint64(5000) {
		sh.choices[h] = epochChoice{id: h + 1}
	}
	sh.shrink()
	if sh.peak != 5000 {
		t.Fatalf("peak %d after 5000 choices", sh.peak)
	}
	old := sh.choices
	for h := range uint64(4500) {
		delete(sh.choices, h)
	}
	sh.shrink()
	if sh.peak != 500 || len(sh.choices) != 500 {
		t.Fatalf("after the burst closed: peak %d, %d choices; want a map rebuilt at 500", sh.peak, len(sh.choices))
	}
	old[1] = epochChoice{} // the old map is no longer the shard's
	if _, ok := sh.choices[1]; ok {
		t.Fatal("the shard still uses the map of its peak")
	}
	for h := uint64(4500); h < 5000; h++ {
		if sh.choices[h].id != h+1 {
			t.Fatalf("choice %d lost in the rebuild", h)
		}
	}
	// Above a quarter of the peak, or below shrinkMin, the map stays.
	m := sh.choices
	for h := uint64(4500); h < 4800; h++ {
		delete(sh.choices, h)
	}
	sh.shrink()
	m[99999] = epochChoice{}
	if _, ok := sh.choices[99999]; !ok {
		t.Fatal("a map under shrinkMin was rebuilt")
	}
}

// Serving's stage 2 gates on ml.shrink_risk as the simulator's does: with
// a fresh model (every key's risk is the prior, 0.01) no key's multiplier
// is below ×1 at the default 0.5; with the gate off some are.
func TestPipelineShrinksOnlySuspectedKeys(t *testing.T) {
	for _, tc := range []struct {
		shrink     float64
		belowOneOK bool
	}{{0.5, false}, {-1, true}} {
		p := newTestPipeline(t, func(c *config.Loaded) { c.ML.ShrinkRisk = tc.shrink })
		below := 0
		for i := range 300 {
			d := p.Decide(context.Background(), &Request{Key: fmt.Sprintf("k_gate_%d", i), Endpoint: "GET /v1/things", Cost: 1})
			if d.Fallback || d.Source != SourceML {
				t.Fatalf("shrink_risk %v: %+v, want an ML decision", tc.shrink, d)
			}
			if d.Multiplier < 1 {
				below++
			}
		}
		if tc.belowOneOK != (below > 0) {
			t.Errorf("shrink_risk %v: %d of 300 keys below ×1 (floor 0.5)", tc.shrink, below)
		}
	}
}
