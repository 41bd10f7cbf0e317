// Package testpg starts a real PostgreSQL server for tests, on a free
// loopback port, with its data directory and unix socket in a fresh
// temporary directory and durability off.
//
// PostgreSQL refuses to run as root; under root the server runs as the
// user nobody, which owns the temporary directory.
//
// The binaries (initdb and postgres) are looked for on PATH, then in
// /usr/lib/postgresql/*/bin (where Debian's postgresql package puts them).
// When they are not installed the test is skipped, except under CI=true,
// where a missing dependency is a failure.
package testpg

import (
	"context"
	"errors"
	"fmt"
	"net"
	"os"
	"os/exec"
	"os/user"
	"path/filepath"
	"sort"
	"strconv"
	"syscall"
	"testing"
	"time"

	"github.com/devflow/flowguard/internal/testenv"
	"github.com/jackc/pgx/v5"
)

// Server is one postgres process and its data directory.
type Server struct {
	t    testing.TB
	port int
	dir  string
	cmd  *exec.Cmd
	done chan error // the process's exit
}

// Start runs initdb and starts postgres, waits until it accepts
// connections, and registers its shutdown with t.Cleanup.
func Start(t testing.TB) *Server {
	t.Helper()
	bin, err := binDir()
	if err != nil {
		if testenv.CI() {
			t.Fatalf("PostgreSQL is not installed, and CI=true forbids skipping: %v", err)
		}
		t.Skipf("PostgreSQL not installed (apt-get install postgresql): %v", err)
	}
	cred, err := unprivileged()
	if err != nil {
		t.Fatalf("testpg: %v", err)
	}
	parent := "" // $TMPDIR
	if cred != nil {
		parent = "/tmp" // $TMPDIR may be private to root; nobody must reach the directory
	}
	dir, err := os.MkdirTemp(parent, "testpg-")
	if err != nil {
		t.Fatalf("testpg: %v", err)
	}
	s := &Server{t: t, port: freePort(t), dir: dir}
	t.Cleanup(func() {
		s.Stop()
		os.RemoveAll(dir)
	})
	if cred != nil {
		if err := os.Chown(dir, int(cred.Uid), int(cred.Gid)); err != nil {
			t.Fatalf("testpg: %v", err)
		}
	}
	data := filepath.Join(dir, "data")
	initdb := exec.Command(filepath.Join(bin, "initdb"), "-D", data, "-U", "postgres", "-A", "trust",
		"-E", "UTF8", "--locale=C", "--no-sync")
	initdb.Dir = dir // a working directory the server's user can enter
	initdb.SysProcAttr = &syscall.SysProcAttr{Credential: cred}
	if out, err := initdb.CombinedOutput(); err != nil {
		t.Fatalf("testpg: initdb: %v\n%s", err, out)
	}
	logFile, err := os.Create(filepath.Join(dir, "postgres.log"))
	if err != nil {
		t.Fatalf("testpg: %v", err)
	}
	defer logFile.Close() // the child has its own copy
	s.cmd = exec.Command(filepath.Join(bin, "postgres"), "-D", data, "-p", strconv.Itoa(s.port), "-k", dir,
		"-c", "listen_addresses=127.0.0.1", "-c", "fsync=off", "-c", "synchronous_commit=off",
		"-c", "full_page_writes=off", "-c", "max_connections=20")
	s.cmd.Dir = dir
	s.cmd.Stdout, s.cmd.Stderr = logFile, logFile
	// Pdeathsig: a test binary killed by its timeout takes postgres with it.
	s.cmd.SysProcAttr = &syscall.SysProcAttr{Credential: cred, Pdeathsig: syscall.SIGKILL}
	if err := s.cmd.Start(); err != nil {
		t.Fatalf("testpg: start postgres: %v", err)
	}
	s.done = make(chan error, 1)
	go func() { s.done <- s.cmd.Wait() }()
	s.waitReady()
	return s
}

// DSN is a URL for the server's postgres database as the superuser.
func (s *Server) DSN() string {
	return fmt.Sprintf("postgres://postgres@127.0.0.1:%d/postgres?sslmode=disable", s.port)
}

