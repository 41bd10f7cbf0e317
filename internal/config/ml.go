package config

import (
	"errors"
	"fmt"
	"math"
	"strconv"
	"strings"
	"time"

	"github.com/devflow/flowguard/bandit"
	"github.com/devflow/flowguard/experiments"
	"github.com/devflow/flowguard/features"
	"github.com/devflow/flowguard/internal/yamlx"
	"github.com/devflow/flowguard/rewards"
)

// ML configures stages 2 and 3 of the pipeline: features, the risk model
// and the bandit. Policies decide which keys use it (ml: on|shadow|off).
type ML struct {
	// Arms are the multipliers the bandit chooses from, sorted. Default: the
	// arms of examples/arms.yaml (x0.25, x0.5, x1, x1.5, x2, x4).
	Arms bandit.ArmSet `yaml:"arms"`
	// Epoch is how long a key keeps the multiplier stage 2 chose for it.
	// Default: 60s.
	Epoch time.Duration `yaml:"epoch"`
	// Deadline bounds stage 2; past it the key gets the deterministic
	// budget for the epoch. Default: 2ms.
	Deadline time.Duration `yaml:"deadline"`
	// BlockThreshold is the risk at or above which a key of a tenant with
	// auto_block is blocked. Default: 0.95.
	BlockThreshold float64 `yaml:"block_threshold"`
	// ShrinkRisk is the risk below which the bandit draws only arms at or
	// above ×1: a key the risk model does not suspect keeps at least its
	// base budget, and only suspected keys can be shrunk toward the floor.
	// -1 turns it off (every key can be shrunk). Default: 0.5, the risk
	// model's own boundary; docs/pipeline.md says what it gains and costs.
	ShrinkRisk float64 `yaml:"shrink_risk"`
	// MaxModelAge is how old the bandit's snapshot may be before decisions
	// fall back as stale_model. Default: 10m.
	MaxModelAge time.Duration `yaml:"max_model_age"`
	// Posterior is gaussian or normal-inverse-gamma. Default: gaussian.
	Posterior string `yaml:"posterior"`
	// Exploration is the LinTS exploration scale v. Default: 0.5.
	Exploration float64 `yaml:"exploration"`
	// Lambda is the prior precision of the bandit's coefficients. Default: 1.
	Lambda float64 `yaml:"lambda"`
	// Learner is where bandit snapshots come from: "embedded" trains and
	// publishes them in this process; "remote" waits for a separate learner
	// to publish them, and until one arrives decisions fall back as
	// no_model. Default: embedded.
	Learner string `yaml:"learner"`
	// ModelPoll is how often, with learner: remote, serving looks for newer
	// model parts (in Redis when configured, else on the models topic).
	// Default: 1s.
	ModelPoll time.Duration `yaml:"model_poll"`
	// ModelSource is where, with learner: remote, model parts are read:
	// "redis" polls this region's Redis, "kafka" follows the compacted
	// models topic (a region whose Redis the learners do not write to).
	// Default: redis when redis: is configured, else kafka.
	ModelSource string `yaml:"model_source"`
	// PublishEvery is how often the in-process learner publishes a new
	// snapshot. Default: 10s.
	PublishEvery time.Duration `yaml:"publish_every"`
	// MaxKeys caps the keys the feature store tracks; a new key beyond it
	// gets the deterministic budget (fallback feature_store_down). Default:
	// what MemoryBudgetMB holds at KeyBytes a key.
	MaxKeys int `yaml:"max_keys"`
	// MemoryBudgetMB is the memory, in MiB, serve may spend on per-key
	// state (features, epoch choices, the limiter, the learner's pending
	// decisions and per-key history, recent decisions); it sizes MaxKeys
	// when that is not set.
	// Default: 2048.
	MemoryBudgetMB int `yaml:"memory_budget_mb"`
	// IdleTTL evicts the features of a key idle this long. Default: 1h.
	IdleTTL time.Duration `yaml:"idle_ttl"`
	// RecentDecisions is how many decisions per key explain returns.
	// Default: 10.
	RecentDecisions int `yaml:"recent_decisions"`
	// RiskPrior is the risk of a key the model knows nothing about.
	// Default: 0.01.
	RiskPrior float64 `yaml:"risk_prior"`
	// ShareEvery is how often, with redis configured, the features of the
	// keys served are exchanged with the other instances through Redis:
	// one pipelined round per interval, never more than once a second.
	// Default: 1s.
	ShareEvery time.Duration `yaml:"share_every"`
	// Rewards is the objective the bandit learns (README, "Rewards").
	// throttle weighs enterprise-class tiers under enterprise and the
	// other tiers by name, in any case; a name must be a tier of policies:
	// (or enterprise, default), and not an enterprise-class one.
	// Default: served 1; throttle enterprise 20, free 0.5, pro 2, other 1;
	// abuse 5.
	Rewards rewards.Weights `yaml:"rewards"`
	// RewardMode is provisional (learn at epoch close assuming benign,
	// correct on a label) or wait (learn only after the attribution
	// window). Default: provisional.
	RewardMode string `yaml:"reward_mode"`
	// AttributionWindow is how long after a key-epoch a label still
	// changes its reward. Default: 24h, chosen on the scenario pack (docs/pipeline.md#late-labels).
	AttributionWindow time.Duration `yaml:"attribution_window"`
	// LogBuffer bounds the decision-log records waiting for the learner
	// (embedded) or for Kafka; beyond it records are dropped and counted.
	// Default: 65536.
	LogBuffer int `yaml:"log_buffer"`
	// CheckpointFile keeps the embedded learner's state across restarts.
	// Default: "" (the state lives in memory only).
	CheckpointFile string `yaml:"checkpoint_file"`
	// LabelHorizon is how far past its receipt a label's "to" may lie (clock
	// skew); POST /v1/labels answers 400 label_in_future beyond it, and the
	// learner sends such a label from Kafka to the DLQ. Default: 1h.
	LabelHorizon time.Duration `yaml:"label_horizon"`
	// MaxHeldLabels caps, per learner partition, the labels held for keys
	// with no decision records yet; beyond it such a label is refused
	// (DLQ code held_labels_full). Default: 100000.
	MaxHeldLabels int `yaml:"max_held_labels"`
	// LateLabelExamples caps, per learner partition, the hours kept after
	// they became final as benign risk examples, so that an abusive label
	// arriving after the attribution window still teaches the risk model.
	// Default: 100000; -1 keeps none.
	LateLabelExamples int `yaml:"late_label_examples"`
	// MaxHeldLabelAge is how long (event time) such a label is held for
	// its key's first record; at most attribution_window. Default: 24h, or
	// attribution_window when shorter.
	MaxHeldLabelAge time.Duration `yaml:"max_held_label_age"`
	// LabelAction is what a confirmed abusive label does to its key: "on"
	// moves it to its floor at once, or blocks it (auto_block tiers, with
	// severity ≥ label_block_severity), until abusive: false clears it,
	// whatever the bandit has learned; "off" leaves labels to the learner
	// alone. Default: on.
	LabelAction string `yaml:"label_action"`
	// LabelBlockSeverity is the severity from which a label blocks a key
	// of an auto_block tier instead of holding it at its floor. Default: 0.8.
	LabelBlockSeverity float64 `yaml:"label_block_severity"`
	// MaxLabelledKeys caps the keys abusive labels hold on an instance;
	// beyond it a label still reaches the learner but moves no key.
	// Default: 1000000.
	MaxLabelledKeys int `yaml:"max_labelled_keys"`
	// Drift configures feature-drift detection: the scored feature
	// vectors against the distribution the model learned on
	// (docs/pipeline.md, "Drift").
	Drift Drift `yaml:"drift"`
}

