package serving

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"strconv"
	"strings"
	"sync"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/segmentio/kafka-go"

	"github.com/devflow/flowguard/bandit"
	"github.com/devflow/flowguard/pipeline"
	"github.com/devflow/flowguard/rewards"
)

// modelWatcher installs, with ml.learner: remote, the model the learners
// publish: one part per partition, merged exactly (rewards.Combine). It
// polls Redis's small stamps hash every ml.model_poll and fetches only the
// parts whose version changed; without Redis it follows the compacted
// models topic. A part that does not decode is counted and ignored; the
// part before it stays in use. Installing is one atomic pointer swap, so
// requests never pause.
//
// Staleness is the oldest part's age: each learner republishes its part
// (a heartbeat) every checkpoint, so a dead learner makes the model stale
// and decisions fall back to the deterministic budget after
// ml.max_model_age.
type modelWatcher struct {
	pipe  *pipeline.Pipeline
	store *rewards.RedisStore // nil: follow the models topic
	log   *slog.Logger

	mu     sync.Mutex
	parts  map[int]rewards.ModelPart
	stamps map[int]string

	installs, bad, failures prometheus.Counter
	partsGauge              prometheus.Gauge
}

func newModelWatcher(pipe *pipeline.Pipeline, store *rewards.RedisStore, log *slog.Logger, reg prometheus.Registerer) *modelWatcher {
	w := &modelWatcher{pipe: pipe, store: store, log: log, parts: map[int]rewards.ModelPart{}, stamps: map[int]string{},
		installs: prometheus.NewCounter(prometheus.CounterOpts{Name: "flowguard_model_installs_total",
			Help: "Merged models from the remote learners installed (hot-swapped)."}),
		bad: prometheus.NewCounter(prometheus.CounterOpts{Name: "flowguard_model_bad_parts_total",
			Help: "Published model parts that did not decode or did not fit this instance's arms; ignored."}),
		failures: prometheus.NewCounter(prometheus.CounterOpts{Name: "flowguard_model_poll_failures_total",
			Help: "Polls of Redis or reads of the models topic that failed."}),
		partsGauge: prometheus.NewGauge(prometheus.GaugeOpts{Name: "flowguard_model_parts",
			Help: "Learner partitions whose model part this instance holds."}),
	}
	reg.MustRegister(w.installs, w.bad, w.failures, w.partsGauge)
	return w
}

// runRedis polls until ctx is done.
func (w *modelWatcher) runRedis(ctx context.Context, every time.Duration) {
	t := time.NewTicker(every)
	defer t.Stop()
	for {
		if err := w.pollRedis(ctx); err != nil && ctx.Err() == nil {
			w.failures.Inc()
			w.log.Warn("polling model parts", "err", err)
		}
		select {
		case <-ctx.Done():
			return
		case <-t.C:
		}
	}
}

// pollRedis fetches the parts whose version changed and reinstalls.
func (w *modelWatcher) pollRedis(ctx context.Context) error {
	pctx, cancel := context.WithTimeout(ctx, 2*time.Second)
	defer cancel()
	stamps, err := w.store.Stamps(pctx)
	if err != nil {
		return err
	}
	w.mu.Lock()
	var changed []int
	for p, s := range stamps {
		if rewards.StampVersion(w.stamps[p]) != rewards.StampVersion(s) {
			changed = append(changed, p)
		}
	}
	w.mu.Unlock()
	got, err := w.store.Parts(pctx, changed)
	if err != nil {
		return err
	}
	w.mu.Lock()
	defer w.mu.Unlock()
	for p, s := range stamps {
		if data, ok := got[p]; ok {
			if !w.accept(p, data) {
				continue
			}
		}
		w.stamps[p] = s
	}
	w.refreshFreshness()
	if len(got) > 0 {
		w.install()
	}
	return nil
}

// runKafka follows the models topic from its start until ctx is done.
func (w *modelWatcher) runKafka(ctx context.Context, brokers []string, topic string, dialer *kafka.Dialer, every time.Duration) {
	r := kafka.NewReader(kafka.ReaderConfig{Brokers: brokers, Topic: topic, Partition: 0, Dialer: dialer,
		MaxWait: 500 * time.Millisecond, MaxBytes: 16 << 20})
	defer r.Close()
	if err := r.SetOffset(kafka.FirstOffset); err != nil {
		w.log.Error("models topic", "err", err)
		return
	}
	last := time.Time{}
	dirty := false
	for ctx.Err() == nil {
		rctx, cancel := context.WithTimeout(ctx, every)
		m, err := r.ReadMessage(rctx)
		cancel()
		w.mu.Lock()
		switch {
		case err == nil:
			p, perr := strconv.Atoi(strings.TrimPrefix(string(m.Key), "part-"))
			if perr != nil || !strings.HasPrefix(string(m.Key), "part-") {
				w.bad.Inc()
			} else if w.accept(p, m.Value) {
				w.stamps[p] = rewards.PartStamp(w.parts[p])
				dirty = true
			}
		case ctx.Err() == nil && !errors.Is(err, context.DeadlineExceeded):
			w.failures.Inc()
		}
		// Install at most once per interval: a reader catching up on the
		// topic would otherwise merge once per message.
		if dirty && time.Since(last) >= every {
			w.refreshFreshness()
			w.install()
			dirty, last = false, time.Now()
		}
		w.mu.Unlock()
	}
}

// accept decodes one partition's part and keeps it if it fits; w.mu held.
func (w *modelWatcher) accept(p int, data []byte) bool {
	part, err := rewards.DecodeModelPart(data)
	if err == nil && part.Partition != p {
		err = fmt.Errorf("part of partition %d published as %d", part.Partition, p)
	}
	if err == nil && !part.Bandit.Arms().Equal(w.pipe.Arms()) {
		err = fmt.Errorf("arms %d differ from this instance's ml.arms", len(part.Bandit.Arms()))
	}
	if err != nil {
		w.bad.Inc()
		w.log.Warn("ignoring a model part", "partition", p, "err", err)
		return false
	}
	w.parts[p] = part
	return true
}

// refreshFreshness records the oldest part's publication time; w.mu held.
func (w *modelWatcher) refreshFreshness() {
	oldest := int64(0)
	for _, s := range w.stamps {
		if t, err := rewards.StampTime(s); err == nil && (oldest == 0 || t.UnixMicro() < oldest) {
			oldest = t.UnixMicro()
		}
	}
	w.pipe.Heartbeat(time.UnixMicro(oldest))
	w.partsGauge.Set(float64(len(w.parts)))
}

// install merges the parts held and makes the result current; w.mu held.
func (w *modelWatcher) install() {
	if len(w.parts) == 0 {
		return
	}
	parts := make([]rewards.ModelPart, 0, len(w.parts))
	oldest := time.Time{}
	for _, p := range w.parts {
		parts = append(parts, p)
		if c := p.Bandit.Created(); oldest.IsZero() || c.Before(oldest) {
			oldest = c
		}
	}
	model, err := rewards.Combine(oldest, parts)
	if err == nil {
		err = w.pipe.Install(model)
	}
	switch {
	case err == nil:
		w.installs.Inc()
	case errors.Is(err, bandit.ErrStaleSnapshot):
		// Same version (a heartbeat) or older (a learner restored an older
		// checkpoint): keep what is installed.
	default:
		w.bad.Inc()
		w.log.Warn("merging model parts", "err", err)
	}
}
