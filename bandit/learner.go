package bandit

import (
	"errors"
	"fmt"
	"math"
	"time"
)

// Errors about inputs. Every method that takes a context, an arm or a reward
// returns one of these, wrapped with the detail, instead of panicking.
var (
	// ErrDim means a context does not have Config.Dim features.
	ErrDim = errors.New("context has the wrong dimension")
	// ErrBadValue means a context feature or a reward is NaN, infinite, or
	// larger in magnitude than MaxValue.
	ErrBadValue = errors.New("value is not finite or out of range")
	// ErrUnknownArm means an arm index is outside the arm set.
	ErrUnknownArm = errors.New("unknown arm")
	// ErrNeedReward is returned by Learner.Correct on a NormalInverseGamma
	// learner: its noise estimate needs the reward being corrected; use
	// Learner.Relabel.
	ErrNeedReward = errors.New("normal-inverse-gamma correction needs the original reward; use Relabel")
)

// MaxValue bounds the magnitude of features and rewards, so that sums of
// squares over any number of updates stay finite.
const MaxValue = 1e50

// An Observation is one (context, arm, reward) triple for UpdateBatch.
type Observation struct {
	X      []float64
	Arm    int
	Reward float64
}

// A Learner accumulates each arm's sufficient statistics
//
//	Bₐ = λI + Σ xxᵀ,   fₐ = Σ r·x,   Σ r²,   nₐ
//
// over the contexts x (with the intercept appended) and rewards r of the
// choices of arm a, and turns them into immutable Snapshots for serving.
//
// The statistics are sums, so a late reward correction is exact: changing a
// reward by Δ adds Δ·x to fₐ and leaves Bₐ alone (Correct). Sums are
// accumulated with compensated (TwoSum) addition, so after 10⁷ updates they
// carry about one rounding error instead of a random walk of them, and every
// Snapshot refactorizes Bₐ from the sums: there is no incrementally updated
// factor to drift.
//
// A Learner is not safe for concurrent use. Its Snapshots are.
type Learner struct {
	cfg     Config
	p       int
	stats   []armStats
	built   []*armModel // model of each arm as of the last Snapshot; nil if changed since
	version uint64
}

// armStats holds one arm's sums, each as a compensated pair (value, error).
type armStats struct {
	n           uint64
	gram, gramC []float64 // Σ xxᵀ, packed lower
	f, fC       []float64 // Σ r·x
	r2, r2C     float64   // Σ r²
}

func newArmStats(p int) armStats {
	m := packedLen(p)
	buf := make([]float64, 2*m+2*p)
	return armStats{gram: buf[:m:m], gramC: buf[m : 2*m : 2*m], f: buf[2*m : 2*m+p : 2*m+p], fC: buf[2*m+p:]}
}

// NewLearner returns a learner with every arm at its prior. The first
// Snapshot has version 1.
func NewLearner(cfg Config) (*Learner, error) {
	if err := cfg.Validate(); err != nil {
		return nil, err
	}
	cfg = cfg.withDefaults()
	cfg.Arms = cfg.Arms.clone()
	l := &Learner{cfg: cfg, p: cfg.features()}
	l.stats = make([]armStats, len(cfg.Arms))
	for i := range l.stats {
		l.stats[i] = newArmStats(l.p)
	}
	l.built = make([]*armModel, len(cfg.Arms))
	return l, nil
}

// RestoreLearner returns a learner that continues from the statistics and
// version of s, for a warm restart; its next Snapshot has version
// s.Version()+1.
func RestoreLearner(s *Snapshot) (*Learner, error) {
	if s == nil {
		return nil, errors.New("bandit: nil snapshot")
	}
	l, err := NewLearner(s.Config())
	if err != nil {
		return nil, err
	}
	for a, m := range s.models {
		st := &l.stats[a]
		st.n = m.n
		copy(st.gram, m.gram)
		copy(st.f, m.f)
		st.r2 = m.sumR2
		l.built[a] = m
	}
	l.version = s.version
	return l, nil
}

// Config returns the learner's configuration with defaults applied.
func (l *Learner) Config() Config {
	c := l.cfg
	c.Arms = c.Arms.clone()
	return c
}

// Version returns the version of the last Snapshot, 0 before the first.
func (l *Learner) Version() uint64 { return l.version }

// Count returns the number of updates of arm a, or 0 for an unknown arm.
func (l *Learner) Count(a int) uint64 {
	if a < 0 || a >= len(l.stats) {
		return 0
	}
	return l.stats[a].n
}

// Update adds the reward r observed after choosing arm a for context x.
func (l *Learner) Update(x []float64, a int, r float64) error {
	if err := l.check(x, a, r); err != nil {
		return err
	}
	l.add(x, a, r)
	return nil
}

// UpdateBatch adds every observation of the batch, or none: the batch is
// checked first and the first bad observation is reported with its index.
func (l *Learner) UpdateBatch(batch []Observation) error {
	for i, o := range batch {
		if err := l.check(o.X, o.Arm, o.Reward); err != nil {
			return fmt.Errorf("observation %d: %w", i, err)
		}
	}
	for _, o := range batch {
		l.add(o.X, o.Arm, o.Reward)
	}
	return nil
}

