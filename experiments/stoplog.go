package experiments

import (
	"bytes"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"io/fs"
	"math"
	"os"
	"path/filepath"
	"sort"
	"strings"
	"sync"
	"time"
)

// Stop-record operations.
const (
	OpStop   = "stop"
	OpResume = "resume"
)

// A StopRecord is one line of a stop log: a variant stopped (by a tripped
// guardrail or an operator) or resumed (by an operator).
//
//	{"op":"stop","experiment":"bandit-vs-static","variant":"lints","metric":"enterprise_throttle_rate","value":0.042,"threshold":0.001,"reason":"…","time":"2026-11-23T10:00:00Z","config_digest":"9f2c…"}
//	{"op":"resume","experiment":"bandit-vs-static","variant":"lints","reason":"fixed the floor","time":"2026-11-24T09:00:00Z"}
type StopRecord struct {
	// Op is OpStop or OpResume. Required.
	Op string `json:"op"`
	// Experiment and Variant name the variant. Required.
	Experiment string `json:"experiment"`
	Variant    string `json:"variant"`
	// Metric, Value and Threshold are the tripped guardrail's; empty for a
	// resume or a stop by hand.
	Metric    Metric  `json:"metric,omitempty"`
	Value     float64 `json:"value,omitempty"`
	Threshold float64 `json:"threshold,omitempty"`
	// Reason is free text for people.
	Reason string `json:"reason,omitempty"`
	// Time is when it happened. Required.
	Time time.Time `json:"time"`
	// ConfigDigest is the Digest of the experiments file in force.
	ConfigDigest string `json:"config_digest,omitempty"`
}

// ID returns the variant the record is about.
func (r StopRecord) ID() VariantID { return VariantID{r.Experiment, r.Variant} }

func (r StopRecord) validate() error {
	if r.Op != OpStop && r.Op != OpResume {
		return fmt.Errorf("op %q, want %s or %s", r.Op, OpStop, OpResume)
	}
	if msg := checkName(r.Experiment); msg != "" {
		return fmt.Errorf("experiment %s", msg)
	}
	if msg := checkName(r.Variant); msg != "" {
		return fmt.Errorf("variant %s", msg)
	}
	if r.Time.IsZero() {
		return errors.New("time is required")
	}
	if math.IsNaN(r.Value) || math.IsInf(r.Value, 0) || math.IsNaN(r.Threshold) || math.IsInf(r.Threshold, 0) {
		return fmt.Errorf("value %v and threshold %v must be finite", r.Value, r.Threshold)
	}
	return nil
}

// Errors of StopLog.Append.
var (
	ErrAlreadyStopped = errors.New("variant is already stopped")
	ErrNotStopped     = errors.New("variant is not stopped")
)

// A StopLog is the durable record of stopped variants: an append-only JSONL
// file of StopRecords, replayed on start so that a restart does not quietly
// resume a variant a guardrail stopped. A stop holds until a resume record
// follows it; operators add one with
//
//	flowguard experiments resume --state FILE EXPERIMENT/VARIANT
//
// A StopLog is safe for concurrent use. It is local to one process: several
// instances need one file each, or a shared log.
type StopLog struct {
	path string

	mu     sync.Mutex
	file   *os.File // opened on the first Append
	active map[VariantID]StopRecord
}

// LoadStops reads the stop log at path (a missing file is an empty log)
// and returns it ready for Append. Every line must be a valid record;
// errors name the file and line. Replaying, a second stop of a stopped
// variant keeps the first, and a resume of a running one is ignored.
func LoadStops(path string) (*StopLog, error) {
	data, err := os.ReadFile(path)
	if err != nil && !errors.Is(err, fs.ErrNotExist) {
		var pe *fs.PathError
		if errors.As(err, &pe) {
			err = pe.Err
		}
		return nil, fmt.Errorf("%s: cannot read: %w", path, err)
	}
	recs, err := ParseStops(path, data)
	if err != nil {
		return nil, err
	}
	return &StopLog{path: path, active: replay(recs)}, nil
}

