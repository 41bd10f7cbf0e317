package bandit

import (
	"errors"
	"math"
	"math/rand/v2"
	"testing"
	"time"

	"gonum.org/v1/gonum/mat"
)

// closedForm computes one arm's posterior from its raw data with gonum:
// B = λI + ΣxxᵀX, f = Σ r·x, μ = B⁻¹f, over contexts with the intercept
// appended when intercept is set.
type closedForm struct {
	b   *mat.SymDense
	f   *mat.VecDense
	mu  *mat.VecDense
	inv *mat.SymDense
	r2  float64
	n   int
}

func solveClosedForm(t *testing.T, xs [][]float64, rs []float64, lambda float64, intercept bool) closedForm {
	t.Helper()
	p := len(xs[0])
	if intercept {
		p++
	}
	b := mat.NewSymDense(p, nil)
	for i := 0; i < p; i++ {
		b.SetSym(i, i, lambda)
	}
	f := mat.NewVecDense(p, nil)
	r2 := 0.0
	for k, x := range xs {
		v := make([]float64, p)
		copy(v, x)
		if intercept {
			v[p-1] = 1
		}
		xv := mat.NewVecDense(p, v)
		b.SymRankOne(b, 1, xv)
		f.AddScaledVec(f, rs[k], xv)
		r2 += rs[k] * rs[k]
	}
	var ch mat.Cholesky
	if !ch.Factorize(b) {
		t.Fatal("reference precision matrix is not positive definite")
	}
	var mu mat.VecDense
	if err := ch.SolveVecTo(&mu, f); err != nil {
		t.Fatal(err)
	}
	var inv mat.SymDense
	if err := ch.InverseTo(&inv); err != nil {
		t.Fatal(err)
	}
	return closedForm{b: b, f: f, mu: &mu, inv: &inv, r2: r2, n: len(xs)}
}

// near reports whether got and want agree to tol, relative to max(1, |want|).
func near(got, want, tol float64) bool {
	return math.Abs(got-want) <= tol*max(1, math.Abs(want))
}

func TestPosteriorMatchesClosedForm(t *testing.T) {
	tests := map[string]struct {
		post      Posterior
		dim       int
		intercept bool
		lambda    float64
		scale     float64
		n         int
	}{
		"gaussian d=5":                 {Gaussian, 5, true, 1, 1, 300},
		"gaussian d=16 strong prior":   {Gaussian, 16, true, 10, 0.5, 120},
		"gaussian no intercept":        {Gaussian, 3, false, 0.5, 2, 50},
		"gaussian fewer points than d": {Gaussian, 8, true, 1, 1, 3},
		"nig d=4":                      {NormalInverseGamma, 4, true, 1, 1, 200},
		"nig d=16":                     {NormalInverseGamma, 16, true, 2, 0.7, 400},
	}
	for name, tc := range tests {
		t.Run(name, func(t *testing.T) {
			r := rand.New(rand.NewPCG(uint64(tc.n), uint64(tc.dim)))
			arms := benchArms(3)
			l, err := NewLearner(Config{Arms: arms, Dim: tc.dim, NoIntercept: !tc.intercept,
				Posterior: tc.post, Lambda: tc.lambda, Scale: tc.scale})
			if err != nil {
				t.Fatal(err)
			}
			perArm := make([][][]float64, len(arms))
			perR := make([][]float64, len(arms))
			for i := 0; i < tc.n*len(arms); i++ {
				a := r.IntN(len(arms))
				x := make([]float64, tc.dim)
				for j := range x {
					x[j] = r.NormFloat64() * 3
				}
				rew := 2*x[0] - float64(a) + r.NormFloat64()
				if err := l.Update(x, a, rew); err != nil {
					t.Fatal(err)
				}
				perArm[a] = append(perArm[a], x)
				perR[a] = append(perR[a], rew)
			}
			snap, err := l.Snapshot(time.Unix(1, 0))
			if err != nil {
				t.Fatal(err)
			}
			for a := range arms {
				if len(perArm[a]) == 0 {
					continue
				}
				want := solveClosedForm(t, perArm[a], perR[a], tc.lambda, tc.intercept)
				got, err := snap.ArmPosterior(a)
				if err != nil {
					t.Fatal(err)
				}
				if got.Count != uint64(want.n) {
					t.Errorf("arm %d: count %d, want %d", a, got.Count, want.n)
				}
				p := want.mu.Len()
				k := tc.scale * tc.scale
				if tc.post == NormalInverseGamma {
					shape := DefaultPriorShape + float64(want.n)/2
					rate := DefaultPriorRate + 0.5*(want.r2-mat.Dot(want.f, want.mu))
					if !near(got.Shape, shape, 1e-9) || !near(got.Rate, rate, 1e-9) {
						t.Errorf("arm %d: noise posterior IG(%v, %v), want IG(%v, %v)", a, got.Shape, got.Rate, shape, rate)
					}
					k *= rate / (shape - 1)
				}
				for i := 0; i < p; i++ {
					if !near(got.Mean[i], want.mu.AtVec(i), 1e-9) {
						t.Errorf("arm %d: mean[%d] = %.15g, want %.15g", a, i, got.Mean[i], want.mu.AtVec(i))
					}
					for j := 0; j < p; j++ {
						if g, w := got.Precision[i*p+j], want.b.At(i, j); !near(g, w, 1e-9) {
							t.Errorf("arm %d: precision[%d,%d] = %.15g, want %.15g", a, i, j, g, w)
						}
						if g, w := got.Covariance[i*p+j], k*want.inv.At(i, j); !near(g, w, 1e-9) {
							t.Errorf("arm %d: covariance[%d,%d] = %.15g, want %.15g", a, i, j, g, w)
						}
					}
				}
			}
		})
	}
}

