package serving

import (
	"strconv"
	"testing"
)

// The ring grows by doubling up to its size, then wraps: get returns the
// last n decisions newest first at every length, and an evicted key has
// none.
func TestRecentLogGrowsThenWraps(t *testing.T) {
	const n = 10
	l := newRecentLog(n, 2)
	for i := range 25 {
		l.add("a", RecentDecision{DecisionID: strconv.Itoa(i)})
		got := l.get("a")
		want := min(i+1, n)
		if len(got) != want {
			t.Fatalf("after %d adds: %d decisions, want %d", i+1, len(got), want)
		}
		for j, d := range got {
			if d.DecisionID != strconv.Itoa(i-j) {
				t.Fatalf("after %d adds: decision %d is %s, want %d (newest first)", i+1, j, d.DecisionID, i-j)
			}
		}
		if c := cap(l.keys["a"].items); c > n {
			t.Fatalf("ring capacity %d above its size %d", c, n)
		}
	}
	if c := cap(l.keys["a"].items); c != n {
		t.Fatalf("a full ring has capacity %d, want %d", c, n)
	}
	l.add("b", RecentDecision{DecisionID: "b0"})
	if c := cap(l.keys["b"].items); c != 1 {
		t.Fatalf("a key with one decision holds room for %d", c)
	}
	l.add("c", RecentDecision{DecisionID: "c0"}) // evicts a, the oldest key
	if got := l.get("a"); len(got) != 0 {
		t.Fatalf("evicted key still has %d decisions", len(got))
	}
	if got := l.get("c"); len(got) != 1 || got[0].DecisionID != "c0" {
		t.Fatalf("c: %+v", got)
	}
}
