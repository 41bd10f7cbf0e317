package main

import (
	"bufio"
	"context"
	"encoding/json"
	"fmt"

	"math/rand/v2"
	"net"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"slices"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"syscall"
	"time"

	"github.com/segmentio/kafka-go"
	"github.com/valyala/fasthttp"
)

// Options configures a run.
type Options struct {
	Fault   time.Duration // each fault's length. Default: 20s
	Settle  time.Duration // after each restore. Default: 10s
	Rate    int           // decide requests/s of the ordinary keys. Default: 300
	HotRate int           // requests/s of the budgeted key (budget 50/s, burst 50). Default: 150
	Bin     string        // flowguard binary; "" builds one
	Faults  string        // Default: redis,kafka,serving,learner,region
	MaxAge  time.Duration // ml.max_model_age. Default: Fault/2
	Verbose bool
}

func defaultOptions() Options {
	return Options{Fault: 20 * time.Second, Settle: 10 * time.Second, Rate: 300, HotRate: 150,
		Faults: "redis,kafka,serving,learner,region"}
}

const (
	hotRate  = 50 // the budgeted key's budget per second
	hotBurst = 50
	nRegions = 3
)

var regionNames = [nRegions]string{"us-east-1", "eu-west-1", "ap-south-1"}

// proc is one child process.
type proc struct {
	name string
	args []string
	env  []string
	log  string
	cmd  *exec.Cmd
	done chan struct{} // closed when cmd has exited
}

func (p *proc) start() error {
	f, err := os.OpenFile(p.log, os.O_CREATE|os.O_WRONLY|os.O_APPEND, 0o644)
	if err != nil {
		return err
	}
	cmd := exec.Command(p.args[0], p.args[1:]...)
	cmd.Env = append(os.Environ(), p.env...)
	cmd.Stdout, cmd.Stderr = f, f
	if err := cmd.Start(); err != nil {
		f.Close()
		return fmt.Errorf("%s: %w", p.name, err)
	}
	done := make(chan struct{})
	go func() { _ = cmd.Wait(); f.Close(); close(done) }()
	p.cmd, p.done = cmd, done
	return nil
}

// kill ends the process abruptly, like a crash.
func (p *proc) kill() {
	if p.cmd != nil && p.cmd.Process != nil {
		_ = p.cmd.Process.Kill()
		select {
		case <-p.done:
		case <-time.After(5 * time.Second):
		}
	}
	p.cmd = nil
}

func (p *proc) signal(sig syscall.Signal) {
	if p.cmd != nil && p.cmd.Process != nil {
		_ = p.cmd.Process.Signal(sig)
	}
}

func freePort() (int, error) {
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		return 0, err
	}
	defer l.Close()
	return l.Addr().(*net.TCPAddr).Port, nil
}

func addr(port int) string { return "127.0.0.1:" + strconv.Itoa(port) }

// cluster is every process of the run.
type cluster struct {
	o       Options
	dir     string
	bin     string
	redis   [nRegions]*proc
	rport   [nRegions]int
	kafka   *proc
	kport   int
	learner *proc
	lport   int
	serve   [nRegions][2]*proc
	sport   [nRegions][2]int
	logf    func(string, ...any)
}

func (c *cluster) all() []*proc {
	ps := []*proc{c.kafka, c.learner}
	for i := range nRegions {
		ps = append(ps, c.redis[i], c.serve[i][0], c.serve[i][1])
	}
	return ps
}

func (c *cluster) stopAll() {
	for _, p := range c.all() {
		if p != nil {
			p.signal(syscall.SIGCONT)
			p.kill()
		}
	}
}

func (c *cluster) serveYAML(i int) string {
	var peers []string
	for j, n := range regionNames {
		if j != i {
			peers = append(peers, n)
		}
	}
	source := "kafka" // regions without the learner's Redis follow the models topic
	if i == 0 {
		source = "redis"
	}
	return fmt.Sprintf(`server: {region: %s, log_level: warn, reload_every: -1s}
kafka: {brokers: [%q], batch_timeout: 20ms}
redis: {addrs: [%q], instances: 2, timeout: 50ms}
regions: {peers: [%s], heartbeat_every: 500ms, dead_after: 2500ms, window: 5s}
ml:
  learner: remote
  model_source: %s
  model_poll: 500ms
  publish_every: 1s
  epoch: 5s
  deadline: 20ms
  max_model_age: %s
policies:
  tiers:
    free: {rate: 1000, period: 1s, burst: 1000, floor: 0.5, ceiling: 2, ml: on}
    budgeted: {rate: %d, period: 1s, burst: %d}
  tenants:
    hot: {tier: budgeted}
`, regionNames[i], addr(c.kport), addr(c.rport[i]), strings.Join(peers, ", "), source, c.o.MaxAge, hotRate, hotBurst)
}

