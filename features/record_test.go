package features

import (
	"bytes"
	"errors"
	"fmt"
	"math"
	"testing"
	"time"
)

// twoInstances returns two stores that each saw part of a key's traffic,
// and a reference store that saw all of it: a's requests every second with
// IPs 0..99, b's every 2 s with IPs 50..149, over 100 s.
func twoInstances(t *testing.T) (a, b, all *Store, end time.Time) {
	t.Helper()
	a, b, all = newTestStore(t, Config{}), newTestStore(t, Config{}), newTestStore(t, Config{})
	for i := range 100 {
		now := t0.Add(time.Duration(i) * time.Second)
		oa := Observation{ClientIP: fmt.Sprintf("192.0.2.%d", i)}
		a.Observe("k", oa, now)
		all.Observe("k", oa, now)
		if i%2 == 0 {
			ob := Observation{ClientIP: fmt.Sprintf("192.0.2.%d", 50+i)}
			b.Observe("k", ob, now)
			all.Observe("k", ob, now)
		}
	}
	return a, b, all, t0.Add(100 * time.Second)
}

func TestMergeRemoteRecord(t *testing.T) {
	a, b, all, end := twoInstances(t)
	rec, ok := a.Export("k", end)
	if !ok {
		t.Fatal("Export: key not held")
	}
	// b merges a's record a few seconds later, twice: the second merge
	// replaces the first.
	at := end.Add(3 * time.Second)
	for range 2 {
		if err := b.Merge("k", rec, at); err != nil {
			t.Fatal(err)
		}
	}
	got, _ := b.Snapshot("k", at)
	want, _ := all.Snapshot("k", at)
	for _, name := range []string{"rate_10s", "rate_1m", "rate_10m", "rate_1h", "distinct_ips"} {
		g, _ := got.Get(name)
		w, _ := want.Get(name)
		if !approx(g.Raw, w.Raw, 1e-5, 1e-9) {
			t.Errorf("%s after merge = %v, want %v (as if one instance saw everything)", name, g.Raw, w.Raw)
		}
	}
	// a's later traffic replaces, not adds to, what b holds of a.
	for i := range 10 {
		a.Observe("k", Observation{}, at.Add(time.Duration(i)*time.Millisecond))
		all.Observe("k", Observation{}, at.Add(time.Duration(i)*time.Millisecond))
	}
	later := at.Add(time.Second)
	rec2, _ := a.Export("k", later)
	if err := b.Merge("k", rec2, later); err != nil {
		t.Fatal(err)
	}
	if g, w := raw(t, b, "k", "rate_1m", later), raw(t, all, "k", "rate_1m", later); !approx(g, w, 1e-5, 0) {
		t.Errorf("rate_1m after a second record = %v, want %v", g, w)
	}
	// b's own export carries only its own requests.
	recB, _ := b.Export("k", later)
	onlyB := newTestStore(t, Config{})
	for i := 0; i < 100; i += 2 {
		onlyB.Observe("k", Observation{}, t0.Add(time.Duration(i)*time.Second))
	}
	recOnlyB, _ := onlyB.Export("k", later)
	for i := range recB.Requests {
		if !approx(float64(recB.Requests[i]), float64(recOnlyB.Requests[i]), 1e-5, 0) {
			t.Errorf("b exports %v requests in window %v, want its own %v", recB.Requests[i], Windows[i], recOnlyB.Requests[i])
		}
	}
	// The zero record clears the remote counters.
	if err := b.Merge("k", Record{}, later); err != nil {
		t.Fatal(err)
	}
	if g, w := raw(t, b, "k", "rate_1h", later), raw(t, onlyB, "k", "rate_1h", later); !approx(g, w, 1e-5, 0) {
		t.Errorf("rate_1h after merging the zero record = %v, want b's own %v", g, w)
	}
}

