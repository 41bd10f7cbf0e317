package rewards

import (
	"bytes"
	"errors"
	"fmt"
	"math/rand/v2"
	"os"
	"slices"
	"testing"
	"time"

	"github.com/devflow/flowguard/bandit"
)

// Two variant models unlike the main one: other arms and a stronger
// prior; and the normal-inverse-gamma posterior, learning only when final.
var (
	narrowArms = bandit.ArmSet{{Name: "x1", Multiplier: 1}, {Name: "x2", Multiplier: 2}, {Name: "x3", Multiplier: 3}}
	variantA   = VariantModel{ID: "exp/narrow", Bandit: bandit.Config{Arms: narrowArms, Dim: 3, Lambda: 10, Scale: 1}}
	variantB   = VariantModel{ID: "exp/nig", Bandit: bandit.Config{Dim: 3, Posterior: bandit.NormalInverseGamma, Scale: 1}, Mode: ModeWait}
)

func variantConfig(vs ...VariantModel) Config {
	c := testConfig()
	c.Variants = vs
	return c
}

// variantStream is stream's input with each key in one arm of an
// experiment: keys k%3 == 1 in variant A, k%3 == 2 in variant B, the rest
// on the main model; their decisions carry the model's key and an arm of
// its arm set. Every key's labels apply as they come.
func variantStream(seed uint64, keys, epochs int) []event {
	rng := rand.New(rand.NewPCG(seed, 9))
	evs := stream(seed, keys, epochs)
	for _, ev := range evs {
		r := ev.rec
		if r == nil || r.Type != TypeDecision {
			continue
		}
		var k int
		fmt.Sscanf(r.Key, "k%d", &k)
		switch k % 3 {
		case 1:
			r.Model, r.Arm = variantA.Key(), rng.IntN(len(narrowArms))
			r.Multiplier = narrowArms[r.Arm].Multiplier
		case 2:
			r.Model = variantB.Key()
		}
	}
	return evs
}

// only returns evs with the decisions of other models than key dropped
// (and key's made the main model's), labels and outcomes kept: the input a
// learner of that model alone would see.
func only(evs []event, key string) []event {
	var out []event
	for _, ev := range evs {
		if r := ev.rec; r != nil && r.Type == TypeDecision {
			if r.Model != key {
				continue
			}
			c := *r
			c.Model = ""
			ev = event{rec: &c}
		}
		out = append(out, ev)
	}
	return out
}

// finish moves a partition's clock far past the window, so that every
// aggregate is final (wait-mode models learn then).
func finish(t *testing.T, p *Partition) {
	t.Helper()
	end := t0.Add(30 * 24 * time.Hour)
	l := Label{LabelID: "clock", Key: "nobody", Abusive: false, From: end.Add(-time.Hour), To: end, Source: "test"}
	if err := p.Label(l, end); err != nil {
		t.Fatal(err)
	}
}

func variantPosterior(t *testing.T, p *Partition, key string) []bandit.ArmPosterior {
	t.Helper()
	s, err := p.VariantBandit(key, t0)
	if err != nil || s == nil {
		t.Fatalf("variant model %s: %v, %v", key, s, err)
	}
	out := make([]bandit.ArmPosterior, s.NumArms())
	for a := range out {
		out[a], _ = s.ArmPosterior(a)
	}
	return out
}

