package features

import (
	"fmt"
	"hash/maphash"
	"math"
	"math/bits"
	"sync/atomic"
	"time"
)

// Config configures a Store. Zero values take the documented defaults.
type Config struct {
	// IdleTTL is how long a key may go without an update (Observe,
	// ObserveOutcome or Merge) before Sweep drops it. Dropping a key forgets
	// all of its history, its age included: it comes back as a new key.
	// Default: 1h.
	IdleTTL time.Duration
	// Shards is the number of independently locked parts of the key space,
	// a power of two from 1 to 65536. More shards mean less lock contention
	// and shorter pauses in Sweep; each costs 128 bytes.
	// Default: 256.
	Shards int
	// MaxKeys caps the number of keys held, against a flood of made-up
	// keys. The cap is enforced per shard (MaxKeys/Shards each, rounded
	// up), so a store may refuse a key a little before it holds MaxKeys.
	// A refused key is not stored: Observe records nothing for it, Vector
	// describes it as a key never seen, and Stats counts it in Rejected.
	// Default: 0, no cap.
	MaxKeys int
}

// Defaults of Config.
const (
	DefaultIdleTTL = time.Hour
	DefaultShards  = 256
	maxShards      = 1 << 16
)

// Validate reports the first invalid field of c, naming it.
func (c Config) Validate() error {
	switch {
	case c.IdleTTL < 0:
		return fmt.Errorf("features: IdleTTL must not be negative, got %v", c.IdleTTL)
	case c.Shards < 0 || c.Shards > maxShards || bits.OnesCount(uint(c.Shards)) > 1:
		return fmt.Errorf("features: Shards must be a power of two from 1 to %d (or 0 for %d), got %d", maxShards, DefaultShards, c.Shards)
	case c.MaxKeys < 0:
		return fmt.Errorf("features: MaxKeys must not be negative, got %d", c.MaxKeys)
	}
	return nil
}

func (c Config) withDefaults() Config {
	if c.IdleTTL == 0 {
		c.IdleTTL = DefaultIdleTTL
	}
	if c.Shards == 0 {
		c.Shards = DefaultShards
	}
	return c
}

// Observation is what one decide call tells the store about a key.
type Observation struct {
	// Endpoint is the request's endpoint, e.g. "POST /v1/payments". Only
	// its bucket among 8 (by hash) is kept, for the endpoint-mix entropy.
	Endpoint string
	// ClientIP is the address the request came from; "" counts no IP.
	ClientIP string
	// Cost is the request's cost in budget units. Values below 1 count as 1
	// (Default: 1), values above 1e6 as 1e6.
	Cost int64
	// Tier is the key's tenant tier. TierUnknown (Default) keeps the last
	// known tier of the key.
	Tier Tier
	// Throttled says whether the previous decision for this key throttled
	// it. Default: false (also right for a key's first request).
	Throttled bool
	// BudgetUsed is the share of its budget the key had used at the
	// previous decision, 0 to 1; values outside are clamped, NaN counts as
	// 0. Default: 0.
	BudgetUsed float64
	// Outcome optionally carries response outcomes the gateway reported
	// with this request, as ObserveOutcome would. Default: none.
	Outcome Outcome
}

// Outcome is a batch of response outcomes for a key, as the gateway reports
// them: Requests responses of which Errors were errors and AuthFailures
// authentication failures. Negative counts count as 0, counts above 1e9 as
// 1e9, and Requests is raised to the larger of Errors and AuthFailures.
type Outcome struct {
	Requests, Errors, AuthFailures int64
}

// Stats are a Store's counters since it was made.
type Stats struct {
	// Keys is the number of keys held now.
	Keys int
	// Evicted counts keys dropped by Sweep.
	Evicted uint64
	// Rejected counts updates for new keys refused because of MaxKeys.
	Rejected uint64
}

// Store holds streaming features per API key. Keys are held by a 64-bit
// hash (maphash, seeded per store): the store keeps no key strings, and two
// keys whose hashes collide share their features (with 1M keys the chance
// of any collision is about 3e-8).
//
// Every method takes the current time explicitly; the store never reads a
// clock, starts a goroutine or does I/O. Time going backwards is tolerated:
// an update dated before a key's last update counts as of that last update.
//
// A Store is safe for concurrent use. Keys are spread over Config.Shards
// shards, each with its own mutex; a call locks one shard once, except
// Len, Stats and Sweep, which visit the shards one at a time.
type Store struct {
	seed     maphash.Seed
	ttl      int64 // µs
	mask     uint64
	perShard int
	shards   []shard
	evicted  atomic.Uint64
	rejected atomic.Uint64
	cohorts  Cohorts
	suspects suspects
}

// NewStore returns an empty store, or the error of cfg.Validate.
func NewStore(cfg Config) (*Store, error) {
	if err := cfg.Validate(); err != nil {
		return nil, err
	}
	cfg = cfg.withDefaults()
	s := &Store{
		seed:   maphash.MakeSeed(),
		ttl:    cfg.IdleTTL.Microseconds(),
		mask:   uint64(cfg.Shards - 1),
		shards: make([]shard, cfg.Shards),
	}
	for i := range s.shards {
		s.shards[i].clockSec = math.MinInt64
	}
	if cfg.MaxKeys > 0 {
		s.perShard = (cfg.MaxKeys + cfg.Shards - 1) / cfg.Shards
	}
	s.suspects.init()
	return s, nil
}

// Schema returns the schema of the vectors the store writes.
func (s *Store) Schema() Schema { return current }

func (s *Store) shard(key string) (*shard, uint64) {
	h := maphash.String(s.seed, key)
	return &s.shards[h&s.mask], h
}

