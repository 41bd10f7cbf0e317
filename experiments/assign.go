package experiments

import (
	"errors"
	"fmt"
	"math"
	"math/bits"
	"strconv"
	"sync/atomic"

	"github.com/cespare/xxhash/v2"
)

// A Unit is what the request path knows about the caller when it assigns.
type Unit struct {
	Key    string // the API key; a key experiment hashes it
	Tenant string // a tenant experiment hashes it; "" puts the unit in none
	Tier   string // for targeting
	Region string // for targeting
}

// An Assignment is a unit's place in one experiment.
type Assignment struct {
	Experiment string
	Variant    string
	// Policy is what to enforce: the variant's policy, or the control's
	// when the variant is stopped.
	Policy Policy
	// Bandit configures the bandit for PolicyBandit and PolicyShadow; nil
	// for PolicyStatic. Shared and read-only.
	Bandit *BanditSpec
	// Bucket is the unit's bucket in the experiment, in [0, Buckets).
	Bucket int
	// Holdout is set only on the zero-experiment result of Primary: the
	// unit was held out, which is why it is in no experiment.
	Holdout bool
	// Stopped says the variant was stopped by a guardrail or an operator:
	// Policy and Bandit are the control's, Variant still names the variant
	// so that its units stay attributed to it.
	Stopped bool
	// ExperimentIndex and VariantIndex locate the experiment and variant in
	// the Config (Config.Experiments[i].Variants[j]); -1 when there is none.
	ExperimentIndex, VariantIndex int
}

// Errors of Stop, Resume and ApplyStops.
var (
	// ErrUnknownVariant means no experiment and variant of the Assigner's
	// configuration has the name given.
	ErrUnknownVariant = errors.New("no such experiment variant")
	// ErrStopControl means the control was to be stopped: it already is the
	// deterministic status quo.
	ErrStopControl = errors.New("the control variant cannot be stopped")
)

// An Assigner puts units into experiments and variants by hash. It is
// built once per configuration (a reload builds a new one) and is safe for
// concurrent use: everything but the stop flags is immutable, and those are
// atomic.
//
// Hashing: a unit's bucket in a layer, an experiment or the holdout is
// Bucket(salt, unit), where unit is the key or the tenant: fixed XXH64
// hashes with no per-process seed, map order or randomness, so every
// process agrees forever.
//
// Layers: each experiment of a layer owns the slice of layer buckets
// [round(Σ traffic before it × Buckets), round(Σ traffic up to it ×
// Buckets)), in file order. An experiment without a layer has one of its
// own, salted "layer\x00" + its salt.
//
// Variants: each experiment bucket b goes to the variant with the highest
// weighted rendezvous score −weight / ln u, where u in (0, 1) is the top 53
// bits of xxhash64(salt + "\x00" + decimal(b) + "\x00" + variant name),
// plus ½, over 2⁵³. Changing one variant's weight only moves buckets into
// or out of that variant; adding a variant only moves buckets into it. The
// bucket-to-variant table is built once, so Assign hashes and looks up.
// Each variant's realized share of buckets (Shares) differs from its
// weight by sampling noise of about √(p(1−p)/Buckets); compare logged
// counts with Shares, not with the weights (see SRM).
type Assigner struct {
	cfg     *Config
	holdout *holdout     // nil: none
	layers  []layerState // ordered by their first experiment
	exps    []expState
}

type holdout struct {
	salt uint64 // xxhash64 of the salt
	cut  int    // units with a bucket below it are held out
}

type layerState struct {
	whole bool // one experiment owns every bucket: no need to hash
	unit  UnitKind
	salt  uint64 // xxhash64 of the salt
	exps  []int  // indices into Assigner.exps, in file order
}

type expState struct {
	name     string
	unit     UnitKind
	lo, hi   int    // the layer buckets it owns
	salt     uint64 // xxhash64 of the salt
	control  int
	variants []variantState
	tiers    []string
	tenants  map[string]bool
	regions  []string
	table    [Buckets]uint8 // experiment bucket → variant index
}

