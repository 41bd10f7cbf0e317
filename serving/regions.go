package serving

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"math"
	"sort"
	"sync"
	"sync/atomic"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/segmentio/kafka-go"

	"github.com/devflow/flowguard/internal/config"
	"github.com/devflow/flowguard/limiter"
	"github.com/devflow/flowguard/pipeline"
	"github.com/devflow/flowguard/regionshare"
)

// regionShares splits budgets across regions (config regions:, the
// arithmetic and its bound in regionshare/regionshare.go). It counts this
// instance's recent requests per key, publishes them each tick as a
// heartbeat on the regions topic, reads every instance's heartbeats back,
// and recomputes the share of each key this region enforces.
//
// Before it has read one of its own heartbeats back (just started, or
// Kafka unreachable since start) it enforces regions.min_share of every
// budget: the others, not knowing it yet, hand out the whole budget. Once
// connected, a loss of Kafka (its own heartbeats stop coming back for
// dead_after) freezes the last shares: the region keeps serving on them,
// as it keeps serving on its last model. The hot path (share, observe) is
// lock-free but for one shard mutex; it is safe for concurrent use.
type regionShares struct {
	cfg       config.Regions
	self      string
	instance  string
	every     time.Duration
	deadTicks int64
	decay     float64
	clock     func() time.Time
	log       *slog.Logger

	shards [64]countShard
	table  atomic.Pointer[regionshare.ShareTable]

	mu        sync.Mutex
	book      *regionshare.RegionBook
	connected bool // a heartbeat of its own has been read back

	brokers []string
	dialer  *kafka.Dialer
	writer  *kafka.Writer
	pub     chan []byte

	isolated, live, keys        prometheus.Gauge
	beats                       *prometheus.CounterVec
	untracked, tookOver, frozen prometheus.Counter
}

type countShard struct {
	mu     sync.Mutex
	counts map[string]float64
	_      [40]byte
}

func newRegionShares(cfg *config.Loaded, instance string, clock func() time.Time, log *slog.Logger, reg prometheus.Registerer) (*regionShares, error) {
	rc := *cfg.Regions
	tr, dialer, err := kafkaClients(cfg.Kafka)
	if err != nil {
		return nil, err
	}
	r := &regionShares{
		cfg: rc, self: cfg.Server.Region, instance: instance, every: rc.HeartbeatEvery,
		deadTicks: int64(math.Ceil(float64(rc.DeadAfter) / float64(rc.HeartbeatEvery))),
		decay:     math.Exp(-float64(rc.HeartbeatEvery) / float64(rc.Window)),
		clock:     clock, log: log, brokers: cfg.Kafka.Brokers, dialer: dialer,
		pub: make(chan []byte, 1),
		writer: &kafka.Writer{Addr: kafka.TCP(cfg.Kafka.Brokers...), Topic: rc.Topic, Transport: transportOrNil(tr),
			BatchTimeout: time.Millisecond, RequiredAcks: kafka.RequireOne, MaxAttempts: 1,
			WriteTimeout: rc.HeartbeatEvery, ReadTimeout: rc.HeartbeatEvery, BatchBytes: 4 << 20},
		isolated: prometheus.NewGauge(prometheus.GaugeOpts{Name: "flowguard_regions_isolated",
			Help: "1 while this instance does not read its own region heartbeats back (Kafka unreachable): shares are frozen, or at regions.min_share before the first."}),
		live: prometheus.NewGauge(prometheus.GaugeOpts{Name: "flowguard_regions_live",
			Help: "Regions with a recent heartbeat, this one included."}),
		keys: prometheus.NewGauge(prometheus.GaugeOpts{Name: "flowguard_regions_share_keys",
			Help: "Keys with a share of their own (counted by some region); others get the equal split."}),
		beats: prometheus.NewCounterVec(prometheus.CounterOpts{Name: "flowguard_regions_heartbeats_total",
			Help: "Region heartbeats, by result: published, publish_failed, publish_skipped, received, bad."}, []string{"result"}),
		untracked: prometheus.NewCounter(prometheus.CounterOpts{Name: "flowguard_regions_untracked_total",
			Help: "Requests of keys beyond regions.max_keys, not counted for the traffic share."}),
		tookOver: prometheus.NewCounter(prometheus.CounterOpts{Name: "flowguard_regions_takeovers_total",
			Help: "Times the live regions changed (a region died or came back) and shares were redistributed."}),
		frozen: prometheus.NewCounter(prometheus.CounterOpts{Name: "flowguard_regions_frozen_ticks_total",
			Help: "Ticks on which this instance kept its last shares because it was cut off from the regions topic."}),
	}
	r.book = regionshare.NewRegionBook(r.self, rc.MinShare, r.deadTicks)
	for i := range r.shards {
		r.shards[i].counts = map[string]float64{}
	}
	r.table.Store(regionshare.FixedShares(0, rc.MinShare))
	r.isolated.Set(1)
	reg.MustRegister(r.isolated, r.live, r.keys, r.beats, r.untracked, r.tookOver, r.frozen)
	return r, nil
}