func TestPriorArmPosterior(t *testing.T) {
	l, err := NewLearner(Config{Dim: 2, Lambda: 4, Scale: 3})
	if err != nil {
		t.Fatal(err)
	}
	s, err := l.Snapshot(time.Time{})
	if err != nil {
		t.Fatal(err)
	}
	got, _ := s.ArmPosterior(0)
	for i := 0; i < 3; i++ {
		for j := 0; j < 3; j++ {
			want := 0.0
			if i == j {
				want = 9.0 / 4
			}
			if !near(got.Covariance[i*3+j], want, 1e-15) {
				t.Errorf("prior covariance[%d,%d] = %v, want %v", i, j, got.Covariance[i*3+j], want)
			}
		}
		if got.Mean[i] != 0 {
			t.Errorf("prior mean[%d] = %v", i, got.Mean[i])
		}
	}
}

func TestCorrectEqualsUpdatingWithTheFinalReward(t *testing.T) {
	r := rand.New(rand.NewPCG(5, 5))
	for _, post := range []Posterior{Gaussian, NormalInverseGamma} {
		t.Run(post.String(), func(t *testing.T) {
			late, _ := NewLearner(Config{Dim: 4, Posterior: post})
			direct, _ := NewLearner(Config{Dim: 4, Posterior: post})
			for i := 0; i < 500; i++ {
				x := []float64{r.NormFloat64(), r.NormFloat64(), r.Float64(), 1}
				a := r.IntN(6)
				provisional := 1.0 // no label yet: the benign default
				final := provisional
				if r.IntN(5) == 0 {
					final = -4 // an abuse label arrived days later
				}
				if err := late.Update(x, a, provisional); err != nil {
					t.Fatal(err)
				}
				if err := direct.Update(x, a, final); err != nil {
					t.Fatal(err)
				}
				if final == provisional {
					continue
				}
				var err error
				if post == Gaussian {
					err = late.Correct(x, a, final-provisional)
				} else {
					if err := late.Correct(x, a, final-provisional); !errors.Is(err, ErrNeedReward) {
						t.Fatalf("Correct on a NIG learner: %v, want ErrNeedReward", err)
					}
					err = late.Relabel(x, a, provisional, final)
				}
				if err != nil {
					t.Fatal(err)
				}
			}
			sl, _ := late.Snapshot(time.Time{})
			sd, _ := direct.Snapshot(time.Time{})
			for a := 0; a < 6; a++ {
				pl, _ := sl.ArmPosterior(a)
				pd, _ := sd.ArmPosterior(a)
				for i := range pl.Precision {
					if pl.Precision[i] != pd.Precision[i] {
						t.Fatalf("arm %d: a correction changed B: %v vs %v", a, pl.Precision[i], pd.Precision[i])
					}
				}
				for i := range pl.Mean {
					if !near(pl.Mean[i], pd.Mean[i], 1e-12) {
						t.Errorf("arm %d: corrected mean[%d] %v, direct %v", a, i, pl.Mean[i], pd.Mean[i])
					}
				}
				if !near(pl.Rate, pd.Rate, 1e-12) || pl.Count != pd.Count {
					t.Errorf("arm %d: corrected (n=%d, rate %v), direct (n=%d, rate %v)", a, pl.Count, pl.Rate, pd.Count, pd.Rate)
				}
			}
		})
	}
}

