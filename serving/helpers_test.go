package serving

import (
	"context"
	"encoding/json"
	"io"
	"net"
	"net/http"
	"strings"
	"testing"
	"time"

	"github.com/devflow/flowguard/features"
	"github.com/devflow/flowguard/internal/config"
)

// testPolicies is a small policy file the HTTP tests reason about.
const testPolicies = `
server:
  max_body_bytes: 1024
  max_batch: 3
  max_cost: 100
policies:
  tiers:
    free:
      rate: 10
      period: 1s
      burst: 5
    enterprise:
      rate: 100
      period: 1m
      burst: 20
      floor: 1
      ceiling: 4
  tenants:
    acme:
      tier: enterprise
      endpoints:
        "POST /v1/payments":
          rate: 2
          period: 1s
          burst: 2
  deny: [k_denied]
  allow: [k_allowed]
`

// testServer is a Server on a real loopback socket.
type testServer struct {
	*Server
	URL     string
	cancel  context.CancelFunc
	done    chan error
	stopped bool
}

func startServer(t testing.TB, cfg *config.Loaded) *testServer {
	t.Helper()
	return startServerOpts(t, cfg, Options{})
}

func startServerOpts(t testing.TB, cfg *config.Loaded, opts Options) *testServer {
	t.Helper()
	if opts.AdminToken == "" {
		opts.AdminToken = testAdminToken
	}
	srv, err := New(cfg, opts)
	if err != nil {
		t.Fatal(err)
	}
	return serveOn(t, srv)
}

// serveOn serves srv on a real socket until the test ends.
func serveOn(t testing.TB, srv *Server) *testServer {
	t.Helper()
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithCancel(context.Background())
	ts := &testServer{Server: srv, URL: "http://" + ln.Addr().String(), cancel: cancel, done: make(chan error, 1)}
	go func() { ts.done <- srv.Serve(ctx, ln) }()
	t.Cleanup(func() { ts.stop(t); srv.Close() })
	return ts
}

// stop cancels Serve and waits for it to return.
func (ts *testServer) stop(t testing.TB) {
	if ts.stopped {
		return
	}
	ts.stopped = true
	ts.cancel()
	select {
	case err, ok := <-ts.done:
		if ok && err != nil {
			t.Errorf("Serve: %v", err)
		}
		close(ts.done)
	case <-time.After(15 * time.Second):
		t.Error("Serve did not return after cancel")
	}
}

func mustParse(t testing.TB, yaml string) *config.Loaded {
	t.Helper()
	cfg, err := config.Parse("test.yaml", []byte(yaml))
	if err != nil {
		t.Fatal(err)
	}
	return cfg
}

// testAdminToken is the admin token of the servers startServer starts;
// client sends it with every request that has no Authorization header.
// auth_test.go checks the endpoints without it.
const testAdminToken = "test-admin-token-0123456789"

var client = &http.Client{Timeout: 10 * time.Second, Transport: withAdminToken{&http.Transport{MaxIdleConnsPerHost: 64}}}

type withAdminToken struct{ http.RoundTripper }

func (t withAdminToken) RoundTrip(r *http.Request) (*http.Response, error) {
	if r.Header.Get("Authorization") == "" {
		r = r.Clone(r.Context())
		r.Header.Set("Authorization", "Bearer "+testAdminToken)
	}
	return t.RoundTripper.RoundTrip(r)
}

// wireDecision is the decide response as a client reads it.
type wireDecision struct {
	Decision     string  `json:"decision"`
	Limit        int64   `json:"limit"`
	Remaining    int64   `json:"remaining"`
	ResetMS      int64   `json:"reset_ms"`
	RetryAfterMS int64   `json:"retry_after_ms"`
	Multiplier   float64 `json:"multiplier"`
	Arm          string  `json:"arm"`
	Propensity   float64 `json:"propensity"`
	Variant      string  `json:"variant"`
	Experiment   string  `json:"experiment"`
	ModelVersion string  `json:"model_version"`
	DecisionID   string  `json:"decision_id"`
	Fallback     bool    `json:"fallback"`
	Reason       string  `json:"reason"`
	Error        *struct {
		Code    string `json:"code"`
		Message string `json:"message"`
	} `json:"error"`
}

func post(t testing.TB, url, body string) (*http.Response, []byte) {
	t.Helper()
	resp, err := client.Post(url, "application/json", strings.NewReader(body))
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	b, err := io.ReadAll(resp.Body)
	if err != nil {
		t.Fatal(err)
	}
	return resp, b
}

func decode[T any](t testing.TB, b []byte) T {
	t.Helper()
	var v T
	dec := json.NewDecoder(strings.NewReader(string(b)))
	dec.DisallowUnknownFields()
	if err := dec.Decode(&v); err != nil {
		t.Fatalf("decode %s: %v", b, err)
	}
	return v
}

func jsonUnmarshal(b []byte, v any) error { return json.Unmarshal(b, v) }

// waitEpochsEnd waits until none of keys has a current epoch, so that the
// next request of each starts a new one (and closes the old).
func waitEpochsEnd(t testing.TB, ts *testServer, keys ...string) {
	t.Helper()
	waitUntil(t, 10*time.Second, "the keys' epochs to end", func() bool {
		for _, k := range keys {
			if ts.Server.pipe.HasEpoch(k) {
				return false
			}
		}
		return true
	})
}

// ctxDim is the bandit's context: the feature vector, then the risk score.
const ctxDim = features.Dim + 1
