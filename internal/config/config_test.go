package config

import (
	"errors"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"gopkg.in/yaml.v3"

	"github.com/devflow/flowguard/examples"
	"github.com/devflow/flowguard/internal/testenv"
	"github.com/devflow/flowguard/internal/yamlx"
	"github.com/devflow/flowguard/rewards"
)

// TestBadFiles pins the exact message for each rule: a person fixing the
// file reads these, so they must name the file, the line and the problem.
func TestBadFiles(t *testing.T) {
	cases := map[string]string{
		"bad_unknown_key.yaml":               `testdata/bad_unknown_key.yaml:5: unknown key "flor"`,
		"bad_floor_above_ceiling.yaml":       `testdata/bad_floor_above_ceiling.yaml:6: policies.tiers.free.floor: floor 3 is above ceiling 2`,
		"bad_rate_negative.yaml":             `testdata/bad_rate_negative.yaml:4: policies.tiers.free.rate: rate -5 must be a positive number of requests per period`,
		"bad_rate_not_number.yaml":           `testdata/bad_rate_not_number.yaml:4: "fast" is not a whole number`,
		"bad_rate_too_fast.yaml":             `testdata/bad_rate_too_fast.yaml:4: policies.tiers.free.rate: invalid limit: 5000 per 1ms is faster than one request per microsecond`,
		"bad_period.yaml":                    `testdata/bad_period.yaml:5: "1 fortn..." is not a duration such as 500ms, 10s or 1m`,
		"bad_period_bare_number.yaml":        `testdata/bad_period_bare_number.yaml:5: "60" is not a duration such as 500ms, 10s or 1m`,
		"bad_ml_mode.yaml":                   `testdata/bad_ml_mode.yaml:5: policies.tiers.free.ml: ml is "maybe", want on, shadow or off`,
		"bad_daily_quota.yaml":               `testdata/bad_daily_quota.yaml:5: policies.tiers.free.daily_quota: daily_quota is "lots", want off, fitted or a number of requests per day from 1 to 86400000000`,
		"bad_quotas.yaml":                    "testdata/bad_quotas.yaml:2: quotas.refit_every: 10s must be between 1m0s and 744h0m0s\ntestdata/bad_quotas.yaml:3: quotas.max_throttled_fraction: 2 must be in (0, 1)",
		"bad_unknown_tier.yaml":              `testdata/bad_unknown_tier.yaml:7: policies.tenants.acme.tier: unknown tier "platinum" (tiers: free)`,
		"bad_default_tier.yaml":              `testdata/bad_default_tier.yaml:2: policies.default_tier: unknown tier "gold" (tiers: free)`,
		"bad_no_tiers.yaml":                  `testdata/bad_no_tiers.yaml:1: policies: at least one tier is required under tiers`,
		"bad_endpoint_pattern.yaml":          `testdata/bad_endpoint_pattern.yaml:7: policies.tiers.free.endpoints.post payments: endpoint pattern must be "/path", "METHOD /path" or end in "/*" for a prefix`,
		"bad_duplicate_key.yaml":             `testdata/bad_duplicate_key.yaml:5: mapping key "rate" already defined at line 4`,
		"bad_syntax.yaml":                    `testdata/bad_syntax.yaml:2: invalid YAML: did not find expected key`,
		"bad_deny_and_allow.yaml":            `testdata/bad_deny_and_allow.yaml:6: policies.allow: key "k1" is on both the deny and the allow list`,
		"bad_tier_missing_rate.yaml":         `testdata/bad_tier_missing_rate.yaml:4: policies.tiers.free: rate is required for a tier`,
		"bad_tier_class.yaml":                `testdata/bad_tier_class.yaml:6: policies.tiers.gold.class: class is "premium", want enterprise or standard`,
		"bad_tier_case_duplicate.yaml":       `testdata/bad_tier_case_duplicate.yaml:5: policies.tiers.pro: tier "pro" differs from tier "Pro" only in case: tier names match case-insensitively`,
		"bad_tenant_class.yaml":              `testdata/bad_tenant_class.yaml:7: policies.tenants.acme.class: class belongs to a tier, not a tenant: the tenant has its tier's`,
		"bad_experiments_tier.yaml":          `testdata/experiments/platinum.yaml:5: experiments.0.targeting.tiers.1: unknown tier "platinum" (the policies' tiers: free, pro)`,
		"bad_throttle_unknown_tier.yaml":     `testdata/bad_throttle_unknown_tier.yaml:5: ml.rewards.throttle.gold: unknown tier "gold" (tiers: free; or enterprise, default)`,
		"bad_throttle_enterprise_tier.yaml":  `testdata/bad_throttle_enterprise_tier.yaml:5: ml.rewards.throttle.Gold: tier "gold" is enterprise-class: it costs the enterprise weight`,
		"bad_endpoint_class.yaml":            `testdata/bad_endpoint_class.yaml:8: policies.tiers.free.endpoints.POST /v1/payments.class: class belongs to a tier, not an endpoint: every endpoint has its tier's`,
		"bad_server_value.yaml":              `testdata/bad_server_value.yaml:3: server.log_level: "loud", want debug, info, warn or error`,
		"bad_redis_no_addrs.yaml":            `testdata/bad_redis_no_addrs.yaml:2: redis.addrs: at least one host:port is required`,
		"bad_grpc_descriptor_key_twice.yaml": `testdata/bad_grpc_descriptor_key_twice.yaml:5: server.grpc.descriptors.tenant: entry key "api_key" already carries key`,
		"bad_grpc_max_descriptors.yaml":      `testdata/bad_grpc_max_descriptors.yaml:4: server.grpc.max_descriptors: 5000 must be between 1 and 1024`,
		"bad_empty.yaml":                     `testdata/bad_empty.yaml: file is empty`,
		"bad_tenant_endpoint_burst.yaml":     `testdata/bad_tenant_endpoint_burst.yaml:9: policies.tenants.acme.endpoints.POST /v1/payments.burst: burst 0 must be between 1 and 1000000000`,
		"bad_two_documents.yaml":             `testdata/bad_two_documents.yaml:5: more than one YAML document`,
		"bad_ml_deadline.yaml":               `testdata/bad_ml_deadline.yaml:2: ml.deadline: 5s must be between 100µs and 1s`,
		"bad_ml_share_every.yaml":            `testdata/bad_ml_share_every.yaml:2: ml.share_every: 200ms must be between 1s and 1m0s`,
		"bad_ml_reward_mode.yaml":            `testdata/bad_ml_reward_mode.yaml:2: ml.reward_mode: "eventually", want provisional or wait`,
		"bad_ml_arms_unsorted.yaml":          `testdata/bad_ml_arms_unsorted.yaml:4: ml.arms.1: arm 1 "x1": multiplier 1 is below arm 0 "x2" (2): arms must be sorted by increasing multiplier`,
		"bad_ml_posterior.yaml":              `testdata/bad_ml_posterior.yaml:2: ml.posterior: "neural", want gaussian or normal-inverse-gamma`,
		"bad_ml_learner.yaml":                `testdata/bad_ml_learner.yaml:2: ml.learner: "cloud", want embedded or remote`,
		"bad_ml_remote_without_kafka.yaml":   `testdata/bad_ml_remote_without_kafka.yaml:2: ml.learner: remote needs a kafka: section (the learner reads the decision log from Kafka)`,
		"bad_ml_block_threshold.yaml":        `testdata/bad_ml_block_threshold.yaml:2: ml.block_threshold: 1.5 must be in (0, 1]`,
		"bad_ml_label_horizon.yaml":          `testdata/bad_ml_label_horizon.yaml:2: ml.label_horizon: 72h0m0s must be between 1s and 24h0m0s`,
		"bad_ml_max_held_label_age.yaml":     `testdata/bad_ml_max_held_label_age.yaml:3: ml.max_held_label_age: 24h0m0s must be between 1m0s and 12h0m0s`,
		"bad_ml_max_held_labels.yaml":        `testdata/bad_ml_max_held_labels.yaml:2: ml.max_held_labels: -5 must be between 1 and 10000000`,
		"bad_audit_key.yaml":                 `testdata/bad_audit_key.yaml:3: unknown key "path"`,
		"bad_admin_auth.yaml":                `testdata/bad_admin_auth.yaml:2: server.admin_auth: "open", want token or loopback`,
		"bad_admin_token_env.yaml":           `testdata/bad_admin_token_env.yaml:2: server.admin_token_env: must name an environment variable (letters, digits and _, not starting with a digit); the token itself never goes in the file`,
		"bad_admin_burst.yaml":               `testdata/bad_admin_burst.yaml:3: server.admin_burst: -1 must be between 1 and 100000`,
	}
	testenv.BadFiles(t, "testdata/bad_*.yaml", cases, func(t *testing.T, path string) error {
		_, err := Load(path)
		var ye *yamlx.Error
		var yes yamlx.Errors
		if err != nil && !errors.As(err, &ye) && !errors.As(err, &yes) {
			t.Errorf("error %T is not a yamlx error", err)
		}
		return err
	})
}

