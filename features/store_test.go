package features

import (
	"fmt"
	"math"
	"runtime"
	"strconv"
	"sync"
	"testing"
	"time"
	"unsafe"

	"github.com/devflow/flowguard/internal/testenv"
)

var t0 = time.Date(2026, 11, 20, 12, 0, 0, 0, time.UTC)

func newTestStore(tb testing.TB, cfg Config) *Store {
	tb.Helper()
	s, err := NewStore(cfg)
	if err != nil {
		tb.Fatalf("NewStore(%+v): %v", cfg, err)
	}
	return s
}

// raw returns the raw value of the named feature of key at now.
func raw(tb testing.TB, s *Store, key, name string, now time.Time) float64 {
	tb.Helper()
	vs, ok := s.Snapshot(key, now)
	if !ok {
		tb.Fatalf("Snapshot(%q): key not held", key)
	}
	v, ok := vs.Get(name)
	if !ok {
		tb.Fatalf("no feature %q", name)
	}
	return v.Raw
}

func scaled(tb testing.TB, s *Store, key, name string, now time.Time) float64 {
	tb.Helper()
	x := s.Vector(key, now, nil)
	i := CurrentSchema().Index(name)
	if i < 0 {
		tb.Fatalf("no feature %q", name)
	}
	return x[i]
}

// checkVector fails unless x has Dim finite elements, each within its
// feature's bounds.
func checkVector(tb testing.TB, x []float64, context string) {
	tb.Helper()
	if len(x) != Dim {
		tb.Fatalf("%s: vector has %d elements, want %d", context, len(x), Dim)
	}
	for i, v := range x {
		f := CurrentSchema().Feature(i)
		lo, hi := f.Bounds()
		if math.IsNaN(v) || math.IsInf(v, 0) || v < lo || v > hi {
			tb.Fatalf("%s: %s = %v, want finite within [%v, %v]", context, f.Name, v, lo, hi)
		}
	}
}

func approx(got, want, relTol, absTol float64) bool {
	return math.Abs(got-want) <= absTol+relTol*math.Abs(want)
}

// The memory budget rests on these sizes.
func TestStateSizes(t *testing.T) {
	if n := unsafe.Sizeof(keyState{}); n != 184 {
		t.Errorf("keyState is %d bytes, want 184", n)
	}
	if n := unsafe.Sizeof(shard{}); n != 128 {
		t.Errorf("shard is %d bytes, want 128 (two cache lines)", n)
	}
	if n := unsafe.Sizeof(slot{}); n != 16 {
		t.Errorf("index slot is %d bytes, want 16", n)
	}
}

func TestConfigValidate(t *testing.T) {
	tests := map[string]struct {
		cfg     Config
		wantErr bool
	}{
		"zero value":           {cfg: Config{}},
		"all set":              {cfg: Config{IdleTTL: time.Minute, Shards: 64, MaxKeys: 1000}},
		"one shard":            {cfg: Config{Shards: 1}},
		"max shards":           {cfg: Config{Shards: 1 << 16}},
		"negative ttl":         {cfg: Config{IdleTTL: -time.Second}, wantErr: true},
		"shards not power":     {cfg: Config{Shards: 100}, wantErr: true},
		"too many shards":      {cfg: Config{Shards: 1 << 17}, wantErr: true},
		"negative shards":      {cfg: Config{Shards: -2}, wantErr: true},
		"negative max keys":    {cfg: Config{MaxKeys: -1}, wantErr: true},
		"max keys below shard": {cfg: Config{MaxKeys: 3, Shards: 8}},
	}
	for name, tc := range tests {
		t.Run(name, func(t *testing.T) {
			err := tc.cfg.Validate()
			if (err != nil) != tc.wantErr {
				t.Fatalf("Validate() = %v, want error %v", err, tc.wantErr)
			}
			s, nerr := NewStore(tc.cfg)
			if (nerr != nil) != tc.wantErr || (s == nil) != tc.wantErr {
				t.Fatalf("NewStore() = %v, %v; want error %v", s, nerr, tc.wantErr)
			}
		})
	}
}

