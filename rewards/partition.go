package rewards

import (
	"errors"
	"fmt"
	"maps"
	"slices"
	"time"

	"github.com/devflow/flowguard/bandit"
	"github.com/devflow/flowguard/features"
	"github.com/devflow/flowguard/policy"
)

// Mode is when rewards reach the bandit.
type Mode string

const (
	// ModeProvisional updates the bandit when an epoch closes, assuming the
	// key benign, and corrects exactly when a label arrives.
	ModeProvisional Mode = "provisional"
	// ModeWait updates the bandit only when a record is final, after the
	// attribution window: unbiased, days late. For comparison.
	ModeWait Mode = "wait"
)

// Config configures a Learner and its partitions.
type Config struct {
	// Bandit is the bandit the decisions were made with; its Dim is the
	// context length of the decision records. Required.
	Bandit bandit.Config
	// Risk configures the risk model, trained on the first Risk.Dim
	// context features. Required.
	Risk features.RiskConfig
	// Weights is the reward's objective. Default: DefaultWeights().
	Weights Weights
	// Window is the attribution window: a record is final this long after
	// its hour ends, and a label after it no longer changes it.
	// Default: 24h.
	Window time.Duration
	// Mode is provisional or wait. Default: provisional.
	Mode Mode
	// MaxPending caps, per partition, the decisions waiting for their
	// outcome; the oldest is dropped (and counted) beyond it.
	// Default: 1000000.
	MaxPending int
	// Variants are the experiment variants with a model of their own; see
	// VariantModel. Default: none.
	Variants []VariantModel
	// LabelHorizon is how far past the time it was received a label's To
	// may lie; a label beyond it is refused (ErrLabelInFuture). Default: 0,
	// no limit (simulations label whole traces); ml.label_horizon, what
	// serving and the learners use, defaults to DefaultLabelHorizon.
	LabelHorizon time.Duration
	// MaxHeldLabels caps, per partition, the labels held for keys with no
	// records yet; beyond it such a label is refused (ErrHeldLabelsFull).
	// Default: 100000.
	MaxHeldLabels int
	// MaxHeldAge is how long (event time) a label is held for a key with
	// no records before it is dropped, checked as each hour begins; at
	// most Window. Default: 24h, or Window when that is shorter.
	MaxHeldAge time.Duration
	// LateExamples caps, per partition, the hours kept after they became
	// final as benign examples of the risk model (unlabelled when the
	// attribution window closed), oldest dropped first: an abusive label
	// that arrives after the window teaches the risk model its key's kept
	// hours as abusive. Default: 100000; -1 keeps none.
	LateExamples int
}

// Bucket is the granularity at which labels apply: a label covers a
// key's records of every hour it overlaps.
const Bucket = time.Hour

func (c Config) withDefaults() Config {
	c.Weights = c.Weights.WithDefaults()
	if c.Window == 0 {
		c.Window = 24 * time.Hour
	}
	if c.Mode == "" {
		c.Mode = ModeProvisional
	}
	if c.MaxPending == 0 {
		c.MaxPending = 1_000_000
	}
	if c.MaxHeldLabels == 0 {
		c.MaxHeldLabels = 100_000
	}
	if c.MaxHeldAge == 0 {
		c.MaxHeldAge = min(24*time.Hour, c.Window)
	}
	if c.LateExamples == 0 {
		c.LateExamples = 100_000
	}
	return c
}

