// Package config loads flowguard's configuration file: service settings,
// the optional Redis limiter and the tenant policies, in one strictly
// checked YAML file. With no file, the embedded default built from
// examples/policies.yaml is used.
package config

import (
	"crypto/sha256"
	"encoding/hex"
	"errors"
	"fmt"
	"io/fs"
	"maps"
	"os"
	"regexp"
	"slices"
	"strings"
	"time"

	"github.com/devflow/flowguard/examples"
	"github.com/devflow/flowguard/experiments"
	"github.com/devflow/flowguard/internal/yamlx"
	"github.com/devflow/flowguard/policy"
)

// File is the configuration file.
type File struct {
	Server   Server     `yaml:"server"`
	Redis    *Redis     `yaml:"redis"` // nil: in-memory limiter
	Kafka    *Kafka     `yaml:"kafka"` // nil: the learner runs in-process
	ML       ML         `yaml:"ml"`
	Audit    Audit      `yaml:"audit"`
	Policies policy.Doc `yaml:"policies"`
	// Experiments configures A/B experiments; see experiments.go.
	Experiments Experiments `yaml:"experiments"`
	// Regions splits budgets across active-active regions; see regions.go.
	// nil: this deployment is one region.
	Regions *Regions `yaml:"regions"`
	// Quotas configures the refit of the fitted daily quotas; see quotas.go.
	Quotas Quotas `yaml:"quotas"`
}

// Server configures the HTTP service.
type Server struct {
	// Addr is the listen address. Default: ":8080".
	Addr string `yaml:"addr"`
	// GRPCAddr is the listen address of the Envoy rate-limit gRPC API
	// (see GRPC); "" turns it off. Default: "".
	GRPCAddr string `yaml:"grpc_addr"`
	// GRPC configures the gRPC API when GRPCAddr is set.
	GRPC GRPC `yaml:"grpc"`
	// Region is stamped on decisions. Default: "local".
	Region string `yaml:"region"`
	// MaxBodyBytes caps a /v1/decide body; larger is a 413. Default: 65536.
	MaxBodyBytes int `yaml:"max_body_bytes"`
	// MaxBatch caps the items of one /v1/decide/batch call. Default: 500.
	MaxBatch int `yaml:"max_batch"`
	// MaxBatchBodyBytes caps a batch body. Default: 1048576.
	MaxBatchBodyBytes int `yaml:"max_batch_body_bytes"`
	// MaxCost caps a request's cost; larger is a 400. Default: 10000.
	MaxCost int64 `yaml:"max_cost"`
	// ShutdownTimeout bounds the drain on SIGTERM. Default: 10s.
	ShutdownTimeout time.Duration `yaml:"shutdown_timeout"`
	// MaxConns caps the open client connections; beyond it a new
	// connection is closed at once (and counted). It is lowered at start to
	// stay below the process's descriptor limit. Default: 10000.
	MaxConns int `yaml:"max_conns"`
	// MaxConnsPerIP caps one client address's open connections; 0: no
	// cap (a gateway concentrates many clients on few addresses).
	// Default: 0.
	MaxConnsPerIP int `yaml:"max_conns_per_ip"`
	// ReadTimeout bounds reading a request, its header line by line
	// included (slowloris); IdleTimeout closes a keep-alive connection
	// without a request. Defaults: 10s and 90s.
	ReadTimeout time.Duration `yaml:"read_timeout"`
	IdleTimeout time.Duration `yaml:"idle_timeout"`
	// ReloadEvery is how often the file is checked for changes; negative
	// turns the check off (SIGHUP still reloads). Default: 1s.
	ReloadEvery time.Duration `yaml:"reload_every"`
	// LogLevel is debug, info, warn or error. Default: info.
	LogLevel string `yaml:"log_level"`
	// AdminAuth guards the admin endpoints (POST /v1/labels and
	// GET /v1/keys/{key}/explain). "token": every call needs
	// "Authorization: Bearer TOKEN"; with no token configured every call is
	// a 401. "loopback": the same when a token is configured; without one,
	// callers connected from a loopback address are let in and the others
	// get a 401. Default: token; the embedded default (no --config) uses
	// loopback, so a newcomer's curl on the same machine works.
	AdminAuth string `yaml:"admin_auth"`
	// AdminTokenEnv names the environment variable holding the admin token;
	// the token itself never goes in the file. A set token must be at
	// least 16 bytes. Default: FLOWGUARD_ADMIN_TOKEN.
	AdminTokenEnv string `yaml:"admin_token_env"`
	// AdminRate and AdminBurst cap admin calls per client address (the
	// socket's peer, not X-Forwarded-For): a token bucket of AdminRate
	// calls a second holding at most AdminBurst; beyond it, 429.
	// Defaults: 50 and 100.
	AdminRate  int64 `yaml:"admin_rate"`
	AdminBurst int64 `yaml:"admin_burst"`
	// AdminMaxBodyBytes caps an admin call's body; larger is a 413.
	// Default: 524288 (1000 labels of about 500 bytes).
	AdminMaxBodyBytes int `yaml:"admin_max_body_bytes"`
}

