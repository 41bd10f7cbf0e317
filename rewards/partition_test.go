package rewards

import (
	"errors"
	"fmt"
	"math"
	"math/rand/v2"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/devflow/flowguard/bandit"
	"github.com/devflow/flowguard/features"
	"github.com/devflow/flowguard/policy"
)

var t0 = time.Date(2026, 11, 20, 0, 0, 0, 0, time.UTC)

func testConfig() Config {
	return Config{Bandit: bandit.Config{ModelID: "test", Dim: 3}, Risk: features.RiskConfig{Dim: 2}}
}

// event is one input of a partition: a record or a label.
type event struct {
	rec   *Record
	label *Label
}

// stream makes a deterministic input: keys k0..k(n-1), one decision and
// one outcome per key per epoch, abusive keys (every third) serving lots,
// and labels for the abusive keys arriving hours later, some duplicated.
func stream(seed uint64, keys, epochs int) []event {
	rng := rand.New(rand.NewPCG(seed, 7))
	var evs []event
	for e := range epochs {
		at := t0.Add(time.Duration(e) * 10 * time.Minute)
		for k := range keys {
			key := fmt.Sprintf("k%d", k)
			abusive := k%3 == 0
			x := []float64{rng.Float64(), rng.Float64(), 0.01}
			if abusive {
				x[0] += 1
			}
			arm := rng.IntN(6)
			id := fmt.Sprintf("%s-%d", key, e)
			tier := []string{"free", "pro", "enterprise"}[k%3]
			evs = append(evs, event{rec: &Record{Type: TypeDecision, ID: id, Key: key, Tier: tier, At: at,
				Policy: PolicyBandit, Arm: arm, Multiplier: bandit.DefaultArms()[arm].Multiplier, Propensity: 1.0 / 6, Context: x, Base: 100}})
			served := int64(50 + rng.IntN(100))
			evs = append(evs, event{rec: &Record{Type: TypeOutcome, ID: id, Key: key, At: at.Add(10 * time.Minute),
				Served: served, Throttled: int64(rng.IntN(20))}})
		}
		if e%5 == 4 {
			for k := 0; k < keys; k += 3 {
				l := Label{LabelID: fmt.Sprintf("inv-%d-%d", k, e), Key: fmt.Sprintf("k%d", k), Abusive: true,
					From: at.Add(-2 * time.Hour), To: at, Severity: 1, Source: "chargeback"}
				evs = append(evs, event{label: &l})
				if e%10 == 9 {
					evs = append(evs, event{label: &l}) // a resend
				}
			}
		}
	}
	return evs
}

func apply(t testing.TB, p *Partition, evs []event) {
	t.Helper()
	for _, ev := range evs {
		var err error
		if ev.rec != nil {
			err = p.Record(*ev.rec)
		} else {
			err = p.Label(*ev.label, ev.label.To)
		}
		if err != nil {
			t.Fatal(err)
		}
	}
}

func posterior(t testing.TB, p *Partition) []bandit.ArmPosterior {
	t.Helper()
	s, err := p.Bandit(t0)
	if err != nil {
		t.Fatal(err)
	}
	out := make([]bandit.ArmPosterior, s.NumArms())
	for a := range out {
		out[a], _ = s.ArmPosterior(a)
	}
	return out
}

func assertSamePosterior(t *testing.T, got, want []bandit.ArmPosterior, tol float64) {
	t.Helper()
	for a := range want {
		if got[a].Count != want[a].Count {
			t.Errorf("arm %d: %d updates, want %d", a, got[a].Count, want[a].Count)
		}
		for i := range want[a].Mean {
			if d := math.Abs(got[a].Mean[i] - want[a].Mean[i]); d > tol {
				t.Errorf("arm %d: mean[%d] = %v, want %v (off by %g)", a, i, got[a].Mean[i], want[a].Mean[i], d)
			}
		}
	}
}