// A variant model is trained on its variant's epochs alone, under its own
// arms, prior, posterior and reward mode: it ends exactly where a learner
// given only those epochs, configured as that variant, ends. And the main
// model ends where it would with the variants' epochs never logged.
func TestVariantModelsLearnOnlyTheirEpochs(t *testing.T) {
	evs := variantStream(5, 12, 30)
	mixed, err := NewPartition(variantConfig(variantA, variantB))
	if err != nil {
		t.Fatal(err)
	}
	apply(t, mixed, evs)
	finish(t, mixed)

	for _, c := range []struct {
		name string
		key  string
		cfg  Config
	}{
		{"main", "", testConfig()},
		{"narrow arms, lambda 10", variantA.Key(), Config{Bandit: variantA.Bandit, Risk: testConfig().Risk}},
		{"normal-inverse-gamma, wait", variantB.Key(), Config{Bandit: variantB.Bandit, Risk: testConfig().Risk, Mode: ModeWait}},
	} {
		t.Run(c.name, func(t *testing.T) {
			alone, err := NewPartition(c.cfg)
			if err != nil {
				t.Fatal(err)
			}
			apply(t, alone, only(evs, c.key))
			finish(t, alone)
			want := posterior(t, alone)
			got := posterior(t, mixed)
			if c.key != "" {
				got = variantPosterior(t, mixed, c.key)
			}
			if len(got) != len(want) {
				t.Fatalf("%d arms, want %d", len(got), len(want))
			}
			updates := uint64(0)
			for _, a := range want {
				updates += a.Count
			}
			if updates == 0 {
				t.Fatal("the model alone learned nothing: the test proves nothing")
			}
			assertSamePosterior(t, got, want, 1e-9)
		})
	}
	if s := mixed.Stats(); s.Corrections == 0 || s.Errors != 0 {
		t.Errorf("stats %+v: want corrections and no errors", s)
	}
}

// A record drawn from a model this learner does not train is refused
// whole, with a reason that says so, and changes nothing.
func TestRecordOfUnknownModelIsRefused(t *testing.T) {
	p, _ := NewPartition(variantConfig(variantA))
	before := posterior(t, p)
	stale := variantA
	stale.Bandit.Lambda = 2 // serving runs another version of the variant
	for _, r := range []Record{
		{Type: TypeDecision, ID: "d1", Key: "k1", At: t0, Policy: PolicyBandit, Model: stale.Key(), Arm: 0, Multiplier: 1,
			Propensity: 0.5, Context: []float64{1, 2, 3}, Base: 10},
		{Type: TypeDecision, ID: "d2", Key: "k1", At: t0, Policy: PolicyBandit, Model: variantA.Key(), Arm: 3, Multiplier: 4,
			Propensity: 0.5, Context: []float64{1, 2, 3}, Base: 10},
	} {
		err := p.Record(r)
		if !errors.Is(err, ErrBadRecord) {
			t.Errorf("record %s: err = %v, want ErrBadRecord", r.ID, err)
		}
	}
	if err := p.Record(Record{Type: TypeDecision, ID: "d1", Key: "k1", At: t0, Policy: PolicyBandit, Model: stale.Key(),
		Arm: 0, Multiplier: 1, Propensity: 0.5, Context: []float64{1, 2, 3}, Base: 10}); !errors.Is(err, errNoModel) {
		t.Errorf("unknown model: err = %v, want errNoModel", err)
	}
	if err := p.Record(Record{Type: TypeOutcome, ID: "d1", Key: "k1", At: t0.Add(time.Minute), Served: 5}); err != nil {
		t.Fatal(err)
	}
	assertSamePosterior(t, posterior(t, p), before, 0)
	if s := p.Stats(); s.Errors != 3 || s.Updates != 0 || s.Orphans != 1 {
		t.Errorf("stats %+v: want 3 errors, no update, the outcome an orphan", s)
	}
}

// Keys carry the settings: a change of anything the statistics depend on
// makes another key; exploration and the variant's place do not matter.
func TestVariantModelKey(t *testing.T) {
	base := variantA.Key()
	same := variantA
	same.Bandit.Scale = 7
	same.Bandit.Arms = slices.Clone(narrowArms)
	if same.Key() != base {
		t.Errorf("exploration changed the key: %s vs %s", same.Key(), base)
	}
	for name, change := range map[string]func(*VariantModel){
		"lambda":    func(v *VariantModel) { v.Bandit.Lambda = 11 },
		"arm":       func(v *VariantModel) { v.Bandit.Arms = narrowArms[:2] },
		"posterior": func(v *VariantModel) { v.Bandit.Posterior = bandit.NormalInverseGamma },
		"mode":      func(v *VariantModel) { v.Mode = ModeWait },
		"id":        func(v *VariantModel) { v.ID = "exp/other" },
	} {
		v := variantA
		v.Bandit.Arms = slices.Clone(narrowArms)
		change(&v)
		if v.Key() == base {
			t.Errorf("%s: the key did not change", name)
		}
	}
	if mode := variantA; mode.Key() != (VariantModel{ID: mode.ID, Bandit: mode.Bandit, Mode: ModeProvisional}).Key() {
		t.Error("the default mode and provisional give different keys")
	}
}

