package serving

import (
	"fmt"
	"io"
	"math"
	"net/http"
	"path/filepath"
	"strings"
	"sync/atomic"
	"testing"
	"time"

	"github.com/devflow/flowguard/internal/config"
	"github.com/devflow/flowguard/internal/testredis"
	"github.com/devflow/flowguard/pipeline"
	"github.com/devflow/flowguard/quotas"
)

const fittedPolicies = `
quotas:
  lookback_days: 3
  test_days: 1
  min_user_days: %d
  state_file: %s
policies:
  tiers:
    free:
      rate: 1000000      # the per-minute window never throttles here
      period: 1m
      daily_quota: fitted
  tenants:
    pinned:
      tier: free
      daily_quota: 50
`

// fakeDay is a clock the test moves a day at a time.
type fakeDay struct{ at atomic.Int64 }

func (c *fakeDay) now() time.Time { return time.Unix(0, c.at.Load()) }
func (c *fakeDay) next()          { c.at.Add(int64(24 * time.Hour)) }
func newFakeDay() *fakeDay {
	c := &fakeDay{}
	c.at.Store(time.Date(2026, 11, 22, 12, 0, 0, 0, time.UTC).UnixNano())
	return c
}
func (c *fakeDay) day() quotas.Day { return quotas.DayOf(c.now()) }

// useDay sends one day of usage: key k0…k(n-1) asks for scale×(i+1)
// requests, as one request of that cost.
func useDay(t *testing.T, ts *testServer, n int, scale float64) {
	t.Helper()
	var items []string
	flush := func() {
		if len(items) == 0 {
			return
		}
		if resp, b := post(t, ts.URL+"/v1/decide/batch", "["+strings.Join(items, ",")+"]"); resp.StatusCode != 200 {
			t.Fatalf("batch: %d %s", resp.StatusCode, b)
		}
		items = items[:0]
	}
	for i := range n {
		items = append(items, fmt.Sprintf(`{"key":"k%d","cost":%d}`, i, int(scale*float64(i+1))))
		if len(items) == 500 {
			flush()
		}
	}
	flush()
}

func check(t *testing.T, ts *testServer, key, tenant string, cost int) *http.Response {
	t.Helper()
	req, _ := http.NewRequest("GET", ts.URL+"/v1/check", nil)
	req.Header.Set("X-Api-Key", key)
	req.Header.Set("X-Tenant", tenant)
	req.Header.Set("X-Original-Method", "GET")
	req.Header.Set("X-Original-URI", "/v1/things")
	req.Header.Set("X-Cost", fmt.Sprint(cost))
	resp, err := client.Do(req)
	if err != nil {
		t.Fatal(err)
	}
	resp.Body.Close()
	return resp
}

func getQuotas(t *testing.T, ts *testServer, refit bool) quotasView {
	t.Helper()
	var resp *http.Response
	var b []byte
	if refit {
		resp, b = post(t, ts.URL+"/v1/quotas/refit", "")
	} else {
		r, err := client.Get(ts.URL + "/v1/quotas")
		if err != nil {
			t.Fatal(err)
		}
		defer r.Body.Close()
		if b, err = io.ReadAll(r.Body); err != nil {
			t.Fatal(err)
		}
		resp = r
	}
	if resp.StatusCode != 200 {
		t.Fatalf("quotas: %d %s", resp.StatusCode, b)
	}
	var v quotasView
	if err := jsonUnmarshal(b, &v); err != nil {
		t.Fatalf("%v: %s", err, b)
	}
	return v
}

