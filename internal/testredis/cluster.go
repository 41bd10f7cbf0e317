package testredis

import (
	"context"
	"net"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/devflow/flowguard/internal/testenv"
	"github.com/redis/go-redis/v9"
)

// Cluster is a Redis Cluster of real redis-server processes started with
// --cluster-enabled yes and joined by redis-cli --cluster create: the
// 16384 slots split evenly over the masters, each with its replicas.
type Cluster struct {
	t     testing.TB
	nodes []*exec.Cmd
	ports []int
}

// StartCluster starts a cluster of masters (at least 3, as redis-cli
// requires) with replicas replicas each, and registers its shutdown with
// t.Cleanup. A replica takes over a master that stops answering for 1 s
// (cluster-node-timeout). The masters that stay up keep serving their
// slots meanwhile (cluster-require-full-coverage no, what
// docs/operations.md recommends for flowguard). Like Start, it skips without redis-server and
// redis-cli, and fails under CI=true.
func StartCluster(t testing.TB, masters, replicas int) *Cluster {
	n := masters * (1 + replicas)
	t.Helper()
	bin := testenv.Need(t, "redis-server", "redis-server")
	cli := testenv.Need(t, "redis-cli", "redis-tools")
	c := &Cluster{t: t}
	t.Cleanup(c.stop)
	dir := t.TempDir()
	for i := range n {
		port := clusterPort(t)
		nodeDir := filepath.Join(dir, strconv.Itoa(port))
		cmd := exec.Command(bin, "--port", strconv.Itoa(port), "--bind", "127.0.0.1",
			"--cluster-enabled", "yes", "--cluster-config-file", "nodes.conf", "--cluster-node-timeout", "1000",
			"--repl-diskless-sync-delay", "0", "--cluster-require-full-coverage", "no",
			"--save", "", "--appendonly", "no", "--protected-mode", "no", "--dir", ".")
		if err := mkdir(nodeDir); err != nil {
			t.Fatal(err)
		}
		cmd.Dir = nodeDir
		if err := cmd.Start(); err != nil {
			t.Fatalf("start cluster node %d: %v", i, err)
		}
		c.nodes, c.ports = append(c.nodes, cmd), append(c.ports, port)
	}
	for _, a := range c.Addrs() {
		waitPing(t, a)
	}
	args := append([]string{"--cluster", "create"}, c.Addrs()...)
	args = append(args, "--cluster-replicas", strconv.Itoa(replicas), "--cluster-yes")
	if out, err := exec.Command(cli, args...).CombinedOutput(); err != nil {
		t.Fatalf("redis-cli --cluster create: %v\n%s", err, out)
	}
	c.waitOK()
	c.waitReplicas()
	return c
}

// waitReplicas waits until every replica has synced with its master: a
// replica that never did cannot take over.
func (c *Cluster) waitReplicas() {
	c.t.Helper()
	c.waitLive("synced", func(cl *redis.Client) (string, bool) {
		info, err := cl.Info(context.Background(), "replication").Result()
		return info, err == nil && (strings.Contains(info, "role:master") || strings.Contains(info, "master_link_status:up"))
	})
}

// waitLive waits, 20 s at most in all, until ok holds on every live node;
// ok returns what the node said, for the failure message.
func (c *Cluster) waitLive(what string, ok func(*redis.Client) (string, bool)) {
	c.t.Helper()
	deadline := time.Now().Add(20 * time.Second)
	for i, a := range c.Addrs() {
		if c.nodes[i] == nil {
			continue
		}
		cl := redis.NewClient(&redis.Options{Addr: a})
		for {
			said, done := ok(cl)
			if done {
				break
			}
			if time.Now().After(deadline) {
				cl.Close()
				c.t.Fatalf("cluster node %s not %s: %s", a, what, said)
			}
			time.Sleep(50 * time.Millisecond)
		}
		cl.Close()
	}
}

// Addrs are the nodes' host:port, in start order: redis-cli makes the
// first ones the masters.
func (c *Cluster) Addrs() []string {
	out := make([]string, len(c.ports))
	for i, p := range c.ports {
		out[i] = net.JoinHostPort("127.0.0.1", strconv.Itoa(p))
	}
	return out
}

