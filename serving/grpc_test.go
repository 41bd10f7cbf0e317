package serving

import (
	"context"
	"io"
	"net"
	"strconv"
	"strings"
	"testing"
	"time"

	rlv3 "github.com/envoyproxy/go-control-plane/envoy/extensions/common/ratelimit/v3"
	rlsv3 "github.com/envoyproxy/go-control-plane/envoy/service/ratelimit/v3"
	"google.golang.org/grpc"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/credentials/insecure"
	healthpb "google.golang.org/grpc/health/grpc_health_v1"
	"google.golang.org/grpc/mem"
	"google.golang.org/grpc/status"
	"google.golang.org/protobuf/encoding/protowire"
	"google.golang.org/protobuf/types/known/wrapperspb"

	"github.com/devflow/flowguard/internal/config"
)

// grpcTestServer is a Server serving HTTP and the gRPC API on real
// loopback sockets, and a gRPC client connected to it.
type grpcTestServer struct {
	*testServer
	conn *grpc.ClientConn
	rls  rlsv3.RateLimitServiceClient
}

func startGRPCServer(t testing.TB, cfg *config.Loaded) *grpcTestServer {
	t.Helper()
	gln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	ts := startServerOpts(t, cfg, Options{GRPCListener: gln})
	conn, err := grpc.NewClient(gln.Addr().String(), grpc.WithTransportCredentials(insecure.NewCredentials()))
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { conn.Close() })
	return &grpcTestServer{testServer: ts, conn: conn, rls: rlsv3.NewRateLimitServiceClient(conn)}
}

// descriptor builds a descriptor from key, value pairs.
func descriptor(kv ...string) *rlv3.RateLimitDescriptor {
	d := &rlv3.RateLimitDescriptor{}
	for i := 0; i+1 < len(kv); i += 2 {
		d.Entries = append(d.Entries, &rlv3.RateLimitDescriptor_Entry{Key: kv[i], Value: kv[i+1]})
	}
	return d
}

func rateLimitRequest(ds ...*rlv3.RateLimitDescriptor) *rlsv3.RateLimitRequest {
	return &rlsv3.RateLimitRequest{Domain: "flowguard", Descriptors: ds}
}

func (g *grpcTestServer) should(t testing.TB, req *rlsv3.RateLimitRequest) *rlsv3.RateLimitResponse {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	resp, err := g.rls.ShouldRateLimit(ctx, req)
	if err != nil {
		t.Fatalf("ShouldRateLimit: %v", err)
	}
	return resp
}

func header(resp *rlsv3.RateLimitResponse, name string) (string, bool) {
	for _, h := range resp.ResponseHeadersToAdd {
		if strings.EqualFold(h.Key, name) {
			return h.Value, true
		}
	}
	return "", false
}

