package experiments

import (
	"errors"
	"os"
	"path/filepath"
	"strings"
	"testing"

	"github.com/devflow/flowguard/examples"
	"github.com/devflow/flowguard/internal/testenv"
	"github.com/devflow/flowguard/internal/yamlx"
	"github.com/devflow/flowguard/policy"
)

// TestBadFiles pins the exact message for each rule: a person fixing the
// file reads these, so they must name the file, the line and the problem.
func TestBadFiles(t *testing.T) {
	cases := map[string]string{
		"bad_unknown_key.yaml":            `testdata/bad_unknown_key.yaml:6: unknown key "polcy"`,
		"bad_empty.yaml":                  `testdata/bad_empty.yaml: file is empty`,
		"bad_only_comments.yaml":          `testdata/bad_only_comments.yaml: file is empty`,
		"bad_guardrail_unknown_key.yaml":  `testdata/bad_guardrail_unknown_key.yaml:7: unknown key "mx"`,
		"bad_no_experiments.yaml":         `testdata/bad_no_experiments.yaml:4: experiments: at least one experiment is required`,
		"bad_duplicate_experiment.yaml":   `testdata/bad_duplicate_experiment.yaml:6: experiments.1.name: duplicate experiment "e1", also experiment 0`,
		"bad_duplicate_variant.yaml":      `testdata/bad_duplicate_variant.yaml:7: experiments.0.variants.2.name: duplicate variant "lints", also variant 1`,
		"bad_name.yaml":                   `testdata/bad_name.yaml:2: experiments.0.name: name "bandit vs static" may hold only letters, digits, '.', '_' and '-', and must start with a letter or digit`,
		"bad_missing_salt.yaml":           `testdata/bad_missing_salt.yaml:2: experiments.0.salt: salt is required`,
		"bad_empty_salt.yaml":             `testdata/bad_empty_salt.yaml:3: layers.0.salt: salt is required`,
		"bad_duplicate_salt.yaml":         `testdata/bad_duplicate_salt.yaml:7: experiments.1.salt: salt "same" is also used by experiment "e1": their assignments would be correlated`,
		"bad_unit.yaml":                   `testdata/bad_unit.yaml:4: experiments.0.unit: "ip", want key or tenant`,
		"bad_traffic.yaml":                `testdata/bad_traffic.yaml:4: experiments.0.traffic: 1.5 must be between 0.0001 (one bucket in 10000) and 1`,
		"bad_traffic_zero.yaml":           `testdata/bad_traffic_zero.yaml:4: experiments.0.traffic: 0 must be between 0.0001 (one bucket in 10000) and 1`,
		"bad_layer_oversubscribed.yaml":   `testdata/bad_layer_oversubscribed.yaml:13: experiments.1.traffic: layer "budget" is oversubscribed: the traffic of its experiments sums to 1.2, more than 1`,
		"bad_layer_unit_mix.yaml":         `testdata/bad_layer_unit_mix.yaml:13: experiments.1.unit: tenant, but experiment "e1" in layer "budget" randomizes by key: a layer's experiments must share the unit`,
		"bad_unknown_layer.yaml":          `testdata/bad_unknown_layer.yaml:5: experiments.0.layer: unknown layer "budgett" (layers: budget)`,
		"bad_weight_negative.yaml":        `testdata/bad_weight_negative.yaml:8: experiments.0.variants.1.weight: -5 must be a finite number ≥ 0`,
		"bad_weight_nan.yaml":             `testdata/bad_weight_nan.yaml:5: experiments.0.variants.0.weight: NaN must be a finite number ≥ 0`,
		"bad_all_weights_zero.yaml":       `testdata/bad_all_weights_zero.yaml:5: experiments.0.variants: every weight is 0: at least one variant needs a positive weight`,
		"bad_policy.yaml":                 `testdata/bad_policy.yaml:6: experiments.0.variants.1.policy: "neural", want static, bandit or shadow`,
		"bad_bandit_on_static.yaml":       `testdata/bad_bandit_on_static.yaml:7: experiments.0.variants.0.bandit: bandit settings are for policy bandit or shadow, not static`,
		"bad_control_missing.yaml":        `testdata/bad_control_missing.yaml:4: experiments.0.control: variant "baseline" is not among the variants (static, lints)`,
		"bad_control_not_static.yaml":     `testdata/bad_control_not_static.yaml:4: experiments.0.control: variant "lints" has policy bandit, but the control must be static`,
		"bad_guardrail_metric.yaml":       `testdata/bad_guardrail_metric.yaml:7: experiments.0.guardrails.0.metric: "p99_latency", want enterprise_throttle_rate, legit_throttle_rate_vs_control or complaints`,
		"bad_guardrail_rate.yaml":         `testdata/bad_guardrail_rate.yaml:8: experiments.0.guardrails.0.max: 1.5 must be a rate in [0, 1]`,
		"bad_guardrail_ratio.yaml":        `testdata/bad_guardrail_ratio.yaml:8: experiments.0.guardrails.0.max_ratio: 0.5 must be a finite ratio ≥ 1`,
		"bad_guardrail_complaints.yaml":   `testdata/bad_guardrail_complaints.yaml:7: experiments.0.guardrails.0.max: 2.5 must be a whole number ≥ 0`,
		"bad_guardrail_wrong_key.yaml":    `testdata/bad_guardrail_wrong_key.yaml:7: experiments.0.guardrails.0: legit_throttle_rate_vs_control takes max_ratio, not max`,
		"bad_guardrail_no_threshold.yaml": `testdata/bad_guardrail_no_threshold.yaml:7: experiments.0.guardrails.0: max is required for complaints`,
		"bad_guardrail_min_requests.yaml": `testdata/bad_guardrail_min_requests.yaml:7: experiments.0.guardrails.0.min_requests: -1 must not be negative`,
		"bad_holdout_share.yaml":          `testdata/bad_holdout_share.yaml:3: holdout.share: 1 must be in [0, 1)`,
		"bad_tier.yaml":                   `testdata/bad_tier.yaml:5: experiments.0.targeting.tiers.1: tier name "gold plated" may hold only letters, digits, '.', '_' and '-', and must start with a letter or digit`,
		"bad_reward_mode.yaml":            `testdata/bad_reward_mode.yaml:9: experiments.0.variants.1.bandit.reward_mode: "eventually", want provisional or wait`,
		"bad_exploration.yaml":            `testdata/bad_exploration.yaml:9: experiments.0.variants.1.bandit.exploration: 0 must be positive and at most 1e6`,
		"bad_posterior.yaml":              `testdata/bad_posterior.yaml:8: experiments.0.variants.1.bandit.posterior: "neural", want gaussian or normal-inverse-gamma`,
		"bad_posterior_provisional.yaml":  `testdata/bad_posterior_provisional.yaml:9: experiments.0.variants.1.bandit.posterior: normal-inverse-gamma needs reward_mode: wait (provisional rewards are corrected exactly only under the gaussian posterior)`,
		"bad_arms.yaml":                   `testdata/bad_arms.yaml:11: experiments.0.variants.1.bandit.arms.1: arm 1 "x1": multiplier 1 is below arm 0 "x2" (2): arms must be sorted by increasing multiplier`,
		"bad_duplicate_key.yaml":          `testdata/bad_duplicate_key.yaml:4: mapping key "salt" already defined at line 3`,
		"bad_several.yaml": "testdata/bad_several.yaml:4: experiments.0.unit: \"ip\", want key or tenant\n" +
			"testdata/bad_several.yaml:5: experiments.0.traffic: 2 must be between 0.0001 (one bucket in 10000) and 1",
	}
	testenv.BadFiles(t, "testdata/bad_*.yaml", cases, func(t *testing.T, path string) error {
		_, err := Load(path)
		var ye *yamlx.Error
		var yes yamlx.Errors
		if err != nil && !errors.As(err, &ye) && !errors.As(err, &yes) {
			t.Errorf("error %T is not a yamlx error", err)
		}
		return err
	})
}

