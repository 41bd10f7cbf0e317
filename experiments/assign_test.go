package experiments

import (
	"encoding/binary"
	"errors"
	"fmt"
	"math"
	"math/rand/v2"
	"strconv"
	"testing"

	"github.com/cespare/xxhash/v2"
	"gonum.org/v1/gonum/stat/distuv"
)

func mustAssigner(t testing.TB, yaml string) *Assigner {
	t.Helper()
	c, err := Parse("test.yaml", []byte(yaml))
	if err != nil {
		t.Fatal(err)
	}
	a, err := NewAssigner(c)
	if err != nil {
		t.Fatal(err)
	}
	return a
}

func key(i int) string { return "k_live_" + strconv.Itoa(i) }

// chi2P returns Pearson's χ² of observed against expected counts and its
// p-value, computed with gonum's χ² distribution.
func chi2P(observed []int64, expected []float64) (float64, float64) {
	var chi2 float64
	for i, o := range observed {
		d := float64(o) - expected[i]
		chi2 += d * d / expected[i]
	}
	return chi2, distuv.ChiSquared{K: float64(len(observed) - 1)}.Survival(chi2)
}

const threeVariants = `
experiments:
  - name: e1
    salt: e1-salt
    variants:
      - {name: control, policy: static, weight: 50}
      - {name: lints, policy: bandit, weight: 30}
      - {name: shadow, policy: shadow, weight: 20}
`

// golden computes a bucket from the documented formula with the library's
// one-shot hash, independently of Bucket and of the Assigner.
func golden(salt, unit string) int {
	var b [16]byte
	binary.LittleEndian.PutUint64(b[:8], xxhash.Sum64String(salt))
	binary.LittleEndian.PutUint64(b[8:], xxhash.Sum64String(unit))
	return int(xxhash.Sum64(b[:]) % 10000)
}

// TestBucketGolden pins a few buckets, written out and recomputed from the
// documented formula, so a change of hash, layout or library fails.
func TestBucketGolden(t *testing.T) {
	cases := []struct {
		salt, unit string
		want       int
	}{
		{"bandit-vs-static-2026-11", "k_live_1", 9813},
		{"bandit-vs-static-2026-11", "k_live_2", 419},
		{"holdout-2026", "k_live_1", 5956},
		{"layer-budget-v1", "k_test_42", 1604},
		{"s", "", 233},
		{"", "acme", 1141},
	}
	// The library itself, against published XXH64 vectors.
	for in, want := range map[string]uint64{"": 0xef46db3751d8e999, "a": 0xd24ec4f1a98c6e5b, "abc": 0x44bc2cf5ad770999} {
		if got := xxhash.Sum64String(in); got != want {
			t.Fatalf("xxhash64(%q) = %x, want %x", in, got, want)
		}
	}
	for _, c := range cases {
		if g := golden(c.salt, c.unit); g != c.want {
			t.Errorf("formula for (%q, %q) = %d, golden %d", c.salt, c.unit, g, c.want)
		}
		if got := Bucket(c.salt, c.unit); got != c.want {
			t.Errorf("Bucket(%q, %q) = %d, want %d", c.salt, c.unit, got, c.want)
		}
	}
	a := mustAssigner(t, `
experiments:
  - name: e
    salt: bandit-vs-static-2026-11
    variants: [{name: control, policy: static}]
`)
	for _, k := range []string{"k_live_1", "k_live_2", "k_live_3"} {
		as, ok := a.Primary(Unit{Key: k})
		if want := golden("bandit-vs-static-2026-11", k); !ok || as.Bucket != want {
			t.Errorf("Primary(%s).Bucket = %d, %v; want %d", k, as.Bucket, ok, want)
		}
	}
}

// TestMixIsXXH64 checks the unrolled 16-byte hash against the library.
func TestMixIsXXH64(t *testing.T) {
	r := rand.New(rand.NewPCG(1, 2))
	for range 10_000 {
		s, u := r.Uint64(), r.Uint64()
		var b [16]byte
		binary.LittleEndian.PutUint64(b[:8], s)
		binary.LittleEndian.PutUint64(b[8:], u)
		if got, want := mix(s, u), int(xxhash.Sum64(b[:])%Buckets); got != want {
			t.Fatalf("mix(%x, %x) = %d, want %d", s, u, got, want)
		}
	}
}

