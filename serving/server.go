package serving

import (
	"context"
	"crypto/tls"
	"errors"
	"fmt"
	"log/slog"
	"net"
	"os"
	"regexp"
	"runtime"
	"strings"
	"sync"
	"sync/atomic"
	"syscall"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/redis/go-redis/v9"
	"github.com/segmentio/kafka-go"
	"github.com/valyala/fasthttp"
	"github.com/valyala/fastjson"

	"github.com/devflow/flowguard/experiments"
	"github.com/devflow/flowguard/internal/config"
	"github.com/devflow/flowguard/limiter"
	"github.com/devflow/flowguard/pipeline"
	"github.com/devflow/flowguard/rewards"
)

// Options configures a Server beyond its configuration file.
type Options struct {
	// Logger receives the service's logs. Default: discard.
	Logger *slog.Logger
	// Addr overrides server.addr of the configuration.
	Addr string
	// Clock returns the time for features, epochs, model age and the
	// in-memory limiter. Default: time.Now.
	Clock func() time.Time
	// Seed seeds the bandit's random sources; the same seed, configuration
	// and requests give the same choices. Default: from the clock.
	Seed uint64
	// InstanceID names this instance in the state it shares through Redis.
	// Default: host name, process id and a random suffix.
	InstanceID string
	// AdminToken is the bearer token of the admin endpoints (see
	// config.Server.AdminAuth). Default: the environment variable
	// server.admin_token_env names.
	AdminToken string
	// GRPCListener, when set, serves the gRPC API (grpc.go) on it, with or
	// without server.grpc_addr; Serve closes it. Default: nil, listen on
	// server.grpc_addr when it is set.
	GRPCListener net.Listener
	// Reloads, when set, reloads the configuration file on every receive:
	// the CLI sends one per SIGHUP. Default: nil, reload on file changes
	// only (server.reload_every).
	Reloads <-chan struct{}
}

// Server is the decision service. Create it with New, run it with Run or
// Serve, and Close it when done.
type Server struct {
	cfg     *config.Loaded // as started; server and redis settings never reload
	addr    string
	current atomic.Pointer[config.Loaded]

	limiter pipeline.Limiter     // the one the pipeline calls: remote or local, under the region split if any
	remote  *limiter.Resilient   // the Redis-backed limiter; nil without redis
	local   *limiter.MemoryStore // the in-memory store: the limiter itself, or Redis's fallback
	share   float64              // this instance's share of a budget when deciding alone
	redis   redis.UniversalClient
	// limiterRedis is the limiter's own client (see New).
	limiterRedis redis.UniversalClient
	leased       *limiter.LeasedStore
	redisUp      atomic.Pointer[redisHealth]

	pipe    *pipeline.Pipeline
	recent  *recentLog           // each key's last decisions, for explain
	queue   *rewards.Queue       // the embedded learner's input; nil with learner: remote
	learner *rewards.Local       // the embedded learner; nil with learner: remote
	labels  labelSink            // nil: no learner to send labels to
	klog    *rewards.KafkaLog    // nil without kafka
	klabels *rewards.KafkaLabels // nil without kafka
	kaudit  *rewards.KafkaLog    // audit records to Kafka; nil without kafka
	kdialer *kafka.Dialer        // nil without kafka, or kafka-go's default
	models  *modelWatcher        // nil unless ml.learner: remote
	fsync   *featureSync         // nil without redis
	regions *regionShares        // nil without regions:
	audit   *auditLog
	exp     *experiments.Runtime
	admin   *adminGuard // serving/auth.go
	quotas  *quotaRefit // serving/quotas.go

	metrics *metrics
	log     *slog.Logger
	ids     *idSource
	parsers fastjson.ParserPool
	bufs    sync.Pool

	http       *fasthttp.Server
	grpc       *grpcService // nil: the gRPC API is off
	grpcLn     net.Listener // Options.GRPCListener
	draining   atomic.Bool
	reloads    <-chan struct{}
	reloadErr  atomic.Pointer[string]
	reloadedAt atomic.Int64
}

type redisHealth struct {
	ok     bool
	detail string
	at     time.Time
}

