package features

import (
	"math"
	"time"
)

// Windows are the time constants of the decayed request counters, in the
// order of the rate features and of [Record.Requests].
var Windows = [NumWindows]time.Duration{10 * time.Second, time.Minute, 10 * time.Minute, time.Hour, 24 * time.Hour}

// NumWindows is the number of rate windows.
const NumWindows = 5

// Reciprocals of the time constants in µs: multiplying is faster than
// dividing.
const (
	inv1m  = 1 / 60e6
	inv10m = 1 / 600e6
	inv1h  = 1 / 3600e6
	inv1d  = 1 / 86400e6
)

// Which window's decay the other decayed values use.
const (
	w1m  = 1
	w10m = 2
	w1h  = 3
	w1d  = 4
)

// Bounds on inputs, so that sums stay finite in float32.
const (
	maxCost  = 1e6 // per request
	maxCount = 1e9 // per Outcome field
)

// gapWarmup is the number of gaps after which the gap statistics become an
// exponentially weighted mean with weight 1/gapWarmup; before, they are a
// plain running mean, so that the first few gaps are not over-weighted.
const gapWarmup = 16

// gapWeight[k] is the weight of the k-th gap: 1/min(k, gapWarmup).
var gapWeight = func() (w [gapWarmup + 1]float64) {
	for k := 1; k <= gapWarmup; k++ {
		w[k] = 1 / float64(k)
	}
	return w
}()

// keyState is everything the store keeps about one key: 184 bytes. Decayed
// values are float32 (7 significant digits is plenty for features) and all
// are expressed at the instant at; bringing them to a later instant
// multiplies each by exp(-Δt/τ) of its time constant τ. A counter with time
// constant τ weighs each event by exp(-age/τ): its sum is a count over
// roughly the last τ, and sum/τ is a rate.
type keyState struct {
	at    int64  // µs: the instant the decayed values are expressed at; the last update
	first int64  // µs: first seen, locally or by a merged instance
	lag   uint32 // µs from the last local request to at, saturating at maxLag

	// entropyT is Σ c·ln c over the endpoint buckets c, kept up to date
	// so that the entropy costs one logarithm instead of eight.
	entropyT float32

	local  [NumWindows]float32 // this instance's requests, τ = Windows[i]
	remote [NumWindows]float32 // other instances' requests, replaced by Merge

	endpoints [endpointBuckets]float32 // requests per endpoint bucket, τ = 10 min
	budget    float32                  // Σ BudgetUsed, τ = 1 min
	throttled float32                  // throttled previous decisions, τ = 10 min
	cost      float32                  // Σ cost, τ = 10 min
	outReq    float32                  // gateway-reported responses, τ = 10 min
	outErr    float32                  // … of which errors
	outAuth   float32                  // … of which authentication failures

	gapMean float32 // mean gap between local requests, s
	gapSq   float32 // mean squared gap, s²
	ips     float32 // the sketch's estimate, cached

	label  float32 // label state: +1 abusive, -1 cleared, τ = 1 d
	susp   float32 // suspicion from a shared address, τ = 1 d
	lastIP uint32  // the last client address's hash, for Label to spread suspicion

	sketch sketch // client IPs (HyperLogLog)
	reqs   uint8  // local requests, saturating at 255
	tier   Tier
}

// maxLag caps the gap between two requests at about 71 minutes: gaps that
// long tell burstiness nothing more, and idle keys are usually gone by then.
const maxLag = math.MaxUint32

// The range of times the store works with, Unix microseconds: years 1 to
// 9999. Times outside are clamped, so that no difference of two times
// overflows.
const (
	minMicros = -62135596800 * 1e6
	maxMicros = 253402300799 * 1e6
)

// micros returns now in Unix microseconds, clamped to [minMicros,
// maxMicros].
func micros(now time.Time) int64 {
	switch sec := now.Unix(); {
	case sec < minMicros/1e6:
		return minMicros
	case sec > maxMicros/1e6:
		return maxMicros
	}
	return now.UnixMicro()
}

// newState returns the state of a key first seen at t.
func newState(t int64) keyState { return keyState{at: t, first: t} }

// expNeg returns e^-x for x ≥ 0 (0 for NaN) with a relative error below
// 1e-8, faster than math.Exp: 2^-k·e^-r with |r| ≤ ln2/2 and a degree-7
// Taylor polynomial for e^-r, evaluated by Estrin's scheme for a short
// dependency chain.
func expNeg(x float64) float64 {
	if !(x < 700) {
		return 0
	}
	k := float64(int64(x*math.Log2E + 0.5)) // round(x·log₂e), x ≥ 0
	r := x - k*math.Ln2
	r2 := r * r
	r4 := r2 * r2
	p := (1 - r) + r2*(1.0/2-r*(1.0/6)) + r4*((1.0/24-r*(1.0/120))+r2*(1.0/720-r*(1.0/5040)))
	return p * math.Float64frombits(uint64(1023-int64(k))<<52)
}

