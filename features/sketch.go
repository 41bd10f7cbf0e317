package features

import (
	"math"
	"math/bits"
)

// hashString is a fixed, unseeded 64-bit hash of client IPs and endpoints.
// It must be the same in every process: HyperLogLog registers exported by
// one instance are merged into another's. It reads 8 bytes at a time and
// finishes with MurmurHash3's fmix64, which is plenty for sketching strings
// nobody picks to collide (a flood of colliding IPs only lowers the
// distinct-IP estimate of the key sending them).
func hashString(s string) uint64 {
	const (
		p1 = 0x9e3779b97f4a7c15
		p2 = 0xc2b2ae3d27d4eb4f
	)
	h := uint64(len(s))*p1 ^ 0x6a09e667f3bcc908
	switch {
	case len(s) >= 8:
		last := s[len(s)-8:]
		for len(s) > 8 {
			h = bits.RotateLeft64(h^(load64(s)*p2), 31) * p1
			s = s[8:]
		}
		// The last 1 to 8 bytes, read as the string's last 8.
		h = bits.RotateLeft64(h^(load64(last)*p2), 31) * p1
	case len(s) >= 4:
		w := uint64(load32(s)) | uint64(load32(s[len(s)-4:]))<<32
		h = bits.RotateLeft64(h^(w*p2), 31) * p1
	case len(s) > 0:
		w := uint64(s[0]) | uint64(s[len(s)/2])<<8 | uint64(s[len(s)-1])<<16
		h = bits.RotateLeft64(h^(w*p2), 31) * p1
	}
	return fmix64(h)
}

// load64 reads the first 8 bytes of s, little-endian.
func load64(s string) uint64 {
	_ = s[7]
	return uint64(s[0]) | uint64(s[1])<<8 | uint64(s[2])<<16 | uint64(s[3])<<24 |
		uint64(s[4])<<32 | uint64(s[5])<<40 | uint64(s[6])<<48 | uint64(s[7])<<56
}

// load32 reads the first 4 bytes of s, little-endian.
func load32(s string) uint32 {
	_ = s[3]
	return uint32(s[0]) | uint32(s[1])<<8 | uint32(s[2])<<16 | uint32(s[3])<<24
}

func fmix64(h uint64) uint64 {
	h ^= h >> 33
	h *= 0xff51afd7ed558ccd
	h ^= h >> 33
	h *= 0xc4ceb9fe1a85ec53
	h ^= h >> 33
	return h
}

// endpointBuckets is the number of buckets of the endpoint-mix histogram.
const endpointBuckets = 8

func endpointBucket(h uint64) uint8 { return uint8(h >> 61) }

// HyperLogLog parameters: 2^hllP registers of 4 bits, each holding the
// rank (1 + leading zeros) of hllQ hash bits, saturating at hllQ+1. With
// 64 registers the standard error is about 1.04/√64 = 13%, the largest
// countable cardinality is about 64·2^14 ≈ 1M, and the registers take
// 32 bytes.
const (
	hllP         = 6
	hllRegisters = 1 << hllP
	hllQ         = 14
	// HLLBytes is the size of the packed registers in a [Record].
	HLLBytes = hllRegisters / 2
)

// sketch is a HyperLogLog of client IPs: register i is nibble i%2 of byte
// i/2 (low nibble first).
type sketch [HLLBytes]byte

func (s *sketch) get(i int) uint8 { return s[i>>1] >> (4 * (i & 1)) & 0xf }

func (s *sketch) set(i int, v uint8) {
	sh := 4 * (i & 1)
	s[i>>1] = s[i>>1]&^(0xf<<sh) | v<<sh
}

// add records a hashed element and reports whether a register changed, i.e.
// whether the estimate may have changed.
func (s *sketch) add(h uint64) bool {
	i := int(h >> (64 - hllP))
	w := (h >> (64 - hllP - hllQ)) & (1<<hllQ - 1)
	rank := uint8(hllQ + 1 - bits.Len64(w))
	if rank <= s.get(i) {
		return false
	}
	s.set(i, rank)
	return true
}

// merge sets every register to the larger of s's and o's: the sketch of the
// union. It is idempotent, so merging a sketch twice counts nothing twice.
func (s *sketch) merge(o *sketch) {
	for i := 0; i < hllRegisters; i++ {
		if v := o.get(i); v > s.get(i) {
			s.set(i, v)
		}
	}
}

// estimate returns the cardinality estimate by Ertl's improved raw
// estimator ("New cardinality estimation algorithms for HyperLogLog
// sketches", 2017, algorithm 6), which is accurate from 0 up to the
// sketch's limit without range corrections. With only 64 registers it
// over-counts by about 1% to 1.5% (measured over random hashes), far
// below its 13% standard error; it is left uncorrected so that small
// counts come out right.
func (s *sketch) estimate() float64 {
	var c [hllQ + 2]int
	for i := 0; i < hllRegisters; i++ {
		c[s.get(i)]++
	}
	const m = hllRegisters
	z := m * ertlTau(1-float64(c[hllQ+1])/m)
	for k := hllQ; k >= 1; k-- {
		z = 0.5 * (z + float64(c[k]))
	}
	z += m * ertlSigma(float64(c[0])/m)
	return m * m / (2 * math.Ln2) / z
}

func ertlSigma(x float64) float64 {
	if x == 1 {
		return math.Inf(1)
	}
	y, z := 1.0, x
	for {
		x *= x
		prev := z
		z += x * y
		y += y
		if z == prev {
			return z
		}
	}
}

func ertlTau(x float64) float64 {
	if x == 0 || x == 1 {
		return 0
	}
	y, z := 1.0, 1-x
	for {
		x = math.Sqrt(x)
		prev := z
		y *= 0.5
		d := 1 - x
		z -= d * d * y
		if z == prev {
			return z / 3
		}
	}
}