// TestVariantIsRendezvous recomputes the variant of some buckets from the
// documented formula, independently of the table.
func TestVariantIsRendezvous(t *testing.T) {
	a := mustAssigner(t, threeVariants)
	e := a.Config().Experiments[0]
	for i := range 2000 {
		u := Unit{Key: key(i)}
		b := golden("e1-salt", u.Key)
		best, bestScore := "", math.Inf(-1)
		for _, v := range e.Variants {
			h := xxhash.Sum64String(fmt.Sprintf("e1-salt\x00%d\x00%s", b, v.Name))
			x := (float64(h>>11) + 0.5) / (1 << 53)
			if s := -v.Weight / math.Log(x); s > bestScore {
				best, bestScore = v.Name, s
			}
		}
		as, _ := a.Primary(u)
		if as.Variant != best || as.Bucket != b {
			t.Fatalf("%s: %s in bucket %d, want %s in %d", u.Key, as.Variant, as.Bucket, best, b)
		}
	}
}

func TestUniformity(t *testing.T) {
	const n = 100_000
	a := mustAssigner(t, threeVariants)
	buckets := make([]int64, Buckets)
	variants := make([]int64, 3)
	for i := range n {
		as, ok := a.Primary(Unit{Key: key(i)})
		if !ok {
			t.Fatal("unit in no experiment")
		}
		buckets[as.Bucket]++
		variants[as.VariantIndex]++
	}
	flat := make([]float64, Buckets)
	for i := range flat {
		flat[i] = n / Buckets
	}
	if chi2, p := chi2P(buckets, flat); p < 0.001 {
		t.Errorf("buckets: χ² = %.0f, p = %.2g: not uniform", chi2, p)
	}
	// Units follow the table's shares…
	shares := a.Shares("e1")
	expected := make([]float64, 3)
	for i, s := range shares {
		expected[i] = s * n
	}
	if chi2, p := chi2P(variants, expected); p < 0.001 {
		t.Errorf("variants %v vs table shares %v: χ² = %.1f, p = %.2g", variants, shares, chi2, p)
	}
	// …and the table's buckets follow the weights 50:30:20.
	table := make([]int64, 3)
	for i, s := range shares {
		table[i] = int64(math.Round(s * Buckets))
	}
	if chi2, p := chi2P(table, []float64{0.5 * Buckets, 0.3 * Buckets, 0.2 * Buckets}); p < 0.001 {
		t.Errorf("table %v vs weights 50:30:20: χ² = %.1f, p = %.2g", table, chi2, p)
	}
}

func TestSticky(t *testing.T) {
	a1 := mustAssigner(t, threeVariants)
	a2 := mustAssigner(t, threeVariants)
	for i := range 20_000 {
		u := Unit{Key: key(i)}
		x, _ := a1.Primary(u)
		z, _ := a1.Primary(u)
		y, _ := a2.Primary(u)
		if x != z {
			t.Fatalf("%s: %+v, then %+v", u.Key, x, z)
		}
		if (x.Bandit == nil) != (y.Bandit == nil) {
			t.Fatalf("%s: bandit %v vs %v", u.Key, x.Bandit, y.Bandit)
		}
		x.Bandit, y.Bandit = nil, nil // built apart, equal settings
		if x != y {
			t.Fatalf("%s: %+v from one Assigner, %+v from another", u.Key, x, y)
		}
	}
}

// TestReweightMovesMinimum raises one weight: units may only move into
// that variant, and about as many as its share grew.
func TestReweightMovesMinimum(t *testing.T) {
	const n = 100_000
	before := mustAssigner(t, threeVariants) // 50:30:20
	after := mustAssigner(t, `
experiments:
  - name: e1
    salt: e1-salt
    variants:
      - {name: control, policy: static, weight: 50}
      - {name: lints, policy: bandit, weight: 55}
      - {name: shadow, policy: shadow, weight: 20}
`)
	moved := 0
	for i := range n {
		u := Unit{Key: key(i)}
		x, _ := before.Primary(u)
		y, _ := after.Primary(u)
		if x.Variant == y.Variant {
			continue
		}
		moved++
		if y.Variant != "lints" {
			t.Fatalf("%s moved from %s to %s: only lints changed", u.Key, x.Variant, y.Variant)
		}
	}
	delta := 55.0/125 - 30.0/100
	// Moved units come from moved buckets (about Buckets·Δ of them) and
	// the keys in them: the variance has both parts.
	sigma := math.Sqrt(n * delta * (1 - delta) * (1 + n/Buckets))
	if math.Abs(float64(moved)-n*delta) > 4*sigma {
		t.Errorf("%d units moved, want %.0f ± %.0f (4σ)", moved, n*delta, 4*sigma)
	}

	// Adding a variant only takes units into it.
	added := mustAssigner(t, threeVariants+"      - {name: extra, policy: static, weight: 10}\n")
	for i := range 20_000 {
		u := Unit{Key: key(i)}
		x, _ := before.Primary(u)
		y, _ := added.Primary(u)
		if x.Variant != y.Variant && y.Variant != "extra" {
			t.Fatalf("%s moved from %s to %s when a variant was added", u.Key, x.Variant, y.Variant)
		}
	}
}

