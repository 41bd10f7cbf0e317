package experiments

import (
	"crypto/sha256"
	"encoding/hex"
	"errors"
	"fmt"
	"io"
	"io/fs"
	"math"
	"os"
	"regexp"
	"sort"
	"strconv"
	"strings"

	"github.com/devflow/flowguard/bandit"
	"github.com/devflow/flowguard/examples"
	"github.com/devflow/flowguard/internal/yamlx"
	"github.com/devflow/flowguard/policy"
)

// Limits of an experiments file.
const (
	// Buckets is how many hash buckets units fall into. Traffic shares,
	// holdout shares and variant splits are resolved to 1/Buckets.
	Buckets = 10000
	// MaxVariants is the most variants one experiment may have.
	MaxVariants = 64
	// MaxName is the longest experiment, variant or layer name, in bytes.
	MaxName = 64
)

// A UnitKind is what an experiment randomizes: API keys or whole tenants.
type UnitKind string

// Unit kinds.
const (
	UnitKey    UnitKind = "key"
	UnitTenant UnitKind = "tenant"
)

// A Policy is how a variant sets a unit's budget multiplier.
type Policy string

// Policies.
const (
	// PolicyStatic enforces the deterministic budget (base × 1, clamped to
	// the tier's floor and ceiling).
	PolicyStatic Policy = "static"
	// PolicyBandit lets the bandit choose the multiplier.
	PolicyBandit Policy = "bandit"
	// PolicyShadow computes and logs the bandit's choice but enforces the
	// deterministic budget.
	PolicyShadow Policy = "shadow"
)

// A RewardMode says when a bandit variant learns from an epoch.
type RewardMode string

// Reward modes.
const (
	// RewardProvisional updates at epoch close with a provisional reward
	// (no label yet = benign) and corrects it when a late label arrives.
	RewardProvisional RewardMode = "provisional"
	// RewardWait updates only once the attribution window has closed.
	RewardWait RewardMode = "wait"
)

// A Metric is what a guardrail watches.
type Metric string

// Guardrail metrics.
const (
	// MetricEnterpriseThrottleRate is the share of enterprise-tier requests
	// a variant throttled. Threshold (YAML max): a rate in [0, 1].
	MetricEnterpriseThrottleRate Metric = "enterprise_throttle_rate"
	// MetricLegitThrottleRatio is a variant's throttle rate of legitimate
	// requests divided by the control's. Threshold (YAML max_ratio): ≥ 1.
	MetricLegitThrottleRatio Metric = "legit_throttle_rate_vs_control"
	// MetricComplaints counts false-throttle complaints against a variant's
	// units. Threshold (YAML max): a whole number ≥ 0.
	MetricComplaints Metric = "complaints"
)

// Config is an experiments file: an optional global holdout, the layers,
// and the experiments. Parse fills every default, so a *Config from Parse,
// Load or Default is complete; a Config built in Go must set every field
// (Validate checks it).
type Config struct {
	// Holdout keeps a share of units out of every experiment. Default: none.
	Holdout *Holdout `yaml:"holdout"`
	// Layers are the mutually exclusive layers experiments may share.
	Layers []Layer `yaml:"layers"`
	// Experiments, in the order of the file. The order matters: in a layer,
	// experiments take consecutive bucket slices in this order, and when a
	// unit is in several experiments the first one decides its budget.
	Experiments []Experiment `yaml:"experiments"`

	// Name is the file's path, or examples.ExperimentsName for the default.
	Name string `yaml:"-"`
	// Digest is the first 16 hex digits of the SHA-256 of the file's bytes.
	// Stop records carry it.
	Digest string `yaml:"-"`

	doc *yamlx.Doc // the parsed file, so ResolveTiers's errors name lines
}

// Holdout keeps units out of every experiment: a unit is held out when
// hash(Salt, unit) mod Buckets < Share × Buckets. It applies to each
// experiment's own unit kind (a key for key experiments, a tenant for
// tenant experiments).
type Holdout struct {
	// Salt seeds the holdout hash. Required.
	Salt string `yaml:"salt"`
	// Share is the held-out share of units, in [0, 1). Default: 0.
	Share float64 `yaml:"share"`
}

// A Layer is a set of mutually exclusive experiments: hash(Salt, unit)
// mod Buckets picks at most one of them per unit.
type Layer struct {
	// Name is what experiments refer to. Required.
	Name string `yaml:"name"`
	// Salt seeds the layer hash. Required.
	Salt string `yaml:"salt"`
}

