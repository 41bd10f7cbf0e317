package serving

import (
	"bufio"
	"bytes"
	"encoding/json"
	"fmt"
	"io"
	"net"
	"net/http"
	"regexp"
	"runtime"
	"strings"
	"testing"
	"time"
)

func TestDecideOverSocket(t *testing.T) {
	ts := startServer(t, mustParse(t, testPolicies))
	resp, body := post(t, ts.URL+"/v1/decide", `{"key":"k1","tenant":"nobody","endpoint":"GET /v1/things","region":"us-east-1","client_ip":"203.0.113.7"}`)
	if resp.StatusCode != 200 {
		t.Fatalf("status %d: %s", resp.StatusCode, body)
	}
	d := decode[wireDecision](t, body)
	want := wireDecision{Decision: "allow", Limit: 10, Remaining: 4, ResetMS: 100, Multiplier: 1, Propensity: 1, Variant: "static"}
	want.DecisionID = d.DecisionID
	if d.DecisionID == "" {
		t.Error("decision_id is empty")
	}
	if fmt.Sprint(d) != fmt.Sprint(want) {
		t.Errorf("decision\n got %+v\nwant %+v", d, want)
	}
	// Every contract field is on the wire, even the ones this issue leaves empty.
	var raw map[string]any
	json.Unmarshal(body, &raw)
	for _, f := range []string{"decision", "limit", "remaining", "reset_ms", "retry_after_ms", "multiplier", "arm", "propensity", "variant", "experiment", "model_version", "decision_id", "fallback", "reason"} {
		if _, ok := raw[f]; !ok {
			t.Errorf("response lacks %q", f)
		}
	}
	for h, want := range map[string]string{
		"RateLimit-Policy":    `"free";q=10;w=1`,
		"RateLimit":           `"free";r=4;t=1`,
		"RateLimit-Limit":     "10",
		"RateLimit-Remaining": "4",
		"RateLimit-Reset":     "1",
		"Content-Type":        "application/json",
	} {
		if got := resp.Header.Get(h); got != want {
			t.Errorf("%s = %q, want %q", h, got, want)
		}
	}
}

func TestBurstThenThrottleWithRetryAfter(t *testing.T) {
	ts := startServer(t, mustParse(t, testPolicies))
	var last wireDecision
	var resp *http.Response
	for i := range 6 {
		var body []byte
		resp, body = post(t, ts.URL+"/v1/decide", `{"key":"k_burst","tenant":"acme","endpoint":"POST /v1/payments"}`)
		last = decode[wireDecision](t, body)
		if i < 2 && last.Decision != "allow" {
			t.Fatalf("request %d: %+v, want allow within burst 2", i, last)
		}
	}
	if last.Decision != "throttle" || last.Reason != "budget_exhausted" || last.RetryAfterMS <= 0 || last.RetryAfterMS > 500 {
		t.Fatalf("after the burst: %+v, want throttle with retry_after_ms in (0, 500]", last)
	}
	if got := resp.Header.Get("Retry-After"); got != "1" {
		t.Errorf("Retry-After = %q, want 1", got)
	}
	if got := resp.Header.Get("RateLimit-Policy"); got != `"acme POST /v1/payments";q=2;w=1` {
		t.Errorf("RateLimit-Policy = %q", got)
	}
	// Another endpoint of the same key has its own budget: the tenant's.
	_, body := post(t, ts.URL+"/v1/decide", `{"key":"k_burst","tenant":"acme","endpoint":"GET /v1/balance"}`)
	if d := decode[wireDecision](t, body); d.Decision != "allow" || d.Limit != 100 {
		t.Fatalf("other endpoint: %+v, want allow under the enterprise budget", d)
	}
}

func TestCostAboveBurstNeverPasses(t *testing.T) {
	ts := startServer(t, mustParse(t, testPolicies))
	resp, body := post(t, ts.URL+"/v1/decide", `{"key":"k_big","cost":6}`)
	d := decode[wireDecision](t, body)
	if d.Decision != "throttle" || d.Reason != "cost_exceeds_burst" || d.RetryAfterMS != -1 {
		t.Fatalf("%+v, want a throttle that says the cost can never pass", d)
	}
	if resp.Header.Get("Retry-After") == "" {
		t.Error("no Retry-After on a throttle")
	}
}

