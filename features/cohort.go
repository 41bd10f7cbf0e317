package features

import (
	"math"
	"sync"
	"sync/atomic"
)

// Cohorts place a key among the keys of its tier (schema v2): where its
// hourly rate and its distinct client addresses fall in their tier's
// distribution over the last hour or so, as a quantile in [0, 1]. A
// quantile is scale-free: it needs no absolute threshold, it follows a
// tier that grows or a diurnal cycle, and it tells a key that keeps its
// pace at night, when its cohort sleeps, from the cohort.
//
// Each tier's distribution is a histogram of log2 values, decayed with a
// 1 h time constant, fed once per key-epoch by stage 2 (Fold) — not per
// request, so a key weighs the same whatever its volume. Vector reads an
// immutable copy of the cumulative counts, rebuilt once a second (sooner
// while a cohort fills up), so it never waits on a fold.
type Cohorts struct {
	tiers [numTiers]cohortPair
}

const numTiers = int(TierEnterprise) + 1

type cohortPair struct{ rate, ips cohortHist }

// cohortBuckets covers log2 values in [cohortLo, cohortHi) in half steps:
// rates from 1/256 to 2^24 requests a minute, addresses from 1 to 2^24.
const (
	cohortBuckets = 64
	cohortLo      = -8.0
	cohortStep    = 0.5
	cohortTau     = 3600e6 // µs
	cohortMinKeys = 20     // fewer (decayed) keys in a tier: the quantile is 0.5
	cohortRebuild = 1e6    // µs between rebuilds of the cumulative copy
)

type cohortHist struct {
	mu     sync.Mutex
	at     int64 // µs: when counts were last decayed
	built  int64 // µs: when cdf was last rebuilt
	since  int   // folds since
	counts [cohortBuckets]float64
	cdf    atomic.Pointer[cohortCDF]
}

// cohortCDF is cum[i] = Σ counts[<i], and the total.
type cohortCDF struct {
	cum   [cohortBuckets + 1]float64
	total float64
}

func cohortBucket(v float64) (int, float64) {
	x := (math.Log2(max(v, 1e-12)) - cohortLo) / cohortStep
	switch {
	case !(x > 0):
		return 0, 0
	case x >= cohortBuckets:
		return cohortBuckets - 1, 1
	}
	i := int(x)
	return i, x - float64(i)
}

func (h *cohortHist) fold(v float64, t int64) {
	i, _ := cohortBucket(v)
	h.mu.Lock()
	defer h.mu.Unlock()
	if t > h.at {
		d := expNeg(float64(t-h.at) / cohortTau)
		for j := range h.counts {
			h.counts[j] *= d
		}
		h.at = t
	}
	h.counts[i]++
	h.since++
	// Rebuilt once a second, or sooner while the folds since the last
	// build are a large share of the whole (a cohort filling up).
	if c := h.cdf.Load(); c == nil || t-h.built >= cohortRebuild || float64(h.since)*8 >= c.total+8 {
		c := &cohortCDF{}
		for j, n := range h.counts {
			c.cum[j+1] = c.cum[j] + n
		}
		c.total = c.cum[cohortBuckets]
		h.cdf.Store(c)
		h.built, h.since = t, 0
	}
}

// quantile is v's mid-rank among the folded values, interpolated within
// its bucket; 0.5 while the tier has too few keys to say.
func (h *cohortHist) quantile(v float64) float64 {
	c := h.cdf.Load()
	if c == nil || c.total < cohortMinKeys {
		return 0.5
	}
	i, f := cohortBucket(v)
	below := c.cum[i] + f*(c.cum[i+1]-c.cum[i])
	return max(0, min(below/c.total, 1))
}

// Fold adds a key's vector (of this schema) to its tier's cohorts at now:
// stage 2 calls it once per key-epoch, after scoring the vector. The
// vector's own cohort features are not read.
func (c *Cohorts) Fold(x []float64, now int64) {
	if c == nil || len(x) < Dim {
		return
	}
	tier := TierUnknown
	switch {
	case x[idxTierFree] > 0.5:
		tier = TierFree
	case x[idxTierPro] > 0.5:
		tier = TierPro
	case x[idxTierEnterprise] > 0.5:
		tier = TierEnterprise
	}
	p := &c.tiers[tier]
	p.rate.fold(unLog(x[idxRate1h], invRate), now)
	p.ips.fold(unLog(x[idxDistinctIPs], invIPs), now)
}

// unLog inverts logScale: the raw value of a scaled Log1p feature.
func unLog(scaled, inv float64) float64 { return math.Expm1(scaled / inv) }

func (c *Cohorts) quantiles(tier Tier, rate, ips float64) (float64, float64) {
	if c == nil || int(tier) >= numTiers {
		return 0.5, 0.5
	}
	p := &c.tiers[tier]
	return p.rate.quantile(rate), p.ips.quantile(ips)
}
