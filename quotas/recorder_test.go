package quotas

import (
	"bytes"
	"compress/gzip"
	"context"
	"errors"
	"fmt"
	"math"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"sync"
	"testing"
	"time"
)

var day0 = time.Date(2026, 11, 1, 12, 0, 0, 0, time.UTC)

func newRec(t testing.TB, days, maxUserDays int) *Recorder {
	t.Helper()
	r, err := NewRecorder(RecorderConfig{Days: days, MaxUserDays: maxUserDays})
	if err != nil {
		t.Fatal(err)
	}
	return r
}

// Counts add up per user-day and (tier, endpoint); only the last Days days
// are kept.
func TestRecorderCountsUserDays(t *testing.T) {
	r := newRec(t, 3, 1000)
	for d := range 5 {
		at := day0.Add(time.Duration(d) * 24 * time.Hour)
		for i := range 10 {
			r.Record("free", "", fmt.Sprintf("k%d", i), int64(i+1), at)
			r.Record("free", "", fmt.Sprintf("k%d", i), 1, at.Add(time.Hour))
			r.Record("pro", "POST /v1/messages", fmt.Sprintf("k%d", i), 2, at)
		}
	}
	tab, err := r.Table(nil)
	if err != nil {
		t.Fatal(err)
	}
	rows := tab.Rows()
	if len(rows) != 3*20 {
		t.Fatalf("%d user-days, want 60 (3 days kept × 10 keys × 2 groups)", len(rows))
	}
	first := DayOf(day0) + 2
	for _, row := range rows {
		if row.Day < first {
			t.Fatalf("row %+v is older than the 3 days kept", row)
		}
		if row.Tier == "free" && row.Endpoint != AllEndpoints {
			t.Fatalf("a rule without a scope is recorded on %q, want %q", row.Endpoint, AllEndpoints)
		}
	}
	q, err := tab.Quotas(context.Background(), Window{After: first - 1, Through: first + 2}, 1)
	if err != nil {
		t.Fatal(err)
	}
	if len(q) != 2 || q[0].Quota != 11 || q[1].Quota != 2 {
		t.Fatalf("quotas %+v, want * 11 (free: k9's 10 + 1) and POST /v1/messages 2 (pro)", q)
	}
}

// Past MaxUserDays a day keeps a hash sample of keys, the same keys on
// every day, and the sample's percentile stays close to the whole's.
func TestRecorderSamplesUniformly(t *testing.T) {
	r := newRec(t, 3, 64*64) // 64 user-days per shard
	const keys = 40000
	for d := range 2 {
		for i := range keys {
			r.Record("free", "", fmt.Sprintf("key-%d", i), int64(1+i%1000), day0.Add(time.Duration(d)*24*time.Hour))
		}
	}
	if n := r.UserDays(); n > 2*64*64 {
		t.Fatalf("%d user-days kept, want at most %d", n, 2*64*64)
	}
	tab, err := r.Table(nil)
	if err != nil {
		t.Fatal(err)
	}
	byDay := map[Day]map[string]bool{}
	for _, row := range tab.Rows() {
		if byDay[row.Day] == nil {
			byDay[row.Day] = map[string]bool{}
		}
		byDay[row.Day][row.User] = true
	}
	d0, d1 := byDay[DayOf(day0)], byDay[DayOf(day0)+1]
	if len(d0) < 1000 || len(d0) != len(d1) {
		t.Fatalf("sampled %d and %d keys on the two days, want the same number, at least 1000", len(d0), len(d1))
	}
	for k := range d0 {
		if !d1[k] {
			t.Fatalf("key %s is sampled on one day and not the other", k)
		}
	}
	q, err := tab.Quotas(context.Background(), WindowUntil(DayOf(day0)+1, 2), 0.9)
	if err != nil {
		t.Fatal(err)
	}
	// The whole's p90 is 900.1; a uniform sample of ≥ 1000 keys lands
	// within a few percent.
	if len(q) != 1 || math.Abs(q[0].Quota-900) > 40 {
		t.Fatalf("sampled p90 %+v, want about 900", q)
	}
}

