package main

import (
	"crypto/sha256"
	"encoding/hex"
	"encoding/json"
	"os"
	"runtime/debug"

	"bytes"
	"strings"
	"testing"

	"github.com/devflow/flowguard/serving"
)

func TestCLI(t *testing.T) {
	cases := map[string]cliCase{
		"no command":            {nil, 2, "", "Usage:"},
		"unknown command":       {[]string{"frobnicate"}, 2, "", `unknown command "frobnicate"`},
		"help":                  {[]string{"--help"}, 0, "flowguard serve", ""},
		"version":               {[]string{"version"}, 0, "flowguard", ""},
		"validate good file":    {[]string{"config", "validate", "../../examples/policies.yaml"}, 0, "../../examples/policies.yaml: ok (3 tiers, in-memory limiter", ""},
		"validate redis file":   {[]string{"config", "validate", "../../examples/redis.yaml"}, 0, "redis limiter", ""},
		"validate grpc file":    {[]string{"config", "validate", "../../examples/grpc.yaml"}, 0, "examples/grpc.yaml: ok (3 tiers, in-memory limiter", ""},
		"validate kafka file":   {[]string{"config", "validate", "../../examples/kafka.yaml"}, 0, "examples/kafka.yaml: ok", ""},
		"validate scaled-out":   {[]string{"config", "validate", "../../examples/scaled-out.yaml"}, 0, "examples/scaled-out.yaml: ok (3 tiers, redis limiter", ""},
		"learn without config":  {[]string{"learn"}, 2, "", "usage: flowguard learn --config FILE"},
		"learn without redis":   {[]string{"learn", "--config", "../../examples/kafka.yaml"}, 1, "", "learn needs a kafka: section (the decision log and labels) and a redis: section"},
		"validate bad file":     {[]string{"config", "validate", "../../internal/config/testdata/bad_floor_above_ceiling.yaml"}, 1, "", "bad_floor_above_ceiling.yaml:6: policies.tiers.free.floor: floor 3 is above ceiling 2"},
		"validate missing file": {[]string{"config", "validate", "nope.yaml"}, 1, "", "nope.yaml: cannot read: no such file or directory"},
		"validate no file":      {[]string{"config", "validate"}, 2, "", "usage: flowguard config validate FILE"},
		"config without verb":   {[]string{"config"}, 2, "", "usage: flowguard config validate FILE"},
		"serve help":            {[]string{"serve", "--help"}, 0, "", "-config FILE"},
		"serve bad flag":        {[]string{"serve", "--port", "1"}, 2, "", "flag provided but not defined: -port"},
		"serve stray argument":  {[]string{"serve", "extra"}, 1, "", `unexpected argument "extra"`},
		"arms validate":         {[]string{"arms", "validate", "../../examples/arms.yaml"}, 0, "6 arms: x0.25 x0.5 x1 x1.5 x2 x4", ""},
		"arms validate bad":     {[]string{"arms", "validate", "../../bandit/testdata/bad_duplicate_name.yaml"}, 1, "", `bad_duplicate_name.yaml:4: arm 1 "x1": duplicate name`},
		"arms without verb":     {[]string{"arms"}, 2, "", "usage: flowguard arms validate FILE"},
		"sim wheel":             {[]string{"sim", "wheel", "--steps", "200", "--runs", "2", "--deltas", "0.5,0.9"}, 0, "Uniform expected", ""},
		"sim wheel bad delta":   {[]string{"sim", "wheel", "--deltas", "0.5,1.5"}, 1, "", "wheel: δ 1.5 outside (0, 1)"},
		"sim wheel bad number":  {[]string{"sim", "wheel", "--deltas", "half"}, 1, "", `--deltas: "half" is not a number`},
		"sim without verb":      {[]string{"sim"}, 2, "", "usage: flowguard sim wheel"},
		"audit verify missing":  {[]string{"audit", "verify", "nope.jsonl"}, 1, "", "no such file"},
		"audit without verb":    {[]string{"audit"}, 2, "", "usage: flowguard audit verify"},
		"serve bad config":      {[]string{"serve", "--config", "../../internal/config/testdata/bad_unknown_key.yaml"}, 1, "", `bad_unknown_key.yaml:5: unknown key "flor"`},
	}
	runCLI(t, cases)
}

