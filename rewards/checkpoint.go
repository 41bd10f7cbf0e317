package rewards

import (
	"bytes"
	"encoding/binary"
	"encoding/gob"
	"errors"
	"fmt"
	"hash/crc32"
	"time"

	"github.com/devflow/flowguard/bandit"
	"github.com/devflow/flowguard/features"
)

// ErrBadCheckpoint is wrapped by every error of RestorePartition.
var ErrBadCheckpoint = errors.New("bad learner checkpoint")

const (
	checkpointMagic = "FGCP"
	// checkpointFormat 2 added the variant models; format 1 checkpoints,
	// which have none, still restore.
	checkpointFormat = 2
)

var castagnoli = crc32.MakeTable(crc32.Castagnoli)

// checkpointState is a Partition as encoded. Gob handles the maps; the
// models use their own checksummed codecs.
type checkpointState struct {
	Bandit    []byte
	Variants  map[string][]byte // variant model key → bandit snapshot
	Risk      []byte
	Pending   map[string]pendingDecision
	Order     []string
	Keys      map[string]*keyHistory
	Seen      map[string]int64
	Watermark int64
	Offsets   map[string]int64
	Stats     Stats
	// Held came later within format 1 and 2: gob leaves it empty in a
	// checkpoint without it, and an earlier version ignores it.
	Held map[string][]heldLabel
	// Final and FinalOrder (the hours kept for labels past the window)
	// came later within format 2, the same way.
	Final      map[string][]finalExample
	FinalOrder []finalRef
}

// Checkpoint encodes the partition's whole state, offsets included, so
// that RestorePartition continues exactly where it was. A learner commits
// its Kafka offsets only after the checkpoint holding them is stored.
func (p *Partition) Checkpoint(created time.Time) ([]byte, error) {
	bs, err := marshalModel(p.models[""], created)
	if err != nil {
		return nil, err
	}
	vs := make(map[string][]byte, len(p.models)-1)
	for k, m := range p.models {
		if k != "" {
			if vs[k], err = marshalModel(m, created); err != nil {
				return nil, err
			}
		}
	}
	rs, err := p.risk.MarshalBinary()
	if err != nil {
		return nil, err
	}
	var buf bytes.Buffer
	buf.WriteString(checkpointMagic)
	// Without variant models the state is format 1's: write it as such,
	// so that a learner rolled back to an earlier version still restores it.
	format := byte(checkpointFormat)
	if len(vs) == 0 {
		format = 1
	}
	buf.WriteByte(format)
	err = gob.NewEncoder(&buf).Encode(checkpointState{Bandit: bs, Variants: vs, Risk: rs, Pending: p.pending, Order: p.order,
		Keys: p.keys, Seen: p.seen, Watermark: p.watermark, Offsets: p.Offsets, Stats: p.stats,
		Held: p.held, Final: p.final, FinalOrder: p.finalOrder})
	if err != nil {
		return nil, err
	}
	return binary.LittleEndian.AppendUint32(buf.Bytes(), crc32.Checksum(buf.Bytes(), castagnoli)), nil
}

func marshalModel(m *model, created time.Time) ([]byte, error) {
	snap, err := m.l.Snapshot(created)
	if err != nil {
		return nil, err
	}
	return snap.MarshalBinary()
}

