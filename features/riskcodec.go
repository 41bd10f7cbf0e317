package features

import (
	"encoding/binary"
	"errors"
	"fmt"
	"hash/crc32"
	"math"
)

// Errors of DecodeRisk, wrapped with the detail.
var (
	// ErrRiskCorrupt means the data is not an encoded Risk: bad magic,
	// length or checksum, or impossible values.
	ErrRiskCorrupt = errors.New("features: corrupt risk model")
	// ErrRiskVersion means the data is of a format this package does not know.
	ErrRiskVersion = errors.New("features: unknown risk model format")
)

const (
	riskMagic   = "FGRK"
	riskFormat  = 1
	riskHeader  = 4 + 1 + 4 + 5*8 + 8 // magic, format, dim, cfg, learned
	riskTrailer = 4                   // CRC32C of everything before it
)

var castagnoli = crc32.MakeTable(crc32.Castagnoli)

// MarshalBinary encodes the model's configuration, learning state and
// weights, checksummed with CRC32C. It is safe to call while Learn runs
// elsewhere: it sees the state between two Learn calls.
func (r *Risk) MarshalBinary() ([]byte, error) {
	r.mu.Lock()
	defer r.mu.Unlock()
	d := r.cfg.Dim
	b := make([]byte, 0, riskHeader+3*8*(d+1)+riskTrailer)
	b = append(b, riskMagic...)
	b = append(b, riskFormat)
	b = binary.LittleEndian.AppendUint32(b, uint32(d))
	for _, v := range [...]float64{r.cfg.Alpha, r.cfg.Beta, r.cfg.L1, r.cfg.L2, r.cfg.Prior} {
		b = binary.LittleEndian.AppendUint64(b, math.Float64bits(v))
	}
	b = binary.LittleEndian.AppendUint64(b, uint64(r.learned.Load()))
	for _, vs := range [][]float64{r.z, r.n, *r.weights.Load()} {
		for _, v := range vs {
			b = binary.LittleEndian.AppendUint64(b, math.Float64bits(v))
		}
	}
	return binary.LittleEndian.AppendUint32(b, crc32.Checksum(b, castagnoli)), nil
}

// DecodeRisk returns the model MarshalBinary encoded. The error wraps
// ErrRiskCorrupt or ErrRiskVersion; it never panics on any input.
func DecodeRisk(data []byte) (*Risk, error) {
	if len(data) < riskHeader+riskTrailer || string(data[:4]) != riskMagic {
		return nil, fmt.Errorf("%w: no risk model header", ErrRiskCorrupt)
	}
	if data[4] != riskFormat {
		return nil, fmt.Errorf("%w: format %d", ErrRiskVersion, data[4])
	}
	body := data[:len(data)-riskTrailer]
	if crc32.Checksum(body, castagnoli) != binary.LittleEndian.Uint32(data[len(body):]) {
		return nil, fmt.Errorf("%w: checksum mismatch", ErrRiskCorrupt)
	}
	d := int(binary.LittleEndian.Uint32(data[5:]))
	if d < 1 || d > MaxRiskDim || len(body) != riskHeader+3*8*(d+1) {
		return nil, fmt.Errorf("%w: dimension %d does not match the length %d", ErrRiskCorrupt, d, len(data))
	}
	f := func(off int) float64 { return math.Float64frombits(binary.LittleEndian.Uint64(data[off:])) }
	cfg := RiskConfig{Dim: d, Alpha: f(9), Beta: f(17), L1: f(25), L2: f(33), Prior: f(41)}
	if err := cfg.Validate(); err != nil || cfg.Alpha == 0 || cfg.Prior == 0 {
		return nil, fmt.Errorf("%w: configuration: %v", ErrRiskCorrupt, err)
	}
	r, err := NewRisk(cfg)
	if err != nil {
		return nil, fmt.Errorf("%w: %v", ErrRiskCorrupt, err)
	}
	learned := binary.LittleEndian.Uint64(data[49:])
	if learned > math.MaxInt64 {
		return nil, fmt.Errorf("%w: learned count %d", ErrRiskCorrupt, learned)
	}
	r.learned.Store(int64(learned))
	w := make([]float64, d+1)
	off := riskHeader
	for _, vs := range [][]float64{r.z, r.n, w} {
		for i := range vs {
			v := f(off)
			off += 8
			if math.IsNaN(v) || math.IsInf(v, 0) {
				return nil, fmt.Errorf("%w: non-finite state", ErrRiskCorrupt)
			}
			vs[i] = v
		}
	}
	for _, v := range r.n {
		if v < 0 {
			return nil, fmt.Errorf("%w: negative gradient sum", ErrRiskCorrupt)
		}
	}
	r.weights.Store(&w)
	return r, nil
}

// MixRisk returns a model whose weights are the average of parts' weights,
// each weighted by its Learned count: how learners that share the labels
// by partition combine their risk models (iterative parameter mixing).
// Untrained parts count for nothing; with none trained the result is
// untrained. The mixture scores; it is not meant to Learn further.
func MixRisk(parts ...*Risk) (*Risk, error) {
	if len(parts) == 0 {
		return nil, errors.New("features: no risk models to mix")
	}
	cfg := parts[0].cfg
	out, err := NewRisk(cfg)
	if err != nil {
		return nil, err
	}
	w := make([]float64, cfg.Dim+1)
	var total float64
	for i, p := range parts {
		if p.cfg != cfg {
			return nil, fmt.Errorf("features: risk part %d has another configuration", i)
		}
		n := float64(p.learned.Load())
		for j, v := range *p.weights.Load() {
			w[j] += n * v
		}
		total += n
	}
	if total > 0 {
		for j := range w {
			w[j] /= total
		}
	}
	out.weights.Store(&w)
	out.learned.Store(int64(total))
	return out, nil
}
