package features

import (
	"math"
	"math/rand/v2"
	"testing"
)

func TestSchemaV1(t *testing.T) {
	s := CurrentSchema()
	if s.Version() != SchemaVersion || s.Dim() != Dim || len(s.Names()) != Dim || len(s.Features()) != Dim {
		t.Fatalf("schema %v: version %d, dim %d, %d names", s, s.Version(), s.Dim(), len(s.Names()))
	}
	seen := map[string]bool{}
	for i, name := range s.Names() {
		f := s.Feature(i)
		if name == "" || seen[name] || f.Name != name || f.Unit == "" || f.Doc == "" {
			t.Errorf("feature %d %+v: names must be unique and documented", i, f)
		}
		seen[name] = true
		if s.Index(name) != i {
			t.Errorf("Index(%q) = %d, want %d", name, s.Index(name), i)
		}
		lo, hi := f.Bounds()
		if lo < -1 || hi > 1 || lo >= hi {
			t.Errorf("%s: bounds [%v, %v], want within [-1, 1]", name, lo, hi)
		}
	}
	if s.Index("nope") != -1 {
		t.Error("Index of an unknown name is not -1")
	}
	// The schema hands out copies.
	s.Names()[0] = "changed"
	s.Features()[0].Name = "changed"
	if CurrentSchema().Feature(0).Name == "changed" {
		t.Error("callers can change the schema")
	}
	store := newTestStore(t, Config{})
	if store.Schema().Fingerprint() != s.Fingerprint() {
		t.Error("the store writes another schema")
	}
}

func TestSchemaFingerprint(t *testing.T) {
	base := CurrentSchema().Features()
	changes := map[string]func(fs []Feature){
		"renamed": func(fs []Feature) { fs[3].Name = "rate_2h" },
		"reordered": func(fs []Feature) {
			fs[0], fs[1] = fs[1], fs[0]
		},
		"rescaled":   func(fs []Feature) { fs[0].Max = 1e7 },
		"rescaling":  func(fs []Feature) { fs[4].Scaling = Log1p },
		"new bounds": func(fs []Feature) { fs[4].Min = 0 },
		"dropped":    nil,
	}
	for name, change := range changes {
		t.Run(name, func(t *testing.T) {
			fs := append([]Feature(nil), base...)
			if change == nil {
				fs = fs[:len(fs)-1]
			} else {
				change(fs)
			}
			if newSchema(SchemaVersion, fs).Fingerprint() == CurrentSchema().Fingerprint() {
				t.Error("fingerprint unchanged")
			}
		})
	}
	if newSchema(SchemaVersion+1, base).Fingerprint() == CurrentSchema().Fingerprint() {
		t.Error("fingerprint ignores the version")
	}
	if newSchema(SchemaVersion, base).Fingerprint() != CurrentSchema().Fingerprint() {
		t.Error("fingerprint is not a function of the schema")
	}
}

func TestFeatureScale(t *testing.T) {
	rate := CurrentSchema().Feature(CurrentSchema().Index("rate_1m"))
	burst := CurrentSchema().Feature(CurrentSchema().Index("burstiness"))
	tests := map[string]struct {
		f    Feature
		raw  float64
		want float64
	}{
		"log zero":        {rate, 0, 0},
		"log negative":    {rate, -5, 0},
		"log one":         {rate, 1, math.Log(2) / math.Log1p(1e6)},
		"log at max":      {rate, 1e6, 1},
		"log above max":   {rate, 1e9, 1},
		"log NaN":         {rate, math.NaN(), 0},
		"log +Inf":        {rate, math.Inf(1), 1},
		"clamp inside":    {burst, 0.25, 0.25},
		"clamp below":     {burst, -3, -1},
		"clamp above":     {burst, 3, 1},
		"clamp NaN":       {burst, math.NaN(), 0},
		"clamp -Inf":      {burst, math.Inf(-1), -1},
		"log tiny":        {rate, 1e-12, 1e-12 / math.Log1p(1e6)},
		"log just inside": {rate, 999_999, math.Log1p(999_999) / math.Log1p(1e6)},
	}
	for name, tc := range tests {
		t.Run(name, func(t *testing.T) {
			if got := tc.f.Scale(tc.raw); !approx(got, tc.want, 1e-9, 1e-15) {
				t.Errorf("Scale(%v) = %v, want %v", tc.raw, got, tc.want)
			}
		})
	}
}

// The store's fast scaling agrees with Feature.Scale on every feature,
// for ordinary and extreme raw values.
func TestScaleMatchesSchema(t *testing.T) {
	r := rand.New(rand.NewPCG(7, 8))
	specials := []float64{0, -0.0, 1, -1, 1e-300, 1e300, math.NaN(), math.Inf(1), math.Inf(-1), math.MaxFloat64, 0.5, 1e6, 720}
	for trial := range 2000 {
		var raws [Dim]float64
		for i := range raws {
			switch {
			case trial < len(specials):
				raws[i] = specials[trial]
			default:
				raws[i] = math.Exp(r.Float64()*40-20) * float64(1-2*r.IntN(2))
			}
		}
		got := scale(nil, &raws)
		for i, g := range got {
			f := CurrentSchema().Feature(i)
			if want := f.Scale(raws[i]); !approx(g, want, 1e-9, 1e-9) {
				t.Fatalf("%s: scale(%v) = %v, Feature.Scale = %v", f.Name, raws[i], g, want)
			}
		}
	}
}

func TestFastMath(t *testing.T) {
	r := rand.New(rand.NewPCG(1, 1))
	for range 100_000 {
		x := math.Exp(r.Float64()*1400 - 700)
		if got, want := fastLog(x), math.Log(x); math.Abs(got-want) > 1e-9 {
			t.Fatalf("fastLog(%v) = %v, want %v", x, got, want)
		}
		y := r.Float64() * 80
		if got, want := expNeg(y), math.Exp(-y); math.Abs(got-want) > 1e-8*want {
			t.Fatalf("expNeg(%v) = %v, want %v", y, got, want)
		}
	}
	for _, x := range []float64{1, 2, math.E, 1 + 1e-15, 1 << 52, math.MaxFloat64} {
		if got, want := fastLog(x), math.Log(x); math.Abs(got-want) > 1e-9 {
			t.Errorf("fastLog(%v) = %v, want %v", x, got, want)
		}
	}
	if v := fastLog(math.Inf(1)); math.IsInf(v, 0) || math.IsNaN(v) {
		t.Errorf("fastLog(+Inf) = %v, want finite", v)
	}
	for _, x := range []float64{0, 700, 1e300, math.Inf(1), math.NaN()} {
		if got := expNeg(x); got < 0 || got > 1 || math.IsNaN(got) || (x >= 700 && got != 0) {
			t.Errorf("expNeg(%v) = %v", x, got)
		}
	}
	if expNeg(0) != 1 {
		t.Errorf("expNeg(0) = %v, want 1", expNeg(0))
	}
}
