package serving

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"log/slog"
	"net"
	"os"
	"os/signal"
	"strconv"
	"sync/atomic"
	"syscall"
	"time"

	"github.com/devflow/flowguard/internal/config"
	"github.com/devflow/flowguard/rewards"
	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/promhttp"
	"github.com/redis/go-redis/v9"
	"github.com/valyala/fasthttp"
	"github.com/valyala/fasthttp/fasthttpadaptor"
)

// Learner is the `flowguard learn` process: the Kafka learner
// (rewards.KafkaLearner) with its Redis checkpoints, plus /metrics,
// /healthz and /readyz on its own address. Serving instances with
// ml.learner: remote install what it publishes.
type Learner struct {
	cfg   *config.Loaded
	kl    *rewards.KafkaLearner
	redis redis.UniversalClient
	reg   *prometheus.Registry
	log   *slog.Logger
	addr  string
	bound atomic.Pointer[string] // the address /metrics is served on, once listening
}

// Addr returns the address /metrics, /healthz and /readyz are served on
// once Run listens (with Addr :0, the port picked), "" before.
func (l *Learner) Addr() string {
	if a := l.bound.Load(); a != nil {
		return *a
	}
	return ""
}

// LearnerOptions configures NewLearner.
type LearnerOptions struct {
	// Logger receives the learner's log. Default: discard.
	Logger *slog.Logger
	// Addr serves /metrics, /healthz and /readyz. Default: 127.0.0.1:9465.
	Addr string
	// CheckpointEvery overrides ml.publish_every as the checkpoint and
	// publication interval. Default: ml.publish_every.
	CheckpointEvery time.Duration
}

// NewLearner connects to the file's Kafka and Redis; both are required.
func NewLearner(cfg *config.Loaded, o LearnerOptions) (*Learner, error) {
	if cfg.Kafka == nil || cfg.Redis == nil {
		return nil, fmt.Errorf("%s: learn needs a kafka: section (the decision log and labels) and a redis: section (checkpoints and models)", cfg.Name)
	}
	if o.Logger == nil {
		o.Logger = slog.New(slog.DiscardHandler)
	}
	if o.Addr == "" {
		o.Addr = "127.0.0.1:9465"
	}
	if o.CheckpointEvery == 0 {
		o.CheckpointEvery = cfg.ML.PublishEvery
	}
	tr, dialer, err := kafkaClients(cfg.Kafka)
	if err != nil {
		return nil, err
	}
	rc := newRedisClient(cfg.Redis, false)
	l := &Learner{cfg: cfg, redis: rc, reg: prometheus.NewRegistry(), log: o.Logger, addr: o.Addr}
	lag := prometheus.NewHistogram(prometheus.HistogramOpts{Name: "flowguard_learner_label_lag_seconds",
		Help:    "From a label's Kafka timestamp to its application by the learner.",
		Buckets: []float64{.01, .05, .1, .25, .5, 1, 2, 5, 10, 30, 60, 300, 1800, 3600}})
	k := cfg.Kafka
	l.kl, err = rewards.NewKafkaLearner(rewards.LearnerOptions{Config: cfg.LearnerConfig(), Brokers: k.Brokers,
		Group: k.Group, DecisionsTopic: k.Topics.Decisions, LabelsTopic: k.Topics.Labels, DLQTopic: k.Topics.DLQ,
		ModelsTopic: k.Topics.Models, Store: rewards.NewRedisStore(rc, cfg.Redis.Prefix),
		CheckpointEvery: o.CheckpointEvery, Dialer: dialer, Transport: tr, Logger: o.Logger,
		LabelLag: func(d time.Duration) { lag.Observe(d.Seconds()) }})
	if err != nil {
		rc.Close()
		return nil, err
	}
	l.reg.MustRegister(lag, learnerCollector{l.kl})
	return l, nil
}

