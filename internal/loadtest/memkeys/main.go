// Command memkeys measures what a key costs `flowguard serve` in memory,
// from the process (issue 19): it starts the binary on the embedded
// default (or -config) in a scratch directory, sends -keys distinct keys
// through /v1/decide/batch, lets the embedded learner drain its queue, and
// reports the process's resident set (VmRSS of /proc/PID/status) per
// active key — features, limiter, ML state, recent decisions and learner
// state, with the Go heap's own overhead, as an operator sees it. It also
// reports the heap in use per key (the admin pprof's inuse_space), the
// decision-log records dropped and the queue's high-water mark.
//
// It prints one JSON object. make bench-mem runs it at 1M keys.
package main

import (
	"bufio"
	"bytes"
	"encoding/json"
	"errors"
	"flag"
	"fmt"
	"net"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	"github.com/valyala/fasthttp"
)

type result struct {
	Keys            int     `json:"keys"`
	ActiveKeys      float64 `json:"active_keys"` // flowguard_features_keys at the end
	RSSStartMB      float64 `json:"rss_start_mb"`
	RSSEndMB        float64 `json:"rss_end_mb"`
	RSSPeakMB       float64 `json:"rss_peak_mb"`
	RSSPerKeyBytes  float64 `json:"rss_per_key_bytes"`
	HeapPerKeyBytes float64 `json:"heap_per_key_bytes"`
	DecisionsPerSec float64 `json:"decisions_per_sec"`
	LogDropped      float64 `json:"decision_log_dropped"`
	QueuePeak       float64 `json:"learner_queue_peak"`
	FeatureFull     float64 `json:"feature_store_down_fallbacks"`
	SettleSeconds   float64 `json:"settle_seconds"`
	// With -outcomes: the decision records the learner applied, the
	// outcomes it joined to them and those it found no decision for, once
	// every accepted epoch had closed (or -outcomes passed).
	LearnerDecisions float64 `json:"learner_decisions,omitempty"`
	LearnerOutcomes  float64 `json:"learner_outcomes,omitempty"`
	LearnerOrphans   float64 `json:"learner_orphan_outcomes,omitempty"`
	PendingDropped   float64 `json:"learner_pending_dropped,omitempty"`
	OutcomesSeconds  float64 `json:"outcomes_seconds,omitempty"`
}

const adminToken = "memkeys-admin-token-0123456789"

func main() {
	bin := flag.String("bin", "", "the flowguard binary (required)")
	cfg := flag.String("config", "", "configuration file; empty: the embedded default")
	keys := flag.Int("keys", 1_000_000, "distinct API keys to send")
	warm := flag.Int("warm", 10_000, "keys sent before the starting RSS is read")
	batch := flag.Int("batch", 500, "decisions per /v1/decide/batch call (server.max_batch or less)")
	conns := flag.Int("conns", 2, "concurrent batch senders")
	settle := flag.Duration("settle", 60*time.Second, "at most this long for the learner's queue to drain")
	outcomes := flag.Duration("outcomes", 0, "then wait this long at most for every epoch the learner accepted to close and reach it (the configuration's ml.epoch must be shorter)")
	idle := flag.Duration("idle", 0, "then wait this long before the final reading: Go returns freed memory to the OS gradually")
	heapOut := flag.String("heapprofile", "", "write serve's heap profile at the end to this file (go tool pprof)")
	flag.Parse()
	if *bin == "" || *keys < 1 || *batch < 1 || *conns < 1 || *warm < 0 {
		fmt.Fprintln(os.Stderr, "memkeys: -bin is required; -keys, -batch and -conns must be positive")
		os.Exit(2)
	}
	r, err := run(*bin, *cfg, *keys, *warm, *batch, *conns, *settle, *outcomes, *idle, *heapOut)
	if err != nil {
		fmt.Fprintln(os.Stderr, "memkeys:", err)
		os.Exit(1)
	}
	out, _ := json.MarshalIndent(r, "", "  ")
	fmt.Println(string(out))
}