// A hot key is allowed its burst (free: 5), then OVER_LIMIT, with the
// RateLimit headers /v1/decide sets for the same decision and a status
// per descriptor: the rule's rate as current_limit, what remains, and
// when the budget is whole.
func TestGRPCAllowThenOverLimit(t *testing.T) {
	g := startGRPCServer(t, mustParse(t, testPolicies))
	req := rateLimitRequest(descriptor("api_key", "k_grpc_hot", "method", "GET", "path", "/v1/items"))
	for i := range 5 {
		resp := g.should(t, req)
		st := resp.Statuses[0]
		if i == 0 {
			t.Logf("1st call, what the client saw: %v", resp)
		}
		if resp.OverallCode != rlsv3.RateLimitResponse_OK || st.Code != rlsv3.RateLimitResponse_OK || st.LimitRemaining != uint32(4-i) {
			t.Fatalf("request %d: %v, want OK with %d remaining", i+1, resp, 4-i)
		}
		if _, ok := header(resp, "Retry-After"); ok {
			t.Fatalf("request %d: Retry-After on an allowed request: %v", i+1, resp.ResponseHeadersToAdd)
		}
	}
	resp := g.should(t, req)
	st := resp.Statuses[0]
	t.Logf("6th call, what the client saw: %v", resp)
	if resp.OverallCode != rlsv3.RateLimitResponse_OVER_LIMIT || st.Code != rlsv3.RateLimitResponse_OVER_LIMIT || st.LimitRemaining != 0 {
		t.Fatalf("6th request: %v, want OVER_LIMIT with 0 remaining", resp)
	}
	if l := st.CurrentLimit; l.GetRequestsPerUnit() != 10 || l.GetUnit() != rlsv3.RateLimitResponse_RateLimit_SECOND || l.GetName() == "" {
		t.Errorf("current_limit %v, want 10 per SECOND with the rule's name", l)
	}
	if r := st.DurationUntilReset.AsDuration(); r <= 0 || r > time.Second {
		t.Errorf("duration_until_reset %v, want in (0, 1s]: 5 tokens at 10/s", r)
	}
	if d, _ := header(resp, "X-Flowguard-Decision"); d != "throttle" {
		t.Errorf("X-Flowguard-Decision %q, want throttle", d)
	}

	// /v1/decide on the same key, a moment later: the same header values.
	hr, body := post(t, g.URL+"/v1/decide", `{"key":"k_grpc_hot","endpoint":"GET /v1/items"}`)
	if w := decode[wireDecision](t, body); w.Decision != "throttle" {
		t.Fatalf("/v1/decide: %s, want a throttle", body)
	}
	for _, name := range []string{"RateLimit-Policy", "RateLimit", "Retry-After"} {
		got, ok := header(resp, name)
		if want := hr.Header.Get(name); !ok || got != want {
			t.Errorf("%s: gRPC %q (present %v), /v1/decide %q", name, got, ok, want)
		}
	}
}

// hits_addend is the cost: the descriptor's overrides the request's, 0
// counts as 1, and above server.max_cost (100) the call is refused.
func TestGRPCHitsAddend(t *testing.T) {
	g := startGRPCServer(t, mustParse(t, testPolicies))
	req := rateLimitRequest(descriptor("api_key", "k_grpc_hits"))
	req.HitsAddend = 3
	if st := g.should(t, req).Statuses[0]; st.Code != rlsv3.RateLimitResponse_OK || st.LimitRemaining != 2 {
		t.Fatalf("hits_addend 3 of a burst of 5: %v, want OK with 2 remaining", st)
	}
	req.HitsAddend = 0
	if st := g.should(t, req).Statuses[0]; st.LimitRemaining != 1 {
		t.Fatalf("hits_addend 0: %v, want it counted as 1 (1 remaining)", st)
	}
	req.HitsAddend = 1
	req.Descriptors[0].HitsAddend = wrapperspb.UInt64(2)
	if st := g.should(t, req).Statuses[0]; st.Code != rlsv3.RateLimitResponse_OVER_LIMIT {
		t.Fatalf("descriptor hits_addend 2 with 1 token left: %v, want OVER_LIMIT (the descriptor's overrides the request's)", st)
	}
	req.Descriptors[0].HitsAddend = nil
	req.HitsAddend = 101
	_, err := g.rls.ShouldRateLimit(context.Background(), req)
	if status.Code(err) != codes.InvalidArgument || !strings.Contains(status.Convert(err).Message(), "hits_addend 101 is out of range 0..100") {
		t.Fatalf("hits_addend 101: %v, want InvalidArgument naming the range", err)
	}
}