// Admin authentication modes (Server.AdminAuth).
const (
	AdminAuthToken    = "token"
	AdminAuthLoopback = "loopback"
)

// MinAdminTokenBytes is the shortest admin token serving accepts.
const MinAdminTokenBytes = 16

// AdminToken returns the admin token from the environment variable
// AdminTokenEnv names; "" when it is unset or empty.
func (s *Server) AdminToken() string { return os.Getenv(s.AdminTokenEnv) }

// Redis configures the shared limiter.
type Redis struct {
	// Addrs: one address is a single node, several a Redis Cluster.
	Addrs    []string `yaml:"addrs"`
	Username string   `yaml:"username"`
	// Password, or PasswordEnv naming an environment variable that holds it.
	Password    string `yaml:"password"`
	PasswordEnv string `yaml:"password_env"`
	DB          int    `yaml:"db"`
	TLS         bool   `yaml:"tls"`
	// Prefix starts every key. Default: "fg:".
	Prefix string `yaml:"prefix"`
	// Timeout bounds each call; past it the decision falls back. Default: 5ms.
	Timeout time.Duration `yaml:"timeout"`
	// PoolSize is the connection pool size. Default: 10 per CPU.
	PoolSize int `yaml:"pool_size"`
	// Instances is how many serving instances share Redis; during an outage
	// each enforces 1/Instances of every budget. Default: 1.
	Instances int `yaml:"instances"`
	// LeaseWindow sizes budget leases (see limiter.LeasedStore); 0 turns
	// leasing off: one Redis call per decision. Default: 50ms.
	LeaseWindow *time.Duration `yaml:"lease_window"`
	// LeaseTTL is how long leased tokens stay spendable. Default: 1s.
	LeaseTTL time.Duration `yaml:"lease_ttl"`
	Breaker  Breaker       `yaml:"breaker"`
}

// Breaker configures the Redis circuit breaker (see limiter.Breaker): it
// opens when FailureRate of the Redis round trips in Window failed, once
// Window holds MinCalls of them.
type Breaker struct {
	// FailureRate opens the circuit. Default: 0.5.
	FailureRate float64 `yaml:"failure_rate"`
	// MinCalls is the fewest round trips in Window it is judged on.
	// Default: 10.
	MinCalls int `yaml:"min_calls"`
	// Window is how far back the failure rate looks. Default: 50ms.
	Window time.Duration `yaml:"window"`
	// Failures is the former consecutive-failure count; still accepted,
	// read as MinCalls when that is unset.
	Failures int `yaml:"failures"`
	// OpenFor is the wait before the half-open ramp; it doubles up to 10s
	// while ramps fail. Default: 500ms.
	OpenFor time.Duration `yaml:"open_for"`
}

// Loaded is a validated configuration.
type Loaded struct {
	File
	// Name is the file's path, or examples.PoliciesName for the default.
	Name string
	// Path is the file to watch for reloads; "" for the embedded default.
	Path string
	// Policies is the compiled policy set.
	Policies *policy.Set
	// Digest is the SHA-256 of the file's bytes, for readiness and logs.
	Digest string
	// ExperimentsConfig is the experiments file Experiments.File names, read
	// with the configuration; nil when experiments are off.
	ExperimentsConfig *experiments.Config
}

