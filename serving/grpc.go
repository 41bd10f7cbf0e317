package serving

import (
	"context"
	"runtime"
	"strconv"
	"time"
	"unicode/utf8"

	corev3 "github.com/envoyproxy/go-control-plane/envoy/config/core/v3"
	rlv3 "github.com/envoyproxy/go-control-plane/envoy/extensions/common/ratelimit/v3"
	rlsv3 "github.com/envoyproxy/go-control-plane/envoy/service/ratelimit/v3"
	"google.golang.org/grpc"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/encoding"
	_ "google.golang.org/grpc/encoding/proto" // registers the "proto" codec grpcCodec delegates to
	"google.golang.org/grpc/health"
	healthpb "google.golang.org/grpc/health/grpc_health_v1"
	"google.golang.org/grpc/mem"
	"google.golang.org/grpc/status"
	"google.golang.org/protobuf/proto"
	"google.golang.org/protobuf/types/known/durationpb"

	"github.com/devflow/flowguard/internal/config"
	"github.com/devflow/flowguard/pipeline"
)

// grpcService serves Envoy's rate-limit API,
// envoy.service.ratelimit.v3.RateLimitService/ShouldRateLimit, on
// server.grpc_addr: each descriptor of a request is one decision of the
// pipeline, made by the same call /v1/decide makes (Server.decide). It is
// safe for concurrent use, as gRPC calls it.
type grpcService struct {
	s       *Server
	domain  string
	maxDesc int
	maxCost int64
	mapping descriptorMapping
	srv     *grpc.Server
	health  *health.Server
}

// rateLimitServiceName is the service Envoy's ratelimit filter calls.
const rateLimitServiceName = "envoy.service.ratelimit.v3.RateLimitService"

func newGRPCService(s *Server, sc config.Server) *grpcService {
	g := &grpcService{
		s: s, domain: sc.GRPC.Domain, maxDesc: sc.GRPC.MaxDescriptors, maxCost: sc.MaxCost,
		mapping: newDescriptorMapping(sc.GRPC.Descriptors, sc.GRPC.MaxEntries),
		health:  health.NewServer(),
	}
	g.srv = grpc.NewServer(
		grpc.MaxRecvMsgSize(sc.GRPC.MaxMessageBytes),
		grpc.ForceServerCodecV2(grpcCodec{proto: encoding.GetCodecV2("proto")}),
		// A pool of stream workers, not a goroutine per call, whose new
		// stack grows on every call: BenchmarkGRPCvsHTTP's grpc/http
		// went from about 0.45 to 0.54 with it.
		grpc.NumStreamWorkers(uint32(runtime.GOMAXPROCS(0))),
	)
	g.srv.RegisterService(&rateLimitServiceDesc, g)
	healthpb.RegisterHealthServer(g.srv, g.health)
	g.health.SetServingStatus(rateLimitServiceName, healthpb.HealthCheckResponse_SERVING)
	return g
}

// stop turns the health service to NOT_SERVING, lets in-flight calls
// finish until ctx ends, then closes what is left.
func (g *grpcService) stop(ctx context.Context) {
	g.health.Shutdown()
	done := make(chan struct{})
	go func() { g.srv.GracefulStop(); close(done) }()
	select {
	case <-done:
	case <-ctx.Done():
		g.s.log.Warn("gRPC drain deadline passed; closing remaining streams")
		g.srv.Stop()
		<-done
	}
}

// rateLimitServiceDesc is the generated RateLimitService_ServiceDesc with
// a handler of its own: it decodes the request itself, so that a message
// that is not a valid RateLimitRequest (invalid UTF-8 in a string, a
// truncated field) is an InvalidArgument with the reason, where gRPC's
// decoder would answer Internal.
var rateLimitServiceDesc = grpc.ServiceDesc{
	ServiceName: rateLimitServiceName,
	HandlerType: (*rlsv3.RateLimitServiceServer)(nil),
	Methods: []grpc.MethodDesc{{
		MethodName: "ShouldRateLimit",
		Handler: func(srv any, ctx context.Context, dec func(any) error, _ grpc.UnaryServerInterceptor) (any, error) {
			return srv.(*grpcService).handle(ctx, dec)
		},
	}},
	Metadata: "envoy/service/ratelimit/v3/rls.proto",
}

