package rewards

import (
	"encoding/binary"
	"errors"
	"fmt"
	"hash/crc32"
	"maps"
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
	// Variants are the variant models' statistics, by VariantModel key.
	Variants map[string]*bandit.Snapshot
	Risk     *features.Risk
}

// Model is what serving chooses with: the merged parts.
type Model struct {
	Bandit *bandit.Snapshot
	// Variants are the variant models, by VariantModel key: a variant's
	// decisions draw from its own, and fall back when it is missing.
	Variants map[string]*bandit.Snapshot
	Risk     *features.Risk
}

// ErrBadModel is wrapped by every error of DecodeModelPart.
var ErrBadModel = errors.New("bad model part")

const (
	modelMagic = "FGMP"
	// modelFormat 2 added the variant models; DecodeModelPart still reads
	// format 1 parts, which have none.
	modelFormat = 2
	// maxVariantModels bounds the variant models a part may hold.
	maxVariantModels = 4096
)

// Part returns the partition's model part, stamped created.
func (p *Partition) Part(partition int, created time.Time) (ModelPart, error) {
	snap, err := p.Bandit(created)
	if err != nil {
		return ModelPart{}, err
	}
	part := ModelPart{Partition: partition, Bandit: snap, Risk: p.risk}
	for k, m := range p.models {
		if k == "" {
			continue
		}
		if part.Variants == nil {
			part.Variants = make(map[string]*bandit.Snapshot, len(p.models)-1)
		}
		if part.Variants[k], err = m.l.Snapshot(created); err != nil {
			return ModelPart{}, err
		}
	}
	return part, nil
}

// MarshalBinary encodes the part, checksummed with CRC32C:
//
//	"FGMP" format:u8 partition:u32 len:u32 bandit len:u32 risk
//	variants:u32 { keylen:u16 key len:u32 bandit }…  crc32c:u32
//
// with the variants in key order, all integers little-endian. A part
// without variant models is written in format 1 ("FGMP" 1 partition len
// bandit risk crc), which serving of earlier versions reads: until a
// variant has a model of its own, an upgrade changes nothing on the wire.
func (m ModelPart) MarshalBinary() ([]byte, error) {
	bs, err := m.Bandit.MarshalBinary()
	if err != nil {
		return nil, err
	}
	rs, err := m.Risk.MarshalBinary()
	if err != nil {
		return nil, err
	}
	if len(m.Variants) > maxVariantModels {
		return nil, fmt.Errorf("rewards: %d variant models, at most %d", len(m.Variants), maxVariantModels)
	}
	format := byte(modelFormat)
	if len(m.Variants) == 0 {
		format = 1
	}
	b := make([]byte, 0, 25+len(bs)+len(rs))
	b = append(b, modelMagic...)
	b = append(b, format)
	b = binary.LittleEndian.AppendUint32(b, uint32(m.Partition))
	b = binary.LittleEndian.AppendUint32(b, uint32(len(bs)))
	b = append(b, bs...)
	if format == 1 {
		b = append(b, rs...) // the risk model is the rest
		return binary.LittleEndian.AppendUint32(b, crc32.Checksum(b, castagnoli)), nil
	}
	b = binary.LittleEndian.AppendUint32(b, uint32(len(rs)))
	b = append(b, rs...)
	b = binary.LittleEndian.AppendUint32(b, uint32(len(m.Variants)))
	for _, k := range slices.Sorted(maps.Keys(m.Variants)) {
		vs, err := m.Variants[k].MarshalBinary()
		if err != nil {
			return nil, err
		}
		if len(k) > 1024 {
			return nil, fmt.Errorf("rewards: variant model key of %d bytes", len(k))
		}
		b = binary.LittleEndian.AppendUint16(b, uint16(len(k)))
		b = append(b, k...)
		b = binary.LittleEndian.AppendUint32(b, uint32(len(vs)))
		b = append(b, vs...)
	}
	return binary.LittleEndian.AppendUint32(b, crc32.Checksum(b, castagnoli)), nil
}

// partReader reads the fields of an encoded part, remembering the first
// error.
type partReader struct {
	b   []byte
	err error
}

func (r *partReader) take(n int) []byte {
	if r.err != nil || n < 0 || n > len(r.b) {
		if r.err == nil {
			r.err = fmt.Errorf("%w: truncated", ErrBadModel)
		}
		return nil
	}
	out := r.b[:n]
	r.b = r.b[n:]
	return out
}

func (r *partReader) u16() int {
	if b := r.take(2); b != nil {
		return int(binary.LittleEndian.Uint16(b))
	}
	return 0
}

func (r *partReader) u32() int {
	if b := r.take(4); b != nil {
		return int(binary.LittleEndian.Uint32(b))
	}
	return 0
}