// Validate reports the first invalid field.
func (c Config) Validate() error {
	if err := c.Bandit.Validate(); err != nil {
		return fmt.Errorf("rewards: bandit: %w", err)
	}
	if err := c.Risk.Validate(); err != nil {
		return fmt.Errorf("rewards: risk: %w", err)
	}
	if c.Risk.Dim > c.Bandit.Dim {
		return fmt.Errorf("rewards: risk dimension %d exceeds the context's %d", c.Risk.Dim, c.Bandit.Dim)
	}
	if err := c.Weights.Validate(); err != nil {
		return err
	}
	if c.Window < 0 || c.Window > 90*24*time.Hour {
		return fmt.Errorf("rewards: window %v must be between 0 and 90 days", c.Window)
	}
	if c.Mode != "" && c.Mode != ModeProvisional && c.Mode != ModeWait {
		return fmt.Errorf("rewards: mode %q, want provisional or wait", c.Mode)
	}
	if c.Mode == ModeProvisional && c.Bandit.Posterior == bandit.NormalInverseGamma {
		return errors.New("rewards: provisional rewards need the gaussian posterior (its corrections are exact); use mode wait")
	}
	if c.MaxPending < 0 {
		return errors.New("rewards: max_pending must not be negative")
	}
	if c.LabelHorizon < 0 || c.LabelHorizon > 7*24*time.Hour {
		return fmt.Errorf("rewards: label horizon %v must be between 0 and 7 days", c.LabelHorizon)
	}
	if c.MaxHeldLabels < 0 {
		return errors.New("rewards: max_held_labels must not be negative")
	}
	if c.LateExamples < -1 {
		return errors.New("rewards: late_label_examples must be -1 (none) or more")
	}
	window := c.Window
	if window == 0 {
		window = 24 * time.Hour
	}
	if c.MaxHeldAge < 0 || c.MaxHeldAge > window {
		return fmt.Errorf("rewards: held label age %v must be between 0 and the attribution window %v", c.MaxHeldAge, window)
	}
	return validateVariants(c.Variants, c.Bandit.Dim)
}

// Stats counts what a partition did with its input.
type Stats struct {
	Decisions, Outcomes, Updates int64
	Orphans                      int64 // outcomes with no pending decision (decision dropped or too old)
	PendingDropped               int64 // decisions dropped beyond MaxPending
	Labels, Duplicates, Late     int64 // labels applied; repeated label ids; labels past the window
	UnknownKey                   int64 // labels for a key with no records yet, held for it (see Held)
	Future                       int64 // labels refused: To past the horizon (ErrLabelInFuture)
	// Held is the labels held now for keys with no records yet; HeldRefused
	// those refused because MaxHeldLabels were held, HeldExpired those
	// dropped after MaxHeldAge without a record of their key.
	Held, HeldRefused, HeldExpired int64
	Corrections, Finalized, Errors int64
	// Retired counts outcomes of epochs whose variant model was dropped
	// (SetVariants) while they were pending: they teach only the risk model.
	Retired int64
	// LateRisk counts the kept final hours that abusive labels arriving
	// after the window taught the risk model as abusive.
	LateRisk int64
}

// Partition is the learner's state for one Kafka partition: pending
// decisions, each key's records within the attribution window (aggregated
// per arm and hour), the labels seen, the bandit and risk models the
// partition trained, and the offsets its state includes. Not safe for
// concurrent use.
type Partition struct {
	cfg Config
	// models are the bandits trained, by key: "" is the main model, the
	// others are VariantModel keys.
	models  map[string]*model
	risk    *features.Risk
	pending map[string]pendingDecision
	// pendingPeak is the most pending decisions since pending was built:
	// compactOrder rebuilds a map that has fallen far below it, since a Go
	// map keeps its largest size's memory.
	pendingPeak int
	order       []string // pending ids, oldest first (may hold ids already joined)
	keys        map[string]*keyHistory
	seen        map[string]int64 // label id → when seen (µs event time)
	// held are the labels of keys with no aggregate yet, by key, in
	// arrival order; the key's first record takes them (join).
	held map[string][]heldLabel
	// final are the hours kept after they became final as benign risk
	// examples, by key; finalOrder is their order, oldest first, for the
	// LateExamples cap (it may hold hours a late label already took).
	final      map[string][]finalExample
	finalOrder []finalRef
	// Watermark is the latest event time seen, µs: the partition's clock.
	watermark int64
	// Offsets are the next offset to read per topic: the input this state
	// includes.
	Offsets map[string]int64
	stats   Stats
}

type pendingDecision struct {
	Key, Tier  string
	Class      policy.Class // "" in checkpoints from before classes: the tier is classed by name
	Model      string       // the key of the model the arm was drawn from; "": the main one
	At         int64        // µs
	Arm        int
	Multiplier float64
	X          []float64
	Base       float64
}