type variantState struct {
	name    string
	policy  Policy
	bandit  *BanditSpec
	stopped atomic.Bool
}

// NewAssigner validates cfg and builds its assignment tables. The Assigner
// keeps cfg: do not change it afterwards.
func NewAssigner(cfg *Config) (*Assigner, error) {
	if cfg == nil {
		return nil, errors.New("experiments: nil config")
	}
	if err := cfg.Validate(); err != nil {
		return nil, err
	}
	a := &Assigner{cfg: cfg, exps: make([]expState, len(cfg.Experiments))}
	if h := cfg.Holdout; h != nil && h.Share > 0 {
		a.holdout = &holdout{salt: xxhash.Sum64String(h.Salt), cut: int(math.Round(h.Share * Buckets))}
	}
	layerSalts := map[string]string{}
	for _, l := range cfg.Layers {
		layerSalts[l.Name] = l.Salt
	}
	byLayer := map[string]int{} // layer name → index in a.layers
	used := map[string]float64{}
	for i := range cfg.Experiments {
		e := &cfg.Experiments[i]
		x := &a.exps[i]
		x.name, x.unit, x.salt = e.Name, e.Unit, xxhash.Sum64String(e.Salt)
		x.variants = make([]variantState, len(e.Variants))
		for j := range e.Variants {
			v := &e.Variants[j]
			x.variants[j].name, x.variants[j].policy, x.variants[j].bandit = v.Name, v.Policy, v.Bandit
			if v.Policy != PolicyStatic && v.Bandit == nil {
				spec := DefaultBanditSpec()
				x.variants[j].bandit = &spec
			}
			if v.Name == e.Control {
				x.control = j
			}
		}
		x.table = variantTable(e.Salt, e.Variants)
		x.tiers, x.regions = e.Targeting.Tiers, e.Targeting.Regions
		if len(e.Targeting.Tenants) > 0 {
			x.tenants = make(map[string]bool, len(e.Targeting.Tenants))
			for _, t := range e.Targeting.Tenants {
				x.tenants[t] = true
			}
		}
		name, salt := e.Layer, layerSalts[e.Layer]
		if name == "" {
			name, salt = "\x00"+e.Name, "layer\x00"+e.Salt
		}
		li, ok := byLayer[name]
		if !ok {
			li = len(a.layers)
			byLayer[name] = li
			a.layers = append(a.layers, layerState{unit: e.Unit, salt: xxhash.Sum64String(salt)})
		}
		a.layers[li].exps = append(a.layers[li].exps, i)
		before := used[name]
		used[name] = before + e.Traffic
		x.lo = int(math.Round(before * Buckets))
		x.hi = min(int(math.Round(used[name]*Buckets)), Buckets)
	}
	for i := range a.layers {
		l := &a.layers[i]
		l.whole = len(l.exps) == 1 && a.exps[l.exps[0]].lo == 0 && a.exps[l.exps[0]].hi == Buckets
	}
	return a, nil
}

// Config returns the configuration the Assigner was built from.
func (a *Assigner) Config() *Config { return a.cfg }

// Bucket returns the bucket of unit under salt:
//
//	xxhash64(le64(xxhash64(salt)) ‖ le64(xxhash64(unit))) mod Buckets
//
// with github.com/cespare/xxhash/v2 (XXH64, seed 0) and le64 the 8
// little-endian bytes of a uint64. Hashing the unit once and mixing it
// with each precomputed salt hash keeps Assign at one full hash per unit
// however many layers there are.
func Bucket(salt, unit string) int {
	return mix(xxhash.Sum64String(salt), xxhash.Sum64String(unit))
}