func TestRecordAdd(t *testing.T) {
	// Three instances; the third merges the sum of the other two.
	stores := []*Store{newTestStore(t, Config{}), newTestStore(t, Config{}), newTestStore(t, Config{})}
	all := newTestStore(t, Config{})
	for i := range 90 {
		now := t0.Add(time.Duration(i) * 700 * time.Millisecond)
		o := Observation{ClientIP: fmt.Sprintf("2001:db8::%x", i%40)}
		stores[i%3].Observe("k", o, now)
		all.Observe("k", o, now)
	}
	end := t0.Add(70 * time.Second)
	r0, _ := stores[0].Export("k", end.Add(-time.Second)) // exported at different times
	r1, _ := stores[1].Export("k", end)
	sum := Record{}.Add(r0).Add(r1)
	if sum != r1.Add(r0) {
		t.Error("Add is not commutative")
	}
	if sum.At != end.UnixMicro() || sum.FirstSeen != min(r0.FirstSeen, r1.FirstSeen) {
		t.Errorf("sum At %d FirstSeen %d, want the later At and the earlier FirstSeen", sum.At, sum.FirstSeen)
	}
	if err := stores[2].Merge("k", sum, end); err != nil {
		t.Fatal(err)
	}
	for _, name := range []string{"rate_10s", "rate_1h", "distinct_ips", "key_age"} {
		if g, w := raw(t, stores[2], "k", name, end), raw(t, all, "k", name, end); !approx(g, w, 1e-5, 1e-9) {
			t.Errorf("%s = %v, want %v", name, g, w)
		}
	}
}

func TestMergeUnknownKeyAndAge(t *testing.T) {
	s := newTestStore(t, Config{})
	first := t0.Add(-5 * time.Hour)
	rec := Record{At: t0.UnixMicro(), FirstSeen: first.UnixMicro(), Requests: [NumWindows]float32{1, 2, 3, 4}}
	if err := s.Merge("k", rec, t0); err != nil {
		t.Fatal(err)
	}
	if got := raw(t, s, "k", "key_age", t0); !approx(got, 5, 1e-9, 0) {
		t.Errorf("key_age = %v h, want 5 (the remote first-seen time)", got)
	}
	if got, want := raw(t, s, "k", "rate_1h", t0.Add(time.Minute)), 4*math.Exp(-1.0/60)/60; !approx(got, want, 1e-5, 0) {
		t.Errorf("rate_1h = %v, want %v", got, want)
	}
	// A record from a clock ahead of ours is taken as of now.
	ahead := Record{At: t0.Add(time.Hour).UnixMicro(), FirstSeen: t0.UnixMicro(), Requests: [NumWindows]float32{6, 6, 6, 6}}
	if err := s.Merge("k", ahead, t0); err != nil {
		t.Fatal(err)
	}
	if got := raw(t, s, "k", "rate_1m", t0); !approx(got, 6, 1e-6, 0) {
		t.Errorf("rate_1m = %v, want 6", got)
	}
}

func TestMergeRejectsInvalidRecord(t *testing.T) {
	s := newTestStore(t, Config{})
	s.Observe("k", Observation{}, t0)
	before := s.Vector("k", t0, nil)
	tests := map[string]Record{
		"NaN count":        {At: 1, Requests: [NumWindows]float32{float32(math.NaN())}},
		"negative count":   {At: 1, Requests: [NumWindows]float32{0, -1}},
		"infinite count":   {At: 1, Requests: [NumWindows]float32{0, 0, 0, float32(math.Inf(1))}},
		"huge count":       {At: 1, Requests: [NumWindows]float32{1e30}},
		"first after last": {At: 1, FirstSeen: 2},
		"after year 9999":  {At: math.MaxInt64, FirstSeen: 1},
		"before year 1":    {At: 1, FirstSeen: math.MinInt64},
	}
	for name, rec := range tests {
		t.Run(name, func(t *testing.T) {
			err := s.Merge("k", rec, t0)
			if !errors.Is(err, ErrInvalidRecord) {
				t.Fatalf("Merge = %v, want ErrInvalidRecord", err)
			}
			if after := s.Vector("k", t0, nil); fmt.Sprint(after) != fmt.Sprint(before) {
				t.Errorf("a refused record changed the vector: %v → %v", before, after)
			}
		})
	}
}