// The learner's promise: a label's correction lands the bandit exactly
// where learning with the final reward in the first place would have.
func TestCorrectionEqualsLearningTheFinalReward(t *testing.T) {
	evs := stream(1, 9, 30)
	late, err := NewPartition(testConfig())
	if err != nil {
		t.Fatal(err)
	}
	apply(t, late, evs)

	// The same input with every label first: each outcome learns its
	// final reward directly.
	var labels, records []event
	for _, ev := range evs {
		if ev.label != nil {
			labels = append(labels, ev)
		} else {
			records = append(records, ev)
		}
	}
	early, _ := NewPartition(testConfig())
	apply(t, early, append(labels, records...))
	assertSamePosterior(t, posterior(t, late), posterior(t, early), 1e-9)
	if s := late.Stats(); s.Corrections == 0 || s.Duplicates == 0 {
		t.Errorf("stats %+v: the stream should have needed corrections and carried duplicates", s)
	}

	// And both equal a bandit fed the final rewards by hand.
	hand, _ := bandit.NewLearner(testConfig().Bandit)
	w := DefaultWeights()
	dec := map[string]*Record{}
	for _, ev := range records {
		r := ev.rec
		if r.Type == TypeDecision {
			dec[r.ID] = r
			continue
		}
		d := dec[r.ID]
		sev := 0.0
		for _, l := range labels {
			hour := d.At.Truncate(time.Hour)
			if l.label.Key == d.Key && l.label.From.Before(hour.Add(time.Hour)) && l.label.To.After(hour) {
				sev = 1
			}
		}
		o := r.Outcome()
		o.Multiplier = d.Multiplier
		if err := hand.Update(d.Context, d.Arm, w.RewardFor(o, d.PolicyTier(), d.Base, sev)); err != nil {
			t.Fatal(err)
		}
	}
	s, _ := hand.Snapshot(t0)
	want := make([]bandit.ArmPosterior, s.NumArms())
	for a := range want {
		want[a], _ = s.ArmPosterior(a)
	}
	assertSamePosterior(t, posterior(t, late), want, 1e-9)
}

// TestTierClassDecidesTheReward: the bandit learns the same from a stream
// whose enterprise tier is renamed gold but classed enterprise, through
// checkpoints (whose state keeps the class), as from the original; and
// otherwise once that tier is classed standard.
func TestTierClassDecidesTheReward(t *testing.T) {
	reclass := func(evs []event, tier string, class policy.Class) []event {
		out := make([]event, len(evs))
		for i, ev := range evs {
			out[i] = ev
			if r := ev.rec; r != nil && r.Tier == "enterprise" {
				c := *r
				c.Tier, c.TierClass = tier, class
				out[i].rec = &c
			}
		}
		return out
	}
	evs := stream(4, 9, 30)
	byName, _ := NewPartition(testConfig())
	apply(t, byName, evs)

	gold := reclass(evs, "gold", policy.ClassEnterprise)
	p, _ := NewPartition(testConfig())
	for cut := 0; cut < len(gold); cut += 101 {
		apply(t, p, gold[cut:min(len(gold), cut+101)])
		data, err := p.Checkpoint(t0)
		if err != nil {
			t.Fatal(err)
		}
		if p, err = RestorePartition(testConfig(), data); err != nil {
			t.Fatal(err)
		}
	}
	assertSamePosterior(t, posterior(t, p), posterior(t, byName), 1e-9)

	standard, _ := NewPartition(testConfig())
	apply(t, standard, reclass(evs, "enterprise", policy.ClassStandard))
	got, want := posterior(t, standard), posterior(t, byName)
	same := true
	for a := range want {
		for i := range want[a].Mean {
			same = same && math.Abs(got[a].Mean[i]-want[a].Mean[i]) < 1e-9
		}
	}
	if same {
		t.Error("a standard tier named enterprise was learned with the enterprise weight")
	}
}

func TestDuplicateLabelsHaveNoEffect(t *testing.T) {
	evs := stream(2, 6, 12)
	once, _ := NewPartition(testConfig())
	apply(t, once, evs)
	twice, _ := NewPartition(testConfig())
	var doubled []event
	for _, ev := range evs {
		doubled = append(doubled, ev)
		if ev.label != nil {
			doubled = append(doubled, ev)
		}
	}
	apply(t, twice, doubled)
	assertSamePosterior(t, posterior(t, twice), posterior(t, once), 0)
	if once.Risk().Learned() != twice.Risk().Learned() {
		t.Errorf("risk learned %d vs %d examples", twice.Risk().Learned(), once.Risk().Learned())
	}
}