// keyHistory is one key's records and labels within the window.
type keyHistory struct {
	Tier   string
	Class  policy.Class // as pendingDecision.Class
	Aggs   []agg
	Labels []Label // in arrival order; the last covering an hour decides it
}

// tier is the key's tier, with its class.
func (h *keyHistory) tier() policy.Tier { return policy.Tier{Name: h.Tier, Class: h.Class} }

// agg sums one key's bandit records of one arm in one hour: what an exact
// correction needs. With slope kᵢ = d rewardᵢ / d severity, a change of
// the hour's severity by Δ changes the arm's Σ r·x by Δ·Σ kᵢxᵢ.
type agg struct {
	Hour     int64 // start, µs
	Model    string
	Arm      int
	Severity float64   // the severity the bandit has been given for it
	SlopeX   []float64 // Σ kᵢ·xᵢ
	Slope    float64   // Σ kᵢ
	LastX    []float32 // the last context, for the risk model
	Labelled bool      // the risk model has learned from it
	Wait     []waitRecord
}

// finalExample is an hour that became final as a benign example of the
// risk model: its start and its last context.
type finalExample struct {
	Hour int64
	X    []float32
}

// finalRef names a kept final hour.
type finalRef struct {
	Key  string
	Hour int64
}

// heldLabel is a label waiting for its key's first record.
type heldLabel struct {
	Label Label
	Seen  int64 // µs event time
}

// waitRecord is one record held whole until final, in ModeWait.
type waitRecord struct {
	X       []float64
	Outcome Outcome
	Base    float64
}

// NewPartition returns an empty partition.
func NewPartition(cfg Config) (*Partition, error) {
	if err := cfg.Validate(); err != nil {
		return nil, err
	}
	cfg = cfg.withDefaults()
	bl, err := bandit.NewLearner(cfg.Bandit)
	if err != nil {
		return nil, err
	}
	cfg.Bandit = bl.Config()
	risk, err := features.NewRisk(cfg.Risk)
	if err != nil {
		return nil, err
	}
	p := &Partition{cfg: cfg, risk: risk, pending: map[string]pendingDecision{},
		models: map[string]*model{"": {mode: cfg.Mode, l: bl, arms: len(cfg.Bandit.Arms)}},
		keys:   map[string]*keyHistory{}, seen: map[string]int64{}, held: map[string][]heldLabel{}, final: map[string][]finalExample{},
		Offsets: map[string]int64{}}
	for _, v := range cfg.Variants {
		m, err := newVariantModel(v)
		if err != nil {
			return nil, err
		}
		p.models[m.key] = m
	}
	return p, nil
}

// Stats returns the partition's counters.
func (p *Partition) Stats() Stats { return p.stats }

// Watermark returns the latest event time the partition has seen.
func (p *Partition) Watermark() time.Time { return time.UnixMicro(p.watermark).UTC() }

// advance moves the watermark to t, finalising what the window closes.
// Expiry runs when the watermark enters a new hour: records are kept per
// hour, so nothing can close in between.
func (p *Partition) advance(t int64) {
	if t > p.watermark {
		old := p.watermark
		p.watermark = t
		if hourOf(t) != hourOf(old) {
			p.expire()
		}
	}
}

func hourOf(t int64) int64 { return t - ((t%3600e6)+3600e6)%3600e6 }

