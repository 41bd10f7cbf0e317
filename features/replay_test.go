package features

import (
	"bufio"
	"compress/gzip"
	"math"
	"os"
	"regexp"
	"sort"
	"strings"
	"testing"
	"time"
)

// apacheLog is a gzipped copy of ../shared/data/apache_access_2015.log,
// kept in the repository so the replay runs from any clone.
const apacheLog = "testdata/apache_access_2015.log.gz"

// logRequest is one line of an Apache combined log.
type logRequest struct {
	ip, endpoint, agent string
	at                  time.Time
}

// parseApacheLine reads the client IP, the time, the first path segment
// of the request and the user agent of a combined-format line. It is
// lenient: a missing agent or request path leaves those fields empty.
func parseApacheLine(line string) (logRequest, bool) {
	var r logRequest
	ip, rest, ok := strings.Cut(line, " ")
	if !ok || ip == "" {
		return r, false
	}
	r.ip = ip
	_, rest, ok = strings.Cut(rest, "[")
	if !ok {
		return r, false
	}
	stamp, rest, ok := strings.Cut(rest, "]")
	if !ok {
		return r, false
	}
	at, err := time.Parse("02/Jan/2006:15:04:05 -0700", stamp)
	if err != nil {
		return r, false
	}
	r.at = at
	quoted := strings.Split(rest, `"`)
	if len(quoted) > 1 {
		if f := strings.Fields(quoted[1]); len(f) >= 2 {
			path, _, _ := strings.Cut(f[1], "?")
			seg, _, _ := strings.Cut(strings.TrimPrefix(path, "/"), "/")
			r.endpoint = f[0] + " /" + seg
		}
	}
	if len(quoted) > 5 {
		r.agent = quoted[5]
	}
	return r, true
}

func loadApacheLog(t *testing.T) []logRequest {
	t.Helper()
	f, err := os.Open(apacheLog)
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	zr, err := gzip.NewReader(f)
	if err != nil {
		t.Fatal(err)
	}
	var reqs []logRequest
	bad := 0
	sc := bufio.NewScanner(zr)
	for sc.Scan() {
		if r, ok := parseApacheLine(sc.Text()); ok {
			reqs = append(reqs, r)
		} else {
			bad++
		}
	}
	if err := sc.Err(); err != nil {
		t.Fatal(err)
	}
	if len(reqs) < 9000 || bad > len(reqs)/100 {
		t.Fatalf("parsed %d lines, %d unparsable", len(reqs), bad)
	}
	return reqs
}

func TestParseApacheLine(t *testing.T) {
	tests := map[string]struct {
		line string
		want logRequest
		ok   bool
	}{
		"full": {
			line: `83.149.9.216 - - [17/May/2015:10:05:03 +0000] "GET /presentations/logstash/kibana.png HTTP/1.1" 200 203023 "http://semicomplete.com/" "Mozilla/5.0 (Macintosh)"`,
			want: logRequest{ip: "83.149.9.216", endpoint: "GET /presentations", agent: "Mozilla/5.0 (Macintosh)", at: time.Date(2015, 5, 17, 10, 5, 3, 0, time.UTC)},
			ok:   true,
		},
		"query on root": {
			line: `1.2.3.4 - - [20/May/2015:21:05:15 +0000] "GET /?flav=rss20 HTTP/1.1" 200 5 "-" "UniversalFeedParser/4.2"`,
			want: logRequest{ip: "1.2.3.4", endpoint: "GET /", agent: "UniversalFeedParser/4.2", at: time.Date(2015, 5, 20, 21, 5, 15, 0, time.UTC)},
			ok:   true,
		},
		"unterminated agent": {
			line: `46.118.127.106 - - [20/May/2015:12:05:17 +0000] "GET /scripts/x.py HTTP/1.1" 200 235 "-" "Mozilla/5.0 (compatible; Googlebot/2.1`,
			want: logRequest{ip: "46.118.127.106", endpoint: "GET /scripts", agent: "Mozilla/5.0 (compatible; Googlebot/2.1", at: time.Date(2015, 5, 20, 12, 5, 17, 0, time.UTC)},
			ok:   true,
		},
		"bad time": {line: `1.2.3.4 - - [yesterday] "GET / HTTP/1.1" 200 5`},
		"empty":    {line: ``},
	}
	for name, tc := range tests {
		t.Run(name, func(t *testing.T) {
			got, ok := parseApacheLine(tc.line)
			if ok != tc.ok || (ok && (got.ip != tc.want.ip || got.endpoint != tc.want.endpoint || got.agent != tc.want.agent || !got.at.Equal(tc.want.at))) {
				t.Errorf("parseApacheLine = %+v, %v; want %+v, %v", got, ok, tc.want, tc.ok)
			}
		})
	}
}

