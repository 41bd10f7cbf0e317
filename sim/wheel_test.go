package sim

import (
	"bytes"
	"math"
	"strings"
	"testing"
)

func TestWheelUniformMatchesItsExpectation(t *testing.T) {
	cfg := WheelConfig{Deltas: []float64{0.5, 0.95}, Steps: 4000, Runs: 4, Seed: 3}
	rows, err := RunWheel(cfg)
	if err != nil {
		t.Fatal(err)
	}
	for _, r := range rows {
		got, want := r.Regret["Uniform"], r.UniformExpected
		// One step's regret: inside δ, 0 or 0.2 (1.2 - 1); outside, 0,
		// 48.8 (50 - 1.2) or 49 (50 - 1), with the uniform policy's odds.
		in := r.Delta * r.Delta
		m1 := UniformWheelRegret(r.Delta)
		m2 := in*0.8*0.2*0.2 + (1-in)*(0.2*48.8*48.8+0.6*49*49)
		sd := math.Sqrt((m2 - m1*m1) * float64(cfg.Steps) / float64(cfg.Runs))
		if math.Abs(got-want) > 4*sd {
			t.Errorf("δ=%v: Uniform regret %.1f, expected %.1f ± %.1f", r.Delta, got, want, sd)
		}
		if r.Normalized["Uniform"] != 100 {
			t.Errorf("δ=%v: Uniform normalised to %v", r.Delta, r.Normalized["Uniform"])
		}
	}
}

func TestWheelThompsonBeatsUniform(t *testing.T) {
	rows, err := RunWheel(WheelConfig{Deltas: []float64{0.5, 0.7}, Steps: 1500, Runs: 3, Seed: 1})
	if err != nil {
		t.Fatal(err)
	}
	for _, r := range rows {
		for _, name := range []string{"LinTS", "LinTS-NIG", "epsilon-greedy"} {
			if !(r.Normalized[name] < 50) {
				t.Errorf("δ=%v: %s regret %.1f%% of Uniform's; a learner should do far better", r.Delta, name, r.Normalized[name])
			}
		}
	}
	var buf bytes.Buffer
	if err := WriteWheelTable(&buf, WheelConfig{Steps: 1500, Runs: 3}, rows); err != nil {
		t.Fatal(err)
	}
	for _, want := range []string{"LinTS-NIG", "δ=0.7", "Uniform expected"} {
		if !strings.Contains(buf.String(), want) {
			t.Errorf("table lacks %q:\n%s", want, buf.String())
		}
	}
	t.Log("\n" + buf.String())
}

func TestWheelIsDeterministic(t *testing.T) {
	cfg := WheelConfig{Deltas: []float64{0.9}, Steps: 300, Runs: 2, Seed: 9}
	a, _ := RunWheel(cfg)
	b, _ := RunWheel(cfg)
	for name, v := range a[0].Regret {
		if b[0].Regret[name] != v {
			t.Errorf("%s: %v then %v", name, v, b[0].Regret[name])
		}
	}
}

func TestWheelConfigValidate(t *testing.T) {
	tests := map[string]WheelConfig{
		"delta 1":       {Deltas: []float64{1}},
		"delta NaN":     {Deltas: []float64{math.NaN()}},
		"no steps":      {Steps: -1},
		"too many runs": {Runs: 1e6},
		"sigma":         {Sigma: -1},
		"epsilon":       {Epsilon: 2},
	}
	for name, c := range tests {
		t.Run(name, func(t *testing.T) {
			if _, err := RunWheel(c); err == nil {
				t.Fatal("accepted")
			}
		})
	}
}