// Drift configures feature-drift detection (ML.Drift).
type Drift struct {
	// Mode is "fallback" (past the threshold, decisions get deterministic
	// budgets, reason drift), "observe" (measured and alerted, decisions
	// unchanged) or "off". Default: fallback.
	Mode string `yaml:"mode"`
	// Threshold is the largest per-feature PSI past which drift starts;
	// it ends below 80% of it. Default: 0.25.
	Threshold float64 `yaml:"threshold"`
	// Window is the time constant of the current distribution. Default: 1h.
	Window time.Duration `yaml:"window"`
	// Reference is the time constant of the reference distribution, what
	// the model learned on; longer than window. Default: 24h.
	Reference time.Duration `yaml:"reference"`
	// MinSamples is the key-epochs both distributions must hold (decayed)
	// before drift is judged. Default: 1000.
	MinSamples int `yaml:"min_samples"`
	// MinKeyAge is how long the store must have known a key before its
	// vectors count: a new key's features take up to an hour to settle.
	// Default: 1h.
	MinKeyAge time.Duration `yaml:"min_key_age"`
}

// Drift modes (Drift.Mode).
const (
	DriftFallback = "fallback"
	DriftObserve  = "observe"
	DriftOff      = "off"
)

// Label actions (ML.LabelAction).
const (
	LabelActionOn  = "on"
	LabelActionOff = "off"
)

