package features

import (
	"encoding/binary"
	"fmt"
	"hash/fnv"
	"math"
	"strings"
)

// SchemaVersion is the version of the feature schema [Store.Vector] writes.
// It changes whenever a feature is added, removed, reordered or rescaled:
// a model trained on vectors of one version must not score another.
const SchemaVersion = 2

// Dim is the length of a vector of the current schema.
const Dim = 24

// Positions of the features in a vector of the current schema.
const (
	idxRate10s = iota
	idxRate1m
	idxRate10m
	idxRate1h
	idxBurstiness
	idxEndpointEntropy
	idxDistinctIPs
	idxBudgetUsed
	idxThrottledShare
	idxErrorRate
	idxAuthFailureRate
	idxCostPerRequest
	idxKeyAge
	idxHourSin
	idxHourCos
	idxTierFree
	idxTierPro
	idxTierEnterprise
	// Schema v2 (issue 17): the key against its own past and against its
	// tier's cohort, and what labels said about it and its addresses.
	idxRate1d
	idxRateChange
	idxCohortRate
	idxCohortIPs
	idxLabelState
	idxIPSuspicion
	numFeatures
)

// Scaling is how a feature's raw value becomes a vector element.
type Scaling uint8

const (
	// Clamp limits the raw value to [Min, Max].
	Clamp Scaling = iota
	// Log1p maps a non-negative raw value x to log(1+x)/log(1+Max),
	// clamped to [0, 1]: rates and counts spanning orders of magnitude get
	// an even resolution, and Max maps to 1.
	Log1p
	// Signed maps a raw value x to x/Max clamped to [-1, 1] (Min is
	// -Max): a symmetric score brought to the range of the others.
	Signed
)

func (s Scaling) String() string {
	switch s {
	case Clamp:
		return "clamp"
	case Log1p:
		return "log1p"
	case Signed:
		return "signed"
	}
	return fmt.Sprintf("Scaling(%d)", uint8(s))
}

// Feature describes one element of the vector.
type Feature struct {
	// Name identifies the feature, e.g. "rate_1m".
	Name string
	// Unit is the unit of the raw value, e.g. "req/min".
	Unit string
	// Scaling maps the raw value to the vector element.
	Scaling Scaling
	// Min and Max bound the scaled value: [Min, Max] for Clamp. For Log1p,
	// Max is the raw value that maps to 1 (Min is 0).
	Min, Max float64
	// Doc says what the feature measures.
	Doc string
}

// Scale maps a raw value to its vector element. NaN maps to 0 before
// clamping, ±Inf to the nearest bound, so the result is always finite and
// within the feature's bounds.
func (f Feature) Scale(raw float64) float64 {
	if raw != raw {
		raw = 0
	}
	switch f.Scaling {
	case Log1p:
		if raw <= 0 {
			return 0
		}
		return min(math.Log1p(raw)/math.Log1p(f.Max), 1)
	case Signed:
		return max(-1, min(raw/f.Max, 1))
	default:
		return max(f.Min, min(raw, f.Max))
	}
}

// Bounds returns the interval every scaled value of the feature lies in.
func (f Feature) Bounds() (lo, hi float64) {
	switch f.Scaling {
	case Log1p:
		return 0, 1
	case Signed:
		return -1, 1
	}
	return f.Min, f.Max
}

// Caps of the Log1p features: the raw value that maps to 1.
const (
	maxRatePerMin  = 1e6 // one key at about 16,700 requests a second
	maxDistinctIPs = 1e5
	maxCostPerReq  = 1e4
	maxKeyAgeHours = 720 // 30 days
	maxRateChange  = 4   // log2: a key 16 times faster (or slower) than its day
)

// Dim and the index constants must agree.
var (
	_ [Dim - numFeatures]struct{}
	_ [numFeatures - Dim]struct{}
)

