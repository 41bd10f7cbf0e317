package serving

import (
	"context"
	"strconv"
	"testing"

	"github.com/valyala/fasthttp"
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
