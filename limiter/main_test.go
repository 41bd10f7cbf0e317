package limiter

import (
	"os"
	"testing"
	"time"

	"github.com/devflow/flowguard/internal/testredis"
	"github.com/redis/go-redis/v9"
)

func TestMain(m *testing.M) {
	testredis.Tune = func(o *redis.UniversalOptions) { TuneOptions(o, 5*time.Millisecond) }
	os.Exit(m.Run())
}
