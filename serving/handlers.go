package serving

import (
	"bytes"
	"context"
	"errors"
	"net"
	"net/http/pprof"
	"strconv"
	"time"

	"github.com/prometheus/client_golang/prometheus/promhttp"
	"github.com/valyala/fasthttp"
	"github.com/valyala/fasthttp/fasthttpadaptor"
	"github.com/valyala/fasthttp/pprofhandler"

	"github.com/devflow/flowguard/pipeline"
)

// Handler returns the service's router. Every response to a client error is
// a 4xx with a JSON error body; no input produces a 5xx or a panic.
func (s *Server) Handler() fasthttp.RequestHandler {
	metricsHandler := fasthttpadaptor.NewFastHTTPHandler(promhttp.HandlerFor(s.metrics.reg, promhttp.HandlerOpts{
		ErrorHandling: promhttp.ContinueOnError,
	}))
	return func(ctx *fasthttp.RequestCtx) {
		switch string(ctx.Path()) {
		case "/v1/decide":
			if s.allowMethod(ctx, "POST") {
				s.handleDecide(ctx)
			}
		case "/v1/decide/batch":
			if s.allowMethod(ctx, "POST") {
				s.handleBatch(ctx)
			}
		case "/v1/check":
			s.handleCheck(ctx) // any method: NGINX auth_request keeps the original one
		case "/healthz":
			if s.allowMethod(ctx, "GET", "HEAD") {
				ctx.SetContentType("application/json")
				ctx.SetBodyString(`{"status":"ok"}`)
			}
		case "/readyz":
			if s.allowMethod(ctx, "GET", "HEAD") {
				s.handleReady(ctx)
			}
		case "/metrics":
			if s.allowMethod(ctx, "GET", "HEAD") {
				metricsHandler(ctx)
			}
		case "/v1/outcomes":
			if s.allowMethod(ctx, "POST") {
				s.handleOutcomes(ctx)
			}
		case "/v1/labels": // admin: serving/auth.go
			if s.admitAdmin(ctx, "labels") && s.allowMethod(ctx, "POST") {
				s.handleLabels(ctx)
			}
		case "/v1/quotas": // admin: serving/quotas.go
			if s.admitAdmin(ctx, "quotas") && s.allowMethod(ctx, "GET", "HEAD") {
				s.handleQuotas(ctx, false)
			}
		case "/v1/quotas/refit": // admin
			if s.admitAdmin(ctx, "quotas") && s.allowMethod(ctx, "POST") {
				s.handleQuotas(ctx, true)
			}
		default:
			if bytes.HasPrefix(ctx.Path(), pprofPrefix) { // admin: the Go profiles, for operators
				if s.admitAdmin(ctx, "pprof") && s.allowMethod(ctx, "GET", "HEAD", "POST") {
					servePprof(ctx)
				}
				return
			}
			if key, ok := explainKey(string(ctx.Path())); ok { // admin
				if s.admitAdmin(ctx, "explain") && s.allowMethod(ctx, "GET", "HEAD") {
					s.handleExplain(ctx, key)
				}
				return
			}
			s.writeError(ctx, &apiError{status: 404, code: "not_found", message: "no such endpoint: " + string(ctx.Path())})
		}
	}
}

// pprofPrefix is where the admin token guards net/http/pprof's handlers
// (fasthttp's pprofhandler): heap, goroutine, profile?seconds=N (N under
// the 10 s write timeout), trace and the rest.
var pprofPrefix = []byte("/debug/pprof/")

var pprofIndex = fasthttpadaptor.NewFastHTTPHandlerFunc(pprof.Index)

// servePprof serves a profile. The index is net/http/pprof's own:
// pprofhandler (fasthttp v1.77) answers 404 to /debug/pprof/, the one
// path whose relative links resolve.
func servePprof(ctx *fasthttp.RequestCtx) {
	if bytes.Equal(ctx.Path(), pprofPrefix) {
		pprofIndex(ctx)
		return
	}
	pprofhandler.PprofHandler(ctx)
}