// A burst must show in the 10 s rate as it happens: every request of a
// burst of 200 in half a second raises rate_10s, and the raw rate after
// the i-th request is at least i requests discounted by the burst's age.
func TestBurstShowsWithinOneSecond(t *testing.T) {
	s := newTestStore(t, Config{})
	const key = "k_live_burst"
	// An hour of background traffic: one request every 30 s.
	var now time.Time
	for i := 0; i < 120; i++ {
		now = t0.Add(time.Duration(i) * 30 * time.Second)
		s.Observe(key, Observation{Endpoint: "GET /v1/reports"}, now)
	}
	start := now.Add(time.Second)
	before := scaled(t, s, key, "rate_10s", start)
	const n = 200
	prev := before
	for i := 1; i <= n; i++ {
		at := start.Add(time.Duration(i) * 2500 * time.Microsecond) // 200 in 0.5 s
		x := s.ObserveAndVector(key, Observation{Endpoint: "POST /v1/payments"}, at, nil)
		got := x[idxRate10s]
		if got <= prev {
			t.Fatalf("request %d of the burst: rate_10s %v did not rise from %v", i, got, prev)
		}
		prev = got
		// i requests, none older than at-start, in req/min.
		lower := float64(i) * math.Exp(-at.Sub(start).Seconds()/10) * 6
		if r := raw(t, s, key, "rate_10s", at); r < lower*(1-1e-5) {
			t.Fatalf("request %d: raw rate_10s = %v req/min, want ≥ %v", i, r, lower)
		}
	}
	end := start.Add(n * 2500 * time.Microsecond)
	if end.Sub(start) >= time.Second {
		t.Fatalf("burst took %v of virtual time", end.Sub(start))
	}
	if after := scaled(t, s, key, "rate_10s", end); after < before+0.2 {
		t.Errorf("rate_10s after the burst = %v, before = %v: the burst barely shows", after, before)
	}
}

// Each rate is the closed-form exponential decay of the requests seen.
func TestRatesDecay(t *testing.T) {
	taus := map[string]float64{"rate_10s": 10, "rate_1m": 60, "rate_10m": 600, "rate_1h": 3600}
	tests := map[string]struct {
		requests int
		after    time.Duration
	}{
		"at once":           {requests: 5, after: 0},
		"after 1 s":         {requests: 5, after: time.Second},
		"after 10 s":        {requests: 5, after: 10 * time.Second},
		"after 1 min":       {requests: 3, after: time.Minute},
		"after 10 min":      {requests: 3, after: 10 * time.Minute},
		"after 1 h":         {requests: 100, after: time.Hour},
		"after 3 h":         {requests: 100, after: 3 * time.Hour},
		"after 1 µs":        {requests: 1, after: time.Microsecond},
		"after 37.5 s":      {requests: 7, after: 37*time.Second + 500*time.Millisecond},
		"long after, large": {requests: 1000, after: 26 * time.Hour},
	}
	for name, tc := range tests {
		t.Run(name, func(t *testing.T) {
			s := newTestStore(t, Config{IdleTTL: 48 * time.Hour})
			for range tc.requests {
				s.Observe("k", Observation{}, t0)
			}
			at := t0.Add(tc.after)
			for feat, tau := range taus {
				want := float64(tc.requests) * math.Exp(-tc.after.Seconds()/tau) / (tau / 60)
				if got := raw(t, s, "k", feat, at); !approx(got, want, 1e-5, 1e-30) {
					t.Errorf("%s = %v req/min, want %v", feat, got, want)
				}
			}
		})
	}
}

// With requests at irregular times the counter is Σ exp(-(t-tᵢ)/τ),
// whether the store is read between requests or not.
func TestRatesSumOfDecays(t *testing.T) {
	offsets := []time.Duration{0, 3 * time.Second, 3 * time.Second, 41 * time.Second, 2 * time.Minute,
		17*time.Minute + 250*time.Millisecond, 18 * time.Minute, 55 * time.Minute}
	taus := map[string]float64{"rate_10s": 10, "rate_1m": 60, "rate_10m": 600, "rate_1h": 3600}
	s := newTestStore(t, Config{})
	for i, off := range offsets {
		if i%2 == 0 {
			s.Vector("k", t0.Add(off), nil) // reads change nothing
		}
		s.Observe("k", Observation{}, t0.Add(off))
	}
	at := t0.Add(time.Hour)
	for feat, tau := range taus {
		var want float64
		for _, off := range offsets {
			want += math.Exp(-(time.Hour - off).Seconds() / tau)
		}
		want /= tau / 60
		if got := raw(t, s, "k", feat, at); !approx(got, want, 1e-5, 1e-30) {
			t.Errorf("%s = %v, want %v", feat, got, want)
		}
	}
}

// endpointsInBuckets returns k endpoints that hash to k different buckets.
func endpointsInBuckets(tb testing.TB, k int) []string {
	tb.Helper()
	seen := map[uint8]bool{}
	var eps []string
	for i := 0; len(eps) < k; i++ {
		if i > 10_000 {
			tb.Fatalf("found only %d endpoint buckets", len(eps))
		}
		ep := "GET /v1/e" + strconv.Itoa(i)
		if b := endpointBucket(hashString(ep)); !seen[b] {
			seen[b] = true
			eps = append(eps, ep)
		}
	}
	return eps
}