// Observe records one request of key at now. The update is synchronous: a
// Vector call that follows sees it.
func (s *Store) Observe(key string, o Observation, now time.Time) {
	r := o.request()
	t := micros(now)
	sh, h := s.shard(key)
	sh.mu.Lock()
	st := sh.upsert(h, t, s.perShard)
	if st != nil {
		st.observe(&r, t)
		s.suspects.touch(st, &r, t)
	}
	sh.mu.Unlock()
	if st == nil {
		s.rejected.Add(1)
	}
}

// ObserveAndVector is Observe followed by Vector, with one lock and one
// lookup: the vector includes this request. It allocates only when dst
// lacks capacity for Dim more elements.
func (s *Store) ObserveAndVector(key string, o Observation, now time.Time, dst []float64) []float64 {
	t := micros(now)
	sh, h := s.shard(key)
	sh.mu.Lock()
	st := sh.upsert(h, t, s.perShard)
	// Reducing o after the lookup lets the CPU hash while the key's state
	// is on its way from memory.
	r := o.request()
	sin, cos := sh.hourOfDay(t)
	if st != nil {
		st.observe(&r, t)
		s.suspects.touch(st, &r, t)
		dst = st.vectorAt(t, sin, cos, &s.cohorts, dst)
	}
	sh.mu.Unlock()
	if st == nil {
		s.rejected.Add(1)
		c := newState(t)
		dst = c.vectorAt(t, sin, cos, &s.cohorts, dst)
	}
	return dst
}

// ObserveOutcome records response outcomes of key reported by the gateway
// at now; they feed error_rate and auth_failure_rate. An unknown key is
// added, so that a key failing authentication before any decision is
// still tracked.
func (s *Store) ObserveOutcome(key string, o Outcome, now time.Time) {
	out := o.reduce()
	t := micros(now)
	sh, h := s.shard(key)
	sh.mu.Lock()
	st := sh.upsert(h, t, s.perShard)
	if st != nil {
		st.advance(t)
		st.addOutcome(out)
	}
	sh.mu.Unlock()
	if st == nil {
		s.rejected.Add(1)
	}
}

// Vector appends key's feature vector at now to dst and returns the
// extended slice: CurrentSchema().Dim() elements in schema order, each finite
// and within its feature's bounds. A key not held is described as a key
// seen for the first time at now. It does not change the store, and it
// allocates only when dst lacks capacity.
func (s *Store) Vector(key string, now time.Time, dst []float64) []float64 {
	t := micros(now)
	c, _, sin, cos := s.load(key, t)
	return c.vectorAt(t, sin, cos, &s.cohorts, dst)
}

// load returns a copy of key's state, or a new state at t, whether the
// key is held, and the time of day of t.
func (s *Store) load(key string, t int64) (c keyState, ok bool, sin, cos float64) {
	sh, h := s.shard(key)
	sh.mu.Lock()
	st := sh.lookup(h)
	if st != nil {
		c = *st
	}
	sin, cos = sh.hourOfDay(t)
	sh.mu.Unlock()
	if st == nil {
		return newState(t), false, sin, cos
	}
	return c, true, sin, cos
}

// vectorAt brings a state to t and appends its scaled features, given the
// time of day of t.
func (c *keyState) vectorAt(t int64, sin, cos float64, co *Cohorts, dst []float64) []float64 {
	c.advance(t)
	var raw [Dim]float64
	c.raw(t, sin, cos, co, &raw)
	return scale(dst, &raw)
}

// Value is one feature of a key, raw and scaled.
type Value struct {
	Name   string  `json:"name"`
	Unit   string  `json:"unit"`
	Raw    float64 `json:"raw"`
	Scaled float64 `json:"scaled"`
}

// Values are a key's features in schema order, for explaining a decision.
type Values []Value

// Get returns the named feature.
func (v Values) Get(name string) (Value, bool) {
	for _, x := range v {
		if x.Name == name {
			return x, true
		}
	}
	return Value{}, false
}

// Snapshot returns key's features at now, raw and scaled, and whether the
// store holds the key. The scaled values are exactly Vector's.
func (s *Store) Snapshot(key string, now time.Time) (Values, bool) {
	t := micros(now)
	c, ok, sin, cos := s.load(key, t)
	if !ok {
		return nil, false
	}
	c.advance(t)
	var raw [Dim]float64
	c.raw(t, sin, cos, &s.cohorts, &raw)
	var scaled [Dim]float64
	scale(scaled[:0], &raw)
	vs := make(Values, Dim)
	for i := range vs {
		f := &schemaV2[i]
		vs[i] = Value{Name: f.Name, Unit: f.Unit, Raw: raw[i], Scaled: scaled[i]}
	}
	return vs, true
}

// Len returns the number of keys held.
func (s *Store) Len() int {
	n := 0
	for i := range s.shards {
		sh := &s.shards[i]
		sh.mu.Lock()
		n += sh.n
		sh.mu.Unlock()
	}
	return n
}

// Stats returns the store's counters.
func (s *Store) Stats() Stats {
	return Stats{Keys: s.Len(), Evicted: s.evicted.Load(), Rejected: s.rejected.Load()}
}

// Sweep drops every key not updated for longer than Config.IdleTTL before
// now and returns how many it dropped. It locks one shard at a time; a
// shard whose slab is less than half used afterwards is compacted, so
// memory held for a burst of keys is given back.
func (s *Store) Sweep(now time.Time) int {
	cutoff := micros(now) - s.ttl
	dropped := 0
	for i := range s.shards {
		sh := &s.shards[i]
		sh.mu.Lock()
		dropped += sh.sweep(cutoff)
		sh.mu.Unlock()
	}
	s.evicted.Add(uint64(dropped))
	return dropped
}