func TestMissingFile(t *testing.T) {
	_, err := Load("testdata/no_such_file.yaml")
	if err == nil || !strings.HasPrefix(err.Error(), "testdata/no_such_file.yaml: ") || !errors.Is(err, os.ErrNotExist) {
		t.Fatalf("err = %v, want one naming the file and wrapping ErrNotExist", err)
	}
}

func TestEveryExampleLoads(t *testing.T) {
	files, _ := filepath.Glob("../../examples/*.yaml")
	if len(files) == 0 {
		t.Fatal("no examples found")
	}
	for _, f := range files {
		if strings.Contains(f, "experiments") || strings.Contains(f, "scenario") || strings.HasSuffix(f, "arms.yaml") {
			continue // other formats, checked by their own packages
		}
		if _, err := Load(f); err != nil {
			t.Errorf("%v", err)
		}
	}
}

func TestDefaultIsTheExampleFile(t *testing.T) {
	onDisk, err := os.ReadFile("../../examples/policies.yaml")
	if err != nil {
		t.Fatal(err)
	}
	if string(onDisk) != string(examples.Policies) {
		t.Fatal("embedded default differs from examples/policies.yaml")
	}
	d, err := Default()
	if err != nil {
		t.Fatal(err)
	}
	if d.Redis != nil || d.Path != "" {
		t.Fatalf("embedded default must be in-memory and unwatched, got redis=%v path=%q", d.Redis, d.Path)
	}
	for tier, enterprise := range map[string]bool{"free": false, "pro": false, "enterprise": true} {
		if got, ok := d.Policies.Tier(tier); !ok || got.Enterprise() != enterprise {
			t.Errorf("embedded default: tier %q = %+v, %v; want it, enterprise-class %v", tier, got, ok, enterprise)
		}
	}
}