// TestReplayApacheLog replays four days of real traffic, client IP as the
// key, through ObserveAndVector, sweeping idle keys every 10 minutes of log
// time. Every vector must be valid, and the busiest crawlers must reach a
// higher 1 h rate than the median key; their peak 1 h rate must also agree
// with their busiest hour counted directly from the log.
func TestReplayApacheLog(t *testing.T) {
	reqs := loadApacheLog(t)
	s := newTestStore(t, Config{})
	i1h := CurrentSchema().Index("rate_1h")

	// Counted directly from the log.
	crawler := regexp.MustCompile(`(?i)bot|crawler|spider`)
	count := map[string]int{}
	crawls := map[string]bool{}
	times := map[string][]time.Time{}
	for _, r := range reqs {
		count[r.ip]++
		times[r.ip] = append(times[r.ip], r.at)
		if crawler.MatchString(r.agent) {
			crawls[r.ip] = true
		}
	}
	var crawlers []string
	for ip := range crawls {
		crawlers = append(crawlers, ip)
	}
	sort.Slice(crawlers, func(i, j int) bool { return count[crawlers[i]] > count[crawlers[j]] })
	top := crawlers[:3]

	peak := map[string]float64{}    // peak scaled rate_1h per key
	peakRaw := map[string]float64{} // peak raw rate_1h of the top crawlers
	dst := make([]float64, 0, Dim)
	lastSweep := reqs[0].at
	for _, r := range reqs {
		if r.at.Sub(lastSweep) >= 10*time.Minute {
			s.Sweep(r.at)
			lastSweep = r.at
		}
		dst = s.ObserveAndVector(r.ip, Observation{Endpoint: r.endpoint, ClientIP: r.ip, Cost: 1}, r.at, dst[:0])
		checkVector(t, dst, r.ip+" at "+r.at.String())
		peak[r.ip] = max(peak[r.ip], dst[i1h])
		if count[r.ip] >= count[top[len(top)-1]] {
			peakRaw[r.ip] = max(peakRaw[r.ip], raw(t, s, r.ip, "rate_1h", r.at))
		}
	}
	if len(peak) != len(count) {
		t.Fatalf("%d keys seen, %d in the log", len(peak), len(count))
	}
	var peaks []float64
	for _, p := range peak {
		peaks = append(peaks, p)
	}
	sort.Float64s(peaks)
	median := peaks[len(peaks)/2]
	for _, ip := range top {
		t.Logf("crawler %s: %d requests, peak rate_1h %.3f (median key %.3f)", ip, count[ip], peak[ip], median)
		if peak[ip] <= median {
			t.Errorf("crawler %s (%d requests): peak rate_1h %v, not above the median key's %v", ip, count[ip], peak[ip], median)
		}
		// A decayed counter holds at least e⁻¹ of every request of the
		// last hour, and at most the hourly counts summed with weights
		// e⁰, e⁻¹, e⁻², …: 1/(1-e⁻¹) times the busiest hour.
		busiest := busiestHour(times[ip])
		lo, hi := float64(busiest)*math.Exp(-1)/60, float64(busiest)/(1-math.Exp(-1))/60
		if p := peakRaw[ip]; p < lo || p > hi {
			t.Errorf("crawler %s: peak rate_1h %.3f req/min, want within [%.3f, %.3f] for a busiest hour of %d requests", ip, p, lo, hi, busiest)
		}
	}
	if s.Len() == 0 || s.Len() >= len(count) {
		t.Errorf("%d keys held at the end of the log, of %d: idle keys were not evicted", s.Len(), len(count))
	}
}

// busiestHour returns the largest number of times within one hour.
func busiestHour(ts []time.Time) int {
	ts = append([]time.Time(nil), ts...)
	sort.Slice(ts, func(i, j int) bool { return ts[i].Before(ts[j]) })
	best, j := 0, 0
	for i, t := range ts {
		for ts[j].Before(t.Add(-time.Hour)) {
			j++
		}
		best = max(best, i-j+1)
	}
	return best
}