// shannon returns the entropy of weights over ln 8, computed directly.
func shannon(weights []float64) float64 {
	var sum, h float64
	for _, w := range weights {
		sum += w
	}
	for _, w := range weights {
		if w > 0 {
			p := w / sum
			h -= p * math.Log(p)
		}
	}
	return h / math.Log(8)
}

func TestEndpointEntropy(t *testing.T) {
	eps := endpointsInBuckets(t, 8)
	type burst struct {
		endpoint int
		count    int
		at       time.Duration
	}
	tests := map[string]struct {
		bursts []burst
		want   float64
	}{
		"single endpoint":  {bursts: []burst{{0, 50, 0}}, want: 0},
		"uniform over 2":   {bursts: []burst{{0, 10, 0}, {1, 10, 0}}, want: math.Log(2) / math.Log(8)},
		"uniform over 4":   {bursts: []burst{{0, 7, 0}, {1, 7, 0}, {2, 7, 0}, {3, 7, 0}}, want: math.Log(4) / math.Log(8)},
		"uniform over 8":   {bursts: []burst{{0, 3, 0}, {1, 3, 0}, {2, 3, 0}, {3, 3, 0}, {4, 3, 0}, {5, 3, 0}, {6, 3, 0}, {7, 3, 0}}, want: 1},
		"skewed 3 to 1":    {bursts: []burst{{0, 30, 0}, {1, 10, 0}}, want: shannon([]float64{30, 10})},
		"skewed 1,2,4,8":   {bursts: []burst{{0, 1, 0}, {1, 2, 0}, {2, 4, 0}, {3, 8, 0}}, want: shannon([]float64{1, 2, 4, 8})},
		"old mix, decayed": {bursts: []burst{{0, 10, 0}, {1, 10, 10 * time.Minute}}, want: shannon([]float64{10 * math.Exp(-1), 10})},
		"mostly forgotten": {bursts: []burst{{0, 10, 0}, {1, 10, 2 * time.Hour}}, want: shannon([]float64{10 * math.Exp(-12), 10})},
	}
	for name, tc := range tests {
		t.Run(name, func(t *testing.T) {
			s := newTestStore(t, Config{IdleTTL: 24 * time.Hour})
			var last time.Duration
			for _, b := range tc.bursts {
				for range b.count {
					s.Observe("k", Observation{Endpoint: eps[b.endpoint]}, t0.Add(b.at))
				}
				last = b.at
			}
			for _, later := range []time.Duration{0, 30 * time.Second, 20 * time.Minute} {
				// Decay scales every bucket alike: the mix stays.
				if got := raw(t, s, "k", "endpoint_entropy", t0.Add(last+later)); !approx(got, tc.want, 0, 1e-5) {
					t.Errorf("%v after the last request: endpoint_entropy = %v, want %v", later, got, tc.want)
				}
			}
		})
	}
}

// The endpoint hash spreads real endpoints over all buckets.
func TestEndpointBucketsSpread(t *testing.T) {
	var counts [endpointBuckets]int
	const n = 8000
	for i := range n {
		counts[endpointBucket(hashString(fmt.Sprintf("POST /v1/resource%d/items", i)))]++
	}
	for b, c := range counts {
		// n/8 = 1000, binomial σ ≈ 30: 6σ.
		if c < 820 || c > 1180 {
			t.Errorf("bucket %d got %d of %d endpoints, want about %d", b, c, n, n/endpointBuckets)
		}
	}
}

// The stated error of the IP sketch: 1.04/√64 = 13% standard error.
const hllStdErr = 1.04 / 8

func TestDistinctIPs(t *testing.T) {
	s := newTestStore(t, Config{})
	var worst float64
	for n := 1; n <= 1000; n++ {
		ip := fmt.Sprintf("198.%d.%d.%d", n%7, n/256, n%256)
		now := t0.Add(time.Duration(n) * time.Second)
		s.Observe("k", Observation{ClientIP: ip}, now)
		s.Observe("k", Observation{ClientIP: ip}, now) // a repeat adds nothing
		got := raw(t, s, "k", "distinct_ips", now)
		rel := math.Abs(got/float64(n) - 1)
		worst = max(worst, rel)
		if rel > 3*hllStdErr {
			t.Fatalf("%d distinct IPs: estimate %v, off by %.0f%% (more than 3 standard errors)", n, got, 100*rel)
		}
		// With few IPs in 64 registers the estimate is close to linear
		// counting, m·ln(m/(m-n)) when no two IPs share a register: within
		// n²/m of n.
		if n <= 10 && math.Abs(got-float64(n)) > float64(n*n)/64+0.1 {
			t.Errorf("%d distinct IPs: estimate %v, want within %v", n, got, float64(n*n)/64+0.1)
		}
	}
	t.Logf("largest relative error over 1..1000 IPs: %.1f%%", 100*worst)
	if got := raw(t, s, "k", "distinct_ips", t0.Add(time.Hour)); got == 0 {
		t.Error("distinct_ips decayed; it counts since the key was first held")
	}
}