func TestCheckpointRestoreContinuesExactly(t *testing.T) {
	evs := stream(3, 9, 40)
	whole, _ := NewPartition(testConfig())
	apply(t, whole, evs)

	p, _ := NewPartition(testConfig())
	for i, cut := 0, 0; cut < len(evs); i++ {
		next := min(len(evs), cut+97+i*13)
		apply(t, p, evs[cut:next])
		cut = next
		data, err := p.Checkpoint(t0)
		if err != nil {
			t.Fatal(err)
		}
		if p, err = RestorePartition(testConfig(), data); err != nil {
			t.Fatalf("restore %d: %v", i, err)
		}
	}
	assertSamePosterior(t, posterior(t, p), posterior(t, whole), 1e-9)
	x := []float64{1.5, 0.5}
	if a, b := p.Risk().Score(x), whole.Risk().Score(x); math.Abs(a-b) > 1e-9 {
		t.Errorf("risk after restarts %v, uninterrupted %v", a, b)
	}
	if p.Stats() != whole.Stats() {
		t.Errorf("stats after restarts %+v\nuninterrupted %+v", p.Stats(), whole.Stats())
	}
}

func TestRestoreRejectsDamage(t *testing.T) {
	p, _ := NewPartition(testConfig())
	apply(t, p, stream(4, 3, 3))
	data, err := p.Checkpoint(t0)
	if err != nil {
		t.Fatal(err)
	}
	for i := 0; i < len(data); i += 7 {
		bad := append([]byte(nil), data...)
		bad[i] ^= 1
		if _, err := RestorePartition(testConfig(), bad); !errors.Is(err, ErrBadCheckpoint) {
			t.Fatalf("flipped byte %d: err = %v", i, err)
		}
	}
	other := testConfig()
	other.Bandit.Dim = 4
	other.Risk.Dim = 2
	if _, err := RestorePartition(other, data); !errors.Is(err, ErrBadCheckpoint) {
		t.Errorf("restore under another bandit: err = %v", err)
	}
	// Trained on one feature schema, restored under another: refused.
	a, b := testConfig(), testConfig()
	a.Bandit.Schema, b.Bandit.Schema = 1, 2
	pa, _ := NewPartition(a)
	apply(t, pa, stream(4, 3, 3))
	da, _ := pa.Checkpoint(t0)
	if _, err := RestorePartition(b, da); !errors.Is(err, ErrBadCheckpoint) || !strings.Contains(err.Error(), "feature schema") {
		t.Errorf("restore under another feature schema: err = %v", err)
	}
	if _, err := RestorePartition(a, da); err != nil {
		t.Errorf("restore under its own schema: %v", err)
	}
}

func TestLabelBeforeAnyRecordIsKept(t *testing.T) {
	p, _ := NewPartition(testConfig())
	l := Label{LabelID: "early", Key: "k-new", Abusive: true, From: t0, To: t0.Add(time.Hour), Severity: 1}
	if err := p.Label(l, t0); err != nil {
		t.Fatal(err)
	}
	if p.Stats().UnknownKey != 1 {
		t.Errorf("unknown-key labels = %d, want 1", p.Stats().UnknownKey)
	}
	// The key's decision arrives after its label: it learns the labelled
	// reward directly, a negative one for a key serving abuse.
	x := []float64{1, 1, 0}
	apply(t, p, []event{
		{rec: &Record{Type: TypeDecision, ID: "d1", Key: "k-new", At: t0.Add(time.Minute), Policy: PolicyBandit, Arm: 5, Propensity: 1, Context: x, Base: 10}},
		{rec: &Record{Type: TypeOutcome, ID: "d1", Key: "k-new", At: t0.Add(2 * time.Minute), Served: 100}},
	})
	post := posterior(t, p)[5]
	mean := 0.0
	for i, v := range x {
		mean += post.Mean[i] * v
	}
	mean += post.Mean[len(x)]
	if mean >= 0 {
		t.Errorf("arm x4's expected reward for the abusive key = %v, want negative", mean)
	}
}

