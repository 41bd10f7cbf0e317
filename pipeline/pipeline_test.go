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
