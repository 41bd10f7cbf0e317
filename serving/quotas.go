package serving

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"io/fs"
	"log/slog"
	"os"
	"sync"
	"sync/atomic"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/redis/go-redis/v9"
	"github.com/valyala/fasthttp"

	"github.com/devflow/flowguard/internal/atomicfile"
	"github.com/devflow/flowguard/internal/config"
	"github.com/devflow/flowguard/pipeline"
	"github.com/devflow/flowguard/quotas"
)

// quotaRefit is seed 004's cron, backtest and alerts, built in (issue 17
// item 1): it counts the usage of the rules with daily_quota: fitted
// (pipeline, quotas.Recorder), refits their daily quotas every
// quotas.refit_every, and installs a fit only when its backtest passes;
// otherwise the quotas before stay, flowguard_quota_refit_refused is 1
// (FlowguardQuotaRefitRefused) and the reason is logged.
type quotaRefit struct {
	cfg  config.Quotas
	rec  *quotas.Recorder
	pipe *pipeline.Pipeline
	log  *slog.Logger

	mu        sync.Mutex // one refit, or one state write, at a time
	installed atomic.Pointer[quotas.Installed]
	last      atomic.Pointer[refitReport]

	// shared, with redis:, is where every instance's usage meets.
	shared *quotaShare

	refits      *prometheus.CounterVec
	refused     prometheus.Gauge
	lastInstall prometheus.Gauge
	quota       *prometheus.GaugeVec
	backtest    *prometheus.GaugeVec
}

// refitReport is a refit as GET /v1/quotas shows it.
type refitReport struct {
	At       time.Time                 `json:"at"`
	Result   string                    `json:"result"`
	Problems []string                  `json:"problems,omitempty"`
	Train    string                    `json:"train_window,omitempty"`
	Test     string                    `json:"test_window,omitempty"`
	Backtest []quotas.EndpointBacktest `json:"backtest,omitempty"`
	Total    *quotas.EndpointBacktest  `json:"total,omitempty"`
	Error    string                    `json:"error,omitempty"`
	Fitted   []quotas.Quota            `json:"fitted,omitempty"`
	// Instances is how many instances' usage the fit read (with redis:).
	Instances int `json:"instances,omitempty"`
}

// loadQuotaState reads quotas.state_file: the usage recorded and the fit
// installed before a restart. A missing file is a first start; an
// unreadable one is logged and the refit starts from no usage, so that a
// bad file never keeps the service down.
func loadQuotaState(cfg config.Quotas, log *slog.Logger) (*quotas.Recorder, *quotas.Installed, error) {
	rc := quotas.RecorderConfig{Days: cfg.RecorderDays(), MaxUserDays: cfg.MaxUserDaysPerDay}
	if cfg.StateFile != "" {
		f, err := os.Open(cfg.StateFile)
		switch {
		case errors.Is(err, fs.ErrNotExist):
		case err != nil:
			return nil, nil, fmt.Errorf("quotas.state_file: %w", err)
		default:
			rec, in, err := quotas.ReadState(f, rc)
			f.Close()
			if err == nil {
				log.Info("quotas restored", "file", cfg.StateFile, "user_days", rec.UserDays(), "installed", in != nil)
				return rec, in, nil
			}
			log.Error("quotas.state_file unreadable: the refit starts from no usage, with no fitted quota",
				"file", cfg.StateFile, "err", err)
		}
	}
	rec, err := quotas.NewRecorder(rc)
	return rec, nil, err
}

// newQuotaRefit returns the refit; with client set (redis:), it shares
// this instance's usage, as id under prefix, and fits on every instance's.
func newQuotaRefit(cfg config.Quotas, rec *quotas.Recorder, in *quotas.Installed, pipe *pipeline.Pipeline, log *slog.Logger, reg *prometheus.Registry,
	client redis.UniversalClient, prefix, id string) *quotaRefit {
	q := &quotaRefit{cfg: cfg, rec: rec, pipe: pipe, log: log}
	if client != nil {
		q.shared = &quotaShare{client: client, prefix: prefix, id: id, ttl: time.Duration(cfg.RecorderDays()+1) * 24 * time.Hour,
			rc: quotas.RecorderConfig{Days: cfg.RecorderDays(), MaxUserDays: cfg.MaxUserDaysPerDay},
			bad: prometheus.NewCounter(prometheus.CounterOpts{Name: "flowguard_quota_shared_unreadable_total",
				Help: "Other instances' quota usage read from Redis that could not be decoded and was left out of a refit."})}
		reg.MustRegister(q.shared.bad)
	}
	if in != nil {
		q.installed.Store(in)
		pipe.SetDailyQuotas(in.Quotas)
	}
	q.refits = prometheus.NewCounterVec(prometheus.CounterOpts{
		Name: "flowguard_quota_refits_total",
		Help: "Refits of the fitted daily quotas, by result: installed, too_little_data, over_threshold (the backtest rate-limited more than quotas.max_throttled_fraction), error. A refused fit keeps the quotas before.",
	}, []string{"result"})
	for _, r := range quotas.RefitReasons {
		q.refits.WithLabelValues(r)
	}
	q.refused = prometheus.NewGauge(prometheus.GaugeOpts{
		Name: "flowguard_quota_refit_refused",
		Help: "1 when the last refit of the fitted daily quotas was refused (or failed) and the quotas before it stay; 0 when it installed, or none ran.",
	})
	q.lastInstall = prometheus.NewGauge(prometheus.GaugeOpts{
		Name: "flowguard_quota_last_install_timestamp_seconds",
		Help: "When the fitted daily quotas in force were installed (Unix seconds); 0: none installed.",
	})
	q.quota = prometheus.NewGaugeVec(prometheus.GaugeOpts{
		Name: "flowguard_daily_quota",
		Help: "The fitted daily quota in force, before the multiplier, by tier and endpoint (* for a key's whole traffic).",
	}, []string{"tier", "endpoint"})
	q.backtest = prometheus.NewGaugeVec(prometheus.GaugeOpts{
		Name: "flowguard_quota_backtest_throttled_fraction",
		Help: "The last refit's backtest: the fraction of legitimate test user-days the fit would have rate-limited, by tier and endpoint.",
	}, []string{"tier", "endpoint"})
	reg.MustRegister(q.refits, q.refused, q.lastInstall, q.quota, q.backtest,
		prometheus.NewGaugeFunc(prometheus.GaugeOpts{Name: "flowguard_quota_usage_rows",
			Help: "Rows of usage the refit holds, one per user-day and tier × endpoint (sampled past quotas.max_user_days_per_day a day)."},
			func() float64 { return float64(q.rec.UserDays()) }))
	if in != nil {
		q.showInstalled(in)
	}
	return q
}