func TestUpdateRejectsBadInput(t *testing.T) {
	l, _ := NewLearner(Config{Dim: 2})
	tests := map[string]struct {
		x    []float64
		arm  int
		r    float64
		want error
	}{
		"short context": {[]float64{1}, 0, 1, ErrDim},
		"long context":  {[]float64{1, 2, 3}, 0, 1, ErrDim},
		"nil context":   {nil, 0, 1, ErrDim},
		"NaN feature":   {[]float64{math.NaN(), 1}, 0, 1, ErrBadValue},
		"Inf feature":   {[]float64{1, math.Inf(-1)}, 0, 1, ErrBadValue},
		"huge feature":  {[]float64{1e300, 1}, 0, 1, ErrBadValue},
		"NaN reward":    {[]float64{1, 1}, 0, math.NaN(), ErrBadValue},
		"negative arm":  {[]float64{1, 1}, -1, 1, ErrUnknownArm},
		"arm past end":  {[]float64{1, 1}, 6, 1, ErrUnknownArm},
	}
	for name, tc := range tests {
		t.Run(name, func(t *testing.T) {
			if err := l.Update(tc.x, tc.arm, tc.r); !errors.Is(err, tc.want) {
				t.Errorf("Update: %v, want %v", err, tc.want)
			}
			if err := l.Correct(tc.x, tc.arm, tc.r); !errors.Is(err, tc.want) {
				t.Errorf("Correct: %v, want %v", err, tc.want)
			}
		})
	}
	if l.Count(0) != 0 {
		t.Fatalf("a rejected update was counted")
	}
	// A batch is all or nothing.
	err := l.UpdateBatch([]Observation{{X: []float64{1, 1}, Arm: 0, Reward: 1}, {X: []float64{1}, Arm: 0, Reward: 1}})
	if !errors.Is(err, ErrDim) || l.Count(0) != 0 {
		t.Fatalf("bad batch: err %v, count %d; want ErrDim and nothing applied", err, l.Count(0))
	}
	if err := l.UpdateBatch([]Observation{{X: []float64{1, 1}, Arm: 0, Reward: 1}, {X: []float64{2, 1}, Arm: 0, Reward: 1}}); err != nil || l.Count(0) != 2 {
		t.Fatalf("good batch: err %v, count %d", err, l.Count(0))
	}
}

func TestConfigValidate(t *testing.T) {
	tests := map[string]Config{
		"no dim":         {},
		"dim too big":    {Dim: MaxDim + 1},
		"bad arms":       {Dim: 1, Arms: ArmSet{{Name: "a", Multiplier: 2}, {Name: "b", Multiplier: 1}}},
		"negative scale": {Dim: 1, Scale: -1},
		"NaN lambda":     {Dim: 1, Lambda: math.NaN()},
		"Inf prior":      {Dim: 1, PriorRate: math.Inf(1)},
		"posterior":      {Dim: 1, Posterior: 9},
	}
	for name, c := range tests {
		t.Run(name, func(t *testing.T) {
			if _, err := NewLearner(c); err == nil {
				t.Fatalf("NewLearner(%+v) accepted it", c)
			}
		})
	}
}

