package pipeline

import (
	"errors"
	"hash/maphash"
	"sync"
	"sync/atomic"

	"github.com/devflow/flowguard/policy"
	"github.com/devflow/flowguard/quotas"
	"github.com/devflow/flowguard/rewards"
)

// Labels act on keys. A confirmed abusive label moves its key to its
// rule's floor at once, or blocks it when its tier is auto_block and the
// label's severity reaches ml.label_block_severity, until a label with
// abusive: false clears it. This is deterministic: it holds whatever the
// bandit has learned, and stage 2 does not run for the key meanwhile.

// SourceLabel is the source of a decision a label decided.
const SourceLabel = "label"

// ReasonLabel is the reason of a block a label decided.
const ReasonLabel = "label"

// LabelAction is what a confirmed abusive label of the given severity does
// to a key under rule: block it (an auto_block tier, severity at least
// blockSeverity), else hold its budget at the rule's floor.
func LabelAction(rule *policy.Rule, severity, blockSeverity float64) (block bool, multiplier float64) {
	return rule.AutoBlock && severity >= blockSeverity, rule.Floor
}

// ErrTooManyLabelled is returned by ApplyLabel when ml.max_labelled_keys
// keys are already held: the label still reaches the learner.
var ErrTooManyLabelled = errors.New("too many keys labelled abusive are held")

// labelledKeys are the keys labelled abusive and not cleared since, with
// the label's severity; sharded, and lock-free to check while empty.
type labelledKeys struct {
	n      atomic.Int64
	max    int64
	seed   maphash.Seed
	shards [64]struct {
		mu   sync.RWMutex
		keys map[string]float32
	}
}

func (l *labelledKeys) init(max int) {
	l.max, l.seed = int64(max), maphash.MakeSeed()
	for i := range l.shards {
		l.shards[i].keys = map[string]float32{}
	}
}

func (l *labelledKeys) get(key string) (float64, bool) {
	if l.n.Load() == 0 {
		return 0, false
	}
	sh := &l.shards[maphash.String(l.seed, key)&63]
	sh.mu.RLock()
	v, ok := sh.keys[key]
	sh.mu.RUnlock()
	return float64(v), ok
}

// ApplyLabel records a label's action on its key: an abusive one holds the
// key (at the highest severity seen), abusive: false releases it. It
// reports whether the key's state changed.
func (p *Pipeline) ApplyLabel(lb rewards.Label) (bool, error) {
	l := &p.labelled
	sh := &l.shards[maphash.String(l.seed, lb.Key)&63]
	sh.mu.Lock()
	defer sh.mu.Unlock()
	old, had := sh.keys[lb.Key]
	if !lb.Abusive {
		if had {
			delete(sh.keys, lb.Key)
			l.n.Add(-1)
		}
		return had, nil
	}
	sev := float32(lb.Severity)
	if lb.Severity == 0 {
		sev = 1 // a label without severity judges all the key's traffic
	}
	switch {
	case had && sev <= old:
		return false, nil
	case !had && l.n.Load() >= l.max:
		return false, ErrTooManyLabelled
	case !had:
		l.n.Add(1)
	}
	sh.keys[lb.Key] = sev
	return true, nil
}

// LabelFeatures records a label in the key's features (label_state, and
// for an abusive one its last address's suspicion, schema v2), whether or
// not ml.label_action holds the key.
func (p *Pipeline) LabelFeatures(lb rewards.Label) {
	p.feats.Label(lb.Key, lb.Abusive, lb.Severity, p.now())
}

// Labelled reports whether key is held by an abusive label, and its
// severity.
func (p *Pipeline) Labelled(key string) (float64, bool) { return p.labelled.get(key) }

// LabelledKeys is how many keys abusive labels hold.
func (p *Pipeline) LabelledKeys() int64 { return p.labelled.n.Load() }

// LabelledHashes returns the quotas.KeyHash of every key an abusive label
// holds: what the refit leaves out of its usage as malicious.
func (p *Pipeline) LabelledHashes() map[uint64]struct{} {
	l := &p.labelled
	out := make(map[uint64]struct{}, l.n.Load())
	for i := range l.shards {
		sh := &l.shards[i]
		sh.mu.RLock()
		for k := range sh.keys {
			out[quotas.KeyHash(k)] = struct{}{}
		}
		sh.mu.RUnlock()
	}
	return out
}
