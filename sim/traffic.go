package sim

import (
	"math"
	"strconv"
	"time"

	"github.com/devflow/flowguard/features"
	"github.com/devflow/flowguard/policy"
)

// Key kinds: legitimate, or one of the abuser kinds.
const (
	kindLegit uint8 = iota
	kindScraper
	kindStuffing
	kindAdaptive
	kindSleeper
	kindSharing
	kindCompromised
	numKinds
)

var kindOf = map[string]uint8{Scraper: kindScraper, CredentialStuffing: kindStuffing,
	AdaptiveProber: kindAdaptive, Sleeper: kindSleeper, KeySharing: kindSharing, Compromised: kindCompromised}

// ownerStays reports whether a key of kind has its owner's legitimate
// traffic beside the abuse: a shared or a compromised key.
func ownerStays(kind uint8) bool { return kind == kindSharing || kind == kindCompromised }

// tenantInfo is what every key of a tenant shares.
type tenantInfo struct {
	name, endpoint, tier string
	ftier                features.Tier
	rule                 *policy.Rule
	enterprise           bool
	diurnal, peakHour    float64
	burst, growth        float64
	errorRate            float64
	authFailRate         float64 // legitimate responses that fail authentication
	base                 float64 // requests the base budget (× 1) admits per epoch
	floorAllow           float64 // requests the floor admits per epoch
}

// population is the simulated keys, as parallel arrays so that a million
// keys cost tens of megabytes. It is built once from the scenario and seed
// and read by every policy run: traffic does not depend on the policy,
// except where an abuser reacts to its limit (the adaptive prober).
type population struct {
	names      []string
	tenant     []uint16
	kind       []uint8
	region     []uint8
	ips        []uint32 // client addresses the key uses
	ipBase     []uint32 // its first address in the shared pool
	daily      []float32
	abuseDaily []float32
	abuseStart []int32 // first abusive epoch; -1 for legitimate keys
	authFail   []float32
	abuseErr   []float32 // share of abusive responses that are errors
	target     []float32
	abuseBurst []float32
	learn      []bool // the key's decisions reach the learner

	tenants []tenantInfo
	ipPool  []string
	seed    uint64
	// trace, when set, replaces the traffic model: requests per
	// (key<<32 | epoch) from an access log.
	trace map[uint64]float32
}

const ipPoolSize = 1 << 16

func newPopulation(s *Scenario, seed uint64) *population {
	n := s.Keys()
	p := &population{
		names: make([]string, 0, n), tenant: make([]uint16, 0, n), kind: make([]uint8, 0, n),
		region: make([]uint8, 0, n), ips: make([]uint32, 0, n), ipBase: make([]uint32, 0, n),
		daily: make([]float32, 0, n), abuseDaily: make([]float32, 0, n), abuseStart: make([]int32, 0, n),
		authFail: make([]float32, 0, n), abuseErr: make([]float32, 0, n), target: make([]float32, 0, n), abuseBurst: make([]float32, 0, n),
		learn: make([]bool, 0, n), seed: seed,
	}
	p.ipPool = make([]string, ipPoolSize)
	for i := range p.ipPool {
		p.ipPool[i] = "10." + strconv.Itoa(i>>8) + "." + strconv.Itoa(i&255) + ".7"
	}
	perDay := float64(24 * time.Hour / s.Epoch)
	for _, t := range s.Tenants {
		r := s.policy.Resolve(t.Name, t.Endpoint)
		base := float64(r.Limit.Rate) * float64(s.Epoch) / float64(r.Limit.Period)
		p.tenants = append(p.tenants, tenantInfo{name: t.Name, endpoint: t.Endpoint, tier: t.Tier,
			ftier: features.TierOf(r.Tier, r.Enterprise()), rule: r, enterprise: r.Enterprise(),
			diurnal: t.Diurnal, peakHour: t.PeakHour, burst: t.Burstiness, growth: t.Growth, errorRate: t.ErrorRate,
			authFailRate: authFailRate(t),
			base:         base, floorAllow: base * r.Floor})
	}
	add := func(name string, tenant int, kind uint8, ips int, daily, abuseDaily float64, start int32, a *Abusers) {
		k := len(p.names)
		p.names = append(p.names, name)
		p.tenant = append(p.tenant, uint16(tenant))
		p.kind = append(p.kind, kind)
		p.region = append(p.region, uint8(hash3(seed, uint64(k), 0x7265)%uint64(s.Regions)))
		p.ips = append(p.ips, uint32(ips))
		p.ipBase = append(p.ipBase, uint32(hash3(seed, uint64(k), 0x6970)%ipPoolSize))
		p.daily = append(p.daily, float32(daily))
		p.abuseDaily = append(p.abuseDaily, float32(abuseDaily))
		p.abuseStart = append(p.abuseStart, start)
		var af, ae, tg, b float32
		if a != nil {
			af, tg, b = float32(a.AuthFailures), float32(a.Target), float32(a.Burstiness)
			if a.ErrorRate != nil {
				ae = float32(*a.ErrorRate)
			}
		}
		p.authFail = append(p.authFail, af)
		p.abuseErr = append(p.abuseErr, ae)
		p.target = append(p.target, tg)
		p.abuseBurst = append(p.abuseBurst, b)
		p.learn = append(p.learn, unit(hash3(seed, uint64(k), 0x6c65)) < s.Learning.LearnSample)
	}
	if tr := s.trace; tr != nil {
		p.trace = tr.counts
		for i, c := range tr.clients {
			kind, start := kindLegit, int32(-1)
			if c.bot {
				kind, start = kindScraper, 0
			}
			add(c.name, 0, kind, 1, 0, 0, start, nil)
			p.ipBase[i] = uint32(i % ipPoolSize)
		}
		return p
	}
	for ti, t := range s.Tenants {
		for i := 0; i < t.Keys; i++ {
			k := uint64(len(p.names))
			add("k_"+t.Name+"_"+strconv.Itoa(i), ti, kindLegit, t.IPs, lognormal(hash3(seed, k, 0x6461), t.Daily), 0, -1, nil)
		}
	}
	for ai := range s.Abusers {
		a := &s.Abusers[ai]
		ti := s.tenants[a.Tenant]
		t := s.Tenants[ti]
		start := int32(a.Start / s.Epoch)
		for i := 0; i < a.Keys; i++ {
			k := uint64(len(p.names))
			legit := 0.0
			if a.Kind == Sleeper || ownerStays(kindOf[a.Kind]) { // a real customer's traffic, before or beside the abuse
				legit = lognormal(hash3(seed, k, 0x6461), t.Daily)
			}
			ips := a.IPs
			if ownerStays(kindOf[a.Kind]) {
				ips += t.IPs
			}
			add("k_"+t.Name+"_"+a.Kind+"_"+strconv.Itoa(ai)+"_"+strconv.Itoa(i), ti, kindOf[a.Kind], ips, legit,
				lognormal(hash3(seed, k, 0x6162), a.Daily), start, a)
		}
	}
	_ = perDay
	return p
}

