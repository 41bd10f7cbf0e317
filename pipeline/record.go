package pipeline

import (
	"time"

	"github.com/devflow/flowguard/policy"
	"github.com/devflow/flowguard/rewards"
)

// KeyEpoch is one key-epoch's stage-2 decision, as the decision log
// records it.
type KeyEpoch struct {
	ID     string
	Key    string
	Rule   *policy.Rule
	Region string
	Start  time.Time
	// Length is the epoch's length, for the base budget the reward is
	// relative to.
	Length time.Duration
	// Policy is what was enforced: rewards.PolicyBandit, PolicyShadow or
	// PolicyStatic.
	Policy       string
	Arm          int
	ArmName      string
	Multiplier   float64
	Propensity   float64
	ModelVersion uint64
	Context      []float64 // shared with the record: pass a copy when the buffer is reused
	// Experiment, Variant and Model name the unit's experiment variant and
	// its own model's key; "" when none.
	Experiment, Variant, Model string
}

// DecisionRecord is the one constructor of a decision-log record, for
// serving and the simulator alike.
func DecisionRecord(e KeyEpoch) rewards.Record {
	return rewards.Record{Type: rewards.TypeDecision, ID: e.ID, Key: e.Key, Tenant: e.Rule.Tenant, Tier: e.Rule.Tier, TierClass: e.Rule.Class,
		Region: e.Region, At: e.Start.UTC(), Policy: e.Policy, Arm: e.Arm, ArmName: e.ArmName,
		Multiplier: e.Multiplier, Propensity: e.Propensity, ModelVersion: e.ModelVersion,
		Context: e.Context, Floor: e.Rule.Floor, Ceiling: e.Rule.Ceiling,
		Base: EpochBase(e.Rule, e.Length), Experiment: e.Experiment, Variant: e.Variant, Model: e.Model}
}

// EpochBase is how many requests the rule's deterministic budget (×1,
// clamped to [floor, ceiling]) admits over an epoch of the given length.
func EpochBase(rule *policy.Rule, epoch time.Duration) float64 {
	limit, _ := rule.Budget(1)
	return float64(limit.Rate) * float64(epoch) / float64(limit.Period)
}
