package serving

import (
	"bytes"
	"encoding/json"
	"io"
	"log/slog"
	"net/http"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/devflow/flowguard/internal/config"
)

// anon is a client that sends no Authorization header unless told to.
var anon = &http.Client{Timeout: 10 * time.Second}

const goodLabel = `{"label_id":"inv-auth-1","key":"k_auth","abusive":true,"from":"2026-11-20T00:00:00Z","to":"2026-11-21T00:00:00Z"}`

// startGuarded starts a server with exactly the admin token given ("" =
// none), unlike startServer, which always configures testAdminToken.
func startGuarded(t *testing.T, yaml, token string, log *slog.Logger) *testServer {
	t.Helper()
	srv, err := New(mustParse(t, yaml), Options{AdminToken: token, Logger: log})
	if err != nil {
		t.Fatal(err)
	}
	return serveOn(t, srv)
}

// call sends method to url with body and the Authorization header auth
// ("" = none) and returns the status, the WWW-Authenticate header and the body.
func call(t *testing.T, method, url, auth, body string) (int, http.Header, []byte) {
	t.Helper()
	req, err := http.NewRequest(method, url, strings.NewReader(body))
	if err != nil {
		t.Fatal(err)
	}
	if auth != "" {
		req.Header.Set("Authorization", auth)
	}
	resp, err := anon.Do(req)
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	b, err := io.ReadAll(resp.Body)
	if err != nil {
		t.Fatal(err)
	}
	return resp.StatusCode, resp.Header, b
}

// errorCode returns the code of a {"error":{"code":…}} body, or "".
func errorCode(t *testing.T, b []byte) string {
	t.Helper()
	var e struct {
		Error *struct {
			Code    string `json:"code"`
			Message string `json:"message"`
		} `json:"error"`
	}
	if err := json.Unmarshal(b, &e); err != nil || e.Error == nil {
		return ""
	}
	return e.Error.Code
}