func (c *cluster) setup(ctx context.Context) error {
	var err error
	if c.dir, err = os.MkdirTemp("", "flowguard-chaos-"); err != nil {
		return err
	}
	c.bin = c.o.Bin
	if c.bin == "" {
		c.bin = filepath.Join(c.dir, "flowguard")
		c.logf("building flowguard")
		out, err := exec.CommandContext(ctx, "go", "build", "-o", c.bin, "github.com/devflow/flowguard/cmd/flowguard").CombinedOutput()
		if err != nil {
			return fmt.Errorf("go build: %w: %s", err, out)
		}
	}
	redisBin, err := exec.LookPath("redis-server")
	if err != nil {
		return fmt.Errorf("redis-server is needed: %w", err)
	}
	ports := func() (int, error) { return freePort() }
	if c.kport, err = ports(); err != nil {
		return err
	}
	if c.lport, err = ports(); err != nil {
		return err
	}
	token := "chaos-admin-token-0123456789abcdef"
	for i := range nRegions {
		if c.rport[i], err = ports(); err != nil {
			return err
		}
		c.redis[i] = &proc{name: "redis-" + regionNames[i], log: filepath.Join(c.dir, "redis-"+regionNames[i]+".log"),
			args: []string{redisBin, "--port", strconv.Itoa(c.rport[i]), "--bind", "127.0.0.1", "--save", "",
				"--appendonly", "no", "--dir", c.dir, "--protected-mode", "no"}}
		for j := range 2 {
			if c.sport[i][j], err = ports(); err != nil {
				return err
			}
		}
	}
	c.kafka = &proc{name: "kafka", log: filepath.Join(c.dir, "kafka.log"),
		args: []string{c.bin, "dev", "kafka", "--listen", addr(c.kport)}}
	for i := range nRegions {
		cfg := filepath.Join(c.dir, regionNames[i]+".yaml")
		if err := os.WriteFile(cfg, []byte(c.serveYAML(i)), 0o644); err != nil {
			return err
		}
		for j := range 2 {
			c.serve[i][j] = &proc{name: fmt.Sprintf("serve-%s-%d", regionNames[i], j),
				log:  filepath.Join(c.dir, fmt.Sprintf("serve-%s-%d.log", regionNames[i], j)),
				env:  []string{"FLOWGUARD_ADMIN_TOKEN=" + token},
				args: []string{c.bin, "serve", "--config", cfg, "--addr", addr(c.sport[i][j])}}
		}
	}
	c.learner = &proc{name: "learner", log: filepath.Join(c.dir, "learner.log"), env: []string{"FLOWGUARD_ADMIN_TOKEN=" + token},
		args: []string{c.bin, "learn", "--config", filepath.Join(c.dir, regionNames[0]+".yaml"), "--addr", addr(c.lport)}}
	for i := range nRegions {
		if err := c.redis[i].start(); err != nil {
			return err
		}
	}
	if err := c.kafka.start(); err != nil {
		return err
	}
	if err := waitTCP(ctx, addr(c.kport)); err != nil {
		return fmt.Errorf("kafka: %w", err)
	}
	if err := c.learner.start(); err != nil {
		return err
	}
	for i := range nRegions {
		for j := range 2 {
			if err := c.startServe(ctx, i, j); err != nil {
				return err
			}
		}
	}
	return waitHTTP(ctx, "http://"+addr(c.lport)+"/healthz")
}

func (c *cluster) startServe(ctx context.Context, i, j int) error {
	if err := c.serve[i][j].start(); err != nil {
		return err
	}
	return waitHTTP(ctx, "http://"+addr(c.sport[i][j])+"/healthz")
}

func waitTCP(ctx context.Context, a string) error {
	deadline := time.Now().Add(30 * time.Second)
	for {
		conn, err := net.DialTimeout("tcp", a, time.Second)
		if err == nil {
			conn.Close()
			return nil
		}
		if time.Now().After(deadline) || ctx.Err() != nil {
			return fmt.Errorf("%s did not come up: %w", a, err)
		}
		time.Sleep(50 * time.Millisecond)
	}
}

