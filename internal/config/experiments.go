package config

import (
	"time"

	"github.com/devflow/flowguard/experiments"
	"github.com/devflow/flowguard/internal/yamlx"
	"github.com/devflow/flowguard/policy"
)

// ExperimentsEmbedded is the Experiments.File value that runs the embedded
// examples/experiments.yaml (the embedded default configuration does).
const ExperimentsEmbedded = "embedded"

// Experiments configures the A/B experiments serving runs (pipeline step 5)
// and the guardrails that stop a harmful variant.
type Experiments struct {
	// File is the experiments file (format: examples/experiments.yaml); it
	// reloads with the configuration. Its tier targeting must name tiers of
	// policies:, in any case. "embedded" runs the embedded
	// examples/experiments.yaml, as the embedded default configuration does;
	// it targets the embedded default's tiers, and under policies that lack
	// one of them that target matches no unit instead of being an error.
	// Default: "", no experiments: a configuration file must opt in, so that
	// upgrading never starts an experiment on its keys.
	File string `yaml:"file"`
	// StopLog is the file where guardrail stops are appended (fsynced) and
	// replayed from on start and reload, so that a restart does not resume a
	// stopped variant; resume one with `flowguard experiments resume`.
	// Default: "", stops held in memory only (a restart resumes them, and
	// the service warns at start).
	StopLog string `yaml:"stop_log"`
	// GuardrailEvery is how often every variant's guardrails are evaluated.
	// Default: 5s.
	GuardrailEvery time.Duration `yaml:"guardrail_every"`
	// GuardrailWindow is the sliding window of counts the guardrails judge.
	// Default: 1h.
	GuardrailWindow time.Duration `yaml:"guardrail_window"`
}

func (e *Experiments) defaults() {
	if e.GuardrailEvery == 0 {
		e.GuardrailEvery = 5 * time.Second
	}
	if e.GuardrailWindow == 0 {
		e.GuardrailWindow = time.Hour
	}
}

func (e *Experiments) validate(d *yamlx.Doc) yamlx.Errors {
	var errs yamlx.Errors
	bad := func(field, format string, args ...any) {
		errs = append(errs, d.Errorf([]string{"experiments", field}, format, args...))
	}
	if e.GuardrailEvery < 100*time.Millisecond || e.GuardrailEvery > 10*time.Minute {
		bad("guardrail_every", "%s must be between 100ms and 10m", e.GuardrailEvery)
	}
	if e.GuardrailWindow < e.GuardrailEvery || e.GuardrailWindow > 30*24*time.Hour {
		bad("guardrail_window", "%s must be at least guardrail_every and at most 720h", e.GuardrailWindow)
	}
	if e.StopLog != "" && e.File == "" {
		bad("stop_log", "set, but no experiments file is (file: a path, or embedded)")
	}
	return errs
}

// Load returns the experiments file the settings name, its tier targeting
// resolved against tiers: nil for "", the embedded default for
// "embedded". Errors name the experiments file and line.
func (e *Experiments) Load(tiers *policy.Set) (*experiments.Config, error) {
	var c *experiments.Config
	var err error
	switch e.File {
	case "":
		return nil, nil
	case ExperimentsEmbedded:
		c, err = experiments.Default()
	default:
		c, err = experiments.Load(e.File)
	}
	if err != nil {
		return nil, err
	}
	if err := c.ResolveTiers(tiers); err != nil && e.File != ExperimentsEmbedded {
		// The embedded example is not the operator's to fix: what it
		// targets that these policies lack matches no unit.
		return nil, err
	}
	return c, nil
}
