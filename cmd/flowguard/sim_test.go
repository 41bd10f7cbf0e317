package main

import (
	"bytes"
	"encoding/json"
	"os"
	"path/filepath"
	"strings"
	"testing"
)

func TestSimCLI(t *testing.T) {
	bad := filepath.Join("..", "..", "sim", "testdata", "bad_epoch.yaml")
	ok := filepath.Join("..", "..", "sim", "testdata", "ok_minimal.yaml")
	cases := map[string]struct {
		args   []string
		code   int
		stderr string
	}{
		"no arguments":     {args: []string{"sim"}, code: 2, stderr: "flowguard sim --scenario FILE"},
		"no out":           {args: []string{"sim", "--scenario", ok}, code: 2, stderr: "usage:"},
		"bad flag":         {args: []string{"sim", "--bogus"}, code: 2, stderr: "flag provided but not defined"},
		"bad scenario":     {args: []string{"sim", "--scenario", bad, "--out", "x"}, code: 1, stderr: "bad_epoch.yaml:3: epoch: epoch 7m0s must divide a day"},
		"missing scenario": {args: []string{"sim", "--scenario", "nope/none.yaml", "--out", "x"}, code: 1, stderr: "none.yaml: no such file"},
		"unknown policy":   {args: []string{"sim", "--scenario", ok, "--policies", "lints,magic", "--out", "x"}, code: 1, stderr: `unknown policy "magic"`},
		"bad progress":     {args: []string{"sim", "--scenario", ok, "--out", "x", "--progress", "maybe"}, code: 1, stderr: `--progress "maybe"`},
		"wheel still runs": {args: []string{"sim", "wheel", "--steps", "20", "--runs", "1", "--deltas", "0.5"}, code: 0},
	}
	for name, c := range cases {
		t.Run(name, func(t *testing.T) {
			var out, errOut bytes.Buffer
			if code := run(c.args, &out, &errOut); code != c.code || !strings.Contains(errOut.String(), c.stderr) {
				t.Errorf("exit %d, stderr %q; want %d and %q", code, errOut.String(), c.code, c.stderr)
			}
		})
	}
}

// Two runs of one seed write the same files; results.json has the
// contract's fields.
func TestSimRunWritesResults(t *testing.T) {
	ok := filepath.Join("..", "..", "sim", "testdata", "ok_minimal.yaml")
	dirs := []string{t.TempDir(), t.TempDir()}
	for _, dir := range dirs {
		var out, errOut bytes.Buffer
		if code := run([]string{"sim", "--scenario", ok, "--policies", "static-p99,lints,oracle", "--seed", "3",
			"--no-wall", "--out", dir}, &out, &errOut); code != 0 {
			t.Fatalf("exit %d: %s", code, errOut.String())
		}
		if errOut.Len() != 0 {
			t.Errorf("stderr is not a terminal, yet: %q", errOut.String())
		}
	}
	a, _ := os.ReadFile(filepath.Join(dirs[0], "results.json"))
	b, _ := os.ReadFile(filepath.Join(dirs[1], "results.json"))
	if !bytes.Equal(a, b) {
		t.Error("results.json differs between two runs of one seed")
	}
	var res struct {
		Scenario string
		Seed     uint64
		Policies map[string]map[string]json.RawMessage
	}
	if err := json.Unmarshal(a, &res); err != nil {
		t.Fatal(err)
	}
	for _, f := range []string{"legit_requests", "legit_throttled", "legit_throttled_fraction", "legit_keys_throttled_fraction",
		"enterprise_throttled_fraction", "abuse_requests", "abuse_served_fraction", "reward", "regret_vs_oracle",
		"fallback_epochs", "key_epochs", "wall_s",
		// Added by issue 16, beside today's fields.
		"legit_key_days_throttled_fraction", "enterprise_key_epochs_below_floor", "tiers", "reward_terms"} {
		if _, ok := res.Policies["lints"][f]; !ok {
			t.Errorf("results.json lacks %s", f)
		}
	}
	if res.Seed != 3 || len(res.Policies) != 3 {
		t.Errorf("seed %d, %d policies", res.Seed, len(res.Policies))
	}
	for _, f := range []string{"report.md", "details.json", "legit_throttle_rate.png", "abuse_served.png", "cumulative_reward.png", "cumulative_regret.png"} {
		if _, err := os.Stat(filepath.Join(dirs[0], f)); err != nil {
			t.Error(err)
		}
	}
}

func TestSimTrace(t *testing.T) {
	log := filepath.Join(t.TempDir(), "access.log")
	var b strings.Builder
	for i := 0; i < 300; i++ {
		b.WriteString(`203.0.113.9 - - [17/May/2015:10:05:03 +0000] "GET /x HTTP/1.1" 200 1 "-" "Googlebot/2.1"` + "\n")
	}
	b.WriteString(`198.51.100.1 - - [17/May/2015:10:07:03 +0000] "GET /y HTTP/1.1" 200 1 "-" "Mozilla/5.0"` + "\n")
	if err := os.WriteFile(log, []byte(b.String()), 0o644); err != nil {
		t.Fatal(err)
	}
	var out, errOut bytes.Buffer
	if code := run([]string{"sim", "--trace", log, "--policies", "static-tier"}, &out, &errOut); code != 0 {
		t.Fatalf("exit %d: %s", code, errOut.String())
	}
	if !strings.Contains(out.String(), "301 requests from 2 clients (1 bots") || !strings.Contains(out.String(), "203.0.113.9        yes") {
		t.Errorf("output:\n%s", out.String())
	}
}
