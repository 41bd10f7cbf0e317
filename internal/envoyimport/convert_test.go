package envoyimport

import (
	"errors"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/devflow/flowguard/internal/config"
	"github.com/devflow/flowguard/internal/testenv"
	"github.com/devflow/flowguard/internal/yamlx"
	"github.com/devflow/flowguard/policy"
)

// load converts a file and loads the output the way flowguard serve and
// flowguard config validate do.
func load(t *testing.T, path string, opts Options) (*Result, *policy.Set) {
	t.Helper()
	data, err := os.ReadFile(path)
	if err != nil {
		t.Fatal(err)
	}
	res, err := Convert(path, data, opts)
	if err != nil {
		t.Fatal(err)
	}
	cfg, err := config.Parse("converted", res.YAML)
	if err != nil {
		t.Fatalf("the output does not load: %v\n%s", err, res.YAML)
	}
	return res, cfg.Policies
}

func skips(items []Item) []string {
	var out []string
	for _, it := range items {
		out = append(out, it.Skip())
	}
	return out
}

func approxs(items []Item) []string {
	var out []string
	for _, it := range items {
		out = append(out, it.Approx())
	}
	return out
}

func sameList(t *testing.T, what string, got, want []string) {
	t.Helper()
	if strings.Join(got, "\n") != strings.Join(want, "\n") {
		t.Errorf("%s:\n%s\nwant:\n%s", what, strings.Join(got, "\n"), strings.Join(want, "\n"))
	}
}

// limit is what a rule resolves to, for comparing.
type limit struct {
	rate   int64
	period time.Duration
	scope  string
}

func resolved(s *policy.Set, tenant, endpoint string) limit {
	r := s.Resolve(tenant, endpoint)
	return limit{r.Limit.Rate, r.Limit.Period, r.Scope}
}