// TestAdminEndpointsNeedToken covers every admin endpoint with every kind
// of Authorization header, over a real socket.
func TestAdminEndpointsNeedToken(t *testing.T) {
	ts := startGuarded(t, strings.Replace(testPolicies, "server:\n", "server:\n  admin_rate: 10000\n  admin_burst: 10000\n", 1), testAdminToken, nil)
	endpoints := map[string]struct{ method, path, body string }{
		"labels":       {"POST", "/v1/labels", goodLabel},
		"explain":      {"GET", "/v1/keys/k_auth/explain?tenant=acme", ""},
		"explain head": {"HEAD", "/v1/keys/k_auth/explain", ""},
		"pprof index":  {"GET", "/debug/pprof/", ""},
		"pprof heap":   {"GET", "/debug/pprof/heap?debug=1", ""},
	}
	headers := map[string]struct {
		auth      string
		ok        bool
		challenge string
	}{
		"none":            {"", false, `Bearer realm="flowguard"`},
		"wrong token":     {"Bearer not-the-admin-token-0000", false, `Bearer realm="flowguard", error="invalid_token"`},
		"token prefix":    {"Bearer " + testAdminToken[:len(testAdminToken)-1], false, `Bearer realm="flowguard", error="invalid_token"`},
		"token extended":  {"Bearer " + testAdminToken + "0", false, `Bearer realm="flowguard", error="invalid_token"`},
		"basic scheme":    {"Basic " + testAdminToken, false, `Bearer realm="flowguard"`},
		"bare token":      {testAdminToken, false, `Bearer realm="flowguard"`},
		"empty bearer":    {"Bearer ", false, `Bearer realm="flowguard"`},
		"right token":     {"Bearer " + testAdminToken, true, ""},
		"lowercase":       {"bearer " + testAdminToken, true, ""},
		"two spaces":      {"Bearer  " + testAdminToken, true, ""},
		"uppercase token": {"Bearer " + strings.ToUpper(testAdminToken), false, `Bearer realm="flowguard", error="invalid_token"`},
	}
	for en, ep := range endpoints {
		for hn, h := range headers {
			t.Run(en+"/"+hn, func(t *testing.T) {
				code, hdr, b := call(t, ep.method, ts.URL+ep.path, h.auth, ep.body)
				if h.ok {
					if code == 401 || code >= 500 {
						t.Fatalf("%d %s, want the endpoint's answer", code, b)
					}
					return
				}
				if code != 401 || hdr.Get("WWW-Authenticate") != h.challenge {
					t.Fatalf("%d WWW-Authenticate %q, want 401 %q", code, hdr.Get("WWW-Authenticate"), h.challenge)
				}
				if ep.method != "HEAD" && errorCode(t, b) != "unauthorized" {
					t.Fatalf("body %s is not the service's error shape with code unauthorized", b)
				}
			})
		}
	}
	// The decision plane needs no token.
	for name, r := range map[string]struct{ method, path, body string }{
		"decide":   {"POST", "/v1/decide", `{"key":"k_auth_1"}`},
		"batch":    {"POST", "/v1/decide/batch", `[{"key":"k_auth_2"}]`},
		"check":    {"GET", "/v1/check", ""},
		"outcomes": {"POST", "/v1/outcomes", `{"key":"k_auth_3","requests":2,"errors":1}`},
		"healthz":  {"GET", "/healthz", ""},
		"metrics":  {"GET", "/metrics", ""},
	} {
		req, _ := http.NewRequest(r.method, ts.URL+r.path, strings.NewReader(r.body))
		req.Header.Set("X-Api-Key", "k_auth_4")
		resp, err := anon.Do(req)
		if err != nil {
			t.Fatal(err)
		}
		resp.Body.Close()
		if resp.StatusCode != 200 {
			t.Errorf("%s without a token: %d, want 200", name, resp.StatusCode)
		}
	}
	if v := metricValue(t, ts, `flowguard_admin_requests_total{endpoint="labels",result="invalid_token"}`); v != 4 {
		t.Errorf("labels invalid_token count = %v, want 4", v)
	}
}

// TestAdminWithoutConfiguredToken: with no token, admin_auth token refuses
// every call, and loopback admits loopback callers only.
func TestAdminWithoutConfiguredToken(t *testing.T) {
	const unset = "server:\n  admin_token_env: FLOWGUARD_TEST_SURELY_UNSET_TOKEN\n"
	cases := map[string]struct {
		yaml string
		want int
	}{
		"token mode":    {unset, 401},
		"loopback mode": {unset + "  admin_auth: loopback\n", 202},
	}
	for name, tc := range cases {
		t.Run(name, func(t *testing.T) {
			ts := startGuarded(t, strings.Replace(testPolicies, "server:\n", tc.yaml, 1), "", nil)
			for _, auth := range []string{"", "Bearer " + testAdminToken} {
				code, _, b := call(t, "POST", ts.URL+"/v1/labels", auth, goodLabel)
				if code != tc.want {
					t.Fatalf("Authorization %q: %d %s, want %d", auth, code, b, tc.want)
				}
			}
		})
	}
	// A remote caller cannot be made over loopback; the rule itself:
	g := &adminGuard{mode: config.AdminAuthLoopback, tokenEnv: "X"}
	if r, e := g.authenticate(nil, false); e == nil || e.status != 401 || r != adminNoToken {
		t.Errorf("loopback mode, remote caller: %v %v, want a 401", r, e)
	}
	if _, e := g.authenticate(nil, true); e != nil {
		t.Errorf("loopback mode, loopback caller: %v, want admitted", e)
	}
}

