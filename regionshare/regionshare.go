package regionshare

import (
	"encoding/json"
	"errors"
	"fmt"
	"math"
	"regexp"
	"sort"
)

// Multi-region budgets. Each region enforces its share of a key's budget
// against its own store; the shares follow the regions' recent traffic for
// the key, which every serving instance publishes as a Heartbeat each tick.
//
// Ticks are aligned to the wall clock (tick k starts at k × every), and the
// shares of tick k are computed from the heartbeats of tick k−1 only. So as
// long as a heartbeat reaches every region within one tick (delivery lag +
// clock skew < every), every region computes its share of tick k from the
// same numbers, and the shares of the live regions sum to exactly 1:
//
//	share(r) = m + (1 − L·m) · c(r)/C     (C > 0; 1/L when no region counted the key)
//
// with L live regions, c(r) region r's recent (decayed) count, C their sum
// and m the floor share (config regions.min_share). A region that sees a
// key first still gets m, never 0.
//
// The budget bound this gives, for R regions, a key of Rate per Period and
// Burst: over any window W, the regions together admit at most
//
//	(1+ε)·Rate·W + R·Burst + R
//
// where ε = 0 while every heartbeat arrives within a tick (the views agree),
// R·Burst covers each region holding a full bucket of its share when shares
// move (a region's bucket is full in time units whatever its share), and R
// is Limit.Scale's rounding. Leases inside a region add their own bound
// (LeasedStore). A region cut off from the topic (it does not read its own
// heartbeats back) freezes its last shares while the others, after
// dead_after, take its share over: during such a partition ε ≤ the cut-off
// region's share. TestRegionBudgetBound checks the bound in simulation.

// MaxHeartbeatKeys caps the keys of one heartbeat.
const MaxHeartbeatKeys = 50_000

// Heartbeat is what one serving instance publishes each tick: that it is
// alive, and its recent request counts of its hottest keys.
type Heartbeat struct {
	Region   string             `json:"region"`
	Instance string             `json:"instance"`
	Tick     int64              `json:"tick"`     // unix time / every
	EveryMS  int64              `json:"every_ms"` // the publisher's tick length
	Counts   map[string]float64 `json:"counts"`   // key → decayed request count
}

// ErrBadHeartbeat is returned by DecodeHeartbeat for a message that is not
// a valid heartbeat.
var ErrBadHeartbeat = errors.New("regionshare: bad region heartbeat")

var heartbeatName = regexp.MustCompile(`^[A-Za-z0-9._:-]{1,128}$`)

// Validate reports whether h can be used.
func (h *Heartbeat) Validate() error {
	switch {
	case !heartbeatName.MatchString(h.Region):
		return fmt.Errorf("%w: region %q", ErrBadHeartbeat, h.Region)
	case !heartbeatName.MatchString(h.Instance):
		return fmt.Errorf("%w: instance %q", ErrBadHeartbeat, h.Instance)
	case h.Tick <= 0:
		return fmt.Errorf("%w: tick %d", ErrBadHeartbeat, h.Tick)
	case h.EveryMS < 1 || h.EveryMS > 3_600_000:
		return fmt.Errorf("%w: every_ms %d", ErrBadHeartbeat, h.EveryMS)
	case len(h.Counts) > MaxHeartbeatKeys:
		return fmt.Errorf("%w: %d keys, at most %d", ErrBadHeartbeat, len(h.Counts), MaxHeartbeatKeys)
	}
	for k, c := range h.Counts {
		if k == "" || len(k) > 1024 {
			return fmt.Errorf("%w: a key of %d bytes", ErrBadHeartbeat, len(k))
		}
		if !(c >= 0) || math.IsInf(c, 0) {
			return fmt.Errorf("%w: count %v for %q", ErrBadHeartbeat, c, k)
		}
	}
	return nil
}

// EncodeHeartbeat returns h as JSON.
func EncodeHeartbeat(h *Heartbeat) ([]byte, error) {
	if err := h.Validate(); err != nil {
		return nil, err
	}
	return json.Marshal(h)
}

// DecodeHeartbeat parses and validates one heartbeat message. Errors wrap
// ErrBadHeartbeat.
func DecodeHeartbeat(data []byte) (*Heartbeat, error) {
	var h Heartbeat
	if err := json.Unmarshal(data, &h); err != nil {
		return nil, fmt.Errorf("%w: %w", ErrBadHeartbeat, err)
	}
	if err := h.Validate(); err != nil {
		return nil, err
	}
	return &h, nil
}