// The examples of envoyproxy/ratelimit's README, copied as written into
// testdata/readme_example*.yaml: their descriptor keys are their own
// (database, remote_address, user…), so without --key nothing maps and
// every rule is listed with its line; the output still loads.
func TestReadmeExamples(t *testing.T) {
	const noMeaning = `has no flowguard meaning: flowguard budgets API keys, by tenant and endpoint (--key %s=api_key|tenant|method|path|header_match renames it)`
	meaning := func(key string) string { return strings.Replace(noMeaning, "%s", key, 1) }
	cases := map[string]struct {
		opts    Options
		skipped []string
		approx  []string
		check   func(t *testing.T, s *policy.Set)
	}{
		"readme_example2.yaml": {
			skipped: []string{
				`testdata/readme_example2.yaml:8: cannot map ("message_type", "marketing"),("to_number"): line 5: descriptor key "message_type" ` + meaning("message_type"),
				`testdata/readme_example2.yaml:14: cannot map ("to_number"): descriptor key "to_number" ` + meaning("to_number"),
			},
		},
		"readme_example3.yaml": {
			skipped: []string{
				`testdata/readme_example3.yaml:4: cannot map ("remote_address"): descriptor key "remote_address" ` + meaning("remote_address"),
				`testdata/readme_example3.yaml:10: cannot map ("remote_address", "50.0.0.5"): descriptor key "remote_address" ` + meaning("remote_address"),
			},
		},
		"readme_example5.yaml": {
			skipped: []string{
				`testdata/readme_example5.yaml:4: cannot map ("ldap"): descriptor key "ldap" ` + meaning("ldap"),
				`testdata/readme_example5.yaml:8: cannot map ("azure"): descriptor key "azure" ` + meaning("azure"),
			},
		},
		"readme_example6.yaml": {
			skipped: []string{
				`testdata/readme_example6.yaml:11: cannot map ("service"),("user", "user-a"): shadow_mode never rejects; flowguard has no budget that is counted but not enforced (ml: shadow shadows the bandit, not the budget), so the rule is left out rather than enforced`,
				`testdata/readme_example6.yaml:12: cannot map ("service"),("user", "user-b"): line 4: descriptor key "service" ` + meaning("service"),
			},
		},
		"readme_example7.yaml": {
			skipped: []string{
				`testdata/readme_example7.yaml:7: cannot map ("key_1", "value_1"),("user", "bkthomps"): line 4: descriptor key "key_1" ` + meaning("key_1"),
				`testdata/readme_example7.yaml:16: cannot map ("key_2", "value_2"),("user", "bkthomps"): line 13: descriptor key "key_2" ` + meaning("key_2"),
			},
		},
		// The README's keys renamed: message_type is the tenant, the
		// phone number the API key. Both rules then map exactly.
		"readme_example2.yaml with --key": {
			opts: Options{Keys: map[string]string{"message_type": KeyTenant, "to_number": KeyAPIKey}},
			check: func(t *testing.T, s *policy.Set) {
				day := 24 * time.Hour
				if got, want := resolved(s, "marketing", "POST /send"), (limit{5, day, ""}); got != want {
					t.Errorf("marketing: %+v, want %+v", got, want)
				}
				if got, want := resolved(s, "", "POST /send"), (limit{100, day, ""}); got != want {
					t.Errorf("any number: %+v, want %+v", got, want)
				}
			},
		},
		// user is the API key, key_1 and key_2 tenants: a value of user is
		// a per-key budget flowguard does not have, so both rules are
		// listed (and the replaces goes with its rule).
		"readme_example7.yaml with --key": {
			opts: Options{Keys: map[string]string{"key_1": KeyTenant, "user": KeyAPIKey, "key_2": KeyTenant}},
			skipped: []string{
				`testdata/readme_example7.yaml:7: cannot map ("key_1", "value_1"),("user", "bkthomps"): flowguard has no per-key budget; give the key a tenant of its own and a descriptor on the tenant`,
				`testdata/readme_example7.yaml:16: cannot map ("key_2", "value_2"),("user", "bkthomps"): flowguard has no per-key budget; give the key a tenant of its own and a descriptor on the tenant`,
			},
		},
	}
	for name, c := range cases {
		t.Run(name, func(t *testing.T) {
			file, _, _ := strings.Cut(name, " ")
			res, set := load(t, filepath.Join("testdata", file), c.opts)
			sameList(t, "skipped", skips(res.Skipped), c.skipped)
			sameList(t, "approximated", approxs(res.Approximated), c.approx)
			for _, s := range c.skipped {
				if !strings.Contains(string(res.YAML), "#   "+s+"\n") {
					t.Errorf("the output's header does not list %q:\n%s", s, res.YAML)
				}
			}
			if c.check != nil {
				c.check(t, set)
			}
		})
	}
}

// The example the migration guide converts, on flowguard's own descriptor
// keys: every rule lands where the mapping says, and the output loads.
func TestGatewayExample(t *testing.T) {
	res, set := load(t, "../../examples/gateways/envoy-ratelimit.yaml", Options{})
	sameList(t, "skipped", skips(res.Skipped), []string{
		`../../examples/gateways/envoy-ratelimit.yaml:43: cannot map ("remote_address"): descriptor key "remote_address" has no flowguard meaning: flowguard budgets API keys, by tenant and endpoint (--key remote_address=api_key|tenant|method|path|header_match renames it)`,
	})
	sameList(t, "approximated", approxs(res.Approximated), nil)
	cases := map[string]struct {
		tenant, endpoint string
		want             limit
	}{
		"any key":             {"", "GET /v1/items", limit{60, time.Minute, ""}},
		"any key on payments": {"", "POST /v1/payments", limit{5, time.Second, "/v1/payments"}},
		"acme":                {"acme", "GET /v1/items", limit{100, time.Second, ""}},
		"acme on reports":     {"acme", "GET /v1/reports/daily", limit{30, time.Minute, "/v1/reports/*"}},
		"acme on payments":    {"acme", "POST /v1/payments", limit{5, time.Second, "/v1/payments"}},
		"unknown tenant":      {"globex", "GET /v1/reports/daily", limit{60, time.Minute, ""}},
	}
	for name, c := range cases {
		if got := resolved(set, c.tenant, c.endpoint); got != c.want {
			t.Errorf("%s: %+v, want %+v", name, got, c.want)
		}
	}
	if !set.Denied("k_live_stolen_0001") {
		t.Error("k_live_stolen_0001 (requests_per_unit 0) is not denied")
	}
	if res.Rules != 5 {
		t.Errorf("%d rules, want 5 (tier, its endpoint, acme, acme's endpoint, a denied key)", res.Rules)
	}
}