func TestDefaultsFilled(t *testing.T) {
	l, err := Parse("inline.yaml", []byte("redis:\n  addrs: [\"127.0.0.1:6379\"]\npolicies:\n  tiers:\n    free:\n      rate: 10\n"))
	if err != nil {
		t.Fatal(err)
	}
	s, r := l.Server, l.Redis
	if s.Addr != ":8080" || s.MaxBodyBytes != 65536 || s.MaxBatch != 500 || s.MaxCost != 10000 {
		t.Errorf("server defaults = %+v", s)
	}
	if r.Timeout.String() != "5ms" || r.Instances != 1 || r.LeaseWindow.String() != "50ms" || r.Prefix != "fg:" {
		t.Errorf("redis defaults = %+v", r)
	}
	m := l.ML
	if m.LabelHorizon != time.Hour || m.MaxHeldLabels != 100_000 || m.MaxHeldLabelAge != 24*time.Hour {
		t.Errorf("label defaults: horizon %v, max held %d, held age %v", m.LabelHorizon, m.MaxHeldLabels, m.MaxHeldLabelAge)
	}
	lc := l.LearnerConfig()
	if lc.LabelHorizon != m.LabelHorizon || lc.MaxHeldLabels != m.MaxHeldLabels || lc.MaxHeldAge != m.MaxHeldLabelAge {
		t.Errorf("the learner's label limits %v/%d/%v are not ml:'s", lc.LabelHorizon, lc.MaxHeldLabels, lc.MaxHeldAge)
	}
	short, err := Parse("inline.yaml", []byte("ml: {attribution_window: 6h}\npolicies:\n  tiers:\n    free:\n      rate: 10\n"))
	if err != nil {
		t.Fatal(err)
	}
	if short.ML.MaxHeldLabelAge != 6*time.Hour {
		t.Errorf("held label age %v with a 6h window, want the window", short.ML.MaxHeldLabelAge)
	}
}

