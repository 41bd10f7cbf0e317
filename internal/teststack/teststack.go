// Package teststack starts, for a test, the real servers the scaled-out
// mode needs: a redis-server process and an in-process Kafka cluster
// (franz-go's kfake, spoken to over the wire), both stopped when the test
// ends.
package teststack

import (
	"testing"

	"github.com/devflow/flowguard/internal/devkafka"
	"github.com/devflow/flowguard/internal/testredis"
)

// Start returns a running redis-server and the brokers of a Kafka cluster
// with flowguard's default topics.
func Start(t testing.TB) (*testredis.Server, []string) {
	t.Helper()
	rs := testredis.Start(t)
	kc, err := devkafka.Start("127.0.0.1:0", devkafka.DefaultTopics())
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(kc.Close)
	return rs, kc.Addrs()
}
