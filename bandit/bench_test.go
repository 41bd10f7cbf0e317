package bandit

import (
	"math/rand/v2"
	"testing"
	"time"
)

// linearProblem is a synthetic linear bandit: arm a pays θₐᵀx + intercept
// plus N(0, noise²) noise, for contexts with N(0, 1/d) features.
type linearProblem struct {
	dim   int
	theta [][]float64 // per arm: dim coefficients, then the intercept
	noise float64
}

func newLinearProblem(r *rand.Rand, dim, arms int, noise float64) *linearProblem {
	lp := &linearProblem{dim: dim, noise: noise}
	for a := 0; a < arms; a++ {
		th := make([]float64, dim+1)
		for i := range th {
			th[i] = r.NormFloat64() / 2
		}
		lp.theta = append(lp.theta, th)
	}
	return lp
}

func (lp *linearProblem) context(r *rand.Rand, x []float64) {
	s := 1 / float64(lp.dim)
	for i := range x {
		x[i] = r.NormFloat64() * s * float64(lp.dim) / float64(lp.dim+1) * 2
	}
}

// mean returns the expected reward of arm a for x.
func (lp *linearProblem) mean(a int, x []float64) float64 {
	th := lp.theta[a]
	m := th[lp.dim]
	for i, v := range x {
		m += th[i] * v
	}
	return m
}

func (lp *linearProblem) reward(r *rand.Rand, a int, x []float64) float64 {
	return lp.mean(a, x) + lp.noise*r.NormFloat64()
}

// trainedSnapshot runs Thompson sampling on a linear problem for steps
// steps, taking a new snapshot every 50 updates as a learner in production
// would, and returns the final snapshot and the problem.
func trainedSnapshot(tb testing.TB, post Posterior, dim, arms, steps int, seed uint64) (*Snapshot, *linearProblem) {
	tb.Helper()
	r := rand.New(rand.NewPCG(seed, 1))
	lp := newLinearProblem(r, dim, arms, 0.3)
	set := make(ArmSet, arms)
	for i := range set {
		set[i] = Arm{Name: "a" + string(rune('a'+i)), Multiplier: float64(i + 1)}
	}
	l, err := NewLearner(Config{Arms: set, Dim: dim, Posterior: post, Scale: 0.3})
	if err != nil {
		tb.Fatal(err)
	}
	snap, err := l.Snapshot(time.Unix(0, 0))
	if err != nil {
		tb.Fatal(err)
	}
	x := make([]float64, dim)
	for t := 0; t < steps; t++ {
		lp.context(r, x)
		c, err := snap.Choose(x, set.All(), r)
		if err != nil {
			tb.Fatal(err)
		}
		if err := l.Update(x, c.Arm, lp.reward(r, c.Arm, x)); err != nil {
			tb.Fatal(err)
		}
		if t%50 == 49 {
			if snap, err = l.Snapshot(time.Unix(int64(t), 0)); err != nil {
				tb.Fatal(err)
			}
		}
	}
	if snap, err = l.Snapshot(time.Unix(int64(steps), 0)); err != nil {
		tb.Fatal(err)
	}
	return snap, lp
}

// benchContexts returns n contexts of the problem.
func benchContexts(lp *linearProblem, n int) [][]float64 {
	r := rand.New(rand.NewPCG(99, 1))
	xs := make([][]float64, n)
	for i := range xs {
		xs[i] = make([]float64, lp.dim)
		lp.context(r, xs[i])
	}
	return xs
}

// BenchmarkChoose measures a full choice (Thompson draws and the exact
// propensity of the chosen arm) at d = 16 with 7 arms, on a model trained on
// 5000 decisions and on the prior.
func BenchmarkChoose(b *testing.B) {
	for _, bc := range []struct {
		name  string
		post  Posterior
		steps int
	}{
		{"gaussian/trained", Gaussian, 5000},
		{"gaussian/prior", Gaussian, 0},
		{"nig/trained", NormalInverseGamma, 5000},
	} {
		b.Run(bc.name, func(b *testing.B) {
			snap, lp := trainedSnapshot(b, bc.post, 16, 7, bc.steps, 1)
			xs := benchContexts(lp, 1024)
			rng := rand.New(rand.NewPCG(1, 2))
			all := snap.arms.All()
			b.ReportAllocs()
			b.ResetTimer()
			for i := 0; i < b.N; i++ {
				if _, err := snap.Choose(xs[i&1023], all, rng); err != nil {
					b.Fatal(err)
				}
			}
		})
	}
}