// An Experiment splits a share of its layer's units between variants.
type Experiment struct {
	// Name identifies the experiment in decisions, logs and stop records.
	// Letters, digits, '.', '_' and '-'; at most MaxName bytes. Required.
	Name string `yaml:"name"`
	// Layer names the layer the experiment is in. Default: "", a layer of
	// its own.
	Layer string `yaml:"layer"`
	// Salt seeds the hash that picks the variant. Required, and unique in
	// the file: two experiments with one salt would split units alike.
	Salt string `yaml:"salt"`
	// Unit is what is randomized: key or tenant. Default: key.
	Unit UnitKind `yaml:"unit"`
	// Traffic is the share of the layer's units that enter, in
	// [1/Buckets, 1]. The experiments of a layer take consecutive slices,
	// so their traffic sums to at most 1. Default: 1.
	Traffic float64 `yaml:"traffic"`
	// Targeting restricts the experiment to some units. Default: all.
	Targeting Targeting `yaml:"targeting"`
	// Control names the static variant the others are compared with, whose
	// policy a stopped variant's units get. Default: "control".
	Control string `yaml:"control"`
	// Variants split the experiment's units by weight.
	Variants []Variant `yaml:"variants"`
	// Guardrails stop a variant that does harm.
	Guardrails []Guardrail `yaml:"guardrails"`
}

// UnmarshalYAML fills the defaults of keys the file leaves out, so that an
// explicit invalid value (traffic: 0) is still reported.
func (e *Experiment) UnmarshalYAML(unmarshal func(any) error) error {
	type plain Experiment
	p := plain{Unit: UnitKey, Traffic: 1, Control: "control"}
	if err := unmarshal(&p); err != nil {
		return err
	}
	*e = Experiment(p)
	return nil
}

// Targeting restricts an experiment to units whose request matches every
// non-empty list. A unit the experiment's slice holds but whose request is
// not targeted is in no experiment of that layer.
type Targeting struct {
	// Tiers are tiers of the policy file, matched case-insensitively.
	// Parse checks only that each is a well-formed name; ResolveTiers checks
	// them against the policies and rewrites each to the tier's canonical
	// name, as assignment compares it with policy.Rule.Tier. Default: all.
	Tiers []string `yaml:"tiers"`
	// Tenants by name. Default: all.
	Tenants []string `yaml:"tenants"`
	// Regions as the request names them. Default: all.
	Regions []string `yaml:"regions"`
}

// A Variant is one arm of an experiment.
type Variant struct {
	// Name identifies the variant; same rules as Experiment.Name. Required.
	Name string `yaml:"name"`
	// Weight is the variant's relative share of the experiment's units,
	// finite and ≥ 0; a weight-0 variant gets no units. Default: 1.
	Weight float64 `yaml:"weight"`
	// Policy is static, bandit or shadow. Required.
	Policy Policy `yaml:"policy"`
	// Bandit configures the bandit of a bandit or shadow variant.
	// Default (for those policies): DefaultBanditSpec(); nil for static.
	Bandit *BanditSpec `yaml:"bandit"`
}

// UnmarshalYAML fills the defaults of keys the file leaves out.
func (v *Variant) UnmarshalYAML(unmarshal func(any) error) error {
	type plain Variant
	p := plain{Weight: 1}
	if err := unmarshal(&p); err != nil {
		return err
	}
	*v = Variant(p)
	return nil
}

// BanditSpec configures the bandit of one variant.
type BanditSpec struct {
	// Arms are the multipliers to choose from. Default: bandit.DefaultArms().
	Arms bandit.ArmSet `yaml:"arms"`
	// Exploration is the LinTS exploration scale v, in (0, 1e6].
	// Default: 0.5.
	Exploration float64 `yaml:"exploration"`
	// Lambda is the prior precision of the coefficients, in (0, 1e6].
	// Default: 1.
	Lambda float64 `yaml:"lambda"`
	// Posterior is gaussian or normal-inverse-gamma. Default: gaussian.
	Posterior string `yaml:"posterior"`
	// RewardMode is provisional or wait. Default: provisional.
	RewardMode RewardMode `yaml:"reward_mode"`
}

// DefaultBanditSpec returns the bandit settings of a variant that gives
// none: the default arms, exploration 0.5, lambda 1, a Gaussian posterior
// and provisional rewards.
func DefaultBanditSpec() BanditSpec {
	return BanditSpec{
		Arms:        bandit.DefaultArms(),
		Exploration: 0.5,
		Lambda:      1,
		Posterior:   "gaussian",
		RewardMode:  RewardProvisional,
	}
}

