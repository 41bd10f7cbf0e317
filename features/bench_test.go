package features

import (
	"math/rand/v2"
	"runtime"
	"strconv"
	"testing"
	"time"
)

func benchKeys(n int) []string {
	keys := make([]string, n)
	for i := range keys {
		keys[i] = "k_live_" + strconv.Itoa(i)
	}
	return keys
}

// benchObservations are a few request shapes, so that the endpoint and IP
// paths are exercised.
func benchObservations() []Observation {
	eps := []string{"POST /v1/payments", "GET /v1/payments/{id}", "POST /v1/messages", "GET /v1/reports"}
	obs := make([]Observation, 64)
	r := rand.New(rand.NewPCG(1, 2))
	for i := range obs {
		obs[i] = Observation{
			Endpoint:   eps[r.IntN(len(eps))],
			ClientIP:   "203.0.113." + strconv.Itoa(r.IntN(256)),
			Cost:       1,
			Tier:       TierPro,
			Throttled:  r.IntN(10) == 0,
			BudgetUsed: r.Float64(),
		}
	}
	return obs
}

// BenchmarkObserveAndVector is step 4 plus the stage-2 vector for one
// request, over 100k keys: the target is ≤ 300 ns/op and 0 allocs/op.
func BenchmarkObserveAndVector(b *testing.B) { benchObserveAndVector(b, 100_000) }

// BenchmarkObserveAndVectorHotKeys is BenchmarkObserveAndVector over 1000
// keys, whose states stay in the CPU caches: the difference between the
// two is the cost of fetching a key's state from memory.
func BenchmarkObserveAndVectorHotKeys(b *testing.B) { benchObserveAndVector(b, 1000) }

func benchObserveAndVector(b *testing.B, nkeys int) {
	s, err := NewStore(Config{})
	if err != nil {
		b.Fatal(err)
	}
	keys := benchKeys(nkeys)
	obs := benchObservations()
	t0 := time.Date(2026, 11, 20, 0, 0, 0, 0, time.UTC)
	for i, k := range keys {
		s.Observe(k, obs[i%len(obs)], t0)
	}
	dst := make([]float64, 0, Dim)
	b.ReportAllocs()
	b.ResetTimer()
	for i := 0; b.Loop(); i++ {
		now := t0.Add(time.Duration(i) * 10 * time.Microsecond)
		dst = s.ObserveAndVector(keys[i%len(keys)], obs[i%len(obs)], now, dst[:0])
	}
}

func BenchmarkObserveAndVectorParallel(b *testing.B) {
	s, err := NewStore(Config{})
	if err != nil {
		b.Fatal(err)
	}
	keys := benchKeys(100_000)
	obs := benchObservations()
	t0 := time.Date(2026, 11, 20, 0, 0, 0, 0, time.UTC)
	for i, k := range keys {
		s.Observe(k, obs[i%len(obs)], t0)
	}
	b.ReportAllocs()
	b.ResetTimer()
	b.RunParallel(func(pb *testing.PB) {
		dst := make([]float64, 0, Dim)
		i := rand.IntN(len(keys))
		for pb.Next() {
			now := t0.Add(time.Duration(i) * 10 * time.Microsecond)
			dst = s.ObserveAndVector(keys[i%len(keys)], obs[i%len(obs)], now, dst[:0])
			i++
		}
	})
}

// BenchmarkVector is the stage-2 vector alone, a second after the key's
// last update.
func BenchmarkVector(b *testing.B) {
	s, err := NewStore(Config{})
	if err != nil {
		b.Fatal(err)
	}
	keys := benchKeys(100_000)
	obs := benchObservations()
	t0 := time.Date(2026, 11, 20, 0, 0, 0, 0, time.UTC)
	for i, k := range keys {
		s.Observe(k, obs[i%len(obs)], t0)
	}
	now := t0.Add(time.Second)
	dst := make([]float64, 0, Dim)
	b.ReportAllocs()
	b.ResetTimer()
	for i := 0; b.Loop(); i++ {
		dst = s.Vector(keys[i%len(keys)], now, dst[:0])
	}
}

// BenchmarkStoreBytesPerKey reports the heap one key costs with 1M keys
// held, each seen from a few IPs and endpoints: the target is ≤ 256 bytes.
func BenchmarkStoreBytesPerKey(b *testing.B) {
	const n = 1_000_000
	keys := benchKeys(n)
	obs := benchObservations()
	t0 := time.Date(2026, 11, 20, 0, 0, 0, 0, time.UTC)
	for b.Loop() {
		runtime.GC()
		var before, after runtime.MemStats
		runtime.ReadMemStats(&before)
		s, err := NewStore(Config{})
		if err != nil {
			b.Fatal(err)
		}
		for i, k := range keys {
			s.Observe(k, obs[i%len(obs)], t0)
		}
		runtime.GC()
		runtime.ReadMemStats(&after)
		if s.Len() != n {
			b.Fatalf("held %d keys, want %d", s.Len(), n)
		}
		b.ReportMetric(float64(after.HeapAlloc-before.HeapAlloc)/n, "bytes/key")
		runtime.KeepAlive(s)
	}
}

func BenchmarkRiskScore(b *testing.B) {
	r, err := NewRisk(RiskConfig{Dim: Dim})
	if err != nil {
		b.Fatal(err)
	}
	x := make([]float64, Dim)
	for i := range x {
		x[i] = float64(i) / Dim
	}
	for range 100 {
		if err := r.Learn(x, false); err != nil {
			b.Fatal(err)
		}
	}
	b.ReportAllocs()
	b.ResetTimer()
	for b.Loop() {
		r.Score(x)
	}
}

func BenchmarkRiskLearn(b *testing.B) {
	r, err := NewRisk(RiskConfig{Dim: Dim})
	if err != nil {
		b.Fatal(err)
	}
	x := make([]float64, Dim)
	for i := range x {
		x[i] = float64(i) / Dim
	}
	b.ReportAllocs()
	b.ResetTimer()
	for i := 0; b.Loop(); i++ {
		if err := r.Learn(x, i%7 == 0); err != nil {
			b.Fatal(err)
		}
	}
}