// Load reads and validates the file at path.
func Load(path string) (*Loaded, error) {
	data, err := os.ReadFile(path)
	if err != nil {
		var pe *fs.PathError
		if errors.As(err, &pe) {
			err = pe.Err // the path is said once, first
		}
		return nil, fmt.Errorf("%s: cannot read: %w", path, err)
	}
	l, err := Parse(path, data)
	if err != nil {
		return nil, err
	}
	l.Path = path
	return l, nil
}

// Default returns the embedded default configuration. Unless the embedded
// file says otherwise, its admin endpoints use the loopback mode (see
// Server.AdminAuth).
func Default() (*Loaded, error) {
	return parse(examples.PoliciesName, examples.Policies, AdminAuthLoopback)
}

// Parse validates data, naming it name in errors.
func Parse(name string, data []byte) (*Loaded, error) {
	return parse(name, data, AdminAuthToken)
}

// parse is Parse with adminAuth as the default of server.admin_auth.
func parse(name string, data []byte, adminAuth string) (*Loaded, error) {
	var f File
	doc, err := yamlx.Decode(name, data, &f)
	if err != nil {
		return nil, err
	}
	var errs yamlx.Errors
	if f.Server.AdminAuth == "" {
		f.Server.AdminAuth = adminAuth
	}
	f.Server.defaults()
	errs = append(errs, f.Server.validate(doc)...)
	if f.Redis != nil {
		f.Redis.defaults()
		errs = append(errs, f.Redis.validate(doc)...)
	}
	if f.Kafka != nil {
		f.Kafka.defaults()
		errs = append(errs, f.Kafka.validate(doc)...)
	}
	weighed := slices.Sorted(maps.Keys(f.ML.Rewards.Throttle)) // the file's own, before the defaults join them
	f.ML.defaults()
	errs = append(errs, f.ML.validate(doc)...)
	if f.ML.Learner == "remote" && f.Kafka == nil {
		errs = append(errs, doc.Errorf([]string{"ml", "learner"},
			"remote needs a kafka: section (the learner reads the decision log from Kafka)"))
	}
	errs = append(errs, f.regionsAndModels(doc)...)
	set, err := policy.Compile(f.Policies, doc, "policies")
	if err != nil {
		errs = append(errs, err.(yamlx.Errors)...)
	} else {
		errs = append(errs, throttleTiers(weighed, set, doc)...)
	}
	f.Quotas.defaults()
	errs = append(errs, f.Quotas.validate(doc)...)
	f.Experiments.defaults()
	errs = append(errs, f.Experiments.validate(doc)...)
	if len(errs) > 0 {
		return nil, errs
	}
	exps, err := f.Experiments.Load(set)
	if err != nil {
		return nil, err
	}
	sum := sha256.Sum256(data)
	return &Loaded{File: f, Name: name, Policies: set, Digest: hex.EncodeToString(sum[:8]), ExperimentsConfig: exps}, nil
}

func (s *Server) defaults() {
	if s.Addr == "" {
		s.Addr = ":8080"
	}
	if s.Region == "" {
		s.Region = "local"
	}
	if s.MaxBodyBytes == 0 {
		s.MaxBodyBytes = 64 << 10
	}
	if s.MaxBatch == 0 {
		s.MaxBatch = 500
	}
	if s.MaxBatchBodyBytes == 0 {
		s.MaxBatchBodyBytes = 1 << 20
	}
	if s.MaxCost == 0 {
		s.MaxCost = 10_000
	}
	if s.ShutdownTimeout == 0 {
		s.ShutdownTimeout = 10 * time.Second
	}
	if s.MaxConns == 0 {
		s.MaxConns = 10_000
	}
	if s.ReadTimeout == 0 {
		s.ReadTimeout = 10 * time.Second
	}
	if s.IdleTimeout == 0 {
		s.IdleTimeout = 90 * time.Second
	}
	if s.ReloadEvery == 0 {
		s.ReloadEvery = time.Second
	}
	if s.LogLevel == "" {
		s.LogLevel = "info"
	}
	if s.AdminAuth == "" {
		s.AdminAuth = AdminAuthToken
	}
	if s.AdminTokenEnv == "" {
		s.AdminTokenEnv = "FLOWGUARD_ADMIN_TOKEN"
	}
	if s.AdminRate == 0 {
		s.AdminRate = 50
	}
	if s.AdminBurst == 0 {
		s.AdminBurst = 100
	}
	if s.AdminMaxBodyBytes == 0 {
		s.AdminMaxBodyBytes = 512 << 10
	}
	s.GRPC.defaults()
}