var httpc = &http.Client{Timeout: 2 * time.Second}

func waitHTTP(ctx context.Context, url string) error {
	deadline := time.Now().Add(60 * time.Second)
	for {
		resp, err := httpc.Get(url)
		if err == nil {
			resp.Body.Close()
			if resp.StatusCode == 200 {
				return nil
			}
		}
		if time.Now().After(deadline) || ctx.Err() != nil {
			return fmt.Errorf("%s did not answer: %v", url, err)
		}
		time.Sleep(100 * time.Millisecond)
	}
}

// metricSum returns the sum of the series of name (any labels) at url.
func metricSum(url, name string) (float64, error) {
	resp, err := httpc.Get(url)
	if err != nil {
		return 0, err
	}
	defer resp.Body.Close()
	sum, found := 0.0, false
	sc := bufio.NewScanner(resp.Body)
	sc.Buffer(make([]byte, 1<<20), 1<<20)
	for sc.Scan() {
		line := sc.Text()
		if !strings.HasPrefix(line, name) {
			continue
		}
		rest := line[len(name):]
		if rest == "" || (rest[0] != ' ' && rest[0] != '{') {
			continue
		}
		f := strings.Fields(rest)
		v, err := strconv.ParseFloat(f[len(f)-1], 64)
		if err == nil {
			sum, found = sum+v, true
		}
	}
	if !found {
		return 0, fmt.Errorf("%s: no %s", url, name)
	}
	return sum, sc.Err()
}

// record is one decide request.
type record struct {
	at       time.Time // when it was due
	lat      time.Duration
	status   int // 0: no instance answered
	region   int // the region that answered
	hot      bool
	allowed  bool
	fallback bool
	reason   string
	failover bool
}

// load is the open-loop traffic.
type load struct {
	c       *cluster
	mu      sync.Mutex
	recs    []record
	clients [nRegions][2]*fasthttp.HostClient
}

func newLoad(c *cluster) *load {
	l := &load{c: c}
	for i := range nRegions {
		for j := range 2 {
			l.clients[i][j] = &fasthttp.HostClient{Addr: addr(c.sport[i][j]), MaxConns: 32,
				ReadTimeout: 2 * time.Second, WriteTimeout: 2 * time.Second, MaxIdleConnDuration: time.Second}
		}
	}
	return l
}

// run sends requests until ctx is done: the ordinary keys spread evenly
// over the regions, the budgeted key 50/30/20.
func (l *load) run(ctx context.Context, rate, hot int) {
	type job struct {
		due    time.Time
		region int
		body   []byte
		hot    bool
	}
	jobs := make(chan job, 4096)
	var wg sync.WaitGroup
	for range 48 {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for j := range jobs {
				l.one(j.due, j.region, j.body, j.hot)
			}
		}()
	}
	rng := rand.New(rand.NewPCG(7, 7))
	total := rate + hot
	interval := time.Second / time.Duration(total)
	start := time.Now()
	for n := 0; ctx.Err() == nil; n++ {
		due := start.Add(time.Duration(n) * interval)
		if d := time.Until(due); d > 0 {
			time.Sleep(d)
		}
		if rng.IntN(total) < hot {
			r := 0
			switch x := rng.Float64(); {
			case x < 0.3:
				r = 1
			case x < 0.5:
				r = 2
			}
			jobs <- job{due, r, []byte(`{"key":"k_budget","tenant":"hot","endpoint":"POST /v1/payments"}`), true}
		} else {
			k := rng.IntN(200)
			jobs <- job{due, k % nRegions, fmt.Appendf(nil, `{"key":"k_load_%d","tenant":"load","endpoint":"GET /v1/items","client_ip":"198.51.100.%d"}`, k, k), false}
		}
	}
	close(jobs)
	wg.Wait()
}