// TestAdminTokenNeverLogged sends a wrong and a right token, with the
// token from the environment and debug logging on, and looks for either
// string in everything the server logged.
func TestAdminTokenNeverLogged(t *testing.T) {
	const right, wrong = "right-token-5f1c9a7e3b2d4c6a", "wrong-token-8e2b7d1f0a9c3e5b"
	t.Setenv("FLOWGUARD_TEST_ADMIN_TOKEN", right)
	var buf lockedBuffer
	log := slog.New(slog.NewJSONHandler(&buf, &slog.HandlerOptions{Level: slog.LevelDebug}))
	yaml := strings.Replace(testPolicies, "server:\n", "server:\n  admin_token_env: FLOWGUARD_TEST_ADMIN_TOKEN\n", 1)
	ts := startGuarded(t, yaml, "", log)
	for _, auth := range []string{"Bearer " + wrong, "Bearer " + right, "Basic " + wrong, wrong} {
		for _, path := range []string{"/v1/labels", "/v1/keys/k_auth/explain"} {
			code, _, b := call(t, "POST", ts.URL+path, auth, goodLabel)
			if bytes.Contains(b, []byte(right)) || bytes.Contains(b, []byte(wrong)) {
				t.Errorf("%s answered %d with a token in the body: %s", path, code, b)
			}
		}
	}
	ts.stop(t)
	logs := buf.String()
	if !strings.Contains(logs, "admin call refused") || !strings.Contains(logs, "FLOWGUARD_TEST_ADMIN_TOKEN") {
		t.Fatalf("the refusals and the token's source were not logged, so the test proves nothing:\n%s", logs)
	}
	for _, tok := range []string{right, wrong} {
		if strings.Contains(logs, tok) {
			t.Errorf("token %q appears in the log:\n%s", tok, logs)
		}
	}
}

// TestAdminRateAndSizeCaps: past the bucket, 429 with Retry-After, while
// decisions go on; an admin body over admin_max_body_bytes is a 413.
func TestAdminRateAndSizeCaps(t *testing.T) {
	yaml := strings.Replace(testPolicies, "server:\n", "server:\n  admin_rate: 1\n  admin_burst: 3\n  admin_max_body_bytes: 256\n", 1)
	ts := startGuarded(t, yaml, testAdminToken, nil)
	auth := "Bearer " + testAdminToken
	if code, _, b := call(t, "POST", ts.URL+"/v1/labels", auth, `[`+goodLabel+`,`+goodLabel+`,`+goodLabel+`]`); code != 413 || errorCode(t, b) != "body_too_large" {
		t.Errorf("a 3-label body over 256 bytes: %d %s, want 413 body_too_large", code, b)
	}
	// That call took one of the 3; two more pass (wrong tokens count too).
	if code, _, _ := call(t, "GET", ts.URL+"/v1/keys/k/explain", "Bearer wrong-token-0000000000", ""); code != 401 {
		t.Errorf("second call: %d, want 401", code)
	}
	if code, _, b := call(t, "GET", ts.URL+"/v1/keys/k/explain", auth, ""); code != 200 {
		t.Errorf("third call: %d %s, want 200", code, b)
	}
	code, hdr, b := call(t, "GET", ts.URL+"/v1/keys/k/explain", auth, "")
	if code != 429 || errorCode(t, b) != "admin_rate_limited" || hdr.Get("Retry-After") != "1" {
		t.Errorf("fourth call: %d Retry-After %q %s, want 429 admin_rate_limited Retry-After 1", code, hdr.Get("Retry-After"), b)
	}
	if code, _, _ := call(t, "POST", ts.URL+"/v1/decide", "", `{"key":"k_rate"}`); code != 200 {
		t.Errorf("decide while admin is capped: %d, want 200", code)
	}
}