// Record applies one decision-log record. Records that fail Validate, or
// whose context does not fit the bandit, are an error and change nothing.
func (p *Partition) Record(r Record) error {
	if err := r.Validate(); err != nil {
		return err
	}
	at := r.At.UnixMicro()
	switch r.Type {
	case TypeDecision:
		p.stats.Decisions++
		if r.Policy != PolicyBandit {
			p.advance(at)
			return nil // shadow and static epochs did not follow the bandit: nothing to learn
		}
		m := p.models[r.Model]
		if m == nil {
			p.stats.Errors++
			return fmt.Errorf("%w: model %q: %w here: serving and this learner run different experiments files, or the variant's settings changed",
				ErrBadRecord, r.Model, errNoModel)
		}
		if len(r.Context) != p.cfg.Bandit.Dim || r.Arm >= m.arms {
			p.stats.Errors++
			return fmt.Errorf("%w: context of %d features or arm %d does not fit the bandit (%d features, %d arms)",
				ErrBadRecord, len(r.Context), r.Arm, p.cfg.Bandit.Dim, m.arms)
		}
		if _, dup := p.pending[r.ID]; !dup {
			p.order = append(p.order, r.ID)
		}
		p.pending[r.ID] = pendingDecision{Key: r.Key, Tier: r.Tier, Class: r.TierClass, Model: r.Model, At: at, Arm: r.Arm, Multiplier: r.Multiplier,
			X: slices.Clone(r.Context), Base: NormBase(r.Base)}
		p.pendingPeak = max(p.pendingPeak, len(p.pending))
		for len(p.pending) > p.cfg.MaxPending && len(p.order) > 0 {
			id := p.order[0]
			p.order = p.order[1:]
			if _, ok := p.pending[id]; ok {
				delete(p.pending, id)
				p.stats.PendingDropped++
			}
		}
		p.advance(at)
		return nil
	default:
		p.stats.Outcomes++
		d, ok := p.pending[r.ID]
		if !ok {
			p.stats.Orphans++
			p.advance(at)
			return nil
		}
		delete(p.pending, r.ID)
		p.compactOrder()
		err := p.join(d, r.Outcome())
		p.advance(at)
		return err
	}
}

// compactOrder drops joined ids from the front of the order queue, and
// rebuilds it when most of it is stale.
func (p *Partition) compactOrder() {
	for len(p.order) > 0 {
		if _, ok := p.pending[p.order[0]]; ok {
			break
		}
		p.order = p.order[1:]
	}
	if len(p.order) > 1024 && len(p.order) > 4*len(p.pending) {
		live := make([]string, 0, len(p.pending))
		for _, id := range p.order {
			if _, ok := p.pending[id]; ok {
				live = append(live, id)
			}
		}
		p.order = live
	}
	if p.pendingPeak > 1024 && 4*len(p.pending) < p.pendingPeak {
		m := make(map[string]pendingDecision, len(p.pending))
		maps.Copy(m, p.pending)
		p.pending, p.pendingPeak = m, len(m)
	}
}

// join is an epoch's outcome meeting its decision: the provisional (or,
// with a label already in, the labelled) reward goes to the bandit.
func (p *Partition) join(d pendingDecision, o Outcome) error {
	o.Multiplier = d.Multiplier
	h := p.keys[d.Key]
	if h == nil {
		h = &keyHistory{}
		p.keys[d.Key] = h
	}
	if held := p.held[d.Key]; len(held) > 0 {
		// The key's first record: its held labels now apply to it, after
		// the labels it kept (they arrived earlier).
		for _, x := range held {
			h.Labels = append(h.Labels, x.Label)
		}
		delete(p.held, d.Key)
		p.stats.Held -= int64(len(held))
	}
	if d.Tier != "" {
		h.Tier, h.Class = d.Tier, d.Class
	}
	hour := hourOf(d.At)
	if p.watermark-(hour+int64(Bucket/time.Microsecond)) > int64(p.cfg.Window/time.Microsecond) {
		p.stats.Late++ // final already: learn it as it stands
	}
	sev := h.severityAt(hour)
	i := h.aggIndex(hour, d.Model, d.Arm)
	a := &h.Aggs[i]
	a.LastX = toFloat32(d.X[:p.cfg.Risk.Dim], a.LastX)
	m := p.models[d.Model]
	switch {
	case m == nil:
		// The variant's model was dropped while the epoch ran: the
		// aggregate still teaches the risk model.
		p.stats.Retired++
		a.Severity = sev
		return nil
	case m.mode == ModeWait:
		a.Wait = append(a.Wait, waitRecord{X: d.X, Outcome: o, Base: d.Base})
		a.Severity = sev
		return nil
	}
	r := p.cfg.Weights.RewardFor(o, h.tier(), d.Base, sev)
	if err := m.l.Update(d.X, d.Arm, r); err != nil {
		p.stats.Errors++
		return err
	}
	p.stats.Updates++
	k := p.cfg.Weights.slope(o, h.tier(), d.Base)
	if a.SlopeX == nil {
		a.SlopeX = make([]float64, p.cfg.Bandit.Dim)
		a.Severity = sev
	}
	if a.Severity != sev {
		// An hour's records all carry its severity: bring the aggregate to
		// this one before adding to it.
		if err := p.correct(h, a, sev); err != nil {
			return err
		}
	}
	for j, v := range d.X {
		a.SlopeX[j] += k * v
	}
	a.Slope += k
	return nil
}