// fastLog returns ln x for a positive normal x with an absolute error
// below 1e-9, faster than math.Log and without a division: x = m·2^e with
// m in [1, 2), m = c·(1+u) for the centre c of m's 1/64-wide bucket (ln c
// and 1/c from a table, |u| < 1/128), and ln(1+u) by three terms of its
// series. It returns a finite value for 0 and +Inf, which callers clamp.
func fastLog(x float64) float64 {
	b := math.Float64bits(x)
	e := float64(int64(b>>52) - 1023)
	c := &logTable[(b>>(52-logTableBits))&(1<<logTableBits-1)]
	u := math.Float64frombits(b&(1<<52-1)|1023<<52)*c.inv - 1
	return e*math.Ln2 + c.ln + u*(1-u*(1.0/2-u*(1.0/3)))
}

const logTableBits = 6

var logTable = func() (t [1 << logTableBits]struct{ inv, ln float64 }) {
	for j := range t {
		c := 1 + (float64(j)+0.5)/(1<<logTableBits)
		t[j].inv, t[j].ln = 1/c, math.Log(c)
	}
	return t
}()

// flush converts a decay factor to float32, 0 when too small to matter.
func flush(d float64) float32 {
	if d < 1e-30 {
		return 0
	}
	return float32(d)
}

// decays returns exp(-dt/τ) for the time constants τ of Windows. The
// 10 s factor is the 6th power of the 1 min one and the 10 min factor the
// 6th power of the 1 h one, so three exponentials do for all five.
func decays(dt float64) [NumWindows]float32 {
	m1 := expNeg(dt * inv1m)
	h := expNeg(dt * inv1h)
	m2, h2 := m1*m1, h*h
	s10 := m2 * m2 * m2 // m1⁶
	m10 := h2 * h2 * h2 // h⁶
	return [NumWindows]float32{flush(s10), flush(m1), flush(m10), flush(h), flush(expNeg(dt * inv1d))}
}

// mulFlush multiplies *x by d and flushes a result too small to matter to
// 0: a value decayed step by step would otherwise end up a denormal, which
// costs about a hundred cycles a multiplication.
func mulFlush(x *float32, d float32) {
	v := *x * d
	if v < 1e-30 {
		v = 0
	}
	*x = v
}

// advance brings every decayed value to t. A t before st.at (a clock going
// backwards, events out of order) changes nothing: the values stay
// expressed at st.at.
func (st *keyState) advance(t int64) {
	if t <= st.at {
		return
	}
	dt := t - st.at
	st.at = t
	st.lag = uint32(min(int64(st.lag)+dt, maxLag))
	d := decays(float64(dt))
	sum10 := st.local[w10m] // before it decays
	for i := range d {
		mulFlush(&st.local[i], d[i])
		mulFlush(&st.remote[i], d[i])
	}
	// Scaling every bucket c by d turns Σ c·ln c into d·(Σ c·ln c +
	// ln d·Σ c), with ln d = -dt/τ and Σ c = local[w10m], which counts
	// the same requests with the same decay.
	if d10 := d[w10m]; d10 == 0 {
		st.entropyT = 0
		st.endpoints = [endpointBuckets]float32{}
	} else {
		st.entropyT = float32(float64(d10) * (float64(st.entropyT) - float64(sum10)*float64(dt)*inv10m))
		for i := range st.endpoints {
			mulFlush(&st.endpoints[i], d10)
		}
	}
	mulFlush(&st.budget, d[w1m])
	mulFlush(&st.throttled, d[w10m])
	mulFlush(&st.cost, d[w10m])
	mulFlush(&st.outReq, d[w10m])
	mulFlush(&st.outErr, d[w10m])
	mulFlush(&st.outAuth, d[w10m])
	mulFlush(&st.susp, d[w1d])
	if l := st.label * d[w1d]; l > -1e-30 && l < 1e-30 {
		st.label = 0
	} else {
		st.label = l
	}
}

// request is an Observation reduced to what keyState needs; the hashing
// is done before taking the shard lock.
type request struct {
	bucket    uint8
	hasIP     bool
	ipHash    uint64
	cost      float32
	budget    float32
	throttled bool
	tier      Tier
	out       outcome
}

type outcome struct{ req, err, auth float32 }

func (o *Observation) request() request {
	r := request{
		bucket:    endpointBucket(hashString(o.Endpoint)),
		cost:      float32(max(1, min(o.Cost, maxCost))),
		throttled: o.Throttled,
		out:       o.Outcome.reduce(),
	}
	if o.ClientIP != "" {
		r.hasIP, r.ipHash = true, hashString(o.ClientIP)
	}
	if b := o.BudgetUsed; b > 0 { // false for NaN
		r.budget = float32(min(b, 1))
	}
	if o.Tier <= TierEnterprise {
		r.tier = o.Tier
	}
	return r
}