// Audit configures the audit log of blocks and audited throttles.
type Audit struct {
	// File is the JSONL file records are appended to, hash-chained; "" turns
	// the audit file off. Default: "" (the example files set it).
	File string `yaml:"file"`
}

func (m *ML) defaults() {
	if m.Arms == nil {
		m.Arms = bandit.DefaultArms()
	}
	if m.Epoch == 0 {
		m.Epoch = time.Minute
	}
	if m.Deadline == 0 {
		m.Deadline = 2 * time.Millisecond
	}
	if m.BlockThreshold == 0 {
		m.BlockThreshold = 0.95
	}
	if m.ShrinkRisk == 0 {
		m.ShrinkRisk = 0.5
	}
	if m.MaxModelAge == 0 {
		m.MaxModelAge = 10 * time.Minute
	}
	if m.Posterior == "" {
		m.Posterior = "gaussian"
	}
	if m.Exploration == 0 {
		m.Exploration = 0.5
	}
	if m.Lambda == 0 {
		m.Lambda = 1
	}
	if m.Learner == "" {
		m.Learner = "embedded"
	}
	if m.PublishEvery == 0 {
		m.PublishEvery = 10 * time.Second
	}
	if m.ModelPoll == 0 {
		m.ModelPoll = time.Second
	}
	if m.MemoryBudgetMB == 0 {
		m.MemoryBudgetMB = 2048
	}
	if m.MaxKeys == 0 && m.MemoryBudgetMB > 0 {
		m.MaxKeys = int(int64(m.MemoryBudgetMB) << 20 / KeyBytes)
	}
	if m.IdleTTL == 0 {
		m.IdleTTL = time.Hour
	}
	if m.RecentDecisions == 0 {
		m.RecentDecisions = 10
	}
	if m.RiskPrior == 0 {
		m.RiskPrior = 0.01
	}
	if m.ShareEvery == 0 {
		m.ShareEvery = time.Second
	}
	m.Rewards = m.Rewards.WithDefaults()
	if m.RewardMode == "" {
		m.RewardMode = string(rewards.ModeProvisional)
	}
	if m.AttributionWindow == 0 {
		m.AttributionWindow = 24 * time.Hour
	}
	if m.LogBuffer == 0 {
		m.LogBuffer = 65536
	}
	if m.LabelHorizon == 0 {
		m.LabelHorizon = rewards.DefaultLabelHorizon
	}
	if m.MaxHeldLabels == 0 {
		m.MaxHeldLabels = 100_000
	}
	if m.LateLabelExamples == 0 {
		m.LateLabelExamples = 100_000
	}
	if m.MaxHeldLabelAge == 0 {
		m.MaxHeldLabelAge = min(24*time.Hour, m.AttributionWindow)
	}
	if m.LabelAction == "" {
		m.LabelAction = LabelActionOn
	}
	if m.LabelBlockSeverity == 0 {
		m.LabelBlockSeverity = 0.8
	}
	if m.MaxLabelledKeys == 0 {
		m.MaxLabelledKeys = 1_000_000
	}
	m.Drift = m.Drift.WithDefaults()
}

