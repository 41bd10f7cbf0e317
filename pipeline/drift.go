package pipeline

import (
	"math"
	"sync"
	"sync/atomic"
	"time"

	"github.com/devflow/flowguard/features"
	"github.com/devflow/flowguard/internal/config"
)

// Drift watches the feature vectors stage 2 scores for a shift away from
// the distribution the model learned on, and says when decisions should
// fall back to deterministic budgets (reason drift).
//
// The model learns continuously from the contexts stage 2 logs, so the
// distribution it was trained on is the recent past of those same
// contexts: the reference is their histogram decayed with a long time
// constant (ml.drift.reference, 24 h), the current one decayed with a
// short one (ml.drift.window, 1 h). Per feature, the population stability
// index (PSI) of current against reference is
//
//	Σ_bins (c_i − r_i) · ln(c_i / r_i)
//
// over ten equal bins of the feature's scaled range, each share smoothed
// by half a count. A PSI under 0.1 is usually read as no shift, above
// 0.25 as a major one. Drift starts when the largest PSI passes
// ml.drift.threshold with at least ml.drift.min_samples key-epochs in both
// windows, and ends when it falls below 80% of the threshold.
//
// Features of the time of day (hour_sin, hour_cos) are not watched: a
// one-hour window always differs from a day's. Neither is key_age, which
// counts from when this store first saw the key and so grows for weeks
// after every restart, nor rate_1d, whose 24 h counter takes a day to
// fill after one, nor rate_change, an hour against a day, which follows
// the diurnal cycle as hour_sin does; nor cohort_rate and cohort_ips,
// ranks against the last hour's keys that are near-uniform by
// construction and tie on small counts (the rates and distinct_ips they
// rank are watched); nor label_state and ip_suspicion, which move when
// labels come, in batches, not when traffic does. Only keys at least ml.drift.min_key_age old are
// counted: a new key's first vectors are zero, and its decayed rates take
// up to their longest time constant (1 h) to settle, so a store full of
// new keys (after a start) would otherwise look like drift. While decisions fall back,
// the reference goes on absorbing the new distribution, so a lasting
// shift ends the fallback after about a reference time constant; the
// alert says it happened.
//
// Observe costs a shard lock and one increment per feature; the
// histograms are folded and the PSI computed by Evaluate, on a ticker.
type Drift struct {
	cfg     DriftConfig
	watched []int   // feature indexes
	ageIdx  int     // key_age's index, or -1
	minAge  float64 // min_key_age, scaled as key_age is
	bounds  [][2]float64
	names   []string
	shards  [driftShards]driftShard
	next    atomic.Uint32
	active  atomic.Bool

	mu       sync.Mutex // Evaluate
	at       time.Time
	cur, ref [][driftBins]float64
	psi      []float64
}

// DriftConfig configures Drift; see config.Drift.
type DriftConfig struct {
	Threshold  float64
	Window     time.Duration
	Reference  time.Duration
	MinSamples float64
	MinKeyAge  time.Duration
	// Fallback makes Drifting report drift; false only measures it.
	Fallback bool
}

const (
	driftBins   = 10
	driftShards = 16
)

type driftShard struct {
	mu     sync.Mutex
	counts [][driftBins]uint32
	_      [32]byte // keep shards' locks on separate cache lines
}

// DriftFor returns the monitor ml.drift configures for schema's vectors;
// nil with mode off.
func DriftFor(schema features.Schema, c config.Drift) *Drift {
	if c.Mode == config.DriftOff || c.Mode == "" {
		return nil
	}
	return NewDrift(schema, DriftConfig{Threshold: c.Threshold, Window: c.Window, Reference: c.Reference,
		MinSamples: float64(c.MinSamples), MinKeyAge: c.MinKeyAge, Fallback: c.Mode == config.DriftFallback})
}

// NewDrift returns a monitor of schema's vectors.
func NewDrift(schema features.Schema, cfg DriftConfig) *Drift {
	d := &Drift{cfg: cfg, ageIdx: schema.Index("key_age")}
	for i, name := range schema.Names() {
		switch name {
		case "hour_sin", "hour_cos", "key_age", "rate_1d", "rate_change", "cohort_rate", "cohort_ips", "label_state", "ip_suspicion":
			continue
		}
		d.watched = append(d.watched, i)
	}
	if d.ageIdx >= 0 {
		d.minAge = schema.Feature(d.ageIdx).Scale(cfg.MinKeyAge.Hours())
	}
	for i := range d.shards {
		d.shards[i].counts = make([][driftBins]uint32, len(d.watched))
	}
	d.cur = make([][driftBins]float64, len(d.watched))
	d.ref = make([][driftBins]float64, len(d.watched))
	d.psi = make([]float64, len(d.watched))
	d.bounds = make([][2]float64, len(d.watched))
	for j, i := range d.watched {
		lo, hi := schema.Feature(i).Bounds()
		d.bounds[j] = [2]float64{lo, hi}
	}
	d.names = make([]string, len(d.watched))
	for j, i := range d.watched {
		d.names[j] = schema.Feature(i).Name
	}
	return d
}

