package rewards

import (
	"context"
	"errors"
	"fmt"
	"strconv"
	"strings"
	"time"

	"github.com/redis/go-redis/v9"
)

// ErrFenced is returned by RedisStore's writes when another learner has
// claimed the partition since this one did: a learner that lost its
// partition in a rebalance (a zombie) must not overwrite its successor's
// checkpoint or model.
var ErrFenced = errors.New("rewards: partition claimed by another learner")

// RedisStore keeps the learners' checkpoints and published model parts in
// Redis. Every key shares the hash tag {learner}, so the scripts work on a
// Redis Cluster too:
//
//	PREFIX{learner}:owner:P   the learner that owns partition P
//	PREFIX{learner}:ckpt:P    partition P's checkpoint (Partition.Checkpoint)
//	PREFIX{learner}:parts     hash: P → ModelPart, as published
//	PREFIX{learner}:stamps    hash: P → "created µs:version" of that part
//
// Serving polls the small stamps hash and fetches only the parts that
// changed. Safe for concurrent use.
type RedisStore struct {
	c      redisScripter
	prefix string
}

// redisScripter is the part of go-redis RedisStore calls, so that a
// *redis.Client, Ring or ClusterClient all fit.
type redisScripter interface {
	redis.Scripter
	Get(ctx context.Context, key string) *redis.StringCmd
	Set(ctx context.Context, key string, value any, expiration time.Duration) *redis.StatusCmd
	HGetAll(ctx context.Context, key string) *redis.MapStringStringCmd
	HMGet(ctx context.Context, key string, fields ...string) *redis.SliceCmd
}

// NewRedisStore returns the store under prefix (for example "fg:").
func NewRedisStore(c redis.UniversalClient, prefix string) *RedisStore {
	return &RedisStore{c: c, prefix: prefix}
}

func (s *RedisStore) key(kind string, partition int) string {
	k := s.prefix + "{learner}:" + kind
	if partition >= 0 {
		k += ":" + strconv.Itoa(partition)
	}
	return k
}

// Claim makes owner the partition's owner; from now on the writes of any
// previous owner fail with ErrFenced.
func (s *RedisStore) Claim(ctx context.Context, partition int, owner string) error {
	return s.c.Set(ctx, s.key("owner", partition), owner, 0).Err()
}

// LoadCheckpoint returns the partition's checkpoint, or nil when it has
// none.
func (s *RedisStore) LoadCheckpoint(ctx context.Context, partition int) ([]byte, error) {
	b, err := s.c.Get(ctx, s.key("ckpt", partition)).Bytes()
	if errors.Is(err, redis.Nil) {
		return nil, nil
	}
	return b, err
}

// fencedSet writes KEYS[2] only while KEYS[1] (the owner) is ARGV[1]; with
// KEYS[3] it also sets field ARGV[3] of the hashes KEYS[2] and KEYS[3].
var fencedSet = redis.NewScript(`
if redis.call('GET', KEYS[1]) ~= ARGV[1] then return 0 end
if #KEYS == 2 then
  redis.call('SET', KEYS[2], ARGV[2])
else
  redis.call('HSET', KEYS[2], ARGV[3], ARGV[2])
  redis.call('HSET', KEYS[3], ARGV[3], ARGV[4])
end
return 1
`)

// SaveCheckpoint stores the partition's checkpoint if owner still owns it,
// and ErrFenced otherwise.
func (s *RedisStore) SaveCheckpoint(ctx context.Context, partition int, owner string, data []byte) error {
	return s.fenced(ctx, []string{s.key("owner", partition), s.key("ckpt", partition)}, owner, data)
}

// PublishPart stores a published model part if owner still owns its
// partition, and ErrFenced otherwise.
func (s *RedisStore) PublishPart(ctx context.Context, part ModelPart, owner string, data []byte) error {
	return s.fenced(ctx, []string{s.key("owner", part.Partition), s.key("parts", -1), s.key("stamps", -1)},
		owner, data, strconv.Itoa(part.Partition), PartStamp(part))
}

func (s *RedisStore) fenced(ctx context.Context, keys []string, args ...any) error {
	n, err := fencedSet.Run(ctx, s.c, keys, args...).Int()
	if err != nil {
		return err
	}
	if n == 0 {
		return ErrFenced
	}
	return nil
}

// Stamps returns the stamp of every published part, by partition.
func (s *RedisStore) Stamps(ctx context.Context) (map[int]string, error) {
	m, err := s.c.HGetAll(ctx, s.key("stamps", -1)).Result()
	if err != nil {
		return nil, err
	}
	out := make(map[int]string, len(m))
	for f, v := range m {
		p, err := strconv.Atoi(f)
		if err != nil || p < 0 {
			return nil, fmt.Errorf("rewards: model stamps: bad partition %q", f)
		}
		out[p] = v
	}
	return out, nil
}

// Parts returns the published parts of the given partitions, encoded; a
// partition with no part is missing from the map.
func (s *RedisStore) Parts(ctx context.Context, partitions []int) (map[int][]byte, error) {
	if len(partitions) == 0 {
		return map[int][]byte{}, nil
	}
	fields := make([]string, len(partitions))
	for i, p := range partitions {
		fields[i] = strconv.Itoa(p)
	}
	vals, err := s.c.HMGet(ctx, s.key("parts", -1), fields...).Result()
	if err != nil {
		return nil, err
	}
	out := make(map[int][]byte, len(vals))
	for i, v := range vals {
		if str, ok := v.(string); ok {
			out[partitions[i]] = []byte(str)
		}
	}
	return out, nil
}

// PartStamp returns a part's stamp: "created µs:version". Serving
// compares versions to fetch only the parts that changed, and takes the
// oldest creation time as the model's freshness.
func PartStamp(part ModelPart) string {
	return strconv.FormatInt(part.Bandit.Created().UnixMicro(), 10) + ":" + strconv.FormatUint(part.Bandit.Version(), 10)
}

// StampVersion returns the version a stamp records, as written.
func StampVersion(stamp string) string {
	_, v, _ := strings.Cut(stamp, ":")
	return v
}

// StampTime returns the creation time a stamp records.
func StampTime(stamp string) (time.Time, error) {
	us, _, _ := strings.Cut(stamp, ":")
	n, err := strconv.ParseInt(us, 10, 64)
	if err != nil {
		return time.Time{}, fmt.Errorf("rewards: bad model stamp %q", stamp)
	}
	return time.UnixMicro(n), nil
}