// New builds a Server from a validated configuration. It does not connect
// to anything: Redis may be down at start, and decisions then fall back.
// When it fails it closes everything it had opened.
func New(cfg *config.Loaded, opts Options) (_ *Server, err error) {
	if cfg == nil || cfg.Policies == nil {
		return nil, errors.New("serving: configuration has no policies")
	}
	log := opts.Logger
	if log == nil {
		log = slog.New(slog.DiscardHandler)
	}
	s := &Server{
		cfg:   cfg,
		addr:  cfg.Server.Addr,
		local: limiter.NewMemoryStore(limiter.MemoryOptions{Clock: opts.Clock}),
		share: 1,
		log:   log,
		ids:   newIDSource(time.Now(), os.Getpid()),
	}
	if opts.Addr != "" {
		s.addr = opts.Addr
	}
	defer func() {
		if err != nil {
			s.Close()
		}
	}()
	s.reloads = opts.Reloads
	s.current.Store(cfg)
	s.reloadedAt.Store(time.Now().UnixMilli())
	s.bufs.New = func() any { b := make([]byte, 0, 512); return &b }

	s.limiter = s.local
	if rc := cfg.Redis; rc != nil {
		s.redis = newRedisClient(rc, false)
		// The limiter has a client of its own: its reads and writes are
		// bounded by twice redis.timeout, which the feature exchange and
		// the model parts should not be, and its pool is not shared with them.
		s.limiterRedis = newRedisClient(rc, true)
		s.share = 1 / float64(rc.Instances)
		var remote interface {
			Allow(context.Context, limiter.Key, limiter.Limit, int64) (limiter.Result, error)
		}
		store := limiter.NewRedisStore(s.limiterRedis, limiter.RedisOptions{Prefix: rc.Prefix, Timeout: rc.Timeout})
		remote = store
		if *rc.LeaseWindow > 0 {
			s.leased = limiter.NewLeasedStore(store, limiter.LeaseOptions{Window: *rc.LeaseWindow, TTL: rc.LeaseTTL, Instances: rc.Instances})
			remote = s.leased
		}
		s.remote = limiter.NewResilient(remote, s.local, limiter.ResilientOptions{
			Share: s.share,
			Breaker: limiter.BreakerOptions{FailureRate: rc.Breaker.FailureRate, MinCalls: rc.Breaker.MinCalls,
				Window: rc.Breaker.Window, OpenFor: rc.Breaker.OpenFor},
		})
		s.limiter = s.remote
		s.redisUp.Store(&redisHealth{detail: "not checked yet"})
	}
	s.metrics = newMetrics(s.remote)
	token := opts.AdminToken
	if token == "" {
		token = cfg.Server.AdminToken()
	}
	admin, err := newAdminGuard(cfg.Server, token, log, s.metrics.reg)
	if err != nil {
		return nil, fmt.Errorf("serving: %w", err)
	}
	s.admin = admin
	clock := opts.Clock
	if clock == nil {
		clock = time.Now
	}
	seed := opts.Seed
	if seed == 0 {
		seed = uint64(time.Now().UnixNano())
	}
	// id names this instance in what it shares: region heartbeats, feature
	// records and quota usage.
	id := opts.InstanceID
	if id == "" {
		id = defaultInstanceID()
	}
	if cfg.Regions != nil {
		if s.regions, err = newRegionShares(cfg, id, clock, log, s.metrics.reg); err != nil {
			return nil, fmt.Errorf("serving: regions: %w", err)
		}
		s.limiter = regionLimiter{inner: s.limiter, r: s.regions}
	}
	if s.exp, err = s.newExperiments(cfg); err != nil {
		return nil, fmt.Errorf("serving: experiments: %w", err)
	}
	s.recent = newRecentLog(cfg.ML.RecentDecisions, 65536)
	usage, installed, err := loadQuotaState(cfg.Quotas, log)
	if err != nil {
		return nil, fmt.Errorf("serving: quotas: %w", err)
	}
	s.pipe, err = pipeline.New(cfg.Policies, pipeline.Options{
		ML: cfg.ML, Region: cfg.Server.Region, Clock: clock, Seed: seed, Usage: usage,
		Limiter: s.limiter, Memory: s.local, Share: s.share, Experiments: s.exp, IDs: s.ids.next, Logger: log,
		Events: pipeline.Events{
			Fallback: func(reason string) { s.metrics.mlFallbacks.WithLabelValues(reason).Inc() },
			Shadow:   func(arm string) { s.metrics.shadowChoices.WithLabelValues(arm).Inc() },
			Panic: func(p any, keyLen int) {
				s.log.Error("decision pipeline panicked; answering from memory", "panic", p, "key_len", keyLen)
				s.metrics.panics.Inc()
			},
			Stage2: func(d time.Duration) { s.metrics.stage2.Observe(d.Seconds()) },
			Observed: func(key string) {
				if s.fsync != nil {
					s.fsync.touch(key)
				}
			},
			Local:    s.featuresLocalOnly,
			LocalRun: func(why string) { s.metrics.localOnly.WithLabelValues(why).Inc() },
			Decided:  s.recordDecision,
		},
	})
	if err != nil {
		return nil, fmt.Errorf("serving: ml: %w", err)
	}
	if cfg.ML.Learner == "embedded" {
		s.queue = rewards.NewQueue(cfg.ML.LogBuffer)
		s.pipe.SetDecisionLog(s.queue)
		s.learner, err = rewards.NewLocal(cfg.LearnerConfig(), s.queue, s.pipe.Install, rewards.LocalOptions{
			PublishEvery: cfg.ML.PublishEvery, Now: clock, CheckpointFile: cfg.ML.CheckpointFile})
		if err != nil {
			return nil, fmt.Errorf("serving: ml: %w", err)
		}
		s.labels = queueLabels{s.queue}
	}
	if s.redis != nil {
		s.fsync = newFeatureSync(s.redis, cfg.Redis.Prefix, id, cfg.ML.IdleTTL, cfg.ML.ShareEvery, cfg.ML.Epoch,
			s.pipe.Features(), clock, cfg.ML.MaxKeys)
	}
	prefix := ""
	if cfg.Redis != nil {
		prefix = cfg.Redis.Prefix
	}
	s.quotas = newQuotaRefit(cfg.Quotas, usage, installed, s.pipe, log, s.metrics.reg, s.redis, prefix, id)
	s.metrics.registerML(s.pipe)
	s.metrics.registerFeatureSync(s.fsync)
	s.metrics.registerLearner(s.queue, s.learner)
	if err := s.installExperiments(cfg); err != nil {
		return nil, fmt.Errorf("serving: experiments: %w", err)
	}
	if cfg.Kafka != nil {
		if err := s.startKafka(cfg.Kafka); err != nil {
			return nil, fmt.Errorf("serving: kafka: %w", err)
		}
	}
	if cfg.ML.Learner == "remote" && (s.redis != nil || cfg.Kafka != nil) {
		var store *rewards.RedisStore
		if s.redis != nil && cfg.ML.ModelSource == config.ModelSourceRedis {
			store = rewards.NewRedisStore(s.redis, cfg.Redis.Prefix)
		}
		s.models = newModelWatcher(s.pipe, store, log, s.metrics.reg)
	}
	if cfg.Audit.File != "" {
		s.audit, err = openAuditLog(cfg.Audit.File, s.metrics.auditDropped.Inc, func(err error) {
			s.metrics.auditErrors.Inc()
			s.log.Error("audit log write failed", "err", err)
		})
		if err != nil {
			return nil, err
		}
		if s.kaudit != nil {
			s.audit.mirror = func(key string, line []byte) { s.kaudit.LogJSON(key, line) }
		}
	}
	s.http = &fasthttp.Server{
		Handler:                      s.Handler(),
		ErrorHandler:                 s.transportError,
		Name:                         "flowguard",
		MaxRequestBodySize:           max(cfg.Server.MaxBodyBytes, cfg.Server.MaxBatchBodyBytes, cfg.Server.AdminMaxBodyBytes),
		ReadTimeout:                  cfg.Server.ReadTimeout,
		Concurrency:                  maxConns(cfg.Server.MaxConns, log),
		MaxConnsPerIP:                cfg.Server.MaxConnsPerIP,
		WriteTimeout:                 10 * time.Second,
		IdleTimeout:                  cfg.Server.IdleTimeout,
		CloseOnShutdown:              true,
		NoDefaultDate:                true,
		NoDefaultContentType:         true,
		Logger:                       &fasthttpLogger{log: log, secret: token},
		DisablePreParseMultipartForm: true,
		SecureErrorLogMessage:        true,
	}
	if cfg.Server.GRPCAddr != "" || opts.GRPCListener != nil {
		s.metrics.registerGRPC()
		s.grpc, s.grpcLn = newGRPCService(s, cfg.Server), opts.GRPCListener
	}
	h := s.http
	s.metrics.reg.MustRegister(
		prometheus.NewCounterFunc(prometheus.CounterOpts{Name: "flowguard_http_conns_refused_total",
			Help: "Connections closed at once because server.max_conns were open (per-address refusals, at max_conns_per_ip, are logged once a minute)."},
			func() float64 { return float64(h.GetRejectedConnectionsCount()) }),
		prometheus.NewGaugeFunc(prometheus.GaugeOpts{Name: "flowguard_http_open_conns", Help: "Client connections open now."},
			func() float64 { return float64(h.GetOpenConnectionsCount()) }))
	return s, nil
}

