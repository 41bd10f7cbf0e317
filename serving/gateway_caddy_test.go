package serving

import (
	"fmt"
	"net"
	"net/http"
	"strings"
	"testing"
)

// startCaddy runs examples/gateways/Caddyfile in a real Caddy.
func startCaddy(t *testing.T, flowguard, api string) (string, *syncBuffer) {
	return startGateway(t, "caddy", "caddy", "Caddyfile", flowguard, api, func(_, path string) []string {
		return []string{"run", "--config", path, "--adapter", "caddyfile"}
	})
}

// Through a real Caddy with examples/gateways/Caddyfile: an allowed request
// gets the API's answer and the RateLimit headers, a throttle a 429 with
// Retry-After, a block a 403, no key a 401, and with flowguard down a 503.
func TestCaddyExample(t *testing.T) {
	api := &http.Server{Handler: http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		fmt.Fprintf(w, "api: %s %s\n", r.Method, r.URL.Path)
	})}
	aln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	go api.Serve(aln)
	t.Cleanup(func() { api.Close() })
	ts := startServer(t, mustParse(t, testPolicies))
	url, _ := startCaddy(t, strings.TrimPrefix(ts.URL, "http://"), aln.Addr().String())

	a := gatewayGet(t, url+"/v1/items", "k_caddy")
	if a.status != 200 || a.body != "api: GET /v1/items\n" || a.header.Get("RateLimit") == "" || a.header.Get("RateLimit-Policy") == "" {
		t.Fatalf("allowed: %d %q %v, want the API's answer with RateLimit and RateLimit-Policy", a.status, a.body, a.header)
	}
	for range 5 { // the free tier's burst is 5
		a = gatewayGet(t, url+"/v1/items", "k_caddy")
	}
	if a.status != 429 || a.header.Get("Retry-After") == "" || a.header.Get("RateLimit") == "" {
		t.Fatalf("throttled: %d %q %v, want 429 with Retry-After and RateLimit", a.status, a.body, a.header)
	}
	if a = gatewayGet(t, url+"/v1/items", "k_denied"); a.status != 403 {
		t.Fatalf("blocked: %d %q, want 403", a.status, a.body)
	}
	if a = gatewayGet(t, url+"/v1/items", ""); a.status != 401 {
		t.Fatalf("no key: %d %q, want 401", a.status, a.body)
	}
	spoofedAddresses(t, ts, url, "k_caddy_spoof")
	ts.stop(t)
	if a = gatewayGet(t, url+"/v1/items", "k_caddy2"); a.status != 503 || !strings.Contains(a.body, "flowguard_unavailable") {
		t.Errorf("flowguard down: %d %q, want 503 (fail closed)", a.status, a.body)
	}
}