// Run consumes until ctx is cancelled (SIGTERM in the CLI), then
// checkpoints, leaves the group and returns.
func (l *Learner) Run(ctx context.Context) error {
	defer l.redis.Close()
	ln, err := net.Listen("tcp", l.addr)
	if err != nil {
		return fmt.Errorf("listen on %s: %w", l.addr, err)
	}
	metrics := fasthttpadaptor.NewFastHTTPHandler(promhttp.HandlerFor(l.reg, promhttp.HandlerOpts{ErrorHandling: promhttp.ContinueOnError}))
	srv := &fasthttp.Server{Name: "flowguard-learn", Handler: func(c *fasthttp.RequestCtx) {
		switch string(c.Path()) {
		case "/metrics":
			metrics(c)
		case "/healthz":
			c.SetBodyString("ok\n")
		case "/readyz":
			code, body := learnerReadiness(l.kl.Stats(), time.Now())
			c.SetStatusCode(code)
			c.SetContentType("application/json")
			c.SetBody(body)
		default:
			c.SetStatusCode(fasthttp.StatusNotFound)
		}
	}, Logger: &fasthttpLogger{log: l.log}}
	bound := ln.Addr().String()
	l.bound.Store(&bound)
	go func() { _ = srv.Serve(ln) }()
	defer srv.Shutdown()
	l.log.Info("flowguard learning", "brokers", l.cfg.Kafka.Brokers, "group", l.cfg.Kafka.Group,
		"metrics", ln.Addr().String(), "config", l.cfg.Name)
	wctx, stop := context.WithCancel(ctx)
	defer stop()
	go l.watchExperiments(wctx)
	err = l.kl.Run(ctx)
	if err != nil && !errors.Is(err, context.Canceled) {
		return err
	}
	l.log.Info("learner stopped")
	return nil
}

// gapDegraded is how long after an offset gap the learner's /readyz shows
// its offsets component degraded: long enough for a probe or a person to
// see it; FlowguardLearnerOffsetGap is the lasting signal.
const gapDegraded = 10 * time.Minute

// learnerReadiness is the learner's /readyz at now: ready (200) while it
// owns partitions, 503 otherwise, with a component per concern, as serve's
// /readyz: partitions, kafka (degraded while the broker is unreachable)
// and offsets (degraded for gapDegraded after an offset gap).
func learnerReadiness(st rewards.LearnerStats, now time.Time) (int, []byte) {
	parts := componentStatus{Status: "ok", Detail: strconv.Itoa(len(st.Partitions)) + " partitions"}
	status, code := "ready", fasthttp.StatusOK
	if len(st.Partitions) == 0 {
		parts = componentStatus{Status: "down", Detail: "no partitions assigned"}
		status, code = "not_ready", fasthttp.StatusServiceUnavailable
	}
	k := componentStatus{Status: "ok", Detail: "reachable"}
	if st.KafkaError != "" {
		k = componentStatus{Status: "degraded", Detail: fmt.Sprintf("unreachable since %s: %s",
			st.KafkaErrorSince.UTC().Format(time.RFC3339), st.KafkaError)}
	}
	offs := componentStatus{Status: "ok", Detail: "no offset gap in the last " + gapDegraded.String()}
	var last *rewards.OffsetGap
	for i := range st.Gaps {
		if g := &st.Gaps[i].Last; now.Sub(g.At) < gapDegraded && (last == nil || g.At.After(last.At)) {
			last = g
		}
	}
	if last != nil {
		offs = componentStatus{Status: "degraded", Detail: fmt.Sprintf(
			"offset gap at %s on %s/%d: offset %d %s the log [%d, %d); resumed at %d, %d messages skipped",
			last.At.UTC().Format(time.RFC3339), last.Topic, last.Partition, last.Checkpoint,
			map[rewards.GapKind]string{rewards.GapPastEnd: "past", rewards.GapBeforeStart: "before"}[last.Kind],
			last.LogStart, last.LogEnd, last.Resume, last.Skipped)}
	}
	body, _ := json.Marshal(map[string]any{"status": status,
		"components": map[string]componentStatus{"partitions": parts, "kafka": k, "offsets": offs}})
	return code, body
}

