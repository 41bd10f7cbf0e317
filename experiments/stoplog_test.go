package experiments

import (
	"encoding/json"
	"errors"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"
)

const (
	stopLine   = `{"op":"stop","experiment":"e1","variant":"lints","metric":"enterprise_throttle_rate","value":0.04,"threshold":0.001,"time":"2026-11-23T10:00:00Z","config_digest":"abc"}`
	resumeLine = `{"op":"resume","experiment":"e1","variant":"lints","reason":"floor fixed","time":"2026-11-24T09:00:00Z"}`
)

func TestParseStopsErrors(t *testing.T) {
	cases := map[string]struct{ data, want string }{
		"unknown field":  {`{"op":"stop","experiment":"e1","variant":"v","time":"2026-11-23T10:00:00Z","who":"me"}`, `stops.jsonl:1: unknown field "who"`},
		"bad op":         {`{"op":"pause","experiment":"e1","variant":"v","time":"2026-11-23T10:00:00Z"}`, `stops.jsonl:1: op "pause", want stop or resume`},
		"no time":        {`{"op":"stop","experiment":"e1","variant":"v"}`, `stops.jsonl:1: time is required`},
		"bad time":       {`{"op":"stop","experiment":"e1","variant":"v","time":"yesterday"}`, `stops.jsonl:1: parsing time "yesterday" as "2006-01-02T15:04:05Z07:00": cannot parse "yesterday" as "2006"`},
		"no variant":     {`{"op":"stop","experiment":"e1","time":"2026-11-23T10:00:00Z"}`, `stops.jsonl:1: variant name is required`},
		"bad experiment": {`{"op":"stop","experiment":"a b","variant":"v","time":"2026-11-23T10:00:00Z"}`, `stops.jsonl:1: experiment name "a b" may hold only letters, digits, '.', '_' and '-', and must start with a letter or digit`},
		"second line":    {stopLine + "\n{\"op\":", `stops.jsonl:2: unexpected EOF`},
		"empty line":     {stopLine + "\n\n" + resumeLine + "\n", `stops.jsonl:2: empty line`},
		"two values":     {stopLine + " {}\n", `stops.jsonl:1: more than one JSON value on the line`},
		"not an object":  {"[1]\n", `stops.jsonl:1: cannot unmarshal array into Go value of type experiments.StopRecord`},
		"string value":   {`{"op":"stop","experiment":"e1","variant":"v","time":"2026-11-23T10:00:00Z","value":"high"}`, `stops.jsonl:1: cannot unmarshal string into Go struct field StopRecord.value of type float64`},
		"null":           {"null\n", `stops.jsonl:1: op "", want stop or resume`},
		"garbage":        {"stop e1/v\n", `stops.jsonl:1: invalid character 's' looking for beginning of value`},
	}
	for name, c := range cases {
		t.Run(name, func(t *testing.T) {
			_, err := ParseStops("stops.jsonl", []byte(c.data))
			if err == nil || err.Error() != c.want {
				t.Fatalf("err\n got: %v\nwant: %s", err, c.want)
			}
		})
	}
}

func TestParseStops(t *testing.T) {
	recs, err := ParseStops("s", []byte(stopLine+"\n"+resumeLine+"\n"+stopLine))
	if err != nil || len(recs) != 3 {
		t.Fatalf("%d records, %v", len(recs), err)
	}
	if r := recs[0]; r.Op != OpStop || r.ID() != (VariantID{"e1", "lints"}) || r.Value != 0.04 || r.ConfigDigest != "abc" || r.Time.Year() != 2026 {
		t.Errorf("record: %+v", r)
	}
	if active := replay(recs); len(active) != 1 {
		t.Errorf("stop, resume, stop: %d active", len(active))
	}
	if active := replay(recs[:2]); len(active) != 0 {
		t.Errorf("stop, resume: %d active", len(active))
	}
	if recs, err := ParseStops("s", nil); err != nil || len(recs) != 0 {
		t.Errorf("empty file: %v, %v", recs, err)
	}
}

