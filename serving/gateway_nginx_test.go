package serving

import (
	"bytes"
	"fmt"
	"io"
	"net"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"

	"github.com/devflow/flowguard/internal/testenv"
)

// freePort returns a loopback port nothing listens on now.
func freePort(t *testing.T) int {
	t.Helper()
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer ln.Close()
	return ln.Addr().(*net.TCPAddr).Port
}

// syncBuffer is a bytes.Buffer safe for a process's writer and the test.
type syncBuffer struct {
	mu sync.Mutex
	b  bytes.Buffer
}

func (s *syncBuffer) Write(p []byte) (int, error) {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.b.Write(p)
}
func (s *syncBuffer) String() string { s.mu.Lock(); defer s.mu.Unlock(); return s.b.String() }

// startGateway runs the example configuration file as written, but for
// its three ports (8080 flowguard, 8081 the gateway, 8082 the API), in a
// real gateway process: args builds its command line from its directory
// and the rewritten file's path. It returns the gateway's URL and log.
func startGateway(t *testing.T, bin, pkg, example, flowguard, api string, args func(dir, path string) []string) (url string, log *syncBuffer) {
	t.Helper()
	bin = testenv.Need(t, bin, pkg)
	conf, err := os.ReadFile(filepath.Join("../examples/gateways", example))
	if err != nil {
		t.Fatal(err)
	}
	port := freePort(t)
	c := strings.NewReplacer("127.0.0.1:8080", flowguard, "127.0.0.1:8082", api,
		"127.0.0.1:8081", fmt.Sprintf("127.0.0.1:%d", port)).Replace(string(conf))
	dir := t.TempDir()
	path := filepath.Join(dir, example)
	if err := os.WriteFile(path, []byte(c), 0o644); err != nil {
		t.Fatal(err)
	}
	log = &syncBuffer{}
	cmd := exec.Command(bin, args(dir, path)...)
	cmd.Env = append(os.Environ(), "XDG_DATA_HOME="+dir, "XDG_CONFIG_HOME="+dir, "HOME="+dir)
	cmd.Stdout, cmd.Stderr = log, log
	// A gateway's workers inherit the log pipe: the whole process group is
	// stopped, or Wait would wait for them forever.
	cmd.SysProcAttr = &syscall.SysProcAttr{Setpgid: true}
	cmd.WaitDelay = 5 * time.Second
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = syscall.Kill(-cmd.Process.Pid, syscall.SIGKILL); _ = cmd.Wait() })
	t.Cleanup(func() {
		if t.Failed() {
			t.Logf("%s's log:\n%s", bin, log)
		}
	})
	waitUntil(t, 15*time.Second, bin+" to listen", func() bool {
		c, err := net.Dial("tcp", fmt.Sprintf("127.0.0.1:%d", port))
		if err == nil {
			c.Close()
		}
		return err == nil
	})
	return fmt.Sprintf("http://127.0.0.1:%d", port), log
}

// startNginx runs examples/gateways/nginx.conf in a real nginx.
func startNginx(t *testing.T, flowguard, api string) (string, *syncBuffer) {
	return startGateway(t, "nginx", "nginx", "nginx.conf", flowguard, api, func(dir, path string) []string {
		return []string{"-p", dir, "-c", path, "-g", "daemon off;"}
	})
}

type gatewayAnswer struct {
	status int
	header http.Header
	body   string
}

func gatewayGet(t *testing.T, url, key string, header ...string) gatewayAnswer {
	t.Helper()
	req, _ := http.NewRequest("GET", url, nil)
	if key != "" {
		req.Header.Set("X-Api-Key", key)
	}
	for i := 0; i+1 < len(header); i += 2 {
		req.Header.Set(header[i], header[i+1])
	}
	resp, err := (&http.Client{Timeout: 5 * time.Second}).Do(req)
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	b, _ := io.ReadAll(resp.Body)
	t.Logf("%s key %q → %d Retry-After=%q RateLimit=%q RateLimit-Policy=%q X-Flowguard-Decision=%q body %q", url, key, resp.StatusCode,
		resp.Header.Get("Retry-After"), resp.Header.Get("RateLimit"), resp.Header.Get("RateLimit-Policy"),
		resp.Header.Get("X-Flowguard-Decision"), strings.TrimSpace(string(b)))
	return gatewayAnswer{resp.StatusCode, resp.Header, string(b)}
}