func toFloat32(x []float64, dst []float32) []float32 {
	dst = dst[:0]
	for _, v := range x {
		dst = append(dst, float32(v))
	}
	return dst
}

// aggIndex returns the index of (hour, model, arm)'s aggregate, adding it.
func (h *keyHistory) aggIndex(hour int64, model string, arm int) int {
	// Newest first: records arrive roughly in time order, so the match is
	// almost always among the last few of up to window × arms aggregates.
	for i := len(h.Aggs) - 1; i >= 0; i-- {
		if h.Aggs[i].Hour == hour && h.Aggs[i].Arm == arm && h.Aggs[i].Model == model {
			return i
		}
	}
	h.Aggs = append(h.Aggs, agg{Hour: hour, Model: model, Arm: arm})
	return len(h.Aggs) - 1
}

// severityAt is the severity the key's labels give the hour starting at t:
// that of the last label covering any of it, 0 without one.
func (h *keyHistory) severityAt(hour int64) float64 {
	end := hour + int64(Bucket/time.Microsecond)
	for i := len(h.Labels) - 1; i >= 0; i-- {
		l := h.Labels[i]
		if l.From.UnixMicro() < end && l.To.UnixMicro() > hour {
			return l.severity()
		}
	}
	return 0
}

// correct moves aggregate a to severity sev: the exact correction.
func (p *Partition) correct(h *keyHistory, a *agg, sev float64) error {
	delta := sev - a.Severity
	m := p.models[a.Model]
	if delta == 0 || a.SlopeX == nil || m == nil {
		a.Severity = sev
		return nil
	}
	sumX := make([]float64, len(a.SlopeX))
	for i, v := range a.SlopeX {
		sumX[i] = delta * v
	}
	if err := m.l.CorrectSum(a.Arm, sumX, delta*a.Slope); err != nil {
		p.stats.Errors++
		return err
	}
	a.Severity = sev
	p.stats.Corrections++
	return nil
}

// ErrHeldLabelsFull is wrapped by the error of Label for a label of a key
// with no records while MaxHeldLabels labels are held.
var ErrHeldLabelsFull = errors.New("held_labels_full")

// Label applies one label received at seenAt, at most once per label id.
// A label whose To lies more than LabelHorizon after seenAt is refused
// (ErrLabelInFuture) and changes nothing. A label for a key with no
// records yet is held for MaxHeldAge — the key's decisions may still be in
// flight — unless MaxHeldLabels are held (ErrHeldLabelsFull). A label
// whose range ended more than the window before the watermark changes
// nothing (counted as late).
func (p *Partition) Label(l Label, seenAt time.Time) error {
	if err := l.Validate(); err != nil {
		return err
	}
	if err := l.CheckHorizon(seenAt, p.cfg.LabelHorizon); err != nil {
		p.stats.Future++
		return err
	}
	if _, dup := p.seen[l.LabelID]; dup {
		p.stats.Duplicates++
		return nil
	}
	at := seenAt.UnixMicro()
	seen := max(at, p.watermark)
	if p.watermark-l.To.UnixMicro() > int64(p.cfg.Window/time.Microsecond) {
		p.seen[l.LabelID] = seen
		p.stats.Late++
		if l.Abusive {
			if err := p.learnLate(l); err != nil {
				return err
			}
		}
		p.advance(at)
		return nil
	}
	h := p.keys[l.Key]
	if h == nil || len(h.Aggs) == 0 {
		if p.stats.Held >= int64(p.cfg.MaxHeldLabels) {
			p.stats.HeldRefused++
			return fmt.Errorf("%w: %d labels are held for keys with no records yet (max_held_labels); label %q for key %q refused",
				ErrHeldLabelsFull, p.stats.Held, l.LabelID, l.Key)
		}
		p.seen[l.LabelID] = seen
		p.held[l.Key] = append(p.held[l.Key], heldLabel{Label: l, Seen: seen})
		p.stats.Held++
		p.stats.UnknownKey++
		p.stats.Labels++
		p.advance(at)
		return nil
	}
	p.seen[l.LabelID] = seen
	h.Labels = append(h.Labels, l)
	p.stats.Labels++
	for i := range h.Aggs {
		a := &h.Aggs[i]
		end := a.Hour + int64(Bucket/time.Microsecond)
		if l.From.UnixMicro() >= end || l.To.UnixMicro() <= a.Hour {
			continue
		}
		sev := h.severityAt(a.Hour)
		if m := p.models[a.Model]; m == nil || m.mode == ModeWait {
			a.Severity = sev
		} else if err := p.correct(h, a, sev); err != nil {
			return err
		}
		if !a.Labelled && len(a.LastX) > 0 {
			if err := p.learnRisk(a, l.Abusive); err != nil {
				return err
			}
			a.Labelled = true
		}
	}
	p.advance(at)
	return nil
}