// Each mapping rule of the package doc, on small inputs.
func TestMapping(t *testing.T) {
	const head = "domain: api\ndescriptors:\n"
	cases := map[string]struct {
		in      string
		skipped []string // reasons, in order
		approx  []string
		check   func(t *testing.T, s *policy.Set)
	}{
		"units": {
			in: head + "  - key: tenant\n    value: w\n    descriptors:\n      - key: api_key\n        rate_limit: {unit: WEEK, requests_per_unit: 70}\n" +
				"  - key: tenant\n    value: m\n    descriptors:\n      - key: api_key\n        rate_limit: {unit: month, requests_per_unit: 300}\n" +
				"  - key: tenant\n    value: y\n    descriptors:\n      - key: api_key\n        rate_limit: {unit: year, requests_per_unit: 3650}\n",
			skipped: []string{"unit year: flowguard periods are at most 31 days"},
			check: func(t *testing.T, s *policy.Set) {
				if got := resolved(s, "w", "/"); got.rate != 70 || got.period != 7*24*time.Hour {
					t.Errorf("week: %+v", got)
				}
				if got := resolved(s, "m", "/"); got.rate != 300 || got.period != 30*24*time.Hour {
					t.Errorf("month: %+v", got)
				}
			},
		},
		"unlimited and no base rule": {
			in:     head + "  - key: api_key\n    descriptors:\n      - key: method\n        value: GET\n        rate_limit: {unlimited: true}\n",
			approx: []string{"flowguard has no unlimited rule; written as 1000000 per second, the fastest its limiter counts"},
			check: func(t *testing.T, s *policy.Set) {
				if got := resolved(s, "", "GET /x"); got != (limit{1_000_000, time.Second, "GET /*"}) {
					t.Errorf("GET: %+v", got)
				}
				if got := resolved(s, "", "POST /x"); got != (limit{1_000_000, time.Second, ""}) {
					t.Errorf("no descriptor matches: %+v, want the generous tier", got)
				}
			},
		},
		"tenant without api_key counts per key": {
			in:     head + "  - key: tenant\n    value: acme\n    rate_limit: {unit: second, requests_per_unit: 9}\n",
			approx: []string{"envoyproxy/ratelimit counts this limit over all requests with these descriptors; flowguard counts it for each API key"},
		},
		"header_match as an endpoint": {
			in: head + "  - key: api_key\n    descriptors:\n      - key: header_match\n        value: POST /v1/messages\n        rate_limit: {unit: minute, requests_per_unit: 30}\n" +
				"      - key: header_match\n        value: is_bot\n        rate_limit: {unit: minute, requests_per_unit: 1}\n",
			skipped: []string{`header_match "is_bot" is not an endpoint pattern ("/path" or "METHOD /path"): flowguard cannot see which requests the Envoy header match selects`},
			check: func(t *testing.T, s *policy.Set) {
				if got := resolved(s, "", "POST /v1/messages"); got != (limit{30, time.Minute, "POST /v1/messages"}) {
					t.Errorf("%+v", got)
				}
			},
		},
		"path wildcards": {
			in: head + "  - key: api_key\n    descriptors:\n      - key: path\n        value: /v1/files/*\n        rate_limit: {unit: hour, requests_per_unit: 10}\n" +
				"      - key: path\n        value: /api/*/action\n        rate_limit: {unit: hour, requests_per_unit: 10}\n",
			skipped: []string{`path "/api/*/action" has a wildcard before its end; flowguard's endpoint patterns are exact or a prefix ending in *`},
			approx:  []string{`each path matching "/v1/files/*" has its own counter here; flowguard's prefix rule is one budget per key for all of them (share_threshold: true)`},
		},
		"options": {
			in: head + "  - key: api_key\n    detailed_metric: true\n    value_to_metric: true\n    quota_mode: false\n    metadata: {team: edge}\n    rate_limit: {unit: second, requests_per_unit: 5}\n" +
				"  - key: tenant\n    value: acme\n    quota_mode: true\n    rate_limit: {unit: second, requests_per_unit: 5}\n",
			skipped: []string{
				"flowguard's metrics count decisions by tier and outcome, not by descriptor",
				"flowguard's metrics count decisions by tier and outcome, not by descriptor",
				"flowguard's metrics count decisions by tier and outcome, not by descriptor",
				"quota_mode never rejects; flowguard enforces every budget, so the rule is left out rather than enforced",
			},
		},
		"two chains for one rule": {
			in: head + "  - key: api_key\n    rate_limit: {unit: second, requests_per_unit: 5}\n" +
				"    descriptors:\n      - key: method\n        value: GET\n        rate_limit: {unit: second, requests_per_unit: 2}\n" +
				"  - key: tenant\n    rate_limit: {unit: second, requests_per_unit: 50}\n" +
				"  - key: method\n    value: GET\n    descriptors:\n      - key: api_key\n        rate_limit: {unit: second, requests_per_unit: 1}\n",
			skipped: []string{
				"tenant without a value is a budget for each distinct tenant; flowguard names the tenants and endpoints it budgets",
				`flowguard has one rule for endpoint "GET /*", already taken by ("api_key"),("method", "GET") at line 6`,
			},
		},
		"too fast, zero, exemption": {
			in: head + "  - key: api_key\n    rate_limit: {unit: second, requests_per_unit: 2000000}\n  - key: tenant\n    value: acme\n    rate_limit: {unit: second, requests_per_unit: 0}\n" +
				"  - key: tenant\n    value: initech\n",
			skipped: []string{
				"2000000 per second is faster than flowguard's limiter counts (one request per microsecond)",
				"requests_per_unit 0 blocks every request; flowguard rates are at least 1, and it blocks whole keys only (deny list)",
				"a descriptor without rate_limit or descriptors exempts its requests; flowguard has no exemption (its requests get the rule that matches them)",
			},
		},
	}
	for name, c := range cases {
		t.Run(name, func(t *testing.T) {
			res, err := Convert("in.yaml", []byte(c.in), Options{})
			if err != nil {
				t.Fatal(err)
			}
			cfg, err := config.Parse("converted", res.YAML)
			if err != nil {
				t.Fatalf("the output does not load: %v\n%s", err, res.YAML)
			}
			var gotSkip, gotApprox []string
			for _, it := range res.Skipped {
				gotSkip = append(gotSkip, it.Reason)
			}
			for _, it := range res.Approximated {
				gotApprox = append(gotApprox, it.Reason)
			}
			sameList(t, "skipped", gotSkip, c.skipped)
			sameList(t, "approximated", gotApprox, c.approx)
			if c.check != nil {
				c.check(t, cfg.Policies)
			}
		})
	}
}