// Each descriptor is one decision; the request is OVER_LIMIT when any is,
// and the headers are the refused decision's. A block is OVER_LIMIT too.
// The endpoint comes from method + path, :method + :path or header_match.
func TestGRPCSeveralDescriptors(t *testing.T) {
	g := startGRPCServer(t, mustParse(t, testPolicies))
	hot := descriptor("api_key", "k_grpc_many_hot")
	for range 5 {
		g.should(t, rateLimitRequest(hot))
	}
	resp := g.should(t, rateLimitRequest(descriptor("api_key", "k_grpc_many_fresh"), hot))
	if resp.OverallCode != rlsv3.RateLimitResponse_OVER_LIMIT || len(resp.Statuses) != 2 ||
		resp.Statuses[0].Code != rlsv3.RateLimitResponse_OK || resp.Statuses[1].Code != rlsv3.RateLimitResponse_OVER_LIMIT {
		t.Fatalf("fresh + hot: %v, want OVER_LIMIT overall, OK then OVER_LIMIT", resp)
	}
	if _, ok := header(resp, "Retry-After"); !ok {
		t.Errorf("no Retry-After: the headers should be the refused descriptor's: %v", resp.ResponseHeadersToAdd)
	}

	resp = g.should(t, rateLimitRequest(descriptor("api_key", "k_denied")))
	if d, _ := header(resp, "X-Flowguard-Decision"); resp.OverallCode != rlsv3.RateLimitResponse_OVER_LIMIT || d != "block" {
		t.Fatalf("deny-listed key: %v, want OVER_LIMIT with X-Flowguard-Decision: block", resp)
	}
	if _, ok := header(resp, "Retry-After"); ok {
		t.Errorf("a block has Retry-After (no retry passes): %v", resp.ResponseHeadersToAdd)
	}

	// acme's "POST /v1/payments" is 2 per second: each way of naming the
	// endpoint must reach it.
	for name, d := range map[string]*rlv3.RateLimitDescriptor{
		"method and path":  descriptor("api_key", "k_grpc_ep1", "tenant", "acme", "method", "POST", "path", "/v1/payments"),
		":method, :path":   descriptor("tenant", "acme", ":path", "/v1/payments?x=1", ":method", "POST", "api_key", "k_grpc_ep2"),
		"header_match":     descriptor("api_key", "k_grpc_ep3", "tenant", "acme", "header_match", "POST /v1/payments"),
		"endpoint wins":    descriptor("api_key", "k_grpc_ep4", "tenant", "acme", "method", "GET", "path", "/x", "endpoint", "POST /v1/payments"),
		"generic ignored":  descriptor("generic_key", "payments", "api_key", "k_grpc_ep5", "tenant", "acme", "endpoint", "POST /v1/payments"),
		"path over :path":  descriptor("api_key", "k_grpc_ep6", "tenant", "acme", ":method", "POST", ":path", "/x", "path", "/v1/payments"),
		"remote_address":   descriptor("api_key", "k_grpc_ep7", "tenant", "acme", "remote_address", "203.0.113.7", "header_match", "POST /v1/payments"),
		"several entries":  descriptor("api_key", "k_grpc_ep8", "tenant", "acme", "method", "POST", "path", "/v1/payments", "generic_key", "a"),
		"tenant then path": descriptor("tenant", "acme", "path", "/v1/payments", "method", "POST", "api_key", "k_grpc_ep9"),
	} {
		st := g.should(t, rateLimitRequest(d)).Statuses[0]
		if l := st.CurrentLimit; l.GetRequestsPerUnit() != 2 || l.GetUnit() != rlsv3.RateLimitResponse_RateLimit_SECOND || st.LimitRemaining != 1 {
			t.Errorf("%s: %v, want acme's POST /v1/payments rule (2 per SECOND, 1 remaining)", name, st)
		}
	}
}