// UnmarshalYAML fills the defaults of keys the file leaves out.
func (b *BanditSpec) UnmarshalYAML(unmarshal func(any) error) error {
	type plain BanditSpec
	p := plain(DefaultBanditSpec())
	if err := unmarshal(&p); err != nil {
		return err
	}
	*b = BanditSpec(p)
	return nil
}

// BanditPosterior returns the posterior model Posterior names.
func (b *BanditSpec) BanditPosterior() bandit.Posterior {
	if b.Posterior == "normal-inverse-gamma" {
		return bandit.NormalInverseGamma
	}
	return bandit.Gaussian
}

// A Guardrail stops a variant whose metric goes past a threshold; see
// CheckGuardrails for how each metric is judged.
type Guardrail struct {
	// Metric is enterprise_throttle_rate, legit_throttle_rate_vs_control or
	// complaints. Required.
	Metric Metric `yaml:"metric"`
	// Threshold is the largest acceptable value: YAML key max for
	// enterprise_throttle_rate (a rate in [0, 1]) and complaints (a whole
	// number ≥ 0), max_ratio for legit_throttle_rate_vs_control (≥ 1).
	// Required.
	Threshold float64 `yaml:"-"`
	// MinRequests is how many requests (of the kind the metric counts) a
	// variant, and for a ratio its control, must have seen before the
	// guardrail can trip. Default: 0.
	MinRequests int64 `yaml:"min_requests"`

	thresholdKey string // the key(s) the file gave the threshold under
}

// UnmarshalYAML reads max or max_ratio into Threshold.
func (g *Guardrail) UnmarshalYAML(unmarshal func(any) error) error {
	var raw guardrailFile
	if err := unmarshal(&raw); err != nil {
		return err
	}
	*g = Guardrail{Metric: raw.Metric, Threshold: math.NaN(), MinRequests: raw.MinRequests}
	switch {
	case raw.Max != nil && raw.MaxRatio != nil:
		g.thresholdKey = "max and max_ratio"
	case raw.Max != nil:
		g.Threshold, g.thresholdKey = *raw.Max, "max"
	case raw.MaxRatio != nil:
		g.Threshold, g.thresholdKey = *raw.MaxRatio, "max_ratio"
	}
	return nil
}

// guardrailFile is a guardrail as written.
type guardrailFile struct {
	Metric      Metric   `yaml:"metric"`
	Max         *float64 `yaml:"max"`
	MaxRatio    *float64 `yaml:"max_ratio"`
	MinRequests int64    `yaml:"min_requests"`
}

// MaxFileBytes bounds an experiments file: a path to a device, a pipe or
// a huge file is an error, not a hang.
const MaxFileBytes = 4 << 20

// Load reads and validates the experiments file at path, a regular file
// of at most MaxFileBytes.
func Load(path string) (*Config, error) {
	data, err := readRegular(path)
	if err != nil {
		var pe *fs.PathError
		if errors.As(err, &pe) {
			err = pe.Err // the path is said once, first
		}
		return nil, fmt.Errorf("%s: cannot read: %w", path, err)
	}
	return Parse(path, data)
}

func readRegular(path string) ([]byte, error) {
	f, err := os.Open(path)
	if err != nil {
		return nil, err
	}
	defer f.Close()
	st, err := f.Stat()
	if err != nil {
		return nil, err
	}
	if !st.Mode().IsRegular() {
		return nil, errors.New("not a regular file")
	}
	if st.Size() > MaxFileBytes {
		return nil, fmt.Errorf("%d bytes, more than %d", st.Size(), MaxFileBytes)
	}
	return io.ReadAll(io.LimitReader(f, MaxFileBytes+1))
}

// Default returns the embedded default, examples/experiments.yaml.
func Default() (*Config, error) {
	return Parse(examples.ExperimentsName, examples.Experiments)
}

// Parse decodes and validates an experiments file, naming it file in
// errors. Unknown keys are errors; every error names the file and line,
// and all of them are returned together as yamlx.Errors.
func Parse(file string, data []byte) (*Config, error) {
	if onlyComments(data) {
		return nil, &yamlx.Error{File: file, Msg: "file is empty"}
	}
	var c Config
	doc, err := yamlx.Decode(file, data, &c)
	if err != nil {
		return nil, err
	}
	c.Name, c.doc = file, doc
	if errs := c.validate(doc); len(errs) > 0 {
		return nil, errs
	}
	for i := range c.Experiments {
		for j := range c.Experiments[i].Variants {
			v := &c.Experiments[i].Variants[j]
			if v.Bandit == nil && v.Policy != PolicyStatic {
				spec := DefaultBanditSpec()
				v.Bandit = &spec
			}
		}
	}
	sum := sha256.Sum256(data)
	c.Digest = hex.EncodeToString(sum[:8])
	return &c, nil
}