func TestDenyAndAllowLists(t *testing.T) {
	ts := startServer(t, mustParse(t, testPolicies))
	_, body := post(t, ts.URL+"/v1/decide", `{"key":"k_denied","tenant":"acme"}`)
	if d := decode[wireDecision](t, body); d.Decision != "block" || d.Reason != "deny_list" {
		t.Fatalf("denied key: %+v", d)
	}
	_, body = post(t, ts.URL+"/v1/decide", `{"key":"k_allowed"}`)
	if d := decode[wireDecision](t, body); d.Decision != "allow" || d.Limit != 10 || d.Variant != "static" {
		t.Fatalf("allow-listed key: %+v, want the deterministic budget", d)
	}
}

func TestCheckForAuthRequest(t *testing.T) {
	ts := startServer(t, mustParse(t, testPolicies))
	check := func(method string, headers map[string]string) (*http.Response, wireDecision) {
		req, _ := http.NewRequest(method, ts.URL+"/v1/check", nil)
		for k, v := range headers {
			req.Header.Set(k, v)
		}
		resp, err := client.Do(req)
		if err != nil {
			t.Fatal(err)
		}
		defer resp.Body.Close()
		var d wireDecision
		json.NewDecoder(resp.Body).Decode(&d)
		return resp, d
	}
	pay := map[string]string{"X-Api-Key": "k_check", "X-Tenant": "acme", "X-Original-Method": "POST", "X-Original-URI": "/v1/payments?idempotency=1"}
	for i := range 2 {
		if resp, d := check("GET", pay); resp.StatusCode != 200 || d.Limit != 2 {
			t.Fatalf("request %d: status %d %+v, want 200 under the payments override", i, resp.StatusCode, d)
		}
	}
	resp, d := check("POST", pay) // auth_request keeps the original method
	if resp.StatusCode != 429 || d.Decision != "throttle" || resp.Header.Get("Retry-After") == "" || resp.Header.Get("RateLimit") == "" {
		t.Fatalf("over budget: status %d %+v headers %v", resp.StatusCode, d, resp.Header)
	}
	if resp, _ := check("GET", map[string]string{"X-Api-Key": "k_denied"}); resp.StatusCode != 403 {
		t.Fatalf("deny-listed key: status %d, want 403", resp.StatusCode)
	}
	if resp, d := check("GET", map[string]string{"X-Tenant": "acme"}); resp.StatusCode != 401 || d.Error == nil || d.Error.Code != "missing_key" {
		t.Fatalf("no key: status %d %+v, want 401 missing_key", resp.StatusCode, d)
	}
	if resp, d := check("GET", map[string]string{"X-Api-Key": "k", "X-Cost": "-3"}); resp.StatusCode != 400 || d.Error.Code != "invalid_cost" {
		t.Fatalf("bad X-Cost: status %d %+v", resp.StatusCode, d)
	}
	traefik := map[string]string{"X-Api-Key": "k_traefik", "X-Tenant": "acme", "X-Forwarded-Method": "POST", "X-Forwarded-Uri": "/v1/payments"}
	if resp, d := check("GET", traefik); resp.StatusCode != 200 || d.Limit != 2 {
		t.Fatalf("forward-auth headers: status %d %+v", resp.StatusCode, d)
	}
}