// handle decodes, decides and counts one call.
func (g *grpcService) handle(ctx context.Context, dec func(any) error) (any, error) {
	start := time.Now()
	resp, err := g.decode(ctx, dec)
	code := "OK"
	switch {
	case err != nil:
		code = status.Code(err).String()
	case resp.OverallCode == rlsv3.RateLimitResponse_OVER_LIMIT:
		code = "OVER_LIMIT"
	}
	g.s.metrics.grpcRequest(code).Inc()
	g.s.metrics.grpcLatency.Observe(time.Since(start).Seconds())
	return resp, err
}

func (g *grpcService) decode(ctx context.Context, dec func(any) error) (*rlsv3.RateLimitResponse, error) {
	var raw rawMessage
	if err := dec(&raw); err != nil {
		return nil, err // a status already: ResourceExhausted above max_message_bytes
	}
	req := new(rlsv3.RateLimitRequest)
	err := proto.Unmarshal(raw.buf.ReadOnlyData(), req)
	raw.buf.Free()
	if err != nil {
		return nil, status.Error(codes.InvalidArgument, "the message is not a valid RateLimitRequest: "+err.Error())
	}
	return g.ShouldRateLimit(ctx, req)
}

// ShouldRateLimit decides every descriptor of req, after checking them
// all: a request with one bad descriptor spends no budget. The overall
// code is OVER_LIMIT when any descriptor's decision is a throttle or a
// block (Envoy's ratelimit filter has no other refusal); the response
// headers are those /v1/decide sets, for the decision that governs: the
// first refused, else the one with the least remaining.
func (g *grpcService) ShouldRateLimit(_ context.Context, req *rlsv3.RateLimitRequest) (*rlsv3.RateLimitResponse, error) {
	reqs, apiErr := g.requests(req)
	if apiErr != nil {
		return nil, status.Error(codes.InvalidArgument, apiErr.message)
	}
	resp := &rlsv3.RateLimitResponse{
		OverallCode: rlsv3.RateLimitResponse_OK,
		Statuses:    make([]*rlsv3.RateLimitResponse_DescriptorStatus, len(reqs)),
	}
	var gov Decision
	for i := range reqs {
		// Like /v1/decide, a decision once started is finished whatever
		// the caller does: the budget it spends must be answered for.
		d := g.s.decide(context.Background(), &reqs[i])
		g.s.metrics.countDecision(&d)
		st := descriptorStatus(&d)
		resp.Statuses[i] = st
		over := st.Code == rlsv3.RateLimitResponse_OVER_LIMIT
		if over && resp.OverallCode != rlsv3.RateLimitResponse_OVER_LIMIT {
			resp.OverallCode, gov = rlsv3.RateLimitResponse_OVER_LIMIT, d
		} else if i == 0 || resp.OverallCode == rlsv3.RateLimitResponse_OK && d.Remaining < gov.Remaining {
			gov = d
		}
	}
	resp.ResponseHeadersToAdd = responseHeaders(&gov)
	return resp, nil
}

// requests validates req into one decision request per descriptor.
func (g *grpcService) requests(req *rlsv3.RateLimitRequest) ([]DecideRequest, *apiError) {
	if req.Domain != g.domain {
		return nil, badRequest("unknown_domain", "unknown domain "+strconv.Quote(req.Domain)+
			": this flowguard serves domain "+strconv.Quote(g.domain)+" (server.grpc.domain)")
	}
	switch n := len(req.Descriptors); {
	case n == 0:
		return nil, badRequest("no_descriptors", "the request has no descriptors: send at least one, with an "+
			strconv.Quote(g.mapping.names[fieldKey])+" entry")
	case n > g.maxDesc:
		return nil, badRequest("too_many_descriptors", strconv.Itoa(n)+" descriptors is above the cap of "+
			strconv.Itoa(g.maxDesc)+" (server.grpc.max_descriptors)")
	}
	out := make([]DecideRequest, len(req.Descriptors))
	for i, d := range req.Descriptors {
		r, apiErr := g.mapping.request(i, d)
		if apiErr != nil {
			return nil, apiErr
		}
		if r.Cost, apiErr = g.cost(i, req.HitsAddend, d); apiErr != nil {
			return nil, apiErr
		}
		out[i] = r
	}
	return out, nil
}

