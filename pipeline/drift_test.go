package pipeline

import (
	"math"
	"math/rand/v2"
	"testing"
	"time"

	"github.com/devflow/flowguard/features"
)

// driftVector is a mature key's vector: every watched feature drawn around
// centre, key_age at two days.
func driftVector(r *rand.Rand, schema features.Schema, centre float64) []float64 {
	x := make([]float64, schema.Dim())
	for i := range x {
		lo, hi := schema.Feature(i).Bounds()
		x[i] = max(lo, min(hi, lo+(hi-lo)*(centre+0.05*r.NormFloat64())))
	}
	x[schema.Index("key_age")] = schema.Feature(schema.Index("key_age")).Scale(48)
	return x
}

// The monitor: a stable distribution does not drift; a shift past the
// threshold does, with enough samples only; drift ends below 80% of the
// threshold; observe mode measures without falling back; new keys, the
// time of day and non-finite values do not move it.
func TestDriftDetectsAShiftAndRecovers(t *testing.T) {
	schema := features.CurrentSchema()
	cfg := DriftConfig{Threshold: 0.25, Window: time.Minute, Reference: time.Hour, MinSamples: 500, MinKeyAge: time.Hour, Fallback: true}
	d := NewDrift(schema, cfg)
	r := rand.New(rand.NewPCG(1, 2))
	now := time.Unix(1e9, 0)
	feed := func(n int, centre float64) {
		for range n {
			d.Observe(driftVector(r, schema, centre))
		}
		now = now.Add(10 * time.Second)
		d.Evaluate(now)
	}
	for range 60 { // ten minutes of a stable population
		feed(100, 0.3)
	}
	if d.Active() {
		t.Fatalf("drift on a stable distribution: %v", d.PSI())
	}
	// Too few samples: a shift of a trickle is not judged.
	sparse := NewDrift(schema, cfg)
	for range 3 {
		sparse.Observe(driftVector(r, schema, 0.3))
	}
	sparse.Evaluate(now)
	for range 3 {
		sparse.Observe(driftVector(r, schema, 0.8))
	}
	if sparse.Evaluate(now.Add(time.Minute)); sparse.Active() {
		t.Error("drift judged on 6 samples (min_samples 500)")
	}
	// New keys and the time of day do not count.
	for range 100 {
		young := driftVector(r, schema, 0.9)
		young[schema.Index("key_age")] = schema.Feature(schema.Index("key_age")).Scale(0.5)
		d.Observe(young)
		clock := driftVector(r, schema, 0.3)
		clock[schema.Index("hour_sin")], clock[schema.Index("hour_cos")] = -1, -1
		d.Observe(clock)
	}
	nan := driftVector(r, schema, 0.3)
	nan[0], nan[1] = math.NaN(), math.Inf(1)
	d.Observe(nan)
	if d.Evaluate(now); d.Active() {
		t.Fatalf("new keys or the time of day made drift: %v", d.PSI())
	}
	// The shift.
	var took time.Duration
	for i := 0; i < 30 && !d.Active(); i++ {
		feed(100, 0.6)
		took += 10 * time.Second
	}
	if !d.Active() || !d.Drifting() {
		t.Fatalf("no drift after %v of a shifted distribution: %v", took, d.PSI())
	}
	t.Logf("drift detected after %v of the shift; PSI %v", took, d.PSI()["rate_1h"])
	if _, ok := d.PSI()["key_age"]; ok {
		t.Error("key_age is watched")
	}
	// Back to the old distribution: drift ends, once PSI < 0.2.
	for i := 0; i < 60 && d.Active(); i++ {
		feed(100, 0.3)
	}
	if d.Active() {
		t.Fatalf("drift did not end after the distribution came back: %v", d.PSI())
	}
	// Observe mode: detected, not acted on.
	o := NewDrift(schema, DriftConfig{Threshold: 0.25, Window: time.Minute, Reference: time.Hour, MinSamples: 10, MinKeyAge: time.Hour})
	for range 20 {
		for range 50 {
			o.Observe(driftVector(r, schema, 0.2))
		}
		now = now.Add(10 * time.Second)
		o.Evaluate(now)
	}
	for range 10 {
		for range 50 {
			o.Observe(driftVector(r, schema, 0.9))
		}
		now = now.Add(10 * time.Second)
		o.Evaluate(now)
	}
	if !o.Active() || o.Drifting() {
		t.Errorf("observe mode: active %v, drifting %v; want detected and not acted on", o.Active(), o.Drifting())
	}
	var nilDrift *Drift
	if nilDrift.Drifting() || nilDrift.Active() {
		t.Error("a nil monitor (mode off) reports drift")
	}
}

// BenchmarkDriftObserve is the monitor's cost per stage-2 run.
func BenchmarkDriftObserve(b *testing.B) {
	schema := features.CurrentSchema()
	d := NewDrift(schema, DriftConfig{Threshold: 0.25, Window: time.Minute, Reference: time.Hour, MinSamples: 1, MinKeyAge: time.Hour})
	x := driftVector(rand.New(rand.NewPCG(1, 1)), schema, 0.4)
	b.RunParallel(func(pb *testing.PB) {
		for pb.Next() {
			d.Observe(x)
		}
	})
}