// onlyComments reports whether data holds nothing but blank lines and
// comments, which yaml.v3 reports as a bare EOF.
func onlyComments(data []byte) bool {
	for _, line := range strings.Split(string(data), "\n") {
		if line = strings.TrimSpace(line); line != "" && !strings.HasPrefix(line, "#") {
			return false
		}
	}
	return true
}

// Validate reports every problem with c as yamlx.Errors; without the
// file's node tree the errors name the file but no line.
func (c *Config) Validate() error {
	if errs := c.validate(&yamlx.Doc{File: c.Name}); len(errs) > 0 {
		return errs
	}
	return nil
}

// ResolveTiers checks every targeted tier against the tiers the policy
// file defines, matching case-insensitively, and rewrites each to the
// tier's canonical name (policy.Tier.Name, which policy.Rule.Tier and so
// Unit.Tier carry). Call it before c is shared. A tier the policies lack
// is an error, as yamlx.Errors naming the experiments file and line (no
// line for a Config built in Go); the tiers it can resolve are rewritten
// even then.
func (c *Config) ResolveTiers(tiers *policy.Set) error {
	d := c.doc
	if d == nil {
		d = &yamlx.Doc{File: c.Name}
	}
	var errs yamlx.Errors
	for i := range c.Experiments {
		targeted := c.Experiments[i].Targeting.Tiers
		for j, name := range targeted {
			t, ok := tiers.Tier(name)
			if !ok {
				errs = append(errs, d.Errorf([]string{"experiments", strconv.Itoa(i), "targeting", "tiers", strconv.Itoa(j)},
					"unknown tier %q (the policies' tiers: %s)", name, strings.Join(tiers.Tiers(), ", ")))
				continue
			}
			targeted[j] = t.Name
		}
	}
	if len(errs) > 0 {
		return errs
	}
	return nil
}

// Experiment returns the experiment with the given name, or nil.
func (c *Config) Experiment(name string) *Experiment {
	for i := range c.Experiments {
		if c.Experiments[i].Name == name {
			return &c.Experiments[i]
		}
	}
	return nil
}

// Variant returns the variant with the given name, or nil.
func (e *Experiment) Variant(name string) *Variant {
	for i := range e.Variants {
		if e.Variants[i].Name == name {
			return &e.Variants[i]
		}
	}
	return nil
}

var namePattern = regexp.MustCompile(`^[A-Za-z0-9][A-Za-z0-9._-]*$`)

// checkName returns what is wrong with a name, or "".
func checkName(name string) string {
	switch {
	case name == "":
		return "name is required"
	case len(name) > MaxName:
		return fmt.Sprintf("name %q is %d bytes long, at most %d allowed", name, len(name), MaxName)
	case !namePattern.MatchString(name):
		return fmt.Sprintf("name %q may hold only letters, digits, '.', '_' and '-', and must start with a letter or digit", name)
	}
	return ""
}

// validator collects errors against one document.
type validator struct {
	doc   *yamlx.Doc
	errs  yamlx.Errors
	salts map[string]string // salt → who uses it
}

func (v *validator) bad(path []string, format string, args ...any) {
	v.errs = append(v.errs, v.doc.Errorf(path, format, args...))
}

func (v *validator) name(path []string, name string) bool {
	if msg := checkName(name); msg != "" {
		v.bad(append(path, "name"), "%s", msg)
		return false
	}
	return true
}

// salt checks that a salt is given and not shared: two hashes with one salt
// would put the same units in the same buckets.
func (v *validator) salt(path []string, salt, who string) {
	path = append(path, "salt")
	if salt == "" {
		v.bad(path, "salt is required")
		return
	}
	if other, dup := v.salts[salt]; dup {
		v.bad(path, "salt %q is also used by %s: their assignments would be correlated", salt, other)
		return
	}
	v.salts[salt] = who
}

func at(path []string, more ...string) []string {
	return append(append([]string(nil), path...), more...)
}

