package serving

import (
	"bytes"
	"encoding/json"
	"testing"
	"unicode/utf8"

	rlv3 "github.com/envoyproxy/go-control-plane/envoy/extensions/common/ratelimit/v3"
	rlsv3 "github.com/envoyproxy/go-control-plane/envoy/service/ratelimit/v3"
	"github.com/valyala/fastjson"
	"google.golang.org/protobuf/proto"
	"google.golang.org/protobuf/types/known/wrapperspb"

	"github.com/devflow/flowguard/internal/config"
)

// FuzzParseDecide: no input panics the parser, and whatever it accepts is a
// valid request; whatever it rejects gets a 4xx code and a message.
func FuzzParseDecide(f *testing.F) {
	for _, s := range []string{
		`{"key":"k_live_1","tenant":"acme","endpoint":"POST /v1/payments","cost":1,"region":"us-east-1","client_ip":"203.0.113.7"}`,
		`{"key":"k","cost":1e400}`, `{"key":"\u0000"}`, `[]`, ``, `{"key":"k","cost":-9223372036854775808}`,
	} {
		f.Add([]byte(s))
	}
	var p fastjson.Parser
	f.Fuzz(func(t *testing.T, body []byte) {
		req, apiErr := parseDecide(&p, body, 10_000)
		if apiErr != nil {
			if apiErr.status < 400 || apiErr.status > 499 || apiErr.code == "" || apiErr.message == "" {
				t.Fatalf("bad error %+v", apiErr)
			}
			var out map[string]map[string]string
			if err := json.Unmarshal(appendError(nil, apiErr), &out); err != nil {
				t.Fatalf("error body is not JSON: %v", err)
			}
			return
		}
		if req.Key == "" || len(req.Key) > maxKeyLen || req.Cost < 1 || req.Cost > 10_000 {
			t.Fatalf("accepted an invalid request: %+v", req)
		}
		// Echoed strings must survive the response encoder as valid JSON.
		var s string
		if err := json.Unmarshal(appendJSONString(nil, req.Key+req.Tenant+req.Endpoint), &s); err != nil {
			t.Fatalf("appendJSONString made invalid JSON: %v", err)
		}
	})
}

// FuzzBatch runs whole batch bodies through a live handler.
func FuzzBatch(f *testing.F) {
	f.Add([]byte(`[{"key":"a"},{"key":5},{"key":"b","cost":2}]`))
	f.Add([]byte(`[[],{},null,"x"]`))
	ts := startServer(f, mustParse(f, testPolicies))
	f.Fuzz(func(t *testing.T, body []byte) {
		resp, out := post(t, ts.URL+"/v1/decide/batch", string(body))
		if resp.StatusCode >= 500 {
			t.Fatalf("status %d for %q", resp.StatusCode, body)
		}
		if !json.Valid(out) {
			t.Fatalf("response is not JSON: %s", out)
		}
	})
}

// FuzzLabels posts arbitrary bodies to /v1/labels: never a 5xx, always a
// JSON answer, and a 202 only for bodies every label of which parses.
func FuzzLabels(f *testing.F) {
	f.Add([]byte(`{"label_id":"a","key":"k","abusive":true,"from":"2026-11-20T00:00:00Z","to":"2026-11-21T00:00:00Z"}`))
	f.Add([]byte(`[{"label_id":"a","key":"k","abusive":false,"from":"2026-11-20T00:00:00Z","to":"2026-11-21T00:00:00Z"},{"label_id":"b"}]`))
	f.Add([]byte(`[]`))
	f.Add([]byte(`{"label_id":"a","key":"k","abusive":"yes"}`))
	ts := startServer(f, mustParse(f, testPolicies))
	f.Fuzz(func(t *testing.T, body []byte) {
		resp, out := post(t, ts.URL+"/v1/labels", string(body))
		if resp.StatusCode >= 500 && resp.StatusCode != 503 {
			t.Fatalf("status %d for %q", resp.StatusCode, body)
		}
		if !json.Valid(out) {
			t.Fatalf("response is not JSON: %s", out)
		}
	})
}