// WithDefaults fills d's zero fields with their defaults.
func (d Drift) WithDefaults() Drift {
	if d.Mode == "" {
		d.Mode = DriftFallback
	}
	if d.Threshold == 0 {
		d.Threshold = 0.25
	}
	if d.Window == 0 {
		d.Window = time.Hour
	}
	if d.Reference == 0 {
		d.Reference = 24 * time.Hour
	}
	if d.MinSamples == 0 {
		d.MinSamples = 1000
	}
	if d.MinKeyAge == 0 {
		d.MinKeyAge = time.Hour
	}
	return d
}

// Problems returns what is wrong with d, as field and message.
func (d Drift) Problems() [][2]string {
	var out [][2]string
	bad := func(field, format string, args ...any) {
		out = append(out, [2]string{field, fmt.Sprintf(format, args...)})
	}
	switch d.Mode {
	case DriftFallback, DriftObserve, DriftOff:
	default:
		bad("mode", "%q, want fallback, observe or off", d.Mode)
	}
	if !(d.Threshold > 0 && d.Threshold <= 10) {
		bad("threshold", "%v must be in (0, 10]", d.Threshold)
	}
	if d.Window < time.Second || d.Window > 7*24*time.Hour {
		bad("window", "%s must be between 1s and 168h0m0s", d.Window)
	}
	if d.Reference <= d.Window || d.Reference > 90*24*time.Hour {
		bad("reference", "%s must be longer than window (%s) and at most 2160h0m0s", d.Reference, d.Window)
	}
	if d.MinKeyAge < 0 || d.MinKeyAge > 30*24*time.Hour {
		bad("min_key_age", "%s must be between 0s and 720h0m0s", d.MinKeyAge)
	}
	if d.MinSamples < 1 || d.MinSamples > 1_000_000_000 {
		bad("min_samples", "%d must be between 1 and 1000000000", d.MinSamples)
	}
	return out
}

// RewardsConfig returns the learner's configuration for these settings.
func (m *ML) RewardsConfig() rewards.Config {
	return rewards.Config{
		// Every epoch this instance opens may wait for its outcome at once
		// (a burst of new keys), plus a full queue of them closing.
		MaxPending: max(1_000_000, m.MaxKeys+m.LogBuffer),
		Bandit: bandit.Config{ModelID: "flowguard", Arms: m.Arms, Dim: features.Dim + 1, Schema: features.CurrentSchema().Fingerprint(),
			Posterior: m.BanditPosterior(), Lambda: m.Lambda, Scale: m.Exploration},
		Risk:    features.RiskConfig{Dim: features.Dim, Prior: m.RiskPrior},
		Weights: m.Rewards,
		Window:  m.AttributionWindow,
		Mode:    rewards.Mode(m.RewardMode),

		LabelHorizon:  m.LabelHorizon,
		MaxHeldLabels: m.MaxHeldLabels,
		LateExamples:  m.LateLabelExamples,
		MaxHeldAge:    m.MaxHeldLabelAge,
	}
}

// KeyBytes is what one active key costs serve's process, in bytes of
// resident memory on the embedded default once its first epoch has closed
// into the learner (make bench-mem, 2026-12-04: 1,594–1,729 at 1M keys),
// rounded up: ml.max_keys defaults to ml.memory_budget_mb over it.
const KeyBytes = 1792

// BanditPosterior returns the posterior model Posterior names.
func (m *ML) BanditPosterior() bandit.Posterior {
	if m.Posterior == "normal-inverse-gamma" {
		return bandit.NormalInverseGamma
	}
	return bandit.Gaussian
}