// Over sockets (issue 17 item 1): serving counts its own usage, the refit
// installs a good fit (the metric, the dashboard's gauges) and enforces it
// as a second window, refuses a fit whose backtest rate-limits more than
// 3% (the quotas before stay, flowguard_quota_refit_refused is 1 — the
// alert's expression), and the state file carries both across a restart.
func TestFittedDailyQuotaRefit(t *testing.T) {
	state := filepath.Join(t.TempDir(), "quotas.json.gz")
	clock := newFakeDay()
	cfg := mustParse(t, fmt.Sprintf(fittedPolicies, 100, state))
	ts := startServerOpts(t, cfg, Options{Clock: clock.now})

	// Four days of 60 keys asking for 1…60 requests a day.
	for range 4 {
		useDay(t, ts, 60, 1)
		clock.next()
	}
	if v := getQuotas(t, ts, false); v.Installed != nil || !v.Enabled || v.UserDays != 240 {
		t.Fatalf("before any refit: %+v, want nothing installed, enabled, 240 user-days", v)
	}
	if r := check(t, ts, "k_new", "", 5000); r.StatusCode != 200 {
		t.Fatalf("before any fit a day of 5000 requests: %d, want 200 (no daily window yet)", r.StatusCode)
	}
	// k59, the heaviest, is labelled abusive: its user-days are left out.
	postLabel(t, ts, "lq", "k59", true, 0.5)
	v := getQuotas(t, ts, true)
	want := quotas.PercentileCont(threeDays(59), 0.99) // 59: three user-days of each of 1…59
	if v.LastRefit.Result != quotas.RefitInstalled || v.Installed == nil || len(v.Installed.Quotas) != 1 ||
		math.Abs(v.Installed.Quotas[0].Quota-want) > 1e-9 || v.Installed.Quotas[0].Endpoint != quotas.AllEndpoints {
		t.Fatalf("refit: %+v %+v, want free * %v installed", v.LastRefit, v.Installed, want)
	}
	if got := metricValue(t, ts, `flowguard_quota_refits_total{result="installed"}`); got != 1 {
		t.Errorf("installed refits %v, want 1", got)
	}
	if got := metricValue(t, ts, `flowguard_daily_quota{endpoint="*",tier="free"}`); math.Abs(got-want) > 1e-9 {
		t.Errorf("flowguard_daily_quota %v, want %v", got, want)
	}
	if got := metricValue(t, ts, `flowguard_quota_refit_refused`); got != 0 {
		t.Errorf("refused %v, want 0", got)
	}

	// The quota is enforced beside the rate: 59 a day, then 429 with the
	// daily window named in the RateLimit fields.
	if r := check(t, ts, "k_fresh", "", 59); r.StatusCode != 200 ||
		!strings.Contains(r.Header.Get("RateLimit-Policy"), `"free-day";q=59;w=86400`) {
		t.Fatalf("59 requests: %d %q, want 200 and the daily policy", r.StatusCode, r.Header.Get("RateLimit-Policy"))
	}
	r := check(t, ts, "k_fresh", "", 1)
	if r.StatusCode != 429 || r.Header.Get("X-Flowguard-Decision") != pipeline.ActionThrottle ||
		!strings.HasPrefix(r.Header.Get("RateLimit"), `"free-day";r=0;`) || r.Header.Get("Retry-After") == "" {
		t.Fatalf("the 60th request: %d %v, want 429 with the daily window's RateLimit and a Retry-After", r.StatusCode, r.Header)
	}
	if e := explainOf(t, ts, "k_fresh", ""); math.Abs(e.DailyQuota-want) > 1e-9 {
		t.Errorf("explain: daily_quota %v, want the installed %v", e.DailyQuota, want)
	}
	// A pinned quota needs no fit.
	if r := check(t, ts, "k_pin", "pinned", 50); r.StatusCode != 200 {
		t.Fatalf("pinned: 50 requests %d, want 200", r.StatusCode)
	}
	if r := check(t, ts, "k_pin", "pinned", 1); r.StatusCode != 429 {
		t.Fatalf("pinned: the 51st request %d, want 429", r.StatusCode)
	}

	// Usage triples for a day: the fit on the days before rate-limits far
	// more than 3% of that day's legitimate keys, so it is refused.
	useDay(t, ts, 60, 3)
	clock.next()
	v = getQuotas(t, ts, true)
	if v.LastRefit.Result != quotas.RefusedOverThreshold || len(v.LastRefit.Problems) == 0 ||
		math.Abs(v.Installed.Quotas[0].Quota-want) > 1e-9 {
		t.Fatalf("after a tripled day: %+v, installed %+v; want refused over_threshold, the quota before kept", v.LastRefit, v.Installed)
	}
	if got := metricValue(t, ts, `flowguard_quota_refit_refused`); got != 1 {
		t.Errorf("refused %v after a refused refit, want 1", got)
	}
	if got := metricValue(t, ts, `flowguard_quota_refits_total{result="over_threshold"}`); got != 1 {
		t.Errorf("over_threshold refits %v, want 1", got)
	}
	if got := metricValue(t, ts, `flowguard_quota_backtest_throttled_fraction{endpoint="*",tier="free"}`); got < 0.5 {
		t.Errorf("backtest fraction %v, want most of the tripled day", got)
	}

	// A restart keeps the usage and the installed quota.
	ts.stop(t)
	ts.Server.Close()
	ts = startServerOpts(t, mustParse(t, fmt.Sprintf(fittedPolicies, 100, state)), Options{Clock: clock.now})
	if v := getQuotas(t, ts, false); v.Installed == nil || math.Abs(v.Installed.Quotas[0].Quota-want) > 1e-9 || v.UserDays < 300 {
		t.Fatalf("after a restart: %+v, want the quota and the usage back", v)
	}
	if r := check(t, ts, "k_after", "", 60); r.StatusCode != 429 {
		t.Fatalf("after a restart 60 requests of a fresh key: %d, want 429 (the restored quota)", r.StatusCode)
	}
}