// maxConns is server.max_conns, lowered to stay below the process's
// descriptor limit: Redis, Kafka, files and the listener need descriptors
// too, so 128 are kept for them.
func maxConns(want int, log *slog.Logger) int {
	var lim syscall.Rlimit
	if err := syscall.Getrlimit(syscall.RLIMIT_NOFILE, &lim); err != nil || lim.Cur > uint64(want)+128 {
		return want
	}
	n := max(16, int(lim.Cur)-128)
	log.Warn("server.max_conns is above the descriptor limit; lowered", "max_conns", want, "nofile", lim.Cur, "now", n)
	return n
}

// newRedisClient returns a client tuned for the decision path; unless
// decisions is set, with go-redis's own read and write timeouts.
func newRedisClient(rc *config.Redis, decisions bool) redis.UniversalClient {
	o := &redis.UniversalOptions{
		Addrs:      rc.Addrs,
		Username:   rc.Username,
		Password:   rc.RedisPassword(),
		DB:         rc.DB,
		PoolSize:   rc.PoolSize,
		ClientName: "flowguard",
	}
	if rc.TLS {
		o.TLSConfig = tlsConfig()
	}
	limiter.TuneOptions(o, rc.Timeout)
	if !decisions {
		o.ReadTimeout, o.WriteTimeout = 0, 0
	}
	return redis.NewUniversalClient(o)
}

