package features

import (
	"errors"
	"math"
	"math/rand/v2"
	"os"
	"path/filepath"
	"testing"
)

func trainedRisk(t testing.TB, seed uint64, n int) *Risk {
	r, err := NewRisk(RiskConfig{Dim: 3, L1: 0.01})
	if err != nil {
		t.Fatal(err)
	}
	rng := rand.New(rand.NewPCG(seed, 1))
	for range n {
		x := []float64{rng.Float64(), rng.Float64(), rng.NormFloat64()}
		if err := r.Learn(x, x[0] > 0.8); err != nil {
			t.Fatal(err)
		}
	}
	return r
}

func TestRiskRoundTripContinuesIdentically(t *testing.T) {
	a := trainedRisk(t, 1, 500)
	data, err := a.MarshalBinary()
	if err != nil {
		t.Fatal(err)
	}
	b, err := DecodeRisk(data)
	if err != nil {
		t.Fatal(err)
	}
	x := []float64{0.9, 0.2, -1}
	for range 50 {
		if err := a.Learn(x, true); err != nil {
			t.Fatal(err)
		}
		if err := b.Learn(x, true); err != nil {
			t.Fatal(err)
		}
	}
	if a.Score(x) != b.Score(x) || a.Learned() != b.Learned() {
		t.Errorf("after restore: score %v vs %v, learned %d vs %d", a.Score(x), b.Score(x), a.Learned(), b.Learned())
	}
}

func TestDecodeRiskRejectsDamage(t *testing.T) {
	data, _ := trainedRisk(t, 2, 10).MarshalBinary()
	for i := range data {
		bad := append([]byte(nil), data...)
		bad[i] ^= 0x40
		if _, err := DecodeRisk(bad); err == nil {
			t.Fatalf("flipping byte %d was accepted", i)
		}
	}
	for n := range len(data) {
		if _, err := DecodeRisk(data[:n]); !errors.Is(err, ErrRiskCorrupt) {
			t.Fatalf("truncated to %d: err = %v", n, err)
		}
	}
}

func TestMixRiskWeighsByEvidence(t *testing.T) {
	a, b := trainedRisk(t, 3, 300), trainedRisk(t, 4, 100)
	untrained, _ := NewRisk(RiskConfig{Dim: 3, L1: 0.01})
	m, err := MixRisk(a, b, untrained)
	if err != nil {
		t.Fatal(err)
	}
	wa, ia := a.Weights()
	wb, ib := b.Weights()
	wm, im := m.Weights()
	for i := range wm {
		if want := (300*wa[i] + 100*wb[i]) / 400; math.Abs(wm[i]-want) > 1e-12 {
			t.Errorf("w[%d] = %v, want %v", i, wm[i], want)
		}
	}
	if want := (300*ia + 100*ib) / 400; math.Abs(im-want) > 1e-12 {
		t.Errorf("intercept = %v, want %v", im, want)
	}
	other, _ := NewRisk(RiskConfig{Dim: 4})
	if _, err := MixRisk(a, other); err == nil {
		t.Error("mixing models of other dimensions succeeded")
	}
}

func FuzzDecodeRisk(f *testing.F) {
	dir := filepath.Join("testdata", "fuzz", "FuzzDecodeRisk")
	if ents, err := os.ReadDir(dir); err != nil || len(ents) == 0 {
		f.Fatalf("seed corpus missing in %s", dir)
	}
	f.Fuzz(func(t *testing.T, data []byte) {
		r, err := DecodeRisk(data)
		if err != nil {
			return
		}
		again, err := r.MarshalBinary()
		if err != nil {
			t.Fatal(err)
		}
		if _, err := DecodeRisk(again); err != nil {
			t.Fatalf("re-encoding a decoded model fails: %v", err)
		}
	})
}