func TestBenignLabelClearsAndRewardsGenerousBudgets(t *testing.T) {
	p, _ := NewPartition(testConfig())
	x := []float64{0.2, 0.3, 0}
	apply(t, p, []event{
		{rec: &Record{Type: TypeDecision, ID: "d1", Key: "k", At: t0, Policy: PolicyBandit, Arm: 5, Propensity: 1, Context: x, Base: 10}},
		{rec: &Record{Type: TypeOutcome, ID: "d1", Key: "k", At: t0.Add(time.Minute), Served: 40}},
	})
	provisional := posterior(t, p)[5].Mean
	abuse := Label{LabelID: "a", Key: "k", Abusive: true, From: t0, To: t0.Add(time.Hour), Severity: 1}
	clear := Label{LabelID: "c", Key: "k", Abusive: false, From: t0, To: t0.Add(time.Hour)}
	if err := p.Label(abuse, t0.Add(time.Hour)); err != nil {
		t.Fatal(err)
	}
	if posterior(t, p)[5].Mean[0] >= provisional[0] {
		t.Error("an abusive label did not lower the generous arm's value")
	}
	if err := p.Label(clear, t0.Add(2*time.Hour)); err != nil {
		t.Fatal(err)
	}
	for i, v := range posterior(t, p)[5].Mean {
		if math.Abs(v-provisional[i]) > 1e-12 {
			t.Errorf("after clearing, mean[%d] = %v, want the benign %v", i, v, provisional[i])
		}
	}
}

func TestWaitModeLearnsOnlyWhenFinal(t *testing.T) {
	cfg := testConfig()
	cfg.Mode = ModeWait
	cfg.Window = 2 * time.Hour
	p, _ := NewPartition(cfg)
	evs := stream(5, 3, 6) // one hour of epochs
	apply(t, p, evs)
	if n := p.Stats().Updates; n != 0 {
		t.Fatalf("wait mode updated %d times before any record was final", n)
	}
	// Time passes: a later record moves the watermark past the window.
	apply(t, p, []event{{rec: &Record{Type: TypeOutcome, ID: "none", Key: "k0", At: t0.Add(5 * time.Hour)}}})
	if n := p.Stats().Updates; n != 18 {
		t.Errorf("updates after the window = %d, want every one of the 18 records", n)
	}
}

func TestOldStateIsDropped(t *testing.T) {
	cfg := testConfig()
	cfg.Window = time.Hour
	p, _ := NewPartition(cfg)
	apply(t, p, stream(6, 20, 12))
	apply(t, p, []event{{rec: &Record{Type: TypeOutcome, ID: "tick", Key: "k0", At: t0.Add(10 * time.Hour)}}})
	if len(p.keys) != 0 || len(p.pending) != 0 {
		t.Errorf("after the window: %d keys, %d pending decisions kept", len(p.keys), len(p.pending))
	}
	if p.Risk().Learned() == 0 {
		t.Error("final hours taught the risk model nothing")
	}
}

// decide returns a decision and its outcome for key at at: the key's
// first record, if it has none.
func decide(id, key string, at time.Time) []event {
	return []event{
		{rec: &Record{Type: TypeDecision, ID: id, Key: key, At: at, Policy: PolicyBandit, Arm: 5, Propensity: 1,
			Context: []float64{1, 1, 0}, Base: 10}},
		{rec: &Record{Type: TypeOutcome, ID: id, Key: key, At: at.Add(time.Minute), Served: 100}},
	}
}