// Through a real nginx with examples/gateways/nginx.conf: an allowed
// request gets the API's answer and the RateLimit headers, a throttle a
// 429 with Retry-After (not the 500 auth_request makes of a 429), a block
// a 403, no key a 401; with flowguard down, /v1/ fails open and logs it,
// /v1/payments/ fails closed.
func TestNginxExample(t *testing.T) {
	api := &http.Server{Handler: http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		fmt.Fprintf(w, "api: %s %s\n", r.Method, r.URL.Path)
	})}
	aln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	go api.Serve(aln)
	t.Cleanup(func() { api.Close() })
	ts := startServer(t, mustParse(t, testPolicies))
	url, log := startNginx(t, strings.TrimPrefix(ts.URL, "http://"), aln.Addr().String())

	a := gatewayGet(t, url+"/v1/items", "k_nginx")
	if a.status != 200 || a.body != "api: GET /v1/items\n" || a.header.Get("RateLimit") == "" || a.header.Get("RateLimit-Policy") == "" {
		t.Fatalf("allowed: %d %q %v, want the API's answer with RateLimit and RateLimit-Policy", a.status, a.body, a.header)
	}
	// The free tier's burst is 5: the sixth request within the second is throttled.
	for range 5 {
		a = gatewayGet(t, url+"/v1/items", "k_nginx")
	}
	if a.status != 429 || a.header.Get("Retry-After") == "" || a.header.Get("RateLimit") == "" || a.header.Get("X-Flowguard-Decision") != "throttle" {
		t.Fatalf("throttled: %d %q %v, want 429 with Retry-After and RateLimit", a.status, a.body, a.header)
	}
	if a = gatewayGet(t, url+"/v1/items", "k_denied"); a.status != 403 || a.header.Get("X-Flowguard-Decision") != "block" {
		t.Fatalf("blocked: %d %q %v, want 403", a.status, a.body, a.header)
	}
	if a = gatewayGet(t, url+"/v1/items", ""); a.status != 401 {
		t.Fatalf("no key: %d %q, want 401", a.status, a.body)
	}
	spoofedAddresses(t, ts, url, "k_nginx_spoof")
	if strings.Contains(log.String(), "unexpected status") {
		t.Errorf("nginx logged an unexpected auth status:\n%s", log)
	}

	// flowguard down.
	ts.stop(t)
	if a = gatewayGet(t, url+"/v1/items", "k_nginx2"); a.status != 200 || a.body != "api: GET /v1/items\n" {
		t.Errorf("flowguard down, /v1/: %d %q, want the API's answer (fail open)", a.status, a.body)
	}
	if a = gatewayGet(t, url+"/v1/payments/p1", "k_nginx2"); a.status != 503 {
		t.Errorf("flowguard down, /v1/payments/: %d %q, want 503 (fail closed)", a.status, a.body)
	}
	waitUntil(t, 5*time.Second, "the fail-open log line", func() bool {
		return strings.Contains(log.String(), "flowguard unavailable: GET /v1/items passed to the API (fail open)")
	})
}

// spoofedAddresses sends three requests of a fresh key through the
// gateway at url, each with a client-chosen X-Real-IP and X-Forwarded-For,
// and checks that flowguard saw one address, the gateway's peer: a client
// cannot pick the address its budget and features are keyed on.
func spoofedAddresses(t *testing.T, ts *testServer, url, key string) {
	t.Helper()
	for _, ip := range []string{"203.0.113.1", "203.0.113.2", "203.0.113.3"} {
		if a := gatewayGet(t, url+"/v1/items", key, "X-Real-IP", ip, "X-Forwarded-For", ip); a.status != 200 {
			t.Fatalf("spoofed %s: %d %q", ip, a.status, a.body)
		}
	}
	if ips := explainOf(t, ts, key, "").Explanation.Features["distinct_ips"]; ips < 0.5 || ips > 1.5 {
		t.Errorf("distinct_ips %g after three client-chosen X-Real-IP values, want 1: the gateway must set the address", ips)
	}
}