func TestMissingFile(t *testing.T) {
	_, err := Load("testdata/no_such_file.yaml")
	if err == nil || !strings.HasPrefix(err.Error(), "testdata/no_such_file.yaml: ") || !errors.Is(err, os.ErrNotExist) {
		t.Fatalf("err = %v, want one naming the file and wrapping ErrNotExist", err)
	}
}

func TestDefaultIsTheExampleFile(t *testing.T) {
	onDisk, err := os.ReadFile("../examples/experiments.yaml")
	if err != nil {
		t.Fatal(err)
	}
	if string(onDisk) != string(examples.Experiments) {
		t.Fatal("embedded default differs from examples/experiments.yaml")
	}
	c, err := Default()
	if err != nil {
		t.Fatal(err)
	}
	if c.Name != examples.ExperimentsName || len(c.Digest) != 16 {
		t.Errorf("name %q digest %q", c.Name, c.Digest)
	}
	e := c.Experiment("bandit-vs-static")
	if e == nil {
		t.Fatal("no bandit-vs-static experiment")
	}
	policies := map[Policy]bool{}
	for _, v := range e.Variants {
		policies[v.Policy] = true
	}
	if !policies[PolicyStatic] || !policies[PolicyBandit] || !policies[PolicyShadow] {
		t.Errorf("want a static, a bandit and a shadow variant, got %v", policies)
	}
	if strings.Join(e.Targeting.Tiers, ",") != "free,pro" || len(e.Guardrails) != 3 {
		t.Errorf("targeting %v, %d guardrails", e.Targeting, len(e.Guardrails))
	}
	if err := c.Validate(); err != nil {
		t.Fatalf("a parsed config does not validate: %v", err)
	}
}