// Too little data: a refit on a handful of keys is refused and says why.
func TestFittedDailyQuotaTooLittleData(t *testing.T) {
	clock := newFakeDay()
	ts := startServerOpts(t, mustParse(t, fmt.Sprintf(fittedPolicies, 1000, filepath.Join(t.TempDir(), "q.gz"))), Options{Clock: clock.now})
	for range 5 {
		useDay(t, ts, 20, 1)
		clock.next()
	}
	v := getQuotas(t, ts, true)
	if v.LastRefit.Result != quotas.RefusedTooLittleData || v.Installed != nil ||
		!strings.Contains(strings.Join(v.LastRefit.Problems, "\n"), "60 non-malicious user-days, fewer than the expected minimum of 1000") {
		t.Fatalf("%+v, want refused too_little_data with the count", v.LastRefit)
	}
	if got := metricValue(t, ts, `flowguard_quota_refits_total{result="too_little_data"}`); got != 1 {
		t.Errorf("too_little_data refits %v, want 1", got)
	}
	if got := metricValue(t, ts, `flowguard_quota_refit_refused`); got != 1 {
		t.Errorf("refused %v, want 1", got)
	}
}

// threeDays is 1…n three times, sorted.
func threeDays(n int) []float64 {
	var v []float64
	for i := range n {
		v = append(v, float64(i+1), float64(i+1), float64(i+1))
	}
	return v
}

// With redis:, every instance's refit fits on all instances' usage
// (quotas.share_every; a refit shares first): two instances that each saw
// half of every key's requests install the quota one instance seeing all
// of them would have, where each alone would fit one half as large.
func TestFittedDailyQuotaAcrossInstances(t *testing.T) {
	rs := testredis.Start(t)
	clock := newFakeDay()
	conf := func() *config.Loaded {
		return mustParse(t, fmt.Sprintf(fittedPolicies, 100, filepath.Join(t.TempDir(), "q.gz"))+
			fmt.Sprintf("redis:\n  addrs: [%q]\n  instances: 2\n", rs.Addr()))
	}
	a := startServerOpts(t, conf(), Options{Clock: clock.now, InstanceID: "a"})
	b := startServerOpts(t, conf(), Options{Clock: clock.now, InstanceID: "b"})
	for range 4 {
		useHalf(t, a, 60, 0)
		useHalf(t, b, 60, 1)
		clock.next()
	}
	want := quotas.PercentileCont(threeDays(60), 0.99)
	// b refits first, when a has shared nothing: on its half alone.
	if vb := getQuotas(t, b, true); vb.LastRefit.Instances != 1 || vb.Installed == nil || vb.Installed.Quotas[0].Quota > 0.6*want {
		t.Fatalf("b alone: %+v, installed %+v; want a fit on 1 instance about half of %v", vb.LastRefit, vb.Installed, want)
	}
	va := getQuotas(t, a, true)
	if va.LastRefit.Result != quotas.RefitInstalled || va.LastRefit.Instances != 2 || va.Installed == nil ||
		math.Abs(va.Installed.Quotas[0].Quota-want) > 1e-9 {
		t.Fatalf("a's refit: %+v, installed %+v; want %v fitted on 2 instances", va.LastRefit, va.Installed, want)
	}
	if vb := getQuotas(t, b, true); vb.Installed == nil || vb.Installed.Quotas[0].Quota != va.Installed.Quotas[0].Quota {
		t.Fatalf("b's second refit: %+v, want a's quota %v", vb.Installed, va.Installed.Quotas[0].Quota)
	}
}

// useHalf sends instance half of a day of keys k0…k(n-1): key i asks for
// i+1 requests in all, the first instance (half 0) sending the larger half.
func useHalf(t *testing.T, ts *testServer, n, half int) {
	t.Helper()
	var items []string
	for i := range n {
		c := (i + 1) / 2
		if half == 0 {
			c = i + 1 - c
		}
		if c > 0 {
			items = append(items, fmt.Sprintf(`{"key":"k%d","cost":%d}`, i, c))
		}
	}
	if resp, b := post(t, ts.URL+"/v1/decide/batch", "["+strings.Join(items, ",")+"]"); resp.StatusCode != 200 {
		t.Fatalf("batch: %d %s", resp.StatusCode, b)
	}
}