const twoInALayer = `
layers:
  - {name: budget, salt: layer-salt}
experiments:
  - name: e1
    layer: budget
    salt: e1-salt
    traffic: 0.3
    variants: [{name: control, policy: static}]
  - name: e2
    layer: budget
    salt: e2-salt
    traffic: %s
    variants: [{name: control, policy: static}]
`

func TestLayers(t *testing.T) {
	const n = 50_000
	a := mustAssigner(t, fmt.Sprintf(twoInALayer, "0.3"))
	grown := mustAssigner(t, fmt.Sprintf(twoInALayer, "0.5")+`
  - name: e3
    layer: budget
    salt: e3-salt
    traffic: 0.2
    variants: [{name: control, policy: static}]
`)
	count := map[string]int{}
	for i := range n {
		u := Unit{Key: key(i)}
		got := a.Assign(u)
		if len(got) > 1 {
			t.Fatalf("%s is in %d experiments of one layer", u.Key, len(got))
		}
		in := ""
		if len(got) == 1 {
			in = got[0].Experiment
		}
		count[in]++
		lb := Bucket("layer-salt", u.Key)
		if want := map[bool]string{true: "e1"}[lb < 3000]; lb < 6000 && lb >= 3000 {
			want = "e2"
			if in != want {
				t.Fatalf("%s: layer bucket %d is e2's, got %q", u.Key, lb, in)
			}
		} else if in != want {
			t.Fatalf("%s: layer bucket %d, got %q want %q", u.Key, lb, in, want)
		}
		// Growing the last experiment and appending one keeps everyone
		// who was in an experiment where they were.
		g, _ := grown.Primary(u)
		if in != "" && g.Experiment != in {
			t.Fatalf("%s moved from %s to %s", u.Key, in, g.Experiment)
		}
	}
	for exp, share := range map[string]float64{"e1": 0.3, "e2": 0.3, "": 0.4} {
		if got := float64(count[exp]) / n; math.Abs(got-share) > 0.01 {
			t.Errorf("%q holds %.3f of units, want %.1f", exp, got, share)
		}
	}
}

func TestHoldout(t *testing.T) {
	const n = 50_000
	a := mustAssigner(t, "holdout: {salt: h-salt, share: 0.1}\n"+threeVariants)
	held := 0
	for i := range n {
		u := Unit{Key: key(i)}
		as, ok := a.Primary(u)
		want := Bucket("h-salt", u.Key) < 1000
		if ok == want || as.Holdout != want {
			t.Fatalf("%s: in experiment %v, holdout %v; want holdout %v", u.Key, ok, as.Holdout, want)
		}
		if len(a.Assign(u)) != map[bool]int{true: 0, false: 1}[want] {
			t.Fatalf("%s: Assign disagrees with Primary", u.Key)
		}
		if want {
			held++
		}
	}
	if got := float64(held) / n; math.Abs(got-0.1) > 0.01 {
		t.Errorf("held out %.3f of units, want 0.1", got)
	}
}

func TestTargeting(t *testing.T) {
	a := mustAssigner(t, `
experiments:
  - name: e1
    salt: s1
    targeting: {tiers: [free, pro], tenants: [acme, globex], regions: [eu-west-1]}
    variants: [{name: control, policy: static}]
`)
	cases := map[string]struct {
		u    Unit
		want bool
	}{
		"all match":      {Unit{Key: "k", Tenant: "acme", Tier: "free", Region: "eu-west-1"}, true},
		"other tenant":   {Unit{Key: "k", Tenant: "initech", Tier: "free", Region: "eu-west-1"}, false},
		"enterprise":     {Unit{Key: "k", Tenant: "acme", Tier: "enterprise", Region: "eu-west-1"}, false},
		"other region":   {Unit{Key: "k", Tenant: "globex", Tier: "pro", Region: "us-east-1"}, false},
		"no tier":        {Unit{Key: "k", Tenant: "acme", Region: "eu-west-1"}, false},
		"second of each": {Unit{Key: "k", Tenant: "globex", Tier: "pro", Region: "eu-west-1"}, true},
		"no key":         {Unit{Tenant: "acme", Tier: "free", Region: "eu-west-1"}, false},
	}
	for name, c := range cases {
		t.Run(name, func(t *testing.T) {
			if _, ok := a.Primary(c.u); ok != c.want {
				t.Fatalf("in experiment: %v, want %v", ok, c.want)
			}
		})
	}
}