// cost is the descriptor's hits_addend, else the request's; 0 counts as
// 1, and the bound is /v1/decide's (server.max_cost).
func (g *grpcService) cost(i int, hits uint32, d *rlv3.RateLimitDescriptor) (int64, *apiError) {
	n := uint64(hits)
	if d.GetHitsAddend() != nil {
		n = d.GetHitsAddend().GetValue()
	}
	if d.GetIsNegativeHits() {
		return 0, badRequest("invalid_cost", descriptorName(i)+": is_negative_hits is not supported: flowguard does not give budget back")
	}
	switch {
	case n == 0:
		return 1, nil
	case n > uint64(g.maxCost):
		return 0, badRequest("invalid_cost", descriptorName(i)+": hits_addend "+strconv.FormatUint(n, 10)+
			" is out of range 0.."+strconv.FormatInt(g.maxCost, 10)+" (0 counts as 1; server.max_cost)")
	}
	return int64(n), nil
}

func descriptorName(i int) string { return "descriptor " + strconv.Itoa(i) }

// descriptorField is the request field a descriptor entry carries.
type descriptorField uint8

const (
	fieldKey descriptorField = iota
	fieldTenant
	fieldMethod
	fieldPath
	fieldEndpoint
	fieldClientIP
	numFields
)

// fieldLimits are each field's length cap: /v1/decide's.
var fieldLimits = [numFields]int{maxKeyLen, maxFieldLen, maxFieldLen, maxFieldLen, maxFieldLen, maxFieldLen}

// descriptorMapping is server.grpc.descriptors compiled: which entry key
// carries which field, and its rank among the field's keys (0 first).
type descriptorMapping struct {
	keys       []mappedKey
	names      [numFields]string // each field's first entry key, for messages
	maxEntries int
}

type mappedKey struct {
	key   string
	field descriptorField
	rank  int
}

func newDescriptorMapping(d config.GRPCDescriptors, maxEntries int) descriptorMapping {
	m := descriptorMapping{maxEntries: maxEntries}
	for f, field := range d.Fields() {
		for rank, k := range field.Keys {
			m.keys = append(m.keys, mappedKey{key: k, field: descriptorField(f), rank: rank})
		}
		if len(field.Keys) > 0 {
			m.names[f] = field.Keys[0]
		}
	}
	return m
}

// lookup is a linear scan: a mapping has a handful of keys, fewer than a
// map needs to pay off.
func (m *descriptorMapping) lookup(key string) (mappedKey, bool) {
	for _, k := range m.keys {
		if k.key == key {
			return k, true
		}
	}
	return mappedKey{}, false
}

// request maps descriptor i to a decision request (its cost aside).
// Entries the mapping does not name (generic_key, …) are Envoy's own and
// ignored, as is the descriptor's limit override: the policies set the
// budget. It never panics, whatever the descriptor holds.
func (m *descriptorMapping) request(i int, d *rlv3.RateLimitDescriptor) (DecideRequest, *apiError) {
	entries := d.GetEntries()
	switch {
	case len(entries) == 0:
		return DecideRequest{}, badRequest("empty_descriptor", descriptorName(i)+" has no entries")
	case len(entries) > m.maxEntries:
		return DecideRequest{}, badRequest("too_many_entries", descriptorName(i)+" has "+strconv.Itoa(len(entries))+
			" entries, above the cap of "+strconv.Itoa(m.maxEntries)+" (server.grpc.max_entries)")
	}
	var vals [numFields]string
	var rank [numFields]int
	for _, e := range entries {
		k, ok := m.lookup(e.GetKey())
		if !ok {
			// Not ours, but checked as the wire would: in-process callers
			// get the answer a gRPC client gets.
			if !utf8.ValidString(e.GetKey()) || !utf8.ValidString(e.GetValue()) {
				return DecideRequest{}, badRequest("invalid_utf8", descriptorName(i)+" has an entry that is not valid UTF-8")
			}
			continue
		}
		v := e.GetValue()
		if len(v) > fieldLimits[k.field] || !utf8.ValidString(v) {
			_, apiErr := fieldValue(descriptorName(i)+" entry "+strconv.Quote(k.key), []byte(v), fieldLimits[k.field])
			return DecideRequest{}, apiErr
		}
		switch cur := rank[k.field]; {
		case cur == 0 || k.rank+1 < cur: // the field's first entry, or one its list prefers
			vals[k.field], rank[k.field] = v, k.rank+1
		case cur == k.rank+1:
			return DecideRequest{}, badRequest("duplicate_entry", descriptorName(i)+" has entry "+strconv.Quote(k.key)+" twice")
		}
	}
	if rank[fieldKey] == 0 {
		return DecideRequest{}, badRequest("missing_key", descriptorName(i)+" has no API key entry ("+
			strconv.Quote(m.names[fieldKey])+", server.grpc.descriptors.key)")
	}
	if vals[fieldKey] == "" {
		return DecideRequest{}, badRequest("missing_key", descriptorName(i)+": the API key entry is empty")
	}
	r := DecideRequest{Key: vals[fieldKey], Tenant: vals[fieldTenant], Endpoint: vals[fieldEndpoint], ClientIP: vals[fieldClientIP]}
	if rank[fieldEndpoint] == 0 {
		r.Endpoint = vals[fieldPath]
		if vals[fieldMethod] != "" {
			r.Endpoint = vals[fieldMethod] + " " + vals[fieldPath]
		}
	}
	return r, nil
}

