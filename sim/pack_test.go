package sim

import (
	"bytes"
	"context"
	"path/filepath"
	"strings"
	"testing"
	"time"
)

// packScenarios parses every scenario of the pack, each cut to d.
func packScenarios(t *testing.T, d time.Duration) []*Scenario {
	t.Helper()
	files, err := filepath.Glob("../examples/scenarios/pack/*.yaml")
	if err != nil || len(files) < 8 {
		t.Fatalf("the pack has %d scenarios (%v), want at least 8", len(files), err)
	}
	var out []*Scenario
	for _, f := range files {
		s, err := parseFile(t, f)
		if err != nil {
			t.Fatal(err)
		}
		if s.Description == "" {
			t.Errorf("%s says nothing of what it tests (description)", f)
		}
		out = append(out, shrink(s, d))
	}
	return out
}

// The oracle is a bound: no policy beats it on any outcome of any
// scenario of the pack (here each cut to its first hours, and the small
// scenario, whose first incident starts at 14h, cut to 16h). make sim-pack
// checks the whole pack the same way (pack.md, "Bound").
func TestOracleIsABound(t *testing.T) {
	scenarios := append(packScenarios(t, 6*time.Hour), shrink(smallScenario(t), 16*time.Hour))
	res, err := RunPack(context.Background(), scenarios, PackOptions{Seeds: []uint64{1}, Policies: AllPolicies})
	if err != nil {
		t.Fatal(err)
	}
	for _, s := range res.Scenarios {
		o := s.Policies[PolicyOracle]
		for _, name := range s.Order {
			for _, m := range OutcomeMetrics {
				if got, bound := s.Policies[name][m].Mean, o[m].Mean; got < bound-1e-12 {
					t.Errorf("%s: %s beats the oracle on %s: %v < %v", s.Scenario, name, m, got, bound)
				}
			}
		}
		if len(s.Checks) == 0 {
			t.Errorf("%s: no target judged", s.Scenario)
		}
	}
}

// Seeds give means and intervals; the same seeds give the same pack,
// byte for byte.
func TestPackSeedsAndDeterminism(t *testing.T) {
	run := func() *PackResult {
		res, err := RunPack(context.Background(), []*Scenario{shrink(smallScenario(t), 4*time.Hour)},
			PackOptions{Seeds: []uint64{1, 2, 3}, Policies: []string{PolicyStaticTier, PolicyLinTS}, NoWall: true})
		if err != nil {
			t.Fatal(err)
		}
		return res
	}
	a, b := run(), run()
	var ja, jb, table bytes.Buffer
	if err := a.WriteJSON(&ja); err != nil {
		t.Fatal(err)
	}
	if err := b.WriteJSON(&jb); err != nil {
		t.Fatal(err)
	}
	if ja.String() != jb.String() {
		t.Error("two runs of the same seeds differ")
	}
	st := a.Scenarios[0].Policies[PolicyLinTS]["legit_throttled_fraction"]
	if len(st.Values) != 3 || !(st.Lo <= st.Mean && st.Mean <= st.Hi) {
		t.Errorf("legit throttled over 3 seeds: %+v", st)
	}
	if err := a.WriteTable(&table); err != nil {
		t.Fatal(err)
	}
	for _, want := range []string{"| small | lints |", "| small | static-tier |", "## Targets", "targets met"} {
		if !strings.Contains(table.String(), want) {
			t.Errorf("the pack table lacks %q:\n%s", want, table.String())
		}
	}
}

func TestStatInterval(t *testing.T) {
	s := newStat([]float64{1, 2, 3})
	// mean 2, sd 1, se 1/√3, t(2) = 4.303
	if s.Mean != 2 || s.Lo > -0.48 || s.Lo < -0.49 || s.Hi < 4.48 || s.Hi > 4.49 {
		t.Errorf("interval %+v, want 2 [−0.484, 4.484]", s)
	}
	if one := newStat([]float64{5}); one.Lo != 5 || one.Hi != 5 {
		t.Errorf("one seed: %+v", one)
	}
}