// BenchmarkChooseParallel runs Choose from all cores on one shared snapshot,
// as serving does, each goroutine with its own random source.
func BenchmarkChooseParallel(b *testing.B) {
	snap, lp := trainedSnapshot(b, Gaussian, 16, 7, 5000, 1)
	xs := benchContexts(lp, 1024)
	all := snap.arms.All()
	var seed uint64
	b.ReportAllocs()
	b.ResetTimer()
	b.RunParallel(func(pb *testing.PB) {
		seed++
		rng := rand.New(rand.NewPCG(seed, 7))
		i := 0
		for pb.Next() {
			if _, err := snap.Choose(xs[i&1023], all, rng); err != nil {
				b.Error(err)
				return
			}
			i++
		}
	})
}

// BenchmarkUpdate measures one learner update at d = 16 with 7 arms.
func BenchmarkUpdate(b *testing.B) {
	for _, post := range []Posterior{Gaussian, NormalInverseGamma} {
		b.Run(post.String(), func(b *testing.B) {
			l, err := NewLearner(Config{Arms: benchArms(7), Dim: 16, Posterior: post})
			if err != nil {
				b.Fatal(err)
			}
			r := rand.New(rand.NewPCG(3, 4))
			lp := newLinearProblem(r, 16, 7, 0.3)
			xs := benchContexts(lp, 1024)
			b.ReportAllocs()
			b.ResetTimer()
			for i := 0; i < b.N; i++ {
				x := xs[i&1023]
				if err := l.Update(x, i%7, float64(i&7)); err != nil {
					b.Fatal(err)
				}
			}
		})
	}
}

// BenchmarkSnapshot measures building a snapshot after every arm changed.
func BenchmarkSnapshot(b *testing.B) {
	l, err := NewLearner(Config{Arms: benchArms(7), Dim: 16})
	if err != nil {
		b.Fatal(err)
	}
	x := make([]float64, 16)
	b.ReportAllocs()
	b.ResetTimer()
	for i := 0; i < b.N; i++ {
		for a := 0; a < 7; a++ {
			x[a] = float64(i % 5)
			if err := l.Update(x, a, 1); err != nil {
				b.Fatal(err)
			}
		}
		if _, err := l.Snapshot(time.Time{}); err != nil {
			b.Fatal(err)
		}
	}
}

// BenchmarkSnapshotEncodeDecode measures encoding a d = 16, 7-arm snapshot
// and decoding it back, which refactorizes every arm.
func BenchmarkSnapshotEncodeDecode(b *testing.B) {
	snap, _ := trainedSnapshot(b, Gaussian, 16, 7, 2000, 1)
	buf, err := snap.AppendBinary(nil)
	if err != nil {
		b.Fatal(err)
	}
	b.ReportMetric(float64(len(buf)), "bytes")
	b.ReportAllocs()
	b.ResetTimer()
	for i := 0; i < b.N; i++ {
		buf, err = snap.AppendBinary(buf[:0])
		if err != nil {
			b.Fatal(err)
		}
		if _, err := DecodeSnapshot(buf); err != nil {
			b.Fatal(err)
		}
	}
}

func benchArms(k int) ArmSet {
	set := make(ArmSet, k)
	for i := range set {
		set[i] = Arm{Name: "a" + string(rune('a'+i)), Multiplier: float64(i + 1)}
	}
	return set
}

// BenchmarkChooseSchemaV2 times Choose on the context of feature schema v2
// (24 features and the risk score: 25) against schema v1's (19), trained
// alike, interleaved in one run, and reports the ratio of their
// throughputs, v2/v1 (issue 17). One op is 1024 draws of each.
func BenchmarkChooseSchemaV2(b *testing.B) {
	const v1, v2 = 18 + 1, 24 + 1
	s1, lp1 := trainedSnapshot(b, Gaussian, v1, 7, 5000, 1)
	s2, lp2 := trainedSnapshot(b, Gaussian, v2, 7, 5000, 1)
	x1, x2 := benchContexts(lp1, 1024), benchContexts(lp2, 1024)
	rng := rand.New(rand.NewPCG(1, 2))
	a1, a2 := s1.arms.All(), s2.arms.All()
	var t1, t2 time.Duration
	b.ReportAllocs()
	for b.Loop() {
		start := time.Now()
		for _, x := range x1 {
			if _, err := s1.Choose(x, a1, rng); err != nil {
				b.Fatal(err)
			}
		}
		mid := time.Now()
		for _, x := range x2 {
			if _, err := s2.Choose(x, a2, rng); err != nil {
				b.Fatal(err)
			}
		}
		t1, t2 = t1+mid.Sub(start), t2+time.Since(mid)
	}
	n := float64(b.N * 1024)
	b.ReportMetric(float64(t1.Nanoseconds())/n, "v1-ns/choose")
	b.ReportMetric(float64(t2.Nanoseconds())/n, "v2-ns/choose")
	b.ReportMetric(t1.Seconds()/t2.Seconds(), "v2/v1")
}
