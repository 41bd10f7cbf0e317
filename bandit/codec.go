package bandit

import (
	"encoding/binary"
	"errors"
	"fmt"
	"hash/crc32"
	"math"
	"strings"
	"time"
)

// Snapshot wire format, little-endian, version 2:
//
//	magic      "FGBS"
//	format     uint16   2
//	length     uint32   bytes in the whole encoding, checksum included
//	posterior  uint8
//	flags      uint8    bit 0: intercept, bit 1: creation time set
//	dim        uint16
//	arms       uint16
//	version    uint64
//	created    int64    Unix nanoseconds
//	schema     uint64   the feature schema's fingerprint (Config.Schema); absent in format 1
//	lambda, scale, prior shape, prior rate    float64 ×4
//	model id   uint8 length, bytes
//	per arm:   uint8 name length, name, float64 multiplier
//	per arm:   uint64 count, float64 Σr², p(p+1)/2 float64 Σxxᵀ (packed lower), p float64 Σr·x
//	checksum   uint32   CRC-32C (Castagnoli) of every byte before it
//
// Format 1 is format 2 without the schema field. A snapshot of schema 0
// (unknown) is written in format 1, and format 1 decodes with schema 0:
// readers of format 1 read every snapshot that carries no schema.
//
// A snapshot carries the sufficient statistics, not the factors: decoding
// refactorizes every arm, so a decoded snapshot is checked the same way as
// a freshly built one and cannot disagree with its own statistics.

// SnapshotFormat is the snapshot encoding version this build writes and
// reads.
const SnapshotFormat = 2

const (
	snapshotMagic  = "FGBS"
	snapHeaderLen  = 4 + 2 + 4 + 1 + 1 + 2 + 2 + 8 + 8 + 8 + 4*8
	snapHeaderLen1 = snapHeaderLen - 8 // format 1: no schema
	flagIntercept  = 1 << 0
	flagCreatedSet = 1 << 1
	knownFlags     = flagIntercept | flagCreatedSet
)

// Errors returned by DecodeSnapshot, wrapped with the detail.
var (
	// ErrSnapshotTruncated means the data ends before the length its header
	// gives, or before the header itself.
	ErrSnapshotTruncated = errors.New("snapshot truncated")
	// ErrSnapshotCorrupt means the checksum does not match, or a field holds
	// a value no encoder writes.
	ErrSnapshotCorrupt = errors.New("snapshot corrupt")
	// ErrSnapshotIncompatible means the data is not a snapshot or is in a
	// format this build does not read.
	ErrSnapshotIncompatible = errors.New("snapshot incompatible")
)

var castagnoli = crc32.MakeTable(crc32.Castagnoli)

// MarshalBinary encodes the snapshot; see AppendBinary.
func (s *Snapshot) MarshalBinary() ([]byte, error) {
	return s.AppendBinary(make([]byte, 0, s.encodedLen()))
}