// RestorePartition returns the partition a Checkpoint encoded, under cfg.
// The checkpoint's main bandit must be cfg's (same arms and dimension).
// Each of cfg's variant models continues from the checkpoint when it holds
// that model's key, and starts at its prior otherwise; the checkpoint's
// other variant models are dropped (see SetVariants). The error wraps
// ErrBadCheckpoint; it never panics on any input.
func RestorePartition(cfg Config, data []byte) (*Partition, error) {
	p, err := NewPartition(cfg)
	if err != nil {
		return nil, err
	}
	if len(data) < len(checkpointMagic)+1+4 || string(data[:4]) != checkpointMagic {
		return nil, fmt.Errorf("%w: no checkpoint header", ErrBadCheckpoint)
	}
	if data[4] != 1 && data[4] != checkpointFormat {
		return nil, fmt.Errorf("%w: format %d", ErrBadCheckpoint, data[4])
	}
	body := data[:len(data)-4]
	if crc32.Checksum(body, castagnoli) != binary.LittleEndian.Uint32(data[len(body):]) {
		return nil, fmt.Errorf("%w: checksum mismatch", ErrBadCheckpoint)
	}
	var st checkpointState
	if err := gob.NewDecoder(bytes.NewReader(body[5:])).Decode(&st); err != nil {
		return nil, fmt.Errorf("%w: %v", ErrBadCheckpoint, err)
	}
	snap, err := bandit.DecodeSnapshot(st.Bandit)
	if err != nil {
		return nil, fmt.Errorf("%w: bandit: %v", ErrBadCheckpoint, err)
	}
	want := p.cfg.Bandit
	got := snap.Config()
	if got.Dim != want.Dim || len(got.Arms) != len(want.Arms) {
		return nil, fmt.Errorf("%w: bandit has %d features and %d arms, the configuration %d and %d",
			ErrBadCheckpoint, got.Dim, len(got.Arms), want.Dim, len(want.Arms))
	}
	if got.Schema != 0 && want.Schema != 0 && got.Schema != want.Schema {
		return nil, fmt.Errorf("%w: bandit was trained on feature schema %016x, the configuration's is %016x",
			ErrBadCheckpoint, got.Schema, want.Schema)
	}
	if p.models[""].l, err = bandit.RestoreLearner(snap); err != nil {
		return nil, fmt.Errorf("%w: %v", ErrBadCheckpoint, err)
	}
	for k, data := range st.Variants {
		m := p.models[k]
		if m == nil {
			continue // a variant model cfg no longer has
		}
		snap, err := bandit.DecodeSnapshot(data)
		if err != nil {
			return nil, fmt.Errorf("%w: variant model %s: %v", ErrBadCheckpoint, k, err)
		}
		got, want := snap.Config(), m.l.Config()
		if got.ModelID != want.ModelID || got.Dim != want.Dim || !got.Arms.Equal(want.Arms) {
			return nil, fmt.Errorf("%w: variant model %s is not the one its key names", ErrBadCheckpoint, k)
		}
		if m.l, err = bandit.RestoreLearner(snap); err != nil {
			return nil, fmt.Errorf("%w: variant model %s: %v", ErrBadCheckpoint, k, err)
		}
	}
	if p.risk, err = features.DecodeRisk(st.Risk); err != nil {
		return nil, fmt.Errorf("%w: risk: %v", ErrBadCheckpoint, err)
	}
	if p.risk.Config().Dim != p.cfg.Risk.Dim {
		return nil, fmt.Errorf("%w: risk model has %d features, the configuration %d", ErrBadCheckpoint, p.risk.Config().Dim, p.cfg.Risk.Dim)
	}
	// Epochs of a model cfg lacks are kept: they teach the risk model.
	fits := func(model string, arm int) bool {
		m := p.models[model]
		return arm >= 0 && (m == nil || arm < m.arms)
	}
	for id, d := range st.Pending {
		if len(d.X) != want.Dim || !fits(d.Model, d.Arm) {
			return nil, fmt.Errorf("%w: pending decision %q does not fit the bandit", ErrBadCheckpoint, id)
		}
	}
	for key, h := range st.Keys {
		if h == nil {
			return nil, fmt.Errorf("%w: key %q has no history", ErrBadCheckpoint, key)
		}
		for _, a := range h.Aggs {
			if !fits(a.Model, a.Arm) || (a.SlopeX != nil && len(a.SlopeX) != want.Dim) || len(a.LastX) > p.cfg.Risk.Dim {
				return nil, fmt.Errorf("%w: key %q has an aggregate that does not fit the bandit", ErrBadCheckpoint, key)
			}
			for _, w := range a.Wait {
				if len(w.X) != want.Dim {
					return nil, fmt.Errorf("%w: key %q has a waiting record that does not fit the bandit", ErrBadCheckpoint, key)
				}
			}
		}
	}
	var held int64
	for key, hl := range st.Held {
		for _, x := range hl {
			if x.Label.Key != key || x.Label.Validate() != nil {
				return nil, fmt.Errorf("%w: a label held for key %q is not valid for it", ErrBadCheckpoint, key)
			}
		}
		held += int64(len(hl))
	}
	if held != st.Stats.Held {
		return nil, fmt.Errorf("%w: %d labels held, its counters say %d", ErrBadCheckpoint, held, st.Stats.Held)
	}
	kept := 0
	for key, ex := range st.Final {
		for _, e := range ex {
			if len(e.X) != p.cfg.Risk.Dim {
				return nil, fmt.Errorf("%w: key %q has a kept final hour that does not fit the risk model", ErrBadCheckpoint, key)
			}
		}
		kept += len(ex)
	}
	if kept > len(st.FinalOrder) {
		return nil, fmt.Errorf("%w: %d kept final hours, %d in their order", ErrBadCheckpoint, kept, len(st.FinalOrder))
	}
	p.final, p.finalOrder = orEmpty(st.Final), st.FinalOrder
	p.pending, p.order, p.keys, p.seen = orEmpty(st.Pending), st.Order, orEmpty(st.Keys), orEmpty(st.Seen)
	p.watermark, p.Offsets, p.stats = st.Watermark, orEmpty(st.Offsets), st.Stats
	p.held = orEmpty(st.Held)
	return p, nil
}

func orEmpty[K comparable, V any](m map[K]V) map[K]V {
	if m == nil {
		return map[K]V{}
	}
	return m
}
