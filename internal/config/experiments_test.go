package config

import (
	"os"
	"path/filepath"
	"testing"
)

func TestExperimentsSection(t *testing.T) {
	dir := t.TempDir()
	bad := filepath.Join(dir, "exps.yaml")
	os.WriteFile(bad, []byte("experiments:\n  - name: e\n    salt: s\n    unit: ip\n    variants: [{name: control, policy: static}]\n"), 0o644)
	targeting := func(file, tiers string) string {
		p := filepath.Join(dir, file)
		os.WriteFile(p, []byte("experiments:\n  - name: e\n    salt: s\n    targeting:\n      tiers: "+tiers+"\n    variants: [{name: control, policy: static}]\n"), 0o644)
		return p
	}
	anyCase := targeting("any-case.yaml", "[FREE]")
	unknown := targeting("unknown.yaml", "[free, platinum]")
	base := "policies:\n  tiers:\n    free: {rate: 10}\n"
	cases := map[string]struct {
		yaml, err string
		n         int // experiments loaded
	}{
		"none by default":    {base, "", 0},
		"embedded":           {"experiments: {file: embedded}\n" + base, "", 1},
		"stop log, no file":  {"experiments:\n  stop_log: s.jsonl\n" + base, "test.yaml:2: experiments.stop_log: set, but no experiments file is (file: a path, or embedded)", 0},
		"window below every": {"experiments:\n  file: embedded\n  guardrail_every: 10s\n  guardrail_window: 1s\n" + base, "test.yaml:4: experiments.guardrail_window: 1s must be at least guardrail_every and at most 720h", 0},
		"unknown key":        {"experiments:\n  files: x\n" + base, `test.yaml:2: unknown key "files"`, 0},
		"bad file":           {"experiments: {file: " + bad + "}\n" + base, bad + `:4: experiments.0.unit: "ip", want key or tenant`, 0},
		"missing file":       {"experiments: {file: " + filepath.Join(dir, "nope.yaml") + "}\n" + base, filepath.Join(dir, "nope.yaml") + ": cannot read: no such file or directory", 0},
		"tier in any case":   {"experiments: {file: " + anyCase + "}\n" + base, "", 1},
		"unknown tier":       {"experiments: {file: " + unknown + "}\n" + base, unknown + `:5: experiments.0.targeting.tiers.1: unknown tier "platinum" (the policies' tiers: free)`, 0},
	}
	for name, c := range cases {
		t.Run(name, func(t *testing.T) {
			l, err := Parse("test.yaml", []byte(c.yaml))
			got := ""
			if err != nil {
				got = err.Error()
			}
			if got != c.err {
				t.Fatalf("error\n got: %s\nwant: %s", got, c.err)
			}
			if err == nil && (l.ExperimentsConfig != nil) != (c.n > 0) {
				t.Errorf("experiments config %v", l.ExperimentsConfig)
			}
		})
	}
	l, err := Parse("test.yaml", []byte("experiments: {file: "+anyCase+"}\n"+base))
	if err != nil {
		t.Fatal(err)
	}
	if got := l.ExperimentsConfig.Experiments[0].Targeting.Tiers; len(got) != 1 || got[0] != "free" {
		t.Errorf("targeting FREE resolves to %q, want the policy's spelling free", got)
	}
	d, err := Default()
	if err != nil || d.ExperimentsConfig == nil || len(d.ExperimentsConfig.Experiments[0].Variants) < 2 {
		t.Fatalf("the embedded default runs no experiment with two variants: %v", err)
	}
}