func FuzzParse(f *testing.F) {
	f.Add(examples.Policies)
	files, _ := filepath.Glob("testdata/*.yaml")
	for _, p := range files {
		data, err := os.ReadFile(p)
		if err != nil {
			f.Fatal(err)
		}
		f.Add(data)
	}
	f.Fuzz(func(t *testing.T, data []byte) {
		l, err := Parse("fuzz.yaml", data)
		if err != nil {
			// An error in the experiments file the configuration names
			// names that file instead.
			var named struct {
				Experiments struct{ File string } `yaml:"experiments"`
			}
			_ = yaml.Unmarshal(data, &named)
			exps := named.Experiments.File
			if !strings.HasPrefix(err.Error(), "fuzz.yaml") && (exps == "" || !strings.HasPrefix(err.Error(), exps)) {
				t.Fatalf("error does not name the file: %v", err)
			}
			return
		}
		// Whatever loaded must resolve without panicking.
		r := l.Policies.Resolve("any", "GET /v1/x?y")
		if r == nil || r.Limit.Validate() != nil {
			t.Fatalf("loaded policies resolve to an unusable rule: %+v", r)
		}
	})
}

// TestAdminAuthDefaults pins the safe defaults: a configuration file
// requires the admin token; only the embedded default (a newcomer's
// `make run`) lets loopback callers in without one.
func TestAdminAuthDefaults(t *testing.T) {
	f, err := Parse("inline.yaml", []byte("policies:\n  tiers:\n    free:\n      rate: 10\n"))
	if err != nil {
		t.Fatal(err)
	}
	s := f.Server
	if s.AdminAuth != AdminAuthToken || s.AdminTokenEnv != "FLOWGUARD_ADMIN_TOKEN" || s.AdminRate != 50 || s.AdminBurst != 100 || s.AdminMaxBodyBytes != 512<<10 {
		t.Errorf("file defaults = %+v", s)
	}
	d, err := Default()
	if err != nil {
		t.Fatal(err)
	}
	if d.Server.AdminAuth != AdminAuthLoopback {
		t.Errorf("embedded default admin_auth = %q, want loopback", d.Server.AdminAuth)
	}
	e, err := Parse("inline.yaml", []byte("server:\n  admin_auth: loopback\n  admin_token_env: FG_TOKEN\npolicies:\n  tiers:\n    free:\n      rate: 10\n"))
	if err != nil {
		t.Fatal(err)
	}
	t.Setenv("FG_TOKEN", "a-token-of-some-length")
	if e.Server.AdminAuth != AdminAuthLoopback || e.Server.AdminToken() != "a-token-of-some-length" {
		t.Errorf("explicit settings: auth %q, token from FG_TOKEN %q", e.Server.AdminAuth, e.Server.AdminToken())
	}
}

// TestAdminTokenEnvErrorHidesValue: a token pasted into admin_token_env
// must not be echoed into logs by the validation error.
func TestAdminTokenEnvErrorHidesValue(t *testing.T) {
	_, err := Load("testdata/bad_admin_token_env.yaml")
	if err == nil || strings.Contains(err.Error(), "s3cret") {
		t.Fatalf("err = %v, want an error without the value", err)
	}
}

// TestThrottleWeightsNameTiers: ml.rewards.throttle may name a policy
// tier in any case, and enterprise covers every enterprise-class tier.
func TestThrottleWeightsNameTiers(t *testing.T) {
	l, err := Parse("inline.yaml", []byte("ml:\n  rewards:\n    throttle: {PRO: 3, enterprise: 40}\n"+
		"policies:\n  tiers:\n    free: {rate: 10}\n    pro: {rate: 20}\n    gold: {rate: 30, class: enterprise}\n"))
	if err != nil {
		t.Fatal(err)
	}
	w, o := l.LearnerConfig().Weights, rewards.Outcome{Throttled: 10}
	for tier, want := range map[string]float64{"pro": 3, "gold": 40, "free": 0.5} {
		pt, _ := l.Policies.Tier(tier)
		if got := -w.RewardFor(o, pt, 10, 0); got != want {
			t.Errorf("throttle weight of %s = %v, want %v", tier, got, want)
		}
	}
}