func (q *quotaRefit) showInstalled(in *quotas.Installed) {
	q.quota.Reset()
	for _, e := range in.Quotas {
		q.quota.WithLabelValues(e.Tier, e.Endpoint).Set(e.Quota)
	}
	q.lastInstall.Set(float64(in.At.UnixNano()) / 1e9)
}

// refit runs one refit now: fit, backtest, and install when it passes.
func (q *quotaRefit) refit(ctx context.Context) *refitReport {
	q.mu.Lock()
	defer q.mu.Unlock()
	now := q.pipe.Now()
	rep := &refitReport{At: now}
	labelled := q.pipe.LabelledHashes()
	recs := []*quotas.Recorder{q.rec}
	var err error
	if q.shared != nil {
		// Every instance's share of the keys' traffic: a fit on this
		// instance's alone would be too tight. If Redis cannot give it,
		// the refit fails and the quotas before stay.
		if err = q.shared.publish(ctx, q.rec); err == nil {
			var others []*quotas.Recorder
			if others, err = q.shared.others(ctx, q.log); err == nil {
				recs = append(recs, others...)
			}
		}
		rep.Instances = len(recs)
	}
	var table *quotas.UsageTable
	if err == nil {
		table, err = quotas.Merged(func(h uint64) bool { _, ok := labelled[h]; return ok }, recs...)
	}
	var res *quotas.RefitResult
	if err == nil {
		res, err = quotas.Refit(ctx, table, quotas.RefitConfig{
			Today: quotas.DayOf(now), Lookback: q.cfg.LookbackDays, TestDays: q.cfg.TestDays, Percentile: q.cfg.Percentile,
			Thresholds: quotas.AlertThresholds{MaxFraction: q.cfg.MaxThrottledFraction, MinTrainUserDays: q.cfg.MinUserDays},
		})
	}
	if err != nil {
		rep.Result, rep.Error = quotas.RefitError, err.Error()
		q.refits.WithLabelValues(quotas.RefitError).Inc()
		q.refused.Set(1)
		q.log.Error("quota refit failed; the quotas before stay", "err", err)
		q.last.Store(rep)
		return rep
	}
	rep.Result, rep.Problems = res.Reason, res.Problems
	rep.Train, rep.Test = res.Backtest.Train.String(), res.Backtest.Test.String()
	rep.Backtest = res.Backtest.Endpoints
	tot := res.Backtest.Total()
	rep.Total = &tot
	q.backtest.Reset()
	for _, e := range res.Backtest.Endpoints {
		if e.Quota != nil {
			q.backtest.WithLabelValues(e.Tier, e.Endpoint).Set(e.Fraction)
		}
	}
	q.refits.WithLabelValues(res.Reason).Inc()
	if res.Fit == nil {
		q.refused.Set(1)
		q.log.Warn("quota refit refused; the quotas before stay", "reason", res.Reason, "problems", res.Problems,
			"train", rep.Train, "test", rep.Test, "train_user_days", res.Backtest.TrainUserDays)
	} else {
		in := &quotas.Installed{At: now, Window: res.Fit.Window, Percentile: res.Fit.Percentile, Quotas: res.Fit.Quotas}
		q.pipe.SetDailyQuotas(in.Quotas)
		q.installed.Store(in)
		q.showInstalled(in)
		q.refused.Set(0)
		rep.Fitted = in.Quotas
		q.log.Info("quota refit installed", "window", in.Window.String(), "quotas", len(in.Quotas),
			"user_days", res.Fit.UserDays, "backtest_throttled", tot.Fraction)
	}
	q.last.Store(rep)
	if err := q.saveLocked(); err != nil {
		q.log.Error("quotas.state_file not written", "file", q.cfg.StateFile, "err", err)
	}
	return rep
}

