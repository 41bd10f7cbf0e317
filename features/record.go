package features

import (
	"encoding/binary"
	"errors"
	"fmt"
	"math"
	"time"
)

// Record is the part of a key's state that instances share, e.g. through
// Redis: the request counters of one instance and the client-IP sketch.
// The other features are ratios and mixes that each instance estimates well
// enough from its own share of a key's traffic.
//
// Sharing works like this. Every instance exports the records of its active
// keys ([Store.Export]: its own requests only, never what it merged), and
// periodically, for each key, sums the records of the other instances with
// [Record.Add] and hands the sum to [Store.Merge]. Merge replaces the
// key's remote counters with the sum, so nothing is counted twice however
// often it runs; the IP sketches merge by register-wise maximum, which is
// idempotent too. An instance must not add its own record to the sum.
// Across instances, features are as fresh as this exchange is frequent.
type Record struct {
	// At is the instant the counts are expressed at, Unix microseconds.
	At int64
	// FirstSeen is when the key was first seen, Unix microseconds; never
	// after At.
	FirstSeen int64
	// Requests are decayed request counts per window of Windows, as of At.
	Requests [NumWindows]float32
	// IPs are the registers of the key's client-IP HyperLogLog: opaque,
	// merged by Add and Merge.
	IPs [HLLBytes]byte
}

// RecordSize is the length of a marshalled Record.
const RecordSize = 8 + 8 + 8 + 4*NumWindows + HLLBytes

// recordVersion is the first byte of a marshalled Record.
const recordVersion = 2 // 2: five windows (schema v2 added 24 h)

// maxRecordCount bounds a record's counts: far above any real count, low
// enough that sums of many records stay finite in float32.
const maxRecordCount = 1e15

// Errors of Record.UnmarshalBinary, Record.Validate and Store.Merge, wrapped
// with the detail.
var (
	// ErrRecordLength means the data is not RecordSize bytes long.
	ErrRecordLength = errors.New("features: record has the wrong length")
	// ErrRecordVersion means the data is of a record format this package
	// does not know.
	ErrRecordVersion = errors.New("features: unknown record version")
	// ErrInvalidRecord means a field holds an impossible value.
	ErrInvalidRecord = errors.New("features: invalid record")
)

// IsZero reports whether r is the zero Record, the identity of Add.
func (r Record) IsZero() bool { return r == Record{} }

// Validate reports whether every count is finite and within [0, 1e15],
// At and FirstSeen lie in the years 1 to 9999, and FirstSeen is not after
// At; the error wraps ErrInvalidRecord. The zero Record is valid.
func (r Record) Validate() error {
	if r.IsZero() {
		return nil
	}
	for _, t := range [2]int64{r.At, r.FirstSeen} {
		if t < minMicros || t > maxMicros {
			return fmt.Errorf("%w: time %d is outside the years 1 to 9999", ErrInvalidRecord, t)
		}
	}
	for i, c := range r.Requests {
		if !(c >= 0 && c <= maxRecordCount) { // NaN fails both
			return fmt.Errorf("%w: request count %d is %v", ErrInvalidRecord, i, c)
		}
	}
	if r.FirstSeen > r.At {
		return fmt.Errorf("%w: first seen %d is after %d", ErrInvalidRecord, r.FirstSeen, r.At)
	}
	return nil
}

// agedTo returns r's counts brought to t (not moved back when t < r.At).
func (r Record) agedTo(t int64) [NumWindows]float32 {
	c := r.Requests
	if t > r.At {
		d := decays(float64(t - r.At))
		for i := range c {
			c[i] *= d[i]
		}
	}
	return c
}

// Add returns the record of r's and o's instances together: the counts of
// both brought to the later At and summed, the earlier FirstSeen, the union
// of the IP sketches. The zero Record is its identity.
func (r Record) Add(o Record) Record {
	switch {
	case r.IsZero():
		return o
	case o.IsZero():
		return r
	}
	at := max(r.At, o.At)
	a, b := r.agedTo(at), o.agedTo(at)
	sum := Record{At: at, FirstSeen: min(r.FirstSeen, o.FirstSeen)}
	for i := range sum.Requests {
		sum.Requests[i] = min(a[i]+b[i], maxRecordCount)
	}
	s := sketch(r.IPs)
	os := sketch(o.IPs)
	s.merge(&os)
	sum.IPs = s
	return sum
}