// RegionShare is one region's share of a budget: the formula above.
// own is the region's recent count of the key, total the live regions'
// sum, live how many regions are live (this one included) and minShare the
// floor.
func RegionShare(own, total float64, live int, minShare float64) float64 {
	if live <= 1 {
		return 1
	}
	if !(total > 0) {
		return 1 / float64(live)
	}
	m := min(minShare, 1/float64(live))
	return m + (1-float64(live)*m)*min(own/total, 1)
}

// ShareTable is the shares one region enforces during one tick: one per
// key that some region counted, and Default for every other key. It is
// immutable once built, so it is safe for concurrent reads.
type ShareTable struct {
	Tick    int64
	Live    int // live regions, this one included
	Default float64
	shares  map[string]float64
}

// Of returns the share of key.
func (t *ShareTable) Of(key string) float64 {
	if s, ok := t.shares[key]; ok {
		return s
	}
	return t.Default
}

// Len is the number of keys with a share of their own.
func (t *ShareTable) Len() int { return len(t.shares) }

// FixedShares returns a table giving every key share s.
func FixedShares(tick int64, s float64) *ShareTable {
	return &ShareTable{Tick: tick, Live: 1, Default: s}
}

// RegionBook gathers heartbeats and computes a region's ShareTable. It
// keeps each instance's three latest heartbeats, so a heartbeat of the
// next tick that arrives early (clock skew) does not hide the one in use.
// It is not safe for concurrent use: serving/regions.go guards it.
type RegionBook struct {
	self      string
	minShare  float64
	deadTicks int64 // a region whose latest heartbeat is older than this many ticks is dead
	insts     map[string]*instanceBeats
}

type instanceBeats struct {
	region string
	beats  [3]*Heartbeat // newest first
}

// NewRegionBook returns an empty book for region self. deadTicks is
// dead_after / every, at least 1.
func NewRegionBook(self string, minShare float64, deadTicks int64) *RegionBook {
	return &RegionBook{self: self, minShare: minShare, deadTicks: max(deadTicks, 1), insts: map[string]*instanceBeats{}}
}

// Add records h; a heartbeat older than the three kept is ignored, and a
// second one of the same tick replaces the first.
func (b *RegionBook) Add(h *Heartbeat) {
	id := h.Region + "/" + h.Instance
	ib := b.insts[id]
	if ib == nil {
		ib = &instanceBeats{region: h.Region}
		b.insts[id] = ib
	}
	for i, old := range ib.beats {
		switch {
		case old == nil || h.Tick > old.Tick:
			copy(ib.beats[i+1:], ib.beats[i:])
			ib.beats[i] = h
			return
		case h.Tick == old.Tick:
			ib.beats[i] = h
			return
		}
	}
}

// at returns the instance's latest heartbeat of a tick before tick.
func (ib *instanceBeats) at(tick int64) *Heartbeat {
	for _, h := range ib.beats {
		if h != nil && h.Tick < tick {
			return h
		}
	}
	return nil
}

// Heard reports whether this region has a heartbeat of its own (read back
// from the topic) from one of the deadTicks ticks before tick: whether it
// is connected.
func (b *RegionBook) Heard(tick int64) bool {
	for _, ib := range b.insts {
		if ib.region == b.self {
			if h := ib.at(tick); h != nil && h.Tick >= tick-b.deadTicks {
				return true
			}
		}
	}
	return false
}

// Live returns the live regions as of tick, sorted: those with a heartbeat
// from the deadTicks ticks before it.
func (b *RegionBook) Live(tick int64) []string {
	set := map[string]bool{}
	for _, ib := range b.insts {
		if h := ib.at(tick); h != nil && h.Tick >= tick-b.deadTicks {
			set[ib.region] = true
		}
	}
	out := make([]string, 0, len(set))
	for r := range set {
		out = append(out, r)
	}
	sort.Strings(out)
	return out
}

// Shares computes this region's table for tick from the live instances'
// heartbeats of earlier ticks, and forgets instances dead for long.
func (b *RegionBook) Shares(tick int64) *ShareTable {
	live := map[string]bool{}
	var beats []*Heartbeat
	for id, ib := range b.insts {
		h := ib.at(tick)
		if ib.beats[0].Tick < tick-4*b.deadTicks {
			delete(b.insts, id)
			continue
		}
		if h == nil || h.Tick < tick-b.deadTicks {
			continue
		}
		live[ib.region] = true
		beats = append(beats, h)
	}
	live[b.self] = true
	n := len(live)
	own := map[string]float64{}
	total := map[string]float64{}
	for _, h := range beats {
		for k, c := range h.Counts {
			total[k] += c
			if h.Region == b.self {
				own[k] += c
			}
		}
	}
	t := &ShareTable{Tick: tick, Live: n, Default: 1 / float64(n), shares: make(map[string]float64, len(total))}
	for k, c := range total {
		t.shares[k] = RegionShare(own[k], c, n, b.minShare)
	}
	return t
}
