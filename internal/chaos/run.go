package main

import (
	"context"
	"fmt"
	"io"
	"strings"
	"syscall"
	"text/tabwriter"
	"time"

	"github.com/segmentio/kafka-go"

	"github.com/devflow/flowguard/internal/topics"
)

// Row is one fault's figures.
type Row struct {
	Fault      string
	Window     time.Duration // from the fault to the end of its recovery
	Answered   int
	Unanswered int // no instance of any region answered
	Status5xx  int
	P99        time.Duration // during the fault itself
	FallBack   string        // time to fall back, and to what
	Produced   int64         // labels Kafka acknowledged so far
	Applied    int64         // labels the learner applied (each label_id once)
	HotAllowed int           // the budgeted key's admissions in the window
	HotBudget  float64       // its budget in the window: rate·W + burst
	HotBound   float64       // the documented bound: rate·W + 3·burst + 3
}

// Report is a run's result.
type Report struct {
	Rows  []Row
	Notes []string
	Dir   string
}

// OK reports whether every fault met the harness's requirements.
func (r *Report) OK() bool {
	for _, row := range r.Rows {
		if row.Status5xx > 0 || row.Unanswered > 0 || row.Applied != row.Produced || float64(row.HotAllowed) > row.HotBound {
			return false
		}
	}
	return len(r.Rows) > 0
}

// Print writes the table.
func (r *Report) Print(w io.Writer) {
	tw := tabwriter.NewWriter(w, 0, 0, 2, ' ', tabwriter.AlignRight)
	fmt.Fprintln(tw, "fault\twindow\tanswered\tunanswered\t5xx\tp99 in fault\ttime to fall back\tlabels applied/produced\tonce\tbudgeted key admitted/budget\t≤ bound\t")
	for _, x := range r.Rows {
		once := "yes"
		if x.Applied != x.Produced {
			once = "NO"
		}
		within := "yes"
		if float64(x.HotAllowed) > x.HotBound {
			within = "NO"
		}
		fmt.Fprintf(tw, "%s\t%.0fs\t%d\t%d\t%d\t%s\t%s\t%d/%d\t%s\t%d/%.0f = %.2f\t%s (%.2f)\t\n", x.Fault, x.Window.Seconds(), x.Answered,
			x.Unanswered, x.Status5xx, x.P99.Round(100*time.Microsecond), x.FallBack, x.Applied, x.Produced, once,
			x.HotAllowed, x.HotBudget, float64(x.HotAllowed)/x.HotBudget, within, x.HotBound/x.HotBudget)
	}
	tw.Flush()
	for _, n := range r.Notes {
		fmt.Fprintln(w, "- "+n)
	}
	verdict := "PASS"
	if !r.OK() {
		verdict = "FAIL"
	}
	fmt.Fprintf(w, "%s (process logs in %s)\n", verdict, r.Dir)
}

