package features

import (
	"math"
	"time"
)

// ObserveN records n requests of key as n calls of Observe with o would,
// spread evenly over the span before now: the i-th (i = 1…n) at
// now − span + i·span/n, so the last one is at now. A span of 0 puts all
// of them at now. It costs the same whatever n: the decayed counters add
// geometric sums and the gap statistics take their closed form. The
// simulator feeds a key-epoch's requests with it, through the same state
// and the same vector as serving (DESIGN.md, "one code path"). o's
// ClientIP counts once and o.Outcome once, not n times. n ≤ 0 records
// nothing; n is capped at 1e9.
func (s *Store) ObserveN(key string, o Observation, n int64, span time.Duration, now time.Time) {
	if n <= 0 {
		return
	}
	r := o.request()
	t := micros(now)
	sh, h := s.shard(key)
	sh.mu.Lock()
	st := sh.upsert(h, t, s.perShard)
	if st != nil {
		st.observeN(&r, min(n, maxCount), max(0, span.Microseconds()), t)
		s.suspects.touch(st, &r, t)
	}
	sh.mu.Unlock()
	if st == nil {
		s.rejected.Add(1)
	}
}

// observeN is observe for n requests evenly spread over (t−span, t].
func (st *keyState) observeN(r *request, n, span, t int64) {
	if t < st.at { // out of order: counts as of the last update, like observe
		t, span = st.at, 0
	}
	delta := float64(span) / float64(n) // µs between requests
	first := t - int64(float64(n-1)*delta)
	gap0 := max(0, first-(st.at-int64(st.lag)))
	st.advance(t)
	st.lag = 0
	if first < st.first {
		st.first = first
	}
	// Σ_{j<n} e^{−jδ/τ}: the decayed weight at t of the n requests.
	var sums [NumWindows]float32
	for i, w := range Windows {
		sums[i] = float32(geomSum(n, delta/float64(w.Microseconds())))
	}
	for i := range st.local {
		st.local[i] += sums[i]
	}
	c := float64(st.endpoints[r.bucket])
	st.endpoints[r.bucket] += sums[w10m]
	st.entropyT += float32(xlogx(c+float64(sums[w10m])) - xlogx(c))
	st.budget += r.budget * sums[w1m]
	if r.throttled {
		st.throttled += sums[w10m]
	}
	st.cost += r.cost * sums[w10m]
	// Gaps: gap0 before the first request, then n−1 of δ.
	g := delta * 1e-6
	st.addGap(float64(gap0) * 1e-6)
	rest := n - 1
	for rest > 0 && st.reqs < gapWarmup {
		st.addGap(g)
		rest--
	}
	if rest > 0 { // weight 1/gapWarmup from here on: a geometric approach to g
		f := math.Pow(1-1.0/gapWarmup, float64(rest))
		st.gapMean = float32(g + (float64(st.gapMean)-g)*f)
		st.gapSq = float32(g*g + (float64(st.gapSq)-g*g)*f)
		st.reqs = uint8(min(int64(st.reqs)+rest, math.MaxUint8))
	}
	if r.hasIP {
		st.lastIP = uint32(r.ipHash >> 32)
		if st.sketch.add(r.ipHash) {
			st.ips = float32(st.sketch.estimate())
		}
	}
	if r.tier != TierUnknown {
		st.tier = r.tier
	}
	st.addOutcome(r.out)
}

// addGap counts one request whose gap to the previous one is g seconds,
// as observe does.
func (st *keyState) addGap(g float64) {
	if st.reqs > 0 {
		w := gapWeight[min(st.reqs, gapWarmup)]
		st.gapMean += float32(w * (g - float64(st.gapMean)))
		st.gapSq += float32(w * (g*g - float64(st.gapSq)))
	}
	if st.reqs < math.MaxUint8 {
		st.reqs++
	}
}

// geomSum returns Σ_{j<n} e^{−j·x} for x ≥ 0.
func geomSum(n int64, x float64) float64 {
	if x*float64(n) < 1e-12 {
		return float64(n)
	}
	return math.Expm1(-float64(n)*x) / math.Expm1(-x)
}