// Over many independent sets of IPs, the sketch's error has about its
// stated standard deviation and little bias.
func TestDistinctIPsStandardError(t *testing.T) {
	const trials = 200
	for _, n := range []int{20, 100, 1000, 10_000} {
		t.Run(strconv.Itoa(n), func(t *testing.T) {
			if n > 1000 {
				testenv.SkipShort(t, "slow in -short")
			}
			var sum, sumSq float64
			var ip []byte
			for trial := range trials {
				var sk sketch
				for i := range n {
					ip = strconv.AppendInt(append(append(ip[:0], "10."...), byte('a'+trial%26)), int64(trial*n+i), 10)
					sk.add(hashString(string(ip)))
				}
				rel := sk.estimate()/float64(n) - 1
				sum += rel
				sumSq += rel * rel
			}
			bias := sum / trials
			rms := math.Sqrt(sumSq / trials)
			t.Logf("n=%d: bias %.2f%%, rms error %.2f%%", n, 100*bias, 100*rms)
			if rms > 1.2*hllStdErr {
				t.Errorf("rms relative error %.3f, want ≤ %.3f", rms, 1.2*hllStdErr)
			}
			if math.Abs(bias) > 0.03 {
				t.Errorf("bias %.3f, want within ±0.03", bias)
			}
		})
	}
}

func TestShares(t *testing.T) {
	// Decisions one second apart, with the budget share used and whether
	// they throttled; expected values are decayed weighted means.
	type step struct {
		budget    float64
		throttled bool
		cost      int64
	}
	steps := []step{{0.1, false, 1}, {0.5, false, 3}, {0.9, true, 1}, {1, true, 10}, {0.2, false, 1}}
	s := newTestStore(t, Config{})
	for i, st := range steps {
		s.Observe("k", Observation{BudgetUsed: st.budget, Throttled: st.throttled, Cost: st.cost}, t0.Add(time.Duration(i)*time.Second))
	}
	at := t0.Add(time.Duration(len(steps)+30) * time.Second)
	var wb1, b1, w10, thr, cost float64
	for i, st := range steps {
		age := at.Sub(t0.Add(time.Duration(i) * time.Second)).Seconds()
		w := math.Exp(-age / 60)
		wb1 += w
		b1 += w * st.budget
		w = math.Exp(-age / 600)
		w10 += w
		if st.throttled {
			thr += w
		}
		cost += w * float64(st.cost)
	}
	tests := map[string]float64{
		"budget_used":      b1 / wb1,
		"throttled_share":  thr / w10,
		"cost_per_request": cost / w10,
	}
	for name, want := range tests {
		t.Run(name, func(t *testing.T) {
			if got := raw(t, s, "k", name, at); !approx(got, want, 1e-5, 1e-9) {
				t.Errorf("%s = %v, want %v", name, got, want)
			}
		})
	}
}

func TestOutcomeRates(t *testing.T) {
	s := newTestStore(t, Config{})
	type report struct {
		at         time.Duration
		out        Outcome
		withSample bool // reported in an Observation rather than ObserveOutcome
	}
	reports := []report{
		{0, Outcome{Requests: 100, Errors: 5, AuthFailures: 1}, false},
		{2 * time.Minute, Outcome{Requests: 50, Errors: 20, AuthFailures: 30}, true},
		{5 * time.Minute, Outcome{Requests: 10}, false},
	}
	for _, r := range reports {
		if r.withSample {
			s.Observe("k", Observation{Outcome: r.out}, t0.Add(r.at))
		} else {
			s.ObserveOutcome("k", r.out, t0.Add(r.at))
		}
	}
	at := t0.Add(7 * time.Minute)
	var total, errs, auth float64
	for _, r := range reports {
		w := math.Exp(-at.Sub(t0.Add(r.at)).Seconds() / 600)
		total += w * float64(r.out.Requests)
		errs += w * float64(r.out.Errors)
		auth += w * float64(r.out.AuthFailures)
	}
	if got, want := raw(t, s, "k", "error_rate", at), errs/total; !approx(got, want, 1e-5, 0) {
		t.Errorf("error_rate = %v, want %v", got, want)
	}
	if got, want := raw(t, s, "k", "auth_failure_rate", at), auth/total; !approx(got, want, 1e-5, 0) {
		t.Errorf("auth_failure_rate = %v, want %v", got, want)
	}
}