func TestRecordBinaryRoundTrip(t *testing.T) {
	a, _, _, end := twoInstances(t)
	rec, _ := a.Export("k", end)
	b, err := rec.MarshalBinary()
	if err != nil {
		t.Fatal(err)
	}
	if len(b) != RecordSize {
		t.Fatalf("marshalled %d bytes, want %d", len(b), RecordSize)
	}
	var got Record
	if err := got.UnmarshalBinary(b); err != nil {
		t.Fatal(err)
	}
	if got != rec {
		t.Errorf("round trip: %+v, want %+v", got, rec)
	}
	prefix := []byte("key:")
	app, _ := rec.AppendBinary(prefix)
	if !bytes.Equal(app[len(prefix):], b) || !bytes.Equal(app[:len(prefix)], prefix) {
		t.Error("AppendBinary differs from MarshalBinary")
	}
}

func TestRecordUnmarshalErrors(t *testing.T) {
	good, _ := Record{At: 10, FirstSeen: 5, Requests: [NumWindows]float32{1, 2, 3, 4}}.MarshalBinary()
	with := func(f func(b []byte)) []byte {
		b := bytes.Clone(good)
		f(b)
		return b
	}
	tests := map[string]struct {
		data []byte
		want error
	}{
		"empty":           {data: nil, want: ErrRecordLength},
		"short":           {data: good[:RecordSize-1], want: ErrRecordLength},
		"long":            {data: append(bytes.Clone(good), 0), want: ErrRecordLength},
		"version 0":       {data: with(func(b []byte) { b[0] = 0 }), want: ErrRecordVersion},
		"version 1":       {data: with(func(b []byte) { b[0] = 1 }), want: ErrRecordVersion},
		"version 3":       {data: with(func(b []byte) { b[0] = 3 }), want: ErrRecordVersion},
		"reserved byte":   {data: with(func(b []byte) { b[5] = 1 }), want: ErrInvalidRecord},
		"NaN count":       {data: with(func(b []byte) { copy(b[24:], []byte{0, 0, 0xc0, 0x7f}) }), want: ErrInvalidRecord},
		"negative count":  {data: with(func(b []byte) { b[27] |= 0x80 }), want: ErrInvalidRecord},
		"first after at":  {data: with(func(b []byte) { b[16] = 11 }), want: ErrInvalidRecord},
		"at out of range": {data: with(func(b []byte) { b[15] = 0x7f }), want: ErrInvalidRecord},
	}
	for name, tc := range tests {
		t.Run(name, func(t *testing.T) {
			r := Record{At: 99}
			err := r.UnmarshalBinary(tc.data)
			if !errors.Is(err, tc.want) {
				t.Fatalf("UnmarshalBinary = %v, want %v", err, tc.want)
			}
			if r != (Record{At: 99}) {
				t.Error("a failed UnmarshalBinary changed the record")
			}
		})
	}
}

// FuzzRecordUnmarshal: any input is either refused with one of the
// documented errors, or is a valid record that re-encodes to the same
// bytes and merges into a store without breaking its vectors.
func FuzzRecordUnmarshal(f *testing.F) {
	good, _ := Record{At: t0.UnixMicro(), FirstSeen: t0.UnixMicro() - 1e9, Requests: [NumWindows]float32{1, 2, 3, 4}, IPs: [HLLBytes]byte{0x21, 0xf3}}.MarshalBinary()
	f.Add(good)
	f.Add([]byte{})
	f.Add(make([]byte, RecordSize))
	s, err := NewStore(Config{Shards: 1})
	if err != nil {
		f.Fatal(err)
	}
	f.Fuzz(func(t *testing.T, data []byte) {
		var r Record
		err := r.UnmarshalBinary(data)
		if err != nil {
			if !errors.Is(err, ErrRecordLength) && !errors.Is(err, ErrRecordVersion) && !errors.Is(err, ErrInvalidRecord) {
				t.Fatalf("undocumented error %v", err)
			}
			return
		}
		again, err := r.MarshalBinary()
		if err != nil || !bytes.Equal(again, data) {
			t.Fatalf("re-encoding gives %x, %v; want %x", again, err, data)
		}
		if err := s.Merge("k", r, t0); err != nil {
			t.Fatalf("Merge of a decoded record: %v", err)
		}
		checkVector(t, s.Vector("k", t0, nil), "after merge")
		checkVector(t, s.ObserveAndVector("k", Observation{}, t0.Add(time.Second), nil), "after merge and observe")
		sum := r.Add(r)
		if err := sum.Validate(); err != nil {
			t.Fatalf("the sum of valid records is invalid: %v", err)
		}
	})
}
