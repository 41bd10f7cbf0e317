package serving

import (
	"context"
	"fmt"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/devflow/flowguard/quotas"
	rlsv3 "github.com/envoyproxy/go-control-plane/envoy/service/ratelimit/v3"
	"github.com/valyala/fasthttp"
	"google.golang.org/grpc"
	"google.golang.org/grpc/credentials/insecure"
)

// BenchmarkDecidePipeline is one decision without HTTP: policy resolve,
// deny/allow lists and the in-memory limiter.
func BenchmarkDecidePipeline(b *testing.B) {
	srv, err := New(mustParse(b, testPolicies), Options{})
	if err != nil {
		b.Fatal(err)
	}
	defer srv.Close()
	reqs := make([]DecideRequest, 1000)
	for i := range reqs {
		reqs[i] = DecideRequest{Key: "k_live_" + strconv.Itoa(i), Tenant: "acme", Endpoint: "GET /v1/balance", Cost: 1}
	}
	b.ReportAllocs()
	for i := 0; b.Loop(); i++ {
		srv.decide(context.Background(), &reqs[i%len(reqs)])
	}
}

// BenchmarkDecideHandler is the whole handler on an in-memory request:
// parse, decide, headers, JSON, metrics.
func BenchmarkDecideHandler(b *testing.B) {
	srv, err := New(mustParse(b, testPolicies), Options{})
	if err != nil {
		b.Fatal(err)
	}
	defer srv.Close()
	h := srv.Handler()
	bodies := make([][]byte, 1000)
	for i := range bodies {
		bodies[i] = []byte(`{"key":"k_live_` + strconv.Itoa(i) + `","tenant":"acme","endpoint":"GET /v1/balance","cost":1,"region":"local","client_ip":"203.0.113.7"}`)
	}
	var ctx fasthttp.RequestCtx
	b.ReportAllocs()
	for i := 0; b.Loop(); i++ {
		ctx.Request.Reset()
		ctx.Response.Reset()
		ctx.Request.Header.SetMethod("POST")
		ctx.Request.SetRequestURI("/v1/decide")
		ctx.Request.SetBody(bodies[i%len(bodies)])
		h(&ctx)
		if ctx.Response.StatusCode() != 200 {
			b.Fatalf("status %d", ctx.Response.StatusCode())
		}
	}
}

// benchPolicies admit every benchmark request: both protocols decide
// allows, so neither is measured on cheaper throttles.
const benchPolicies = `
policies:
  tiers:
    free:
      rate: 1000000
      period: 1s
      burst: 1000000
`

