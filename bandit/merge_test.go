package bandit

import (
	"errors"
	"math"
	"math/rand/v2"
	"testing"
	"time"
)

func TestMergeEqualsOneLearnerOverTheUnion(t *testing.T) {
	cfg := Config{ModelID: "m", Dim: 3}
	whole, _ := NewLearner(cfg)
	parts := make([]*Learner, 3)
	for i := range parts {
		parts[i], _ = NewLearner(cfg)
	}
	rng := rand.New(rand.NewPCG(1, 2))
	for i := range 3000 {
		x := []float64{rng.NormFloat64(), rng.NormFloat64(), rng.Float64()}
		a, r := rng.IntN(len(DefaultArms())), rng.NormFloat64()
		if err := whole.Update(x, a, r); err != nil {
			t.Fatal(err)
		}
		if err := parts[i%3].Update(x, a, r); err != nil {
			t.Fatal(err)
		}
	}
	now := time.Unix(1e9, 0)
	snaps := make([]*Snapshot, 3)
	for i, l := range parts {
		snaps[i], _ = l.Snapshot(now)
	}
	merged, err := Merge(now, snaps...)
	if err != nil {
		t.Fatal(err)
	}
	want, _ := whole.Snapshot(now)
	if merged.Version() != 3 {
		t.Errorf("version = %d, want the sum of the parts' versions, 3", merged.Version())
	}
	for a := range want.NumArms() {
		g, _ := merged.ArmPosterior(a)
		w, _ := want.ArmPosterior(a)
		if g.Count != w.Count {
			t.Errorf("arm %d: count %d, want %d", a, g.Count, w.Count)
		}
		for i := range w.Mean {
			if math.Abs(g.Mean[i]-w.Mean[i]) > 1e-9 {
				t.Errorf("arm %d: mean[%d] = %v, want %v", a, i, g.Mean[i], w.Mean[i])
			}
		}
		for i := range w.Precision {
			if math.Abs(g.Precision[i]-w.Precision[i]) > 1e-9*math.Max(1, math.Abs(w.Precision[i])) {
				t.Errorf("arm %d: precision[%d] = %v, want %v", a, i, g.Precision[i], w.Precision[i])
			}
		}
	}
}

func TestMergeRefusesOtherModels(t *testing.T) {
	now := time.Unix(1e9, 0)
	a, _ := NewLearner(Config{ModelID: "m", Dim: 3})
	b, _ := NewLearner(Config{ModelID: "m", Dim: 4})
	c, _ := NewLearner(Config{ModelID: "other", Dim: 3})
	d, _ := NewLearner(Config{ModelID: "m", Dim: 3, Schema: 0xfeed})
	sa, _ := a.Snapshot(now)
	sb, _ := b.Snapshot(now)
	sc, _ := c.Snapshot(now)
	sd, _ := d.Snapshot(now)
	for name, s := range map[string]*Snapshot{"dim": sb, "model id": sc, "feature schema": sd} {
		if _, err := Merge(now, sa, s); !errors.Is(err, ErrMergeMismatch) {
			t.Errorf("%s: err = %v, want ErrMergeMismatch", name, err)
		}
	}
	if _, err := Merge(now); err == nil {
		t.Error("Merge of nothing succeeded")
	}
}

func TestCorrectSumEqualsCorrectingEach(t *testing.T) {
	cfg := Config{ModelID: "m", Dim: 2}
	a, _ := NewLearner(cfg)
	b, _ := NewLearner(cfg)
	xs := [][]float64{{1, 2}, {0.5, -1}, {3, 0.25}}
	deltas := []float64{0.5, -2, 1.25}
	sumX, sum := make([]float64, 2), 0.0
	for i, x := range xs {
		for _, l := range []*Learner{a, b} {
			if err := l.Update(x, 1, 1); err != nil {
				t.Fatal(err)
			}
		}
		if err := a.Correct(x, 1, deltas[i]); err != nil {
			t.Fatal(err)
		}
		for j := range x {
			sumX[j] += deltas[i] * x[j]
		}
		sum += deltas[i]
	}
	if err := b.CorrectSum(1, sumX, sum); err != nil {
		t.Fatal(err)
	}
	sa, _ := a.Snapshot(time.Unix(0, 0))
	sb, _ := b.Snapshot(time.Unix(0, 0))
	pa, _ := sa.ArmPosterior(1)
	pb, _ := sb.ArmPosterior(1)
	for i := range pa.Mean {
		if math.Abs(pa.Mean[i]-pb.Mean[i]) > 1e-12 {
			t.Errorf("mean[%d]: Correct each %v, CorrectSum %v", i, pa.Mean[i], pb.Mean[i])
		}
	}
}