// Record is safe from many goroutines: the counts add up.
func TestRecorderConcurrent(t *testing.T) {
	r := newRec(t, 2, 100000)
	var wg sync.WaitGroup
	for range 8 {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for i := range 1000 {
				r.Record("free", "", fmt.Sprintf("k%d", i%50), 1, day0)
			}
		}()
	}
	wg.Wait()
	tab, _ := r.Table(nil)
	var sum int64
	for _, row := range tab.Rows() {
		sum += row.Requests
	}
	if sum != 8000 {
		t.Fatalf("%d requests recorded, want 8000", sum)
	}
}

// The state file round-trips the usage and the installed fit, and is
// sampled down when read into a smaller recorder.
func TestStateRoundTrip(t *testing.T) {
	r := newRec(t, 4, 10000)
	for i := range 3000 {
		r.Record("free", "", fmt.Sprintf("k%d", i), int64(i%97+1), day0)
		r.Record("pro", "GET /v1/reports", fmt.Sprintf("k%d", i), 3, day0.Add(24*time.Hour))
	}
	in := &Installed{At: day0, Window: WindowUntil(DayOf(day0), 2), Percentile: 0.99,
		Quotas: []Quota{{Tier: "free", Endpoint: AllEndpoints, Quota: 96.5, UserDays: 3000}}}
	var buf bytes.Buffer
	if err := WriteState(&buf, r, in); err != nil {
		t.Fatal(err)
	}
	back, gotIn, err := ReadState(bytes.NewReader(buf.Bytes()), RecorderConfig{Days: 4, MaxUserDays: 10000})
	if err != nil {
		t.Fatal(err)
	}
	if gotIn == nil || gotIn.Quotas[0] != in.Quotas[0] || !gotIn.At.Equal(in.At) || gotIn.Window != in.Window {
		t.Fatalf("installed %+v, want %+v", gotIn, in)
	}
	a, _ := r.Table(nil)
	b, _ := back.Table(nil)
	if fmt.Sprint(sortedRows(a)) != fmt.Sprint(sortedRows(b)) {
		t.Fatal("the usage read back differs from the usage written")
	}
	small, _, err := ReadState(bytes.NewReader(buf.Bytes()), RecorderConfig{Days: 4, MaxUserDays: 64 * 8})
	if err != nil {
		t.Fatal(err)
	}
	if n := small.UserDays(); n > 2*64*8 || n < 64 {
		t.Fatalf("read into a smaller recorder: %d user-days, want sampled down to at most %d", n, 2*64*8)
	}
}

func sortedRows(t *UsageTable) []string {
	var out []string
	for _, r := range t.Rows() {
		out = append(out, fmt.Sprint(r))
	}
	slices.Sort(out)
	return out
}

// Bad state files get clear errors wrapping ErrStateFile.
func TestStateBadInput(t *testing.T) {
	gz := func(s string) []byte {
		var b bytes.Buffer
		z := gzip.NewWriter(&b)
		z.Write([]byte(s))
		z.Close()
		return b.Bytes()
	}
	cases := map[string]struct {
		data []byte
		want string
	}{
		"not gzip":      {[]byte(`{"version":1,"groups":[]}`), "gzip: invalid header"},
		"not json":      {gz("nope"), "invalid character"},
		"version":       {gz(`{"version":7}`), "version 7, want 1"},
		"empty group":   {gz(`{"version":1,"groups":[["free",""]]}`), "group 0 has an empty endpoint"},
		"dup group":     {gz(`{"version":1,"groups":[["free","*"],["free","*"]]}`), "listed twice"},
		"bad shard":     {gz(`{"version":1,"groups":[["free","*"]],"days":[{"day":1,"shard":64,"thresh":1}]}`), "shard 64 is not in [0, 64)"},
		"bad group ref": {gz(`{"version":1,"groups":[["free","*"]],"days":[{"day":1,"shard":0,"thresh":18446744073709551615,"counts":[[3,64,1]]}]}`), "names group 3 of 1"},
		"wrong shard":   {gz(`{"version":1,"groups":[["free","*"]],"days":[{"day":1,"shard":0,"thresh":18446744073709551615,"counts":[[0,65,1]]}]}`), "is in shard 0, its key hash in 1"},
		"zero count":    {gz(`{"version":1,"groups":[["free","*"]],"days":[{"day":1,"shard":0,"thresh":18446744073709551615,"counts":[[0,64,0]]}]}`), "has 0 requests"},
		"above thresh":  {gz(`{"version":1,"groups":[["free","*"]],"days":[{"day":1,"shard":0,"thresh":10,"counts":[[0,64,1]]}]}`), "above the day's sample threshold"},
		"dup user-day":  {gz(`{"version":1,"groups":[["free","*"]],"days":[{"day":1,"shard":0,"thresh":18446744073709551615,"counts":[[0,64,1],[0,64,2]]}]}`), "repeats a user-day"},
		"dup day":       {gz(`{"version":1,"groups":[["free","*"]],"days":[{"day":1,"shard":0,"thresh":1},{"day":1,"shard":0,"thresh":1}]}`), "listed twice"},
		"bad quota":     {gz(`{"version":1,"installed":{"percentile":0.99,"quotas":[{"Endpoint":"*","Quota":-1}]}}`), "is -1, want a finite number"},
		"bad pct":       {gz(`{"version":1,"installed":{"percentile":2}}`), "percentile 2 is not in [0, 1]"},
	}
	for name, c := range cases {
		_, _, err := ReadState(bytes.NewReader(c.data), RecorderConfig{Days: 3, MaxUserDays: 1000})
		if !errors.Is(err, ErrStateFile) || !strings.Contains(err.Error(), c.want) {
			t.Errorf("%s: %v, want ErrStateFile with %q", name, err, c.want)
		}
	}
}