func TestTenantUnit(t *testing.T) {
	a := mustAssigner(t, `
experiments:
  - name: e1
    salt: s1
    unit: tenant
    variants:
      - {name: control, policy: static}
      - {name: lints, policy: bandit}
`)
	for _, tenant := range []string{"acme", "globex", "initech", "umbrella"} {
		first, ok := a.Primary(Unit{Key: "k0", Tenant: tenant})
		if !ok || first.Bucket != Bucket("s1", tenant) {
			t.Fatalf("%s: %+v", tenant, first)
		}
		for i := range 100 {
			if as, _ := a.Primary(Unit{Key: key(i), Tenant: tenant}); as != first {
				t.Fatalf("keys of tenant %s split: %+v vs %+v", tenant, as, first)
			}
		}
	}
	if _, ok := a.Primary(Unit{Key: "k"}); ok {
		t.Error("a unit without a tenant entered a tenant experiment")
	}
}

// TestSeveralLayers: one unit in two experiments of different layers gets
// both, in file order, and the first decides.
func TestSeveralLayers(t *testing.T) {
	a := mustAssigner(t, `
layers:
  - {name: a, salt: la}
experiments:
  - name: first
    layer: a
    salt: s1
    traffic: 0.5
    variants: [{name: control, policy: static}]
  - name: own
    salt: s2
    variants: [{name: control, policy: static}]
  - name: third
    layer: a
    salt: s3
    traffic: 0.5
    variants: [{name: control, policy: static}]
`)
	seen := map[string]int{}
	for i := range 1000 {
		u := Unit{Key: key(i)}
		got := a.AssignAppend(make([]Assignment, 0, 4), u)
		if len(got) != 2 || got[0].ExperimentIndex > got[1].ExperimentIndex || got[1].Experiment != "own" && got[0].Experiment != "own" {
			t.Fatalf("%s: %+v", u.Key, got)
		}
		p, ok := a.Primary(u)
		if !ok || p != got[0] {
			t.Fatalf("%s: primary %+v, assignments %+v", u.Key, p, got)
		}
		seen[p.Experiment]++
	}
	if seen["first"] == 0 || seen["own"] == 0 || seen["third"] != 0 {
		t.Errorf("primaries: %v; want first and own, never third (own comes before it)", seen)
	}
}

func TestStop(t *testing.T) {
	a := mustAssigner(t, threeVariants)
	var u Unit
	for i := 0; ; i++ {
		u = Unit{Key: key(i)}
		if as, _ := a.Primary(u); as.Variant == "lints" {
			break
		}
	}
	if err := a.Stop("e1", "lints"); err != nil {
		t.Fatal(err)
	}
	as, _ := a.Primary(u)
	if as.Variant != "lints" || !as.Stopped || as.Policy != PolicyStatic || as.Bandit != nil || !a.Stopped("e1", "lints") {
		t.Fatalf("stopped variant: %+v", as)
	}
	if err := a.Resume("e1", "lints"); err != nil {
		t.Fatal(err)
	}
	if as, _ := a.Primary(u); as.Stopped || as.Policy != PolicyBandit || as.Bandit == nil {
		t.Fatalf("resumed variant: %+v", as)
	}
	if err := a.Stop("e1", "control"); !errors.Is(err, ErrStopControl) {
		t.Errorf("stopping the control: %v", err)
	}
	if err := a.Stop("e1", "nope"); !errors.Is(err, ErrUnknownVariant) {
		t.Errorf("stopping an unknown variant: %v", err)
	}
	err := a.ApplyStops([]StopRecord{{Op: OpStop, Experiment: "e1", Variant: "shadow"}, {Op: OpStop, Experiment: "gone", Variant: "x"}})
	if !errors.Is(err, ErrUnknownVariant) || !a.Stopped("e1", "shadow") {
		t.Errorf("ApplyStops: %v, shadow stopped %v", err, a.Stopped("e1", "shadow"))
	}
}

func TestAssignDoesNotAllocate(t *testing.T) {
	c, err := Default()
	if err != nil {
		t.Fatal(err)
	}
	a, err := NewAssigner(c)
	if err != nil {
		t.Fatal(err)
	}
	u := Unit{Key: "k_live_1", Tenant: "acme", Tier: "free", Region: "eu-west-1"}
	dst := make([]Assignment, 0, 4)
	if n := testing.AllocsPerRun(100, func() { dst = a.AssignAppend(dst[:0], u) }); n != 0 {
		t.Errorf("AssignAppend: %v allocations", n)
	}
	if n := testing.AllocsPerRun(100, func() { a.Primary(u) }); n != 0 {
		t.Errorf("Primary: %v allocations", n)
	}
}