func (p *Partition) learnRisk(a *agg, abusive bool) error { return p.learnRiskX(a.LastX, abusive) }

func (p *Partition) learnRiskX(x32 []float32, abusive bool) error {
	x := make([]float64, len(x32))
	for i, v := range x32 {
		x[i] = float64(v)
	}
	return p.risk.Learn(x, abusive)
}

// learnLate teaches the risk model, as abusive, the kept final hours of
// the key an abusive label past the window names that the label covers.
// The bandit is not corrected: its statistics for those hours are final.
// Each kept hour teaches once.
func (p *Partition) learnLate(l Label) error {
	ex := p.final[l.Key]
	kept := ex[:0]
	from, to, hourUS := l.From.UnixMicro(), l.To.UnixMicro(), int64(Bucket/time.Microsecond)
	for _, e := range ex {
		if from >= e.Hour+hourUS || to <= e.Hour {
			kept = append(kept, e)
			continue
		}
		if err := p.learnRiskX(e.X, true); err != nil {
			return err
		}
		p.stats.LateRisk++
	}
	clear(ex[len(kept):])
	if len(kept) == 0 {
		delete(p.final, l.Key)
	} else {
		p.final[l.Key] = kept
	}
	return nil
}

// keepFinal keeps key's hour, just final as a benign risk example, for
// labels that arrive after the window, dropping the oldest kept hours
// beyond LateExamples.
func (p *Partition) keepFinal(key string, a *agg) {
	if p.cfg.LateExamples <= 0 {
		return
	}
	p.final[key] = append(p.final[key], finalExample{Hour: a.Hour, X: slices.Clone(a.LastX)})
	p.finalOrder = append(p.finalOrder, finalRef{Key: key, Hour: a.Hour})
	for len(p.finalOrder) > p.cfg.LateExamples {
		old := p.finalOrder[0]
		p.finalOrder = p.finalOrder[1:]
		ex := p.final[old.Key]
		if i := slices.IndexFunc(ex, func(e finalExample) bool { return e.Hour == old.Hour }); i >= 0 {
			ex = slices.Delete(ex, i, i+1)
		}
		if len(ex) == 0 {
			delete(p.final, old.Key)
		} else {
			p.final[old.Key] = ex
		}
	}
	if cap(p.finalOrder) > 2*p.cfg.LateExamples && cap(p.finalOrder) > 1024 {
		p.finalOrder = slices.Clone(p.finalOrder) // the dropped front's memory
	}
}