func (s *Server) allowMethod(ctx *fasthttp.RequestCtx, methods ...string) bool {
	m := string(ctx.Method())
	for _, want := range methods {
		if m == want {
			return true
		}
	}
	allow := methods[0]
	for _, x := range methods[1:] {
		allow += ", " + x
	}
	ctx.Response.Header.Set("Allow", allow)
	s.writeError(ctx, &apiError{status: 405, code: "method_not_allowed", message: m + " is not allowed here; use " + allow})
	return false
}

func (s *Server) handleDecide(ctx *fasthttp.RequestCtx) {
	start := time.Now()
	body := ctx.PostBody()
	if len(body) > s.cfg.Server.MaxBodyBytes {
		s.writeError(ctx, bodyTooLarge(s.cfg.Server.MaxBodyBytes))
		return
	}
	p := s.parsers.Get()
	req, apiErr := parseDecide(p, body, s.cfg.Server.MaxCost)
	s.parsers.Put(p)
	if apiErr != nil {
		s.writeError(ctx, apiErr)
		return
	}
	d := s.decide(context.Background(), &req)
	s.writeDecision(ctx, &d, fasthttp.StatusOK)
	s.metrics.countDecision(&d)
	s.metrics.latency.Observe(time.Since(start).Seconds())
}

func (s *Server) handleBatch(ctx *fasthttp.RequestCtx) {
	start := time.Now()
	body := ctx.PostBody()
	if len(body) > s.cfg.Server.MaxBatchBodyBytes {
		s.writeError(ctx, bodyTooLarge(s.cfg.Server.MaxBatchBodyBytes))
		return
	}
	if len(body) == 0 {
		s.writeError(ctx, badRequest("empty_body", "request body is empty; send a JSON array of decide requests"))
		return
	}
	p := s.parsers.Get()
	defer s.parsers.Put(p)
	v, err := p.ParseBytes(body)
	if err != nil {
		s.writeError(ctx, badRequest("malformed_json", "request body is not valid JSON: "+err.Error()))
		return
	}
	items, err := v.Array()
	if err != nil {
		s.writeError(ctx, badRequest("wrong_type", "batch must be a JSON array, got "+v.Type().String()))
		return
	}
	if len(items) > s.cfg.Server.MaxBatch {
		s.writeError(ctx, &apiError{status: 413, code: "batch_too_large",
			message: strconv.Itoa(len(items)) + " items is above the batch cap of " + strconv.Itoa(s.cfg.Server.MaxBatch)})
		return
	}
	bp := s.bufs.Get().(*[]byte)
	b := append((*bp)[:0], '[')
	for i, item := range items {
		if i > 0 {
			b = append(b, ',')
		}
		req, apiErr := decodeDecide(item, s.cfg.Server.MaxCost)
		if apiErr != nil {
			b = appendError(b, apiErr)
			continue
		}
		d := s.decide(context.Background(), &req)
		b = appendDecision(b, &d)
		s.metrics.countDecision(&d)
	}
	b = append(b, ']')
	ctx.SetContentType("application/json")
	ctx.SetBody(b)
	*bp = b
	s.bufs.Put(bp)
	s.metrics.latency.Observe(time.Since(start).Seconds())
	s.countResponse(ctx, "batch")
}