func (s *Server) validate(d *yamlx.Doc) yamlx.Errors {
	var errs yamlx.Errors
	bad := func(field, format string, args ...any) {
		errs = append(errs, d.Errorf([]string{"server", field}, format, args...))
	}
	if s.MaxBodyBytes < 64 || s.MaxBodyBytes > 64<<20 {
		bad("max_body_bytes", "%d must be between 64 and 67108864", s.MaxBodyBytes)
	}
	if s.MaxBatch < 1 || s.MaxBatch > 100_000 {
		bad("max_batch", "%d must be between 1 and 100000", s.MaxBatch)
	}
	if s.MaxBatchBodyBytes < s.MaxBodyBytes || s.MaxBatchBodyBytes > 256<<20 {
		bad("max_batch_body_bytes", "%d must be at least max_body_bytes and at most 268435456", s.MaxBatchBodyBytes)
	}
	if s.MaxCost < 1 {
		bad("max_cost", "%d must be at least 1", s.MaxCost)
	}
	if s.ShutdownTimeout < 0 {
		bad("shutdown_timeout", "%s must not be negative", s.ShutdownTimeout)
	}
	if s.MaxConns < 16 || s.MaxConns > 10_000_000 {
		bad("max_conns", "%d must be between 16 and 10000000", s.MaxConns)
	}
	if s.MaxConnsPerIP < 0 || s.MaxConnsPerIP > s.MaxConns {
		bad("max_conns_per_ip", "%d must be between 0 (no cap) and max_conns", s.MaxConnsPerIP)
	}
	if s.ReadTimeout < 100*time.Millisecond || s.IdleTimeout < 100*time.Millisecond {
		bad("read_timeout", "read_timeout %s and idle_timeout %s must be at least 100ms", s.ReadTimeout, s.IdleTimeout)
	}
	switch s.LogLevel {
	case "debug", "info", "warn", "error":
	default:
		bad("log_level", "%q, want debug, info, warn or error", s.LogLevel)
	}
	switch s.AdminAuth {
	case AdminAuthToken, AdminAuthLoopback:
	default:
		bad("admin_auth", "%q, want token or loopback", s.AdminAuth)
	}
	if !envName.MatchString(s.AdminTokenEnv) {
		// The value is not echoed: it may be a token pasted in the wrong place.
		bad("admin_token_env", "must name an environment variable (letters, digits and _, not starting with a digit); the token itself never goes in the file")
	}
	if s.AdminRate < 1 || s.AdminRate > 100_000 {
		bad("admin_rate", "%d must be between 1 and 100000 calls a second", s.AdminRate)
	}
	if s.AdminBurst < 1 || s.AdminBurst > 100_000 {
		bad("admin_burst", "%d must be between 1 and 100000", s.AdminBurst)
	}
	if s.AdminMaxBodyBytes < 64 || s.AdminMaxBodyBytes > 64<<20 {
		bad("admin_max_body_bytes", "%d must be between 64 and 67108864", s.AdminMaxBodyBytes)
	}
	if s.GRPCAddr != "" && s.GRPCAddr == s.Addr {
		bad("grpc_addr", "%q is addr too: HTTP and gRPC need their own ports", s.GRPCAddr)
	}
	errs = append(errs, s.GRPC.validate(d)...)
	return errs
}