// Client returns a cluster client tuned as flowguard's decision path is
// (Tune), closed at cleanup.
func (c *Cluster) Client() redis.UniversalClient {
	o := &redis.UniversalOptions{Addrs: c.Addrs()}
	Tune(o)
	cl := redis.NewUniversalClient(o)
	c.t.Cleanup(func() { cl.Close() })
	return cl
}

// MasterOf returns the index of the node that serves key's slot, asking
// node ask (a live one).
func (c *Cluster) MasterOf(ask int, key string) int {
	c.t.Helper()
	cl := redis.NewClient(&redis.Options{Addr: c.Addrs()[ask]})
	defer cl.Close()
	slot, err := cl.ClusterKeySlot(context.Background(), key).Result()
	if err != nil {
		c.t.Fatalf("CLUSTER KEYSLOT %s: %v", key, err)
	}
	shards, err := cl.ClusterSlots(context.Background()).Result()
	if err != nil {
		c.t.Fatalf("CLUSTER SLOTS: %v", err)
	}
	for _, s := range shards {
		if int64(s.Start) <= slot && slot <= int64(s.End) && len(s.Nodes) > 0 {
			for i, a := range c.Addrs() {
				if s.Nodes[0].Addr == a {
					return i
				}
			}
		}
	}
	c.t.Fatalf("no node serves slot %d", slot)
	return -1
}

// Kill kills node i abruptly (a crashed master) and waits for it.
func (c *Cluster) Kill(i int) {
	if cmd := c.nodes[i]; cmd != nil {
		_ = cmd.Process.Signal(syscall.SIGKILL)
		_ = cmd.Wait()
		c.nodes[i] = nil
	}
}

func (c *Cluster) stop() {
	for i := range c.nodes {
		c.Kill(i)
	}
}

// WaitOK waits until every live node reports cluster_state:ok: after a
// kill, until a replica has taken over.
func (c *Cluster) WaitOK() { c.waitOK() }

func (c *Cluster) waitOK() {
	c.t.Helper()
	c.waitLive("ok", func(cl *redis.Client) (string, bool) {
		info, err := cl.ClusterInfo(context.Background()).Result()
		if err != nil {
			return err.Error(), false
		}
		return info, strings.Contains(info, "cluster_state:ok")
	})
}

// clusterPort is a free port whose cluster bus port (port + 10000) is
// free too.
func clusterPort(t testing.TB) int {
	t.Helper()
	for range 100 {
		p := freePort(t)
		if p+10000 > 65535 {
			continue
		}
		l, err := net.Listen("tcp", net.JoinHostPort("127.0.0.1", strconv.Itoa(p+10000)))
		if err != nil {
			continue
		}
		l.Close()
		return p
	}
	t.Fatal("no free port pair for a cluster node")
	return 0
}

func mkdir(dir string) error { return os.MkdirAll(dir, 0o755) }

// WaitFailover waits until no slot is served by node i any more (a
// replica took its slots over) and every live node reports
// cluster_state:ok, and returns how long that took.
func (c *Cluster) WaitFailover(i int) time.Duration {
	c.t.Helper()
	start := time.Now()
	dead := c.Addrs()[i]
	ask := (i + 1) % len(c.ports)
	for c.nodes[ask] == nil {
		ask = (ask + 1) % len(c.ports)
	}
	cl := redis.NewClient(&redis.Options{Addr: c.Addrs()[ask]})
	defer cl.Close()
	for {
		served := false
		shards, err := cl.ClusterSlots(context.Background()).Result()
		for _, s := range shards {
			if len(s.Nodes) > 0 && s.Nodes[0].Addr == dead {
				served = true
			}
		}
		if err == nil && !served {
			break
		}
		if time.Since(start) > 30*time.Second {
			c.t.Fatalf("node %s still serves slots 30s after it died (%v)", dead, err)
		}
		time.Sleep(50 * time.Millisecond)
	}
	c.waitOK()
	return time.Since(start)
}