func TestBurstiness(t *testing.T) {
	tests := map[string]struct {
		gaps   func(i int) time.Duration
		lo, hi float64
	}{
		// Equal gaps: σ = 0, so B = -1.
		"periodic": {gaps: func(int) time.Duration { return 2 * time.Second }, lo: -1, hi: -0.999},
		// Gaps alternating 1 s and 9 s: μ = 5, σ = 4, B = -1/9, up to
		// the ±α·4 wobble of the weighted mean.
		"alternating": {gaps: func(i int) time.Duration { return time.Duration(1+8*(i%2)) * time.Second }, lo: -1.0/9 - 0.05, hi: -1.0/9 + 0.05},
		// Trains of 8 requests 1 ms apart every 10 min: the gaps' σ is far
		// above their μ.
		"bursts": {gaps: func(i int) time.Duration {
			if i%8 == 7 {
				return 10 * time.Minute
			}
			return time.Millisecond
		}, lo: 0.3, hi: 1},
	}
	for name, tc := range tests {
		t.Run(name, func(t *testing.T) {
			s := newTestStore(t, Config{IdleTTL: 24 * time.Hour})
			now := t0
			for i := range 200 {
				s.Observe("k", Observation{}, now)
				now = now.Add(tc.gaps(i))
			}
			if got := raw(t, s, "k", "burstiness", now); got < tc.lo || got > tc.hi {
				t.Errorf("burstiness = %v, want within [%v, %v]", got, tc.lo, tc.hi)
			}
		})
	}
	t.Run("too few gaps", func(t *testing.T) {
		s := newTestStore(t, Config{})
		s.Observe("k", Observation{}, t0)
		s.Observe("k", Observation{}, t0.Add(time.Second))
		if got := raw(t, s, "k", "burstiness", t0.Add(time.Second)); got != 0 {
			t.Errorf("burstiness after one gap = %v, want 0", got)
		}
	})
}

func TestKeyAgeTierAndHour(t *testing.T) {
	s := newTestStore(t, Config{IdleTTL: 48 * time.Hour})
	first := time.Date(2026, 11, 20, 6, 0, 0, 0, time.UTC)
	s.Observe("k", Observation{Tier: TierPro}, first)
	s.Observe("k", Observation{}, first.Add(20*time.Hour)) // unknown tier keeps pro
	at := first.Add(30 * time.Hour)                        // 12:00 UTC
	vs, ok := s.Snapshot("k", at)
	if !ok {
		t.Fatal("key not held")
	}
	want := map[string]float64{
		"key_age":         30,
		"hour_sin":        math.Sin(2 * math.Pi * 12 / 24),
		"hour_cos":        math.Cos(2 * math.Pi * 12 / 24),
		"tier_free":       0,
		"tier_pro":        1,
		"tier_enterprise": 0,
	}
	for name, w := range want {
		v, _ := vs.Get(name)
		if !approx(v.Raw, w, 1e-9, 1e-9) {
			t.Errorf("%s = %v, want %v", name, v.Raw, w)
		}
	}
	s.Observe("k", Observation{Tier: TierEnterprise}, at)
	x := s.Vector("k", at.Add(90*time.Minute), nil) // 13:30
	if x[idxTierEnterprise] != 1 || x[idxTierPro] != 0 {
		t.Errorf("tier one-hot = %v, want enterprise only", x[idxTierFree:idxTierEnterprise+1])
	}
	if w := math.Cos(2 * math.Pi * 13.5 / 24); !approx(x[idxHourCos], w, 0, 1e-4) {
		t.Errorf("hour_cos at 13:30 = %v, want %v", x[idxHourCos], w)
	}
	if w := math.Log1p(31.5) / math.Log1p(720); !approx(x[idxKeyAge], w, 0, 1e-9) {
		t.Errorf("scaled key_age = %v, want %v", x[idxKeyAge], w)
	}
}

func TestTierOf(t *testing.T) {
	tests := map[string]struct {
		name       string
		enterprise bool
		want       Tier
	}{
		"free":                           {"free", false, TierFree},
		"free in upper case":             {"FREE", false, TierFree},
		"pro in mixed case":              {"Pro", false, TierPro},
		"enterprise-class, any name":     {"gold", true, TierEnterprise},
		"enterprise-class named free":    {"free", true, TierEnterprise},
		"enterprise-class named so":      {"Enterprise", true, TierEnterprise},
		"standard tier named enterprise": {"enterprise", false, TierUnknown},
		"other standard tier":            {"gold", false, TierUnknown},
		"empty":                          {"", false, TierUnknown},
		"a space is part of the name":    {"pro ", false, TierUnknown},
	}
	for name, c := range tests {
		t.Run(name, func(t *testing.T) {
			if got := TierOf(c.name, c.enterprise); got != c.want {
				t.Errorf("TierOf(%q, %v) = %v, want %v", c.name, c.enterprise, got, c.want)
			}
		})
	}
}

