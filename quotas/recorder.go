package quotas

import (
	"compress/gzip"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"math"
	"slices"
	"strconv"
	"sync"
	"time"
)

// AllEndpoints is the endpoint of a budget that covers a key's whole
// traffic (a rule without an endpoint scope).
const AllEndpoints = "*"

// Recorder counts the usage serving decides, one count per user-day and
// (tier, endpoint), for the refit to fit on: seed 004's usage table, kept
// by the service itself. It keeps the last Days days (UTC) and, per day, at
// most MaxUserDays user-days: past that it keeps a uniform sample of keys,
// chosen by a hash of the key, so a key is in or out of the sample on
// every day and every instance alike and a percentile of the sample is a
// percentile of the whole. It is safe for concurrent use; Record takes a
// shard's lock, not a global one.
type Recorder struct {
	days    int
	perDay  int // user-days per shard per day
	shards  [recShards]recShard
	groupMu sync.RWMutex
	groups  map[group]int32
	names   []group
}

const recShards = 64

type recShard struct {
	mu     sync.Mutex
	days   map[Day]*recDay
	last   *recDay // days[lastAt], the day most records go to
	lastAt Day
}

// recDay is one shard's user-days of one day: the counts of the sampled
// keys, whose hash is at most thresh.
type recDay struct {
	thresh uint64
	counts map[recKey]int64
}

type recKey struct {
	group int32
	key   uint64
}

// RecorderConfig sizes a Recorder.
type RecorderConfig struct {
	// Days is how many days are kept, today's included: the refit's
	// lookback plus its test days plus today. At least 2.
	Days int
	// MaxUserDays caps the user-days kept per day, over all groups;
	// beyond it keys are sampled. At least recShards (64).
	MaxUserDays int
}

// NewRecorder returns an empty Recorder.
func NewRecorder(c RecorderConfig) (*Recorder, error) {
	if c.Days < 2 || c.Days > 400 {
		return nil, fmt.Errorf("quotas: recorder days %d must be between 2 and 400", c.Days)
	}
	if c.MaxUserDays < recShards {
		return nil, fmt.Errorf("quotas: recorder max user-days %d must be at least %d", c.MaxUserDays, recShards)
	}
	r := &Recorder{days: c.Days, perDay: c.MaxUserDays / recShards, groups: make(map[group]int32)}
	for i := range r.shards {
		r.shards[i].days = make(map[Day]*recDay)
	}
	return r, nil
}

// KeyHash is the hash a Recorder knows a key by: FNV-1a, mixed so that its
// low bits (the shard) and its high bits (the sample) are independent.
func KeyHash(key string) uint64 {
	h := uint64(14695981039346656037)
	for i := 0; i < len(key); i++ {
		h ^= uint64(key[i])
		h *= 1099511628211
	}
	// splitmix64's finalizer
	h ^= h >> 30
	h *= 0xbf58476d1ce4e5b9
	h ^= h >> 27
	h *= 0x94d049bb133111eb
	return h ^ h>>31
}

// Record counts n requests of key, on tier's endpoint, at t.
func (r *Recorder) Record(tier, endpoint, key string, n int64, t time.Time) {
	if n <= 0 {
		return
	}
	if endpoint == "" {
		endpoint = AllEndpoints
	}
	h := KeyHash(key)
	g := r.group(tier, endpoint)
	d := DayOf(t)
	s := &r.shards[h%recShards]
	s.mu.Lock()
	day := s.last
	if day == nil || s.lastAt != d {
		if day = s.days[d]; day == nil {
			day = s.newDay(d, r.days)
		}
		if day != nil {
			s.last, s.lastAt = day, d
		}
	}
	if day != nil && h <= day.thresh {
		k := recKey{g, h}
		c, seen := day.counts[k]
		if c <= math.MaxInt64-n {
			day.counts[k] = c + n
		}
		if !seen && len(day.counts) > r.perDay && day.thresh > 0 {
			day.halve()
		}
	}
	s.mu.Unlock()
}

// newDay starts day d in s and forgets the days that fall out of the kept
// ones; nil when d is older than every kept day (a late clock).
func (s *recShard) newDay(d Day, keep int) *recDay {
	newest := d
	for k := range s.days {
		newest = max(newest, k)
	}
	if d <= newest-Day(keep) {
		return nil
	}
	for k := range s.days {
		if k <= newest-Day(keep) {
			delete(s.days, k)
		}
	}
	day := &recDay{thresh: math.MaxUint64, counts: make(map[recKey]int64)}
	s.days[d] = day
	return day
}

// halve keeps half the sample: the keys whose hash is at most half the
// threshold.
func (d *recDay) halve() {
	d.thresh /= 2
	for k := range d.counts {
		if k.key > d.thresh {
			delete(d.counts, k)
		}
	}
}