// learnerCollector exports the learner's Stats at scrape time.
type learnerCollector struct{ kl *rewards.KafkaLearner }

var (
	learnerPartitions = prometheus.NewDesc("flowguard_learner_partitions", "Partitions this learner owns.", nil, nil)
	learnerLag        = prometheus.NewDesc("flowguard_learner_lag_messages",
		"Messages not yet applied, by topic and partition: the consumer lag.", []string{"topic", "partition"}, nil)
	learnerCkptAge = prometheus.NewDesc("flowguard_learner_checkpoint_age_seconds",
		"Time since the partition's state was last checkpointed.", []string{"partition"}, nil)
	learnerGaps = prometheus.NewDesc("flowguard_learner_offset_gaps_total",
		"Offsets to read found outside their partition's log (kind past_end: the broker lost the log; before_start: retention deleted unread messages); the learner resumed from the log start.",
		[]string{"topic", "partition", "kind"}, nil)
	learnerGapMessages = prometheus.NewDesc("flowguard_learner_offset_gap_messages_total",
		"Messages the learner could never read because of offset gaps (deleted before it read them).", []string{"topic", "partition"}, nil)
	learnerPartCounters = map[string]*prometheus.Desc{}
	learnerCounters     = map[string]*prometheus.Desc{}
)

func init() {
	for name, help := range map[string]string{
		"decisions": "Decision records applied.", "outcomes": "Outcome records applied.",
		"updates": "Bandit updates.", "orphan_outcomes": "Outcomes whose decision was not pending.",
		"labels_applied": "Labels applied (once each).", "labels_duplicate": "Labels already applied (same label_id).",
		"labels_late": "Labels past the attribution window.", "labels_unknown_key": "Labels for keys with no records yet, kept for the window.",
		"late_risk":   "Kept final hours that abusive labels past the window taught the risk model as abusive.",
		"corrections": "Exact reward corrections.", "finalized": "Key-arm-hours made final.",
		"errors":           "Inputs the partition refused (also sent to the DLQ).",
		"retired_outcomes": "Outcomes of epochs whose variant model was dropped (experiments file changed) while they ran: they teach only the risk model.",
	} {
		learnerPartCounters[name] = prometheus.NewDesc("flowguard_learner_"+name+"_total", help, []string{"partition"}, nil)
	}
	for name, help := range map[string]string{
		"messages":            "Messages consumed from the decisions and labels topics (applied or sent to the DLQ).",
		"dlq":                 "Messages sent to the DLQ topic with their reason.",
		"fenced":              "Writes refused because another learner owns the partition.",
		"checkpoint_failures": "Checkpoints that could not be stored (retried at the next interval).",
		"models_published":    "Model parts published to Redis.",
		"publish_failures":    "Model parts that could not be published.",
		"commit_failures":     "Offset commits Kafka refused (harmless: checkpoints hold the offsets).",
	} {
		learnerCounters[name] = prometheus.NewDesc("flowguard_learner_"+name+"_total", help, nil, nil)
	}
}

func (c learnerCollector) Describe(ch chan<- *prometheus.Desc) {
	ch <- learnerPartitions
	ch <- learnerLag
	ch <- learnerCkptAge
	ch <- learnerGaps
	ch <- learnerGapMessages
	for _, d := range learnerPartCounters {
		ch <- d
	}
	for _, d := range learnerCounters {
		ch <- d
	}
}