// Every bad request is an error status with a message that says what is
// wrong, and spends no budget.
func TestGRPCBadRequests(t *testing.T) {
	g := startGRPCServer(t, mustParse(t, testPolicies))
	many := make([]*rlv3.RateLimitDescriptor, 65)
	for i := range many {
		many[i] = descriptor("api_key", "k")
	}
	wide := descriptor("api_key", "k")
	for range 16 {
		wide.Entries = append(wide.Entries, &rlv3.RateLimitDescriptor_Entry{Key: "generic_key", Value: "v"})
	}
	negative := descriptor("api_key", "k_grpc_negative")
	negative.IsNegativeHits = true
	cases := map[string]struct {
		req  *rlsv3.RateLimitRequest
		code codes.Code
		msg  string
	}{
		"no descriptors":     {rateLimitRequest(), codes.InvalidArgument, `the request has no descriptors: send at least one, with an "api_key" entry`},
		"empty descriptor":   {rateLimitRequest(descriptor()), codes.InvalidArgument, "descriptor 0 has no entries"},
		"no key entry":       {rateLimitRequest(descriptor("api_key", "k"), descriptor("tenant", "acme")), codes.InvalidArgument, `descriptor 1 has no API key entry ("api_key", server.grpc.descriptors.key)`},
		"empty key":          {rateLimitRequest(descriptor("api_key", "")), codes.InvalidArgument, "descriptor 0: the API key entry is empty"},
		"key twice":          {rateLimitRequest(descriptor("api_key", "a", "api_key", "b")), codes.InvalidArgument, `descriptor 0 has entry "api_key" twice`},
		"too many":           {rateLimitRequest(many...), codes.InvalidArgument, "65 descriptors is above the cap of 64 (server.grpc.max_descriptors)"},
		"too many entries":   {rateLimitRequest(wide), codes.InvalidArgument, "descriptor 0 has 17 entries, above the cap of 16 (server.grpc.max_entries)"},
		"unknown domain":     {&rlsv3.RateLimitRequest{Domain: "edge", Descriptors: []*rlv3.RateLimitDescriptor{descriptor("api_key", "k")}}, codes.InvalidArgument, `unknown domain "edge": this flowguard serves domain "flowguard" (server.grpc.domain)`},
		"key too long":       {rateLimitRequest(descriptor("api_key", strings.Repeat("k", 257))), codes.InvalidArgument, `descriptor 0 entry "api_key" is longer than 256 bytes`},
		"tenant too long":    {rateLimitRequest(descriptor("api_key", "k", "tenant", strings.Repeat("t", 513))), codes.InvalidArgument, `descriptor 0 entry "tenant" is longer than 512 bytes`},
		"negative hits":      {rateLimitRequest(negative), codes.InvalidArgument, "descriptor 0: is_negative_hits is not supported: flowguard does not give budget back"},
		"message over limit": {rateLimitRequest(descriptor("api_key", "k", "generic_key", strings.Repeat("x", 70<<10))), codes.ResourceExhausted, "grpc: received message larger than max"},
	}
	for name, c := range cases {
		t.Run(name, func(t *testing.T) {
			_, err := g.rls.ShouldRateLimit(context.Background(), c.req)
			if s := status.Convert(err); s.Code() != c.code || !strings.Contains(s.Message(), c.msg) {
				t.Fatalf("got %v %q, want %v %q", s.Code(), s.Message(), c.code, c.msg)
			}
		})
	}
	t.Run("invalid UTF-8", func(t *testing.T) {
		// The client's proto encoder refuses invalid UTF-8, so this
		// request is written by hand and sent as raw bytes.
		entry := protowire.AppendTag(nil, 1, protowire.BytesType)
		entry = protowire.AppendString(entry, "api_key")
		entry = protowire.AppendTag(entry, 2, protowire.BytesType)
		entry = protowire.AppendBytes(entry, []byte("k\xff"))
		desc := protowire.AppendTag(nil, 1, protowire.BytesType)
		desc = protowire.AppendBytes(desc, entry)
		msg := protowire.AppendTag(nil, 1, protowire.BytesType)
		msg = protowire.AppendString(msg, "flowguard")
		msg = protowire.AppendTag(msg, 2, protowire.BytesType)
		msg = protowire.AppendBytes(msg, desc)
		var out rlsv3.RateLimitResponse
		err := g.conn.Invoke(context.Background(), rlsv3.RateLimitService_ShouldRateLimit_FullMethodName, rawBytes(msg), &out,
			grpc.ForceCodecV2(rawClientCodec{}))
		if s := status.Convert(err); s.Code() != codes.InvalidArgument || !strings.Contains(s.Message(), "not a valid RateLimitRequest") ||
			!strings.Contains(s.Message(), "UTF-8") {
			t.Fatalf("got %v %q, want InvalidArgument naming invalid UTF-8", s.Code(), s.Message())
		}
	})
	// Nothing above spent budget: a fresh request of key "k" has all 5.
	if st := g.should(t, rateLimitRequest(descriptor("api_key", "k"))).Statuses[0]; st.LimitRemaining != 4 {
		t.Errorf("key k after the bad requests: %v, want 4 remaining (no budget spent by them)", st)
	}
}

