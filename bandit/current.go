package bandit

import (
	"errors"
	"fmt"
	"sync/atomic"
)

// ErrStaleSnapshot is returned by Current.Store for a snapshot of the model
// already held that is not newer than the one held.
var ErrStaleSnapshot = errors.New("snapshot is not newer than the current one")

// Current holds the snapshot serving chooses with. Load is one atomic read,
// so choices never wait for a new snapshot; Store swaps one in atomically.
// The zero value holds no snapshot. It is safe for concurrent use.
type Current struct {
	p atomic.Pointer[Snapshot]
}

// Load returns the current snapshot, or nil before the first Store.
func (c *Current) Load() *Snapshot { return c.p.Load() }

// Store makes s the current snapshot. A snapshot of another model (another
// ModelID) always replaces the current one; a snapshot of the same model
// must have a higher version, so that snapshots arriving out of order from
// Redis or Kafka never roll the model back. Otherwise Store returns an error
// wrapping ErrStaleSnapshot and keeps the current one.
func (c *Current) Store(s *Snapshot) error {
	if s == nil {
		return errors.New("bandit: nil snapshot")
	}
	for {
		old := c.p.Load()
		if old != nil && old.modelID == s.modelID && s.version <= old.version {
			return fmt.Errorf("bandit: %w: model %q version %d, holding %d", ErrStaleSnapshot, s.modelID, s.version, old.version)
		}
		if c.p.CompareAndSwap(old, s) {
			return nil
		}
	}
}