func TestBadInput(t *testing.T) {
	ts := startServer(t, mustParse(t, testPolicies))
	cases := map[string]struct {
		path, body string
		status     int
		code       string
	}{
		"malformed json":     {"/v1/decide", `{"key":`, 400, "malformed_json"},
		"empty body":         {"/v1/decide", ``, 400, "empty_body"},
		"not an object":      {"/v1/decide", `["k"]`, 400, "wrong_type"},
		"missing key":        {"/v1/decide", `{"tenant":"acme"}`, 400, "missing_key"},
		"empty key":          {"/v1/decide", `{"key":""}`, 400, "missing_key"},
		"null key":           {"/v1/decide", `{"key":null}`, 400, "missing_key"},
		"key is a number":    {"/v1/decide", `{"key":42}`, 400, "wrong_type"},
		"tenant is a bool":   {"/v1/decide", `{"key":"k","tenant":true}`, 400, "wrong_type"},
		"cost is a string":   {"/v1/decide", `{"key":"k","cost":"1"}`, 400, "wrong_type"},
		"negative cost":      {"/v1/decide", `{"key":"k","cost":-1}`, 400, "invalid_cost"},
		"zero cost":          {"/v1/decide", `{"key":"k","cost":0}`, 400, "invalid_cost"},
		"fractional cost":    {"/v1/decide", `{"key":"k","cost":1.5}`, 400, "invalid_cost"},
		"overflowing cost":   {"/v1/decide", `{"key":"k","cost":99999999999999999999999}`, 400, "invalid_cost"},
		"exponent cost":      {"/v1/decide", `{"key":"k","cost":1e400}`, 400, "invalid_cost"},
		"absurd cost":        {"/v1/decide", `{"key":"k","cost":101}`, 400, "invalid_cost"},
		"key too long":       {"/v1/decide", `{"key":"` + strings.Repeat("k", 300) + `"}`, 400, "field_too_long"},
		"invalid utf-8":      {"/v1/decide", "{\"key\":\"\xff\xfe\"}", 400, "invalid_utf8"},
		"oversized body":     {"/v1/decide", `{"key":"k","pad":"` + strings.Repeat("x", 2000) + `"}`, 413, "body_too_large"},
		"batch over cap":     {"/v1/decide/batch", `[{"key":"a"},{"key":"b"},{"key":"c"},{"key":"d"}]`, 413, "batch_too_large"},
		"batch not an array": {"/v1/decide/batch", `{"key":"a"}`, 400, "wrong_type"},
		"batch empty body":   {"/v1/decide/batch", ``, 400, "empty_body"},
		"batch malformed":    {"/v1/decide/batch", `[{"key":"a"}`, 400, "malformed_json"},
		"unknown path":       {"/v1/nope", `{}`, 404, "not_found"},
	}
	for name, c := range cases {
		t.Run(name, func(t *testing.T) {
			resp, body := post(t, ts.URL+c.path, c.body)
			if resp.StatusCode != c.status {
				t.Fatalf("status %d, want %d: %s", resp.StatusCode, c.status, body)
			}
			d := decode[wireDecision](t, body)
			if d.Error == nil || d.Error.Code != c.code || d.Error.Message == "" {
				t.Fatalf("body %s, want error code %q with a message", body, c.code)
			}
		})
	}
	t.Run("wrong method", func(t *testing.T) {
		resp, err := client.Get(ts.URL + "/v1/decide")
		if err != nil {
			t.Fatal(err)
		}
		resp.Body.Close()
		if resp.StatusCode != 405 || resp.Header.Get("Allow") != "POST" {
			t.Fatalf("status %d Allow %q", resp.StatusCode, resp.Header.Get("Allow"))
		}
	})
	t.Run("body above the transport cap", func(t *testing.T) {
		// Above max_batch_body_bytes fasthttp itself refuses the body, from
		// its Content-Length alone; the answer is still our JSON error. The
		// body is not sent: the server answers and closes without reading
		// it, and a client still writing it would see a reset instead.
		conn, err := net.Dial("tcp", strings.TrimPrefix(ts.URL, "http://"))
		if err != nil {
			t.Fatal(err)
		}
		defer conn.Close()
		fmt.Fprintf(conn, "POST /v1/decide/batch HTTP/1.1\r\nHost: x\r\nContent-Type: application/json\r\nContent-Length: %d\r\n\r\n[", 2_400_000)
		resp, err := http.ReadResponse(bufio.NewReader(conn), nil)
		if err != nil {
			t.Fatal(err)
		}
		body, _ := io.ReadAll(resp.Body)
		resp.Body.Close()
		if resp.StatusCode != 413 || !bytes.Contains(body, []byte(`"body_too_large"`)) {
			t.Fatalf("status %d body %.200s", resp.StatusCode, body)
		}
	})
}