var schemaV2 = [numFeatures]Feature{
	idxRate10s: {Name: "rate_10s", Unit: "req/min", Scaling: Log1p, Max: maxRatePerMin,
		Doc: "requests per minute, exponentially decayed with a 10 s time constant, this instance plus merged remote instances"},
	idxRate1m: {Name: "rate_1m", Unit: "req/min", Scaling: Log1p, Max: maxRatePerMin,
		Doc: "requests per minute, decayed with a 1 min time constant, local plus remote"},
	idxRate10m: {Name: "rate_10m", Unit: "req/min", Scaling: Log1p, Max: maxRatePerMin,
		Doc: "requests per minute, decayed with a 10 min time constant, local plus remote"},
	idxRate1h: {Name: "rate_1h", Unit: "req/min", Scaling: Log1p, Max: maxRatePerMin,
		Doc: "requests per minute, decayed with a 1 h time constant, local plus remote"},
	idxBurstiness: {Name: "burstiness", Unit: "1", Scaling: Clamp, Min: -1, Max: 1,
		Doc: "Goh-Barabási burstiness (σ-μ)/(σ+μ) of the gaps between this instance's requests over about the last 16 gaps: -1 periodic, 0 Poisson, toward 1 bursty; 0 before 2 gaps"},
	idxEndpointEntropy: {Name: "endpoint_entropy", Unit: "1", Scaling: Clamp, Min: 0, Max: 1,
		Doc: "Shannon entropy of the endpoint mix over 8 hashed buckets, decayed with a 10 min time constant, divided by log 8"},
	idxDistinctIPs: {Name: "distinct_ips", Unit: "IPs", Scaling: Log1p, Max: maxDistinctIPs,
		Doc: "distinct client IPs since the key was first held, estimated by a 64-register HyperLogLog (standard error about 13%)"},
	idxBudgetUsed: {Name: "budget_used", Unit: "share", Scaling: Clamp, Min: 0, Max: 1,
		Doc: "mean share of the budget used at the previous decisions, decayed with a 1 min time constant"},
	idxThrottledShare: {Name: "throttled_share", Unit: "share", Scaling: Clamp, Min: 0, Max: 1,
		Doc: "share of previous decisions that throttled, decayed with a 10 min time constant"},
	idxErrorRate: {Name: "error_rate", Unit: "share", Scaling: Clamp, Min: 0, Max: 1,
		Doc: "share of gateway-reported responses that were errors, decayed with a 10 min time constant"},
	idxAuthFailureRate: {Name: "auth_failure_rate", Unit: "share", Scaling: Clamp, Min: 0, Max: 1,
		Doc: "share of gateway-reported responses that were authentication failures, decayed with a 10 min time constant"},
	idxCostPerRequest: {Name: "cost_per_request", Unit: "cost", Scaling: Log1p, Max: maxCostPerReq,
		Doc: "mean request cost, decayed with a 10 min time constant; 0 with no recent request"},
	idxKeyAge: {Name: "key_age", Unit: "h", Scaling: Log1p, Max: maxKeyAgeHours,
		Doc: "hours since the key was first seen by this store or a merged remote instance"},
	idxHourSin: {Name: "hour_sin", Unit: "1", Scaling: Clamp, Min: -1, Max: 1,
		Doc: "sin(2π·h/24) of the UTC time of day h in hours, to the second"},
	idxHourCos: {Name: "hour_cos", Unit: "1", Scaling: Clamp, Min: -1, Max: 1,
		Doc: "cos(2π·h/24) of the UTC time of day h in hours, to the second"},
	idxTierFree: {Name: "tier_free", Unit: "1", Scaling: Clamp, Min: 0, Max: 1,
		Doc: "1 when the key's tenant tier is a standard-class tier named free, in any case (one-hot; all three 0 for other tiers)"},
	idxTierPro: {Name: "tier_pro", Unit: "1", Scaling: Clamp, Min: 0, Max: 1,
		Doc: "1 when the key's tenant tier is a standard-class tier named pro, in any case"},
	idxTierEnterprise: {Name: "tier_enterprise", Unit: "1", Scaling: Clamp, Min: 0, Max: 1,
		Doc: "1 when the key's tenant tier is enterprise-class, whatever its name"},
	idxRate1d: {Name: "rate_1d", Unit: "req/min", Scaling: Log1p, Max: maxRatePerMin,
		Doc: "requests per minute, decayed with a 24 h time constant, local plus remote: the key's own baseline"},
	idxRateChange: {Name: "rate_change", Unit: "log2", Scaling: Signed, Min: -maxRateChange, Max: maxRateChange,
		Doc: "log2 of the key's hourly rate over its daily rate, each over the time the key has been seen when that is shorter: above 0 a key faster than its own day (a sleeper waking, a key compromised), below 0 slower; 0 for a new key"},
	idxCohortRate: {Name: "cohort_rate", Unit: "quantile", Scaling: Clamp, Min: 0, Max: 1,
		Doc: "where the key's hourly rate falls among the keys of its tier over about the last hour (stage 2 folds each key once per epoch): 0 the slowest, 1 the fastest; 0.5 while the tier has fewer than 20 keys"},
	idxCohortIPs: {Name: "cohort_ips", Unit: "quantile", Scaling: Clamp, Min: 0, Max: 1,
		Doc: "where the key's distinct client addresses fall among the keys of its tier, as cohort_rate"},
	idxLabelState: {Name: "label_state", Unit: "1", Scaling: Clamp, Min: -1, Max: 1,
		Doc: "what labels said about the key, decayed with a 24 h time constant: 1 after an abusive label, -1 after abusive: false (a complaint, or a hold cleared), 0 without labels"},
	idxIPSuspicion: {Name: "ip_suspicion", Unit: "1", Scaling: Clamp, Min: 0, Max: 1,
		Doc: "suspicion from sharing a client address with a key labelled abusive: half the label's weight, decayed with a 24 h time constant, taken when the key is seen from the address within a day of the label"},
}