func TestAuditVerify(t *testing.T) {
	dir := t.TempDir()
	path := dir + "/audit.jsonl"
	// Two chained records, written the way the service writes them.
	var lines []string
	prev := strings.Repeat("0", 64)
	for i := 1; i <= 2; i++ {
		rec := serving.AuditRecord{Seq: uint64(i), Time: "2026-11-23T00:00:00.000000Z", Key: "k", Decision: "block", Reason: "deny_list", Prev: prev}
		line, hash := chainLine(t, rec)
		lines = append(lines, line)
		prev = hash
	}
	os.WriteFile(path, []byte(strings.Join(lines, "")), 0o644)
	var out, errOut bytes.Buffer
	if code := run([]string{"audit", "verify", path}, &out, &errOut); code != 0 || !strings.Contains(out.String(), "ok (2 records, head "+prev) {
		t.Fatalf("exit %d: %s %s", code, out.String(), errOut.String())
	}
	out.Reset()
	if code := run([]string{"audit", "verify", "--head", prev, path}, &out, &errOut); code != 0 {
		t.Fatalf("--head of the last record: exit %d: %s", code, errOut.String())
	}
	errOut.Reset()
	// The head of the first record: the second was appended after it was
	// recorded, which is fine; a log cut back to one record is not.
	os.WriteFile(path, []byte(lines[0]), 0o644)
	if code := run([]string{"audit", "verify", "--head", prev, path}, &out, &errOut); code != 1 || !strings.Contains(errOut.String(), "cut off the end") {
		t.Fatalf("cut-off log: exit %d: %s", code, errOut.String())
	}
	errOut.Reset()
	os.WriteFile(path, []byte(strings.Replace(lines[0], `"k"`, `"x"`, 1)+lines[1]), 0o644)
	if code := run([]string{"audit", "verify", path}, &out, &errOut); code != 1 || !strings.Contains(errOut.String(), "audit.jsonl: line 1: hash does not match") {
		t.Fatalf("edited log: exit %d: %s", code, errOut.String())
	}
}

// chainLine encodes rec with its hash, as one JSONL line.
func chainLine(t *testing.T, rec serving.AuditRecord) (string, string) {
	t.Helper()
	b, _ := json.Marshal(rec)
	sum := sha256.Sum256(b)
	rec.Hash = hex.EncodeToString(sum[:])
	b, _ = json.Marshal(rec)
	return string(b) + "\n", rec.Hash
}

// cliCase is one command line and what it must do: the exit code, and
// substrings of stdout and stderr.
type cliCase struct {
	args   []string
	code   int
	stdout string
	stderr string
}

// runCLI runs each case through run, as main would.
func runCLI(t *testing.T, cases map[string]cliCase) {
	t.Helper()
	for name, c := range cases {
		t.Run(name, func(t *testing.T) {
			var out, errOut bytes.Buffer
			code := run(c.args, &out, &errOut)
			if code != c.code {
				t.Fatalf("exit %d, want %d\nstdout: %s\nstderr: %s", code, c.code, out.String(), errOut.String())
			}
			if !strings.Contains(out.String(), c.stdout) {
				t.Errorf("stdout %q lacks %q", out.String(), c.stdout)
			}
			if !strings.Contains(errOut.String(), c.stderr) {
				t.Errorf("stderr %q lacks %q", errOut.String(), c.stderr)
			}
		})
	}
}

// serve's Go soft memory limit is ml.memory_budget_mb plus the overhead,
// unless the operator set GOMEMLIMIT, which it leaves alone.
func TestMemoryLimitFromTheBudget(t *testing.T) {
	before := debug.SetMemoryLimit(-1)
	t.Cleanup(func() { debug.SetMemoryLimit(before) })
	t.Setenv("GOMEMLIMIT", "")
	limit, set := memoryLimit(2048)
	if !set || limit != (2048+memoryOverheadMB)<<20 || debug.SetMemoryLimit(-1) != limit {
		t.Fatalf("limit %d (set %v), runtime %d; want %d", limit, set, debug.SetMemoryLimit(-1), (2048+memoryOverheadMB)<<20)
	}
	debug.SetMemoryLimit(before)
	t.Setenv("GOMEMLIMIT", "3GiB")
	if _, set := memoryLimit(2048); set || debug.SetMemoryLimit(-1) != before {
		t.Fatalf("GOMEMLIMIT is set, yet serve set the limit to %d", debug.SetMemoryLimit(-1))
	}
}
