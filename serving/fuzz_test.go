package serving

import (
	"encoding/json"
	"testing"

	"github.com/valyala/fastjson"
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
