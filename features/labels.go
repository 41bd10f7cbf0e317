package features

import (
	"sync"
	"sync/atomic"
	"time"
)

// Labels in the features (schema v2, issue 17 item 2). A label sets the
// key's label_state: 1 abusive, -1 abusive: false (a complaint, or a hold
// cleared); it decays toward 0 with a 24 h time constant. An abusive label
// also marks the key's last client address as suspect, and a key seen from
// a suspect address within a day takes half the label's weight, decayed
// the same way, as its ip_suspicion: bounded (maxSuspects addresses, the
// oldest forgotten first) and decaying, so that one label never taints an
// address for good. Only the last address of the labelled key is marked:
// the store keeps a key's addresses only as a sketch.

// maxSuspects bounds the suspect addresses a store remembers.
const maxSuspects = 1 << 16

// suspectTTL is how long an address stays suspect after its label.
const suspectTTL = 86_400_000_000 // µs

// suspects are the client addresses of keys labelled abusive, by the top
// 32 bits of the address hash, with the label's time and weight.
type suspects struct {
	n     atomic.Int64 // entries; 0 lets every request skip the lock
	mu    sync.RWMutex
	ips   map[uint32]suspect
	order []uint32 // insertion order, for forgetting the oldest
}

type suspect struct {
	at     int64 // µs
	weight float32
}

func (s *suspects) init() { s.ips = make(map[uint32]suspect) }

func (s *suspects) mark(ip uint32, weight float32, t int64) {
	s.mu.Lock()
	defer s.mu.Unlock()
	if _, ok := s.ips[ip]; !ok {
		if len(s.order) >= maxSuspects {
			delete(s.ips, s.order[0])
			s.order = s.order[1:]
		}
		s.order = append(s.order, ip)
	}
	s.ips[ip] = suspect{at: t, weight: weight}
	s.n.Store(int64(len(s.ips)))
}

// touch raises st's suspicion when this request came from a suspect
// address; st's shard lock is held.
func (s *suspects) touch(st *keyState, r *request, t int64) {
	if !r.hasIP || s.n.Load() == 0 {
		return
	}
	s.mu.RLock()
	sp, ok := s.ips[uint32(r.ipHash>>32)]
	s.mu.RUnlock()
	if !ok || t-sp.at > suspectTTL || t < sp.at {
		return
	}
	v := sp.weight / 2 * float32(expNeg(float64(t-sp.at)*inv1d))
	if v > st.susp {
		st.susp = v
	}
}

// Label records a label of key at now: its label_state, and for an
// abusive one (weight 1, or the label's severity when set) the key's last
// client address as suspect. An unknown key is added, so that a label that
// arrives before the key's next request still counts.
func (s *Store) Label(key string, abusive bool, severity float64, now time.Time) {
	t := micros(now)
	sh, h := s.shard(key)
	sh.mu.Lock()
	st := sh.upsert(h, t, s.perShard)
	var ip uint32
	if st != nil {
		st.advance(t)
		if abusive {
			st.label, ip = 1, st.lastIP
		} else {
			st.label = -1
		}
	}
	sh.mu.Unlock()
	if st == nil {
		s.rejected.Add(1)
	}
	if abusive && ip != 0 {
		w := float32(1)
		if severity > 0 && severity < 1 {
			w = float32(severity)
		}
		s.suspects.mark(ip, w, t)
	}
}

// Fold adds a key's vector to its tier's cohorts (see Cohorts): stage 2
// calls it once per key-epoch with the vector it scored.
func (s *Store) Fold(x []float64, now time.Time) { s.cohorts.Fold(x, micros(now)) }