func TestDefaultsFilled(t *testing.T) {
	c, err := Parse("inline.yaml", []byte(`
experiments:
  - name: e1
    salt: s1
    variants:
      - {name: control, policy: static}
      - {name: lints, policy: bandit}
      - {name: shadow, policy: shadow, bandit: {lambda: 2}}
    guardrails:
      - {metric: legit_throttle_rate_vs_control, max_ratio: 2}
`))
	if err != nil {
		t.Fatal(err)
	}
	e := c.Experiments[0]
	if e.Unit != UnitKey || e.Traffic != 1 || e.Control != "control" || e.Layer != "" {
		t.Errorf("experiment defaults: %+v", e)
	}
	for _, v := range e.Variants {
		if v.Weight != 1 {
			t.Errorf("%s: weight %v, want 1", v.Name, v.Weight)
		}
	}
	if e.Variants[0].Bandit != nil {
		t.Error("a static variant got bandit settings")
	}
	def := DefaultBanditSpec()
	if b := e.Variants[1].Bandit; b == nil || b.Exploration != def.Exploration || b.Lambda != 1 || b.Posterior != "gaussian" || b.RewardMode != RewardProvisional || len(b.Arms) != len(def.Arms) {
		t.Errorf("bandit defaults: %+v", b)
	}
	if b := e.Variants[2].Bandit; b == nil || b.Lambda != 2 || b.Exploration != def.Exploration || len(b.Arms) != 6 {
		t.Errorf("partial bandit block: %+v", b)
	}
	if g := e.Guardrails[0]; g.Threshold != 2 || g.MinRequests != 0 {
		t.Errorf("guardrail: %+v", g)
	}
}

func TestValidateWithoutFile(t *testing.T) {
	c := &Config{Name: "built.go", Experiments: []Experiment{{
		Name: "e1", Salt: "s", Unit: UnitKey, Traffic: 1, Control: "control",
		Variants: []Variant{{Name: "control", Weight: 1, Policy: PolicyStatic}, {Name: "b", Weight: -1, Policy: PolicyBandit}},
	}}}
	err := c.Validate()
	if err == nil || err.Error() != "built.go: experiments.0.variants.1.weight: -1 must be a finite number ≥ 0" {
		t.Fatalf("err = %v", err)
	}
	c.Experiments[0].Variants[1].Weight = 1
	if err := c.Validate(); err != nil {
		t.Fatal(err)
	}
	if _, err := NewAssigner(c); err != nil {
		t.Fatal(err)
	}
}

