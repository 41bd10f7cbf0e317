package features

import (
	"fmt"
	"math"
	"testing"
	"time"
)

var tv2 = time.Date(2026, 11, 20, 0, 0, 0, 0, time.UTC)

// rate_change is 0 for a key at its own pace, new or old, and rises when a
// key that was slow for a day speeds up (a sleeper, a compromised key).
func TestRateChange(t *testing.T) {
	s, _ := NewStore(Config{IdleTTL: 72 * time.Hour})
	o := Observation{Tier: TierFree}
	// A new key, 10 requests a minute for 30 minutes: no change yet.
	s.ObserveN("new", o, 300, 30*time.Minute, tv2.Add(30*time.Minute))
	if c := raw(t, s, "new", "rate_change", tv2.Add(30*time.Minute)); math.Abs(c) > 0.5 {
		t.Errorf("a new key at a steady pace: rate_change %.2f, want about 0", c)
	}
	// Two days at 1 a minute, then an hour at 30 a minute.
	for h := range 48 {
		s.ObserveN("sleeper", o, 60, time.Hour, tv2.Add(time.Duration(h+1)*time.Hour))
	}
	at := tv2.Add(48 * time.Hour)
	if c := raw(t, s, "sleeper", "rate_change", at); math.Abs(c) > 0.3 {
		t.Errorf("two steady days: rate_change %.2f, want about 0", c)
	}
	// 1440·(1−e⁻²) decayed requests over 1440 min.
	if d := raw(t, s, "sleeper", "rate_1d", at); math.Abs(d-(1-math.Exp(-2))) > 0.02 {
		t.Errorf("rate_1d after two days at 1/min: %.3f, want %.3f", d, 1-math.Exp(-2))
	}
	s.ObserveN("sleeper", o, 1800, time.Hour, at.Add(time.Hour))
	if c := raw(t, s, "sleeper", "rate_change", at.Add(time.Hour)); c < 3 {
		t.Errorf("an hour at 30× its pace: rate_change %.2f, want above 3 (log2)", c)
	}
	v := s.Vector("sleeper", at.Add(time.Hour), nil)
	if got := v[idxRateChange]; got < 0.75 || got > 1 {
		t.Errorf("scaled rate_change %.2f, want in [0.75, 1]", got)
	}
}

// cohort_rate and cohort_ips place a key among its tier's keys folded in
// the last hour; 0.5 before there are enough.
func TestCohorts(t *testing.T) {
	s, _ := NewStore(Config{})
	vec := func(key string, n int64, ips int, tier Tier, at time.Time) []float64 {
		for i := range ips {
			s.ObserveN(key, Observation{Tier: tier, ClientIP: fmt.Sprintf("10.0.%d.%d", i/250, i%250)}, max(1, n/int64(ips)), time.Hour, at)
		}
		return s.Vector(key, at, nil)
	}
	at := tv2.Add(time.Hour)
	if q := vec("first", 60, 1, TierFree, at)[idxCohortRate]; q != 0.5 {
		t.Fatalf("an empty cohort: %v, want 0.5", q)
	}
	for i := range 200 {
		s.Fold(vec(fmt.Sprintf("k%d", i), int64(60*(i+1)), 1+i/20, TierFree, at), at)
	}
	s.Fold(vec("other", 1, 1, TierPro, at), at)
	slow := vec("slow", 30, 1, TierFree, at)
	fast := vec("fast", 60*400, 40, TierFree, at)
	if slow[idxCohortRate] > 0.05 || fast[idxCohortRate] < 0.99 {
		t.Errorf("cohort_rate: slow %.3f, fast %.3f; want near 0 and near 1", slow[idxCohortRate], fast[idxCohortRate])
	}
	if fast[idxCohortIPs] < 0.9 || slow[idxCohortIPs] > 0.1 {
		t.Errorf("cohort_ips: slow %.3f, fast %.3f; want near 0 and near 1", slow[idxCohortIPs], fast[idxCohortIPs])
	}
	mid := vec("mid", 60*100, 5, TierFree, at)
	if q := mid[idxCohortRate]; math.Abs(q-0.5) > 0.08 {
		t.Errorf("the median key: cohort_rate %.3f, want about 0.5", q)
	}
	// Pro has one key folded: too few to say.
	if q := vec("pro2", 60, 1, TierPro, at)[idxCohortRate]; q != 0.5 {
		t.Errorf("a tier with one key: %v, want 0.5", q)
	}
	// A day later the folds have decayed away: the next fold rebuilds
	// the cohort, which now has too few keys again.
	later := at.Add(24 * time.Hour)
	s.Fold(vec("late", 60, 1, TierFree, later), later)
	if q := vec("late2", 60, 1, TierFree, later)[idxCohortRate]; q != 0.5 {
		t.Errorf("a day after the folds: %v, want 0.5 (decayed below the minimum)", q)
	}
}

// A label sets label_state; an abusive one makes the key's last address
// suspect, and another key seen from it takes half the weight, decaying.
func TestLabelStateAndSuspicion(t *testing.T) {
	s, _ := NewStore(Config{IdleTTL: 72 * time.Hour})
	s.Observe("bad", Observation{ClientIP: "198.51.100.9"}, tv2)
	s.Observe("good", Observation{ClientIP: "192.0.2.1"}, tv2)
	s.Label("bad", true, 0, tv2.Add(time.Minute))
	s.Label("good", false, 0, tv2.Add(time.Minute))
	if v := raw(t, s, "bad", "label_state", tv2.Add(time.Minute)); v != 1 {
		t.Errorf("abusive: label_state %v, want 1", v)
	}
	if v := raw(t, s, "good", "label_state", tv2.Add(time.Minute)); v != -1 {
		t.Errorf("abusive: false: label_state %v, want -1", v)
	}
	if v := raw(t, s, "bad", "label_state", tv2.Add(24*time.Hour+time.Minute)); math.Abs(v-math.Exp(-1)) > 1e-3 {
		t.Errorf("a day later: label_state %v, want 1/e", v)
	}
	s.Observe("neighbour", Observation{ClientIP: "198.51.100.9"}, tv2.Add(2*time.Minute))
	s.Observe("stranger", Observation{ClientIP: "203.0.113.5"}, tv2.Add(2*time.Minute))
	if v := raw(t, s, "neighbour", "ip_suspicion", tv2.Add(2*time.Minute)); math.Abs(v-0.5) > 1e-3 {
		t.Errorf("a key on the labelled key's address: ip_suspicion %v, want 0.5", v)
	}
	if v := raw(t, s, "stranger", "ip_suspicion", tv2.Add(2*time.Minute)); v != 0 {
		t.Errorf("a key elsewhere: ip_suspicion %v, want 0", v)
	}
	// Past a day the address is no longer suspect.
	s.Observe("late", Observation{ClientIP: "198.51.100.9"}, tv2.Add(25*time.Hour))
	if v := raw(t, s, "late", "ip_suspicion", tv2.Add(25*time.Hour)); v != 0 {
		t.Errorf("a day after the label: ip_suspicion %v, want 0", v)
	}
	// The table is bounded.
	for i := range maxSuspects + 10 {
		s.suspects.mark(uint32(i+1), 1, micros(tv2))
	}
	if n := s.suspects.n.Load(); n != maxSuspects {
		t.Errorf("%d suspect addresses, want the bound %d", n, maxSuspects)
	}
}