// FuzzQuotaState: ReadState never panics, and what it accepts writes back
// to a file it accepts again with the same user-days.
func FuzzQuotaState(f *testing.F) {
	r := newRec(f, 3, 1000)
	for i := range 50 {
		r.Record("free", "", fmt.Sprintf("k%d", i), int64(i+1), day0)
	}
	var buf bytes.Buffer
	if err := WriteState(&buf, r, &Installed{Percentile: 0.5, Quotas: []Quota{{Endpoint: "*", Quota: 3}}}); err != nil {
		f.Fatal(err)
	}
	f.Add(buf.Bytes())
	seeds, _ := filepath.Glob(filepath.Join("testdata", "state", "*.json.gz"))
	for _, s := range seeds {
		b, err := os.ReadFile(s)
		if err != nil {
			f.Fatal(err)
		}
		f.Add(b)
	}
	f.Fuzz(func(t *testing.T, data []byte) {
		c := RecorderConfig{Days: 3, MaxUserDays: 1000}
		rec, in, err := ReadState(bytes.NewReader(data), c)
		if err != nil {
			if !errors.Is(err, ErrStateFile) {
				t.Fatalf("error %v does not wrap ErrStateFile", err)
			}
			return
		}
		var out bytes.Buffer
		if err := WriteState(&out, rec, in); err != nil {
			t.Fatal(err)
		}
		again, _, err := ReadState(&out, c)
		if err != nil {
			t.Fatalf("a state written from an accepted one is refused: %v", err)
		}
		if again.UserDays() != rec.UserDays() {
			t.Fatalf("user-days %d after a round trip, want %d", again.UserDays(), rec.UserDays())
		}
	})
}

// Two instances' shares of the same keys merge into the usage one instance
// would have counted, sampled alike.
func TestMergedAddsInstancesUp(t *testing.T) {
	whole, a, b := newRec(t, 3, 64*64), newRec(t, 3, 64*64), newRec(t, 3, 64*64)
	for i := range 20000 {
		key := fmt.Sprintf("k%d", i)
		n := int64(1 + i%300)
		whole.Record("free", "", key, n, day0)
		a.Record("free", "", key, n/2, day0)
		b.Record("free", "", key, n-n/2, day0)
	}
	w, _ := whole.Table(nil)
	m, err := Merged(nil, a, b)
	if err != nil {
		t.Fatal(err)
	}
	// a holds fewer keys (n/2 is 0 for n = 1), so it may sample at a
	// higher threshold than b; the merge takes the lower of the two, and
	// the whole's may be lower still: compare on the keys both kept.
	got := map[string]int64{}
	for _, r := range m.Rows() {
		got[r.User] = r.Requests
	}
	common := 0
	for _, r := range w.Rows() {
		if n, ok := got[r.User]; ok {
			common++
			if n != r.Requests {
				t.Fatalf("user %s: merged %d requests, want %d", r.User, n, r.Requests)
			}
		}
	}
	if common < 1000 {
		t.Fatalf("only %d keys in both samples", common)
	}
}
