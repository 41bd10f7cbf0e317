// Package devkafka runs a local broker that speaks the Kafka protocol
// (franz-go's kfake, in-process) with flowguard's topics created: for
// `flowguard dev kafka`, and for tests of the Kafka path over real sockets.
// It keeps everything in memory; it is not for production.
package devkafka

import (
	"fmt"
	"net"
	"strconv"

	"github.com/twmb/franz-go/pkg/kfake"

	"github.com/devflow/flowguard/internal/topics"
)

// Topic is one topic to create.
type Topic struct {
	Name       string
	Partitions int32
	Compacted  bool
}

// DefaultTopics are package topics' topics: 4 partitions each (so that
// several learners can share the load), flowguard.models compacted, and
// flowguard.regions with one partition (every region reads the heartbeats
// in the same order).
func DefaultTopics() []Topic {
	return []Topic{
		{Name: topics.Decisions, Partitions: 4},
		{Name: topics.Labels, Partitions: 4},
		{Name: topics.DLQ, Partitions: 1},
		{Name: topics.Models, Partitions: 1, Compacted: true},
		{Name: topics.Audit, Partitions: 1},
		{Name: topics.Regions, Partitions: 1},
	}
}

// Cluster is a running local broker.
type Cluster struct {
	c *kfake.Cluster
}

// Start listens on listen (host:port; port 0 picks a free one) and creates
// topics.
func Start(listen string, topics []Topic) (*Cluster, error) {
	host, portStr, err := net.SplitHostPort(listen)
	if err != nil {
		return nil, fmt.Errorf("devkafka: listen address %q: %w", listen, err)
	}
	port, err := strconv.Atoi(portStr)
	if err != nil || port < 0 || port > 65535 {
		return nil, fmt.Errorf("devkafka: bad port in %q", listen)
	}
	opts := []kfake.Opt{kfake.NumBrokers(1), kfake.ListenFn(func(network, _ string) (net.Listener, error) {
		return net.Listen(network, net.JoinHostPort(host, strconv.Itoa(port)))
	})}
	c, err := kfake.NewCluster(opts...)
	if err != nil {
		return nil, fmt.Errorf("devkafka: %w", err)
	}
	for _, t := range topics {
		var cfg map[string]string
		if t.Compacted {
			cfg = map[string]string{"cleanup.policy": "compact"}
		}
		if err := c.CreateTopic(t.Name, t.Partitions, cfg); err != nil {
			c.Close()
			return nil, fmt.Errorf("devkafka: creating %s: %w", t.Name, err)
		}
	}
	return &Cluster{c: c}, nil
}

// Addrs returns the broker's address.
func (c *Cluster) Addrs() []string { return c.c.ListenAddrs() }

// Close stops the broker.
func (c *Cluster) Close() { c.c.Close() }
