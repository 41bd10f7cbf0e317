package rewards

import (
	"bytes"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"math"
	"time"

	"github.com/devflow/flowguard/policy"
)

// Record types on flowguard.decisions.
const (
	TypeDecision = "decision" // stage 2 chose an arm for a key's epoch
	TypeOutcome  = "outcome"  // the epoch closed: what happened to its requests
)

// Policies a decision record carries: what the key's epoch was given.
const (
	PolicyBandit = "bandit" // the bandit's choice was enforced: the learner learns from it
	PolicyShadow = "shadow" // the bandit's choice was computed and logged, not enforced
	PolicyStatic = "static" // the deterministic budget (a static or stopped experiment variant), logged for reports
)

// Record is one message of the decision log, keyed by API key. A decision
// and its outcome share ID. Decisions carry the context the bandit saw;
// outcomes carry the counts.
type Record struct {
	Type   string `json:"type"`
	ID     string `json:"id"`
	Key    string `json:"key"`
	Tenant string `json:"tenant,omitempty"`
	Tier   string `json:"tier,omitempty"`
	// TierClass is the tier's class (policy.Rule.Class). Records written
	// before it existed have "": PolicyTier then classes the tier by name.
	TierClass policy.Class `json:"tier_class,omitempty"`
	Region    string       `json:"region,omitempty"`
	// At is the epoch's start for a decision, its end for an outcome.
	At time.Time `json:"at"`

	// Decision fields.
	// Experiment and Variant name the unit's experiment variant ("" when
	// in none); Policy says what was enforced (PolicyBandit, …). Records
	// written before Policy existed carried bandit or shadow in Variant;
	// ParseRecord moves it.
	Experiment string `json:"experiment,omitempty"`
	Variant    string `json:"variant,omitempty"`
	Policy     string `json:"policy,omitempty"`
	// Model is the key of the variant model (VariantModel.Key) the arm
	// was drawn from; "" for the main model.
	Model        string    `json:"model,omitempty"`
	Arm          int       `json:"arm"`
	ArmName      string    `json:"arm_name,omitempty"`
	Multiplier   float64   `json:"multiplier,omitempty"`
	Propensity   float64   `json:"propensity,omitempty"`
	ModelVersion uint64    `json:"model_version,omitempty"`
	Context      []float64 `json:"context,omitempty"`
	Floor        float64   `json:"floor,omitempty"`
	Ceiling      float64   `json:"ceiling,omitempty"`
	// Base is the requests the key's base budget (× 1) admits in the
	// epoch: rewards are normalised by it.
	Base float64 `json:"base,omitempty"`

	// Outcome fields.
	Served    int64 `json:"served,omitempty"`
	Throttled int64 `json:"throttled,omitempty"`
	Blocked   int64 `json:"blocked,omitempty"`
}

// ErrBadRecord is wrapped by every error of ParseRecord and Record.Validate.
var ErrBadRecord = errors.New("bad decision record")

// ParseRecord decodes one record strictly (no unknown fields) and
// validates it. The error wraps ErrBadRecord; it never panics.
func ParseRecord(data []byte) (Record, error) {
	var r Record
	dec := json.NewDecoder(bytes.NewReader(data))
	dec.DisallowUnknownFields()
	if err := dec.Decode(&r); err != nil {
		return Record{}, fmt.Errorf("%w: %v", ErrBadRecord, err)
	}
	if _, err := dec.Token(); err != io.EOF {
		return Record{}, fmt.Errorf("%w: data after the record", ErrBadRecord)
	}
	if r.Type == TypeDecision && r.Policy == "" && r.Experiment == "" && (r.Variant == PolicyBandit || r.Variant == PolicyShadow) {
		r.Policy, r.Variant = r.Variant, "" // the format before Policy
	}
	return r, r.Validate()
}

// Validate reports the first problem of r; the error wraps ErrBadRecord.
func (r Record) Validate() error {
	bad := func(format string, args ...any) error {
		return fmt.Errorf("%w: %s", ErrBadRecord, fmt.Sprintf(format, args...))
	}
	switch {
	case r.Type != TypeDecision && r.Type != TypeOutcome:
		return bad("type %q, want decision or outcome", r.Type)
	case r.ID == "" || len(r.ID) > 128:
		return bad("id must be 1 to 128 bytes")
	case r.Key == "" || len(r.Key) > 256:
		return bad("key must be 1 to 256 bytes")
	case r.At.Year() < 2000 || r.At.Year() > 9999:
		return bad("at %v is outside the years 2000 to 9999", r.At)
	case r.TierClass != "" && r.TierClass != policy.ClassEnterprise && r.TierClass != policy.ClassStandard:
		return bad("tier_class %q, want enterprise or standard", r.TierClass)
	}
	if r.Type == TypeOutcome {
		if r.Served < 0 || r.Throttled < 0 || r.Blocked < 0 || r.Served > 1e12 || r.Throttled > 1e12 || r.Blocked > 1e12 {
			return bad("counts must be in [0, 1e12]")
		}
		return nil
	}
	switch {
	case r.Policy != PolicyBandit && r.Policy != PolicyShadow && r.Policy != PolicyStatic:
		return bad("policy %q, want bandit, shadow or static", r.Policy)
	case len(r.Experiment) > 128 || len(r.Variant) > 128:
		return bad("experiment and variant are at most 128 bytes")
	case len(r.Model) > 256:
		return bad("model is at most 256 bytes")
	case r.Arm < 0 || r.Arm > 255:
		return bad("arm %d out of range", r.Arm)
	case !(r.Propensity > 0 && r.Propensity <= 1):
		return bad("propensity %v must be in (0, 1]", r.Propensity)
	case !(r.Base > 0 && r.Base <= 1e12):
		return bad("base %v must be in (0, 1e12]", r.Base)
	case len(r.Context) == 0 || len(r.Context) > 1024:
		return bad("context must have 1 to 1024 features")
	}
	for i, v := range r.Context {
		if math.IsNaN(v) || math.IsInf(v, 0) || math.Abs(v) > 1e6 {
			return bad("context feature %d is %v", i, v)
		}
	}
	return nil
}

// PolicyTier returns r's tier and its class, for Weights.RewardFor.
func (r Record) PolicyTier() policy.Tier { return policy.Tier{Name: r.Tier, Class: r.TierClass} }

// Outcome returns r's counts.
func (r Record) Outcome() Outcome {
	return Outcome{Served: r.Served, Throttled: r.Throttled, Blocked: r.Blocked}
}
