package serving

import (
	"encoding/hex"
	"sync"
	"time"
)

// recentLog keeps the last n decisions of up to maxKeys keys, dropping the
// key seen least recently when full: bounded memory for explain.
type recentLog struct {
	mu      sync.Mutex
	n       int
	maxKeys int
	keys    map[string]*recentRing
	order   []string // FIFO of keys, for eviction
}

type recentRing struct {
	items []RecentDecision
	next  int
}

// RecentDecision is one decision as explain shows it.
type RecentDecision struct {
	Time       time.Time `json:"time"`
	DecisionID string    `json:"decision_id"`
	Endpoint   string    `json:"endpoint"`
	Decision   string    `json:"decision"`
	Reason     string    `json:"reason"`
	Limit      int64     `json:"limit"`
	Remaining  int64     `json:"remaining"`
	Multiplier float64   `json:"multiplier"`
	Arm        string    `json:"arm"`
	Fallback   bool      `json:"fallback"`
}

func newRecentLog(n, maxKeys int) *recentLog {
	return &recentLog{n: n, maxKeys: maxKeys, keys: make(map[string]*recentRing)}
}

func (l *recentLog) add(key string, d RecentDecision) {
	l.mu.Lock()
	defer l.mu.Unlock()
	r := l.keys[key]
	if r == nil {
		if len(l.keys) >= l.maxKeys {
			old := l.order[0]
			l.order = l.order[1:]
			delete(l.keys, old)
		}
		r = &recentRing{items: make([]RecentDecision, 0, 1)}
		l.keys[key] = r
		l.order = append(l.order, key)
	}
	if len(r.items) < l.n {
		// The ring grows by doubling up to n, not to n at once: most keys
		// of a large population have made a decision or two, and n
		// records up front were 1.4 KB a key (issue 19's memory figure).
		if len(r.items) == cap(r.items) {
			grown := make([]RecentDecision, len(r.items), min(l.n, 2*cap(r.items)))
			copy(grown, r.items)
			r.items = grown
		}
		r.items = append(r.items, d)
		return
	}
	r.items[r.next] = d
	r.next = (r.next + 1) % l.n
}

// get returns key's recent decisions, newest first.
func (l *recentLog) get(key string) []RecentDecision {
	l.mu.Lock()
	defer l.mu.Unlock()
	r := l.keys[key]
	if r == nil {
		return []RecentDecision{}
	}
	out := make([]RecentDecision, 0, len(r.items))
	for i := 0; i < len(r.items); i++ {
		j := (r.next - 1 - i + 2*len(r.items)) % len(r.items)
		if len(r.items) < l.n {
			j = len(r.items) - 1 - i
		}
		out = append(out, r.items[j])
	}
	return out
}

func hexHash(h [8]byte) string { return hex.EncodeToString(h[:]) }
