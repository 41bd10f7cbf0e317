package rewards

import (
	"encoding/binary"
	"errors"
	"fmt"
	"hash/crc32"
	"slices"
	"time"

	"github.com/devflow/flowguard/bandit"
	"github.com/devflow/flowguard/features"
)

// ModelPart is what one partition's learner publishes: the bandit
// statistics and the risk model trained on that partition. Serving merges
// the newest part of every partition (Combine).
type ModelPart struct {
	Partition int
	Bandit    *bandit.Snapshot
	Risk      *features.Risk
}

// ErrBadModel is wrapped by every error of DecodeModelPart.
var ErrBadModel = errors.New("bad model part")

const (
	modelMagic  = "FGMP"
	modelFormat = 1
)

// Part returns the partition's model part, stamped created.
func (p *Partition) Part(partition int, created time.Time) (ModelPart, error) {
	snap, err := p.bandit.Snapshot(created)
	if err != nil {
		return ModelPart{}, err
	}
	return ModelPart{Partition: partition, Bandit: snap, Risk: p.risk}, nil
}

// MarshalBinary encodes the part, checksummed with CRC32C.
func (m ModelPart) MarshalBinary() ([]byte, error) {
	bs, err := m.Bandit.MarshalBinary()
	if err != nil {
		return nil, err
	}
	rs, err := m.Risk.MarshalBinary()
	if err != nil {
		return nil, err
	}
	b := make([]byte, 0, 17+len(bs)+len(rs))
	b = append(b, modelMagic...)
	b = append(b, modelFormat)
	b = binary.LittleEndian.AppendUint32(b, uint32(m.Partition))
	b = binary.LittleEndian.AppendUint32(b, uint32(len(bs)))
	b = append(b, bs...)
	b = append(b, rs...)
	return binary.LittleEndian.AppendUint32(b, crc32.Checksum(b, castagnoli)), nil
}

// DecodeModelPart decodes a part MarshalBinary encoded. The error wraps
// ErrBadModel; it never panics on any input.
func DecodeModelPart(data []byte) (ModelPart, error) {
	if len(data) < 17 || string(data[:4]) != modelMagic {
		return ModelPart{}, fmt.Errorf("%w: no model header", ErrBadModel)
	}
	if data[4] != modelFormat {
		return ModelPart{}, fmt.Errorf("%w: format %d", ErrBadModel, data[4])
	}
	body := data[:len(data)-4]
	if crc32.Checksum(body, castagnoli) != binary.LittleEndian.Uint32(data[len(body):]) {
		return ModelPart{}, fmt.Errorf("%w: checksum mismatch", ErrBadModel)
	}
	part := binary.LittleEndian.Uint32(body[5:])
	n := int(binary.LittleEndian.Uint32(body[9:]))
	if part > 1<<20 || n > len(body)-13 {
		return ModelPart{}, fmt.Errorf("%w: bad lengths", ErrBadModel)
	}
	snap, err := bandit.DecodeSnapshot(body[13 : 13+n])
	if err != nil {
		return ModelPart{}, fmt.Errorf("%w: %v", ErrBadModel, err)
	}
	risk, err := features.DecodeRisk(body[13+n:])
	if err != nil {
		return ModelPart{}, fmt.Errorf("%w: %v", ErrBadModel, err)
	}
	return ModelPart{Partition: int(part), Bandit: snap, Risk: risk}, nil
}

// Combine merges the parts of every partition into the model serving
// uses: the exact sum of the bandit statistics, and the evidence-weighted
// mixture of the risk models. Parts are taken in partition order, so the
// result does not depend on the order they arrived in.
func Combine(created time.Time, parts []ModelPart) (*bandit.Snapshot, *features.Risk, error) {
	if len(parts) == 0 {
		return nil, nil, errors.New("rewards: no model parts")
	}
	parts = slices.Clone(parts)
	slices.SortFunc(parts, func(a, b ModelPart) int { return a.Partition - b.Partition })
	snaps := make([]*bandit.Snapshot, len(parts))
	risks := make([]*features.Risk, len(parts))
	for i, p := range parts {
		if i > 0 && p.Partition == parts[i-1].Partition {
			return nil, nil, fmt.Errorf("rewards: two parts for partition %d", p.Partition)
		}
		snaps[i], risks[i] = p.Bandit, p.Risk
	}
	snap, err := bandit.Merge(created, snaps...)
	if err != nil {
		return nil, nil, err
	}
	risk, err := features.MixRisk(risks...)
	if err != nil {
		return nil, nil, err
	}
	return snap, risk, nil
}