// Whatever the input, every vector element is finite and within bounds.
func TestVectorBoundedForAdversarialInputs(t *testing.T) {
	huge := string(make([]byte, 1<<16))
	tests := map[string]struct {
		obs   Observation
		times []time.Time
		n     int
	}{
		"zero observation":     {obs: Observation{}, times: []time.Time{t0}, n: 1},
		"huge cost":            {obs: Observation{Cost: math.MaxInt64}, times: []time.Time{t0}, n: 1000},
		"negative cost":        {obs: Observation{Cost: math.MinInt64}, times: []time.Time{t0}, n: 3},
		"NaN budget":           {obs: Observation{BudgetUsed: math.NaN()}, times: []time.Time{t0}, n: 3},
		"+Inf budget":          {obs: Observation{BudgetUsed: math.Inf(1)}, times: []time.Time{t0}, n: 3},
		"-Inf budget":          {obs: Observation{BudgetUsed: math.Inf(-1)}, times: []time.Time{t0}, n: 3},
		"budget above 1":       {obs: Observation{BudgetUsed: 1e300}, times: []time.Time{t0}, n: 3},
		"bad tier":             {obs: Observation{Tier: 200}, times: []time.Time{t0}, n: 2},
		"huge strings":         {obs: Observation{Endpoint: huge, ClientIP: huge}, times: []time.Time{t0}, n: 2},
		"huge outcome":         {obs: Observation{Outcome: Outcome{Requests: math.MaxInt64, Errors: math.MaxInt64, AuthFailures: math.MaxInt64}}, times: []time.Time{t0}, n: 1000},
		"negative outcome":     {obs: Observation{Outcome: Outcome{Requests: -5, Errors: math.MinInt64, AuthFailures: 3}}, times: []time.Time{t0}, n: 3},
		"many at once":         {obs: Observation{ClientIP: "10.0.0.1"}, times: []time.Time{t0}, n: 100_000},
		"zero time":            {obs: Observation{}, times: []time.Time{{}, {}}, n: 2},
		"unix epoch":           {obs: Observation{}, times: []time.Time{time.Unix(0, 0), time.Unix(0, 1)}, n: 2},
		"year 1 then 9999":     {obs: Observation{}, times: []time.Time{time.Date(1, 1, 1, 0, 0, 0, 0, time.UTC), time.Date(9999, 1, 1, 0, 0, 0, 0, time.UTC)}, n: 2},
		"clock going back":     {obs: Observation{}, times: []time.Time{t0, t0.Add(-time.Hour), t0.Add(-48 * time.Hour), t0.Add(time.Second)}, n: 2},
		"negative unix micros": {obs: Observation{}, times: []time.Time{time.Unix(-1, 999), time.Unix(-86401, 0)}, n: 2},
	}
	for name, tc := range tests {
		t.Run(name, func(t *testing.T) {
			s := newTestStore(t, Config{})
			for _, key := range []string{"", "k", huge} {
				for _, now := range tc.times {
					n := tc.n
					if len(key) > 1 {
						n = min(n, 10) // hashing a 64 KiB key is slow
					}
					for range n {
						s.Observe(key, tc.obs, now)
					}
					checkVector(t, s.Vector(key, now, nil), "Vector")
					checkVector(t, s.ObserveAndVector(key, tc.obs, now, nil), "ObserveAndVector")
					s.ObserveOutcome(key, tc.obs.Outcome, now)
					checkVector(t, s.Vector(key, now.Add(time.Hour), nil), "Vector an hour later")
					vs, ok := s.Snapshot(key, now)
					if !ok {
						t.Fatal("Snapshot: key not held")
					}
					for _, v := range vs {
						if math.IsNaN(v.Raw) || math.IsInf(v.Raw, 0) {
							t.Fatalf("raw %s = %v", v.Name, v.Raw)
						}
					}
				}
			}
		})
	}
}