// Schema names, orders and scales the elements of a feature vector. Its
// zero value is not useful; get one from [CurrentSchema] or [Store.Schema].
// A Schema is immutable and safe for concurrent use.
type Schema struct {
	version     int
	features    []Feature
	fingerprint uint64
}

var current = newSchema(SchemaVersion, schemaV2[:])

func newSchema(version int, fs []Feature) Schema {
	return Schema{version: version, features: fs, fingerprint: fingerprint(version, fs)}
}

// CurrentSchema returns the schema of the vectors [Store.Vector] writes.
func CurrentSchema() Schema { return current }

// Version returns the schema version.
func (s Schema) Version() int { return s.version }

// Dim returns the number of vector elements.
func (s Schema) Dim() int { return len(s.features) }

// Names returns the feature names in vector order.
func (s Schema) Names() []string {
	names := make([]string, len(s.features))
	for i, f := range s.features {
		names[i] = f.Name
	}
	return names
}

// Features returns a copy of the feature descriptions in vector order.
func (s Schema) Features() []Feature { return append([]Feature(nil), s.features...) }

// Feature returns the i-th feature; it panics if i is out of range, like
// an index expression.
func (s Schema) Feature(i int) Feature { return s.features[i] }

// Index returns the position of the named feature, or -1.
func (s Schema) Index(name string) int {
	for i, f := range s.features {
		if f.Name == name {
			return i
		}
	}
	return -1
}

// Fingerprint is a hash of the version, names, order and scaling of every
// feature. Model snapshots can carry it to refuse vectors of another schema.
func (s Schema) Fingerprint() uint64 { return s.fingerprint }

// String returns e.g. "features/v2 (24 features)".
func (s Schema) String() string {
	return fmt.Sprintf("features/v%d (%d features)", s.version, len(s.features))
}

func fingerprint(version int, fs []Feature) uint64 {
	h := fnv.New64a()
	var b [8]byte
	put := func(v uint64) {
		binary.LittleEndian.PutUint64(b[:], v)
		h.Write(b[:])
	}
	put(uint64(version))
	for _, f := range fs {
		put(uint64(len(f.Name)))
		h.Write([]byte(f.Name))
		put(uint64(f.Scaling))
		put(math.Float64bits(f.Min))
		put(math.Float64bits(f.Max))
	}
	return h.Sum64()
}

// Tier is a tenant tier as the vector encodes it: one-hot over free, pro
// and enterprise-class, all zeros for TierUnknown. The policy file defines
// the tiers; TierOf maps one to its encoding.
type Tier uint8

// Tiers.
const (
	TierUnknown Tier = iota
	TierFree
	TierPro
	TierEnterprise
)

// TierOf encodes a policy tier, given its name and whether it is
// enterprise-class (policy.Rule.Tier and policy.Rule.Enterprise()): every
// enterprise-class tier is TierEnterprise, whatever its name; a standard
// tier named free or pro, in any case, is TierFree or TierPro; any other
// tier — including a standard tier named enterprise — is TierUnknown.
// The class, not the name, decides enterprise, because the vector's
// enterprise element is what the bandit and the risk model learn
// enterprise protection from.
func TierOf(name string, enterprise bool) Tier {
	switch {
	case enterprise:
		return TierEnterprise
	case strings.EqualFold(name, "free"):
		return TierFree
	case strings.EqualFold(name, "pro"):
		return TierPro
	}
	return TierUnknown
}

func (t Tier) String() string {
	switch t {
	case TierUnknown:
		return "unknown"
	case TierFree:
		return "free"
	case TierPro:
		return "pro"
	case TierEnterprise:
		return "enterprise"
	}
	return fmt.Sprintf("Tier(%d)", uint8(t))
}