// MarshalBinary encodes r in RecordSize bytes: a version byte, 7 zero
// bytes, then At, FirstSeen, the counts (IEEE-754 bits) and the sketch,
// little-endian.
func (r Record) MarshalBinary() ([]byte, error) {
	return r.AppendBinary(make([]byte, 0, RecordSize))
}

// AppendBinary appends the encoding of MarshalBinary to b.
func (r Record) AppendBinary(b []byte) ([]byte, error) {
	b = append(b, recordVersion, 0, 0, 0, 0, 0, 0, 0)
	b = binary.LittleEndian.AppendUint64(b, uint64(r.At))
	b = binary.LittleEndian.AppendUint64(b, uint64(r.FirstSeen))
	for _, c := range r.Requests {
		b = binary.LittleEndian.AppendUint32(b, math.Float32bits(c))
	}
	return append(b, r.IPs[:]...), nil
}

// UnmarshalBinary decodes what MarshalBinary encoded. Bad data leaves r
// unchanged and returns an error wrapping ErrRecordLength,
// ErrRecordVersion or ErrInvalidRecord.
func (r *Record) UnmarshalBinary(data []byte) error {
	if len(data) != RecordSize {
		return fmt.Errorf("%w: got %d bytes, want %d", ErrRecordLength, len(data), RecordSize)
	}
	if data[0] != recordVersion {
		return fmt.Errorf("%w: got version %d, want %d", ErrRecordVersion, data[0], recordVersion)
	}
	for _, c := range data[1:8] {
		if c != 0 {
			return fmt.Errorf("%w: reserved bytes are not zero", ErrInvalidRecord)
		}
	}
	var d Record
	d.At = int64(binary.LittleEndian.Uint64(data[8:]))
	d.FirstSeen = int64(binary.LittleEndian.Uint64(data[16:]))
	for i := range d.Requests {
		d.Requests[i] = math.Float32frombits(binary.LittleEndian.Uint32(data[24+4*i:]))
	}
	copy(d.IPs[:], data[24+4*NumWindows:])
	if err := d.Validate(); err != nil {
		return err
	}
	*r = d
	return nil
}

// Export returns key's record at now, and whether the store holds the key.
// The counts are this instance's own requests only, never merged ones; the
// IP sketch may include merged sketches, which is harmless since sketches
// merge by maximum.
func (s *Store) Export(key string, now time.Time) (Record, bool) {
	t := micros(now)
	c, ok, _, _ := s.load(key, t)
	if !ok {
		return Record{}, false
	}
	c.advance(t)
	return Record{At: c.at, FirstSeen: c.first, Requests: c.local, IPs: c.sketch}, true
}

// Merge makes remote the key's remote activity at now: remote's counts,
// brought to now, replace the remote counters the previous Merge set;
// its IP sketch is merged into the key's; the key's first-seen time becomes
// the earlier of the two. Pass the sum of the other instances' records
// (see Record); the zero Record clears the remote counters. An unknown key
// is added. The error wraps ErrInvalidRecord
// when remote fails Validate; the store is then unchanged.
func (s *Store) Merge(key string, remote Record, now time.Time) error {
	if err := remote.Validate(); err != nil {
		return err
	}
	t := micros(now)
	sh, h := s.shard(key)
	sh.mu.Lock()
	st := sh.upsert(h, t, s.perShard)
	if st != nil {
		st.advance(t)
		st.remote = remote.agedTo(st.at)
		if !remote.IsZero() {
			rs := sketch(remote.IPs)
			st.sketch.merge(&rs)
			st.ips = float32(st.sketch.estimate())
			st.first = min(st.first, remote.FirstSeen)
		}
	}
	sh.mu.Unlock()
	if st == nil {
		s.rejected.Add(1)
	}
	return nil
}
