package quotas

import (
	"context"
	"fmt"
	"math"
	"strings"
	"testing"
	"time"
)

// usageDays records days of usage: keys legitimate keys with daily
// requests 1..keys (the same every day, times growth^day), and abusers keys
// at 10× the largest.
func usageDays(t *testing.T, days, keys int, growth float64, abusers int) *Recorder {
	t.Helper()
	r := newRec(t, 40, 1_000_000)
	scale := 1.0
	for d := range days {
		at := day0.Add(time.Duration(d) * 24 * time.Hour)
		for i := range keys {
			r.Record("free", "", fmt.Sprintf("k%d", i), int64(float64(i+1)*scale), at)
		}
		for i := range abusers {
			r.Record("free", "", fmt.Sprintf("bad%d", i), int64(10*keys), at)
		}
		scale *= growth
	}
	return r
}

func refitOn(t *testing.T, r *Recorder, today Day, malicious func(uint64) bool) *RefitResult {
	t.Helper()
	tab, err := r.Table(malicious)
	if err != nil {
		t.Fatal(err)
	}
	res, err := Refit(context.Background(), tab, RefitConfig{Today: today, Lookback: 7, TestDays: 1, Percentile: 0.99,
		Thresholds: AlertThresholds{MaxFraction: 0.03, MinTrainUserDays: 1000}})
	if err != nil {
		t.Fatal(err)
	}
	return res
}

// A steady week installs its p99; the labelled abusers are left out of it.
func TestRefitInstallsAGoodFit(t *testing.T) {
	r := usageDays(t, 8, 500, 1, 20)
	bad := map[uint64]bool{}
	for i := range 20 {
		bad[KeyHash(fmt.Sprintf("bad%d", i))] = true
	}
	res := refitOn(t, r, DayOf(day0)+8, func(h uint64) bool { return bad[h] })
	if res.Reason != RefitInstalled || res.Fit == nil || len(res.Problems) > 0 {
		t.Fatalf("refit %s %v, want installed", res.Reason, res.Problems)
	}
	// PERCENTILE_CONT(0.99) of 1..500 is 495.01.
	if q := res.Fit.Quotas; len(q) != 1 || q[0].Endpoint != AllEndpoints || math.Abs(q[0].Quota-495.01) > 1e-9 {
		t.Fatalf("quotas %+v, want * 495.01", q)
	}
	if res.Fit.Window != WindowUntil(DayOf(day0)+7, 7) {
		t.Fatalf("fitted on %s, want the 7 days through the last complete day", res.Fit.Window)
	}
	if f := res.Backtest.Total().Fraction; f > 0.011 {
		t.Fatalf("backtest rate-limited %.3f of legitimate user-days", f)
	}
	// Unlabelled, the abusers' user-days are fitted on: the quota rises.
	if res := refitOn(t, r, DayOf(day0)+8, nil); res.Fit.Quotas[0].Quota <= 495.01 {
		t.Fatalf("with the abusers counted as legitimate the quota is %v, want above 495.01", res.Fit.Quotas[0].Quota)
	}
}

// Too little data, and a backtest over the threshold (30%/day growth), are
// refused with the reason and the problem spelled out.
func TestRefitRefusesABadFit(t *testing.T) {
	res := refitOn(t, usageDays(t, 8, 100, 1, 0), DayOf(day0)+8, nil)
	if res.Reason != RefusedTooLittleData || res.Fit != nil {
		t.Fatalf("100 keys × 6 training days: %s, want %s", res.Reason, RefusedTooLittleData)
	}
	if len(res.Problems) != 1 || !strings.Contains(res.Problems[0], "fewer than the expected minimum of 1000") {
		t.Fatalf("problems %q", res.Problems)
	}
	res = refitOn(t, usageDays(t, 8, 500, 1.3, 0), DayOf(day0)+8, nil)
	if res.Reason != RefusedOverThreshold || res.Fit != nil {
		t.Fatalf("30%%/day growth: %s, want %s", res.Reason, RefusedOverThreshold)
	}
	if len(res.Problems) != 1 || !strings.Contains(res.Problems[0], "free *: quota") || !strings.Contains(res.Problems[0], "above 3.00%") {
		t.Fatalf("problems %q", res.Problems)
	}
	// No usage on the test day is too little data too.
	res = refitOn(t, usageDays(t, 6, 500, 1, 0), DayOf(day0)+8, nil)
	if res.Reason != RefusedTooLittleData {
		t.Fatalf("a test day without usage: %s, want %s", res.Reason, RefusedTooLittleData)
	}
}