// Run listens on the configured address and serves until ctx is cancelled
// (SIGTERM in the CLI), then stops accepting and drains in-flight requests
// for at most server.shutdown_timeout. Options.Reloads (SIGHUP in the CLI)
// and changes to the configuration file reload the policies.
func (s *Server) Run(ctx context.Context) error {
	ln, err := net.Listen("tcp", s.addr)
	if err != nil {
		return fmt.Errorf("listen on %s: %w", s.addr, err)
	}
	return s.Serve(ctx, ln)
}

// Serve is Run on a listener the caller made; it closes ln. The gRPC API,
// when on, listens on Options.GRPCListener or server.grpc_addr.
func (s *Server) Serve(ctx context.Context, ln net.Listener) error {
	gln := s.grpcLn
	if s.grpc != nil && gln == nil {
		var err error
		if gln, err = net.Listen("tcp", s.cfg.Server.GRPCAddr); err != nil {
			ln.Close()
			return fmt.Errorf("listen on %s (server.grpc_addr): %w", s.cfg.Server.GRPCAddr, err)
		}
	}
	bg, stopBG := context.WithCancel(context.Background())
	var wg sync.WaitGroup
	defer func() { stopBG(); wg.Wait() }()
	wg.Add(2)
	go func() { defer wg.Done(); s.watchConfig(bg) }()
	go func() { defer wg.Done(); s.maintain(bg) }()
	wg.Add(2)
	go func() { defer wg.Done(); s.runGuardrails(bg) }()
	go func() { defer wg.Done(); s.quotas.run(bg) }()
	defer func() {
		// After the drain (deferred first, run last): the day's usage so far
		// survives a restart.
		if err := s.quotas.save(); err != nil {
			s.log.Error("quotas.state_file not written", "file", s.cfg.Quotas.StateFile, "err", err)
		}
	}()
	if l := s.learner; l != nil {
		lctx, stopLearner := context.WithCancel(context.Background())
		learned := make(chan struct{})
		go func() {
			defer close(learned)
			l.Run(lctx, func(err error) { s.log.Warn("learner", "err", err) })
		}()
		// The learner stops after serving has drained, so that the last
		// epochs' outcomes reach it and its checkpoint.
		defer func() { s.pipe.CloseEpochs(); stopLearner(); <-learned }()
	}
	if s.cfg.Kafka != nil && (s.cfg.Experiments.File != "" || s.cfg.ML.LabelAction == config.LabelActionOn) {
		wg.Add(1)
		go func() { defer wg.Done(); s.followLabels(bg, s.cfg.Kafka) }()
	}
	if w := s.models; w != nil {
		wg.Add(1)
		go func() {
			defer wg.Done()
			if w.store != nil {
				w.runRedis(bg, s.cfg.ML.ModelPoll)
			} else {
				w.runKafka(bg, s.cfg.Kafka.Brokers, s.cfg.Kafka.Topics.Models, s.kdialer, s.cfg.ML.ModelPoll)
			}
		}()
	}
	if s.fsync != nil {
		wg.Add(1)
		go func() { defer wg.Done(); s.fsync.run(bg, s.cfg.ML.ShareEvery, s.featureSyncChanged) }()
	}
	if s.regions != nil {
		wg.Add(1)
		go func() { defer wg.Done(); s.regions.run(bg) }()
	}

	s.log.Info("flowguard serving", "addr", ln.Addr().String(), "config", s.cfg.Name,
		"limiter", s.backendName(), "tiers", s.cfg.Policies.Tiers(), "gomaxprocs", runtime.GOMAXPROCS(0))
	errc := make(chan error, 1)
	ln = &exhaustedListener{Listener: ln, log: s.log, failures: s.metrics.acceptFailures, sleep: time.Sleep}
	go func() { errc <- s.http.Serve(ln) }()
	grpcErr := make(chan error, 1)
	if s.grpc != nil {
		s.log.Info("flowguard serving gRPC", "addr", gln.Addr().String(), "service", rateLimitServiceName, "domain", s.grpc.domain)
		go func() { grpcErr <- s.grpc.srv.Serve(gln) }()
	}
	var served error
	select {
	case err := <-errc:
		if s.grpc != nil {
			s.grpc.srv.Stop()
		}
		return err
	case served = <-grpcErr: // the gRPC listener failed: stop HTTP too
		s.log.Error("gRPC server stopped; shutting down", "err", served)
		served = fmt.Errorf("grpc: %w", served)
	case <-ctx.Done():
	}
	s.draining.Store(true)
	s.log.Info("draining", "timeout", s.cfg.Server.ShutdownTimeout.String())
	sctx, cancel := context.WithTimeout(context.Background(), s.cfg.Server.ShutdownTimeout)
	defer cancel()
	if s.grpc != nil {
		stopped := make(chan struct{})
		go func() { s.grpc.stop(sctx); close(stopped) }()
		defer func() { <-stopped }()
	}
	if err := s.http.ShutdownWithContext(sctx); err != nil {
		s.log.Warn("drain deadline passed; closing remaining connections", "err", err)
		return served
	}
	// A shutdown that came before fasthttp registered the listener (a stop
	// right after start) does not close it: close it here, or Serve would
	// accept on forever.
	_ = ln.Close()
	<-errc
	s.log.Info("stopped")
	return served
}