// transportOrNil keeps a nil *kafka.Transport from becoming a non-nil
// RoundTripper, which kafka-go would call.
func transportOrNil(t *kafka.Transport) kafka.RoundTripper {
	if t == nil {
		return nil
	}
	return t
}

// share returns the share of key's budget this region enforces now.
func (r *regionShares) share(key string) float64 { return r.table.Load().Of(key) }

func (r *regionShares) shard(key string) *countShard {
	h := uint32(2166136261)
	for i := 0; i < len(key); i++ {
		h = (h ^ uint32(key[i])) * 16777619
	}
	return &r.shards[h%uint32(len(r.shards))]
}

// observe counts a request of cost n for key.
func (r *regionShares) observe(key string, n int64) {
	sh := r.shard(key)
	sh.mu.Lock()
	if _, ok := sh.counts[key]; ok || len(sh.counts) < r.cfg.MaxKeys/len(r.shards)+1 {
		sh.counts[key] += float64(n)
		sh.mu.Unlock()
		return
	}
	sh.mu.Unlock()
	r.untracked.Inc()
}

// regionLimiter enforces this region's share of every budget.
type regionLimiter struct {
	inner pipeline.Limiter
	r     *regionShares
}

func (l regionLimiter) Decide(ctx context.Context, key limiter.Key, lim limiter.Limit, n int64) (limiter.Decision, error) {
	l.r.observe(key.Name, n)
	if s := l.r.share(key.Name); s < 1 {
		lim = lim.Scale(s)
	}
	return l.inner.Decide(ctx, key, lim, n)
}

// tickOf is the aligned tick t falls in.
func (r *regionShares) tickOf(t time.Time) int64 { return t.UnixNano() / int64(r.every) }

// run publishes, reads and recomputes until ctx is done.
func (r *regionShares) run(ctx context.Context) {
	var wg sync.WaitGroup
	defer func() { wg.Wait(); r.writer.Close() }()
	wg.Add(2)
	go func() { defer wg.Done(); r.follow(ctx) }()
	go func() { defer wg.Done(); r.publish(ctx) }()
	for {
		now := r.clock()
		k := r.tickOf(now) + 1
		wait := time.Duration(k*int64(r.every) - now.UnixNano())
		select {
		case <-ctx.Done():
			return
		case <-time.After(wait):
		}
		r.tick(k)
	}
}