func TestBadFiles(t *testing.T) {
	testenv.BadFiles(t, "testdata/bad_*.yaml", map[string]string{
		"bad_descriptors_not_list.yaml": `testdata/bad_descriptors_not_list.yaml:3: descriptors: a mapping cannot be a list of descriptors`,
		"bad_duplicate_descriptor.yaml": `testdata/bad_duplicate_descriptor.yaml:6: descriptors.1: duplicate descriptor ("tenant", "acme"), also at line 3`,
		"bad_empty.yaml":                `testdata/bad_empty.yaml: file is empty`,
		"bad_empty_domain.yaml":         `testdata/bad_empty_domain.yaml:1: domain: domain is empty`,
		"bad_empty_key.yaml":            `testdata/bad_empty_key.yaml:3: descriptors.0.key: key is empty`,
		"bad_missing_domain.yaml":       `testdata/bad_missing_domain.yaml:1: domain is required`,
		"bad_missing_key.yaml":          `testdata/bad_missing_key.yaml:3: descriptors.0: key is required`,
		"bad_missing_rate.yaml":         `testdata/bad_missing_rate.yaml:5: descriptors.0.rate_limit: requests_per_unit is required`,
		"bad_missing_unit.yaml":         `testdata/bad_missing_unit.yaml:5: descriptors.0.rate_limit: unit is required (second, minute, hour, day, week, month or year), or unlimited: true`,
		"bad_negative_rate.yaml":        `testdata/bad_negative_rate.yaml:6: descriptors.0.rate_limit.requests_per_unit: requests_per_unit -5 is negative`,
		"bad_rate_not_number.yaml":      `testdata/bad_rate_not_number.yaml:6: descriptors.0.rate_limit.requests_per_unit: "ten" is not a whole number`,
		"bad_replaces_empty.yaml":       `testdata/bad_replaces_empty.yaml:8: descriptors.0.rate_limit.replaces.0: a replaces entry needs a name`,
		"bad_shadow_not_bool.yaml":      `testdata/bad_shadow_not_bool.yaml:4: descriptors.0.shadow_mode: "yes please" is not true or false`,
		"bad_syntax.yaml":               `testdata/bad_syntax.yaml:3: invalid YAML: did not find expected ',' or '}'`,
		"bad_unknown_field.yaml":        `testdata/bad_unknown_field.yaml:4: descriptors.0: unknown key "rate_limits" (known: key, value, rate_limit, descriptors, shadow_mode, quota_mode, detailed_metric, value_to_metric, share_threshold, metadata)`,
		"bad_unknown_unit.yaml":         `testdata/bad_unknown_unit.yaml:5: descriptors.0.rate_limit.unit: unknown unit "minutes", want second, minute, hour, day, week, month or year`,
		"bad_unlimited_with_unit.yaml":  `testdata/bad_unlimited_with_unit.yaml:6: descriptors.0.rate_limit.unit: unit must not be set when unlimited is true`,
	}, func(t *testing.T, path string) error {
		data, err := os.ReadFile(path)
		if err != nil {
			t.Fatal(err)
		}
		_, err = Convert(path, data, Options{})
		return err
	})
}

