package serving

import (
	"encoding/json"
	"strings"

	"github.com/valyala/fasthttp"

	"github.com/devflow/flowguard/pipeline"
)

// explanation is the body of GET /v1/keys/{key}/explain: the pipeline's
// read-only explanation and the key's recent decisions.
type explanation struct {
	pipeline.Explanation
	RecentDecisions []RecentDecision `json:"recent_decisions"`
}

// handleExplain serves GET /v1/keys/{key}/explain?tenant=…&endpoint=…&region=….
// It reads state and changes none (pipeline.Pipeline.Explain).
func (s *Server) handleExplain(ctx *fasthttp.RequestCtx, key string) {
	if key == "" || len(key) > maxKeyLen {
		s.writeError(ctx, badRequest("invalid_key", "the key in /v1/keys/{key}/explain must be 1 to 256 bytes"))
		return
	}
	args := ctx.QueryArgs()
	req := DecideRequest{Key: key, Tenant: string(args.Peek("tenant")), Endpoint: string(args.Peek("endpoint")),
		Region: string(args.Peek("region"))}
	body, err := json.Marshal(explanation{Explanation: s.pipe.Explain(&req), RecentDecisions: s.recent.get(key)})
	if err != nil {
		s.writeError(ctx, &apiError{status: 500, code: "internal", message: err.Error()})
		return
	}
	ctx.SetContentType("application/json")
	ctx.SetBody(body)
}

// explainKey returns the key of a /v1/keys/{key}/explain path.
func explainKey(path string) (string, bool) {
	rest, ok := strings.CutPrefix(path, "/v1/keys/")
	if !ok {
		return "", false
	}
	return strings.CutSuffix(rest, "/explain")
}