// TestResolveTiers: without policies any well-formed tier name parses;
// against them, targeting matches tiers case-insensitively, takes their
// canonical names (what assignment compares with), and names the line of
// a tier the policies lack.
func TestResolveTiers(t *testing.T) {
	var doc policy.Doc
	yd, err := yamlx.Decode("policies.yaml", []byte("tiers:\n  free: {rate: 1}\n  Pro: {rate: 2}\n  gold: {rate: 3, class: enterprise}\n"), &doc)
	if err != nil {
		t.Fatal(err)
	}
	tiers, err := policy.Compile(doc, yd)
	if err != nil {
		t.Fatal(err)
	}
	file := func(targets string) string {
		return "experiments:\n  - name: e\n    salt: s\n    targeting:\n      tiers: " + targets + "\n    variants: [{name: control, policy: static}]\n"
	}
	cases := map[string]struct {
		targets string
		want    string // the tiers after ResolveTiers
		err     string
	}{
		"canonical names": {"[free, Pro]", "free,Pro", ""},
		"any case":        {"[FREE, pro, Gold]", "free,Pro,gold", ""},
		"unknown tier":    {"[free, platinum, enterprise]", "free,platinum,enterprise", "exps.yaml:5: experiments.0.targeting.tiers.1: unknown tier \"platinum\" (the policies' tiers: Pro, free, gold)\n" + "exps.yaml:5: experiments.0.targeting.tiers.2: unknown tier \"enterprise\" (the policies' tiers: Pro, free, gold)"},
		"no targeting":    {"[]", "", ""},
	}
	for name, c := range cases {
		t.Run(name, func(t *testing.T) {
			cfg, err := Parse("exps.yaml", []byte(file(c.targets)))
			if err != nil {
				t.Fatalf("without policies any tier name parses: %v", err)
			}
			got := ""
			if err := cfg.ResolveTiers(tiers); err != nil {
				got = err.Error()
			}
			if got != c.err {
				t.Fatalf("error\n got: %s\nwant: %s", got, c.err)
			}
			if tt := strings.Join(cfg.Experiments[0].Targeting.Tiers, ","); tt != c.want {
				t.Errorf("targeting %s, want %s", tt, c.want)
			}
		})
	}
	t.Run("assignment matches the canonical name", func(t *testing.T) {
		pro, _ := tiers.Tier("pro")
		for resolve, want := range map[bool]bool{false: false, true: true} {
			cfg, err := Parse("exps.yaml", []byte(file("[PRO]")))
			if err != nil {
				t.Fatal(err)
			}
			if resolve {
				if err := cfg.ResolveTiers(tiers); err != nil {
					t.Fatal(err)
				}
			}
			a, err := NewAssigner(cfg)
			if err != nil {
				t.Fatal(err)
			}
			if _, in := a.Primary(Unit{Key: "k", Tier: pro.Name}); in != want {
				t.Errorf("resolved %v: a unit of tier %q in the experiment targeting PRO: %v, want %v", resolve, pro.Name, in, want)
			}
		}
	})
	t.Run("a Config built in Go", func(t *testing.T) {
		cfg := &Config{Name: "go", Experiments: []Experiment{{Name: "e", Targeting: Targeting{Tiers: []string{"silver"}}}}}
		if err := cfg.ResolveTiers(tiers); err == nil || err.Error() != `go: experiments.0.targeting.tiers.0: unknown tier "silver" (the policies' tiers: Pro, free, gold)` {
			t.Errorf("err = %v", err)
		}
	})
}

func FuzzParse(f *testing.F) {
	f.Add(examples.Experiments)
	files, _ := filepath.Glob("testdata/*.yaml")
	for _, p := range files {
		data, err := os.ReadFile(p)
		if err != nil {
			f.Fatal(err)
		}
		f.Add(data)
	}
	f.Fuzz(func(t *testing.T, data []byte) {
		c, err := Parse("fuzz.yaml", data)
		if err != nil {
			if !strings.HasPrefix(err.Error(), "fuzz.yaml") {
				t.Fatalf("error does not name the file: %v", err)
			}
			return
		}
		// Whatever parses must build and assign without panicking.
		a, err := NewAssigner(c)
		if err != nil {
			t.Fatalf("parsed but does not build: %v", err)
		}
		a.Primary(Unit{Key: "k", Tenant: "t", Tier: "free"})
	})
}

// A path to a device or a directory is an error, not a hang.
func TestLoadNeedsARegularFile(t *testing.T) {
	for _, p := range []string{os.DevNull, t.TempDir()} {
		if _, err := Load(p); err == nil || !strings.Contains(err.Error(), p+": cannot read: not a regular file") {
			t.Errorf("Load(%s): %v", p, err)
		}
	}
}
