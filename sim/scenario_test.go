package sim

import (
	"os"
	"path/filepath"
	"testing"
	"time"

	"github.com/devflow/flowguard/examples"
	"github.com/devflow/flowguard/internal/testenv"
)

func parseFile(t testing.TB, path string) (*Scenario, error) {
	t.Helper()
	data, err := os.ReadFile(path)
	if err != nil {
		t.Fatal(err)
	}
	return ParseScenario(path, data)
}

// Every rule of the scenario format has a bad_*.yaml and its exact
// message, file and line included.
func TestParseScenarioErrors(t *testing.T) {
	cases := map[string]string{
		"bad_abuser_kind.yaml":       `testdata/bad_abuser_kind.yaml:9: abusers.0.kind: unknown kind "spammer" (want scraper, credential_stuffing, adaptive, sleeper, key_sharing or compromised)`,
		"bad_abuser_tenant.yaml":     `testdata/bad_abuser_tenant.yaml:9: abusers.0.tenant: unknown tenant "nobody"`,
		"bad_arms.yaml":              `testdata/bad_arms.yaml:10: arms.1: multiplier 0.5 is below arm 0 "x1" (1): arms must be sorted by increasing multiplier`,
		"bad_coverage.yaml":          `testdata/bad_coverage.yaml:9: labels.coverage: coverage 1.5 must be between 0 and 1`,
		"bad_duplicate_tenant.yaml":  `testdata/bad_duplicate_tenant.yaml:8: tenants.1.name: tenant "acme" is defined twice`,
		"bad_duration.yaml":          `testdata/bad_duration.yaml:2: duration: duration is required and must be positive`,
		"bad_epoch.yaml":             `testdata/bad_epoch.yaml:3: epoch: epoch 7m0s must divide a day`,
		"bad_incident_kind.yaml":     `testdata/bad_incident_kind.yaml:9: incidents.0.kind: unknown kind "meteor" (want redis_outage, kafka_outage, stale_model, region_outage or flash_crowd)`,
		"bad_flash_crowd.yaml":       `testdata/bad_flash_crowd.yaml:9: incidents.0.tenant: flash_crowd needs the tenant whose traffic rises; unknown tenant "nobody"`,
		"bad_interval_noise.yaml":    `testdata/bad_interval_noise.yaml:9: labels.interval_noise: interval_noise -1h0m0s must be between 0 and 7 days`,
		"bad_auth_failure_rate.yaml": `testdata/bad_auth_failure_rate.yaml:7: tenants.0.auth_failure_rate: auth_failure_rate 2 must be between 0 and 1`,
		"bad_experiments_file.yaml":  `testdata/bad_experiments_file.yaml:8: experiments: testdata/nope.yaml: cannot read: no such file or directory`,
		"bad_incident_time.yaml":     `testdata/bad_incident_time.yaml:9: incidents.0.at: at 5h0m0s must be within the run`,
		"bad_keys_type.yaml":         `testdata/bad_keys_type.yaml:7: "lots" is not a whole number`,
		"bad_learn_sample.yaml":      `testdata/bad_learn_sample.yaml:9: learning.learn_sample: learn_sample 2 must be in (0, 1]`,
		"bad_daily_quota.yaml":       `testdata/bad_daily_quota.yaml:9: learning.daily_quota: "always", want fitted or off`,
		"bad_drift.yaml":             `testdata/bad_drift.yaml:11: learning.drift.reference: 1h0m0s must be longer than window (2h0m0s) and at most 2160h0m0s`,
		"bad_region.yaml":            `testdata/bad_region.yaml:9: incidents.0.region: region 7 must be between 0 and 2`,
		"bad_tenant_tier.yaml":       `testdata/bad_tenant_tier.yaml:7: tenants.0.tier: unknown tier "gold"`,
		"bad_tier_no_rate.yaml":      `testdata/bad_tier_no_rate.yaml:5: tiers.free: rate is required for a tier`,
		"bad_two_documents.yaml":     `testdata/bad_two_documents.yaml:8: more than one YAML document`,
		"bad_unknown_key.yaml":       `testdata/bad_unknown_key.yaml:8: unknown key "duratoin"`,
		"bad_volume.yaml":            `testdata/bad_volume.yaml:7: tenants.0.daily_requests.median: median daily requests -4 must be positive and at most 1e10`,
	}
	testenv.BadFiles(t, "testdata/bad_*.yaml", cases, func(t *testing.T, path string) error {
		_, err := parseFile(t, path)
		return err
	})
}

func TestParseScenarioDefaults(t *testing.T) {
	s, err := parseFile(t, "testdata/ok_minimal.yaml")
	if err != nil {
		t.Fatal(err)
	}
	if s.Regions != 3 || s.Learning.PublishEvery != 15*time.Minute || s.Labels.Coverage != 0.8 ||
		s.Tenants[0].Endpoint != "GET /v1/acme" || s.Epochs() != 12 || s.Keys() != 3 || len(s.Arms) != 6 {
		t.Errorf("defaults not applied: %+v", s)
	}
	if s.StartTime() != time.Date(2026, 11, 2, 0, 0, 0, 0, time.UTC) {
		t.Errorf("start %v", s.StartTime())
	}
}

// The shipped scenarios load, from the files and embedded.
func TestExampleScenarios(t *testing.T) {
	for _, name := range []string{"default.yaml", "small.yaml"} {
		if _, err := parseFile(t, filepath.Join("..", "examples", "scenarios", name)); err != nil {
			t.Errorf("%s: %v", name, err)
		}
		b, err := examples.Scenarios.ReadFile("scenarios/" + name)
		if err != nil {
			t.Fatal(err)
		}
		if _, err := ParseScenario(name, b); err != nil {
			t.Errorf("embedded %s: %v", name, err)
		}
	}
}

// FuzzParseScenario: any input gives a scenario or an error naming the
// file, never a panic.
func FuzzParseScenario(f *testing.F) {
	seeds, _ := filepath.Glob("testdata/*.yaml")
	seeds = append(seeds, "../examples/scenarios/small.yaml")
	for _, p := range seeds {
		if b, err := os.ReadFile(p); err == nil {
			f.Add(b)
		}
	}
	f.Fuzz(func(t *testing.T, data []byte) {
		s, err := ParseScenario("fuzz.yaml", data)
		if err != nil {
			if len(err.Error()) < len("fuzz.yaml") || err.Error()[:len("fuzz.yaml")] != "fuzz.yaml" {
				t.Fatalf("error does not name the file: %v", err)
			}
			return
		}
		if s.Epochs() < 1 || s.Keys() < 1 || s.Policies() == nil {
			t.Fatalf("accepted a scenario with no work: %d epochs, %d keys", s.Epochs(), s.Keys())
		}
	})
}
