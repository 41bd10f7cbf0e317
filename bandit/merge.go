package bandit

import (
	"errors"
	"fmt"
	"time"
)

// ErrMergeMismatch is returned by Merge when the snapshots are not of one
// model: another model id, arm set, dimension, posterior or prior.
var ErrMergeMismatch = errors.New("bandit: snapshots of different models")

// Merge returns the snapshot of all parts' observations together: the
// sufficient statistics are sums, so the merged posterior is exactly the
// one a single learner would have reached over the union of their updates.
// Learners that share the load by partition each publish a part; serving
// merges the newest part of every partition. The merged version is the sum
// of the parts' versions, so it grows whenever any part does.
func Merge(created time.Time, parts ...*Snapshot) (*Snapshot, error) {
	if len(parts) == 0 {
		return nil, errors.New("bandit: nothing to merge")
	}
	first := parts[0]
	if first == nil {
		return nil, errors.New("bandit: nil snapshot")
	}
	cfg := first.Config()
	var version uint64
	for i, s := range parts {
		if s == nil {
			return nil, fmt.Errorf("bandit: part %d is nil", i)
		}
		c := s.Config()
		if c.ModelID != cfg.ModelID || c.Schema != cfg.Schema || c.Dim != cfg.Dim || c.NoIntercept != cfg.NoIntercept ||
			c.Posterior != cfg.Posterior || c.Lambda != cfg.Lambda || c.Scale != cfg.Scale ||
			c.PriorShape != cfg.PriorShape || c.PriorRate != cfg.PriorRate || !c.Arms.Equal(cfg.Arms) {
			return nil, fmt.Errorf("%w: part %d is %q/%d arms/dim %d/schema %016x, part 0 is %q/%d arms/dim %d/schema %016x",
				ErrMergeMismatch, i, c.ModelID, len(c.Arms), c.Dim, c.Schema, cfg.ModelID, len(cfg.Arms), cfg.Dim, cfg.Schema)
		}
		version += s.version
	}
	out := newSnapshotShell(cfg, version, created)
	for a := range out.models {
		if len(parts) == 1 {
			out.models[a] = first.models[a]
			continue
		}
		st := newArmStats(out.p)
		for _, s := range parts {
			m := s.models[a]
			st.n += m.n
			for i, v := range m.gram {
				twoSum(&st.gram[i], &st.gramC[i], v)
			}
			for i, v := range m.f {
				twoSum(&st.f[i], &st.fC[i], v)
			}
			twoSum(&st.r2, &st.r2C, m.sumR2)
		}
		m, err := out.buildArm(st.n, st.gram, st.gramC, st.f, st.fC, st.r2+st.r2C)
		if err != nil {
			return nil, fmt.Errorf("bandit: merging arm %d %q: %w", a, cfg.Arms[a].Name, err)
		}
		out.models[a] = m
	}
	return out, nil
}
