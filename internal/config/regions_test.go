package config

import (
	"testing"
	"time"

	"github.com/devflow/flowguard/internal/testenv"
)

// TestBadRegionsFiles pins the message of each regions: and
// ml.model_source rule (files in testdata/regions).
func TestBadRegionsFiles(t *testing.T) {
	cases := map[string]string{
		"bad_no_kafka.yaml":           `testdata/regions/bad_no_kafka.yaml:3: regions: needs a kafka: section (regions exchange heartbeats through Kafka)`,
		"bad_region_unset.yaml":       `testdata/regions/bad_region_unset.yaml:1: server.region: set this region's name (regions: is configured)`,
		"bad_peer_is_self.yaml":       `testdata/regions/bad_peer_is_self.yaml:4: regions.peers: "us-east-1" is this region (server.region)`,
		"bad_peer_twice.yaml":         `testdata/regions/bad_peer_twice.yaml:4: regions.peers: "eu-west-1" is listed twice`,
		"bad_peer_name.yaml":          `testdata/regions/bad_peer_name.yaml:4: regions.peers: "EU West" is not a region name (lower-case letters, digits, '.', '_' and '-'; at most 63)`,
		"bad_no_peers.yaml":           `testdata/regions/bad_no_peers.yaml:4: regions.peers: at least one other region is required`,
		"bad_dead_after.yaml":         `testdata/regions/bad_dead_after.yaml:6: regions.dead_after: 2s must be at least 3 × heartbeat_every (3s) and at most 10m`,
		"bad_min_share.yaml":          `testdata/regions/bad_min_share.yaml:5: regions.min_share: 0.2 must be positive and at most 0.5 / regions (0.16666666666666666 for 3 regions)`,
		"bad_heartbeat.yaml":          `testdata/regions/bad_heartbeat.yaml:5: regions.heartbeat_every: 10ms must be between 100ms and 10s`,
		"bad_window.yaml":             `testdata/regions/bad_window.yaml:6: regions.window: 1s must be at least heartbeat_every and at most 1h`,
		"bad_publish_keys.yaml":       `testdata/regions/bad_publish_keys.yaml:5: regions.publish_keys: 100000 must be between 1 and 50000`,
		"bad_unknown_key.yaml":        `testdata/regions/bad_unknown_key.yaml:5: unknown key "heartbeat"`,
		"bad_model_source.yaml":       `testdata/regions/bad_model_source.yaml:2: ml.model_source: "s3", want redis or kafka`,
		"bad_model_source_redis.yaml": `testdata/regions/bad_model_source_redis.yaml:4: ml.model_source: redis needs a redis: section`,
	}
	testenv.BadFiles(t, "testdata/regions/bad_*.yaml", cases, func(t *testing.T, path string) error {
		_, err := Load(path)
		return err
	})
}

func TestRegionsDefaults(t *testing.T) {
	l, err := Parse("r.yaml", []byte(`
server: {region: us-east-1}
kafka: {brokers: ["127.0.0.1:9092"]}
redis: {addrs: ["127.0.0.1:6379"]}
regions: {peers: [eu-west-1, ap-south-1], heartbeat_every: 200ms}
policies:
  tiers: {free: {rate: 10}}
`))
	if err != nil {
		t.Fatal(err)
	}
	r := l.Regions
	if r.Topic != "flowguard.regions" || r.DeadAfter != time.Second || r.MinShare != 0.05 ||
		r.Window != 10*time.Second || r.MaxKeys != 100_000 || r.PublishKeys != 5000 {
		t.Errorf("defaults: %+v", *r)
	}
	if l.ML.ModelSource != ModelSourceRedis {
		t.Errorf("model_source with redis: %q, want redis", l.ML.ModelSource)
	}
	l, err = Parse("k.yaml", []byte("kafka: {brokers: [\"b:9092\"]}\nml: {learner: remote}\npolicies: {tiers: {free: {rate: 10}}}\n"))
	if err != nil {
		t.Fatal(err)
	}
	if l.ML.ModelSource != ModelSourceKafka || l.Regions != nil {
		t.Errorf("model_source without redis: %q, want kafka", l.ML.ModelSource)
	}
}