// TestTenMillionUpdates feeds 10⁷ updates to one arm and checks that the
// precision matrix is still symmetric positive definite and that the mean
// matches a fresh solve of sums accumulated independently, block by block.
func TestTenMillionUpdates(t *testing.T) {
	const dim, n, block = 4, 10_000_000, 1000
	l, err := NewLearner(Config{Dim: dim, Arms: benchArms(1)})
	if err != nil {
		t.Fatal(err)
	}
	r := rand.New(rand.NewPCG(10, 7))
	p := dim + 1
	var bTot, bBlk [5][5]float64
	var fTot, fBlk [5]float64
	x := make([]float64, dim)
	v := make([]float64, p)
	v[dim] = 1
	theta := []float64{0.5, -1, 2, 0.1, 3}
	for i := 1; i <= n; i++ {
		rew := theta[dim]
		for j := range x {
			x[j] = r.Float64()*10 - 3 // biased, so sums grow and cancel badly
			v[j] = x[j]
			rew += theta[j] * x[j]
		}
		rew += r.NormFloat64()
		if err := l.Update(x, 0, rew); err != nil {
			t.Fatal(err)
		}
		for a := 0; a < p; a++ {
			fBlk[a] += rew * v[a]
			for b := 0; b <= a; b++ {
				bBlk[a][b] += v[a] * v[b]
			}
		}
		if i%block == 0 {
			for a := 0; a < p; a++ {
				fTot[a] += fBlk[a]
				fBlk[a] = 0
				for b := 0; b <= a; b++ {
					bTot[a][b] += bBlk[a][b]
					bBlk[a][b] = 0
				}
			}
		}
	}
	snap, err := l.Snapshot(time.Time{})
	if err != nil {
		t.Fatal(err)
	}
	got, _ := snap.ArmPosterior(0)
	ref := mat.NewSymDense(p, nil)
	for a := 0; a < p; a++ {
		for b := 0; b <= a; b++ {
			w := bTot[a][b]
			if a == b {
				w += DefaultLambda
			}
			ref.SetSym(a, b, w)
		}
	}
	prec := mat.NewSymDense(p, nil)
	for a := 0; a < p; a++ {
		for b := 0; b < p; b++ {
			if got.Precision[a*p+b] != got.Precision[b*p+a] {
				t.Fatalf("precision not symmetric at %d,%d", a, b)
			}
			if !near(got.Precision[a*p+b], ref.At(a, b), 1e-9) {
				t.Errorf("precision[%d,%d] = %.17g, fresh %.17g", a, b, got.Precision[a*p+b], ref.At(a, b))
			}
		}
		for b := 0; b <= a; b++ {
			prec.SetSym(a, b, got.Precision[a*p+b])
		}
	}
	var ch mat.Cholesky
	if !ch.Factorize(prec) {
		t.Fatal("precision matrix is not positive definite after 10⁷ updates")
	}
	var refCh mat.Cholesky
	refCh.Factorize(ref)
	var mu mat.VecDense
	if err := refCh.SolveVecTo(&mu, mat.NewVecDense(p, fTot[:])); err != nil {
		t.Fatal(err)
	}
	for a := 0; a < p; a++ {
		if !near(got.Mean[a], mu.AtVec(a), 1e-9) {
			t.Errorf("mean[%d] = %.15g, fresh solve %.15g", a, got.Mean[a], mu.AtVec(a))
		}
		if math.Abs(got.Mean[a]-theta[a]) > 0.01 {
			t.Errorf("mean[%d] = %v, true coefficient %v", a, got.Mean[a], theta[a])
		}
	}
	if got.Count != n {
		t.Errorf("count %d", got.Count)
	}
}