// A label past the horizon changes nothing, and is not remembered: sent
// again later, when its range has begun, it applies.
func TestLabelPastTheHorizonIsRefused(t *testing.T) {
	cfg := testConfig()
	cfg.LabelHorizon = DefaultLabelHorizon
	p, _ := NewPartition(cfg)
	apply(t, p, decide("d1", "k", t0))
	l := Label{LabelID: "soon", Key: "k", Abusive: true, From: t0, To: t0.Add(3 * time.Hour), Severity: 1}
	if err := p.Label(l, t0.Add(time.Hour)); !errors.Is(err, ErrLabelInFuture) {
		t.Fatalf("err = %v, want ErrLabelInFuture", err)
	}
	if s := p.Stats(); s.Future != 1 || s.Labels != 0 || s.Corrections != 0 {
		t.Errorf("stats %+v: want 1 refused, nothing applied", s)
	}
	if err := p.Label(l, t0.Add(2*time.Hour)); err != nil {
		t.Fatal(err)
	}
	if s := p.Stats(); s.Labels != 1 || s.Corrections != 1 || s.Duplicates != 0 {
		t.Errorf("stats %+v: want the resent label applied once", s)
	}
}

// Labels of keys with no records are held: at most MaxHeldLabels, then
// refused; the key's first record takes them; after MaxHeldAge they go.
func TestHeldLabelsAreBounded(t *testing.T) {
	cfg := testConfig()
	cfg.MaxHeldLabels = 3
	cfg.MaxHeldAge = 2 * time.Hour
	p, err := NewPartition(cfg)
	if err != nil {
		t.Fatal(err)
	}
	hold := func(id, key string, at time.Time) error {
		return p.Label(Label{LabelID: id, Key: key, Abusive: true, From: at.Add(-time.Hour), To: at.Add(time.Hour), Severity: 1}, at)
	}
	for i, key := range []string{"a", "a", "b"} {
		if err := hold(fmt.Sprint("h", i), key, t0); err != nil {
			t.Fatal(err)
		}
	}
	err = hold("h3", "c", t0)
	if !errors.Is(err, ErrHeldLabelsFull) || ErrorCode(err) != "held_labels_full" {
		t.Fatalf("fourth held label: err = %v, want ErrHeldLabelsFull", err)
	}
	if s := p.Stats(); s.Held != 3 || s.HeldRefused != 1 || s.UnknownKey != 3 || s.Labels != 3 {
		t.Fatalf("stats %+v: want 3 held, 1 refused", s)
	}

	// a's first record takes a's two labels: it learns the abusive reward.
	apply(t, p, decide("d1", "a", t0.Add(time.Minute)))
	if s := p.Stats(); s.Held != 1 || len(p.held) != 1 {
		t.Fatalf("after a's record: %d held (%d keys), want b's 1", s.Held, len(p.held))
	}
	if got := p.keys["a"].severityAt(hourOf(t0.UnixMicro())); got != 1 {
		t.Errorf("a's hour severity %v, want the held labels' 1", got)
	}
	if err := hold("h3", "c", t0.Add(2*time.Minute)); err != nil {
		t.Fatalf("with room again: %v", err)
	}

	// Three hours on, b's and c's labels are older than MaxHeldAge.
	apply(t, p, decide("d2", "a", t0.Add(3*time.Hour)))
	if s := p.Stats(); s.Held != 0 || s.HeldExpired != 2 || len(p.held) != 0 {
		t.Fatalf("stats %+v, %d keys held: want b's and c's labels expired", s, len(p.held))
	}
	apply(t, p, decide("d3", "b", t0.Add(3*time.Hour+time.Minute)))
	if got := p.keys["b"].severityAt(hourOf(t0.UnixMicro())); got != 0 {
		t.Errorf("b's severity %v after its label expired, want 0", got)
	}
}