// maintain evicts idle leases and checks Redis for readiness, once a second.
func (s *Server) maintain(ctx context.Context) {
	t := time.NewTicker(time.Second)
	defer t.Stop()
	for tick := 0; ; tick++ {
		s.checkRedis(ctx)
		select {
		case <-ctx.Done():
			return
		case <-t.C:
		}
		if s.leased != nil {
			s.leased.Sweep()
		}
		s.maintainML(tick%10 == 0)
	}
}

// maintainML, when sweep is set, drops expired epoch choices (logging
// their outcomes) and idle features.
func (s *Server) maintainML(sweep bool) {
	if sweep {
		s.pipe.Sweep()
	}
	s.evaluateDrift()
}

// evaluateDrift folds the scored vectors of the last second into the
// drift monitor and logs a change of state.
func (s *Server) evaluateDrift() {
	d := s.pipe.Drift()
	if d == nil || !d.Evaluate(s.pipe.Now()) {
		return
	}
	worst, psi := "", 0.0
	for name, v := range d.PSI() {
		if v > psi || worst == "" {
			worst, psi = name, v
		}
	}
	if d.Active() {
		s.log.Warn("feature drift: the scored features moved away from what the model learned on",
			"feature", worst, "psi", psi, "fallback", d.Drifting())
	} else {
		s.log.Info("feature drift over", "feature", worst, "psi", psi)
	}
}