func (m *ML) validate(d *yamlx.Doc) yamlx.Errors {
	var errs yamlx.Errors
	bad := func(path []string, format string, args ...any) {
		errs = append(errs, d.Errorf(append([]string{"ml"}, path...), format, args...))
	}
	if err := m.Arms.Validate(); err != nil {
		var ae *bandit.ArmError
		if errors.As(err, &ae) {
			bad([]string{"arms", strconv.Itoa(ae.Index)}, "%s", ae.Error())
		} else {
			bad([]string{"arms"}, "%v", err)
		}
	}
	between := func(field string, v, lo, hi time.Duration) {
		if v < lo || v > hi {
			bad([]string{field}, "%s must be between %s and %s", v, lo, hi)
		}
	}
	between("epoch", m.Epoch, time.Second, 24*time.Hour)
	between("deadline", m.Deadline, 100*time.Microsecond, time.Second)
	between("max_model_age", m.MaxModelAge, time.Second, 30*24*time.Hour)
	between("publish_every", m.PublishEvery, 100*time.Millisecond, time.Hour)
	between("model_poll", m.ModelPoll, 100*time.Millisecond, time.Minute)
	between("idle_ttl", m.IdleTTL, time.Second, 7*24*time.Hour)
	between("share_every", m.ShareEvery, time.Second, time.Minute)
	between("attribution_window", m.AttributionWindow, time.Minute, 90*24*time.Hour)
	between("label_horizon", m.LabelHorizon, time.Second, 24*time.Hour)
	between("max_held_label_age", m.MaxHeldLabelAge, time.Minute, max(m.AttributionWindow, time.Minute))
	if m.LateLabelExamples < -1 || m.LateLabelExamples > 10_000_000 {
		bad([]string{"late_label_examples"}, "%d must be -1 (none) or between 1 and 10000000", m.LateLabelExamples)
	}
	if m.MaxHeldLabels < 1 || m.MaxHeldLabels > 10_000_000 {
		bad([]string{"max_held_labels"}, "%d must be between 1 and 10000000", m.MaxHeldLabels)
	}
	if err := m.Rewards.Validate(); err != nil {
		bad([]string{"rewards"}, "%v", err)
	}
	switch rewards.Mode(m.RewardMode) {
	case rewards.ModeProvisional:
		if m.Posterior == "normal-inverse-gamma" {
			bad([]string{"reward_mode"}, "provisional rewards need posterior gaussian (its corrections are exact); use reward_mode: wait")
		}
	case rewards.ModeWait:
	default:
		bad([]string{"reward_mode"}, "%q, want provisional or wait", m.RewardMode)
	}
	if m.LogBuffer < 1 || m.LogBuffer > 10_000_000 {
		bad([]string{"log_buffer"}, "%d must be between 1 and 10000000", m.LogBuffer)
	}
	if m.ShrinkRisk != -1 && !(m.ShrinkRisk > 0 && m.ShrinkRisk <= 1) {
		bad([]string{"shrink_risk"}, "%v must be in (0, 1], or -1 for off", m.ShrinkRisk)
	}
	if !(m.BlockThreshold > 0 && m.BlockThreshold <= 1) {
		bad([]string{"block_threshold"}, "%v must be in (0, 1]", m.BlockThreshold)
	}
	if !(m.RiskPrior > 0 && m.RiskPrior < 1) {
		bad([]string{"risk_prior"}, "%v must be in (0, 1)", m.RiskPrior)
	}
	switch m.Learner {
	case "embedded", "remote":
	default:
		bad([]string{"learner"}, "%q, want embedded or remote", m.Learner)
	}
	switch m.Posterior {
	case "gaussian", "normal-inverse-gamma":
	default:
		bad([]string{"posterior"}, "%q, want gaussian or normal-inverse-gamma", m.Posterior)
	}
	for field, v := range map[string]float64{"exploration": m.Exploration, "lambda": m.Lambda} {
		if !(v > 0) || math.IsInf(v, 0) || v > 1e6 {
			bad([]string{field}, "%v must be positive and at most 1e6", v)
		}
	}
	if m.MemoryBudgetMB < 1 || m.MemoryBudgetMB > 1<<20 {
		bad([]string{"memory_budget_mb"}, "%d must be between 1 and 1048576 (MiB)", m.MemoryBudgetMB)
	}
	if m.MaxKeys < 1 || m.MaxKeys > 100_000_000 {
		bad([]string{"max_keys"}, "%d must be between 1 and 100000000", m.MaxKeys)
	}
	if m.RecentDecisions < 1 || m.RecentDecisions > 100 {
		bad([]string{"recent_decisions"}, "%d must be between 1 and 100", m.RecentDecisions)
	}
	if m.LabelAction != LabelActionOn && m.LabelAction != LabelActionOff {
		bad([]string{"label_action"}, "%q, want on or off", m.LabelAction)
	}
	if !(m.LabelBlockSeverity > 0 && m.LabelBlockSeverity <= 1) {
		bad([]string{"label_block_severity"}, "%v must be in (0, 1]", m.LabelBlockSeverity)
	}
	if m.MaxLabelledKeys < 1 || m.MaxLabelledKeys > 100_000_000 {
		bad([]string{"max_labelled_keys"}, "%d must be between 1 and 100000000", m.MaxLabelledKeys)
	}
	for _, pr := range m.Drift.Problems() {
		bad([]string{"drift", pr[0]}, "%s", pr[1])
	}
	return errs
}

