package sim

import (
	"bufio"
	"bytes"
	"compress/gzip"
	"context"
	"encoding/json"
	"fmt"
	"io"
	"math"
	"os"
	"path/filepath"
	"sort"
	"strings"
	"time"

	"github.com/devflow/flowguard/quotas"
	"github.com/devflow/flowguard/rewards"
)

// TraceOptions configures ReplayTrace.
type TraceOptions struct {
	// Seed seeds the policies' draws. Default: 0.
	Seed uint64
	// Policies to replay. Required.
	Policies []string
	// Epoch is the key-epoch length. Default: 1m.
	Epoch time.Duration
	// Rate is every client's base budget, requests per minute; Burst its
	// burst. Defaults: 10 and 20.
	Rate, Burst int64
	// Workers, Progress: as in Options.
	Workers  int
	Progress func(done, total int64)
}

// traceData is an access log turned into key-epoch demand.
type traceData struct {
	clients []traceClient
	counts  map[uint64]float32
}

type traceClient struct {
	name     string
	requests int64
	bot      bool
}

// TraceReport is what a replay found: per policy, the results and the
// clients it would have throttled.
type TraceReport struct {
	File     string
	Clients  int
	Requests int64
	Bots     int
	Results  *Results
	// Throttled lists, per policy, the clients with a request throttled
	// or blocked, most throttled first.
	Throttled map[string][]ThrottledClient
}

// ThrottledClient is one client a policy would have throttled.
type ThrottledClient struct {
	Client    string `json:"client"`
	Bot       bool   `json:"bot"`
	Requests  int64  `json:"requests"`
	Throttled int64  `json:"throttled"`
}

// ReplayTrace replays an access log (combined or common format, gzipped
// or not) through the pipeline: each client address is a key of one
// tenant whose tier allows Rate requests a minute (floor ×0.25, ceiling
// ×4, ML on), its requests per epoch are the demand, and the clients
// whose user agent says bot, crawler or spider are treated as abusive and
// labelled an hour after their first request — an access log carries no
// abuse labels, so this is the replay's stand-in for them. The log is
// parsed by quotas.ParseAccessLogLine, the parser of `quotas
// --access-log`. ctx cancels the replay between epochs.
func ReplayTrace(ctx context.Context, path string, o TraceOptions) (*TraceReport, error) {
	if o.Epoch == 0 {
		o.Epoch = time.Minute
	}
	if o.Rate == 0 {
		o.Rate = 10
	}
	if o.Burst == 0 {
		o.Burst = 2 * o.Rate
	}
	if o.Epoch < time.Second || o.Epoch > time.Hour || (24*time.Hour)%o.Epoch != 0 {
		return nil, fmt.Errorf("sim: trace epoch %v must be between 1s and 1h and divide a day", o.Epoch)
	}
	if o.Rate < 1 || o.Burst < 1 {
		return nil, fmt.Errorf("sim: trace rate %d and burst %d must be positive", o.Rate, o.Burst)
	}
	f, err := os.Open(path)
	if err != nil {
		return nil, fmt.Errorf("sim: %w", err)
	}
	defer f.Close()
	var r io.Reader = bufio.NewReader(f)
	if strings.HasSuffix(path, ".gz") {
		gz, err := gzip.NewReader(r)
		if err != nil {
			return nil, fmt.Errorf("sim: %s: %w", path, err)
		}
		defer gz.Close()
		r = gz
	}
	type hit struct {
		client int
		at     time.Time
	}
	var hits []hit
	index := map[string]int{}
	var clients []traceClient
	var first, last time.Time
	sc := bufio.NewScanner(r)
	sc.Buffer(make([]byte, 64*1024), 1<<20)
	for line := 1; sc.Scan(); line++ {
		text := strings.TrimSpace(sc.Text())
		if text == "" {
			continue
		}
		e, err := quotas.ParseAccessLogLine(text)
		if err != nil {
			return nil, fmt.Errorf("%s:%d: %w", path, line, err)
		}
		i, ok := index[e.Client]
		if !ok {
			i = len(clients)
			index[e.Client] = i
			clients = append(clients, traceClient{name: e.Client})
		}
		clients[i].requests++
		clients[i].bot = clients[i].bot || quotas.IsBot(e.UserAgent)
		t := e.Time.UTC()
		if first.IsZero() || t.Before(first) {
			first = t
		}
		if t.After(last) {
			last = t
		}
		hits = append(hits, hit{i, t})
	}
	if err := sc.Err(); err != nil {
		return nil, fmt.Errorf("sim: %s: %w", path, err)
	}
	if len(hits) == 0 {
		return nil, fmt.Errorf("sim: %s: no requests", path)
	}
	start := first.Truncate(o.Epoch)
	epochs := int(last.Sub(start)/o.Epoch) + 1
	td := &traceData{clients: clients, counts: map[uint64]float32{}}
	for _, h := range hits {
		td.counts[uint64(h.client)<<32|uint64(h.at.Sub(start)/o.Epoch)]++
	}
	yaml := fmt.Sprintf(`name: %q
start: %s
duration: %s
epoch: %s
tiers:
  default: {rate: %d, period: 1m, burst: %d, floor: 0.25, ceiling: 4, ml: on}
learning: {publish_every: %s, history_days: 1, attribution_window: 24h}
tenants:
  - {name: trace, tier: default, endpoint: "GET /", keys: %d, daily_requests: {median: 1}}
`, filepath.Base(path), start.Format(time.RFC3339), time.Duration(epochs)*o.Epoch, o.Epoch, o.Rate, o.Burst,
		max(o.Epoch, 5*time.Minute), len(clients))
	s, err := ParseScenario(path, []byte(yaml))
	if err != nil {
		return nil, fmt.Errorf("sim: trace scenario: %w", err)
	}
	s.trace = td
	res, err := Run(ctx, s, Options{Seed: o.Seed, Policies: o.Policies, Workers: o.Workers, Progress: o.Progress,
		throttledOut: true})
	if err != nil {
		return nil, err
	}
	rep := &TraceReport{File: path, Clients: len(clients), Requests: int64(len(hits)), Results: res,
		Throttled: map[string][]ThrottledClient{}}
	for _, c := range clients {
		if c.bot {
			rep.Bots++
		}
	}
	for name, per := range res.throttledPerKey {
		var list []ThrottledClient
		for k, n := range per {
			if n > 0 {
				c := clients[k]
				list = append(list, ThrottledClient{Client: c.name, Bot: c.bot, Requests: c.requests, Throttled: int64(math.Round(n))})
			}
		}
		sort.Slice(list, func(i, j int) bool {
			if list[i].Throttled != list[j].Throttled {
				return list[i].Throttled > list[j].Throttled
			}
			return list[i].Client < list[j].Client
		})
		rep.Throttled[name] = list
	}
	return rep, nil
}

