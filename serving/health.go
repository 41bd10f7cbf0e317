package serving

import (
	"encoding/json"
	"fmt"
	"time"

	"github.com/valyala/fasthttp"
)

// componentStatus is one line of /readyz.
type componentStatus struct {
	Status string `json:"status"` // ok, degraded (answering, but not at full strength) or down
	Detail string `json:"detail,omitempty"`
	// policy only
	Source        string `json:"source,omitempty"`
	Digest        string `json:"digest,omitempty"`
	LoadedAt      string `json:"loaded_at,omitempty"`
	LastReloadErr string `json:"last_reload_error,omitempty"`
}

// handleReady reports readiness per component. The service is ready
// whenever it can decide — a Redis outage makes the limiter degraded, not
// the service unready, because decisions go on from the fallback. Only a
// draining server answers 503, so load balancers stop sending to it.
func (s *Server) handleReady(ctx *fasthttp.RequestCtx) {
	cur := s.current.Load()
	pol := componentStatus{
		Status:   "ok",
		Source:   cur.Name,
		Digest:   cur.Digest,
		LoadedAt: time.UnixMilli(s.reloadedAt.Load()).UTC().Format(time.RFC3339),
	}
	if e := s.reloadErr.Load(); e != nil {
		pol.Status, pol.LastReloadErr = "degraded", *e
	}
	lim := componentStatus{Status: "ok", Detail: "in-memory limiter"}
	if s.redis != nil {
		lim.Detail = "redis"
		h := s.redisUp.Load()
		switch {
		case s.remote.FallbackActive():
			lim.Status, lim.Detail = "degraded", "redis circuit open: deciding from this instance's share in memory"
		case !h.ok && !h.at.IsZero():
			lim.Status, lim.Detail = "degraded", "redis unreachable: "+h.detail
		}
	}
	feats := componentStatus{Status: "ok", Detail: "this instance's features only (no redis)"}
	if f := s.fsync; f != nil {
		feats.Detail = "shared through redis"
		if !f.healthy.Load() {
			feats.Status, feats.Detail = "degraded", "not shared yet: no exchange has succeeded"
			if e := f.lastErr.Load(); e != nil {
				feats.Detail = "not shared, this instance's features only: " + *e
			}
		}
	}
	comps := map[string]componentStatus{"policy": pol, "limiter": lim, "features": feats}
	if s.klog != nil {
		// Decisions never wait on Kafka, so it degrades the instance, not
		// its readiness: while writes fail, the decision log drops records
		// and labels posted here get a 503 to resend.
		k := componentStatus{Status: "ok", Detail: "decision log, labels and audit copies written"}
		if e := s.klog.LastError(); e != "" {
			k.Status, k.Detail = "degraded", "decision log writes failing, records dropped: "+e
		} else if n := s.klog.Len(); n >= s.klog.Cap()/2 {
			k.Status, k.Detail = "degraded", fmt.Sprintf("decision log backlog: %d of %d records waiting for Kafka", n, s.klog.Cap())
		} else if e := s.kaudit.LastError(); e != "" {
			k.Status, k.Detail = "degraded", "audit copies failing (the audit file keeps them): "+e
		}
		comps["kafka"] = k
	}
	status, code := "ready", fasthttp.StatusOK
	if s.draining.Load() {
		status, code = "draining", fasthttp.StatusServiceUnavailable
	}
	body, _ := json.Marshal(map[string]any{
		"status":     status,
		"components": comps,
	})
	ctx.SetStatusCode(code)
	ctx.SetContentType("application/json")
	ctx.SetBody(body)
}