func run(bin, cfg string, keys, warm, batch, conns int, settle, outcomes, idle time.Duration, heapOut string) (*result, error) {
	bin, err := filepath.Abs(bin)
	if err != nil {
		return nil, err
	}
	if cfg != "" {
		if cfg, err = filepath.Abs(cfg); err != nil {
			return nil, err
		}
	}
	dir, err := os.MkdirTemp("", "memkeys")
	if err != nil {
		return nil, err
	}
	defer os.RemoveAll(dir)
	addr, err := freeAddr()
	if err != nil {
		return nil, err
	}
	args := []string{"serve", "--addr", addr}
	if cfg != "" {
		args = append(args, "--config", cfg)
	}
	cmd := exec.Command(bin, args...)
	cmd.Dir = dir // the embedded default writes its audit and stop logs here
	cmd.Env = append(os.Environ(), "FLOWGUARD_ADMIN_TOKEN="+adminToken)
	logf, err := os.Create(filepath.Join(dir, "serve.log"))
	if err != nil {
		return nil, err
	}
	cmd.Stdout, cmd.Stderr = logf, logf
	if err := cmd.Start(); err != nil {
		return nil, err
	}
	defer func() { _ = cmd.Process.Kill(); _ = cmd.Wait() }()
	// Two more connections than senders: the sampler reads /metrics meanwhile.
	hc := &fasthttp.HostClient{Addr: addr, MaxConns: conns + 2, MaxConnWaitTimeout: 30 * time.Second, ReadTimeout: 30 * time.Second, WriteTimeout: 30 * time.Second}
	if err := waitReady(hc, 15*time.Second); err != nil {
		logs, _ := os.ReadFile(filepath.Join(dir, "serve.log"))
		return nil, fmt.Errorf("%w; serve's log:\n%s", err, logs)
	}
	pid := cmd.Process.Pid
	if _, err := send(hc, "warm_", warm, batch, conns); err != nil {
		return nil, err
	}
	if _, err := drain(hc, settle); err != nil {
		return nil, err
	}
	rss0, err := rss(pid)
	if err != nil {
		return nil, err
	}
	heap0, err := heapInuse(hc)
	if err != nil {
		return nil, err
	}
	// The peak RSS and the queue's high-water mark are sampled while the
	// keys go in.
	var peakRSS, peakQueue atomic.Int64
	stop := make(chan struct{})
	var wg sync.WaitGroup
	wg.Go(func() {
		t := time.NewTicker(100 * time.Millisecond)
		defer t.Stop()
		for {
			select {
			case <-stop:
				return
			case <-t.C:
			}
			if v, err := rss(pid); err == nil && v > peakRSS.Load() {
				peakRSS.Store(v)
			}
			if m, err := metrics(hc); err == nil && int64(m["flowguard_learner_queue_length"]) > peakQueue.Load() {
				peakQueue.Store(int64(m["flowguard_learner_queue_length"]))
			}
		}
	})
	took, err := send(hc, "k_mem_", keys, batch, conns)
	if err != nil {
		close(stop)
		wg.Wait()
		return nil, err
	}
	settled, err := drain(hc, settle)
	if err != nil {
		close(stop)
		wg.Wait()
		return nil, err
	}
	r := &result{Keys: keys, DecisionsPerSec: float64(keys) / took.Seconds(), SettleSeconds: settled.Seconds()}
	if outcomes > 0 {
		// Every epoch closes and its outcome reaches the learner, which
		// then holds the key's history for the attribution window: state
		// a key costs once its first epoch is over.
		if err := waitOutcomes(hc, outcomes, r); err != nil {
			close(stop)
			wg.Wait()
			return nil, err
		}
	}
	close(stop)
	wg.Wait()
	if idle > 0 {
		time.Sleep(idle)
	}
	rss1, err := rss(pid)
	if err != nil {
		return nil, err
	}
	heap1, err := heapInuse(hc)
	if err != nil {
		return nil, err
	}
	if heapOut != "" {
		if err := saveHeap(hc, heapOut); err != nil {
			return nil, err
		}
	}
	m, err := metrics(hc)
	if err != nil {
		return nil, err
	}
	active := m["flowguard_features_keys"]
	added := active - float64(warm)
	if added <= 0 {
		return nil, fmt.Errorf("flowguard_features_keys is %v after %d keys: the keys did not reach the feature store", active, keys+warm)
	}
	r.ActiveKeys = active
	r.RSSStartMB, r.RSSEndMB, r.RSSPeakMB = mb(rss0), mb(rss1), mb(max(peakRSS.Load(), rss1))
	r.RSSPerKeyBytes = float64(rss1-rss0) / added
	r.HeapPerKeyBytes = (heap1 - heap0) / added
	r.LogDropped = m["flowguard_decision_log_dropped_total"]
	r.QueuePeak = float64(peakQueue.Load())
	r.FeatureFull = m[`flowguard_ml_fallbacks_total{reason="feature_store_down"}`]
	return r, nil
}