func (r *Recorder) group(tier, endpoint string) int32 {
	g := group{tier, endpoint}
	r.groupMu.RLock()
	i, ok := r.groups[g]
	r.groupMu.RUnlock()
	if ok {
		return i
	}
	r.groupMu.Lock()
	defer r.groupMu.Unlock()
	if i, ok := r.groups[g]; ok {
		return i
	}
	i = int32(len(r.names))
	r.groups[g] = i
	r.names = append(r.names, g)
	return i
}

// Table returns the recorded user-days as a usage table, sampled alike on
// every shard (at the lowest threshold any shard reached that day), with
// the user-days of keys malicious reports true for marked malicious: the
// keys an abusive label holds. User is the key's hash in hex.
func (r *Recorder) Table(malicious func(keyHash uint64) bool) (*UsageTable, error) {
	return Merged(malicious, r)
}

// Merged is Table over the usage of several recorders, each one
// instance's share of the same keys' traffic: a user-day's requests add up
// over the recorders, and each day keeps the keys under the lowest sample
// threshold any recorder reached that day, so the merged sample is still
// the same keys on every instance.
func Merged(malicious func(keyHash uint64) bool, recs ...*Recorder) (*UsageTable, error) {
	type cell struct {
		k recKey
		n int64
	}
	thresh := make(map[Day]uint64)
	for _, r := range recs {
		for i := range r.shards {
			s := &r.shards[i]
			s.mu.Lock()
			for d, day := range s.days {
				if t, ok := thresh[d]; !ok || day.thresh < t {
					thresh[d] = day.thresh
				}
			}
			s.mu.Unlock()
		}
	}
	var rows []UsageRow
	for _, r := range recs {
		byDay := make(map[Day][]cell)
		for i := range r.shards {
			s := &r.shards[i]
			s.mu.Lock()
			for d, day := range s.days {
				for k, n := range day.counts {
					if k.key <= thresh[d] {
						byDay[d] = append(byDay[d], cell{k, n})
					}
				}
			}
			s.mu.Unlock()
		}
		r.groupMu.RLock()
		names := slices.Clone(r.names)
		r.groupMu.RUnlock()
		for d, cells := range byDay {
			for _, c := range cells {
				g := names[c.k.group]
				rows = append(rows, UsageRow{Tier: g.tier, Endpoint: g.endpoint, User: strconv.FormatUint(c.k.key, 16), Day: d,
					Requests: c.n, Malicious: malicious != nil && malicious(c.k.key)})
			}
		}
	}
	return NewUsageTable(rows)
}

// UserDays returns how many user-days the recorder holds, sampled or not.
func (r *Recorder) UserDays() int {
	n := 0
	for i := range r.shards {
		s := &r.shards[i]
		s.mu.Lock()
		for _, day := range s.days {
			n += len(day.counts)
		}
		s.mu.Unlock()
	}
	return n
}

// The state file: gzip'd JSON holding the recorder's user-days and the
// installed quotas, so that a refit's data and its result survive a
// restart. Version 1.
type stateFile struct {
	Version   int         `json:"version"`
	Installed *Installed  `json:"installed,omitempty"`
	Groups    [][2]string `json:"groups"` // tier, endpoint
	Days      []fileDay   `json:"days"`
}

// Installed is the fit serving enforces.
type Installed struct {
	At         time.Time `json:"at"`
	Window     Window    `json:"window"`
	Percentile float64   `json:"percentile"`
	Quotas     []Quota   `json:"quotas"`
}

func (in *Installed) check() error {
	if !(in.Percentile >= 0 && in.Percentile <= 1) {
		return fmt.Errorf("installed percentile %v is not in [0, 1]", in.Percentile)
	}
	seen := make(map[group]bool, len(in.Quotas))
	for i, q := range in.Quotas {
		g := group{q.Tier, q.Endpoint}
		switch {
		case q.Endpoint == "":
			return fmt.Errorf("installed quota %d has an empty endpoint", i)
		case !(q.Quota >= 0) || math.IsInf(q.Quota, 0):
			return fmt.Errorf("installed quota %d (%s %s) is %v, want a finite number at least 0", i, q.Tier, q.Endpoint, q.Quota)
		case q.UserDays < 0:
			return fmt.Errorf("installed quota %d (%s %s) has %d user-days", i, q.Tier, q.Endpoint, q.UserDays)
		case seen[g]:
			return fmt.Errorf("installed quota %d (%s %s) is listed twice", i, q.Tier, q.Endpoint)
		}
		seen[g] = true
	}
	return nil
}

type fileDay struct {
	Day    Day         `json:"day"`
	Shard  int         `json:"shard"`
	Thresh uint64      `json:"thresh"`
	Counts [][3]uint64 `json:"counts"` // group, key hash, requests
}

const stateFileVersion = 1