// handleCheck is the NGINX auth_request / forward-auth form: the request
// comes in headers, the decision is the status code (200 allow, 429
// throttle, 403 block), with the same headers and body as /v1/decide.
func (s *Server) handleCheck(ctx *fasthttp.RequestCtx) {
	start := time.Now()
	h := &ctx.Request.Header
	req := DecideRequest{ClientIP: clientIP(ctx), Cost: 1}
	if len(h.Peek("X-Api-Key")) == 0 {
		s.writeError(ctx, &apiError{status: 401, code: "missing_key", message: "X-Api-Key header is required"})
		return
	}
	var apiErr *apiError
	if req.Key, apiErr = fieldValue("X-Api-Key", h.Peek("X-Api-Key"), maxKeyLen); apiErr == nil {
		if req.Tenant, apiErr = fieldValue("X-Tenant", h.Peek("X-Tenant"), maxFieldLen); apiErr == nil {
			req.Endpoint, apiErr = fieldValue("the original method and URI", []byte(checkEndpoint(h)), 2*maxFieldLen)
		}
	}
	if apiErr != nil {
		s.writeError(ctx, apiErr)
		return
	}
	if c := h.Peek("X-Cost"); len(c) > 0 {
		n, err := strconv.ParseInt(string(c), 10, 64)
		if err != nil || n < 1 || n > s.cfg.Server.MaxCost {
			s.writeError(ctx, badRequest("invalid_cost", "X-Cost must be a whole number in 1.."+strconv.FormatInt(s.cfg.Server.MaxCost, 10)))
			return
		}
		req.Cost = n
	}
	d := s.decide(context.Background(), &req)
	status := fasthttp.StatusOK
	switch d.Action {
	case pipeline.ActionThrottle:
		status = fasthttp.StatusTooManyRequests
		// NGINX's auth_request turns any status but 2xx, 401 and 403
		// into a 500: its configuration asks for a 403 and maps it back
		// to a 429 from X-Flowguard-Decision (examples/gateways/nginx.conf).
		if string(h.Peek("X-Flowguard-Mode")) == "auth_request" {
			status = fasthttp.StatusForbidden
		}
	case pipeline.ActionBlock:
		status = fasthttp.StatusForbidden
	}
	ctx.Response.Header.Set("X-Flowguard-Decision", d.Action)
	s.writeDecision(ctx, &d, status)
	s.metrics.countDecision(&d)
	s.metrics.latency.Observe(time.Since(start).Seconds())
}

// checkEndpoint builds "METHOD /path" from X-Original-Method and
// X-Original-URI (NGINX), or X-Forwarded-Method and X-Forwarded-Uri
// (Traefik and others).
func checkEndpoint(h *fasthttp.RequestHeader) string {
	method, uri := h.Peek("X-Original-Method"), h.Peek("X-Original-URI")
	if len(method) == 0 {
		method = h.Peek("X-Forwarded-Method")
	}
	if len(uri) == 0 {
		uri = h.Peek("X-Forwarded-Uri")
	}
	if len(method) == 0 {
		return string(uri)
	}
	return string(method) + " " + string(uri)
}

func clientIP(ctx *fasthttp.RequestCtx) string {
	if ip := ctx.Request.Header.Peek("X-Real-IP"); len(ip) > 0 {
		return string(ip)
	}
	if xff := ctx.Request.Header.Peek("X-Forwarded-For"); len(xff) > 0 {
		for i, c := range xff {
			if c == ',' {
				return string(xff[:i])
			}
		}
		return string(xff)
	}
	return ctx.RemoteIP().String()
}

func (s *Server) writeDecision(ctx *fasthttp.RequestCtx, d *Decision, status int) {
	ctx.Response.Header.DisableNormalizing()
	setRateLimitHeaders(&ctx.Response.Header, d)
	ctx.SetStatusCode(status)
	ctx.Response.Header.SetContentType("application/json")
	bp := s.bufs.Get().(*[]byte)
	b := appendDecision((*bp)[:0], d)
	ctx.SetBody(b)
	*bp = b
	s.bufs.Put(bp)
	s.countResponse(ctx, handlerName(ctx))
}