// mix returns xxhash64(le64(salt) ‖ le64(unit)) mod Buckets, the XXH64
// algorithm unrolled for a 16-byte input (a test checks it against the
// library).
func mix(salt, unit uint64) int {
	const (
		p1 = 11400714785074694791
		p2 = 14029467366897019727
		p3 = 1609587929392839161
		p4 = 9650029242287828579
		p5 = 2870177450012600261
	)
	h := uint64(p5 + 16)
	for _, lane := range [2]uint64{salt, unit} {
		h ^= bits.RotateLeft64(lane*p2, 31) * p1
		h = bits.RotateLeft64(h, 27)*p1 + p4
	}
	h ^= h >> 33
	h *= p2
	h ^= h >> 29
	h *= p3
	h ^= h >> 32
	return int(h % Buckets)
}

// variantTable maps each experiment bucket to its variant by weighted
// rendezvous hashing.
func variantTable(salt string, vs []Variant) (t [Buckets]uint8) {
	buf := make([]byte, 0, len(salt)+MaxName+8)
	for b := range Buckets {
		best, bestScore := 0, math.Inf(-1)
		for i, v := range vs {
			if !(v.Weight > 0) {
				continue
			}
			buf = append(buf[:0], salt...)
			buf = append(buf, 0)
			buf = strconv.AppendInt(buf, int64(b), 10)
			buf = append(buf, 0)
			buf = append(buf, v.Name...)
			u := (float64(xxhash.Sum64(buf)>>11) + 0.5) / (1 << 53)
			if score := -v.Weight / math.Log(u); score > bestScore {
				best, bestScore = i, score
			}
		}
		t[b] = uint8(best)
	}
	return t
}

// unitHashes holds the xxhash64 of a unit's key and tenant, each computed
// at most once per call.
type unitHashes struct {
	u                   *Unit
	key, tenant         uint64
	haveKey, haveTenant bool
}

// of returns the hash of the unit of the given kind; false when the unit
// has none (an empty key or tenant).
func (h *unitHashes) of(kind UnitKind) (uint64, bool) {
	if kind == UnitTenant {
		if h.u.Tenant == "" {
			return 0, false
		}
		if !h.haveTenant {
			h.tenant, h.haveTenant = xxhash.Sum64String(h.u.Tenant), true
		}
		return h.tenant, true
	}
	if h.u.Key == "" {
		return 0, false
	}
	if !h.haveKey {
		h.key, h.haveKey = xxhash.Sum64String(h.u.Key), true
	}
	return h.key, true
}

func (x *expState) targets(u *Unit) bool {
	if len(x.tiers) > 0 && !contains(x.tiers, u.Tier) {
		return false
	}
	if x.tenants != nil && !x.tenants[u.Tenant] {
		return false
	}
	return len(x.regions) == 0 || contains(x.regions, u.Region)
}

// inLayer returns the unit's assignment in layer l, if any; held says the
// unit was in no experiment because it is held out.
func (a *Assigner) inLayer(l *layerState, hs *unitHashes) (as Assignment, ok, held bool) {
	id, ok := hs.of(l.unit)
	if !ok {
		return Assignment{}, false, false
	}
	if a.holdout != nil && mix(a.holdout.salt, id) < a.holdout.cut {
		return Assignment{}, false, true
	}
	lb := 0
	if !l.whole {
		lb = mix(l.salt, id)
	}
	for _, i := range l.exps {
		x := &a.exps[i]
		if lb < x.lo || lb >= x.hi {
			continue
		}
		if !x.targets(hs.u) {
			return Assignment{}, false, false
		}
		b := mix(x.salt, id)
		j := int(x.table[b])
		v := &x.variants[j]
		as = Assignment{
			Experiment: x.name, Variant: v.name, Policy: v.policy, Bandit: v.bandit,
			Bucket: b, ExperimentIndex: i, VariantIndex: j,
		}
		if v.stopped.Load() {
			c := &x.variants[x.control]
			as.Policy, as.Bandit, as.Stopped = c.policy, c.bandit, true
		}
		return as, true, false
	}
	return Assignment{}, false, false
}