func (c *Config) validate(d *yamlx.Doc) yamlx.Errors {
	v := &validator{doc: d, salts: map[string]string{}}
	if h := c.Holdout; h != nil {
		v.salt([]string{"holdout"}, h.Salt, "the holdout")
		if !(h.Share >= 0 && h.Share < 1) {
			v.bad([]string{"holdout", "share"}, "%v must be in [0, 1)", h.Share)
		}
	}
	layers := map[string]int{}
	var layerNames []string
	for i, l := range c.Layers {
		p := []string{"layers", strconv.Itoa(i)}
		if v.name(p, l.Name) {
			if j, dup := layers[l.Name]; dup {
				v.bad(at(p, "name"), "duplicate layer %q, also layer %d", l.Name, j)
			} else {
				layers[l.Name] = i
				layerNames = append(layerNames, l.Name)
			}
		}
		v.salt(p, l.Salt, fmt.Sprintf("layer %q", l.Name))
	}
	if len(c.Experiments) == 0 {
		v.bad([]string{"experiments"}, "at least one experiment is required")
	}
	type layerUse struct {
		traffic float64
		unit    UnitKind
		first   string // the first experiment in it
		full    bool   // oversubscription already reported
	}
	uses := map[string]*layerUse{}
	names := map[string]int{}
	for i := range c.Experiments {
		e := &c.Experiments[i]
		p := []string{"experiments", strconv.Itoa(i)}
		if v.name(p, e.Name) {
			if j, dup := names[e.Name]; dup {
				v.bad(at(p, "name"), "duplicate experiment %q, also experiment %d", e.Name, j)
			} else {
				names[e.Name] = i
			}
		}
		v.salt(p, e.Salt, fmt.Sprintf("experiment %q", e.Name))
		unitOK := true
		if e.Unit != UnitKey && e.Unit != UnitTenant {
			v.bad(at(p, "unit"), "%q, want key or tenant", e.Unit)
			unitOK = false
		}
		trafficOK := e.Traffic >= 1.0/Buckets && e.Traffic <= 1
		if !trafficOK {
			v.bad(at(p, "traffic"), "%v must be between %v (one bucket in %d) and 1", e.Traffic, 1.0/Buckets, Buckets)
		}
		if e.Layer != "" {
			if _, ok := layers[e.Layer]; !ok {
				v.bad(at(p, "layer"), "unknown layer %q (layers: %s)", e.Layer, orNone(layerNames))
			} else {
				u := uses[e.Layer]
				if u == nil {
					u = &layerUse{unit: e.Unit, first: e.Name}
					uses[e.Layer] = u
				} else if unitOK && e.Unit != u.unit {
					v.bad(at(p, "unit"), "%s, but experiment %q in layer %q randomizes by %s: a layer's experiments must share the unit", e.Unit, u.first, e.Layer, u.unit)
				}
				if trafficOK {
					u.traffic += e.Traffic
					if u.traffic > 1+1e-9 && !u.full {
						u.full = true
						v.bad(at(p, "traffic"), "layer %q is oversubscribed: the traffic of its experiments sums to %v, more than 1", e.Layer, math.Round(u.traffic*1e6)/1e6)
					}
				}
			}
		}
		for j, tier := range e.Targeting.Tiers {
			if msg := checkName(tier); msg != "" {
				v.bad(at(p, "targeting", "tiers", strconv.Itoa(j)), "tier %s", msg)
			}
		}
		v.variants(p, e)
		v.guardrails(p, e)
	}
	sort.SliceStable(v.errs, func(i, j int) bool { return v.errs[i].Line < v.errs[j].Line })
	return v.errs
}

