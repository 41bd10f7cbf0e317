package topics

import "testing"

// TestNames pins the names: they are a wire contract with existing
// clusters, so changing one is a migration, not a refactor.
func TestNames(t *testing.T) {
	cases := map[string]struct{ got, want string }{
		"decisions": {Decisions, "flowguard.decisions"},
		"labels":    {Labels, "flowguard.labels"},
		"dlq":       {DLQ, "flowguard.labels.dlq"},
		"models":    {Models, "flowguard.models"},
		"audit":     {Audit, "flowguard.audit"},
		"regions":   {Regions, "flowguard.regions"},
		"group":     {LearnerGroup, "flowguard-learner"},
	}
	for name, c := range cases {
		t.Run(name, func(t *testing.T) {
			if c.got != c.want {
				t.Fatalf("%s = %q, want %q", name, c.got, c.want)
			}
		})
	}
}
