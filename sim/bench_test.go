package sim

import (
	"context"
	"fmt"
	"os"
	"strconv"
	"testing"
)

// BenchmarkSimKeyEpochs measures the simulator's throughput in key-epochs
// per second of the lints pass: one day at 5-minute epochs (288) over a
// DevFlow-like mix of keys. FLOWGUARD_SIM_BENCH_KEYS sets the key count
// (default 20000); the target is 1.2M keys (346M key-epochs) in
// 10 minutes, 580k key-epochs/s. With that many keys one learner
// partition would hold every key's window of records, so the learner sees
// a 5% sample of keys (learn_sample) above 100k keys.
func BenchmarkSimKeyEpochs(b *testing.B) {
	keys := 20000
	if v := os.Getenv("FLOWGUARD_SIM_BENCH_KEYS"); v != "" {
		n, err := strconv.Atoi(v)
		if err != nil || n < 100 {
			b.Fatalf("FLOWGUARD_SIM_BENCH_KEYS=%q: want a number ≥ 100", v)
		}
		keys = n
	}
	sample := 1.0
	if keys > 100_000 {
		sample = 0.05
	}
	s, err := ParseScenario("bench.yaml", []byte(benchScenario(keys, sample)))
	if err != nil {
		b.Fatal(err)
	}
	b.ReportAllocs()
	var keyEpochs int64
	var wall float64
	for b.Loop() {
		res, err := Run(context.Background(), s, Options{Seed: 1, Policies: []string{PolicyLinTS}})
		if err != nil {
			b.Fatal(err)
		}
		p := res.Policies[PolicyLinTS]
		keyEpochs += p.KeyEpochs
		wall += p.WallS
	}
	b.ReportMetric(float64(keyEpochs)/wall, "key-epochs/s")
	b.ReportMetric(float64(keyEpochs)/wall/580_000, "x-target")
}

// benchScenario is a day of the default scenario's mix, scaled to keys.
func benchScenario(keys int, sample float64) string {
	n := func(share float64) int { return max(1, int(share*float64(keys))) }
	return fmt.Sprintf(`name: bench-%d
duration: 24h
epoch: 5m
tiers:
  free:       {rate: 30,   period: 1m, burst: 60,   floor: 0.25, ceiling: 2, ml: on, auto_block: true}
  pro:        {rate: 300,  period: 1m, burst: 600,  floor: 0.5,  ceiling: 4, ml: on, auto_block: true}
  enterprise: {rate: 3000, period: 1m, burst: 6000, floor: 1,    ceiling: 4, ml: on}
learning: {learn_sample: %v, attribution_window: 12h}
tenants:
  - {name: ent,  tier: enterprise, endpoint: POST /v1/messages, keys: %d, daily_requests: {median: 60000, sigma: 1.0}}
  - {name: pro,  tier: pro,        endpoint: POST /v1/messages, keys: %d, daily_requests: {median: 5000,  sigma: 1.0}}
  - {name: free, tier: free,       endpoint: POST /v1/messages, keys: %d, daily_requests: {median: 250,   sigma: 1.2}}
abusers:
  - {kind: scraper, tenant: free, keys: %d, daily_requests: {median: 100000, sigma: 0.5}}
  - {kind: credential_stuffing, tenant: free, keys: %d, daily_requests: {median: 20000, sigma: 0.5}}
`, keys, sample, n(0.01), n(0.1), n(0.87), n(0.01), n(0.01))
}
