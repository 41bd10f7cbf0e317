package limiter

import (
	"context"
	"runtime"
	"strconv"
	"testing"
	"time"

	"github.com/devflow/flowguard/internal/testredis"
)

func benchKeys(n int) []Key {
	keys := make([]Key, n)
	for i := range keys {
		keys[i] = Key{Name: "k_live_" + strconv.Itoa(i)}
	}
	return keys
}

// BenchmarkMemoryStoreAllow is one decision on the in-memory store: the
// target is ≤ 200 ns/op and 0 allocs/op.
func BenchmarkMemoryStoreAllow(b *testing.B) {
	mem := NewMemoryStore(MemoryOptions{SweepEvery: -1})
	keys := benchKeys(10_000)
	l := Limit{Rate: 1000, Burst: 100, Period: time.Second}
	ctx := context.Background()
	b.ReportAllocs()
	b.ResetTimer()
	for i := 0; b.Loop(); i++ {
		mem.Allow(ctx, keys[i%len(keys)], l, 1)
	}
}

func BenchmarkMemoryStoreAllowParallel(b *testing.B) {
	mem := NewMemoryStore(MemoryOptions{SweepEvery: -1})
	keys := benchKeys(10_000)
	l := Limit{Rate: 1000, Burst: 100, Period: time.Second}
	ctx := context.Background()
	b.ReportAllocs()
	b.RunParallel(func(pb *testing.PB) {
		i := 0
		for pb.Next() {
			mem.Allow(ctx, keys[i%len(keys)], l, 1)
			i++
		}
	})
}

// BenchmarkMemoryStoreBytesPerKey reports the heap one key costs with 1M
// keys held: the target is ≤ 64 bytes.
func BenchmarkMemoryStoreBytesPerKey(b *testing.B) {
	const n = 1_000_000
	keys := benchKeys(n)
	l := Limit{Rate: 1, Burst: 1, Period: time.Hour}
	for b.Loop() {
		runtime.GC()
		var before, after runtime.MemStats
		runtime.ReadMemStats(&before)
		mem := NewMemoryStore(MemoryOptions{SweepEvery: -1})
		for _, k := range keys {
			mem.Allow(context.Background(), k, l, 1)
		}
		runtime.GC()
		runtime.ReadMemStats(&after)
		if mem.Len() != n {
			b.Fatalf("held %d keys, want %d", mem.Len(), n)
		}
		b.ReportMetric(float64(after.HeapAlloc-before.HeapAlloc)/n, "bytes/key")
		runtime.KeepAlive(mem)
	}
}

func BenchmarkRedisStoreAllow(b *testing.B) {
	srv := testredis.Start(b)
	rs := NewRedisStore(srv.Client(), RedisOptions{Timeout: time.Second})
	keys := benchKeys(10_000)
	l := Limit{Rate: 1000, Burst: 100, Period: time.Second}
	b.ReportAllocs()
	b.RunParallel(func(pb *testing.PB) {
		i := 0
		for pb.Next() {
			if _, err := rs.Allow(context.Background(), keys[i%len(keys)], l, 1); err != nil {
				b.Error(err)
				return
			}
			i++
		}
	})
}

func BenchmarkLeasedStoreAllow(b *testing.B) {
	srv := testredis.Start(b)
	ls := NewLeasedStore(NewRedisStore(srv.Client(), RedisOptions{Timeout: time.Second}), LeaseOptions{})
	keys := benchKeys(100)
	l := Limit{Rate: 100_000, Burst: 10_000, Period: time.Second}
	b.ReportAllocs()
	b.RunParallel(func(pb *testing.PB) {
		i := 0
		for pb.Next() {
			if _, err := ls.Allow(context.Background(), keys[i%len(keys)], l, 1); err != nil {
				b.Error(err)
				return
			}
			i++
		}
	})
}
