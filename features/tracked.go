package features

import "time"

// VectorTracked is Vector, and also reports whether the store holds key or
// has room to: false means key is new and MaxKeys keys are held, so its
// requests will not be counted and the vector describes a key never seen.
// Stage 2 falls back to the deterministic budget for such a key rather
// than judge it on features it does not have.
func (s *Store) VectorTracked(key string, now time.Time, dst []float64) ([]float64, bool) {
	sh, h := s.shard(key)
	sh.mu.Lock()
	room := sh.lookup(h) != nil || s.perShard == 0 || sh.n < s.perShard
	sh.mu.Unlock()
	return s.Vector(key, now, dst), room
}