// Correct applies a late change delta to the reward of an earlier update of
// arm a with context x: fₐ += delta·x. Bₐ and the count are unchanged, so
// the result equals having updated with the corrected reward in the first
// place. A NormalInverseGamma learner also needs the original reward to
// correct Σr² and returns ErrNeedReward; use Relabel.
func (l *Learner) Correct(x []float64, a int, delta float64) error {
	if err := l.check(x, a, delta); err != nil {
		return err
	}
	if l.cfg.Posterior == NormalInverseGamma {
		return fmt.Errorf("bandit: %w", ErrNeedReward)
	}
	l.addReward(x, a, delta)
	return nil
}

// CorrectSum applies many corrections of arm a at once: sumX = Σ Δᵢ·xᵢ
// over the corrected updates' contexts and sum = Σ Δᵢ (the intercept's
// share; ignored with NoIntercept). It equals calling Correct for each,
// so a caller may keep these two sums per group of updates instead of
// every context. Like Correct, it returns ErrNeedReward for
// NormalInverseGamma.
func (l *Learner) CorrectSum(a int, sumX []float64, sum float64) error {
	if err := l.check(sumX, a, sum); err != nil {
		return err
	}
	if l.cfg.Posterior == NormalInverseGamma {
		return fmt.Errorf("bandit: %w", ErrNeedReward)
	}
	st := &l.stats[a]
	for i, v := range sumX {
		twoSum(&st.f[i], &st.fC[i], v)
	}
	if l.p > l.cfg.Dim {
		twoSum(&st.f[l.cfg.Dim], &st.fC[l.cfg.Dim], sum)
	}
	l.built[a] = nil
	return nil
}

// Relabel changes the reward of an earlier update of arm a with context x
// from the value it was updated with to its final value. It is exact for
// both posteriors.
func (l *Learner) Relabel(x []float64, a int, from, to float64) error {
	if err := l.check(x, a, from); err != nil {
		return err
	}
	if err := checkValue("reward", to); err != nil {
		return err
	}
	l.addReward(x, a, to-from)
	st := &l.stats[a]
	twoSum(&st.r2, &st.r2C, to*to)
	twoSum(&st.r2, &st.r2C, -from*from)
	return nil
}

func (l *Learner) check(x []float64, a int, r float64) error {
	if a < 0 || a >= len(l.stats) {
		return fmt.Errorf("bandit: %w: arm %d, have %d arms", ErrUnknownArm, a, len(l.stats))
	}
	if err := checkContext(x, l.cfg.Dim); err != nil {
		return err
	}
	return checkValue("reward", r)
}

func checkContext(x []float64, dim int) error {
	if len(x) != dim {
		return fmt.Errorf("bandit: %w: got %d features, want %d", ErrDim, len(x), dim)
	}
	for i, v := range x {
		if !(math.Abs(v) <= MaxValue) {
			return fmt.Errorf("bandit: %w: feature %d is %v", ErrBadValue, i, v)
		}
	}
	return nil
}

func checkValue(what string, v float64) error {
	if !(math.Abs(v) <= MaxValue) {
		return fmt.Errorf("bandit: %w: %s is %v", ErrBadValue, what, v)
	}
	return nil
}

// add updates arm a's sums with (x, r). x has been checked.
func (l *Learner) add(x []float64, a int, r float64) {
	st := &l.stats[a]
	p := l.p
	d := l.cfg.Dim
	gram, gramC := st.gram, st.gramC
	off := 0
	for i := 0; i < p; i++ {
		xi := 1.0
		if i < d {
			xi = x[i]
		}
		g := gram[off : off+i+1 : off+i+1]
		gc := gramC[off : off+i+1 : off+i+1]
		for j := 0; j < i; j++ {
			twoSum(&g[j], &gc[j], xi*x[j])
		}
		twoSum(&g[i], &gc[i], xi*xi)
		off += i + 1
	}
	l.addReward(x, a, r)
	twoSum(&st.r2, &st.r2C, r*r)
	st.n++
}

// addReward adds r·x to fₐ.
func (l *Learner) addReward(x []float64, a int, r float64) {
	st := &l.stats[a]
	d := l.cfg.Dim
	for i := 0; i < d; i++ {
		twoSum(&st.f[i], &st.fC[i], r*x[i])
	}
	if l.p > d {
		twoSum(&st.f[d], &st.fC[d], r)
	}
	l.built[a] = nil
}

// twoSum adds v to the compensated sum (*s, *c) (Knuth's TwoSum: the
// rounding error of each addition is accumulated in c).
func twoSum(s, c *float64, v float64) {
	t := *s + v
	bp := t - *s
	*c += (*s - (t - bp)) + (v - bp)
	*s = t
}

// Snapshot returns an immutable snapshot of the current posterior, stamped
// with the next version and the given creation time (the learner reads no
// clock). Arms unchanged since the previous snapshot share its factors.
func (l *Learner) Snapshot(created time.Time) (*Snapshot, error) {
	s := newSnapshotShell(l.cfg, l.version+1, created)
	for a := range l.stats {
		if m := l.built[a]; m != nil {
			s.models[a] = m
			continue
		}
		st := &l.stats[a]
		m, err := s.buildArm(st.n, st.gram, st.gramC, st.f, st.fC, st.r2+st.r2C)
		if err != nil {
			return nil, fmt.Errorf("bandit: arm %d %q: %w", a, l.cfg.Arms[a].Name, err)
		}
		s.models[a] = m
		l.built[a] = m
	}
	l.version++
	return s, nil
}