// descriptorStatus is one decision as Envoy reads it.
func descriptorStatus(d *Decision) *rlsv3.RateLimitResponse_DescriptorStatus {
	code := rlsv3.RateLimitResponse_OK
	if d.Action != pipeline.ActionAllow {
		code = rlsv3.RateLimitResponse_OVER_LIMIT
	}
	return &rlsv3.RateLimitResponse_DescriptorStatus{
		Code:               code,
		CurrentLimit:       currentLimit(d),
		LimitRemaining:     uint32(min(max(d.Remaining, 0), 1<<32-1)),
		DurationUntilReset: durationpb.New(time.Duration(max(d.ResetMS, 0)) * time.Millisecond),
	}
}

// rateUnits are the units a current_limit can be given in.
var rateUnits = [...]struct {
	unit rlsv3.RateLimitResponse_RateLimit_Unit
	d    time.Duration
}{
	{rlsv3.RateLimitResponse_RateLimit_SECOND, time.Second},
	{rlsv3.RateLimitResponse_RateLimit_MINUTE, time.Minute},
	{rlsv3.RateLimitResponse_RateLimit_HOUR, time.Hour},
	{rlsv3.RateLimitResponse_RateLimit_DAY, 24 * time.Hour},
}

// currentLimit is the enforced budget (the rule's rate after the
// multiplier) as requests per unit: exact when the period is one unit,
// else restated over the smallest unit at least as long (10 per 10s is 60
// per minute), rounded down and at least 1.
func currentLimit(d *Decision) *rlsv3.RateLimitResponse_RateLimit {
	rate, period := d.Budget.Rate, d.Budget.Period
	u := rateUnits[len(rateUnits)-1]
	for _, c := range rateUnits {
		if c.d >= period {
			u = c
			break
		}
	}
	n := rate
	if period > 0 && period != u.d {
		n = int64(float64(rate) * float64(u.d) / float64(period))
	}
	return &rlsv3.RateLimitResponse_RateLimit{
		Name:            d.Rule.Name,
		RequestsPerUnit: uint32(min(max(n, 1), 1<<32-1)),
		Unit:            u.unit,
	}
}

// responseHeaders are the headers /v1/decide sets (headers.go) that
// Envoy adds to the client's response, and X-Flowguard-Decision, which
// tells a throttle from a block (both are OVER_LIMIT).
func responseHeaders(d *Decision) []*corev3.HeaderValue {
	var buf [160]byte
	policy := string(appendRateLimitPolicy(buf[:0], d))
	limit := string(appendRateLimit(buf[:0], d))
	h := make([]*corev3.HeaderValue, 0, 4)
	h = append(h,
		&corev3.HeaderValue{Key: "RateLimit-Policy", Value: policy},
		&corev3.HeaderValue{Key: "RateLimit", Value: limit},
		&corev3.HeaderValue{Key: "X-Flowguard-Decision", Value: d.Action})
	if retry, ok := retryAfter(d); ok {
		h = append(h, &corev3.HeaderValue{Key: "Retry-After", Value: strconv.FormatInt(retry, 10)})
	}
	return h
}

// rawMessage is a request's bytes, which grpcCodec hands over undecoded.
type rawMessage struct{ buf mem.Buffer }

// grpcCodec is gRPC's proto codec, but a rawMessage keeps the bytes:
// rateLimitServiceDesc decodes them itself.
type grpcCodec struct{ proto encoding.CodecV2 }

func (c grpcCodec) Marshal(v any) (mem.BufferSlice, error) { return c.proto.Marshal(v) }

func (c grpcCodec) Unmarshal(data mem.BufferSlice, v any) error {
	if r, ok := v.(*rawMessage); ok {
		r.buf = data.MaterializeToBuffer(mem.DefaultBufferPool())
		return nil
	}
	return c.proto.Unmarshal(data, v)
}

func (grpcCodec) Name() string { return "proto" }
