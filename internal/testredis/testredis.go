// Package testredis starts a real redis-server process for tests, on a free
// loopback port, with persistence off. Tests stop and restart it to inject
// outages.
//
// When redis-server is not installed the test is skipped, except under
// CI=true, where a missing dependency is a failure.
package testredis

import (
	"context"
	"fmt"
	"net"
	"os/exec"
	"strconv"
	"syscall"
	"testing"
	"time"

	"github.com/devflow/flowguard/internal/testenv"
	"github.com/redis/go-redis/v9"
)

// Server is one redis-server process.
type Server struct {
	t    testing.TB
	bin  string
	port int
	dir  string
	cmd  *exec.Cmd
	// paused is set between Pause and Resume.
	paused bool
}

// Start starts redis-server and registers its shutdown with t.Cleanup.
func Start(t testing.TB) *Server {
	t.Helper()
	bin := testenv.Need(t, "redis-server", "redis-server")
	s := &Server{t: t, bin: bin, port: freePort(t), dir: t.TempDir()}
	s.Restart()
	t.Cleanup(s.Stop)
	return s
}

// Tune is applied to every client Client returns. The fallback package sets
// it to its own TuneOptions; testredis cannot import it without a cycle.
var Tune = func(*redis.UniversalOptions) {}

// Addr is host:port.
func (s *Server) Addr() string { return net.JoinHostPort("127.0.0.1", strconv.Itoa(s.port)) }

// Client returns a client for the server with the options flowguard uses
// on its decision path (see limiter.TuneOptions), closed at cleanup.
func (s *Server) Client() redis.UniversalClient {
	o := &redis.UniversalOptions{Addrs: []string{s.Addr()}}
	Tune(o)
	c := redis.NewUniversalClient(o)
	s.t.Cleanup(func() { c.Close() })
	return c
}

// Restart starts the process if it is not running, on the same port, and
// waits until it answers PING.
func (s *Server) Restart() {
	s.t.Helper()
	if s.cmd != nil {
		return
	}
	cmd := exec.Command(s.bin, "--port", strconv.Itoa(s.port), "--bind", "127.0.0.1",
		"--save", "", "--appendonly", "no", "--dir", s.dir, "--protected-mode", "no",
		"--enable-debug-command", "local")
	if err := cmd.Start(); err != nil {
		s.t.Fatalf("start redis-server: %v", err)
	}
	s.cmd = cmd
	waitPing(s.t, s.Addr())
}

// Pause freezes the process with SIGSTOP: connections stay open and
// nothing answers, like a hung or partitioned server. Resume undoes it;
// Stop and the test's cleanup resume it first.
func (s *Server) Pause() {
	s.t.Helper()
	if s.cmd == nil {
		s.t.Fatal("pause: redis-server is not running")
	}
	if err := s.cmd.Process.Signal(syscall.SIGSTOP); err != nil {
		s.t.Fatalf("pause redis-server: %v", err)
	}
	s.paused = true
}

// Resume continues a paused process with SIGCONT.
func (s *Server) Resume() {
	s.t.Helper()
	if s.cmd == nil || !s.paused {
		return
	}
	if err := s.cmd.Process.Signal(syscall.SIGCONT); err != nil {
		s.t.Fatalf("resume redis-server: %v", err)
	}
	s.paused = false
}

// Stop kills the process (an abrupt outage, like a crash) and waits for it.
func (s *Server) Stop() {
	if s.cmd == nil {
		return
	}
	_ = s.cmd.Process.Kill()
	_ = s.cmd.Wait()
	s.cmd, s.paused = nil, false
}

func freePort(t testing.TB) int {
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatalf("find a free port: %v", err)
	}
	defer l.Close()
	return l.Addr().(*net.TCPAddr).Port
}

// String describes the server for test logs.
func (s *Server) String() string { return fmt.Sprintf("redis-server %s", s.Addr()) }

// waitPing waits, 10 s at most, until the redis-server on addr answers PING.
func waitPing(t testing.TB, addr string) {
	t.Helper()
	c := redis.NewClient(&redis.Options{Addr: addr, MaxRetries: -1})
	defer c.Close()
	deadline := time.Now().Add(10 * time.Second)
	for {
		ctx, cancel := context.WithTimeout(context.Background(), 200*time.Millisecond)
		err := c.Ping(ctx).Err()
		cancel()
		if err == nil {
			return
		}
		if time.Now().After(deadline) {
			t.Fatalf("redis-server on %s did not answer: %v", addr, err)
		}
		time.Sleep(10 * time.Millisecond)
	}
}
