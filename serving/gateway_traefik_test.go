package serving

import (
	"bufio"
	"fmt"
	"io"
	"net"
	"net/http"
	"strings"
	"testing"
	"time"
)

// traefikCheck sends /v1/check the request Traefik's ForwardAuth
// middleware sends (pkg/middlewares/auth/forward.go, writeHeader): GET to
// the address, the client's own headers copied, X-Forwarded-For set to
// the client address (after the client's own chain when
// trustForwardHeader is on), X-Forwarded-Method, -Proto, -Host and -Uri
// from the client's request. It goes over a raw socket, so the bytes are
// exactly these.
func traefikCheck(t *testing.T, addr, key, xff, method, uri string) *http.Response {
	t.Helper()
	conn, err := net.DialTimeout("tcp", addr, 5*time.Second)
	if err != nil {
		t.Fatal(err)
	}
	defer conn.Close()
	conn.SetDeadline(time.Now().Add(10 * time.Second))
	req := "GET /v1/check HTTP/1.1\r\n" +
		"Host: " + addr + "\r\n" +
		"User-Agent: curl/8.5.0\r\n" +
		"Accept: */*\r\n" +
		"X-Api-Key: " + key + "\r\n" +
		"X-Tenant: acme\r\n" +
		"X-Forwarded-For: " + xff + "\r\n" +
		"X-Forwarded-Host: api.example.com\r\n" +
		"X-Forwarded-Method: " + method + "\r\n" +
		"X-Forwarded-Proto: https\r\n" +
		"X-Forwarded-Uri: " + uri + "\r\n" +
		"Accept-Encoding: gzip\r\n\r\n"
	if _, err := io.WriteString(conn, req); err != nil {
		t.Fatal(err)
	}
	resp, err := http.ReadResponse(bufio.NewReader(conn), nil)
	if err != nil {
		t.Fatal(err)
	}
	b, _ := io.ReadAll(resp.Body)
	resp.Body.Close()
	t.Logf("%s %s xff %q → %d RateLimit-Policy=%q X-Flowguard-Decision=%q %s", method, uri, xff, resp.StatusCode,
		resp.Header.Get("RateLimit-Policy"), resp.Header.Get("X-Flowguard-Decision"), b)
	return resp
}

// The request shape of Traefik's ForwardAuth: flowguard takes the endpoint
// from X-Forwarded-Method and X-Forwarded-Uri (query ignored), so acme's
// "POST /v1/payments" rule applies to a GET sub-request; the client
// address is the first X-Forwarded-For entry; the headers
// authResponseHeaders copies are on the answer, and a throttle is a 429
// Traefik hands to the client as it is.
func TestTraefikForwardAuthRequestShape(t *testing.T) {
	ts := startServer(t, mustParse(t, testPolicies))
	addr := strings.TrimPrefix(ts.URL, "http://")
	const key = "k_traefik_shape"
	// Two clients: one seen directly (trustForwardHeader off, as in
	// examples/gateways/traefik.yml), one with a chain (on, behind a
	// trusted proxy that added 198.51.100.9).
	clients := []string{"203.0.113.7", "198.51.100.9, 203.0.113.7", "203.0.113.7"}
	for i, xff := range clients[:2] {
		resp := traefikCheck(t, addr, key, xff, "POST", "/v1/payments?idempotency="+fmt.Sprint(i))
		if resp.StatusCode != 200 || resp.Header.Get("X-Flowguard-Decision") != "allow" ||
			!strings.HasPrefix(resp.Header.Get("RateLimit-Policy"), `"acme POST /v1/payments";q=2;w=1`) || resp.Header.Get("RateLimit") == "" {
			t.Fatalf("request %d: %d %v, want 200 under acme's POST /v1/payments rule with the RateLimit headers", i, resp.StatusCode, resp.Header)
		}
	}
	resp := traefikCheck(t, addr, key, clients[2], "POST", "/v1/payments")
	if resp.StatusCode != 429 || resp.Header.Get("X-Flowguard-Decision") != "throttle" || resp.Header.Get("Retry-After") == "" {
		t.Fatalf("third payment within the second: %d %v, want 429 with Retry-After", resp.StatusCode, resp.Header)
	}
	// Another endpoint of the same key is acme's tier budget, not payments'.
	if resp := traefikCheck(t, addr, key, clients[0], "GET", "/v1/reports"); resp.StatusCode != 200 ||
		!strings.HasPrefix(resp.Header.Get("RateLimit-Policy"), `"acme";`) {
		t.Fatalf("GET /v1/reports: %d %v, want acme's base rule", resp.StatusCode, resp.Header)
	}
	e := explainOf(t, ts, key, "acme")
	if got := e.RecentDecisions[0].Endpoint; !strings.HasPrefix(got, "GET /v1/reports") {
		t.Errorf("latest decision's endpoint %q, want GET /v1/reports", got)
	}
	// The first X-Forwarded-For entry is the client: two addresses, not
	// one (the last entry, the address Traefik saw, is the same in all).
	if ips := e.Explanation.Features["distinct_ips"]; ips < 1.5 || ips > 2.5 {
		t.Errorf("distinct_ips %g, want about 2: the client is the first X-Forwarded-For entry", ips)
	}
}