func TestVariantConfigValidation(t *testing.T) {
	nigProvisional := variantB
	nigProvisional.Mode = ModeProvisional
	otherDim := variantA
	otherDim.Bandit.Dim = 4
	for name, c := range map[string]struct {
		vs   []VariantModel
		want string
	}{
		"duplicate":       {[]VariantModel{variantA, variantA}, "rewards: two variant models named exp/narrow"},
		"nig provisional": {[]VariantModel{nigProvisional}, "rewards: variant exp/nig: provisional rewards need the gaussian posterior (its corrections are exact); use mode wait"},
		"dimension":       {[]VariantModel{otherDim}, "rewards: variant exp/narrow has 4 context features, the main model 3"},
		"id":              {[]VariantModel{{ID: "a@b", Bandit: variantA.Bandit}}, `rewards: variant model id "a@b" must be 1 to 200 bytes without '@' or spaces`},
	} {
		_, err := NewPartition(variantConfig(c.vs...))
		if err == nil || err.Error() != c.want {
			t.Errorf("%s: err = %v, want %s", name, err, c.want)
		}
		p, _ := NewPartition(testConfig())
		if _, err := p.SetVariants(c.vs); err == nil || err.Error() != c.want {
			t.Errorf("%s: SetVariants err = %v, want %s", name, err, c.want)
		}
		if len(p.VariantKeys()) != 0 {
			t.Errorf("%s: a refused SetVariants changed the models: %v", name, p.VariantKeys())
		}
	}
}

// SetVariants keeps what an unchanged model learned, starts a changed one
// at its prior, and drops a removed one: its pending epochs then teach
// only the risk model.
func TestSetVariantsKeepsResetsAndDrops(t *testing.T) {
	evs := variantStream(6, 9, 12)
	p, _ := NewPartition(variantConfig(variantA, variantB))
	apply(t, p, evs)
	learnedA := variantPosterior(t, p, variantA.Key())

	changedB := variantB
	changedB.Bandit.Lambda = 3
	ch, err := p.SetVariants([]VariantModel{variantA, changedB})
	if err != nil {
		t.Fatal(err)
	}
	if !slices.Equal(ch.Added, []string{changedB.Key()}) || !slices.Equal(ch.Removed, []string{variantB.Key()}) {
		t.Errorf("changes %+v", ch)
	}
	assertSamePosterior(t, variantPosterior(t, p, variantA.Key()), learnedA, 0)
	for a, post := range variantPosterior(t, p, changedB.Key()) {
		if post.Count != 0 {
			t.Errorf("the changed variant's arm %d starts with %d updates", a, post.Count)
		}
	}
	if s, _ := p.VariantBandit(variantB.Key(), t0); s != nil {
		t.Error("the old variant model is still there")
	}

	// An epoch of the dropped model closes: no error, counted as retired.
	at := t0.Add(6 * time.Hour)
	dec := Record{Type: TypeDecision, ID: "late", Key: "k2", At: at, Policy: PolicyBandit, Model: changedB.Key(), Arm: 1,
		Multiplier: 0.5, Propensity: 0.5, Context: []float64{1, 0, 0}, Base: 10}
	if err := p.Record(dec); err != nil {
		t.Fatal(err)
	}
	if _, err := p.SetVariants([]VariantModel{variantA}); err != nil {
		t.Fatal(err)
	}
	if err := p.Record(Record{Type: TypeOutcome, ID: "late", Key: "k2", At: at.Add(time.Minute), Served: 3}); err != nil {
		t.Fatal(err)
	}
	if s := p.Stats(); s.Retired != 1 || s.Errors != 0 {
		t.Errorf("stats %+v: want 1 retired, no error", s)
	}
	// Its records no longer have a model here.
	dec.ID = "later"
	if err := p.Record(dec); !errors.Is(err, errNoModel) {
		t.Errorf("record of the dropped model: err = %v", err)
	}
}