// The flood: labels far in the future are refused outright, and
// labels within the horizon for unseen keys stop at the cap.
func TestUnseenKeyFloodIsBounded(t *testing.T) {
	cfg := testConfig()
	cfg.MaxHeldLabels, cfg.LabelHorizon = 1000, DefaultLabelHorizon
	p, _ := NewPartition(cfg)
	far := time.Date(9999, 1, 1, 0, 0, 0, 0, time.UTC)
	for k := range 200 {
		for i := range 100 {
			id, key := fmt.Sprintf("f-%d-%d", k, i), fmt.Sprintf("unseen-%d", k)
			if err := p.Label(Label{LabelID: id, Key: key, Abusive: true, From: far.Add(-time.Hour), To: far, Severity: 1}, t0); !errors.Is(err, ErrLabelInFuture) {
				t.Fatalf("year-9999 label: %v", err)
			}
			err := p.Label(Label{LabelID: "n" + id, Key: key, Abusive: true, From: t0.Add(-time.Hour), To: t0, Severity: 1}, t0)
			if err != nil && !errors.Is(err, ErrHeldLabelsFull) {
				t.Fatal(err)
			}
		}
	}
	s := p.Stats()
	if s.Held != 1000 || s.HeldRefused != 19000 || s.Future != 20000 || len(p.seen) != 1000 {
		t.Errorf("stats %+v, %d label ids remembered: want 1000 held, 19000 refused, 20000 in the future", s, len(p.seen))
	}
}

// Held labels survive a checkpoint, and still go to their key.
func TestCheckpointKeepsHeldLabels(t *testing.T) {
	p, _ := NewPartition(testConfig())
	if err := p.Label(Label{LabelID: "h", Key: "k", Abusive: true, From: t0, To: t0.Add(time.Hour), Severity: 1}, t0); err != nil {
		t.Fatal(err)
	}
	data, err := p.Checkpoint(t0)
	if err != nil {
		t.Fatal(err)
	}
	q, err := RestorePartition(testConfig(), data)
	if err != nil {
		t.Fatal(err)
	}
	if q.Stats() != p.Stats() || len(q.held["k"]) != 1 {
		t.Fatalf("restored stats %+v, held %v; want %+v and k's label", q.Stats(), q.held, p.Stats())
	}
	apply(t, q, decide("d1", "k", t0.Add(time.Minute)))
	if q.Stats().Held != 0 || q.keys["k"].severityAt(hourOf(t0.UnixMicro())) != 1 {
		t.Errorf("the key's record did not take its held label: %+v", q.Stats())
	}
}

// FuzzLabelHorizonAndHolding: a label, as received bytes at a time, must
// pass ParseLabelAt exactly when it parses and ends within the horizon;
// then any sequence of labels and records (ops, 3 bytes each: kind, key,
// minutes on) keeps the held labels within their count and age caps, on
// keys with no records, and through a checkpoint.
func FuzzLabelHorizonAndHolding(f *testing.F) {
	seedCorpus(f, "FuzzLabelHorizonAndHolding")
	f.Fuzz(func(t *testing.T, data []byte, atSec int64, ops []byte) {
		at := time.Unix(t0.Unix()+atSec%(1<<36), 0).UTC()
		l, err := ParseLabelAt(data, at, time.Hour)
		plain, perr := ParseLabel(data)
		switch {
		case perr != nil:
			if err == nil {
				t.Fatalf("ParseLabelAt took what ParseLabel refuses (%v)", perr)
			}
		case err != nil:
			if !errors.Is(err, ErrLabelInFuture) || plain.To.Sub(at) <= time.Hour {
				t.Fatalf("refused a label ending %v after receipt: %v", plain.To.Sub(at), err)
			}
		case l.To.Sub(at) > time.Hour:
			t.Fatalf("took a label ending %v after receipt", l.To.Sub(at))
		}

		cfg := testConfig()
		cfg.Window, cfg.MaxHeldLabels, cfg.MaxHeldAge, cfg.LabelHorizon = 6*time.Hour, 4, 2*time.Hour, time.Hour
		p, _ := NewPartition(cfg)
		if err == nil {
			if err := p.Label(l, at); err != nil {
				t.Fatalf("a label ParseLabelAt took: %v", err)
			}
		}
		now := t0
		for i := 0; i+2 < len(ops); i += 3 {
			key := fmt.Sprintf("k%d", ops[i+1]%6)
			now = now.Add(time.Duration(ops[i+2]) * time.Minute)
			switch ops[i] % 3 {
			case 0:
				to := now.Add(time.Duration(ops[i+2]%120) * time.Minute)
				err := p.Label(Label{LabelID: fmt.Sprint("l", i), Key: key, Abusive: ops[i]%2 == 0,
					From: now.Add(-time.Hour), To: to, Severity: 1}, now)
				switch {
				case errors.Is(err, ErrLabelInFuture):
					if to.Sub(now) <= time.Hour {
						t.Fatalf("refused a label %v ahead", to.Sub(now))
					}
				case err != nil && !errors.Is(err, ErrHeldLabelsFull):
					t.Fatal(err)
				}
			case 1:
				for _, ev := range decide(fmt.Sprint("d", i), key, now) {
					if err := p.Record(*ev.rec); err != nil {
						t.Fatal(err)
					}
				}
			case 2:
				_ = p.Record(Record{Type: TypeOutcome, ID: "none", Key: key, At: now})
			}
			var held int64
			for key, hl := range p.held {
				if h := p.keys[key]; h != nil && len(h.Aggs) > 0 {
					t.Fatalf("key %s has records and held labels", key)
				}
				for _, x := range hl {
					if age := p.watermark - x.Seen; age > int64((cfg.MaxHeldAge+Bucket)/time.Microsecond) {
						t.Fatalf("a label held %v", time.Duration(age)*time.Microsecond)
					}
				}
				held += int64(len(hl))
			}
			if s := p.Stats(); s.Held != held || held > int64(cfg.MaxHeldLabels) {
				t.Fatalf("%d labels held, counted %d, cap %d", held, s.Held, cfg.MaxHeldLabels)
			}
		}
		ck, err := p.Checkpoint(t0)
		if err != nil {
			t.Fatal(err)
		}
		q, err := RestorePartition(cfg, ck)
		if err != nil || q.Stats() != p.Stats() {
			t.Fatalf("restored %+v, %v; want %+v", q.Stats(), err, p.Stats())
		}
	})
}