// appendDecision appends the decision's JSON object.
func appendDecision(b []byte, d *Decision) []byte {
	b = append(b, `{"decision":`...)
	b = appendJSONString(b, d.Action)
	b = append(b, `,"limit":`...)
	b = strconv.AppendInt(b, d.Limit, 10)
	b = append(b, `,"remaining":`...)
	b = strconv.AppendInt(b, d.Remaining, 10)
	b = append(b, `,"reset_ms":`...)
	b = strconv.AppendInt(b, d.ResetMS, 10)
	b = append(b, `,"retry_after_ms":`...)
	b = strconv.AppendInt(b, d.RetryAfterMS, 10)
	b = append(b, `,"multiplier":`...)
	b = appendFloat(b, d.Multiplier)
	b = append(b, `,"arm":`...)
	b = appendJSONString(b, d.Arm)
	b = append(b, `,"propensity":`...)
	b = appendFloat(b, d.Propensity)
	b = append(b, `,"variant":`...)
	b = appendJSONString(b, d.Variant)
	b = append(b, `,"experiment":`...)
	b = appendJSONString(b, d.Experiment)
	b = append(b, `,"model_version":`...)
	b = appendJSONString(b, d.ModelVersion)
	b = append(b, `,"decision_id":`...)
	b = appendJSONString(b, d.DecisionID)
	b = append(b, `,"fallback":`...)
	b = strconv.AppendBool(b, d.Fallback)
	b = append(b, `,"reason":`...)
	b = appendJSONString(b, d.Reason)
	return append(b, '}')
}

func (s *Server) writeError(ctx *fasthttp.RequestCtx, e *apiError) {
	ctx.SetStatusCode(e.status)
	ctx.SetContentType("application/json")
	ctx.SetBody(appendError(nil, e))
	s.countResponse(ctx, handlerName(ctx))
}

func bodyTooLarge(limit int) *apiError {
	return &apiError{status: 413, code: "body_too_large", message: "request body is larger than " + strconv.Itoa(limit) + " bytes"}
}

// transportError answers what fasthttp rejects before a handler runs: a
// body over the cap, a malformed request line, a read timeout.
func (s *Server) transportError(ctx *fasthttp.RequestCtx, err error) {
	var ne net.Error
	switch {
	case errors.Is(err, fasthttp.ErrBodyTooLarge):
		s.writeError(ctx, bodyTooLarge(s.http.MaxRequestBodySize))
	case errors.Is(err, fasthttp.ErrTimeout) || (errors.As(err, &ne) && ne.Timeout()):
		s.writeError(ctx, &apiError{status: 408, code: "request_timeout", message: "request was not read in time"})
	default:
		s.writeError(ctx, badRequest("malformed_request", "cannot parse the HTTP request"))
	}
}

func handlerName(ctx *fasthttp.RequestCtx) string {
	switch string(ctx.Path()) {
	case "/v1/decide":
		return "decide"
	case "/v1/decide/batch":
		return "batch"
	case "/v1/check":
		return "check"
	case "/healthz", "/readyz", "/metrics":
		return string(ctx.Path()[1:])
	case "/v1/labels":
		return "labels"
	case "/v1/quotas", "/v1/quotas/refit":
		return "quotas"
	case "/v1/outcomes":
		return "outcomes"
	}
	return "other"
}

func (s *Server) countResponse(ctx *fasthttp.RequestCtx, handler string) {
	s.metrics.response(handler, ctx.Response.StatusCode()).Inc()
}

// handleOutcomes serves POST /v1/outcomes: the gateway reports how a key's
// responses went, {"key":…,"requests":N,"errors":N,"auth_failures":N},
// which feeds the key's error and auth-failure rate features.
func (s *Server) handleOutcomes(ctx *fasthttp.RequestCtx) {
	body := ctx.PostBody()
	if len(body) > s.cfg.Server.MaxBodyBytes {
		s.writeError(ctx, bodyTooLarge(s.cfg.Server.MaxBodyBytes))
		return
	}
	p := s.parsers.Get()
	defer s.parsers.Put(p)
	key, o, apiErr := parseOutcome(p, body)
	if apiErr != nil {
		s.writeError(ctx, apiErr)
		return
	}
	s.pipe.Features().ObserveOutcome(key, o, s.pipe.Now())
	ctx.SetContentType("application/json")
	ctx.SetBodyString(`{"status":"recorded"}`)
}