// A checkpoint holds the variant models: a partition restarted from a
// checkpoint after every few hundred events, with a variant changed on
// the way, ends exactly where an uninterrupted one given the same change
// at the same point ends.
func TestCheckpointKeepsVariantModels(t *testing.T) {
	evs := variantStream(7, 9, 40)
	changedB := variantB
	changedB.Bandit.Lambda = 4
	half := len(evs) / 2
	// After the change, B's decisions carry the new key.
	for _, ev := range evs[half:] {
		if r := ev.rec; r != nil && r.Model == variantB.Key() {
			r.Model = changedB.Key()
		}
	}
	whole, _ := NewPartition(variantConfig(variantA, variantB))
	apply(t, whole, evs[:half])
	if _, err := whole.SetVariants([]VariantModel{variantA, changedB}); err != nil {
		t.Fatal(err)
	}
	apply(t, whole, evs[half:])

	cfg := variantConfig(variantA, variantB)
	p, _ := NewPartition(cfg)
	for i, cut := 0, 0; cut < len(evs); i++ {
		next := min(len(evs), cut+113+i*17)
		if cut < half && next > half {
			next = half
		}
		apply(t, p, evs[cut:next])
		cut = next
		if cut == half {
			cfg = variantConfig(variantA, changedB) // the restart picks up the new file
		}
		data, err := p.Checkpoint(t0)
		if err != nil {
			t.Fatal(err)
		}
		if p, err = RestorePartition(cfg, data); err != nil {
			t.Fatalf("restore %d: %v", i, err)
		}
	}
	assertSamePosterior(t, posterior(t, p), posterior(t, whole), 1e-9)
	for _, key := range []string{variantA.Key(), changedB.Key()} {
		assertSamePosterior(t, variantPosterior(t, p, key), variantPosterior(t, whole, key), 1e-9)
	}
	if !slices.Equal(p.VariantKeys(), whole.VariantKeys()) {
		t.Errorf("variant models %v, uninterrupted %v", p.VariantKeys(), whole.VariantKeys())
	}
	if p.Stats() != whole.Stats() {
		t.Errorf("stats after restarts %+v\nuninterrupted %+v", p.Stats(), whole.Stats())
	}
}

// Checkpoints and model parts written before variant models existed
// (format 1, in testdata, written by that version from stream(11, 6, 20))
// still restore and decode, to the same state.
func TestFormat1StillReads(t *testing.T) {
	want, _ := NewPartition(testConfig())
	apply(t, want, stream(11, 6, 20))

	data, err := os.ReadFile("testdata/format1/checkpoint-format1.bin")
	if err != nil {
		t.Fatal(err)
	}
	if data[4] != 1 {
		t.Fatalf("testdata checkpoint is format %d", data[4])
	}
	p, err := RestorePartition(variantConfig(variantA), data)
	if err != nil {
		t.Fatal(err)
	}
	assertSamePosterior(t, posterior(t, p), posterior(t, want), 0)
	if p.Stats() != want.Stats() || !slices.Equal(p.VariantKeys(), []string{variantA.Key()}) {
		t.Errorf("stats %+v, variants %v", p.Stats(), p.VariantKeys())
	}

	data, err = os.ReadFile("testdata/format1/modelpart-format1.bin")
	if err != nil {
		t.Fatal(err)
	}
	part, err := DecodeModelPart(data)
	if err != nil {
		t.Fatal(err)
	}
	if part.Partition != 3 || part.Variants != nil || part.Bandit.Version() == 0 {
		t.Errorf("part %d, variants %v, version %d", part.Partition, part.Variants, part.Bandit.Version())
	}

	// Without variant models this version writes format 1 too, byte for
	// byte what the earlier one wrote: an upgrade changes nothing on the
	// wire until a variant has a model of its own.
	again, err := part.MarshalBinary()
	if err != nil {
		t.Fatal(err)
	}
	if !bytes.Equal(again, data) {
		t.Errorf("a part without variant models encodes as format %d, %d bytes; the earlier version wrote %d", again[4], len(again), len(data))
	}
	// A checkpoint without them is format 1: gob carries the new, empty
	// fields' names, which an earlier decoder skips.
	ck, err := want.Checkpoint(t0)
	if err != nil {
		t.Fatal(err)
	}
	if ck[4] != 1 {
		t.Errorf("a checkpoint without variant models is format %d", ck[4])
	}
	withVariants, _ := NewPartition(variantConfig(variantA))
	if ck, _ := withVariants.Checkpoint(t0); ck[4] != checkpointFormat {
		t.Errorf("a checkpoint with variant models is format %d", ck[4])
	}
}