// AssignAppend appends the unit's assignments, at most one per layer, to
// dst in file order of the experiments, and returns the extended slice. A
// unit held out, not targeted or outside every slice gets none. With
// enough capacity in dst it does not allocate.
func (a *Assigner) AssignAppend(dst []Assignment, u Unit) []Assignment {
	n := len(dst)
	hs := unitHashes{u: &u}
	for i := range a.layers {
		if as, ok, _ := a.inLayer(&a.layers[i], &hs); ok {
			dst = append(dst, as)
			for k := len(dst) - 1; k > n && dst[k].ExperimentIndex < dst[k-1].ExperimentIndex; k-- {
				dst[k], dst[k-1] = dst[k-1], dst[k]
			}
		}
	}
	return dst
}

// Assign returns the unit's assignments; see AssignAppend, which does not
// allocate.
func (a *Assigner) Assign(u Unit) []Assignment {
	return a.AssignAppend(nil, u)
}

// Primary returns the assignment that decides the unit's budget: of the
// experiments the unit is in, the one that comes first in the file. With
// ok false the unit is in no experiment and gets the deterministic path;
// the returned Assignment then has indices -1 and says whether the unit
// was held out. It does not allocate.
func (a *Assigner) Primary(u Unit) (as Assignment, ok bool) {
	best := Assignment{ExperimentIndex: -1, VariantIndex: -1}
	hs := unitHashes{u: &u}
	for i := range a.layers {
		got, in, held := a.inLayer(&a.layers[i], &hs)
		if held {
			best.Holdout = !ok
		}
		if in && (!ok || got.ExperimentIndex < best.ExperimentIndex) {
			best, ok = got, true
		}
	}
	return best, ok
}

// Shares returns the share of the experiment's buckets each variant holds,
// in the order of the file, or nil for an unknown experiment. Over many
// units a variant's share of them converges to this, not to its weight.
func (a *Assigner) Shares(experiment string) []float64 {
	i := a.index(experiment)
	if i < 0 {
		return nil
	}
	x := &a.exps[i]
	shares := make([]float64, len(x.variants))
	for _, j := range x.table {
		shares[j]++
	}
	for j := range shares {
		shares[j] /= Buckets
	}
	return shares
}

func (a *Assigner) index(experiment string) int {
	for i := range a.exps {
		if a.exps[i].name == experiment {
			return i
		}
	}
	return -1
}

func (a *Assigner) variant(experiment, name string) (*expState, int, error) {
	if i := a.index(experiment); i >= 0 {
		x := &a.exps[i]
		for j := range x.variants {
			if x.variants[j].name == name {
				return x, j, nil
			}
		}
	}
	return nil, 0, fmt.Errorf("%w: %s/%s", ErrUnknownVariant, experiment, name)
}

// Stop makes the variant's units get the control's policy from their next
// assignment on. It takes effect at once in every goroutine. Persist the
// stop with a StopLog first, so that a restart keeps it.
func (a *Assigner) Stop(experiment, variant string) error {
	x, j, err := a.variant(experiment, variant)
	if err != nil {
		return err
	}
	if j == x.control {
		return fmt.Errorf("%w: %s/%s", ErrStopControl, experiment, variant)
	}
	x.variants[j].stopped.Store(true)
	return nil
}

// Resume undoes Stop.
func (a *Assigner) Resume(experiment, variant string) error {
	x, j, err := a.variant(experiment, variant)
	if err != nil {
		return err
	}
	x.variants[j].stopped.Store(false)
	return nil
}

// Stopped reports whether the variant is stopped; false for an unknown one.
func (a *Assigner) Stopped(experiment, variant string) bool {
	x, j, err := a.variant(experiment, variant)
	return err == nil && x.variants[j].stopped.Load()
}

// ApplyStops stops every variant the records name (typically
// StopLog.Active() on start or reload). Records of variants this
// configuration lacks are skipped and reported, joined, in the error.
func (a *Assigner) ApplyStops(stops []StopRecord) error {
	var errs []error
	for _, s := range stops {
		if s.Op != OpStop {
			continue
		}
		if err := a.Stop(s.Experiment, s.Variant); err != nil {
			errs = append(errs, err)
		}
	}
	return errors.Join(errs...)
}