// ParseStops decodes a stop log strictly: one JSON object per line, no
// unknown fields, no empty lines, every record valid. Errors read
// "name:line: problem".
func ParseStops(name string, data []byte) ([]StopRecord, error) {
	var recs []StopRecord
	for n := 1; len(data) > 0; n++ {
		line := data
		if i := bytes.IndexByte(data, '\n'); i >= 0 {
			line, data = data[:i], data[i+1:]
		} else {
			data = nil
		}
		if len(bytes.TrimSpace(line)) == 0 {
			return nil, fmt.Errorf("%s:%d: empty line", name, n)
		}
		dec := json.NewDecoder(bytes.NewReader(line))
		dec.DisallowUnknownFields()
		var r StopRecord
		if err := dec.Decode(&r); err != nil {
			return nil, fmt.Errorf("%s:%d: %s", name, n, strings.TrimPrefix(err.Error(), "json: "))
		}
		if _, err := dec.Token(); !errors.Is(err, io.EOF) {
			return nil, fmt.Errorf("%s:%d: more than one JSON value on the line", name, n)
		}
		if err := r.validate(); err != nil {
			return nil, fmt.Errorf("%s:%d: %w", name, n, err)
		}
		recs = append(recs, r)
	}
	return recs, nil
}

func replay(recs []StopRecord) map[VariantID]StopRecord {
	active := map[VariantID]StopRecord{}
	for _, r := range recs {
		_, stopped := active[r.ID()]
		switch {
		case r.Op == OpStop && !stopped:
			active[r.ID()] = r
		case r.Op == OpResume:
			delete(active, r.ID())
		}
	}
	return active
}

// Path returns the file the log is kept in.
func (l *StopLog) Path() string { return l.path }

// Active returns the stop records in force, sorted by experiment and
// variant.
func (l *StopLog) Active() []StopRecord {
	l.mu.Lock()
	defer l.mu.Unlock()
	recs := make([]StopRecord, 0, len(l.active))
	for _, r := range l.active {
		recs = append(recs, r)
	}
	sort.Slice(recs, func(i, j int) bool {
		a, b := recs[i], recs[j]
		return a.Experiment < b.Experiment || a.Experiment == b.Experiment && a.Variant < b.Variant
	})
	return recs
}

// IsStopped reports whether the variant is stopped.
func (l *StopLog) IsStopped(id VariantID) bool {
	l.mu.Lock()
	defer l.mu.Unlock()
	_, ok := l.active[id]
	return ok
}

// Append validates r, writes it as one line and fsyncs the file before it
// returns, so that a stop the caller then applies survives a crash. A stop
// of a stopped variant returns ErrAlreadyStopped, a resume of a running
// one ErrNotStopped; neither writes anything. The file is created (and its
// directory synced) on the first Append.
func (l *StopLog) Append(r StopRecord) error {
	if err := r.validate(); err != nil {
		return fmt.Errorf("%s: %w", l.path, err)
	}
	line, err := json.Marshal(r)
	if err != nil {
		return fmt.Errorf("%s: %w", l.path, err)
	}
	line = append(line, '\n')
	l.mu.Lock()
	defer l.mu.Unlock()
	_, stopped := l.active[r.ID()]
	switch {
	case r.Op == OpStop && stopped:
		return fmt.Errorf("%w: %s", ErrAlreadyStopped, r.ID())
	case r.Op == OpResume && !stopped:
		return fmt.Errorf("%w: %s", ErrNotStopped, r.ID())
	}
	if l.file == nil {
		if err := l.open(); err != nil {
			return err
		}
	}
	if _, err := l.file.Write(line); err != nil {
		return fmt.Errorf("%s: %w", l.path, err)
	}
	if err := l.file.Sync(); err != nil {
		return fmt.Errorf("%s: %w", l.path, err)
	}
	if r.Op == OpStop {
		l.active[r.ID()] = r
	} else {
		delete(l.active, r.ID())
	}
	return nil
}

func (l *StopLog) open() error {
	_, statErr := os.Stat(l.path)
	f, err := os.OpenFile(l.path, os.O_WRONLY|os.O_APPEND|os.O_CREATE, 0o644)
	if err != nil {
		return err
	}
	if errors.Is(statErr, fs.ErrNotExist) {
		// A new file's directory entry must be durable too.
		if dir, err := os.Open(filepath.Dir(l.path)); err == nil {
			err = dir.Sync()
			dir.Close()
			if err != nil {
				f.Close()
				return fmt.Errorf("%s: %w", l.path, err)
			}
		}
	}
	l.file = f
	return nil
}

// Close closes the file, if Append opened it.
func (l *StopLog) Close() error {
	l.mu.Lock()
	defer l.mu.Unlock()
	if l.file == nil {
		return nil
	}
	err := l.file.Close()
	l.file = nil
	return err
}
