package serving

import (
	"bufio"
	"context"
	"fmt"
	"io"
	"log/slog"
	"net"
	"net/http"
	"os"
	"os/exec"
	"strings"
	"syscall"
	"testing"
	"time"
)

// floodChild is the server of TestConnectionFloodKeepsServing, run in a
// child process whose descriptor limit is 128: it prints its address and
// serves until its stdin closes.
func floodChild(t *testing.T) {
	var lim syscall.Rlimit
	if err := syscall.Getrlimit(syscall.RLIMIT_NOFILE, &lim); err != nil {
		t.Fatal(err)
	}
	lim.Cur = 128
	if err := syscall.Setrlimit(syscall.RLIMIT_NOFILE, &lim); err != nil {
		t.Fatal(err)
	}
	srv, err := New(mustParse(t, testPolicies), Options{AdminToken: testAdminToken})
	if err != nil {
		t.Fatal(err)
	}
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan error, 1)
	go func() { done <- srv.Serve(ctx, ln) }()
	fmt.Printf("ADDR %s\n", ln.Addr())
	go func() { _, _ = io.Copy(io.Discard, os.Stdin); cancel() }()
	if err := <-done; err != nil {
		fmt.Printf("SERVE ENDED %v\n", err)
		os.Exit(3)
	}
}

// A connection flood past the process's descriptor limit does not end
// serve: the connections beyond server.max_conns (lowered below the
// limit) are refused and counted, an accept that still runs out of
// descriptors waits and accepts again, and once the flood ends the server
// answers as before.
func TestConnectionFloodKeepsServing(t *testing.T) {
	if os.Getenv("FLOWGUARD_FLOOD_CHILD") == "1" {
		floodChild(t)
		return
	}
	cmd := exec.Command(os.Args[0], "-test.run=^TestConnectionFloodKeepsServing$")
	cmd.Env = append(os.Environ(), "FLOWGUARD_FLOOD_CHILD=1")
	stdin, err := cmd.StdinPipe()
	if err != nil {
		t.Fatal(err)
	}
	out, err := cmd.StdoutPipe()
	if err != nil {
		t.Fatal(err)
	}
	cmd.Stderr = os.Stderr
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	exited := make(chan error, 1)
	lines := bufio.NewScanner(out)
	addr := ""
	for lines.Scan() {
		if a, ok := strings.CutPrefix(lines.Text(), "ADDR "); ok {
			addr = a
			break
		}
	}
	if addr == "" {
		t.Fatal("the child printed no address")
	}
	go func() {
		for lines.Scan() {
			t.Log("child:", lines.Text())
		}
		exited <- cmd.Wait()
	}()
	t.Cleanup(func() { stdin.Close(); <-exited })

	// 400 idle connections: three times the child's descriptors.
	var conns []net.Conn
	for range 400 {
		c, err := net.DialTimeout("tcp", addr, time.Second)
		if err != nil {
			continue // the backlog is full: that is a flood too
		}
		conns = append(conns, c)
	}
	time.Sleep(500 * time.Millisecond)
	select {
	case err := <-exited:
		t.Fatalf("the server ended under the flood: %v", err)
	default:
	}
	for _, c := range conns {
		c.Close()
	}
	client := &http.Client{Timeout: 2 * time.Second}
	var metrics string
	waitUntil(t, 10*time.Second, "the server to answer after the flood", func() bool {
		resp, err := client.Get("http://" + addr + "/healthz")
		if err != nil {
			return false
		}
		resp.Body.Close()
		if resp.StatusCode != 200 {
			return false
		}
		req, _ := http.NewRequest("GET", "http://"+addr+"/metrics", nil)
		req.Header.Set("Authorization", "Bearer "+testAdminToken)
		mr, err := client.Do(req)
		if err != nil {
			return false
		}
		defer mr.Body.Close()
		b, _ := io.ReadAll(mr.Body)
		metrics = string(b)
		return true
	})
	refused, accept := metricOf(metrics, "flowguard_http_conns_refused_total"), metricOf(metrics, "flowguard_http_accept_failures_total")
	if refused == "0" && accept == "0" {
		t.Errorf("the flood was neither refused nor waited out: refused %s, accept failures %s", refused, accept)
	}
	t.Logf("connections refused %s, accepts that ran out of descriptors %s", refused, accept)
}

func metricOf(metrics, name string) string {
	for _, l := range strings.Split(metrics, "\n") {
		if v, ok := strings.CutPrefix(l, name+" "); ok {
			return v
		}
	}
	return "missing"
}

type failingListener struct {
	net.Listener
	fails []error
}

func (l *failingListener) Accept() (net.Conn, error) {
	if len(l.fails) > 0 {
		err := l.fails[0]
		l.fails = l.fails[1:]
		return nil, err
	}
	return l.Listener.Accept()
}

// Accept waits out descriptor exhaustion with a doubling pause and returns
// any other error as it is.
func TestExhaustedListenerWaits(t *testing.T) {
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	emfile := &net.OpError{Op: "accept", Err: os.NewSyscallError("accept", syscall.EMFILE)}
	inner := &failingListener{Listener: ln, fails: []error{emfile, emfile, emfile}}
	var slept []time.Duration
	m := newMetrics(nil)
	l := &exhaustedListener{Listener: inner, log: slog.New(slog.DiscardHandler), failures: m.acceptFailures, sleep: func(d time.Duration) { slept = append(slept, d) }}
	held := make(chan struct{})
	defer close(held)
	go func() {
		if c, err := net.Dial("tcp", ln.Addr().String()); err == nil {
			defer c.Close()
			<-held
		}
	}()
	c, err := l.Accept()
	if err != nil {
		t.Fatal(err)
	}
	c.Close()
	if fmt.Sprint(slept) != "[5ms 10ms 20ms]" {
		t.Errorf("paused %v, want [5ms 10ms 20ms]", slept)
	}
	ln.Close()
	if _, err := l.Accept(); err == nil || acceptExhausted(err) {
		t.Errorf("accept on a closed listener: %v, want the close error", err)
	}
}
