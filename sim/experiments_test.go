package sim

import (
	"context"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"
)

const simExperiments = `
experiments:
  - name: exp
    salt: "sim-exp"
    targeting: {tiers: [free, pro]}
    control: control
    variants:
      - {name: control, weight: 1, policy: static}
      - {name: lints, weight: 1, policy: bandit, bandit: {exploration: 1}}
`

// experimentScenario is the small scenario with an experiments file beside
// it, cut to d.
func experimentScenario(t *testing.T, exps string, d time.Duration) (*Scenario, error) {
	t.Helper()
	small, err := os.ReadFile("../examples/scenarios/small.yaml")
	if err != nil {
		t.Fatal(err)
	}
	dir := t.TempDir()
	if err := os.WriteFile(filepath.Join(dir, "exps.yaml"), []byte(exps), 0o644); err != nil {
		t.Fatal(err)
	}
	data := string(small) + "\nexperiments: exps.yaml\n"
	file := filepath.Join(dir, "scenario.yaml")
	if err := os.WriteFile(file, []byte(data), 0o644); err != nil {
		t.Fatal(err)
	}
	s, err := ParseScenario(file, []byte(data))
	if err != nil {
		return nil, err
	}
	return shrink(s, d), nil
}

// The simulator runs experiments assignment as serving does: a static
// variant's keys get under lints exactly what the static policy gives
// them (the deterministic budget, no draw), the bandit variant's keys get
// the bandit's multipliers, and enterprise keys, outside the targeting,
// are in no variant.
func TestSimRunsExperimentsAssignment(t *testing.T) {
	s, err := experimentScenario(t, simExperiments, 12*time.Hour)
	if err != nil {
		t.Fatal(err)
	}
	// Labels acting on keys would hold labelled keys at their floor in
	// every variant alike; off, a static variant is exactly static-tier.
	s.Learning.LabelAction = "off"
	res, err := Run(context.Background(), s, Options{Seed: 3, Policies: []string{PolicyStaticTier, PolicyLinTS}})
	if err != nil {
		t.Fatal(err)
	}
	static, lints := res.Policies[PolicyStaticTier].Variants, res.Policies[PolicyLinTS].Variants
	ctl, treat := lints["exp/control"], lints["exp/lints"]
	if ctl.KeyEpochs == 0 || treat.KeyEpochs == 0 {
		t.Fatalf("variants under lints: %+v; want key-epochs in both", lints)
	}
	if share := float64(ctl.KeyEpochs) / float64(ctl.KeyEpochs+treat.KeyEpochs); share < 0.3 || share > 0.7 {
		t.Errorf("control has %.2f of the variants' key-epochs, want about half", share)
	}
	if ctl != static["exp/control"] {
		t.Errorf("the static variant's keys under lints got %+v, under the static policy %+v: want the same", ctl, static["exp/control"])
	}
	if treat == static["exp/lints"] {
		t.Errorf("the bandit variant's keys got under lints exactly what the static policy gives them: %+v", treat)
	}
	if ctl.EnterpriseThrottledFraction != 0 || treat.EnterpriseThrottledFraction != 0 {
		t.Errorf("enterprise keys are outside the targeting, yet variants report enterprise traffic: %+v", lints)
	}
}

// A variant that would need a model of its own is refused, with the
// reason: the simulator trains only the main model.
func TestSimRefusesOwnModelVariants(t *testing.T) {
	own := strings.Replace(simExperiments, "bandit: {exploration: 1}", "bandit: {exploration: 1, lambda: 5}", 1)
	_, err := experimentScenario(t, own, time.Hour)
	if err == nil || !strings.Contains(err.Error(), "exp/lints needs a model of its own") || !strings.Contains(err.Error(), "lambda 5") {
		t.Fatalf("err %v, want the variant named with its reason", err)
	}
	_, err = experimentScenario(t, "experiments: [", time.Hour)
	if err == nil || !strings.Contains(err.Error(), "experiments") {
		t.Fatalf("a broken experiments file: %v", err)
	}
}