// waitOutcomes waits, at most limit, until the outcome of every decision
// the learner applied has reached it, and fills in r's learner counts.
func waitOutcomes(hc *fasthttp.HostClient, limit time.Duration, r *result) error {
	start := time.Now()
	for {
		m, err := metrics(hc)
		if err != nil {
			return err
		}
		r.LearnerDecisions, r.LearnerOutcomes = m["flowguard_learner_decisions_total"], m["flowguard_learner_outcomes_total"]
		r.LearnerOrphans = m["flowguard_learner_orphan_outcomes_total"]
		r.PendingDropped = m["flowguard_learner_pending_dropped_total"]
		// Static and shadow epochs' outcomes count as orphans (nothing of
		// theirs waits); every decision's outcome has arrived when there
		// are as many outcomes as decisions.
		if r.LearnerDecisions > 0 && r.LearnerOutcomes >= r.LearnerDecisions || time.Since(start) > limit {
			r.OutcomesSeconds = time.Since(start).Seconds()
			return nil
		}
		time.Sleep(250 * time.Millisecond)
	}
}

func mb(b int64) float64 { return float64(b) / (1 << 20) }

// send posts n keys named prefix+i in batches from conns senders, and
// returns how long it took.
func send(hc *fasthttp.HostClient, prefix string, n, batch, conns int) (time.Duration, error) {
	var next atomic.Int64
	var failed atomic.Pointer[error]
	var wg sync.WaitGroup
	start := time.Now()
	for range conns {
		wg.Go(func() {
			var body []byte
			req, resp := fasthttp.AcquireRequest(), fasthttp.AcquireResponse()
			defer fasthttp.ReleaseRequest(req)
			defer fasthttp.ReleaseResponse(resp)
			for failed.Load() == nil {
				from := int(next.Add(int64(batch))) - batch
				if from >= n {
					return
				}
				to := min(from+batch, n)
				body = append(body[:0], '[')
				for i := from; i < to; i++ {
					if i > from {
						body = append(body, ',')
					}
					body = fmt.Appendf(body, `{"key":"%s%d","tenant":"t%d","endpoint":"GET /v1/balance","client_ip":"198.51.%d.%d"}`,
						prefix, i, i%1000, (i>>8)&255, i&255)
				}
				body = append(body, ']')
				req.Reset()
				req.SetRequestURI("http://" + hc.Addr + "/v1/decide/batch")
				req.Header.SetMethod("POST")
				req.Header.SetContentType("application/json")
				req.SetBodyRaw(body)
				if err := hc.Do(req, resp); err != nil {
					failed.Store(&err)
					return
				}
				if resp.StatusCode() != 200 || bytes.Contains(resp.Body(), []byte(`"error"`)) {
					err := fmt.Errorf("batch at %d: status %d: %.300s", from, resp.StatusCode(), resp.Body())
					failed.Store(&err)
					return
				}
			}
		})
	}
	wg.Wait()
	if err := failed.Load(); err != nil {
		return 0, *err
	}
	return time.Since(start), nil
}

// drain waits until the learner's queue is empty (at most limit) and
// returns how long that took.
func drain(hc *fasthttp.HostClient, limit time.Duration) (time.Duration, error) {
	start := time.Now()
	for {
		m, err := metrics(hc)
		if err != nil {
			return 0, err
		}
		if m["flowguard_learner_queue_length"] == 0 {
			return time.Since(start), nil
		}
		if time.Since(start) > limit {
			return 0, fmt.Errorf("the learner's queue still holds %v records after %v", m["flowguard_learner_queue_length"], limit)
		}
		time.Sleep(100 * time.Millisecond)
	}
}