// throttleTiers checks the tiers ml.rewards.throttle weighs against the
// policies: a name the policies lack is a typo, and an enterprise-class
// tier costs the enterprise weight, never its own.
func throttleTiers(weighed []string, tiers *policy.Set, d *yamlx.Doc) yamlx.Errors {
	var errs yamlx.Errors
	for _, name := range weighed {
		if strings.EqualFold(name, string(policy.ClassEnterprise)) || strings.EqualFold(name, "default") {
			continue
		}
		path := []string{"ml", "rewards", "throttle", name}
		switch t, ok := tiers.Tier(name); {
		case !ok:
			errs = append(errs, d.Errorf(path, "unknown tier %q (tiers: %s; or enterprise, default)", name, strings.Join(tiers.Tiers(), ", ")))
		case t.Enterprise():
			errs = append(errs, d.Errorf(path, "tier %q is enterprise-class: it costs the enterprise weight", t.Name))
		}
	}
	return errs
}

// envName is what AdminTokenEnv must look like.
var envName = regexp.MustCompile(`^[A-Za-z_][A-Za-z0-9_]*$`)

func (r *Redis) defaults() {
	if r.Prefix == "" {
		r.Prefix = "fg:"
	}
	if r.Timeout == 0 {
		r.Timeout = 5 * time.Millisecond
	}
	if r.Instances == 0 {
		r.Instances = 1
	}
	if r.LeaseTTL == 0 {
		r.LeaseTTL = time.Second
	}
	if r.LeaseWindow == nil {
		w := 50 * time.Millisecond
		r.LeaseWindow = &w
	}
	if r.Breaker.MinCalls == 0 {
		r.Breaker.MinCalls = r.Breaker.Failures
	}
	if r.Breaker.MinCalls == 0 {
		r.Breaker.MinCalls = 10
	}
	if r.Breaker.FailureRate == 0 {
		r.Breaker.FailureRate = 0.5
	}
	if r.Breaker.Window == 0 {
		r.Breaker.Window = 50 * time.Millisecond
	}
}

func (r *Redis) validate(d *yamlx.Doc) yamlx.Errors {
	var errs yamlx.Errors
	bad := func(field, format string, args ...any) {
		errs = append(errs, d.Errorf([]string{"redis", field}, format, args...))
	}
	if len(r.Addrs) == 0 {
		bad("addrs", "at least one host:port is required")
	}
	if r.Timeout < 100*time.Microsecond || r.Timeout > 10*time.Second {
		bad("timeout", "%s must be between 100µs and 10s", r.Timeout)
	}
	if r.Instances < 1 || r.Instances > 10_000 {
		bad("instances", "%d must be between 1 and 10000", r.Instances)
	}
	if *r.LeaseWindow < 0 || *r.LeaseWindow > 10*time.Second {
		bad("lease_window", "%s must be between 0 and 10s", *r.LeaseWindow)
	}
	if r.LeaseTTL < *r.LeaseWindow || r.LeaseTTL > time.Minute {
		bad("lease_ttl", "%s must be at least lease_window and at most 1m", r.LeaseTTL)
	}
	if r.PoolSize < 0 {
		bad("pool_size", "%d must not be negative", r.PoolSize)
	}
	if r.Breaker.Failures < 0 {
		bad("breaker", "failures %d must not be negative", r.Breaker.Failures)
	}
	if r.Breaker.MinCalls < 1 {
		bad("breaker", "min_calls %d must be at least 1", r.Breaker.MinCalls)
	}
	if r.Breaker.FailureRate <= 0 || r.Breaker.FailureRate > 1 {
		bad("breaker", "failure_rate %g must be in (0, 1]", r.Breaker.FailureRate)
	}
	if r.Breaker.Window < time.Millisecond || r.Breaker.Window > time.Minute {
		bad("breaker", "window %s must be between 1ms and 1m", r.Breaker.Window)
	}
	if r.PasswordEnv != "" && r.Password != "" {
		bad("password_env", "set password or password_env, not both")
	}
	return errs
}

// RedisPassword returns the password, reading PasswordEnv when set.
func (r *Redis) RedisPassword() string {
	if r.PasswordEnv != "" {
		return os.Getenv(r.PasswordEnv)
	}
	return r.Password
}
