package features_test

import (
	"fmt"
	"time"

	"github.com/devflow/flowguard/features"
)

// Step 4 of the request path observes every request; on a budget-cache
// miss stage 2 scores the key's vector.
func Example() {
	store, err := features.NewStore(features.Config{})
	if err != nil {
		panic(err)
	}
	risk, err := features.NewRisk(features.RiskConfig{Dim: features.Dim, Prior: 0.01})
	if err != nil {
		panic(err)
	}
	now := time.Date(2026, 11, 20, 9, 30, 0, 0, time.UTC)
	obs := features.Observation{
		Endpoint: "POST /v1/payments",
		ClientIP: "203.0.113.7",
		Cost:     1,
		Tier:     features.TierOf("pro", false), // policy.Rule.Tier and .Enterprise()
	}
	x := make([]float64, 0, features.Dim)
	for i := range 30 {
		x = store.ObserveAndVector("k_live_1", obs, now.Add(time.Duration(i)*100*time.Millisecond), x[:0])
	}
	// 30 requests 0.1 s apart, read at 3 s: 6·Σ exp(-(3-0.1·i)/10) = 155
	// requests a minute.
	vals, _ := store.Snapshot("k_live_1", now.Add(3*time.Second))
	rate, _ := vals.Get("rate_10s")
	fmt.Printf("%d features, schema v%d\n", len(x), store.Schema().Version())
	fmt.Printf("rate_10s: %.0f %s\n", rate.Raw, rate.Unit)
	fmt.Printf("untrained risk: %.2f\n", risk.Score(x))
	// Output:
	// 24 features, schema v2
	// rate_10s: 155 req/min
	// untrained risk: 0.01
}

// Instances share request counts: each exports its own, and merges the
// sum of the others'.
func ExampleStore_Merge() {
	a, _ := features.NewStore(features.Config{})
	b, _ := features.NewStore(features.Config{})
	now := time.Date(2026, 11, 20, 9, 30, 0, 0, time.UTC)
	for range 60 {
		a.Observe("k_live_1", features.Observation{}, now)
	}
	b.Observe("k_live_1", features.Observation{}, now)

	rec, _ := a.Export("k_live_1", now)
	wire, _ := rec.MarshalBinary() // e.g. to Redis
	var got features.Record
	if err := got.UnmarshalBinary(wire); err != nil {
		panic(err)
	}
	if err := b.Merge("k_live_1", features.Record{}.Add(got), now); err != nil {
		panic(err)
	}
	vals, _ := b.Snapshot("k_live_1", now)
	rate, _ := vals.Get("rate_1m")
	fmt.Printf("rate_1m on b: %.0f %s\n", rate.Raw, rate.Unit)
	// Output:
	// rate_1m on b: 61 req/min
}
