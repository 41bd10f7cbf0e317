package pipeline

import (
	"hash/maphash"
	"maps"
	"strconv"
	"sync"
	"time"

	"github.com/devflow/flowguard/experiments"
	"github.com/devflow/flowguard/policy"
	"github.com/devflow/flowguard/rewards"
)

// epochChoice is stage 2's outcome for one key, kept for its epoch, with
// the counts of what happened to the key's requests during it: the
// outcome the decision log reports when the epoch closes.
type epochChoice struct {
	key          string // for the outcome record; "" when nothing is logged
	id           uint64 // decision-log id; 0: not logged (fallbacks)
	started      int64  // µs
	served       uint32
	throttled    uint32
	blocked      uint32
	expires      int64 // µs
	model        uint64
	multiplier   float64
	propensity   float64
	risk         float64
	arm          int16 // -1: none
	fallback     uint8 // index into fallbackReasons; 0: none
	plan         experiments.Plan
	featuresHash [8]byte
}

var fallbackReasons = [...]string{"", ReasonNoModel, ReasonStaleModel, ReasonFeatureStoreDown, ReasonMLDeadline, ReasonMLError, ReasonSchemaMismatch, ReasonDrift}

func fallbackIndex(reason string) uint8 {
	for i, r := range fallbackReasons {
		if r == reason {
			return uint8(i)
		}
	}
	return fallbackIndex(ReasonMLError)
}

// fallbackRetry is how long a fallback choice is kept before stage 2 is
// tried again: a failure should not pin a key to the fallback for a whole
// epoch.
const fallbackRetry = time.Second

type epochShard struct {
	mu       sync.Mutex
	choices  map[uint64]epochChoice
	peak     int // the most choices held since the map was last built
	inflight map[uint64]chan struct{}
}

// shrinkBelow: a shard's map is rebuilt when it holds fewer than
// 1/shrinkBelow of its peak (and the peak was over shrinkMin). A Go map
// keeps its largest size's memory after deletes: after a burst of new
// keys whose epochs closed, the empty map was most of what the burst
// left behind (make bench-mem).
const (
	shrinkBelow = 4
	shrinkMin   = 1024
)

// shrink rebuilds the shard's map at its current size when it has fallen
// well below its peak. The caller holds mu.
func (sh *epochShard) shrink() {
	sh.peak = max(sh.peak, len(sh.choices))
	if sh.peak <= shrinkMin || len(sh.choices)*shrinkBelow >= sh.peak {
		return
	}
	m := make(map[uint64]epochChoice, len(sh.choices))
	maps.Copy(m, sh.choices)
	sh.choices, sh.peak = m, len(m)
}

func (p *Pipeline) shard(key string) (uint64, *epochShard) {
	h := maphash.String(p.seed, key)
	return h, &p.shards[h&255]
}

// choose returns key's epoch choice under rule and plan, running stage 2
// on a miss or when the key's plan changed. Concurrent requests of one key
// share one stage-2 run.
func (p *Pipeline) choose(key string, rule *policy.Rule, pl experiments.Plan) epochChoice {
	h, sh := p.shard(key)
	for {
		now := p.now().UnixMicro()
		sh.mu.Lock()
		c, ok := sh.choices[h]
		if ok && now < c.expires && c.plan == pl {
			sh.mu.Unlock()
			return c
		}
		if wait, ok := sh.inflight[h]; ok {
			sh.mu.Unlock()
			<-wait
			continue
		}
		done := make(chan struct{})
		sh.inflight[h] = done
		if ok {
			delete(sh.choices, h)
		}
		sh.mu.Unlock()
		if ok {
			p.closeEpoch(c, now, time.Time{}) // the request path never waits
		}

		c = p.run(key, rule, pl)
		sh.mu.Lock()
		sh.choices[h] = c
		delete(sh.inflight, h)
		close(done)
		sh.mu.Unlock()
		return c
	}
}

// current returns key's epoch choice if it has one that has not expired.
func (p *Pipeline) current(key string) (epochChoice, bool) {
	h, sh := p.shard(key)
	sh.mu.Lock()
	c, ok := sh.choices[h]
	sh.mu.Unlock()
	return c, ok && p.now().UnixMicro() < c.expires
}

// HasEpoch reports whether key has a current epoch choice.
func (p *Pipeline) HasEpoch(key string) bool {
	_, ok := p.current(key)
	return ok
}

// closeEpoch logs the outcome of a logged epoch that ended, waiting until
// deadline (real time; zero: not at all) for room in a log that can wait.
func (p *Pipeline) closeEpoch(c epochChoice, now int64, deadline time.Time) {
	if c.id == 0 || p.dlog == nil {
		return
	}
	r := rewards.Record{Type: rewards.TypeOutcome, ID: p.idBase + strconv.FormatUint(c.id, 36), Key: c.key,
		At: time.UnixMicro(min(now, c.expires)).UTC(), Served: int64(c.served), Throttled: int64(c.throttled),
		Blocked: int64(c.blocked)}
	if w, ok := p.dlog.(WaitingLog); ok && !deadline.IsZero() {
		w.LogWait(r, deadline)
		return
	}
	p.dlog.Log(r)
}

// count adds one decision to the outcome of key's current epoch.
func (p *Pipeline) count(key, action string) {
	h, sh := p.shard(key)
	sh.mu.Lock()
	if c, ok := sh.choices[h]; ok && c.id != 0 {
		switch action {
		case ActionAllow:
			c.served++
		case ActionThrottle:
			c.throttled++
		default:
			c.blocked++
		}
		sh.choices[h] = c
	}
	sh.mu.Unlock()
}

// Sweep drops expired epoch choices, logging their outcomes, and idle
// features.
func (p *Pipeline) Sweep() (choices, keys int) {
	now := p.now()
	t := now.UnixMicro()
	deadline := time.Now().Add(outcomeWait)
	for i := range p.shards {
		sh := &p.shards[i]
		sh.mu.Lock()
		var closed []epochChoice
		sh.peak = max(sh.peak, len(sh.choices))
		for h, c := range sh.choices {
			if t >= c.expires {
				delete(sh.choices, h)
				choices++
				if c.id != 0 {
					closed = append(closed, c)
				}
			}
		}
		sh.shrink()
		sh.mu.Unlock()
		for _, c := range closed {
			p.closeEpoch(c, t, deadline)
		}
	}
	return choices, p.feats.Sweep(now)
}

// CloseEpochs forgets every epoch choice, logging their outcomes, so that
// every key runs stage 2 again: at shutdown, and when the model changed
// under a test.
func (p *Pipeline) CloseEpochs() {
	deadline := time.Now().Add(outcomeWait)
	for i := range p.shards {
		sh := &p.shards[i]
		sh.mu.Lock()
		old := sh.choices
		sh.choices, sh.peak = make(map[uint64]epochChoice), 0
		sh.mu.Unlock()
		for _, c := range old {
			p.closeEpoch(c, p.now().UnixMicro(), deadline)
		}
	}
}