// FuzzVerifyAudit feeds arbitrary files to the audit chain verifier: an
// error or a summary, never a panic, and never a valid chain that does not
// re-verify.
func FuzzVerifyAudit(f *testing.F) {
	f.Add([]byte(""))
	f.Add([]byte(`{"seq":1,"time":"2026-11-20T00:00:00Z","key":"k","prev":"0000000000000000000000000000000000000000000000000000000000000000","hash":"x"}` + "\n"))
	f.Add([]byte("not json\n"))
	f.Fuzz(func(t *testing.T, data []byte) {
		sum, err := VerifyAudit(bytes.NewReader(data))
		if err == nil {
			again, err2 := VerifyAudit(bytes.NewReader(data))
			if err2 != nil || again != sum {
				t.Fatalf("verified once (%+v), then %+v %v", sum, again, err2)
			}
		}
	})
}

// FuzzDescriptorMapping: no request panics the gRPC API's mapping; what it
// accepts is one valid decision request per descriptor, what it refuses
// gets a message, and a request the wire cannot carry (invalid UTF-8) is
// never accepted. raw, when set, is decoded as a RateLimitRequest first,
// as the server does.
func FuzzDescriptorMapping(f *testing.F) {
	f.Add("flowguard", "api_key", "k_live_1", "method", "POST", ":path", "/v1/payments", uint32(0), uint64(0), uint8(1), []byte(nil))
	f.Add("flowguard", "api_key", "k\xff", "tenant", "acme", "header_match", "POST /v1/payments", uint32(3), uint64(7), uint8(2), []byte(nil))
	f.Add("edge", "api_key", "", "api_key", "k", "remote_address", "203.0.113.7", uint32(1<<31), uint64(1<<63), uint8(70), []byte("\x0a\x09flowguard\x12\x0b\x0a\x09\x0a\x07api_key"))
	cfg, err := config.Default()
	if err != nil {
		f.Fatal(err)
	}
	sc := cfg.Server
	g := &grpcService{domain: sc.GRPC.Domain, maxDesc: sc.GRPC.MaxDescriptors, maxCost: sc.MaxCost,
		mapping: newDescriptorMapping(sc.GRPC.Descriptors, sc.GRPC.MaxEntries)}
	f.Fuzz(func(t *testing.T, domain, k1, v1, k2, v2, k3, v3 string, hits uint32, descHits uint64, n uint8, raw []byte) {
		d := &rlv3.RateLimitDescriptor{Entries: []*rlv3.RateLimitDescriptor_Entry{{Key: k1, Value: v1}, {Key: k2, Value: v2}, {Key: k3, Value: v3}}}
		if descHits%3 != 0 {
			d.HitsAddend = wrapperspb.UInt64(descHits)
		}
		req := &rlsv3.RateLimitRequest{Domain: domain, HitsAddend: hits}
		for range n % 80 {
			req.Descriptors = append(req.Descriptors, d)
		}
		reqs, apiErr := g.requests(req)
		if apiErr != nil {
			if apiErr.status != 400 || apiErr.code == "" || apiErr.message == "" {
				t.Fatalf("bad error %+v", apiErr)
			}
		} else {
			if len(reqs) != len(req.Descriptors) {
				t.Fatalf("%d requests for %d descriptors", len(reqs), len(req.Descriptors))
			}
			for _, r := range reqs {
				if r.Key == "" || len(r.Key) > maxKeyLen || r.Cost < 1 || r.Cost > sc.MaxCost || len(r.Tenant) > maxFieldLen ||
					len(r.Endpoint) > 2*maxFieldLen+1 || !utf8.ValidString(r.Key+r.Tenant+r.Endpoint+r.ClientIP) {
					t.Fatalf("accepted an invalid request: %+v", r)
				}
			}
			if _, err := proto.Marshal(req); err != nil {
				t.Fatalf("accepted a request the wire cannot carry (%v): %+v", err, reqs)
			}
		}
		var decoded rlsv3.RateLimitRequest
		if len(raw) > 0 && proto.Unmarshal(raw, &decoded) == nil {
			if _, apiErr := g.requests(&decoded); apiErr != nil && apiErr.message == "" {
				t.Fatalf("bad error %+v", apiErr)
			}
		}
	})
}