func TestObserveAndVectorIsObserveThenVector(t *testing.T) {
	a := newTestStore(t, Config{})
	b := newTestStore(t, Config{})
	obs := benchObservations()
	for i := range 500 {
		now := t0.Add(time.Duration(i*i) * time.Millisecond)
		key := "k" + strconv.Itoa(i%7)
		got := a.ObserveAndVector(key, obs[i%len(obs)], now, make([]float64, 2, 40))
		b.Observe(key, obs[i%len(obs)], now)
		want := b.Vector(key, now, nil)
		if got[0] != 0 || got[1] != 0 {
			t.Fatal("ObserveAndVector overwrote dst's elements")
		}
		for j := range want {
			if math.Abs(got[2+j]-want[j]) > 1e-4 { // b's time of day is not rounded to the second
				t.Fatalf("step %d, %s: ObserveAndVector %v, Observe+Vector %v", i, CurrentSchema().Feature(j).Name, got[2+j], want[j])
			}
		}
	}
}

func TestUnknownKey(t *testing.T) {
	s := newTestStore(t, Config{})
	if _, ok := s.Snapshot("nobody", t0); ok {
		t.Error("Snapshot of an unknown key reports it held")
	}
	if _, ok := s.Export("nobody", t0); ok {
		t.Error("Export of an unknown key reports it held")
	}
	x := s.Vector("nobody", t0, nil)
	checkVector(t, x, "unknown key")
	for _, name := range []string{"rate_10s", "rate_1h", "distinct_ips", "key_age", "tier_free"} {
		if v := x[CurrentSchema().Index(name)]; v != 0 {
			t.Errorf("%s of an unknown key = %v, want 0", name, v)
		}
	}
	if s.Len() != 0 {
		t.Errorf("Vector added the key: Len = %d", s.Len())
	}
}

func TestVectorAllocations(t *testing.T) {
	s := newTestStore(t, Config{})
	obs := Observation{Endpoint: "POST /v1/payments", ClientIP: "203.0.113.7", Cost: 1}
	s.Observe("k", obs, t0)
	dst := make([]float64, 0, Dim)
	i := 0
	tests := map[string]func(){
		"ObserveAndVector": func() { i++; dst = s.ObserveAndVector("k", obs, t0.Add(time.Duration(i)), dst[:0]) },
		"Vector":           func() { i++; dst = s.Vector("k", t0.Add(time.Duration(i)), dst[:0]) },
		"Observe":          func() { i++; s.Observe("k", obs, t0.Add(time.Duration(i))) },
	}
	for name, f := range tests {
		t.Run(name, func(t *testing.T) {
			if n := testing.AllocsPerRun(100, f); n != 0 {
				t.Errorf("%s allocates %v times a call, want 0", name, n)
			}
		})
	}
}

func TestSweep(t *testing.T) {
	s := newTestStore(t, Config{IdleTTL: time.Hour, Shards: 4})
	s.Observe("old", Observation{}, t0)
	s.Observe("recent", Observation{}, t0.Add(50*time.Minute))
	s.ObserveOutcome("reported", Outcome{Requests: 1}, t0.Add(10*time.Minute))
	if got := s.Sweep(t0.Add(time.Hour)); got != 0 {
		t.Fatalf("Sweep at exactly IdleTTL dropped %d keys, want 0", got)
	}
	if got := s.Sweep(t0.Add(time.Hour + 11*time.Minute)); got != 2 {
		t.Fatalf("Sweep dropped %d keys, want 2 (old, reported)", got)
	}
	if s.Len() != 1 {
		t.Fatalf("Len = %d, want 1", s.Len())
	}
	if _, ok := s.Snapshot("old", t0.Add(2*time.Hour)); ok {
		t.Error("old is still held")
	}
	if _, ok := s.Snapshot("recent", t0.Add(2*time.Hour)); !ok {
		t.Error("recent was dropped")
	}
	if st := s.Stats(); st.Keys != 1 || st.Evicted != 2 || st.Rejected != 0 {
		t.Errorf("Stats = %+v, want 1 key, 2 evicted, 0 rejected", st)
	}
	// An evicted key comes back as new.
	s.Observe("old", Observation{}, t0.Add(3*time.Hour))
	if age := raw(t, s, "old", "key_age", t0.Add(3*time.Hour)); age != 0 {
		t.Errorf("key_age of a returning key = %v, want 0", age)
	}
}