// BenchmarkGRPCvsHTTP drives gRPC ShouldRateLimit and HTTP /v1/decide on
// one server over loopback sockets, with the same 1000 keys and the same
// concurrency (workers goroutines), about b.N requests each, in the same
// run, and reports each protocol's requests a second and their ratio,
// grpc/http (the target is at least 0.7). Client and server share the
// machine's CPUs, so the ratio is of the whole round trip's cost. The HTTP
// client is fasthttp's, with a connection per worker (a gateway's
// keep-alive pool); the gRPC client multiplexes over grpcConns
// connection(s), as Envoy does over one per worker thread.
func BenchmarkGRPCvsHTTP(b *testing.B) {
	const workers, grpcConns, keys = 16, 1, 1000
	g := startGRPCServer(b, mustParse(b, benchPolicies))
	rls := []rlsv3.RateLimitServiceClient{g.rls}
	for range grpcConns - 1 {
		conn, err := grpc.NewClient(g.conn.Target(), grpc.WithTransportCredentials(insecure.NewCredentials()))
		if err != nil {
			b.Fatal(err)
		}
		b.Cleanup(func() { conn.Close() })
		rls = append(rls, rlsv3.NewRateLimitServiceClient(conn))
	}
	hc := &fasthttp.HostClient{Addr: strings.TrimPrefix(g.URL, "http://"), MaxConns: workers}
	bodies := make([][]byte, keys)
	reqs := make([]*rlsv3.RateLimitRequest, keys)
	for i := range keys {
		key := "k_bench_" + strconv.Itoa(i)
		bodies[i] = []byte(`{"key":"` + key + `","tenant":"acme","endpoint":"GET /v1/balance"}`)
		reqs[i] = rateLimitRequest(descriptor("api_key", key, "tenant", "acme", "method", "GET", "path", "/v1/balance"))
	}
	decideHTTP := func(i int) error {
		req, resp := fasthttp.AcquireRequest(), fasthttp.AcquireResponse()
		defer fasthttp.ReleaseRequest(req)
		defer fasthttp.ReleaseResponse(resp)
		req.SetRequestURI("/v1/decide")
		req.Header.SetHost(hc.Addr)
		req.Header.SetMethod("POST")
		req.SetBodyRaw(bodies[i%keys])
		if err := hc.Do(req, resp); err != nil {
			return err
		}
		if resp.StatusCode() != 200 {
			return fmt.Errorf("status %d: %s", resp.StatusCode(), resp.Body())
		}
		return nil
	}
	decideGRPC := func(i int) error {
		resp, err := rls[i%len(rls)].ShouldRateLimit(context.Background(), reqs[i%keys])
		if err == nil && resp.OverallCode != rlsv3.RateLimitResponse_OK {
			err = fmt.Errorf("overall code %v", resp.OverallCode)
		}
		return err
	}
	// run makes n requests with workers goroutines and returns how long
	// they took.
	run := func(n int, decide func(int) error) time.Duration {
		var next atomic.Int64
		var failed atomic.Pointer[error]
		var wg sync.WaitGroup
		start := time.Now()
		for range workers {
			wg.Go(func() {
				for i := int(next.Add(1)); i <= n && failed.Load() == nil; i = int(next.Add(1)) {
					if err := decide(i); err != nil {
						failed.Store(&err)
					}
				}
			})
		}
		wg.Wait()
		if err := failed.Load(); err != nil {
			b.Fatal(*err)
		}
		return time.Since(start)
	}
	// Every key's epoch is chosen, and both clients' connections are up.
	run(2*keys, decideHTTP)
	run(2*keys, decideGRPC)
	// The two alternate in rounds, so that a shared machine's load, which
	// comes and goes, weighs on both alike.
	const rounds = 10
	var httpTook, grpcTook time.Duration
	b.ResetTimer()
	for r := range rounds {
		n := b.N / rounds
		if r == rounds-1 {
			n += b.N % rounds
		}
		httpTook += run(n, decideHTTP)
		grpcTook += run(n, decideGRPC)
	}
	b.StopTimer()
	b.ReportMetric(0, "ns/op")
	b.ReportMetric(float64(b.N)/httpTook.Seconds(), "http-req/s")
	b.ReportMetric(float64(b.N)/grpcTook.Seconds(), "grpc-req/s")
	b.ReportMetric(httpTook.Seconds()/grpcTook.Seconds(), "grpc/http")
}

// BenchmarkDailyQuota is one decision of a rule with daily_quota: fitted
// and a quota installed (usage recorded, then the second window) against
// the same decision without it, interleaved in the same run; it reports
// the ratio of their throughputs, daily/rate (issue 17 item 1). One op is
// 1000 decisions of each.
func BenchmarkDailyQuota(b *testing.B) {
	const base = "policies:\n  tiers:\n    free:\n      rate: 1000000\n      period: 1s\n      burst: 1000000\n"
	plain, err := New(mustParse(b, base), Options{})
	if err != nil {
		b.Fatal(err)
	}
	defer plain.Close()
	daily, err := New(mustParse(b, base+"      daily_quota: fitted\n"), Options{})
	if err != nil {
		b.Fatal(err)
	}
	defer daily.Close()
	daily.pipe.SetDailyQuotas([]quotas.Quota{{Tier: "free", Endpoint: quotas.AllEndpoints, Quota: 1e9}})
	reqs := make([]DecideRequest, 1000)
	for i := range reqs {
		reqs[i] = DecideRequest{Key: "k_live_" + strconv.Itoa(i), Endpoint: "GET /v1/balance", Cost: 1}
	}
	// Each iteration is a chunk of each, timed apart, so that the clock's
	// reads weigh nothing.
	var tPlain, tDaily time.Duration
	b.ReportAllocs()
	for b.Loop() {
		start := time.Now()
		for j := range reqs {
			plain.decide(context.Background(), &reqs[j])
		}
		mid := time.Now()
		for j := range reqs {
			if d := daily.decide(context.Background(), &reqs[j]); d.Daily == 0 || d.Action != "allow" {
				b.Fatalf("%+v, want an allowed decision under a daily window", d)
			}
		}
		tPlain, tDaily = tPlain+mid.Sub(start), tDaily+time.Since(mid)
	}
	n := float64(b.N * len(reqs))
	b.ReportMetric(float64(tPlain.Nanoseconds())/n, "rate-ns/decision")
	b.ReportMetric(float64(tDaily.Nanoseconds())/n, "daily-ns/decision")
	b.ReportMetric(tPlain.Seconds()/tDaily.Seconds(), "daily/rate")
}