func (c learnerCollector) Collect(ch chan<- prometheus.Metric) {
	st := c.kl.Stats()
	ch <- prometheus.MustNewConstMetric(learnerPartitions, prometheus.GaugeValue, float64(len(st.Partitions)))
	now := time.Now()
	for _, p := range st.Partitions {
		ps := strconv.Itoa(p.Partition)
		for topic, hwm := range p.HighWatermark {
			ch <- prometheus.MustNewConstMetric(learnerLag, prometheus.GaugeValue, float64(max(hwm-p.Next[topic], 0)), topic, ps)
		}
		if !p.Checkpointed.IsZero() {
			ch <- prometheus.MustNewConstMetric(learnerCkptAge, prometheus.GaugeValue, now.Sub(p.Checkpointed).Seconds(), ps)
		}
		for name, v := range map[string]int64{"decisions": p.Decisions, "outcomes": p.Outcomes, "updates": p.Updates,
			"orphan_outcomes": p.Orphans, "labels_applied": p.Labels, "labels_duplicate": p.Duplicates, "labels_late": p.Late,
			"labels_unknown_key": p.UnknownKey, "corrections": p.Corrections, "finalized": p.Finalized, "errors": p.Errors,
			"retired_outcomes": p.Retired, "late_risk": p.LateRisk} {
			ch <- prometheus.MustNewConstMetric(learnerPartCounters[name], prometheus.CounterValue, float64(v), ps)
		}
	}
	skipped := map[[2]string]int64{}
	for _, g := range st.Gaps {
		ps := strconv.Itoa(g.Partition)
		ch <- prometheus.MustNewConstMetric(learnerGaps, prometheus.CounterValue, float64(g.Gaps), g.Topic, ps, string(g.Kind))
		skipped[[2]string{g.Topic, ps}] += g.Skipped
	}
	for tp, n := range skipped {
		ch <- prometheus.MustNewConstMetric(learnerGapMessages, prometheus.CounterValue, float64(n), tp[0], tp[1])
	}
	for name, v := range map[string]int64{"messages": st.Messages, "dlq": st.DLQ, "fenced": st.Fenced, "checkpoint_failures": st.CheckpointFailures,
		"models_published": st.Published, "publish_failures": st.PublishFailures, "commit_failures": st.CommitFailures} {
		ch <- prometheus.MustNewConstMetric(learnerCounters[name], prometheus.CounterValue, float64(v))
	}
}

// watchExperiments follows the experiments file, as serving does: on
// SIGHUP, and every server.reload_every when the configuration file or the
// experiments file it names holds other bytes, it reloads the file and
// gives the learner that file's variant models. The main model's settings
// (ml:) stay those the learner started with, as in serving, so that both
// compute the same model keys. An invalid file keeps the models in force;
// the error is logged once per version of the files.
func (l *Learner) watchExperiments(ctx context.Context) {
	if l.cfg.Path == "" {
		return
	}
	hup := make(chan os.Signal, 1)
	signal.Notify(hup, syscall.SIGHUP)
	defer signal.Stop(hup)
	every := l.cfg.Server.ReloadEvery
	if every <= 0 {
		every = time.Hour // SIGHUP only, in effect
	}
	t := time.NewTicker(every)
	defer t.Stop()
	cur, last := l.cfg, l.filesDigest(l.cfg)
	for {
		hupped := false
		select {
		case <-ctx.Done():
			return
		case <-hup:
			hupped = true
		case <-t.C:
		}
		d := l.filesDigest(cur)
		if d == last && !hupped {
			continue
		}
		last = d // an invalid version is reported once, not every tick
		next, err := config.Load(l.cfg.Path)
		if err != nil {
			l.log.Error("learner: configuration reload failed; keeping the variant models in force", "config", l.cfg.Path, "err", err)
			continue
		}
		cur, last = next, l.filesDigest(next)
		vs := l.cfg.ML.VariantModels(next.ExperimentsConfig)
		if err := l.kl.SetVariants(vs); err != nil {
			l.log.Error("learner: variant models refused", "err", err)
			continue
		}
		l.log.Info("learner: experiments reloaded", "config", l.cfg.Path, "variant_models", len(vs))
	}
}

// filesDigest returns the digest of the configuration file's bytes and of
// the experiments file cfg names; "" parts for unreadable files.
func (l *Learner) filesDigest(cfg *config.Loaded) string {
	d := ""
	if data, err := os.ReadFile(l.cfg.Path); err == nil {
		d = digestOf(data)
	}
	if f := cfg.Experiments.File; f != "" && f != config.ExperimentsEmbedded {
		if data, err := os.ReadFile(f); err == nil {
			d += "/" + digestOf(data)
		}
	}
	return d
}