// AppendBinary appends the snapshot's encoding to b: its configuration, its
// version and every arm's sufficient statistics, with a CRC-32C checksum.
func (s *Snapshot) AppendBinary(b []byte) ([]byte, error) {
	if len(s.modelID) > 255 {
		return b, fmt.Errorf("bandit: model id is %d bytes, at most 255", len(s.modelID))
	}
	start := len(b)
	n := s.encodedLen()
	flags := byte(0)
	if s.intercept {
		flags |= flagIntercept
	}
	var created int64
	if !s.created.IsZero() {
		flags |= flagCreatedSet
		created = s.created.UnixNano()
	}
	format := uint16(SnapshotFormat)
	if s.schema == 0 {
		format = 1 // no schema to carry: byte for byte what format 1 readers read
	}
	b = append(b, snapshotMagic...)
	b = binary.LittleEndian.AppendUint16(b, format)
	b = binary.LittleEndian.AppendUint32(b, uint32(n))
	b = append(b, byte(s.posterior), flags)
	b = binary.LittleEndian.AppendUint16(b, uint16(s.dim))
	b = binary.LittleEndian.AppendUint16(b, uint16(len(s.arms)))
	b = binary.LittleEndian.AppendUint64(b, s.version)
	b = binary.LittleEndian.AppendUint64(b, uint64(created))
	if format != 1 {
		b = binary.LittleEndian.AppendUint64(b, s.schema)
	}
	for _, v := range [...]float64{s.lambda, s.scale, s.a0, s.b0} {
		b = binary.LittleEndian.AppendUint64(b, math.Float64bits(v))
	}
	b = append(b, byte(len(s.modelID)))
	b = append(b, s.modelID...)
	for _, a := range s.arms {
		b = append(b, byte(len(a.Name)))
		b = append(b, a.Name...)
		b = binary.LittleEndian.AppendUint64(b, math.Float64bits(a.Multiplier))
	}
	for _, m := range s.models {
		b = binary.LittleEndian.AppendUint64(b, m.n)
		b = binary.LittleEndian.AppendUint64(b, math.Float64bits(m.sumR2))
		for _, v := range m.gram {
			b = binary.LittleEndian.AppendUint64(b, math.Float64bits(v))
		}
		for _, v := range m.f {
			b = binary.LittleEndian.AppendUint64(b, math.Float64bits(v))
		}
	}
	b = binary.LittleEndian.AppendUint32(b, crc32.Checksum(b[start:], castagnoli))
	return b, nil
}

// encodedLen returns the length of the snapshot's encoding.
func (s *Snapshot) encodedLen() int {
	n := snapHeaderLen + 1 + len(s.modelID)
	if s.schema == 0 {
		n = snapHeaderLen1 + 1 + len(s.modelID)
	}
	for _, a := range s.arms {
		n += 1 + len(a.Name) + 8
	}
	n += len(s.arms) * (16 + 8*(packedLen(s.p)+s.p))
	return n + 4
}