// A burst of decisions, then their outcomes: once most have joined, the
// pending map is rebuilt at its size (a Go map keeps its peak's memory),
// and the decisions still pending join as before — the bandit ends where
// the same records in their usual order leave it.
func TestPendingShrinksAfterABurst(t *testing.T) {
	evs := stream(3, 5000, 1)
	var decisions, outcomes []event
	for _, ev := range evs {
		switch {
		case ev.rec == nil:
		case ev.rec.Type == TypeDecision:
			decisions = append(decisions, ev)
		default:
			outcomes = append(outcomes, ev)
		}
	}
	burst, err := NewPartition(testConfig())
	if err != nil {
		t.Fatal(err)
	}
	apply(t, burst, decisions)
	if burst.pendingPeak != 5000 {
		t.Fatalf("peak %d after 5000 decisions", burst.pendingPeak)
	}
	apply(t, burst, outcomes[:4500])
	if len(burst.pending) != 500 || burst.pendingPeak >= 5000/4 {
		t.Fatalf("after 4500 of 5000 joined: %d pending, peak %d; want the map rebuilt", len(burst.pending), burst.pendingPeak)
	}
	apply(t, burst, outcomes[4500:])
	if s := burst.Stats(); s.Updates != 5000 || s.Orphans != 0 || len(burst.pending) != 0 {
		t.Fatalf("stats %+v, %d pending: every decision should have joined", s, len(burst.pending))
	}
	// The usual order: each decision's outcome right after it, so pending
	// never holds more than one and is never rebuilt.
	usual, _ := NewPartition(testConfig())
	for i := range decisions {
		apply(t, usual, []event{decisions[i], outcomes[i]})
	}
	if usual.pendingPeak != 1 {
		t.Fatalf("the usual order peaked at %d pending", usual.pendingPeak)
	}
	assertSamePosterior(t, posterior(t, burst), posterior(t, usual), 1e-9)
}