// OwnModel reports whether a bandit variant needs a model of its own: its
// lambda, posterior or reward mode differ from ml:'s, or its arms are not
// a contiguous run of ml.arms. Other bandit variants draw from the main
// model, with their exploration and their run of arms applied per call.
func (m *ML) OwnModel(b *experiments.BanditSpec) bool { return m.OwnModelReason(b) != "" }

// OwnModelReason says why a bandit variant needs a model of its own, ""
// when it does not.
func (m *ML) OwnModelReason(b *experiments.BanditSpec) string {
	var why []string
	if _, run := m.Arms.Run(b.Arms); !run {
		why = append(why, "its arms are not a run of ml.arms")
	}
	if b.Lambda != m.Lambda {
		why = append(why, fmt.Sprintf("lambda %v, ml: %v", b.Lambda, m.Lambda))
	}
	if b.Posterior != m.Posterior {
		why = append(why, fmt.Sprintf("posterior %s, ml: %s", b.Posterior, m.Posterior))
	}
	if string(b.RewardMode) != m.RewardMode {
		why = append(why, fmt.Sprintf("reward_mode %s, ml: %s", b.RewardMode, m.RewardMode))
	}
	return strings.Join(why, "; ")
}

// VariantModels returns the models of ec's bandit variants that need their
// own (OwnModel), in file order; nil for a nil ec. Shadow variants enforce
// the deterministic budget, so there is nothing to train a model of their
// own on: they draw from the main model.
func (m *ML) VariantModels(ec *experiments.Config) []rewards.VariantModel {
	if ec == nil {
		return nil
	}
	var out []rewards.VariantModel
	for _, x := range ec.Experiments {
		for _, v := range x.Variants {
			if v.Policy != experiments.PolicyBandit || v.Bandit == nil || !m.OwnModel(v.Bandit) {
				continue
			}
			b := v.Bandit
			out = append(out, rewards.VariantModel{
				ID: x.Name + "/" + v.Name,
				// Scale 1: serving applies the variant's exploration per call.
				Bandit: bandit.Config{Arms: b.Arms, Dim: features.Dim + 1, Schema: features.CurrentSchema().Fingerprint(), Posterior: b.BanditPosterior(),
					Lambda: b.Lambda, Scale: 1},
				Mode: rewards.Mode(b.RewardMode),
			})
		}
	}
	return out
}

// LearnerConfig returns RewardsConfig with the variant models of the
// experiments file loaded with l.
func (l *Loaded) LearnerConfig() rewards.Config {
	c := l.ML.RewardsConfig()
	c.Variants = l.ML.VariantModels(l.ExperimentsConfig)
	return c
}