// traceLabels are the stand-in labels of a replay: each bot labelled
// abusive an hour after its first request, over its whole traffic.
func (sr *sharedRun) traceLabels() {
	end := sr.micros(sr.epochs)
	for k := range sr.pop.names {
		if sr.pop.kind[k] == kindLegit {
			continue
		}
		firstE := -1
		for e := 0; e < sr.epochs; e++ {
			if sr.pop.trace[uint64(k)<<32|uint64(e)] > 0 {
				firstE = e
				break
			}
		}
		if firstE < 0 {
			continue
		}
		from := sr.micros(firstE)
		at := from + 3600e6
		if at >= end {
			continue
		}
		sr.labels = append(sr.labels, pendingLabel{at: at, key: k, label: rewards.Label{
			LabelID: "bot-" + sr.pop.names[k], Key: sr.pop.names[k], Abusive: true,
			From: time.UnixMicro(from).UTC(), To: time.UnixMicro(end).UTC(), Source: "user-agent", Severity: 1}})
	}
	sort.SliceStable(sr.labels, func(i, j int) bool { return sr.labels[i].at < sr.labels[j].at })
}

// WriteText prints the replay's summary and, per policy, the clients it
// would have throttled (the first 20).
func (r *TraceReport) WriteText(w io.Writer) error {
	var b bytes.Buffer
	fmt.Fprintf(&b, "%s: %d requests from %d clients (%d bots, treated as abusive)\n", r.File, r.Requests, r.Clients, r.Bots)
	for _, name := range r.Results.Order {
		p := r.Results.Policies[name]
		list := r.Throttled[name]
		fmt.Fprintf(&b, "\n%s: %d clients throttled; legit requests throttled %.3f%%, bot requests served %.3f%%\n",
			name, len(list), 100*p.LegitThrottledFraction, 100*p.AbuseServedFraction)
		fmt.Fprintf(&b, "  %-18s %-4s %9s %9s\n", "client", "bot", "requests", "throttled")
		for i, c := range list {
			if i == 20 {
				fmt.Fprintf(&b, "  … %d more\n", len(list)-20)
				break
			}
			bot := ""
			if c.Bot {
				bot = "yes"
			}
			fmt.Fprintf(&b, "  %-18s %-4s %9d %9d\n", c.Client, bot, c.Requests, c.Throttled)
		}
	}
	_, err := w.Write(b.Bytes())
	return err
}

// WriteDir writes the replay's results (as WriteDir of Results) and
// throttled.json, the throttled clients per policy.
func (r *TraceReport) WriteDir(dir string) error {
	if err := r.Results.WriteDir(dir); err != nil {
		return err
	}
	b, err := json.MarshalIndent(r.Throttled, "", "  ")
	if err != nil {
		return err
	}
	return os.WriteFile(filepath.Join(dir, "throttled.json"), append(b, '\n'), 0o644)
}
