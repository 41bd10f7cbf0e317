package experiments_test

import (
	"fmt"
	"log"

	"github.com/devflow/flowguard/experiments"
)

func ExampleAssigner_Primary() {
	cfg, err := experiments.Parse("inline.yaml", []byte(`
experiments:
  - name: bandit-vs-static
    salt: bandit-vs-static-2026-11
    targeting: {tiers: [free, pro]}
    variants:
      - {name: control, policy: static, weight: 50}
      - {name: lints, policy: bandit, weight: 50}
`))
	if err != nil {
		log.Fatal(err)
	}
	a, err := experiments.NewAssigner(cfg)
	if err != nil {
		log.Fatal(err)
	}
	for _, u := range []experiments.Unit{
		{Key: "k_live_1", Tier: "free"},
		{Key: "k_live_5", Tier: "pro"},
		{Key: "k_live_3", Tier: "enterprise"},
	} {
		if as, ok := a.Primary(u); ok {
			fmt.Printf("%s: %s/%s, policy %s, bucket %d\n", u.Key, as.Experiment, as.Variant, as.Policy, as.Bucket)
		} else {
			fmt.Printf("%s: in no experiment\n", u.Key)
		}
	}
	// Output:
	// k_live_1: bandit-vs-static/control, policy static, bucket 9813
	// k_live_5: bandit-vs-static/lints, policy bandit, bucket 9317
	// k_live_3: in no experiment
}