// one sends a request to its region, failing over like a load balancer.
func (l *load) one(due time.Time, region int, body []byte, hot bool) {
	req, resp := fasthttp.AcquireRequest(), fasthttp.AcquireResponse()
	defer fasthttp.ReleaseRequest(req)
	defer fasthttp.ReleaseResponse(resp)
	req.Header.SetMethod("POST")
	req.Header.SetContentType("application/json")
	req.SetRequestURI("/v1/decide")
	req.SetBodyRaw(body)
	rec := record{at: due, hot: hot}
	first := rand.IntN(2)
	tries := 0
	for k := 0; k < nRegions && rec.status == 0; k++ {
		r := (region + k) % nRegions
		for j := 0; j < 2; j++ {
			hc := l.clients[r][(first+j)%2]
			req.Header.SetHost(hc.Addr)
			tries++
			if err := hc.DoTimeout(req, resp, 2*time.Second); err != nil {
				continue
			}
			rec.status, rec.region, rec.failover = resp.StatusCode(), r, tries > 1
			var d struct {
				Decision string `json:"decision"`
				Fallback bool   `json:"fallback"`
				Reason   string `json:"reason"`
			}
			if json.Unmarshal(resp.Body(), &d) == nil {
				rec.allowed, rec.fallback, rec.reason = d.Decision == "allow", d.Fallback, d.Reason
			}
			break
		}
	}
	rec.lat = time.Since(due)
	l.mu.Lock()
	l.recs = append(l.recs, rec)
	l.mu.Unlock()
}

func (l *load) between(from, to time.Time) []record {
	l.mu.Lock()
	defer l.mu.Unlock()
	var out []record
	for _, r := range l.recs {
		if !r.at.Before(from) && r.at.Before(to) {
			out = append(out, r)
		}
	}
	return out
}

// labels produces uniquely numbered labels, retrying each until Kafka
// acknowledges it; acked counts them.
type labels struct {
	w      *kafka.Writer
	acked  atomic.Int64
	dups   atomic.Int64 // resends after a failed write: may or may not have landed
	paused sync.Mutex
}

func (lb *labels) run(ctx context.Context, every time.Duration) {
	t := time.NewTicker(every)
	defer t.Stop()
	for n := 1; ; n++ {
		select {
		case <-ctx.Done():
			return
		case <-t.C:
		}
		lb.paused.Lock()
		now := time.Now().UTC()
		key := fmt.Sprintf("k_load_%d", n%200)
		v, _ := json.Marshal(map[string]any{"label_id": fmt.Sprintf("chaos-%06d", n), "key": key, "tenant": "load",
			"abusive": n%2 == 0, "from": now.Add(-time.Minute), "to": now, "source": "chaos", "severity": 1.0})
		for attempt := 0; ctx.Err() == nil; attempt++ {
			wctx, cancel := context.WithTimeout(ctx, 2*time.Second)
			err := lb.w.WriteMessages(wctx, kafka.Message{Key: []byte(key), Value: v})
			cancel()
			if err == nil {
				lb.acked.Add(1)
				break
			}
			lb.dups.Add(1)
			time.Sleep(200 * time.Millisecond)
		}
		lb.paused.Unlock()
	}
}

// sampler polls the serving instances' region gauges.
type sample struct {
	at             time.Time
	region, inst   int
	live, isolated float64
}

type sampler struct {
	mu      sync.Mutex
	samples []sample
}

func (s *sampler) run(ctx context.Context, c *cluster) {
	t := time.NewTicker(250 * time.Millisecond)
	defer t.Stop()
	for {
		select {
		case <-ctx.Done():
			return
		case <-t.C:
		}
		for i := range nRegions {
			for j := range 2 {
				url := "http://" + addr(c.sport[i][j]) + "/metrics"
				live, err1 := metricSum(url, "flowguard_regions_live")
				iso, err2 := metricSum(url, "flowguard_regions_isolated")
				if err1 == nil && err2 == nil {
					s.mu.Lock()
					s.samples = append(s.samples, sample{time.Now(), i, j, live, iso})
					s.mu.Unlock()
				}
			}
		}
	}
}

// first returns the first sample at or after from matching ok.
func (s *sampler) first(from, to time.Time, ok func(sample) bool) (time.Time, bool) {
	s.mu.Lock()
	defer s.mu.Unlock()
	for _, x := range s.samples {
		if !x.at.Before(from) && x.at.Before(to) && ok(x) {
			return x.at, true
		}
	}
	return time.Time{}, false
}

func p99(rs []record) time.Duration {
	if len(rs) == 0 {
		return 0
	}
	ls := make([]time.Duration, len(rs))
	for i, r := range rs {
		ls[i] = r.lat
	}
	slices.Sort(ls)
	return ls[min(len(ls)-1, len(ls)*99/100)]
}

var stderr = os.Stderr