// expire finalises the aggregates whose hour ended more than the window
// before the watermark, and forgets labels and label ids as old.
func (p *Partition) expire() {
	window := int64(p.cfg.Window / time.Microsecond)
	hourUS := int64(Bucket / time.Microsecond)
	cutoff := p.watermark - window
	// Keys in sorted order: the risk model learns in the order examples
	// come, and the same input must give the same model on every run.
	var due []string
	for key, h := range p.keys {
		if keyExpires(h, cutoff, hourUS) {
			due = append(due, key)
		}
	}
	slices.Sort(due)
	for _, key := range due {
		h := p.keys[key]
		kept := h.Aggs[:0]
		for _, a := range h.Aggs {
			if a.Hour+hourUS > cutoff {
				kept = append(kept, a)
				continue
			}
			p.finalize(key, h, &a)
		}
		clear(h.Aggs[len(kept):])
		h.Aggs = kept
		labels := h.Labels[:0]
		for _, l := range h.Labels {
			if l.To.UnixMicro() > cutoff {
				labels = append(labels, l)
			}
		}
		h.Labels = labels
		if len(h.Aggs) == 0 && len(h.Labels) == 0 {
			delete(p.keys, key)
		}
	}
	p.expireHeld(cutoff)
	for id, t := range p.seen {
		if t < cutoff-window { // kept two windows: a resent label is still a duplicate
			delete(p.seen, id)
		}
	}
	for id, d := range p.pending {
		if d.At < cutoff {
			delete(p.pending, id)
			p.stats.PendingDropped++
		}
	}
	p.compactOrder()
}

// expireHeld drops the held labels older than MaxHeldAge, or whose range
// ended before cutoff (they could change no record).
func (p *Partition) expireHeld(cutoff int64) {
	oldest := p.watermark - int64(p.cfg.MaxHeldAge/time.Microsecond)
	for key, held := range p.held {
		kept := held[:0]
		for _, x := range held {
			if x.Seen >= oldest && x.Label.To.UnixMicro() > cutoff {
				kept = append(kept, x)
			}
		}
		if n := len(held) - len(kept); n > 0 {
			p.stats.HeldExpired += int64(n)
			p.stats.Held -= int64(n)
			clear(held[len(kept):])
		}
		if len(kept) == 0 {
			delete(p.held, key)
		} else {
			p.held[key] = kept
		}
	}
}

// keyExpires reports whether expire has anything to do for h.
func keyExpires(h *keyHistory, cutoff, hourUS int64) bool {
	if len(h.Aggs) == 0 && len(h.Labels) == 0 {
		return true
	}
	for _, a := range h.Aggs {
		if a.Hour+hourUS <= cutoff {
			return true
		}
	}
	for _, l := range h.Labels {
		if l.To.UnixMicro() <= cutoff {
			return true
		}
	}
	return false
}

// finalize learns from a final aggregate: wait-mode rewards, and the risk
// model's benign examples (hours no label covered).
func (p *Partition) finalize(key string, h *keyHistory, a *agg) {
	p.stats.Finalized++
	m := p.models[a.Model]
	for _, w := range a.Wait {
		if m == nil {
			break // the variant's model was dropped
		}
		r := p.cfg.Weights.RewardFor(w.Outcome, h.tier(), w.Base, a.Severity)
		if err := m.l.Update(w.X, a.Arm, r); err != nil {
			p.stats.Errors++
			continue
		}
		p.stats.Updates++
	}
	if !a.Labelled && len(a.LastX) > 0 {
		abusive := a.Severity >= 0.5
		if err := p.learnRisk(a, abusive); err != nil {
			p.stats.Errors++
		} else if !abusive {
			p.keepFinal(key, a)
		}
	}
}

// Bandit returns a snapshot of the partition's main bandit statistics.
func (p *Partition) Bandit(created time.Time) (*bandit.Snapshot, error) {
	return p.models[""].l.Snapshot(created)
}

// VariantBandit returns a snapshot of the variant model key names, or nil
// if the partition has no such model.
func (p *Partition) VariantBandit(key string, created time.Time) (*bandit.Snapshot, error) {
	m := p.models[key]
	if key == "" || m == nil {
		return nil, nil
	}
	return m.l.Snapshot(created)
}

// Risk returns the partition's risk model. It is shared, not copied:
// Score it concurrently, but only the partition's owner may change it.
func (p *Partition) Risk() *features.Risk { return p.risk }