func (v *validator) variants(p []string, e *Experiment) {
	if len(e.Variants) > MaxVariants {
		v.bad(at(p, "variants"), "%d variants, at most %d allowed", len(e.Variants), MaxVariants)
	}
	names := map[string]int{}
	var positive bool
	weightsOK := true
	for j := range e.Variants {
		vr := &e.Variants[j]
		q := at(p, "variants", strconv.Itoa(j))
		if v.name(q, vr.Name) {
			if k, dup := names[vr.Name]; dup {
				v.bad(at(q, "name"), "duplicate variant %q, also variant %d", vr.Name, k)
			} else {
				names[vr.Name] = j
			}
		}
		if math.IsNaN(vr.Weight) || math.IsInf(vr.Weight, 0) || vr.Weight < 0 {
			v.bad(at(q, "weight"), "%v must be a finite number ≥ 0", vr.Weight)
			weightsOK = false
		} else if vr.Weight > 0 {
			positive = true
		}
		switch vr.Policy {
		case PolicyStatic:
			if vr.Bandit != nil {
				v.bad(at(q, "bandit"), "bandit settings are for policy bandit or shadow, not static")
			}
		case PolicyBandit, PolicyShadow:
			if vr.Bandit != nil {
				v.bandit(at(q, "bandit"), vr.Bandit)
			}
		default:
			v.bad(at(q, "policy"), "%q, want static, bandit or shadow", vr.Policy)
		}
	}
	if weightsOK && !positive && len(e.Variants) > 0 {
		v.bad(at(p, "variants"), "every weight is 0: at least one variant needs a positive weight")
	}
	c, ok := names[e.Control]
	switch {
	case !ok:
		all := make([]string, len(e.Variants))
		for j, vr := range e.Variants {
			all[j] = vr.Name
		}
		v.bad(at(p, "control"), "variant %q is not among the variants (%s)", e.Control, orNone(all))
	case e.Variants[c].Policy != PolicyStatic:
		v.bad(at(p, "control"), "variant %q has policy %s, but the control must be static", e.Control, e.Variants[c].Policy)
	}
}

func (v *validator) bandit(p []string, b *BanditSpec) {
	if err := b.Arms.Validate(); err != nil {
		var ae *bandit.ArmError
		if errors.As(err, &ae) {
			v.bad(at(p, "arms", strconv.Itoa(ae.Index)), "%s", ae.Error())
		} else {
			v.bad(at(p, "arms"), "%v", err)
		}
	}
	for _, f := range []struct {
		key string
		val float64
	}{{"exploration", b.Exploration}, {"lambda", b.Lambda}} {
		if !(f.val > 0) || f.val > 1e6 {
			v.bad(at(p, f.key), "%v must be positive and at most 1e6", f.val)
		}
	}
	switch b.Posterior {
	case "gaussian", "normal-inverse-gamma":
	default:
		v.bad(at(p, "posterior"), "%q, want gaussian or normal-inverse-gamma", b.Posterior)
	}
	switch b.RewardMode {
	case RewardProvisional, RewardWait:
	default:
		v.bad(at(p, "reward_mode"), "%q, want provisional or wait", b.RewardMode)
	}
	if b.Posterior == "normal-inverse-gamma" && b.RewardMode == RewardProvisional {
		v.bad(at(p, "posterior"), "normal-inverse-gamma needs reward_mode: wait (provisional rewards are corrected exactly only under the gaussian posterior)")
	}
}

func (v *validator) guardrails(p []string, e *Experiment) {
	for j, g := range e.Guardrails {
		q := at(p, "guardrails", strconv.Itoa(j))
		var key string
		switch g.Metric {
		case MetricEnterpriseThrottleRate, MetricComplaints:
			key = "max"
		case MetricLegitThrottleRatio:
			key = "max_ratio"
		default:
			v.bad(at(q, "metric"), "%q, want %s, %s or %s", g.Metric,
				MetricEnterpriseThrottleRate, MetricLegitThrottleRatio, MetricComplaints)
			continue
		}
		if g.MinRequests < 0 {
			v.bad(at(q, "min_requests"), "%d must not be negative", g.MinRequests)
		}
		if g.thresholdKey != "" && g.thresholdKey != key {
			v.bad(q, "%s takes %s, not %s", g.Metric, key, g.thresholdKey)
			continue
		}
		if g.thresholdKey == "" && math.IsNaN(g.Threshold) {
			v.bad(q, "%s is required for %s", key, g.Metric)
			continue
		}
		t, path := g.Threshold, at(q, key)
		switch g.Metric {
		case MetricEnterpriseThrottleRate:
			if !(t >= 0 && t <= 1) {
				v.bad(path, "%v must be a rate in [0, 1]", t)
			}
		case MetricLegitThrottleRatio:
			if !(t >= 1) || math.IsInf(t, 1) {
				v.bad(path, "%v must be a finite ratio ≥ 1", t)
			}
		case MetricComplaints:
			if !(t >= 0) || t != math.Trunc(t) || math.IsInf(t, 1) {
				v.bad(path, "%v must be a whole number ≥ 0", t)
			}
		}
	}
}

func orNone(names []string) string {
	if len(names) == 0 {
		return "none"
	}
	return strings.Join(names, ", ")
}

func contains(list []string, s string) bool {
	for _, x := range list {
		if x == s {
			return true
		}
	}
	return false
}