func TestStopLogAppend(t *testing.T) {
	path := filepath.Join(t.TempDir(), "state", "stops.jsonl")
	if _, err := LoadStops(path); err != nil {
		t.Fatalf("a missing file is an empty log: %v", err)
	}
	os.Mkdir(filepath.Dir(path), 0o755)
	l, err := LoadStops(path)
	if err != nil {
		t.Fatal(err)
	}
	at := time.Date(2026, 11, 23, 10, 0, 0, 0, time.UTC)
	stop := StopRecord{Op: OpStop, Experiment: "e1", Variant: "lints", Time: at}
	if err := l.Append(stop); err != nil {
		t.Fatal(err)
	}
	if err := l.Append(stop); !errors.Is(err, ErrAlreadyStopped) {
		t.Errorf("second stop: %v", err)
	}
	resume := StopRecord{Op: OpResume, Experiment: "e1", Variant: "other", Time: at}
	if err := l.Append(resume); !errors.Is(err, ErrNotStopped) {
		t.Errorf("resume of a running variant: %v", err)
	}
	if err := l.Append(StopRecord{Op: OpStop, Experiment: "e1", Variant: "x"}); err == nil || !strings.Contains(err.Error(), "time is required") {
		t.Errorf("record without time: %v", err)
	}
	if !l.IsStopped(VariantID{"e1", "lints"}) {
		t.Error("not stopped after Append")
	}
	resume.Variant = "lints"
	if err := l.Append(resume); err != nil {
		t.Fatal(err)
	}
	if l.IsStopped(VariantID{"e1", "lints"}) || len(l.Active()) != 0 {
		t.Error("still stopped after resume")
	}
	if err := l.Close(); err != nil {
		t.Fatal(err)
	}
	data, _ := os.ReadFile(path)
	if lines := strings.Split(strings.TrimSuffix(string(data), "\n"), "\n"); len(lines) != 2 {
		t.Fatalf("file holds %d lines, want 2 (refused appends write nothing):\n%s", len(lines), data)
	}
	l, err = LoadStops(path)
	if err != nil || len(l.Active()) != 0 {
		t.Fatalf("reloaded: %v, %v", l.Active(), err)
	}
}

func TestLoadStopsNamesFileAndLine(t *testing.T) {
	path := filepath.Join(t.TempDir(), "stops.jsonl")
	os.WriteFile(path, []byte(stopLine+"\n{\"op\":\"stop\"}\n"), 0o644)
	_, err := LoadStops(path)
	if err == nil || err.Error() != path+":2: experiment name is required" {
		t.Fatalf("err = %v", err)
	}
}

// FuzzLoadStops: the stop-log parser never panics, names the file in every
// error, and what it accepts survives a write and a re-read unchanged.
func FuzzLoadStops(f *testing.F) {
	f.Add([]byte(stopLine + "\n" + resumeLine + "\n"))
	f.Fuzz(func(t *testing.T, data []byte) {
		recs, err := ParseStops("f.jsonl", data)
		if err != nil {
			if !strings.HasPrefix(err.Error(), "f.jsonl:") {
				t.Fatalf("error does not name the file and line: %v", err)
			}
			return
		}
		var out []byte
		for _, r := range recs {
			b, err := json.Marshal(r)
			if err != nil {
				t.Fatalf("accepted record does not encode: %+v: %v", r, err)
			}
			out = append(append(out, b...), '\n')
		}
		again, err := ParseStops("f.jsonl", out)
		if err != nil || len(again) != len(recs) {
			t.Fatalf("re-read: %d records, %v", len(again), err)
		}
		for i := range recs {
			a, b := recs[i], again[i]
			if !a.Time.Equal(b.Time) {
				t.Fatalf("record %d time %v became %v", i, a.Time, b.Time)
			}
			a.Time, b.Time = time.Time{}, time.Time{}
			if a != b {
				t.Fatalf("record %d: %+v became %+v", i, a, b)
			}
		}
		replay(recs)
	})
}
