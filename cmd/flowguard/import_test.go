package main

import (
	"bytes"
	"os"
	"path/filepath"
	"strings"
	"testing"

	"github.com/devflow/flowguard/internal/config"
)

// flowguard import envoy-ratelimit writes policies that flowguard config
// validate accepts, lists what it skipped on stderr and exits 0; bad input
// exits 1 with the file and line.
func TestImportEnvoyRatelimit(t *testing.T) {
	example := filepath.Join(repoRoot, "examples/gateways/envoy-ratelimit.yaml")
	var out, errOut bytes.Buffer
	if code := run([]string{"import", "envoy-ratelimit", example}, &out, &errOut); code != 0 {
		t.Fatalf("exit %d: %s", code, errOut.String())
	}
	cfg, err := config.Parse("imported", out.Bytes())
	if err != nil {
		t.Fatalf("the output does not load: %v\n%s", err, out.String())
	}
	if r := cfg.Policies.Resolve("acme", "GET /v1/reports/daily"); r.Limit.Rate != 30 || r.Scope != "/v1/reports/*" {
		t.Errorf("acme's reports: %+v", r)
	}
	wantErr := example + `:43: cannot map ("remote_address"): descriptor key "remote_address" has no flowguard meaning`
	if !strings.HasPrefix(errOut.String(), wantErr) ||
		!strings.HasSuffix(errOut.String(), "flowguard import envoy-ratelimit: 5 rules written to stdout; 1 item not mapped (listed above and in the output's header)\n") {
		t.Errorf("stderr:\n%s", errOut.String())
	}
	if !strings.Contains(out.String(), "#   "+wantErr) {
		t.Errorf("the output's header does not list the skipped descriptor:\n%s", out.String())
	}

	// --out, and --key renaming the README's own keys.
	dst := filepath.Join(t.TempDir(), "policies.yaml")
	readme := filepath.Join(repoRoot, "internal/envoyimport/testdata/readme_example2.yaml")
	out.Reset()
	errOut.Reset()
	if code := run([]string{"import", "envoy-ratelimit", "--out", dst, "--key", "message_type=tenant", "--key", "to_number=api_key", readme}, &out, &errOut); code != 0 {
		t.Fatalf("--out: exit %d: %s", code, errOut.String())
	}
	if out.Len() != 0 || errOut.String() != "flowguard import envoy-ratelimit: 2 rules written to "+dst+"\n" {
		t.Errorf("--out: stdout %q, stderr %q", out.String(), errOut.String())
	}
	out.Reset()
	errOut.Reset()
	if code := run([]string{"config", "validate", dst}, &out, &errOut); code != 0 || !strings.HasPrefix(out.String(), dst+": ok (1 tiers") {
		t.Errorf("config validate: exit %d: %s%s", code, out.String(), errOut.String())
	}
	if _, err := os.Stat(dst); err != nil {
		t.Fatal(err)
	}

	cases := map[string]struct {
		args []string
		code int
		want string // stderr
	}{
		"bad input": {[]string{"import", "envoy-ratelimit", filepath.Join(repoRoot, "internal/envoyimport/testdata/bad_negative_rate.yaml")}, 1,
			"flowguard: " + filepath.Join(repoRoot, "internal/envoyimport/testdata/bad_negative_rate.yaml") + ":6: descriptors.0.rate_limit.requests_per_unit: requests_per_unit -5 is negative\n"},
		"missing file": {[]string{"import", "envoy-ratelimit", "no-such.yaml"}, 1, "flowguard: open no-such.yaml: no such file or directory\n"},
		"no format":    {[]string{"import"}, 2, importUsage},
		"bad --key": {[]string{"import", "envoy-ratelimit", "--key", "user=apikey", example}, 2,
			`invalid value "user=apikey" for flag -key: key "user": unknown meaning "apikey", want one of api_key, tenant, method, path, header_match`},
	}
	for name, c := range cases {
		t.Run(name, func(t *testing.T) {
			var out, errOut bytes.Buffer
			code := run(c.args, &out, &errOut)
			if code != c.code || !strings.HasPrefix(errOut.String(), c.want) || out.Len() != 0 {
				t.Errorf("exit %d, stdout %q, stderr %q; want exit %d, stderr %q", code, out.String(), errOut.String(), c.code, c.want)
			}
		})
	}
}