// tick decays the counts, queues this tick's heartbeat and installs the
// shares of tick k.
func (r *regionShares) tick(k int64) {
	type kc struct {
		k string
		c float64
	}
	var all []kc
	for i := range r.shards {
		sh := &r.shards[i]
		sh.mu.Lock()
		for key, c := range sh.counts {
			if c < 0.01 {
				delete(sh.counts, key)
				continue
			}
			all = append(all, kc{key, c})
			sh.counts[key] = c * r.decay
		}
		sh.mu.Unlock()
	}
	if len(all) > r.cfg.PublishKeys {
		sort.Slice(all, func(i, j int) bool { return all[i].c > all[j].c })
		all = all[:r.cfg.PublishKeys]
	}
	h := &regionshare.Heartbeat{Region: r.self, Instance: r.instance, Tick: k, EveryMS: r.every.Milliseconds(),
		Counts: make(map[string]float64, len(all))}
	for _, e := range all {
		h.Counts[e.k] = math.Round(e.c*100) / 100
	}
	if data, err := regionshare.EncodeHeartbeat(h); err == nil {
		select {
		case r.pub <- data:
		default:
			r.beats.WithLabelValues("publish_skipped").Inc() // the last one is still being written
		}
	}

	r.mu.Lock()
	defer r.mu.Unlock()
	if !r.book.Heard(k) {
		r.isolated.Set(1)
		if r.connected {
			r.frozen.Inc()
		}
		return // before the first: min_share; after: frozen
	}
	if !r.connected {
		r.connected = true
		r.log.Info("regions: connected", "region", r.self, "live", r.book.Live(k))
	}
	r.isolated.Set(0)
	t := r.book.Shares(k)
	if prev := r.table.Load(); prev.Live != t.Live && prev.Tick != 0 {
		r.tookOver.Inc()
		r.log.Info("regions: live regions changed", "live", r.book.Live(k))
	}
	r.table.Store(t)
	r.live.Set(float64(t.Live))
	r.keys.Set(float64(t.Len()))
}

// publish writes queued heartbeats; a write that fails is counted, not
// retried: the next tick's heartbeat supersedes it.
func (r *regionShares) publish(ctx context.Context) {
	for {
		select {
		case <-ctx.Done():
			return
		case data := <-r.pub:
			wctx, cancel := context.WithTimeout(ctx, r.every)
			err := r.writer.WriteMessages(wctx, kafka.Message{Key: []byte(r.self + "/" + r.instance), Value: data})
			cancel()
			if err != nil {
				r.beats.WithLabelValues("publish_failed").Inc()
				r.log.Debug("regions: publishing a heartbeat", "err", err)
			} else {
				r.beats.WithLabelValues("published").Inc()
			}
		}
	}
}

// follow reads the regions topic from its end. A reader that has seen
// nothing for dead_after is replaced (a broker restarted with new offsets).
func (r *regionShares) follow(ctx context.Context) {
	for ctx.Err() == nil {
		err := r.followOnce(ctx)
		if ctx.Err() != nil {
			return
		}
		r.log.Debug("regions: following the heartbeats", "err", err)
		select {
		case <-ctx.Done():
			return
		case <-time.After(r.every):
		}
	}
}

func (r *regionShares) followOnce(ctx context.Context) error {
	rd := kafka.NewReader(kafka.ReaderConfig{Brokers: r.brokers, Topic: r.cfg.Topic, Partition: 0, Dialer: r.dialer,
		MinBytes: 1, MaxBytes: 16 << 20, MaxWait: r.every / 2})
	defer rd.Close()
	if err := rd.SetOffset(kafka.LastOffset); err != nil {
		return err
	}
	quiet := r.cfg.DeadAfter
	for {
		rctx, cancel := context.WithTimeout(ctx, quiet)
		m, err := rd.ReadMessage(rctx)
		cancel()
		switch {
		case ctx.Err() != nil:
			return nil
		case errors.Is(err, context.DeadlineExceeded):
			return fmt.Errorf("no heartbeat for %s", quiet)
		case err != nil:
			return err
		}
		h, err := regionshare.DecodeHeartbeat(m.Value)
		if err == nil && h.EveryMS != r.every.Milliseconds() {
			err = fmt.Errorf("heartbeat_every %dms, this instance's %s", h.EveryMS, r.every)
		}
		if err != nil {
			r.beats.WithLabelValues("bad").Inc()
			r.log.Warn("regions: ignoring a heartbeat", "offset", m.Offset, "err", err)
			continue
		}
		r.beats.WithLabelValues("received").Inc()
		r.mu.Lock()
		r.book.Add(h)
		r.mu.Unlock()
	}
}
