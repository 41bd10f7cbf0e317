package features

import (
	"errors"
	"math"
	"math/rand/v2"
	"sort"
	"sync"
	"testing"
)

func newTestRisk(tb testing.TB, cfg RiskConfig) *Risk {
	tb.Helper()
	r, err := NewRisk(cfg)
	if err != nil {
		tb.Fatalf("NewRisk(%+v): %v", cfg, err)
	}
	return r
}

func TestRiskConfigValidate(t *testing.T) {
	tests := map[string]struct {
		cfg     RiskConfig
		wantErr bool
	}{
		"dim only":       {cfg: RiskConfig{Dim: Dim}},
		"all set":        {cfg: RiskConfig{Dim: 3, Alpha: 0.5, Beta: 2, L1: 1, L2: 1, Prior: 0.2}},
		"no dim":         {cfg: RiskConfig{}, wantErr: true},
		"dim too large":  {cfg: RiskConfig{Dim: MaxRiskDim + 1}, wantErr: true},
		"negative alpha": {cfg: RiskConfig{Dim: 1, Alpha: -1}, wantErr: true},
		"NaN beta":       {cfg: RiskConfig{Dim: 1, Beta: math.NaN()}, wantErr: true},
		"negative L1":    {cfg: RiskConfig{Dim: 1, L1: -0.1}, wantErr: true},
		"infinite L2":    {cfg: RiskConfig{Dim: 1, L2: math.Inf(1)}, wantErr: true},
		"prior 1":        {cfg: RiskConfig{Dim: 1, Prior: 1}, wantErr: true},
		"negative prior": {cfg: RiskConfig{Dim: 1, Prior: -0.5}, wantErr: true},
		"NaN prior":      {cfg: RiskConfig{Dim: 1, Prior: math.NaN()}, wantErr: true},
	}
	for name, tc := range tests {
		t.Run(name, func(t *testing.T) {
			err := tc.cfg.Validate()
			if (err != nil) != tc.wantErr {
				t.Fatalf("Validate() = %v, want error %v", err, tc.wantErr)
			}
			if _, err := NewRisk(tc.cfg); (err != nil) != tc.wantErr {
				t.Fatalf("NewRisk() error = %v, want error %v", err, tc.wantErr)
			}
		})
	}
}

func TestRiskPrior(t *testing.T) {
	for _, prior := range []float64{0, 0.01, 0.2} {
		r := newTestRisk(t, RiskConfig{Dim: 4, Prior: prior})
		want := prior
		if prior == 0 {
			want = DefaultRiskPrior
		}
		for _, x := range [][]float64{{0, 0, 0, 0}, {1, -1, 0.5, 1}, nil, {1, 2, 3, 4, 5, 6}} {
			if got := r.Score(x); math.Abs(got-want) > 1e-12 {
				t.Errorf("prior %v: untrained Score(%v) = %v, want %v", prior, x, got, want)
			}
		}
		w, b := r.Weights()
		if len(w) != 4 || math.Abs(b-math.Log(want/(1-want))) > 1e-12 {
			t.Errorf("untrained Weights = %v, %v", w, b)
		}
	}
}

func TestRiskLearnErrors(t *testing.T) {
	r := newTestRisk(t, RiskConfig{Dim: 3})
	tests := map[string]struct {
		x    []float64
		want error
	}{
		"short":    {x: []float64{1, 2}, want: ErrRiskDim},
		"long":     {x: []float64{1, 2, 3, 4}, want: ErrRiskDim},
		"nil":      {x: nil, want: ErrRiskDim},
		"NaN":      {x: []float64{0, math.NaN(), 0}, want: ErrBadValue},
		"+Inf":     {x: []float64{math.Inf(1), 0, 0}, want: ErrBadValue},
		"too big":  {x: []float64{0, 0, -1e7}, want: ErrBadValue},
		"accepted": {x: []float64{1, 0, -1}, want: nil},
	}
	for name, tc := range tests {
		t.Run(name, func(t *testing.T) {
			before := r.Learned()
			err := r.Learn(tc.x, true)
			if !errors.Is(err, tc.want) {
				t.Fatalf("Learn = %v, want %v", err, tc.want)
			}
			if changed := r.Learned() != before; changed != (tc.want == nil) {
				t.Errorf("model changed = %v after Learn returned %v", changed, err)
			}
		})
	}
}

// Score copes with whatever it is given.
func TestRiskScoreOddInputs(t *testing.T) {
	r := newTestRisk(t, RiskConfig{Dim: 3})
	for range 200 {
		if err := r.Learn([]float64{1, 1, 1}, true); err != nil {
			t.Fatal(err)
		}
	}
	for _, x := range [][]float64{nil, {math.NaN(), math.Inf(1), math.Inf(-1)}, {1e300, -1e300, 1e300}, {1, 1, 1, math.NaN()}} {
		if p := r.Score(x); math.IsNaN(p) || p < 0 || p > 1 {
			t.Errorf("Score(%v) = %v", x, p)
		}
	}
}

// logisticData draws n vectors and labels from a known logistic model: x
// has features in [0, 1] and [-1, 1] like a store's vectors, and
// P(y=1|x) = σ(bias + w·x).
type logisticData struct {
	w    []float64
	bias float64
}

func (m logisticData) draw(r *rand.Rand, x []float64) (p float64, y bool) {
	z := m.bias
	for i := range x {
		if i%3 == 2 {
			x[i] = 2*r.Float64() - 1
		} else {
			x[i] = r.Float64()
		}
		z += m.w[i] * x[i]
	}
	p = sigmoid(z)
	return p, r.Float64() < p
}

