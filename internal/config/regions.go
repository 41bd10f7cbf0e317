package config

import (
	"math"
	"regexp"
	"time"

	"github.com/devflow/flowguard/internal/topics"
	"github.com/devflow/flowguard/internal/yamlx"
)

// Regions makes this instance one region of several active-active ones.
// Each region has its own Redis (the redis: section is this region's) and
// enforces its share of every key's budget; the shares follow each region's
// recent traffic for the key, exchanged as heartbeats on a Kafka topic
// (serving/regions.go, regionshare.RegionShare). server.region names this
// region. Needs kafka:.
type Regions struct {
	// Peers are the other regions' names (their server.region). Required:
	// at least one; none may be this region.
	Peers []string `yaml:"peers"`
	// Topic carries the heartbeats: one partition, so every region reads
	// them in the same order. Default: flowguard.regions.
	Topic string `yaml:"topic"`
	// HeartbeatEvery is how often each instance publishes its heartbeat
	// and recomputes its shares. Default: 1s (100ms to 10s).
	HeartbeatEvery time.Duration `yaml:"heartbeat_every"`
	// DeadAfter is how long without a heartbeat before a region is taken
	// for dead and the others take over its share; it is also how long
	// this instance must go without reading back its own heartbeat before
	// it considers itself cut off and freezes its shares. Default: 5 ×
	// heartbeat_every; at least 3 × heartbeat_every.
	DeadAfter time.Duration `yaml:"dead_after"`
	// MinShare is the least share of a budget any live region enforces,
	// so a region that sees a key for the first time is not starved; the
	// rest is split by recent traffic. Regions × MinShare must be at most
	// 0.5. Default: 0.05.
	MinShare float64 `yaml:"min_share"`
	// Window is the time constant of the recent-traffic counts: a request
	// weighs e^(-age/Window). Default: 10s (at least heartbeat_every).
	Window time.Duration `yaml:"window"`
	// MaxKeys caps the keys an instance counts; traffic of further keys is
	// not counted (those keys get the equal split). Default: 100000.
	MaxKeys int `yaml:"max_keys"`
	// PublishKeys is how many of its hottest keys an instance puts in each
	// heartbeat. Default: 5000 (at most 50000, to keep a message < 1 MB).
	PublishKeys int `yaml:"publish_keys"`
}

// Model sources (ML.ModelSource).
const (
	ModelSourceRedis = "redis"
	ModelSourceKafka = "kafka"
)

func (r *Regions) defaults() {
	if r.Topic == "" {
		r.Topic = topics.Regions
	}
	if r.HeartbeatEvery == 0 {
		r.HeartbeatEvery = time.Second
	}
	if r.DeadAfter == 0 {
		r.DeadAfter = 5 * r.HeartbeatEvery
	}
	if r.MinShare == 0 {
		r.MinShare = 0.05
	}
	if r.Window == 0 {
		r.Window = 10 * time.Second
	}
	if r.MaxKeys == 0 {
		r.MaxKeys = 100_000
	}
	if r.PublishKeys == 0 {
		r.PublishKeys = 5000
	}
}

// regionName is what a region's name must look like.
var regionName = regexp.MustCompile(`^[a-z0-9][a-z0-9._-]{0,62}$`)

func (r *Regions) validate(d *yamlx.Doc, self string, kafka bool) yamlx.Errors {
	var errs yamlx.Errors
	bad := func(field, format string, args ...any) {
		errs = append(errs, d.Errorf([]string{"regions", field}, format, args...))
	}
	if !kafka {
		errs = append(errs, d.Errorf([]string{"regions"}, "needs a kafka: section (regions exchange heartbeats through Kafka)"))
	}
	if self == "local" {
		errs = append(errs, d.Errorf([]string{"server", "region"}, "set this region's name (regions: is configured)"))
	} else if !regionName.MatchString(self) {
		errs = append(errs, d.Errorf([]string{"server", "region"}, "%q is not a region name (lower-case letters, digits, '.', '_' and '-'; at most 63)", self))
	}
	if len(r.Peers) == 0 {
		bad("peers", "at least one other region is required")
	}
	seen := map[string]bool{self: true}
	for _, p := range r.Peers {
		switch {
		case !regionName.MatchString(p):
			bad("peers", "%q is not a region name (lower-case letters, digits, '.', '_' and '-'; at most 63)", p)
		case p == self:
			bad("peers", "%q is this region (server.region)", p)
		case seen[p]:
			bad("peers", "%q is listed twice", p)
		}
		seen[p] = true
	}
	if r.HeartbeatEvery < 100*time.Millisecond || r.HeartbeatEvery > 10*time.Second {
		bad("heartbeat_every", "%s must be between 100ms and 10s", r.HeartbeatEvery)
	}
	if r.DeadAfter < 3*r.HeartbeatEvery || r.DeadAfter > 10*time.Minute {
		bad("dead_after", "%s must be at least 3 × heartbeat_every (%s) and at most 10m", r.DeadAfter, 3*r.HeartbeatEvery)
	}
	n := float64(len(r.Peers) + 1)
	if !(r.MinShare > 0) || math.IsInf(r.MinShare, 0) || r.MinShare*n > 0.5 {
		bad("min_share", "%v must be positive and at most 0.5 / regions (%v for %d regions)", r.MinShare, 0.5/n, int(n))
	}
	if r.Window < r.HeartbeatEvery || r.Window > time.Hour {
		bad("window", "%s must be at least heartbeat_every and at most 1h", r.Window)
	}
	if r.MaxKeys < 1 || r.MaxKeys > 10_000_000 {
		bad("max_keys", "%d must be between 1 and 10000000", r.MaxKeys)
	}
	if r.PublishKeys < 1 || r.PublishKeys > 50_000 {
		bad("publish_keys", "%d must be between 1 and 50000", r.PublishKeys)
	}
	return errs
}

// regionsAndModels defaults and checks regions: and ml.model_source,
// which depend on other sections.
func (f *File) regionsAndModels(d *yamlx.Doc) yamlx.Errors {
	var errs yamlx.Errors
	if f.Regions != nil {
		f.Regions.defaults()
		errs = append(errs, f.Regions.validate(d, f.Server.Region, f.Kafka != nil)...)
	}
	if f.ML.ModelSource == "" {
		f.ML.ModelSource = ModelSourceKafka
		if f.Redis != nil {
			f.ML.ModelSource = ModelSourceRedis
		}
	}
	switch f.ML.ModelSource {
	case ModelSourceRedis:
		if f.Redis == nil {
			errs = append(errs, d.Errorf([]string{"ml", "model_source"}, "redis needs a redis: section"))
		}
	case ModelSourceKafka:
		// learner: remote without kafka: is refused with its own message.
	default:
		errs = append(errs, d.Errorf([]string{"ml", "model_source"}, "%q, want redis or kafka", f.ML.ModelSource))
	}
	return errs
}