// WriteState writes the recorder's user-days and the installed fit (nil:
// none) to w.
func WriteState(w io.Writer, r *Recorder, in *Installed) error {
	f := stateFile{Version: stateFileVersion, Installed: in}
	r.groupMu.RLock()
	for _, g := range r.names {
		f.Groups = append(f.Groups, [2]string{g.tier, g.endpoint})
	}
	r.groupMu.RUnlock()
	for i := range r.shards {
		s := &r.shards[i]
		s.mu.Lock()
		for d, day := range s.days {
			fd := fileDay{Day: d, Shard: i, Thresh: day.thresh, Counts: make([][3]uint64, 0, len(day.counts))}
			for k, n := range day.counts {
				fd.Counts = append(fd.Counts, [3]uint64{uint64(k.group), k.key, uint64(n)})
			}
			f.Days = append(f.Days, fd)
		}
		s.mu.Unlock()
	}
	z := gzip.NewWriter(w)
	if err := json.NewEncoder(z).Encode(&f); err != nil {
		return err
	}
	return z.Close()
}

// ErrStateFile is wrapped by every error of ReadState on bad input.
var ErrStateFile = errors.New("quotas: bad state file")

// ReadState reads a file WriteState wrote: a new Recorder sized by c, and
// the installed fit (nil: none). Days older than c keeps are left out; a
// shard holding more user-days than c allows is sampled down. It never
// panics on bad input: every problem is an error wrapping ErrStateFile.
func ReadState(rd io.Reader, c RecorderConfig) (*Recorder, *Installed, error) {
	r, err := NewRecorder(c)
	if err != nil {
		return nil, nil, err
	}
	z, err := gzip.NewReader(rd)
	if err != nil {
		return nil, nil, fmt.Errorf("%w: %v", ErrStateFile, err)
	}
	var f stateFile
	dec := json.NewDecoder(io.LimitReader(z, 4<<30))
	if err := dec.Decode(&f); err != nil {
		return nil, nil, fmt.Errorf("%w: %v", ErrStateFile, err)
	}
	if f.Version != stateFileVersion {
		return nil, nil, fmt.Errorf("%w: version %d, want %d", ErrStateFile, f.Version, stateFileVersion)
	}
	if f.Installed != nil {
		if err := f.Installed.check(); err != nil {
			return nil, nil, fmt.Errorf("%w: %v", ErrStateFile, err)
		}
	}
	if err := r.load(&f, c); err != nil {
		return nil, nil, fmt.Errorf("%w: %v", ErrStateFile, err)
	}
	return r, f.Installed, nil
}

func (r *Recorder) load(f *stateFile, c RecorderConfig) error {
	for i, g := range f.Groups {
		if g[1] == "" {
			return fmt.Errorf("group %d has an empty endpoint", i)
		}
		if _, dup := r.groups[group{g[0], g[1]}]; dup {
			return fmt.Errorf("group %d (%s %s) is listed twice", i, g[0], g[1])
		}
		r.groups[group{g[0], g[1]}] = int32(i)
		r.names = append(r.names, group{g[0], g[1]})
	}
	newest := Day(math.MinInt32)
	for _, fd := range f.Days {
		newest = max(newest, fd.Day)
	}
	for i, fd := range f.Days {
		if fd.Shard < 0 || fd.Shard >= recShards {
			return fmt.Errorf("day %d: shard %d is not in [0, %d)", i, fd.Shard, recShards)
		}
		if fd.Day <= newest-Day(c.Days) {
			continue
		}
		s := &r.shards[fd.Shard]
		if s.days[fd.Day] != nil {
			return fmt.Errorf("day %s of shard %d is listed twice", fd.Day, fd.Shard)
		}
		day := &recDay{thresh: fd.Thresh, counts: make(map[recKey]int64, min(len(fd.Counts), r.perDay+1))}
		for j, c := range fd.Counts {
			switch {
			case c[0] >= uint64(len(r.names)):
				return fmt.Errorf("day %s: count %d names group %d of %d", fd.Day, j, c[0], len(r.names))
			case c[1]%recShards != uint64(fd.Shard):
				return fmt.Errorf("day %s: count %d is in shard %d, its key hash in %d", fd.Day, j, fd.Shard, c[1]%recShards)
			case c[1] > fd.Thresh:
				return fmt.Errorf("day %s: count %d has a key hash above the day's sample threshold", fd.Day, j)
			case c[2] == 0 || c[2] > math.MaxInt64:
				return fmt.Errorf("day %s: count %d has %d requests, want 1 to %d", fd.Day, j, c[2], int64(math.MaxInt64))
			}
			k := recKey{int32(c[0]), c[1]}
			if _, dup := day.counts[k]; dup {
				return fmt.Errorf("day %s: count %d repeats a user-day", fd.Day, j)
			}
			if k.key <= day.thresh {
				day.counts[k] = int64(c[2])
				for len(day.counts) > r.perDay && day.thresh > 0 {
					day.halve()
				}
			}
		}
		s.days[fd.Day] = day
	}
	return nil
}
