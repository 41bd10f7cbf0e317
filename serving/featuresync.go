package serving

import (
	"context"
	"crypto/rand"
	"encoding/hex"
	"fmt"
	"hash/maphash"
	"os"
	"sync"
	"sync/atomic"
	"time"

	"github.com/devflow/flowguard/features"
	"github.com/redis/go-redis/v9"
)

// featureSync shares the features of the keys this instance serves with the
// other instances through Redis, so that a key spread over N instances looks
// the same to all of them within a few seconds.
//
// Each key has one Redis hash, PREFIX feat:KEY, with one field per instance
// holding that instance's features.Record (its own requests only). Once per
// round — at most once a second — the instance writes the records of the
// keys it served since the last round, refreshes their hashes' TTL, and
// reads back the hashes of every key it served within the read window (one
// epoch): the sum of the other instances' records is merged into the local
// store. All of it goes in pipelines of syncChunk keys. Stage 2 never waits
// on Redis: it reads the local store, whose remote part is at most one
// round old for a key served within the window (the cached read). When a
// round fails its keys stay for the next one, and until one succeeds stage
// 2 sees local-only features, counted in flowguard_features_local_only_total.
type featureSync struct {
	client   redis.UniversalClient
	prefix   string
	instance string
	ttl      time.Duration
	timeout  time.Duration
	window   int64 // rounds a served key keeps being read
	store    *features.Store
	now      func() time.Time
	seed     maphash.Seed
	maxKeys  int // keys tracked; more are left out and counted

	keys  [64]syncShard
	held  atomic.Int64
	round atomic.Int64 // the round in progress; touched keys are stamped with it

	healthy     atomic.Bool
	lastErr     atomic.Pointer[string]
	rounds      atomic.Int64
	failures    atomic.Int64
	written     atomic.Int64
	read        atomic.Int64
	dropped     atomic.Int64
	badRecords  atomic.Int64
	lastRoundUS atomic.Int64
}

// syncShard maps each tracked key to its sync state.
type syncShard struct {
	mu   sync.Mutex
	keys map[string]syncState
}

type syncState struct {
	served int64 // last round the key was served in
	dirty  bool  // served since its record was last written
}

// syncChunk is how many keys one pipeline carries: at most three commands
// each.
const syncChunk = 512

func newFeatureSync(client redis.UniversalClient, prefix, instance string, ttl, interval, window time.Duration,
	store *features.Store, now func() time.Time, maxKeys int) *featureSync {
	f := &featureSync{client: client, prefix: prefix + "feat:", instance: instance, ttl: ttl, timeout: interval,
		window: max(1, int64(window/interval)), store: store, now: now, seed: maphash.MakeSeed(), maxKeys: maxKeys}
	for i := range f.keys {
		f.keys[i].keys = make(map[string]syncState)
	}
	return f
}

// touch marks key as served in the current round.
func (f *featureSync) touch(key string) {
	r := f.round.Load()
	sh := &f.keys[maphash.String(f.seed, key)&63]
	sh.mu.Lock()
	st, ok := sh.keys[key]
	switch {
	case ok && st.served == r && st.dirty:
	case ok || f.held.Load() < int64(f.maxKeys):
		if !ok {
			f.held.Add(1)
		}
		sh.keys[key] = syncState{served: r, dirty: true}
	default:
		f.dropped.Add(1)
	}
	sh.mu.Unlock()
}

// take starts a new round. It returns the keys served since their record
// was last written (marking them written), then the other keys served
// within the window, and forgets keys served before it.
func (f *featureSync) take() (write, readOnly []string) {
	r := f.round.Add(1) - 1
	for i := range f.keys {
		sh := &f.keys[i]
		sh.mu.Lock()
		for k, st := range sh.keys {
			switch {
			case st.dirty:
				write = append(write, k)
				sh.keys[k] = syncState{served: st.served}
			case r-st.served < f.window:
				readOnly = append(readOnly, k)
			default:
				delete(sh.keys, k)
				f.held.Add(-1)
			}
		}
		sh.mu.Unlock()
	}
	return write, readOnly
}

// redirty marks keys whose record could not be written for the next round.
func (f *featureSync) redirty(keys []string) {
	for _, k := range keys {
		sh := &f.keys[maphash.String(f.seed, k)&63]
		sh.mu.Lock()
		if st, ok := sh.keys[k]; ok {
			st.dirty = true
			sh.keys[k] = st
		}
		sh.mu.Unlock()
	}
}