// Run starts the cluster, runs the faults and returns the report; it
// stops every process it started before returning.
func Run(ctx context.Context, o Options) (*Report, error) {
	if o.MaxAge == 0 {
		o.MaxAge = max(o.Fault/2, 3*time.Second).Round(time.Second)
	}
	logf := func(format string, args ...any) {
		if o.Verbose {
			fmt.Fprintf(stderr, "chaos: "+format+"\n", args...)
		}
	}
	c := &cluster{o: o, logf: logf}
	defer c.stopAll()
	rep := &Report{}
	if err := c.setup(ctx); err != nil {
		return nil, err
	}
	rep.Dir = c.dir
	logf("cluster up in %s", c.dir)

	bg, stop := context.WithCancel(ctx)
	defer stop()
	ld := newLoad(c)
	smp := &sampler{}
	lb := &labels{w: &kafka.Writer{Addr: kafka.TCP(addr(c.kport)), Topic: topics.Labels, Balancer: &kafka.Murmur2Balancer{},
		BatchTimeout: time.Millisecond, RequiredAcks: kafka.RequireAll, MaxAttempts: 1,
		WriteTimeout: 2 * time.Second, ReadTimeout: 2 * time.Second}}
	defer lb.w.Close()
	done := make(chan struct{}, 3)
	go func() { ld.run(bg, o.Rate, o.HotRate); done <- struct{}{} }()
	go func() { smp.run(bg, c); done <- struct{}{} }()
	go func() { lb.run(bg, 100*time.Millisecond); done <- struct{}{} }()
	defer func() {
		stop()
		for range 3 {
			<-done
		}
	}()
	learnerMetrics := "http://" + addr(c.lport) + "/metrics"

	// checkLabels pauses the producer and waits for the learner to have
	// applied every acknowledged label.
	checkLabels := func(row *Row) {
		lb.paused.Lock()
		defer lb.paused.Unlock()
		row.Produced = lb.acked.Load()
		deadline := time.Now().Add(60 * time.Second)
		for {
			v, err := metricSum(learnerMetrics, "flowguard_learner_labels_applied_total")
			if err == nil {
				row.Applied = int64(v)
			}
			if row.Applied >= row.Produced || time.Now().After(deadline) || ctx.Err() != nil {
				return
			}
			time.Sleep(250 * time.Millisecond)
		}
	}
	measure := func(name string, t0, restored, t1 time.Time, fallBack string) Row {
		row := Row{Fault: name, Window: t1.Sub(t0), FallBack: fallBack}
		all := ld.between(t0, t1)
		var during []record
		for _, r := range all {
			if r.status == 0 {
				row.Unanswered++
			} else {
				row.Answered++
			}
			if r.status >= 500 {
				row.Status5xx++
			}
			if r.hot && r.allowed {
				row.HotAllowed++
			}
			if r.at.Before(restored) {
				during = append(during, r)
			}
		}
		row.P99 = p99(during)
		w := t1.Sub(t0).Seconds()
		row.HotBudget = hotRate*w + hotBurst
		row.HotBound = hotRate*w + nRegions*hotBurst + nRegions
		checkLabels(&row)
		return row
	}
	since := func(t0 time.Time, recs []record, ok func(record) bool, what string) string {
		for _, r := range recs {
			if ok(r) {
				return fmt.Sprintf("%s %s", r.at.Sub(t0).Round(time.Millisecond), what)
			}
		}
		return "— (" + what + ": none)"
	}

	// Warm up: models installed, regions hearing each other.
	warm := min(o.Settle+o.Fault, 20*time.Second)
	logf("warming up for %s", warm)
	sleep(ctx, warm)
	t0 := time.Now()
	sleep(ctx, o.Settle)
	rep.Rows = append(rep.Rows, measure("none (baseline)", t0, time.Now(), time.Now(), "—"))

	for _, f := range strings.Split(o.Faults, ",") {
		if ctx.Err() != nil {
			return rep, ctx.Err()
		}
		f = strings.TrimSpace(f)
		logf("fault %s", f)
		t0 := time.Now()
		var restore func() error
		switch f {
		case "redis": // one region's Redis
			c.redis[2].kill()
			restore = func() error { return c.restartRedis(ctx, 2) }
		case "kafka": // the broker stops answering
			c.kafka.signal(syscall.SIGSTOP)
			restore = func() error { c.kafka.signal(syscall.SIGCONT); return nil }
		case "serving": // one instance of eu-west-1
			c.serve[1][0].kill()
			restore = func() error { return c.startServe(ctx, 1, 0) }
		case "learner":
			c.learner.kill()
			restore = func() error {
				if err := c.learner.start(); err != nil {
					return err
				}
				return waitHTTP(ctx, "http://"+addr(c.lport)+"/healthz")
			}
		case "region": // ap-south-1: both instances and its Redis
			c.serve[2][0].kill()
			c.serve[2][1].kill()
			c.redis[2].kill()
			restore = func() error {
				if err := c.restartRedis(ctx, 2); err != nil {
					return err
				}
				if err := c.startServe(ctx, 2, 0); err != nil {
					return err
				}
				return c.startServe(ctx, 2, 1)
			}
		default:
			return rep, fmt.Errorf("unknown fault %q (want redis, kafka, serving, learner or region)", f)
		}
		sleep(ctx, o.Fault)
		restored := time.Now()
		if err := restore(); err != nil {
			return rep, fmt.Errorf("restoring after %s: %w", f, err)
		}
		sleep(ctx, o.Settle)
		t1 := time.Now()
		recs := ld.between(t0, restored)
		var fb string
		switch f {
		case "redis":
			fb = since(t0, recs, func(r record) bool { return r.region == 2 && strings.HasPrefix(r.reason, "redis") },
				"in-memory share (ap-south-1)")
		case "kafka":
			if at, ok := smp.first(t0, restored, func(s sample) bool { return s.isolated == 1 }); ok {
				fb = fmt.Sprintf("%s shares frozen", at.Sub(t0).Round(time.Millisecond))
			} else {
				fb = "— (shares never frozen)"
			}
			fb += "; " + since(t0, recs, func(r record) bool { return r.reason == "stale_model" }, "stale_model")
		case "serving":
			fb = since(t0, recs, func(r record) bool { return r.failover }, "to the other instance")
		case "learner":
			fb = since(t0, recs, func(r record) bool { return r.reason == "stale_model" }, "stale_model")
		case "region":
			if at, ok := smp.first(t0, restored, func(s sample) bool { return s.region != 2 && s.live == 2 }); ok {
				fb = fmt.Sprintf("%s survivors took its share", at.Sub(t0).Round(time.Millisecond))
			} else {
				fb = "— (no takeover seen)"
			}
		}
		rep.Rows = append(rep.Rows, measure(f, t0, restored, t1, fb))
	}
	rep.Notes = append(rep.Notes,
		fmt.Sprintf("load: %d req/s of 200 ordinary keys (ml on) + %d req/s of k_budget (budget %d/s, burst %d; 50/30/20 over the regions); the client fails over like a load balancer (other instance, then next region)", o.Rate, o.HotRate, hotRate, hotBurst),
		fmt.Sprintf("each fault lasts %s, then %s of recovery; figures cover both, p99 the fault alone; ml.max_model_age %s", o.Fault, o.Settle, o.MaxAge),
		"kafka: the broker is frozen (SIGSTOP/SIGCONT), not killed: `flowguard dev kafka` keeps topics in memory, so a kill would erase them, which a replicated cluster never does; labels written meanwhile are retried by the producer until acknowledged",
		"labels: one every 100 ms with a unique label_id, acknowledged by Kafka (acks=all); 'applied' is the learner's flowguard_learner_labels_applied_total (restored from its Redis checkpoints after a kill), checked after each recovery with the producer paused",
		fmt.Sprintf("bound: admitted ≤ rate·W + R·burst + R over a window W (README: multi-region budgets), shown as a ratio of rate·W + burst; resends after failed label writes: %d", lb.dups.Load()),
	)
	return rep, nil
}

func (c *cluster) restartRedis(ctx context.Context, i int) error {
	if err := c.redis[i].start(); err != nil {
		return err
	}
	return waitTCP(ctx, addr(c.rport[i]))
}

func sleep(ctx context.Context, d time.Duration) {
	select {
	case <-ctx.Done():
	case <-time.After(d):
	}
}