func TestOptionsValidate(t *testing.T) {
	if err := (Options{Keys: map[string]string{"user": "apikey"}}).Validate(); err == nil {
		t.Error(`{"user": "apikey"} passed validation`)
	}
	if err := (Options{Keys: map[string]string{"user": KeyAPIKey}}).Validate(); err != nil {
		t.Error(err)
	}
}

// FuzzImportEnvoyRatelimit: any input either fails with errors that name
// the file (and never panics), or converts into policies that flowguard's
// own configuration loader accepts.
func FuzzImportEnvoyRatelimit(f *testing.F) {
	files, _ := filepath.Glob("testdata/*.yaml")
	files = append(files, "../../examples/gateways/envoy-ratelimit.yaml")
	for _, file := range files {
		data, err := os.ReadFile(file)
		if err != nil {
			f.Fatal(err)
		}
		f.Add(data)
	}
	f.Fuzz(func(t *testing.T, data []byte) {
		res, err := Convert("in.yaml", data, Options{Keys: map[string]string{"user": KeyAPIKey}})
		if err != nil {
			var one *yamlx.Error
			var many yamlx.Errors
			if !errors.As(err, &one) && !errors.As(err, &many) {
				t.Fatalf("error %v is not a yamlx error", err)
			}
			for _, line := range strings.Split(err.Error(), "\n") {
				if !strings.HasPrefix(line, "in.yaml") {
					t.Fatalf("error line %q does not name the file", line)
				}
			}
			return
		}
		if _, err := config.Parse("converted", res.YAML); err != nil {
			t.Fatalf("the output does not load: %v\n%s", err, res.YAML)
		}
	})
}