func (s *Server) checkRedis(ctx context.Context) {
	if s.redis == nil {
		return
	}
	pctx, cancel := context.WithTimeout(ctx, time.Second)
	defer cancel()
	h := &redisHealth{ok: true, detail: "ok", at: time.Now()}
	err := s.redis.Ping(pctx).Err()
	if err == nil {
		err = limiter.NewRedisStore(s.redis, limiter.RedisOptions{Timeout: time.Second}).Load(pctx)
	}
	if err != nil {
		h.ok, h.detail = false, err.Error()
	}
	if prev := s.redisUp.Swap(h); prev.ok != h.ok {
		if h.ok {
			s.log.Info("redis reachable", "addrs", s.cfg.Redis.Addrs)
		} else {
			s.log.Warn("redis unreachable; decisions fall back to this instance's share", "addrs", s.cfg.Redis.Addrs, "err", err)
		}
	}
}

func (s *Server) backendName() string {
	if s.redis != nil {
		return "redis"
	}
	return "memory"
}

// Close releases the Redis client and the in-memory store.
// It is also how a failed New releases what it had opened: every part may
// be missing.
func (s *Server) Close() error {
	s.local.Close()
	if s.admin != nil {
		s.admin.close()
	}
	if err := s.exp.Close(); err != nil {
		s.log.Error("closing the stop log", "err", err)
	}
	if s.klog != nil {
		ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
		if err := s.klog.Close(ctx); err != nil {
			s.log.Warn("closing the kafka decision log", "err", err)
		}
		cancel()
		s.klabels.Close()
	}
	if s.audit != nil {
		sum, err := s.audit.Close()
		s.log.Info("audit log closed", "records", sum.Records, "head", sum.Head)
		if err != nil {
			s.log.Error("closing the audit log failed", "err", err)
		}
	}
	if s.kaudit != nil { // after the audit log, whose last lines it copies
		ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
		if err := s.kaudit.Close(ctx); err != nil {
			s.log.Warn("closing the kafka audit copy", "err", err)
		}
		cancel()
	}
	if s.limiterRedis != nil {
		s.limiterRedis.Close()
	}
	if s.redis != nil {
		return s.redis.Close()
	}
	return nil
}

// fasthttpLogger sends fasthttp's own messages to slog, at most one line
// a second (a client flood must not become a log flood); the lines it
// drops are counted in the next one's "suppressed".
//
// A malformed request's bytes can reach these lines (a header line without
// its colon, an obs-folded Authorization), so every line is redacted first:
// the admin token wherever it appears, and whatever follows Bearer, Basic
// or an Authorization, Cookie or X-Api-Key header name.
type fasthttpLogger struct {
	log        *slog.Logger
	secret     string        // the admin token; "": none
	every      time.Duration // at most a line this often; 0: a second
	last       atomic.Int64  // unix ns of the last line written
	suppressed atomic.Int64
}

// secretRE matches what may carry a credential in a raw request.
var secretRE = regexp.MustCompile(`(?i)((?:proxy-)?authorization\s*:?\s*|cookie\s*:?\s*|x-api-key\s*:?\s*|bearer\s+|basic\s+)(?:(?:bearer|basic)\s+)?[^\s"'\\]+`)

// redact removes credentials from a log line.
func (l *fasthttpLogger) redact(msg string) string {
	if l.secret != "" {
		msg = strings.ReplaceAll(msg, l.secret, "[redacted]")
	}
	return secretRE.ReplaceAllString(msg, "${1}[redacted]")
}

func (l *fasthttpLogger) Printf(format string, args ...any) {
	msg := l.redact(fmt.Sprintf(format, args...))
	every := l.every
	if every == 0 {
		every = time.Second
	}
	now := time.Now().UnixNano()
	if last := l.last.Load(); now-last < int64(every) || !l.last.CompareAndSwap(last, now) {
		l.suppressed.Add(1)
		return
	}
	l.log.Warn(msg, "component", "http", "suppressed", l.suppressed.Swap(0))
}

func tlsConfig() *tls.Config { return &tls.Config{MinVersion: tls.VersionTLS12} }