// save writes the state file, when there is one.
func (q *quotaRefit) save() error {
	q.mu.Lock()
	defer q.mu.Unlock()
	return q.saveLocked()
}

func (q *quotaRefit) saveLocked() error {
	if q.cfg.StateFile == "" {
		return nil
	}
	return atomicfile.Write(q.cfg.StateFile, func(w io.Writer) error { return quotas.WriteState(w, q.rec, q.installed.Load()) })
}

// run refits every quotas.refit_every while some rule has daily_quota:
// fitted, the first time refit_every after the fit in force (at once when
// that is past).
func (q *quotaRefit) run(ctx context.Context) {
	next := q.cfg.RefitEvery
	if in := q.installed.Load(); in != nil {
		next = max(time.Until(in.At.Add(q.cfg.RefitEvery)), 0)
	}
	t := time.NewTimer(next)
	defer t.Stop()
	var share <-chan time.Time
	if q.shared != nil {
		tick := time.NewTicker(q.cfg.ShareEvery)
		defer tick.Stop()
		share = tick.C
	}
	for {
		select {
		case <-ctx.Done():
			return
		case <-share:
			if err := q.shared.publish(ctx, q.rec); err != nil {
				q.log.Warn("quota usage not shared through redis", "err", err)
			}
			continue
		case <-t.C:
		}
		if q.pipe.Policies().FittedDaily() {
			q.refit(ctx)
		}
		t.Reset(q.cfg.RefitEvery)
	}
}

// quotasView is GET /v1/quotas.
type quotasView struct {
	Enabled   bool              `json:"enabled"` // some rule has daily_quota: fitted
	Installed *quotas.Installed `json:"installed"`
	LastRefit *refitReport      `json:"last_refit"`
	UserDays  int               `json:"usage_user_days"`
}

// handleQuotas serves GET /v1/quotas (what is installed and the last
// refit) and POST /v1/quotas/refit (refit now); both admin.
func (s *Server) handleQuotas(ctx *fasthttp.RequestCtx, refit bool) {
	q := s.quotas
	if refit {
		q.refit(ctx)
	}
	body, err := json.Marshal(quotasView{Enabled: s.pipe.Policies().FittedDaily(), Installed: q.installed.Load(),
		LastRefit: q.last.Load(), UserDays: q.rec.UserDays()})
	if err != nil {
		s.writeError(ctx, &apiError{status: 500, code: "internal", message: err.Error()})
		return
	}
	ctx.SetContentType("application/json")
	ctx.SetBody(body)
}

// quotaShare is the instances' usage in Redis: each writes its own
// (quotas.WriteState, no fit) under PREFIXquota:usage:ID, with a TTL of
// the days kept, and lists its ID in PREFIXquota:instances.
type quotaShare struct {
	client redis.UniversalClient
	prefix string
	id     string
	ttl    time.Duration
	rc     quotas.RecorderConfig
	bad    prometheus.Counter
}

func (s *quotaShare) usageKey(id string) string { return s.prefix + "quota:usage:" + id }
func (s *quotaShare) setKey() string            { return s.prefix + "quota:instances" }

func (s *quotaShare) publish(ctx context.Context, rec *quotas.Recorder) error {
	var buf bytes.Buffer
	if err := quotas.WriteState(&buf, rec, nil); err != nil {
		return err
	}
	ctx, cancel := context.WithTimeout(ctx, 30*time.Second)
	defer cancel()
	_, err := s.client.Pipelined(ctx, func(p redis.Pipeliner) error {
		p.Set(ctx, s.usageKey(s.id), buf.Bytes(), s.ttl)
		p.SAdd(ctx, s.setKey(), s.id)
		p.Expire(ctx, s.setKey(), s.ttl)
		return nil
	})
	return err
}

// others reads the other instances' usage. An instance whose usage has
// expired leaves the list; one whose usage cannot be read is logged,
// counted and left out.
func (s *quotaShare) others(ctx context.Context, log *slog.Logger) ([]*quotas.Recorder, error) {
	ctx, cancel := context.WithTimeout(ctx, 30*time.Second)
	defer cancel()
	ids, err := s.client.SMembers(ctx, s.setKey()).Result()
	if err != nil {
		return nil, err
	}
	var out []*quotas.Recorder
	for _, id := range ids {
		if id == s.id {
			continue
		}
		data, err := s.client.Get(ctx, s.usageKey(id)).Bytes()
		switch {
		case errors.Is(err, redis.Nil):
			s.client.SRem(ctx, s.setKey(), id)
			continue
		case err != nil:
			return nil, err
		}
		rec, _, err := quotas.ReadState(bytes.NewReader(data), s.rc)
		if err != nil {
			s.bad.Inc()
			log.Error("an instance's quota usage in redis is unreadable; the refit leaves it out", "instance", id, "err", err)
			continue
		}
		out = append(out, rec)
	}
	return out, nil
}