// Mass eviction keeps the index consistent: every survivor keeps its own
// features, every evicted key is gone, and the memory is compacted.
func TestSweepManyKeys(t *testing.T) {
	s := newTestStore(t, Config{IdleTTL: time.Minute, Shards: 2})
	const n = 5000
	for i := range n {
		at := t0
		if i%3 == 0 {
			at = t0.Add(time.Hour) // survivors
		}
		for range 1 + i%5 {
			s.Observe("k"+strconv.Itoa(i), Observation{}, at)
		}
	}
	slabBefore := len(s.shards[0].slab) + len(s.shards[1].slab)
	dropped := s.Sweep(t0.Add(time.Hour))
	if want := n - (n+2)/3; dropped != want {
		t.Fatalf("dropped %d, want %d", dropped, want)
	}
	at := t0.Add(time.Hour)
	for i := range n {
		key := "k" + strconv.Itoa(i)
		_, ok := s.Snapshot(key, at)
		if ok != (i%3 == 0) {
			t.Fatalf("%s held = %v after the sweep", key, ok)
		}
		if ok {
			if got, want := raw(t, s, key, "rate_10s", at), float64(1+i%5)*6; !approx(got, want, 1e-6, 0) {
				t.Fatalf("%s: rate_10s = %v, want %v: the index mixed keys up", key, got, want)
			}
		}
	}
	if slabAfter := len(s.shards[0].slab) + len(s.shards[1].slab); slabAfter >= slabBefore/2 {
		t.Errorf("slabs hold %d states after the sweep (%d before): not compacted", slabAfter, slabBefore)
	}
	// New keys reuse the space.
	for i := range n {
		s.Observe("new"+strconv.Itoa(i), Observation{}, at)
	}
	if got, want := s.Len(), (n+2)/3+n; got != want {
		t.Errorf("Len = %d, want %d", got, want)
	}
}

func TestMaxKeys(t *testing.T) {
	s := newTestStore(t, Config{MaxKeys: 16, Shards: 1})
	for i := range 20 {
		s.Observe("k"+strconv.Itoa(i), Observation{}, t0)
	}
	s.ObserveOutcome("other", Outcome{Requests: 1}, t0)
	if err := s.Merge("another", Record{At: t0.UnixMicro(), FirstSeen: t0.UnixMicro()}, t0); err != nil {
		t.Fatal(err)
	}
	x := s.ObserveAndVector("k19", Observation{}, t0, nil)
	if st := s.Stats(); st.Keys != 16 || st.Rejected != 7 {
		t.Errorf("Stats = %+v, want 16 keys and 7 rejected updates", st)
	}
	checkVector(t, x, "refused key")
	if x[idxRate10s] != 0 {
		t.Errorf("a refused key's rate_10s = %v, want 0", x[idxRate10s])
	}
	// Known keys still update.
	s.Observe("k0", Observation{}, t0)
	if got := raw(t, s, "k0", "rate_10s", t0); got != 12 {
		t.Errorf("k0 rate_10s = %v, want 12 (2 requests per 10 s)", got)
	}
}

func TestConcurrentUse(t *testing.T) {
	s := newTestStore(t, Config{Shards: 4, IdleTTL: time.Second})
	var wg sync.WaitGroup
	obs := benchObservations()
	for g := range 4 {
		wg.Add(1)
		go func() {
			defer wg.Done()
			dst := make([]float64, 0, Dim)
			for i := range 2000 {
				now := t0.Add(time.Duration(i) * time.Millisecond)
				key := "k" + strconv.Itoa((i*7+g)%50)
				dst = s.ObserveAndVector(key, obs[i%len(obs)], now, dst[:0])
				if i%10 == 0 {
					if rec, ok := s.Export(key, now); ok {
						if err := s.Merge("k"+strconv.Itoa(i%50), rec, now); err != nil {
							t.Error(err)
							return
						}
					}
					s.ObserveOutcome(key, Outcome{Requests: 2, Errors: 1}, now)
					s.Snapshot(key, now)
				}
				if i%500 == 0 {
					s.Sweep(now)
					s.Stats()
				}
			}
		}()
	}
	wg.Wait()
	if n := s.Len(); n == 0 || n > 50 {
		t.Errorf("Len = %d, want 1..50", n)
	}
}

// TestMemoryPerKey is BenchmarkStoreBytesPerKey's check at a smaller
// scale: the heap a key costs stays within the 256-byte budget.
func TestMemoryPerKey(t *testing.T) {
	testenv.SkipShort(t, "allocates ~60 MB")
	const n = 200_000
	keys := benchKeys(n)
	obs := benchObservations()
	runtime.GC()
	var before, after runtime.MemStats
	runtime.ReadMemStats(&before)
	s := newTestStore(t, Config{})
	for i, k := range keys {
		s.Observe(k, obs[i%len(obs)], t0)
	}
	runtime.GC()
	runtime.ReadMemStats(&after)
	perKey := float64(int64(after.HeapAlloc)-int64(before.HeapAlloc)) / n
	t.Logf("%.1f bytes a key with %d keys", perKey, n)
	if perKey > 256 {
		t.Errorf("%.1f bytes a key, want ≤ 256", perKey)
	}
	runtime.KeepAlive(s)
}