func waitReady(hc *fasthttp.HostClient, limit time.Duration) error {
	deadline := time.Now().Add(limit)
	for time.Now().Before(deadline) {
		code, _, err := hc.Get(nil, "http://"+hc.Addr+"/readyz")
		if err == nil && code == 200 {
			return nil
		}
		time.Sleep(50 * time.Millisecond)
	}
	return errors.New("serve was not ready within " + limit.String())
}

// metrics reads the samples of /metrics by name{labels}, and summed by
// name.
func metrics(hc *fasthttp.HostClient) (map[string]float64, error) {
	code, body, err := hc.Get(nil, "http://"+hc.Addr+"/metrics")
	if err != nil {
		return nil, err
	}
	if code != 200 {
		return nil, fmt.Errorf("/metrics: status %d", code)
	}
	m := map[string]float64{}
	sc := bufio.NewScanner(bytes.NewReader(body))
	sc.Buffer(make([]byte, 1<<20), 1<<20)
	for sc.Scan() {
		line := sc.Text()
		if line == "" || line[0] == '#' {
			continue
		}
		i := strings.LastIndexByte(line, ' ')
		if i < 0 {
			continue
		}
		if v, err := strconv.ParseFloat(line[i+1:], 64); err == nil {
			m[line[:i]] += v
			if j := strings.IndexByte(line[:i], '{'); j > 0 {
				m[line[:j]] += v // and summed over the labels
			}
		}
	}
	return m, sc.Err()
}

// saveHeap writes serve's heap profile, in pprof's format, to path.
func saveHeap(hc *fasthttp.HostClient, path string) error {
	body, err := admin(hc, "/debug/pprof/heap?gc=1")
	if err != nil {
		return err
	}
	return os.WriteFile(path, body, 0o644)
}

// admin GETs an admin endpoint with the token.
func admin(hc *fasthttp.HostClient, path string) ([]byte, error) {
	req, resp := fasthttp.AcquireRequest(), fasthttp.AcquireResponse()
	defer fasthttp.ReleaseRequest(req)
	defer fasthttp.ReleaseResponse(resp)
	req.SetRequestURI("http://" + hc.Addr + path)
	req.Header.Set("Authorization", "Bearer "+adminToken)
	if err := hc.DoTimeout(req, resp, 30*time.Second); err != nil {
		return nil, err
	}
	if resp.StatusCode() != 200 {
		return nil, fmt.Errorf("%s: status %d: %.200s", path, resp.StatusCode(), resp.Body())
	}
	return append([]byte(nil), resp.Body()...), nil
}

// heapInuse is the live heap, from the admin pprof's heap profile in its
// text form (debug=1), after a GC it forces (?gc=1).
func heapInuse(hc *fasthttp.HostClient) (float64, error) {
	body, err := admin(hc, "/debug/pprof/heap?debug=1&gc=1")
	if err != nil {
		return 0, err
	}
	for line := range strings.Lines(string(body)) {
		if v, ok := strings.CutPrefix(strings.TrimSpace(line), "# HeapInuse = "); ok {
			return strconv.ParseFloat(strings.TrimSpace(v), 64)
		}
	}
	return 0, errors.New("/debug/pprof/heap has no HeapInuse line")
}

// rss is the process's resident set in bytes.
func rss(pid int) (int64, error) {
	b, err := os.ReadFile("/proc/" + strconv.Itoa(pid) + "/status")
	if err != nil {
		return 0, err
	}
	for line := range strings.Lines(string(b)) {
		if v, ok := strings.CutPrefix(line, "VmRSS:"); ok {
			kb, err := strconv.ParseInt(strings.TrimSuffix(strings.TrimSpace(v), " kB"), 10, 64)
			return kb << 10, err
		}
	}
	return 0, errors.New("no VmRSS in /proc/" + strconv.Itoa(pid) + "/status")
}

func freeAddr() (string, error) {
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		return "", err
	}
	defer l.Close()
	return l.Addr().String(), nil
}