// logLoss is the mean negative log-likelihood of predictions p for labels y.
func logLoss(p []float64, y []bool) float64 {
	var sum float64
	for i := range p {
		q := min(max(p[i], 1e-15), 1-1e-15)
		if y[i] {
			sum -= math.Log(q)
		} else {
			sum -= math.Log(1 - q)
		}
	}
	return sum / float64(len(p))
}

// TestRiskCalibration trains on 200k samples of a known logistic model and
// checks calibration on 100k fresh ones: within each decile of predicted
// probability the mean prediction matches the observed abuse rate, and the
// log-loss is close to the true model's.
func TestRiskCalibration(t *testing.T) {
	const dim, train, test = 12, 200_000, 100_000
	r := rand.New(rand.NewPCG(2026, 11))
	truth := logisticData{w: make([]float64, dim), bias: -3}
	for i := range truth.w {
		truth.w[i] = 2 * r.NormFloat64()
	}
	truth.w[0] = 3 // an abusive feature, used below
	model := newTestRisk(t, RiskConfig{Dim: dim})
	x := make([]float64, dim)
	for range train {
		_, y := truth.draw(r, x)
		if err := model.Learn(x, y); err != nil {
			t.Fatal(err)
		}
	}
	pred := make([]float64, test)
	trueP := make([]float64, test)
	labels := make([]bool, test)
	for i := range test {
		trueP[i], labels[i] = truth.draw(r, x)
		pred[i] = model.Score(x)
	}
	order := make([]int, test)
	for i := range order {
		order[i] = i
	}
	sort.Slice(order, func(a, b int) bool { return pred[order[a]] < pred[order[b]] })
	for d := range 10 {
		var meanPred, rate float64
		idx := order[d*test/10 : (d+1)*test/10]
		for _, i := range idx {
			meanPred += pred[i]
			if labels[i] {
				rate++
			}
		}
		meanPred /= float64(len(idx))
		rate /= float64(len(idx))
		t.Logf("decile %d: mean predicted %.4f, observed %.4f", d+1, meanPred, rate)
		if math.Abs(meanPred-rate) > 0.03 {
			t.Errorf("decile %d: mean predicted %.4f, observed abuse rate %.4f", d+1, meanPred, rate)
		}
	}
	got, best := logLoss(pred, labels), logLoss(trueP, labels)
	t.Logf("log-loss %.4f, true model %.4f", got, best)
	if got > best+0.01 {
		t.Errorf("log-loss %.4f, more than 0.01 above the true model's %.4f", got, best)
	}

	// Monotone in the abusive feature: raising it never lowers the score.
	base := make([]float64, dim)
	for i := range base {
		base[i] = 0.5
	}
	prev := -1.0
	for v := 0.0; v <= 1; v += 0.05 {
		base[0] = v
		p := model.Score(base)
		if p < prev {
			t.Fatalf("score fell from %v to %v as feature 0 rose to %v", prev, p, v)
		}
		prev = p
	}
	base[0] = 0
	lo := model.Score(base)
	logit := func(p float64) float64 { return math.Log(p / (1 - p)) }
	if d := logit(prev) - logit(lo); d < 2 {
		t.Errorf("score %v with the abusive feature at 1, %v at 0: the log-odds rise by %.2f, want about 3", prev, lo, d)
	}
	if w, _ := model.Weights(); w[0] < 1 {
		t.Errorf("weight of the abusive feature %v, want near 3", w[0])
	}
}

// L1 holds the weights of features that carry no signal at exactly 0.
func TestRiskL1Sparsity(t *testing.T) {
	r := rand.New(rand.NewPCG(3, 3))
	model := newTestRisk(t, RiskConfig{Dim: 4, L1: 100})
	x := make([]float64, 4)
	// Over 5000 updates a noise coordinate's z is a random walk with a
	// standard deviation near 20: 100 is 5 of them.
	for range 5000 {
		x[0] = r.Float64()
		for i := 1; i < len(x); i++ {
			x[i] = 2*r.Float64() - 1 // centred noise
		}
		if err := model.Learn(x, r.Float64() < sigmoid(-2+4*x[0])); err != nil {
			t.Fatal(err)
		}
	}
	w, _ := model.Weights()
	if w[0] <= 0 {
		t.Errorf("signal weight %v, want positive", w[0])
	}
	for i := 1; i < 4; i++ {
		if w[i] != 0 {
			t.Errorf("noise weight %d = %v, want exactly 0", i, w[i])
		}
	}
}

// Score runs concurrently with Learn; run with -race.
func TestRiskConcurrentScoreAndLearn(t *testing.T) {
	model := newTestRisk(t, RiskConfig{Dim: Dim})
	var wg sync.WaitGroup
	stop := make(chan struct{})
	for range 3 {
		wg.Add(1)
		go func() {
			defer wg.Done()
			x := make([]float64, Dim)
			for {
				select {
				case <-stop:
					return
				default:
				}
				if p := model.Score(x); p <= 0 || p >= 1 {
					t.Errorf("Score = %v", p)
					return
				}
			}
		}()
	}
	r := rand.New(rand.NewPCG(5, 5))
	x := make([]float64, Dim)
	for range 5000 {
		for i := range x {
			x[i] = r.Float64()
		}
		if err := model.Learn(x, r.IntN(10) == 0); err != nil {
			t.Error(err)
		}
	}
	close(stop)
	wg.Wait()
	if model.Learned() != 5000 {
		t.Errorf("Learned = %d, want 5000", model.Learned())
	}
}

func TestRiskScoreAllocations(t *testing.T) {
	model := newTestRisk(t, RiskConfig{Dim: Dim})
	x := make([]float64, Dim)
	if n := testing.AllocsPerRun(100, func() { model.Score(x) }); n != 0 {
		t.Errorf("Score allocates %v times a call, want 0", n)
	}
}