// TestAdminTokenChecks: a configured token that is too short or carries a
// newline stops New, with an error naming the variable, not the value.
func TestAdminTokenChecks(t *testing.T) {
	cases := map[string]struct{ token, want string }{
		"short":   {"abc123", "is 6 bytes; use at least 16"},
		"newline": {"0123456789abcdef0123\n", "a character a bearer token cannot carry"},
		"space":   {"0123456789abcdef 0123", "a character a bearer token cannot carry"},
	}
	for name, tc := range cases {
		t.Run(name, func(t *testing.T) {
			_, err := New(mustParse(t, testPolicies), Options{AdminToken: tc.token})
			if err == nil || !strings.Contains(err.Error(), tc.want) || !strings.Contains(err.Error(), "$FLOWGUARD_ADMIN_TOKEN") {
				t.Fatalf("err = %v, want one naming $FLOWGUARD_ADMIN_TOKEN and %q", err, tc.want)
			}
			if strings.Contains(err.Error(), strings.TrimSpace(tc.token)) {
				t.Fatalf("the error shows the token: %v", err)
			}
		})
	}
}

func TestBearerToken(t *testing.T) {
	cases := map[string]struct {
		header, token string
		ok            bool
	}{
		"bearer":        {"Bearer abc", "abc", true},
		"mixed case":    {"BeArEr abc", "abc", true},
		"extra spaces":  {"Bearer   abc", "abc", true},
		"empty":         {"", "", false},
		"scheme only":   {"Bearer", "", false},
		"scheme space":  {"Bearer    ", "", false},
		"basic":         {"Basic abc", "", false},
		"no space":      {"Bearerabc", "", false},
		"short":         {"Bear", "", false},
		"unicode first": {"Béarer abc", "", false},
	}
	for name, tc := range cases {
		t.Run(name, func(t *testing.T) {
			tok, ok := bearerToken([]byte(tc.header))
			if ok != tc.ok || string(tok) != tc.token {
				t.Fatalf("bearerToken(%q) = %q, %v; want %q, %v", tc.header, tok, ok, tc.token, tc.ok)
			}
		})
	}
}

// lockedBuffer is a bytes.Buffer safe for the server's goroutines.
type lockedBuffer struct {
	mu sync.Mutex
	b  bytes.Buffer
}

func (l *lockedBuffer) Write(p []byte) (int, error) {
	l.mu.Lock()
	defer l.mu.Unlock()
	return l.b.Write(p)
}

func (l *lockedBuffer) String() string {
	l.mu.Lock()
	defer l.mu.Unlock()
	return l.b.String()
}

// TestPprofBehindAdminToken: an operator with the admin token gets the Go
// runtime's profiles over a real socket; without it, 401 (the endpoint
// table of TestAdminEndpointsNeedToken covers every refused header).
func TestPprofBehindAdminToken(t *testing.T) {
	ts := startGuarded(t, strings.Replace(testPolicies, "server:\n", "server:\n  admin_rate: 10000\n  admin_burst: 10000\n", 1), testAdminToken, nil)
	for path, want := range map[string]string{
		"/debug/pprof/":                     "goroutine",
		"/debug/pprof/heap?debug=1":         "heap profile:",
		"/debug/pprof/goroutine?debug=1":    "goroutine profile:",
		"/debug/pprof/profile?seconds=1":    "", // a binary CPU profile
		"/debug/pprof/cmdline":              "",
		"/debug/pprof/allocs?debug=1":       "heap profile:",
		"/debug/pprof/threadcreate?debug=1": "threadcreate profile:",
	} {
		code, _, b := call(t, "GET", ts.URL+path, "Bearer "+testAdminToken, "")
		if code != 200 || len(b) == 0 || !strings.Contains(string(b), want) {
			t.Errorf("%s: %d, %d bytes, want 200 containing %q", path, code, len(b), want)
		}
	}
	if code, _, _ := call(t, "GET", ts.URL+"/debug/pprof/heap", "", ""); code != 401 {
		t.Errorf("heap without a token: %d, want 401", code)
	}
	if v := metricValue(t, ts, `flowguard_admin_requests_total{endpoint="pprof",result="ok"}`); v != 7 {
		t.Errorf("pprof ok count = %v, want 7", v)
	}
}