// Observe counts one scored vector x (of the schema's features; a longer
// x, such as a context with the risk appended, is read up to the schema).
func (d *Drift) Observe(x []float64) { d.ObserveIn(uint(d.next.Add(1)), x) }

// ObserveIn is Observe for a caller that holds a value no concurrent
// caller shares, such as the simulator's shard index: it picks the
// histogram shard from it instead of the shared counter, whose cache line
// every core would otherwise write on every vector.
func (d *Drift) ObserveIn(spread uint, x []float64) {
	if d.ageIdx >= 0 && (d.ageIdx >= len(x) || x[d.ageIdx] < d.minAge) {
		return // a key too new for its features to have settled
	}
	sh := &d.shards[spread%driftShards]
	sh.mu.Lock()
	for j, i := range d.watched {
		if i < len(x) {
			sh.counts[j][d.bin(j, x[i])]++
		}
	}
	sh.mu.Unlock()
}

// bin is the histogram bin of value v of watched feature j.
func (d *Drift) bin(j int, v float64) int {
	lo, hi := d.bounds[j][0], d.bounds[j][1]
	b := int((v - lo) / (hi - lo) * driftBins)
	return max(0, min(b, driftBins-1)) // NaN converts to an unspecified int; clamped either way
}

// Drifting reports whether decisions should fall back because of drift.
func (d *Drift) Drifting() bool { return d != nil && d.cfg.Fallback && d.active.Load() }

// Evaluate folds what Observe counted into the decayed histograms as of
// now, recomputes every watched feature's PSI and updates the drift state.
// It reports whether the state changed.
func (d *Drift) Evaluate(now time.Time) (changed bool) {
	d.mu.Lock()
	defer d.mu.Unlock()
	dt := 0.0
	if !d.at.IsZero() {
		dt = max(0, now.Sub(d.at).Seconds())
	}
	d.at = now
	kc, kr := math.Exp(-dt/d.cfg.Window.Seconds()), math.Exp(-dt/d.cfg.Reference.Seconds())
	for j := range d.cur {
		for b := range driftBins {
			d.cur[j][b] *= kc
			d.ref[j][b] *= kr
		}
	}
	for i := range d.shards {
		sh := &d.shards[i]
		sh.mu.Lock()
		for j := range sh.counts {
			for b, c := range sh.counts[j] {
				d.cur[j][b] += float64(c)
				d.ref[j][b] += float64(c)
			}
			sh.counts[j] = [driftBins]uint32{}
		}
		sh.mu.Unlock()
	}
	worst := 0.0
	enough := false
	for j := range d.cur {
		d.psi[j] = psi(&d.cur[j], &d.ref[j])
		worst = max(worst, d.psi[j])
	}
	if len(d.cur) > 0 {
		enough = mass(&d.cur[0]) >= d.cfg.MinSamples && mass(&d.ref[0]) >= d.cfg.MinSamples
	}
	was := d.active.Load()
	is := was
	switch {
	case !enough:
		is = false
	case !was && worst > d.cfg.Threshold:
		is = true
	case was && worst < 0.8*d.cfg.Threshold:
		is = false
	}
	d.active.Store(is)
	return is != was
}

// PSI returns each watched feature's PSI as of the last Evaluate, by name.
func (d *Drift) PSI() map[string]float64 {
	d.mu.Lock()
	defer d.mu.Unlock()
	out := make(map[string]float64, len(d.psi))
	for j, v := range d.psi {
		out[d.names[j]] = v
	}
	return out
}

// Active reports whether drift is detected, whether or not decisions fall
// back because of it.
func (d *Drift) Active() bool { return d != nil && d.active.Load() }

func mass(h *[driftBins]float64) float64 {
	s := 0.0
	for _, v := range h {
		s += v
	}
	return s
}

// psi is the population stability index of cur against ref, each share
// smoothed by half a count so that an empty bin costs a finite amount.
func psi(cur, ref *[driftBins]float64) float64 {
	const alpha = 0.5
	mc, mr := mass(cur)+alpha*driftBins, mass(ref)+alpha*driftBins
	s := 0.0
	for b := range driftBins {
		c, r := (cur[b]+alpha)/mc, (ref[b]+alpha)/mr
		s += (c - r) * math.Log(c/r)
	}
	return s
}