// DecodeSnapshot decodes a snapshot written by AppendBinary and rebuilds
// every arm's posterior from its statistics. It returns an error wrapping
// ErrSnapshotIncompatible for data that is not a snapshot or is in another
// format, ErrSnapshotTruncated for data cut short, and ErrSnapshotCorrupt
// for a checksum mismatch, trailing bytes, an invalid configuration or
// statistics no learner produces (non-finite sums, a precision matrix that
// is not positive definite). It never panics, whatever the input.
func DecodeSnapshot(data []byte) (*Snapshot, error) {
	if len(data) < 4 || string(data[:4]) != snapshotMagic {
		return nil, fmt.Errorf("bandit: %w: does not start with %q", ErrSnapshotIncompatible, snapshotMagic)
	}
	if len(data) < 10 {
		return nil, fmt.Errorf("bandit: %w: %d bytes, the header alone is %d", ErrSnapshotTruncated, len(data), snapHeaderLen)
	}
	format := binary.LittleEndian.Uint16(data[4:])
	if format != SnapshotFormat && format != 1 {
		return nil, fmt.Errorf("bandit: %w: format %d, this build reads formats 1 and %d", ErrSnapshotIncompatible, format, SnapshotFormat)
	}
	headerLen := uint32(snapHeaderLen)
	if format == 1 {
		headerLen = snapHeaderLen1
	}
	total := binary.LittleEndian.Uint32(data[6:])
	switch {
	case uint64(len(data)) < uint64(total):
		return nil, fmt.Errorf("bandit: %w: %d bytes of %d", ErrSnapshotTruncated, len(data), total)
	case uint64(len(data)) > uint64(total):
		return nil, fmt.Errorf("bandit: %w: %d bytes after the end", ErrSnapshotCorrupt, uint64(len(data))-uint64(total))
	case total < headerLen+1+4:
		return nil, fmt.Errorf("bandit: %w: length %d is shorter than the header", ErrSnapshotCorrupt, total)
	}
	body := data[:len(data)-4]
	if want, got := binary.LittleEndian.Uint32(data[len(body):]), crc32.Checksum(body, castagnoli); want != got {
		return nil, fmt.Errorf("bandit: %w: checksum %08x, computed %08x", ErrSnapshotCorrupt, want, got)
	}
	d := decoder{b: body[10:]}
	post := Posterior(d.u8())
	flags := d.u8()
	dim := int(d.u16())
	nArms := int(d.u16())
	version := d.u64()
	created := int64(d.u64())
	var schema uint64
	if format != 1 {
		schema = d.u64()
	}
	cfg := Config{Dim: dim, Posterior: post, NoIntercept: flags&flagIntercept == 0, Schema: schema}
	cfg.Lambda, cfg.Scale, cfg.PriorShape, cfg.PriorRate = d.f64(), d.f64(), d.f64(), d.f64()
	cfg.ModelID = d.str()
	if flags&^knownFlags != 0 {
		return nil, fmt.Errorf("bandit: %w: unknown flags %#x", ErrSnapshotCorrupt, flags)
	}
	if cfg.ModelID == "" {
		return nil, fmt.Errorf("bandit: %w: empty model id", ErrSnapshotCorrupt)
	}
	if nArms == 0 || nArms > MaxArms {
		return nil, fmt.Errorf("bandit: %w: %d arms", ErrSnapshotCorrupt, nArms)
	}
	cfg.Arms = make(ArmSet, nArms)
	for i := range cfg.Arms {
		cfg.Arms[i] = Arm{Name: d.str(), Multiplier: d.f64()}
	}
	if d.short {
		return nil, fmt.Errorf("bandit: %w: header fields overrun the length", ErrSnapshotCorrupt)
	}
	if err := cfg.Validate(); err != nil {
		return nil, fmt.Errorf("bandit: %w: %s", ErrSnapshotCorrupt, strings.TrimPrefix(err.Error(), "bandit: "))
	}
	if version == 0 {
		return nil, fmt.Errorf("bandit: %w: version 0", ErrSnapshotCorrupt)
	}
	var when time.Time
	if flags&flagCreatedSet != 0 {
		when = time.Unix(0, created).UTC()
	}
	s := newSnapshotShell(cfg, version, when)
	m := packedLen(s.p)
	if need := nArms * (16 + 8*(m+s.p)); len(d.b) != need {
		return nil, fmt.Errorf("bandit: %w: %d bytes of statistics, %d arms of dimension %d need %d",
			ErrSnapshotCorrupt, len(d.b), nArms, dim, need)
	}
	gram := make([]float64, m)
	f := make([]float64, s.p)
	for a := range s.models {
		n := d.u64()
		sumR2 := d.f64()
		for i := range gram {
			gram[i] = d.f64()
		}
		for i := range f {
			f[i] = d.f64()
		}
		am, err := s.buildArm(n, gram, nil, f, nil, sumR2)
		if err != nil {
			return nil, fmt.Errorf("bandit: %w: arm %d %q: %w", ErrSnapshotCorrupt, a, cfg.Arms[a].Name, err)
		}
		s.models[a] = am
	}
	return s, nil
}

// decoder reads fixed-width fields; past the end it reads zeros and sets
// short, so a caller checks once instead of after every field.
type decoder struct {
	b     []byte
	short bool
}

func (d *decoder) take(n int) []byte {
	if len(d.b) < n {
		d.short = true
		d.b = d.b[:0]
		return make([]byte, n)
	}
	v := d.b[:n]
	d.b = d.b[n:]
	return v
}

func (d *decoder) u8() byte     { return d.take(1)[0] }
func (d *decoder) u16() uint16  { return binary.LittleEndian.Uint16(d.take(2)) }
func (d *decoder) u64() uint64  { return binary.LittleEndian.Uint64(d.take(8)) }
func (d *decoder) f64() float64 { return math.Float64frombits(d.u64()) }
func (d *decoder) str() string  { return string(d.take(int(d.u8()))) }