// rawBytes is a message already encoded; rawClientCodec sends it as it is.
type rawBytes []byte

type rawClientCodec struct{}

func (rawClientCodec) Marshal(v any) (mem.BufferSlice, error) {
	return mem.BufferSlice{mem.SliceBuffer(v.(rawBytes))}, nil
}
func (rawClientCodec) Unmarshal(mem.BufferSlice, any) error { return nil }
func (rawClientCodec) Name() string                         { return "proto" }

// The health service answers SERVING for the server and the rate-limit
// service, and NOT_SERVING once the server drains.
func TestGRPCHealth(t *testing.T) {
	g := startGRPCServer(t, mustParse(t, testPolicies))
	hc := healthpb.NewHealthClient(g.conn)
	for _, svc := range []string{"", rateLimitServiceName} {
		resp, err := hc.Check(context.Background(), &healthpb.HealthCheckRequest{Service: svc})
		if err != nil || resp.Status != healthpb.HealthCheckResponse_SERVING {
			t.Fatalf("Check(%q): %v %v, want SERVING", svc, resp, err)
		}
	}
	g.stop(t)
	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Second)
	defer cancel()
	if resp, err := hc.Check(ctx, &healthpb.HealthCheckRequest{}); err == nil && resp.Status == healthpb.HealthCheckResponse_SERVING {
		t.Fatalf("after stop: %v, want an error or NOT_SERVING", resp)
	}
}

// The gRPC calls are counted by code on /metrics, with their latency.
func TestGRPCMetrics(t *testing.T) {
	g := startGRPCServer(t, mustParse(t, testPolicies))
	for range 6 {
		g.rls.ShouldRateLimit(context.Background(), rateLimitRequest(descriptor("api_key", "k_grpc_metrics")))
	}
	g.rls.ShouldRateLimit(context.Background(), rateLimitRequest())
	resp, err := client.Get(g.URL + "/metrics")
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	body, err := io.ReadAll(resp.Body)
	if err != nil {
		t.Fatal(err)
	}
	for _, want := range []string{
		`flowguard_grpc_requests_total{code="OK"} 5`,
		`flowguard_grpc_requests_total{code="OVER_LIMIT"} 1`,
		`flowguard_grpc_requests_total{code="InvalidArgument"} 1`,
		`flowguard_grpc_request_duration_seconds_count 7`,
		`flowguard_decisions_total{action="throttle",source="deterministic",tier="free"} 1`,
	} {
		if !strings.Contains(string(body), want) {
			t.Errorf("/metrics has no %q", want)
		}
	}
}

// With server.grpc_addr set, Serve listens there beside HTTP, and stops
// both when its context ends.
func TestGRPCAddrServesAndStops(t *testing.T) {
	addr := "127.0.0.1:" + strconv.Itoa(freePort(t))
	g := startServer(t, mustParse(t, strings.Replace(testPolicies, "server:\n", "server:\n  grpc_addr: "+addr+"\n", 1)))
	conn, err := grpc.NewClient(addr, grpc.WithTransportCredentials(insecure.NewCredentials()))
	if err != nil {
		t.Fatal(err)
	}
	defer conn.Close()
	rls := rlsv3.NewRateLimitServiceClient(conn)
	var resp *rlsv3.RateLimitResponse
	waitUntil(t, 10*time.Second, "the gRPC listener", func() bool {
		resp, err = rls.ShouldRateLimit(context.Background(), rateLimitRequest(descriptor("api_key", "k_grpc_addr")))
		return err == nil
	})
	if resp.OverallCode != rlsv3.RateLimitResponse_OK {
		t.Fatalf("%v, want OK", resp)
	}
	g.stop(t)
	if c, err := net.DialTimeout("tcp", addr, time.Second); err == nil {
		c.Close()
		t.Fatalf("%s still accepts after Serve returned", addr)
	}
}