// demand returns key k's legitimate and abusive requests in epoch e, and
// whether the key is abusive in it. probe is the adaptive prober's current
// aim (requests per epoch), ignored for other kinds.
func (p *population) demand(s *sharedRun, k, e int, probe float64) (legit, abuse float64) {
	if p.trace != nil {
		c := float64(p.trace[uint64(k)<<32|uint64(e)])
		if p.kind[k] == kindLegit {
			return c, 0
		}
		return 0, c
	}
	t := &p.tenants[p.tenant[k]]
	kind := p.kind[k]
	h := hash3(p.seed, uint64(k), uint64(e)<<8|1)
	abusive := kind != kindLegit && int32(e) >= p.abuseStart[k]
	if kind == kindLegit || ownerStays(kind) || (kind == kindSleeper && !abusive) {
		mean := float64(p.daily[k]) / s.perDay * s.diurnal[p.tenant[k]][e%int(s.perDay)] * s.growth[p.tenant[k]][e/int(s.perDay)]
		if f := s.flash[p.tenant[k]]; f != nil {
			mean *= f[e]
		}
		legit = count(mean*noise(h, t.burst), unit(mix(h)))
	}
	if !abusive {
		return legit, 0
	}
	h2 := hash3(p.seed, uint64(k), uint64(e)<<8|2)
	mean := float64(p.abuseDaily[k]) / s.perDay
	switch kind {
	case kindAdaptive:
		mean = min(mean, probe)
	case kindStuffing:
		// Bursts: active in about a quarter of the hours, four times as hard.
		if unit(hash3(p.seed, uint64(k), uint64(e*int(s.epochSec)/3600)<<8|3)) >= 0.25 {
			return legit, 0
		}
		mean *= 4
	}
	abuse = count(mean*noise(h2, float64(p.abuseBurst[k])), unit(mix(h2)))
	return legit, abuse
}

// dailyLegit returns key k's expected legitimate requests on day d
// (negative days are history), with day-to-day noise.
func (p *population) dailyLegit(k, d int) float64 {
	t := &p.tenants[p.tenant[k]]
	if p.kind[k] != kindLegit && p.kind[k] != kindSleeper && !ownerStays(p.kind[k]) {
		return 0
	}
	h := hash3(p.seed, uint64(k), uint64(int64(d))<<8|4)
	mean := float64(p.daily[k]) * math.Pow(1+t.growth, float64(d))
	return count(mean*noise(h, t.burst/4), unit(mix(h)))
}

// authFailRate is a tenant's legitimate auth-failure rate, its default
// applied.
func authFailRate(t Tenant) float64 {
	if t.AuthFailureRate == nil {
		return 0
	}
	return *t.AuthFailureRate
}

// count rounds a mean to a whole count, up with probability its fraction,
// so that small means keep their expectation.
func count(mean, u float64) float64 {
	f := math.Floor(mean)
	if u < mean-f {
		f++
	}
	return f
}

// noise is a lognormal factor with mean 1 and log-sd sigma.
func noise(h uint64, sigma float64) float64 {
	if sigma == 0 {
		return 1
	}
	return math.Exp(sigma*gauss(h) - sigma*sigma/2)
}

func lognormal(h uint64, v Volume) float64 {
	return v.Median * math.Exp(v.Sigma*gauss(h))
}

// gauss is a standard normal deviate from a hash (Box-Muller).
func gauss(h uint64) float64 {
	u1 := (float64(h>>11) + 0.5) * 0x1p-53
	u2 := unit(mix(h))
	return math.Sqrt(-2*math.Log(u1)) * math.Cos(2*math.Pi*u2)
}

// unit maps a hash to [0, 1).
func unit(h uint64) float64 { return float64(h>>11) * 0x1p-53 }

// mix is the SplitMix64 finaliser.
func mix(z uint64) uint64 {
	z += 0x9e3779b97f4a7c15
	z = (z ^ (z >> 30)) * 0xbf58476d1ce4e5b9
	z = (z ^ (z >> 27)) * 0x94d049bb133111eb
	return z ^ (z >> 31)
}

// hash3 derives an independent random value from a seed and two
// coordinates: traffic is a pure function of (seed, key, epoch), the same
// for every policy and however keys are split over workers.
func hash3(seed, a, b uint64) uint64 {
	return mix(mix(mix(seed)^a) ^ b)
}
