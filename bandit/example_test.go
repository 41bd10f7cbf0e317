package bandit_test

import (
	"fmt"
	"math/rand/v2"
	"time"

	"github.com/devflow/flowguard/bandit"
)

func Example() {
	learner, err := bandit.NewLearner(bandit.Config{Dim: 2}) // the default arms x0.25 … x4
	if err != nil {
		panic(err)
	}
	rng := rand.New(rand.NewPCG(1, 2))
	// Keys with a low risk (feature 0) do well on generous budgets, risky
	// keys on tight ones.
	for i := 0; i < 3000; i++ {
		risk := rng.Float64()
		x := []float64{risk, rng.Float64()}
		arm := rng.IntN(6)
		m := bandit.DefaultArms()[arm].Multiplier
		reward := m*(0.5-risk) + 0.1*rng.NormFloat64()
		if err := learner.Update(x, arm, reward); err != nil {
			panic(err)
		}
	}
	snap, err := learner.Snapshot(time.Unix(0, 0))
	if err != nil {
		panic(err)
	}
	// An enterprise key: floor x1, ceiling x4.
	allowed, _ := snap.Allowed(1, 4)
	safe, _ := snap.Choose([]float64{0.05, 0.5}, allowed, rng)
	risky, _ := snap.Choose([]float64{0.95, 0.5}, allowed, rng)
	fmt.Printf("safe key: %s (propensity %.2f)\n", safe.Name, safe.Propensity)
	fmt.Printf("risky key: %s, never below the floor\n", risky.Name)
	// Output:
	// safe key: x4 (propensity 1.00)
	// risky key: x1, never below the floor
}
