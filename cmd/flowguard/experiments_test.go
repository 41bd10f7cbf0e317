package main

import (
	"bytes"
	"os"
	"path/filepath"
	"strings"
	"testing"
)

func TestExperimentsCLI(t *testing.T) {
	stops := filepath.Join(t.TempDir(), "stops.jsonl")
	os.WriteFile(stops, []byte(`{"op":"stop","experiment":"bandit-vs-static","variant":"lints","time":"2026-11-23T10:00:00Z"}`+"\n"), 0o644)
	cases := map[string]cliCase{
		"validate example": {[]string{"experiments", "validate", "../../examples/experiments.yaml"}, 0,
			"../../examples/experiments.yaml: ok (1 experiments, 3 variants)\n  bandit-vs-static/lints: bandit, main model\n  bandit-vs-static/lints-shadow: shadow, main model\n", ""},
		"validate own models": {[]string{"experiments", "validate", "testdata/own-model.yaml"}, 0,
			"  exp/nig: bandit, own model exp/nig@", ""},
		"validate own arms": {[]string{"experiments", "validate", "testdata/own-model.yaml"}, 0,
			" (its arms are not a run of ml.arms; lambda 5, ml: 1)\n", ""},
		"validate shadow": {[]string{"experiments", "validate", "testdata/own-model.yaml", "--config", "../../examples/scaled-out.yaml"}, 0,
			"  exp/sh: shadow, main model (a shadow variant cannot have its own: lambda 2, ml: 1)\n", ""},
		"validate unknown tier": {[]string{"experiments", "validate", "--config", "../../examples/kafka.yaml", "testdata/unknown-tier.yaml"}, 1, "",
			`unknown-tier.yaml:4: experiments.0.targeting.tiers.0: unknown tier "platinum" (the policies' tiers: enterprise, free, pro)`},
		"validate bad config":   {[]string{"experiments", "validate", "--config", "nope.yaml", "testdata/own-model.yaml"}, 1, "", "nope.yaml"},
		"validate bad file":     {[]string{"experiments", "validate", "../../experiments/testdata/bad_control_not_static.yaml"}, 1, "", `bad_control_not_static.yaml:4: experiments.0.control: variant "lints" has policy bandit, but the control must be static`},
		"validate several":      {[]string{"experiments", "validate", "../../experiments/testdata/bad_several.yaml"}, 1, "", "bad_several.yaml:4: experiments.0.unit: \"ip\", want key or tenant\n../../experiments/testdata/bad_several.yaml:5: experiments.0.traffic"},
		"validate missing file": {[]string{"experiments", "validate", "nope.yaml"}, 1, "", "nope.yaml: cannot read: no such file or directory"},
		"validate no file":      {[]string{"experiments", "validate"}, 2, "", "usage: flowguard experiments validate [--config FILE] FILE"},
		"validate bad flag":     {[]string{"experiments", "validate", "--strict", "x.yaml"}, 2, "", "flag provided but not defined: -strict"},
		"without verb":          {[]string{"experiments"}, 2, "", "usage: flowguard experiments validate [--config FILE] FILE"},
		"unknown verb":          {[]string{"experiments", "frobnicate"}, 2, "", "usage: flowguard experiments"},
		"help":                  {[]string{"experiments", "--help"}, 0, "flowguard experiments assign", ""},
		"validate help":         {[]string{"experiments", "validate", "--help"}, 0, "", "usage: flowguard experiments validate"},
		"assign":                {[]string{"experiments", "assign", "--tier", "free", "k_live_5"}, 0, "k_live_5: bandit-vs-static/", ""},
		"assign flags after key": {[]string{"experiments", "assign", "--file", "../../examples/experiments.yaml", "k_live_5", "--tier", "pro"},
			0, "k_live_5: bandit-vs-static/", ""},
		"assign untargeted":  {[]string{"experiments", "assign", "k_live_5", "--tier", "enterprise"}, 0, "k_live_5: in no experiment\n", ""},
		"assign bad file":    {[]string{"experiments", "assign", "--file", "../../experiments/testdata/bad_unit.yaml", "k"}, 1, "", `bad_unit.yaml:4: experiments.0.unit: "ip", want key or tenant`},
		"assign no key":      {[]string{"experiments", "assign", "--tier", "free"}, 2, "", "usage: flowguard experiments"},
		"assign bad flag":    {[]string{"experiments", "assign", "--tire", "free", "k"}, 2, "", "flag provided but not defined: -tire"},
		"assign bad state":   {[]string{"experiments", "assign", "--state", "../../experiments/testdata/bad_unit.yaml", "k"}, 1, "", "bad_unit.yaml:1: invalid character"},
		"resume no state":    {[]string{"experiments", "resume", "bandit-vs-static/lints"}, 2, "", "usage: flowguard experiments"},
		"resume bad name":    {[]string{"experiments", "resume", "--state", stops, "lints"}, 1, "", `resume: "lints" is not EXPERIMENT/VARIANT`},
		"resume not stopped": {[]string{"experiments", "resume", "--state", stops, "bandit-vs-static/lints-shadow"}, 1, "", "bandit-vs-static/lints-shadow is not stopped"},
	}
	runCLI(t, cases)
}

// TestExperimentsStopAndResume: a key of a stopped variant is shown with
// the control's policy until an operator resumes the variant.
func TestExperimentsStopAndResume(t *testing.T) {
	stops := filepath.Join(t.TempDir(), "stops.jsonl")
	os.WriteFile(stops, []byte(`{"op":"stop","experiment":"bandit-vs-static","variant":"lints","metric":"complaints","value":4,"threshold":3,"time":"2026-11-23T10:00:00Z"}`+"\n"), 0o644)
	assign := func() string {
		t.Helper()
		var out, errOut bytes.Buffer
		// k_live_5 is in lints in the example file.
		if code := run([]string{"experiments", "assign", "--state", stops, "--tier", "free", "k_live_5"}, &out, &errOut); code != 0 {
			t.Fatalf("exit %d: %s", code, errOut.String())
		}
		return out.String()
	}
	before := assign()
	if !strings.Contains(before, "/lints, policy static (variant stopped)") {
		t.Fatalf("stopped: %q", before)
	}
	var out, errOut bytes.Buffer
	if code := run([]string{"experiments", "resume", "--state", stops, "--reason", "fixed", "bandit-vs-static/lints"}, &out, &errOut); code != 0 {
		t.Fatalf("resume: exit %d: %s", code, errOut.String())
	}
	if out.String() != "bandit-vs-static/lints resumed: recorded in "+stops+"\n" {
		t.Errorf("resume printed %q", out.String())
	}
	if after := assign(); !strings.Contains(after, "/lints, policy bandit,") {
		t.Fatalf("resumed: %q", after)
	}
	if code := run([]string{"experiments", "resume", "--state", stops, "bandit-vs-static/lints"}, &out, &errOut); code != 1 {
		t.Errorf("second resume: exit %d", code)
	}
}