func (o Outcome) reduce() outcome {
	clamp := func(v int64) int64 { return max(0, min(v, maxCount)) }
	e, a := clamp(o.Errors), clamp(o.AuthFailures)
	n := max(clamp(o.Requests), e, a)
	return outcome{req: float32(n), err: float32(e), auth: float32(a)}
}

// xlogx returns x·ln x, 0 for x = 0.
func xlogx(x float64) float64 {
	if x <= 0 {
		return 0
	}
	return x * fastLog(x)
}

// observe records one local request at t.
func (st *keyState) observe(r *request, t int64) {
	// The gap to the previous request, 0 if this one is out of order.
	gap := max(0, t-(st.at-int64(st.lag)))
	if t < st.at {
		st.lag = uint32(min(int64(st.lag), st.at-t))
	} else {
		st.advance(t)
		st.lag = 0
	}
	if t < st.first {
		st.first = t
	}
	if st.reqs > 0 {
		g := float64(gap) * 1e-6
		w := gapWeight[min(st.reqs, gapWarmup)]
		st.gapMean += float32(w * (g - float64(st.gapMean)))
		st.gapSq += float32(w * (g*g - float64(st.gapSq)))
	}
	if st.reqs < math.MaxUint8 {
		st.reqs++
	}
	for i := range st.local {
		st.local[i]++
	}
	c := float64(st.endpoints[r.bucket])
	st.endpoints[r.bucket]++
	st.entropyT += float32(xlogx(c+1) - xlogx(c))
	st.budget += r.budget
	if r.throttled {
		st.throttled++
	}
	st.cost += r.cost
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

func (st *keyState) addOutcome(o outcome) {
	st.outReq += o.req
	st.outErr += o.err
	st.outAuth += o.auth
}

// recip returns 1/den for a decayed counter, 0 when den is too small for
// a quotient to mean anything.
func recip(den float32) float64 {
	if den < 1e-9 {
		return 0
	}
	return 1 / float64(den)
}

// share returns num·inv clamped to [0, 1], against float32 rounding.
func share(num float32, inv float64) float64 {
	return max(0, min(float64(num)*inv, 1))
}

// raw writes the raw value of every feature of st at t into out, given
// the time of day of t; st must have been advanced to t (or be ahead of
// it).
func (st *keyState) raw(t int64, sin, cos float64, co *Cohorts, out *[Dim]float64) {
	out[idxRate10s] = float64(st.local[0]+st.remote[0]) * 6 // per 10 s → per min
	out[idxRate1m] = float64(st.local[1] + st.remote[1])
	out[idxRate10m] = float64(st.local[2]+st.remote[2]) * (1.0 / 10)
	out[idxRate1h] = float64(st.local[3]+st.remote[3]) * (1.0 / 60)
	out[idxBurstiness] = st.burstiness()
	out[idxEndpointEntropy] = st.entropy()
	out[idxDistinctIPs] = float64(st.ips)
	out[idxBudgetUsed] = share(st.budget, recip(st.local[w1m]))
	inv10m := recip(st.local[w10m])
	out[idxThrottledShare] = share(st.throttled, inv10m)
	out[idxCostPerRequest] = float64(st.cost) * inv10m
	invOut := recip(st.outReq)
	out[idxErrorRate] = share(st.outErr, invOut)
	out[idxAuthFailureRate] = share(st.outAuth, invOut)
	out[idxKeyAge] = max(0, float64(t-st.first)*(1/3.6e9))
	out[idxHourSin], out[idxHourCos] = sin, cos
	out[idxTierFree], out[idxTierPro], out[idxTierEnterprise] = 0, 0, 0
	if st.tier != TierUnknown {
		out[idxTierFree+int(st.tier)-1] = 1
	}
	out[idxRate1d] = float64(st.local[w1d]+st.remote[w1d]) * (1.0 / 1440)
	// A decayed count over τ is a rate once the key is older than τ; a
	// younger key's count covers only its age, so each rate is over the
	// shorter of the two, and a new key's change is 0, not a jump.
	age := max(0, float64(t-st.first))
	perHour := float64(st.local[w1h]+st.remote[w1h]) / (60 * max(-math.Expm1(-age*inv1h), 1e-9))
	perDay := float64(st.local[w1d]+st.remote[w1d]) / (1440 * max(-math.Expm1(-age*inv1d), 1e-9))
	out[idxRateChange] = math.Log2((perHour + 0.01) / (perDay + 0.01))
	out[idxCohortRate], out[idxCohortIPs] = co.quantiles(st.tier, out[idxRate1h], float64(st.ips))
	out[idxLabelState] = float64(st.label)
	out[idxIPSuspicion] = float64(st.susp)
}

// burstiness is (σ-μ)/(σ+μ) of the gaps (Goh & Barabási 2008), 0 until
// there are two gaps or while every gap is 0 (one parallel burst).
func (st *keyState) burstiness() float64 {
	if st.reqs < 3 {
		return 0
	}
	mu := float64(st.gapMean)
	sigma := math.Sqrt(max(0, float64(st.gapSq)-mu*mu))
	if sigma+mu < 1e-9 {
		return 0
	}
	return (sigma - mu) / (sigma + mu)
}

// entropy is the Shannon entropy of the endpoint buckets over ln 8:
// H = ln S - (Σ c·ln c)/S with S = Σ c = local[w10m].
func (st *keyState) entropy() float64 {
	sum := float64(st.local[w10m])
	if sum < 1e-6 {
		return 0
	}
	h := fastLog(sum) - float64(st.entropyT)/sum
	return max(0, min(h*(1/math.Ln2/3), 1)) // ln 8 = 3·ln 2
}

const dayMicros = 86_400_000_000

// hourOfDay returns sin and cos of the UTC time of day of t as an angle.
func hourOfDay(t int64) (sin, cos float64) {
	x := t % dayMicros
	if x < 0 {
		x += dayMicros
	}
	return math.Sincos(2 * math.Pi * float64(x) / dayMicros)
}

// scale appends the scaled raw values to dst; it computes what
// Feature.Scale does, faster: the loop over the schema is written out. It
// allocates only when dst lacks capacity.
func scale(dst []float64, raw *[Dim]float64) []float64 {
	n := len(dst)
	if cap(dst)-n < Dim {
		dst = append(dst, make([]float64, Dim)...)
	}
	dst = dst[:n+Dim]
	out := (*[Dim]float64)(dst[n:])
	out[idxRate10s] = logScale(raw[idxRate10s], invRate)
	out[idxRate1m] = logScale(raw[idxRate1m], invRate)
	out[idxRate10m] = logScale(raw[idxRate10m], invRate)
	out[idxRate1h] = logScale(raw[idxRate1h], invRate)
	out[idxBurstiness] = clamp(raw[idxBurstiness], -1, 1)
	out[idxEndpointEntropy] = clamp(raw[idxEndpointEntropy], 0, 1)
	out[idxDistinctIPs] = logScale(raw[idxDistinctIPs], invIPs)
	out[idxBudgetUsed] = clamp(raw[idxBudgetUsed], 0, 1)
	out[idxThrottledShare] = clamp(raw[idxThrottledShare], 0, 1)
	out[idxErrorRate] = clamp(raw[idxErrorRate], 0, 1)
	out[idxAuthFailureRate] = clamp(raw[idxAuthFailureRate], 0, 1)
	out[idxCostPerRequest] = logScale(raw[idxCostPerRequest], invCost)
	out[idxKeyAge] = logScale(raw[idxKeyAge], invAge)
	out[idxHourSin] = clamp(raw[idxHourSin], -1, 1)
	out[idxHourCos] = clamp(raw[idxHourCos], -1, 1)
	out[idxTierFree] = clamp(raw[idxTierFree], 0, 1)
	out[idxTierPro] = clamp(raw[idxTierPro], 0, 1)
	out[idxTierEnterprise] = clamp(raw[idxTierEnterprise], 0, 1)
	out[idxRate1d] = logScale(raw[idxRate1d], invRate)
	out[idxRateChange] = clamp(raw[idxRateChange]*(1.0/maxRateChange), -1, 1)
	out[idxCohortRate] = clamp(raw[idxCohortRate], 0, 1)
	out[idxCohortIPs] = clamp(raw[idxCohortIPs], 0, 1)
	out[idxLabelState] = clamp(raw[idxLabelState], -1, 1)
	out[idxIPSuspicion] = clamp(raw[idxIPSuspicion], 0, 1)
	return dst
}

// 1/ln(1+Max) of the Log1p features.
var (
	invRate = 1 / math.Log1p(maxRatePerMin)
	invIPs  = 1 / math.Log1p(maxDistinctIPs)
	invCost = 1 / math.Log1p(maxCostPerReq)
	invAge  = 1 / math.Log1p(maxKeyAgeHours)
)

// logScale is Log1p scaling with inv = 1/ln(1+Max). ln(1+v) is as good as
// log1p here: its error near 0 is below 1e-9 absolute.
func logScale(v, inv float64) float64 {
	if !(v > 0) { // also NaN
		return 0
	}
	return min(fastLog(1+v)*inv, 1)
}

// clamp is Clamp scaling; NaN becomes 0.
func clamp(v, lo, hi float64) float64 {
	switch {
	case v != v:
		return 0
	case v < lo:
		return lo
	case v > hi:
		return hi
	}
	return v
}
