// Command baseline is the ceiling that `make bench` measures flowguard
// against: a bare fasthttp server whose /v1/decide parses and validates the
// same JSON with the same parser flowguard uses, and answers a fixed
// decision of the same size. Everything flowguard does beyond this —
// policy, limiter, metrics, headers — is what the ratio prices.
package main

import (
	"flag"
	"log"

	"github.com/valyala/fasthttp"
	"github.com/valyala/fastjson"
)

const answer = `{"decision":"allow","limit":100,"remaining":499,"reset_ms":10,"retry_after_ms":0,"multiplier":1,"arm":"","propensity":1,"variant":"static","experiment":"","model_version":"","decision_id":"dmwt5sywv89a-1","fallback":false,"reason":""}`

func main() {
	addr := flag.String("addr", "127.0.0.1:18090", "listen address")
	flag.Parse()
	var parsers fastjson.ParserPool
	h := func(ctx *fasthttp.RequestCtx) {
		p := parsers.Get()
		defer parsers.Put(p)
		v, err := p.ParseBytes(ctx.PostBody())
		if err != nil || len(v.GetStringBytes("key")) == 0 || v.GetInt64("cost") < 0 {
			ctx.SetStatusCode(400)
			ctx.SetBodyString(`{"error":{"code":"bad_request","message":"bad request"}}`)
			return
		}
		_ = v.GetStringBytes("tenant")
		_ = v.GetStringBytes("endpoint")
		ctx.SetContentType("application/json")
		ctx.SetBodyString(answer)
	}
	srv := &fasthttp.Server{Handler: h, Name: "flowguard", NoDefaultDate: true, NoDefaultContentType: true}
	log.Fatal(srv.ListenAndServe(*addr))
}