// DecodeModelPart decodes a part MarshalBinary encoded (format 1 or 2).
// The error wraps ErrBadModel; it never panics on any input.
func DecodeModelPart(data []byte) (ModelPart, error) {
	if len(data) < 17 || string(data[:4]) != modelMagic {
		return ModelPart{}, fmt.Errorf("%w: no model header", ErrBadModel)
	}
	format := data[4]
	if format != 1 && format != modelFormat {
		return ModelPart{}, fmt.Errorf("%w: format %d", ErrBadModel, format)
	}
	body := data[:len(data)-4]
	if crc32.Checksum(body, castagnoli) != binary.LittleEndian.Uint32(data[len(body):]) {
		return ModelPart{}, fmt.Errorf("%w: checksum mismatch", ErrBadModel)
	}
	r := &partReader{b: body[5:]}
	part := r.u32()
	bs := r.take(r.u32())
	var rs []byte
	if format == 1 {
		rs, r.b = r.b, nil // the risk model is the rest
	} else {
		rs = r.take(r.u32())
	}
	if r.err != nil || part > 1<<20 {
		return ModelPart{}, fmt.Errorf("%w: bad lengths", ErrBadModel)
	}
	snap, err := bandit.DecodeSnapshot(bs)
	if err != nil {
		return ModelPart{}, fmt.Errorf("%w: %v", ErrBadModel, err)
	}
	risk, err := features.DecodeRisk(rs)
	if err != nil {
		return ModelPart{}, fmt.Errorf("%w: %v", ErrBadModel, err)
	}
	out := ModelPart{Partition: part, Bandit: snap, Risk: risk}
	if format == 1 {
		return out, nil
	}
	n := r.u32()
	if n > maxVariantModels {
		return ModelPart{}, fmt.Errorf("%w: %d variant models, at most %d", ErrBadModel, n, maxVariantModels)
	}
	for range n {
		k := string(r.take(r.u16()))
		vs := r.take(r.u32())
		if r.err != nil {
			return ModelPart{}, r.err
		}
		if _, dup := out.Variants[k]; dup || k == "" {
			return ModelPart{}, fmt.Errorf("%w: variant model key %q empty or repeated", ErrBadModel, k)
		}
		v, err := bandit.DecodeSnapshot(vs)
		if err != nil {
			return ModelPart{}, fmt.Errorf("%w: variant model %s: %v", ErrBadModel, k, err)
		}
		if v.Dim() != snap.Dim() {
			return ModelPart{}, fmt.Errorf("%w: variant model %s has %d features, the main model %d", ErrBadModel, k, v.Dim(), snap.Dim())
		}
		if out.Variants == nil {
			out.Variants = map[string]*bandit.Snapshot{}
		}
		out.Variants[k] = v
	}
	if len(r.b) != 0 {
		return ModelPart{}, fmt.Errorf("%w: %d bytes after the variant models", ErrBadModel, len(r.b))
	}
	return out, nil
}

// Combine merges the parts of every partition into the model serving
// uses: the exact sum of the bandit statistics, per model, and the
// evidence-weighted mixture of the risk models. Parts are taken in
// partition order, so the result does not depend on the order they
// arrived in. A variant model merges the parts that hold it: partitions
// whose learner does not have it yet simply add nothing.
func Combine(created time.Time, parts []ModelPart) (Model, error) {
	if len(parts) == 0 {
		return Model{}, errors.New("rewards: no model parts")
	}
	parts = slices.Clone(parts)
	slices.SortFunc(parts, func(a, b ModelPart) int { return a.Partition - b.Partition })
	snaps := make([]*bandit.Snapshot, len(parts))
	risks := make([]*features.Risk, len(parts))
	variants := map[string][]*bandit.Snapshot{}
	for i, p := range parts {
		if i > 0 && p.Partition == parts[i-1].Partition {
			return Model{}, fmt.Errorf("rewards: two parts for partition %d", p.Partition)
		}
		snaps[i], risks[i] = p.Bandit, p.Risk
		for _, k := range slices.Sorted(maps.Keys(p.Variants)) {
			variants[k] = append(variants[k], p.Variants[k])
		}
	}
	snap, err := bandit.Merge(created, snaps...)
	if err != nil {
		return Model{}, err
	}
	risk, err := features.MixRisk(risks...)
	if err != nil {
		return Model{}, err
	}
	m := Model{Bandit: snap, Risk: risk}
	for k, vs := range variants {
		v, err := bandit.Merge(created, vs...)
		if err != nil {
			return Model{}, fmt.Errorf("rewards: variant model %s: %w", k, err)
		}
		if m.Variants == nil {
			m.Variants = make(map[string]*bandit.Snapshot, len(variants))
		}
		m.Variants[k] = v
	}
	return m, nil
}
