package serving

import (
	"context"
	"errors"
	"net"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"syscall"
	"testing"
	"time"

	"github.com/devflow/flowguard/internal/config"
)

func TestMetricsPassPromtool(t *testing.T) {
	promtool := needPromtool(t)
	ts := startServer(t, mustParse(t, testPolicies))
	post(t, ts.URL+"/v1/decide", `{"key":"p1"}`)
	post(t, ts.URL+"/v1/decide", `{"key":""}`)
	cmd := exec.Command(promtool, "check", "metrics")
	cmd.Stdin = strings.NewReader(scrape(t, ts.URL))
	out, err := cmd.CombinedOutput()
	if err != nil {
		t.Fatalf("promtool check metrics: %v\n%s", err, out)
	}
}

// waitFor polls cond until it holds or 10 s pass.
func waitFor(t testing.TB, what string, cond func() bool) {
	t.Helper()
	waitUntil(t, 10*time.Second, what, cond)
}

func limitOf(t testing.TB, url string) int64 {
	_, body := post(t, url+"/v1/decide", `{"key":"reload-probe-`+time.Now().Format("150405.000000000")+`"}`)
	return decode[wireDecision](t, body).Limit
}

// serveFile serves a one-tier policy file checked every reloadEvery, and
// returns a function that rewrites the tier's rate.
func serveFile(t *testing.T, reloadEvery, rate string) (*testServer, func(rate string)) {
	ts, write, _ := serveFileReloads(t, reloadEvery, rate)
	return ts, write
}

// serveFileReloads is serveFile with the channel that asks for a reload,
// as the CLI's SIGHUP does.
func serveFileReloads(t *testing.T, reloadEvery, rate string) (*testServer, func(rate string), chan<- struct{}) {
	path := filepath.Join(t.TempDir(), "flowguard.yaml")
	write := func(rate string) {
		body := "server:\n  reload_every: " + reloadEvery + "\npolicies:\n  tiers:\n    free:\n      rate: " + rate + "\n"
		if err := os.WriteFile(path, []byte(body), 0o644); err != nil {
			t.Fatal(err)
		}
	}
	write(rate)
	cfg, err := config.Load(path)
	if err != nil {
		t.Fatal(err)
	}
	reloads := make(chan struct{})
	return startServerOpts(t, cfg, Options{Reloads: reloads}), write, reloads
}

func TestReloadOnFileChange(t *testing.T) {
	ts, write := serveFile(t, "20ms", "10")
	if got := limitOf(t, ts.URL); got != 10 {
		t.Fatalf("limit = %d, want 10", got)
	}
	write("20")
	waitFor(t, "the new rate to apply", func() bool { return limitOf(t, ts.URL) == 20 })

	write("-1")
	waitFor(t, "the reload error to be counted", func() bool {
		return strings.Contains(scrape(t, ts.URL), `flowguard_policy_reloads_total{result="error"} 1`)
	})
	if got := limitOf(t, ts.URL); got != 20 {
		t.Fatalf("an invalid file replaced the policy: limit = %d, want 20", got)
	}
	resp, err := client.Get(ts.URL + "/readyz")
	if err != nil {
		t.Fatal(err)
	}
	var b strings.Builder
	buf := make([]byte, 4096)
	n, _ := resp.Body.Read(buf)
	b.Write(buf[:n])
	resp.Body.Close()
	if !strings.Contains(b.String(), "rate -1 must be a positive number") {
		t.Fatalf("readyz does not show the reload error: %s", b.String())
	}
}

func TestReloadOnRequest(t *testing.T) {
	ts, write, reloads := serveFileReloads(t, "-1s", "10")
	write("30")
	reloads <- struct{}{}
	waitFor(t, "the requested reload", func() bool { return limitOf(t, ts.URL) == 30 })
	if !strings.Contains(scrape(t, ts.URL), `flowguard_policy_reloads_total{result="success"} 1`) {
		t.Fatal("successful reload not counted")
	}
}

// TestReloadLastWriteWins writes the file again right after asking for a
// reload, many times: whichever version the reload read, the file watch
// must end on the last one (it used to record the second write as loaded).
func TestReloadLastWriteWins(t *testing.T) {
	ts, write, reloads := serveFileReloads(t, "10ms", "10")
	for i := 0; i < 25; i++ {
		a, b := strconv.Itoa(100+2*i), strconv.Itoa(101+2*i)
		write(a)
		reloads <- struct{}{}
		write(b)
		want, _ := strconv.ParseInt(b, 10, 64)
		waitFor(t, "the last write ("+b+") to be in force", func() bool { return limitOf(t, ts.URL) == want })
	}
}

// TestGracefulShutdown cancels Serve while requests flow: every request
// that was accepted gets its answer, and then the port is closed.
func TestGracefulShutdown(t *testing.T) {
	cfg := mustParse(t, testPolicies)
	srv, err := New(cfg, Options{})
	if err != nil {
		t.Fatal(err)
	}
	defer srv.Close()
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	url := "http://" + ln.Addr().String()
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan error, 1)
	go func() { done <- srv.Serve(ctx, ln) }()

	var answered, refused, bad atomic.Int64
	var wg sync.WaitGroup
	stop := make(chan struct{})
	for w := range 8 {
		wg.Add(1)
		go func() {
			defer wg.Done()
			c := &http.Client{Timeout: 5 * time.Second}
			for i := 0; ; i++ {
				select {
				case <-stop:
					return
				default:
				}
				resp, err := c.Post(url+"/v1/decide", "application/json", strings.NewReader(`{"key":"g`+string(rune('a'+w))+`"}`))
				if err != nil {
					refused.Add(1)
					time.Sleep(time.Millisecond)
					continue
				}
				resp.Body.Close()
				if resp.StatusCode != 200 {
					bad.Add(1)
				}
				answered.Add(1)
			}
		}()
	}
	waitFor(t, "traffic", func() bool { return answered.Load() > 200 })
	cancel()
	select {
	case err := <-done:
		if err != nil {
			t.Fatalf("Serve: %v", err)
		}
	case <-time.After(15 * time.Second):
		t.Fatal("Serve did not return after cancel")
	}
	close(stop)
	wg.Wait()
	if bad.Load() != 0 {
		t.Fatalf("%d non-200 answers during shutdown", bad.Load())
	}
	if _, err := net.DialTimeout("tcp", ln.Addr().String(), time.Second); err == nil {
		t.Fatal("port still accepts connections after shutdown")
	} else if !errors.Is(err, syscall.ECONNREFUSED) {
		t.Logf("dial after shutdown: %v", err)
	}
	t.Logf("%d answered, %d refused after close, 0 failed", answered.Load(), refused.Load())
}