// Serving merges the variant models of every partition exactly: the sum
// of the parts equals one partition given all the input, and a partition
// without the model (its learner not reloaded yet) adds nothing.
func TestCombineMergesVariantModels(t *testing.T) {
	evs := variantStream(8, 12, 20)
	all, _ := NewPartition(variantConfig(variantA, variantB))
	apply(t, all, evs)
	finish(t, all)

	// Split by key, as Kafka partitions do; partition 2 lacks variant B.
	byKey := [3][]event{}
	for _, ev := range evs {
		k := keyIndex(eventKey(ev))
		byKey[k/4] = append(byKey[k/4], ev)
	}
	var parts []ModelPart
	for i, evs := range byKey {
		cfg := variantConfig(variantA, variantB)
		if i == 2 {
			cfg = variantConfig(variantA)
			var kept []event
			for _, ev := range evs {
				if ev.rec == nil || ev.rec.Model != variantB.Key() {
					kept = append(kept, ev)
				}
			}
			evs = kept
		}
		p, _ := NewPartition(cfg)
		apply(t, p, evs)
		finish(t, p)
		part, err := p.Part(i, t0)
		if err != nil {
			t.Fatal(err)
		}
		data, err := part.MarshalBinary()
		if err != nil {
			t.Fatal(err)
		}
		if part, err = DecodeModelPart(data); err != nil {
			t.Fatal(err)
		}
		parts = append(parts, part)
	}
	m, err := Combine(t0, parts)
	if err != nil {
		t.Fatal(err)
	}
	if len(m.Variants) != 2 {
		t.Fatalf("%d variant models", len(m.Variants))
	}
	// Variant A: every partition has it, so the merge is all of A's input.
	assertSamePosterior(t, armPosteriors(t, m.Variants[variantA.Key()]), variantPosterior(t, all, variantA.Key()), 1e-9)
	assertSamePosterior(t, armPosteriors(t, m.Bandit), posterior(t, all), 1e-9)
	// Variant B: partitions 0 and 1 only.
	bOnly, _ := NewPartition(variantConfig(variantA, variantB))
	var both []event
	for _, ev := range evs {
		if key := eventKey(ev); key != "" && keyIndex(key) < 8 {
			both = append(both, ev)
		}
	}
	apply(t, bOnly, both)
	finish(t, bOnly)
	wantB := variantPosterior(t, bOnly, variantB.Key())
	n := uint64(0)
	for a := range wantB {
		got, _ := m.Variants[variantB.Key()].ArmPosterior(a)
		n += got.Count
	}
	assertSamePosterior(t, armPosteriors(t, m.Variants[variantB.Key()]), wantB, 1e-9)
	if n == 0 {
		t.Error("variant B learned nothing: the test proves nothing")
	}
}

func eventKey(ev event) string {
	if ev.rec != nil {
		return ev.rec.Key
	}
	return ev.label.Key
}

func keyIndex(key string) int {
	var k int
	fmt.Sscanf(key, "k%d", &k)
	return k
}

func armPosteriors(t *testing.T, s *bandit.Snapshot) []bandit.ArmPosterior {
	t.Helper()
	if s == nil {
		t.Fatal("no snapshot")
	}
	out := make([]bandit.ArmPosterior, s.NumArms())
	for a := range out {
		out[a], _ = s.ArmPosterior(a)
	}
	return out
}