func TestBatchKeepsOrderAndReportsItemErrors(t *testing.T) {
	ts := startServer(t, mustParse(t, testPolicies))
	resp, body := post(t, ts.URL+"/v1/decide/batch", `[{"key":"b1"},{"key":5},{"key":"k_denied"}]`)
	if resp.StatusCode != 200 {
		t.Fatalf("status %d: %s", resp.StatusCode, body)
	}
	items := decode[[]wireDecision](t, body)
	if len(items) != 3 {
		t.Fatalf("%d items, want 3", len(items))
	}
	if items[0].Decision != "allow" || items[1].Error == nil || items[1].Error.Code != "wrong_type" || items[2].Decision != "block" {
		t.Fatalf("items = %+v", items)
	}
	if items[0].DecisionID == items[2].DecisionID {
		t.Fatal("decision IDs repeat")
	}
	_, body = post(t, ts.URL+"/v1/decide/batch", `[]`)
	if string(body) != "[]" {
		t.Fatalf("empty batch answered %s", body)
	}
}

func TestHealthAndReadiness(t *testing.T) {
	ts := startServer(t, mustParse(t, testPolicies))
	resp, err := client.Get(ts.URL + "/healthz")
	if err != nil || resp.StatusCode != 200 {
		t.Fatalf("healthz: %v %v", resp, err)
	}
	resp.Body.Close()
	resp, err = client.Get(ts.URL + "/readyz")
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	var ready struct {
		Status     string
		Components map[string]struct{ Status, Detail, Source, Digest string }
	}
	json.NewDecoder(resp.Body).Decode(&ready)
	if resp.StatusCode != 200 || ready.Status != "ready" || ready.Components["policy"].Status != "ok" ||
		ready.Components["limiter"].Status != "ok" || ready.Components["policy"].Digest == "" {
		t.Fatalf("readyz %d: %+v", resp.StatusCode, ready)
	}
}

var metricLine = regexp.MustCompile(`^flowguard_decisions_total\{action="(\w+)",source="(\w+)",tier="(\w+)"\} (\d+)$`)

func TestDecisionMetrics(t *testing.T) {
	ts := startServer(t, mustParse(t, testPolicies))
	for range 7 {
		post(t, ts.URL+"/v1/decide", `{"key":"m1"}`) // burst 5: 5 allow, 2 throttle
	}
	post(t, ts.URL+"/v1/decide", `{"key":"k_denied","tenant":"acme"}`)
	got := map[string]string{}
	for _, line := range strings.Split(scrape(t, ts.URL), "\n") {
		if m := metricLine.FindStringSubmatch(line); m != nil && m[4] != "0" {
			got[m[1]+"/"+m[2]+"/"+m[3]] = m[4]
		}
	}
	want := map[string]string{"allow/deterministic/free": "5", "throttle/deterministic/free": "2", "block/deterministic/enterprise": "1"}
	if fmt.Sprint(got) != fmt.Sprint(want) {
		t.Fatalf("decision counters = %v, want %v", got, want)
	}
	body := scrape(t, ts.URL)
	for _, name := range []string{"flowguard_decision_duration_seconds_bucket", "flowguard_policy_reloads_total", "flowguard_fallback_active", "flowguard_http_responses_total", "flowguard_go_goroutines"} {
		if !strings.Contains(body, name) {
			t.Errorf("/metrics lacks %s", name)
		}
	}
	for _, line := range strings.Split(body, "\n") {
		if line != "" && !strings.HasPrefix(line, "#") && !strings.HasPrefix(line, "flowguard_") {
			t.Errorf("metric without the flowguard_ prefix: %s", line)
		}
	}
}

func scrape(t testing.TB, url string) string {
	t.Helper()
	resp, err := client.Get(url + "/metrics")
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	var b bytes.Buffer
	b.ReadFrom(resp.Body)
	return b.String()
}

// TestFailedNewClosesWhatItOpened makes New fail late, after the Redis
// client, the in-memory limiter's sweep and the ML stage exist: the
// goroutines they started must be gone afterwards.
func TestFailedNewClosesWhatItOpened(t *testing.T) {
	cfg := mustParse(t, `
redis:
  addrs: ["127.0.0.1:1"]
audit:
  file: /nonexistent-dir/flowguard-audit.jsonl
policies:
  tiers:
    free: {rate: 10}
`)
	before := runtime.NumGoroutine()
	for i := 0; i < 20; i++ {
		if _, err := New(cfg, Options{AdminToken: testAdminToken}); err == nil {
			t.Fatal("New succeeded with an audit file in a directory that does not exist")
		}
	}
	waitUntil(t, 5*time.Second, "the goroutines of failed News to end", func() bool {
		return runtime.NumGoroutine() <= before+2
	})
}