// sync runs one round: it writes and expires the records of the keys
// served since the last round and reads the records of every key served
// within the window. On an error the unwritten keys are kept for the next
// round. Cancelling ctx abandons the round the same way.
func (f *featureSync) sync(ctx context.Context) error {
	start := time.Now()
	write, readOnly := f.take()
	f.rounds.Add(1)
	var err error
	all := append(write, readOnly...)
	for i := 0; i < len(all) && err == nil; i += syncChunk {
		end := min(i+syncChunk, len(all))
		nWrite := max(0, min(end, len(write))-i)
		if err = f.chunk(ctx, all[i:end], nWrite); err != nil && i < len(write) {
			f.redirty(write[i:])
		}
	}
	f.lastRoundUS.Store(time.Since(start).Microseconds())
	if err != nil {
		f.failures.Add(1)
		msg := err.Error()
		f.lastErr.Store(&msg)
		f.healthy.Store(false)
		return err
	}
	f.lastErr.Store(nil)
	f.healthy.Store(true)
	return nil
}

// chunk writes the records of keys[:nWrite] and reads those of all keys.
func (f *featureSync) chunk(ctx context.Context, keys []string, nWrite int) error {
	now := f.now()
	ctx, cancel := context.WithTimeout(ctx, f.timeout)
	defer cancel()
	reads := make([]*redis.MapStringStringCmd, len(keys))
	buf := make([]byte, 0, features.RecordSize*len(keys))
	_, err := f.client.Pipelined(ctx, func(p redis.Pipeliner) error {
		for i, k := range keys {
			rk := f.prefix + k
			if rec, ok := f.store.Export(k, now); ok && i < nWrite {
				start := len(buf)
				buf, _ = rec.AppendBinary(buf)
				p.HSet(ctx, rk, f.instance, buf[start:])
				p.PExpire(ctx, rk, f.ttl)
			}
			reads[i] = p.HGetAll(ctx, rk)
		}
		return nil
	})
	if err != nil {
		return err
	}
	f.written.Add(int64(nWrite))
	f.read.Add(int64(len(keys)))
	oldest := now.Add(-f.ttl).UnixMicro()
	for i, k := range keys {
		var sum features.Record
		for inst, raw := range reads[i].Val() {
			if inst == f.instance {
				continue
			}
			var rec features.Record
			if err := rec.UnmarshalBinary([]byte(raw)); err != nil {
				f.badRecords.Add(1)
				continue
			}
			if rec.At < oldest {
				continue // an instance gone for longer than the TTL
			}
			sum = sum.Add(rec)
		}
		if err := f.store.Merge(k, sum, now); err != nil {
			f.badRecords.Add(1)
		}
	}
	return nil
}

// run does a round every interval until ctx is cancelled, calling onChange
// when sharing starts or stops working (err nil: it works again).
func (f *featureSync) run(ctx context.Context, interval time.Duration, onChange func(err error)) {
	t := time.NewTicker(interval)
	defer t.Stop()
	first := true
	for {
		select {
		case <-ctx.Done():
			return
		case <-t.C:
		}
		was := f.healthy.Load()
		err := f.sync(ctx)
		if ctx.Err() != nil {
			return
		}
		if (err == nil) != was || first && err != nil {
			onChange(err)
		}
		first = false
	}
}

// Reasons a key's features are this instance's alone.
const (
	localOnlyNoRedis   = "no_redis"   // no redis configured: one instance's view is the whole view
	localOnlyRedisDown = "redis_down" // the last exchange failed, or none has succeeded yet
)

// featuresLocalOnly says why stage 2 sees local-only features, or "".
func (s *Server) featuresLocalOnly() string {
	switch {
	case s.fsync == nil:
		return localOnlyNoRedis
	case !s.fsync.healthy.Load():
		return localOnlyRedisDown
	}
	return ""
}

// featureSyncChanged logs when sharing features stops or starts working.
func (s *Server) featureSyncChanged(err error) {
	if err != nil {
		s.log.Warn("sharing features through redis failed; stage 2 uses this instance's features only", "err", err)
		return
	}
	s.log.Info("sharing features through redis again")
}

func defaultInstanceID() string {
	host, _ := os.Hostname()
	var b [4]byte
	_, _ = rand.Read(b[:])
	return fmt.Sprintf("%s-%d-%s", host, os.Getpid(), hex.EncodeToString(b[:]))
}