// lateStream is one key's decisions and outcomes every 10 minutes for
// hours, no labels, each with the same context x.
func lateStream(key string, hours int, x []float64) []event {
	var evs []event
	for e := range hours * 6 {
		at := t0.Add(time.Duration(e) * 10 * time.Minute)
		id := fmt.Sprintf("%s-%d", key, e)
		evs = append(evs,
			event{rec: &Record{Type: TypeDecision, ID: id, Key: key, Tier: "free", At: at, Policy: PolicyBandit, Arm: 0,
				Multiplier: bandit.DefaultArms()[0].Multiplier, Propensity: 1, Context: x, Base: 100}},
			event{rec: &Record{Type: TypeOutcome, ID: id, Key: key, At: at.Add(10 * time.Minute), Served: 50}})
	}
	return evs
}

// An abusive label that arrives after the attribution window still
// teaches the risk model (issue 17): the key's hours that became final as
// benign are kept, and the label teaches those it covers as abusive, once
// each; a duplicate teaches nothing more. The kept hours survive a
// checkpoint, and past LateExamples the oldest are dropped.
func TestLabelPastTheWindowTeachesTheRiskModel(t *testing.T) {
	cfg := testConfig()
	cfg.Window = 3 * time.Hour
	x := []float64{0.9, 0.4, 0.01}
	evs := append(lateStream("k_sleeper", 10, x), lateStream("k_other", 10, []float64{0.1, 0.2, 0.01})...)
	slices.SortStableFunc(evs, func(a, b event) int { return a.rec.At.Compare(b.rec.At) })
	p, err := NewPartition(cfg)
	if err != nil {
		t.Fatal(err)
	}
	apply(t, p, evs)
	kept := len(p.final["k_sleeper"])
	if kept < 5 {
		t.Fatalf("%d of k_sleeper's final hours kept, want the ~7 past the 3 h window", kept)
	}
	ckpt, err := p.Checkpoint(t0)
	if err != nil {
		t.Fatal(err)
	}
	before := p.risk.Score(x[:2])
	late := Label{LabelID: "inv-late", Key: "k_sleeper", Abusive: true, From: t0, To: t0.Add(2 * time.Hour), Severity: 1, Source: "chargeback"}
	if err := p.Label(late, t0.Add(10*time.Hour)); err != nil {
		t.Fatal(err)
	}
	st := p.Stats()
	if st.Late != 1 || st.LateRisk != 2 {
		t.Fatalf("stats %+v: want 1 late label teaching the 2 kept hours it covers", st)
	}
	after := p.risk.Score(x[:2])
	if after <= before {
		t.Errorf("the key's risk went %.4f → %.4f with a late abusive label, want higher", before, after)
	}
	dup := late
	dup.LabelID = "inv-late-resent"
	if err := p.Label(dup, t0.Add(10*time.Hour)); err != nil {
		t.Fatal(err)
	}
	if s := p.Stats(); s.LateRisk != 2 || p.risk.Score(x[:2]) != after {
		t.Errorf("a second late label for the same hours taught again: %d examples", s.LateRisk)
	}
	// The restored partition holds the same kept hours and learns the same.
	r, err := RestorePartition(cfg, ckpt)
	if err != nil {
		t.Fatal(err)
	}
	if err := r.Label(late, t0.Add(10*time.Hour)); err != nil {
		t.Fatal(err)
	}
	if got := r.risk.Score(x[:2]); got != after || r.Stats().LateRisk != 2 {
		t.Errorf("restored: risk %.6f, %d late examples; the original: %.6f, 2", got, r.Stats().LateRisk, after)
	}
	// A cap of 3 keeps the 3 most recent final hours of both keys.
	cfg.LateExamples = 3
	c, _ := NewPartition(cfg)
	apply(t, c, evs)
	if n := len(c.final["k_sleeper"]) + len(c.final["k_other"]); n != 3 || len(c.finalOrder) != 3 {
		t.Errorf("%d hours kept under a cap of 3 (order %d)", n, len(c.finalOrder))
	}
	if err := c.Label(late, t0.Add(10*time.Hour)); err != nil {
		t.Fatal(err)
	}
	if n := c.Stats().LateRisk; n != 0 {
		t.Errorf("the label's hours were dropped past the cap, yet %d were taught", n)
	}
}