// Conn returns a connection, closed at cleanup.
func (s *Server) Conn(ctx context.Context) *pgx.Conn {
	s.t.Helper()
	c, err := pgx.Connect(ctx, s.DSN())
	if err != nil {
		s.t.Fatalf("testpg: connect: %v", err)
	}
	s.t.Cleanup(func() { c.Close(context.Background()) })
	return c
}

func (s *Server) waitReady() {
	s.t.Helper()
	deadline := time.Now().Add(30 * time.Second)
	for {
		ctx, cancel := context.WithTimeout(context.Background(), time.Second)
		c, err := pgx.Connect(ctx, s.DSN())
		cancel()
		if err == nil {
			c.Close(context.Background())
			return
		}
		select {
		case exit := <-s.done:
			s.cmd = nil
			s.t.Fatalf("testpg: postgres exited (%v) before accepting connections:\n%s", exit, s.log())
		default:
		}
		if time.Now().After(deadline) {
			s.t.Fatalf("testpg: postgres on port %d did not accept connections: %v\n%s", s.port, err, s.log())
		}
		time.Sleep(20 * time.Millisecond)
	}
}

// Stop shuts the server down (fast shutdown: open sessions are ended) and
// waits for it; it kills it if that takes more than 10s.
func (s *Server) Stop() {
	if s.cmd == nil {
		return
	}
	_ = s.cmd.Process.Signal(syscall.SIGINT)
	select {
	case <-s.done:
	case <-time.After(10 * time.Second):
		_ = s.cmd.Process.Kill()
		<-s.done
	}
	s.cmd = nil
}

func (s *Server) log() string {
	b, _ := os.ReadFile(filepath.Join(s.dir, "postgres.log"))
	return string(b)
}

// String describes the server for test logs.
func (s *Server) String() string { return fmt.Sprintf("postgres 127.0.0.1:%d", s.port) }

// binDir finds the directory holding initdb and postgres.
func binDir() (string, error) {
	if p, err := exec.LookPath("initdb"); err == nil {
		dir := filepath.Dir(p)
		if real, err := filepath.EvalSymlinks(p); err == nil {
			dir = filepath.Dir(real) // postgres sits beside the real initdb
		}
		if _, err := os.Stat(filepath.Join(dir, "postgres")); err == nil {
			return dir, nil
		}
	}
	dirs, _ := filepath.Glob("/usr/lib/postgresql/*/bin")
	sort.Slice(dirs, func(i, j int) bool { return version(dirs[i]) > version(dirs[j]) })
	for _, dir := range dirs {
		_, e1 := os.Stat(filepath.Join(dir, "initdb"))
		_, e2 := os.Stat(filepath.Join(dir, "postgres"))
		if e1 == nil && e2 == nil {
			return dir, nil
		}
	}
	return "", errors.New("initdb and postgres are neither on PATH nor in /usr/lib/postgresql/*/bin")
}

// version is the major version in /usr/lib/postgresql/<version>/bin.
func version(bin string) float64 {
	v, _ := strconv.ParseFloat(filepath.Base(filepath.Dir(bin)), 64)
	return v
}

// unprivileged returns the credentials to run PostgreSQL with: nil when
// this process is not root, the user nobody's when it is.
func unprivileged() (*syscall.Credential, error) {
	if os.Geteuid() != 0 {
		return nil, nil
	}
	u, err := user.Lookup("nobody")
	if err != nil {
		return nil, fmt.Errorf("running as root and there is no user nobody to run PostgreSQL as: %w", err)
	}
	uid, err1 := strconv.ParseUint(u.Uid, 10, 32)
	gid, err2 := strconv.ParseUint(u.Gid, 10, 32)
	if err1 != nil || err2 != nil {
		return nil, fmt.Errorf("user nobody has uid %q, gid %q", u.Uid, u.Gid)
	}
	return &syscall.Credential{Uid: uint32(uid), Gid: uint32(gid), Groups: []uint32{}}, nil
}

func freePort(t testing.TB) int {
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatalf("find a free port: %v", err)
	}
	defer l.Close()
	return l.Addr().(*net.TCPAddr).Port
}
